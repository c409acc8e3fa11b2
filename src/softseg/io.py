"""NIfTI input/output with exact geometry and atomic writes.

``load_volume`` reads a 3D NIfTI file into a :class:`Volume` (array + affine + header);
``save_volume`` writes an array with the geometry of another volume. Writes are atomic: the data
goes to a temporary file in the destination folder which is then renamed over the target, so an
interrupted save never leaves a broken file and never destroys the previous version.

Floating-point maps (soft labels, probabilities) are always written as float32 with no intensity
scaling, so a soft value is never quantised through an integer header. Integer label maps keep an
integer dtype.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from softseg.errors import InputError

__all__ = [
    "NIFTI_SUFFIXES",
    "Volume",
    "atomic_path",
    "check_writable",
    "is_nifti_path",
    "load_volume",
    "read_sidecar",
    "save_volume",
    "sidecar_path",
    "write_json",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image with its geometry.

    Attributes
    ----------
    array : ndarray, shape (X, Y, Z)
        Voxel values in the file's own axis order (not reoriented). Integer files without
        intensity scaling keep their integer dtype; float32 files stay float32. In memory,
        writable, usually Fortran-ordered like the file itself (no reordering copy on load,
        none on save).
    affine : ndarray, shape (4, 4), float64
        Voxel-to-world (RAS+ mm) transform: the sform if set, else the qform (nibabel's choice).
    header : nibabel.Nifti1Header
        A copy of the file's header.
    path : Path or None
        Where the volume was read from.
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array's three axes."""
        return tuple(float(z) for z in self.header.get_zooms()[:3])  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when *path* ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = os.fspath(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar that belongs to a NIfTI file: ``x.nii.gz`` -> ``x.json``."""
    path = Path(path)
    return path.with_name(_stem(path) + ".json")


def load_volume(path: str | os.PathLike, *, label: bool = False) -> Volume:
    """Read a 3D NIfTI volume.

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file. A 4D file whose fourth axis has length 1 is accepted
        and squeezed to 3D.
    label : bool
        The file is a label map (binary, confidence levels or soft): NaN or Inf values are
        refused.

    Returns
    -------
    Volume

    Raises
    ------
    InputError
        Missing file, not a NIfTI file, truncated or corrupt data, not 3D, NaN/Inf in a label.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a .nii or .nii.gz file")
    try:
        img = nib.load(path)  # memory-mapped for .nii (fast); copied into memory below
    except Exception as exc:  # nibabel raises several types for foreign files
        if _is_gzip(path):
            raise InputError(
                f"{path}: truncated or corrupt gzip data ({_short(exc)}); re-export or re-download it"
            ) from None
        raise InputError(
            f"{path}: not a NIfTI file ({_short(exc)}); expected a .nii or .nii.gz image"
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: is a {type(img).__name__}, expected a NIfTI-1/2 image")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) > 4 and all(s == 1 for s in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(
            f"{path}: expected a 3D volume, got shape {tuple(img.shape)}; "
            "extract one 3D volume first (e.g. fslroi or nibabel slicing)"
        )
    try:
        array = np.asanyarray(img.dataobj)
        if isinstance(array, np.memmap) or not array.flags.writeable:
            # own, writable memory (the file may be replaced later); order "K" keeps NIfTI's
            # Fortran layout, so the copy is a plain memcpy
            array = np.array(array, order="K")
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as exc:
        raise InputError(
            f"{path}: truncated or corrupt image data ({_short(exc)}); re-export or re-download it"
        ) from None
    if array.shape != shape:
        array = array.reshape(shape)
    if label and array.dtype.kind == "f" and not np.isfinite(array).all():
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"{path}: label contains {n_bad} NaN/Inf voxels; labels must be finite values in [0, 1] "
            "or integer levels"
        )
    header = img.header.copy()
    if len(img.shape) != 3:
        header.set_data_shape(shape)
    return Volume(array=array, affine=np.asarray(img.affine, dtype=np.float64), header=header, path=path)


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check, before any work is done, that *path* can be written.

    Raises :class:`InputError` when the folder does not exist or is not writable, or when the
    file exists and ``overwrite`` is false.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: folder {folder} is not writable; choose another output folder")
    return path


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, overwrite: bool = False, durable: bool = False
) -> Iterator[Path]:
    """Yield a temporary path next to *path*; on success it is renamed over *path*.

    The temporary file keeps *path*'s suffix (so ``.nii.gz`` is still compressed by nibabel).
    On any exception it is removed and *path* is left as it was.

    The rename makes the write *atomic*: a killed or crashed process leaves either the old file
    or the new one, never a mix. ``durable=True`` also flushes the data to the disk (fsync)
    before the rename, so the new file survives a power cut; that costs about a quarter of the
    write time on uncompressed volumes, so it is used where losing work is expensive and the
    write is off the user's path (autosave, training checkpoints), not for every save.
    """
    path = check_writable(path, overwrite=overwrite)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; give the result the mode a plain open() would (umask), or keep
        # the mode of the file being replaced
        os.chmod(tmp, _target_mode(path))
        yield tmp
        if durable:  # data on disk before the rename makes it visible
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if path.exists() and not overwrite:  # appeared while we were writing
            raise InputError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _output_dtype(data: np.ndarray) -> np.dtype:
    if data.dtype == np.bool_:
        return np.dtype(np.uint8)
    if data.dtype.kind == "f":
        return np.dtype(np.float32)
    if data.dtype.kind in "iu":
        return data.dtype
    raise InputError(f"cannot save an array of dtype {data.dtype}; use a numeric or boolean array")


def save_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    like: Volume | str | os.PathLike | None = None,
    affine: np.ndarray | None = None,
    overwrite: bool = False,
    sidecar: Mapping[str, Any] | None = None,
    durable: bool = False,
) -> Path:
    """Write *data* as a NIfTI file, atomically.

    Parameters
    ----------
    path : path-like
        Destination, ``.nii`` or ``.nii.gz``.
    data : ndarray, shape (X, Y, Z)
        In the axis order of *like* (the file's own order, as :func:`load_volume` returns it).
        Floats are written as float32 without scaling; booleans as uint8; integers keep their
        dtype.
    like : Volume or path, optional
        Geometry source: its affine and header (orientation codes, units, description) are
        reused, so a load -> save round trip reproduces the array and affine bit for bit.
    affine : ndarray (4, 4), optional
        Used when *like* is not given (identity if neither is).
    overwrite : bool
        Replace an existing file.
    sidecar : mapping, optional
        Written as JSON next to the image (``x.nii.gz`` -> ``x.json``), also atomically.
    durable : bool
        Also fsync before the rename (see :func:`atomic_path`).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(f"{path}: output must end in .nii or .nii.gz")
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3D array to save, got shape {data.shape}")
    dtype = _output_dtype(data)
    if like is not None and not isinstance(like, Volume):
        like = load_volume(like)
    if like is not None:
        if tuple(like.shape) != tuple(data.shape):
            raise InputError(
                f"{path}: data shape {data.shape} does not match the reference volume "
                f"shape {like.shape}" + (f" ({like.path})" if like.path else "")
            )
        header = like.header.copy()
        out_affine = like.affine
    else:
        header = nib.Nifti1Header()
        out_affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        header.set_xyzt_units("mm", "sec")
    header.set_data_shape(data.shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0 if dtype.kind in "iu" else np.nan, 0.0 if dtype.kind in "iu" else np.nan)
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(np.asarray(data, dtype=dtype), out_affine, header=header)
    if like is not None:
        # keep the original qform/sform codes and matrices exactly
        img.set_sform(like.header.get_sform(), code=int(like.header["sform_code"]))
        img.set_qform(like.header.get_qform(), code=int(like.header["qform_code"]))
    side = sidecar_path(path) if sidecar is not None else None
    if side is not None:
        check_writable(side, overwrite=overwrite)
    with atomic_path(path, overwrite=overwrite, durable=durable) as tmp:
        nib.save(img, tmp)
    if side is not None:
        write_json(side, sidecar, overwrite=True, durable=durable)
    return path


def write_json(
    path: str | os.PathLike, obj: Any, *, overwrite: bool = False, durable: bool = False
) -> Path:
    """Write *obj* as pretty JSON, atomically (``durable``: fsync first, see :func:`atomic_path`)."""
    path = Path(path)
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    with atomic_path(path, overwrite=overwrite, durable=durable) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON sidecar of a NIfTI file, or None when there is none."""
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{side}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or delete it") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
