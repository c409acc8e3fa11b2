"""NIfTI input/output: validated before allocation, exact geometry, all-or-nothing writes.

Reading (:func:`load_volume`) goes through :func:`check_nifti` first, which reads only the header
(for ``.nii.gz`` the first compressed block and the 4-byte gzip trailer) and refuses, before a
single voxel is read or allocated, what cannot be loaded: a FIFO or device, a symbolic-link loop,
an unreadable file, truncated or corrupt gzip data, a header that is not NIfTI, sizes the file
cannot hold, more memory than is available, RGB or complex voxels, a zero-length dimension, a
NaN or singular sform/qform, voxel sizes outside :data:`VOXEL_SIZE_RANGE_MM`. Each refusal is one
:class:`~softseg.errors.InputError` line that names the file and the true problem.

Geometry follows nibabel exactly: the affine is nibabel's ``img.affine`` (sform if its code is
set, else qform, else pixdim), and the voxel size everywhere in softseg is the length of its
columns (:func:`softseg.geometry.voxel_size`). A header whose pixdim disagrees with its sform is
valid; it loads with a :class:`~softseg.errors.GeometryWarning`. A 2D file (``dim[0] = 2``)
loads as ``X x Y x 1``.

Writing (:func:`save_volume`, :func:`write_json`, :func:`atomic_path`) goes through
:class:`softseg.outputs.OutputSet`: temporaries with recognisable names, renamed into place only
when everything is written; an image and its sidecar appear together or not at all.

Floating-point maps (soft labels, probabilities) are always written as float32 with no intensity
scaling, so a soft value is never quantised through an integer header. Integer label maps keep an
integer dtype.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import math
import os
import stat
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from softseg.affines import voxel_size
from softseg.errors import GeometryWarning, InputError
# the generic writers live in softseg.outputs (below io: it never imports io); re-exported here
from softseg.outputs import OutputSet, atomic_path, check_writable, json_text, write_json

__all__ = [
    "NIFTI_SUFFIXES",
    "VOXEL_SIZE_RANGE_MM",
    "NiftiInfo",
    "Volume",
    "atomic_path",
    "available_memory",
    "check_memory",
    "check_nifti",
    "check_regular_file",
    "check_writable",
    "is_nifti_path",
    "json_text",
    "load_volume",
    "nifti_image",
    "read_sidecar",
    "save_volume",
    "sidecar_path",
    "write_json",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Accepted voxel size per axis, in mm. Below 1 micrometre or above 10 cm a NIfTI header is
#: almost surely wrong (units in metres or microns, a garbage sform); such files would collapse
#: to one voxel or explode to billions of voxels when resampled.
VOXEL_SIZE_RANGE_MM = (1e-3, 100.0)
#: DEFLATE cannot compress by more than 1032:1, so a .nii.gz of N bytes holds at most ~1032 N.
_MAX_DEFLATE_RATIO = 1032
_REFUSED_TYPES = {
    128: "RGB colour (24-bit)",
    2304: "RGBA colour (32-bit)",
    32: "complex64",
    1792: "complex128",
    2048: "complex256",
    1: "1-bit binary",
}


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image with its geometry.

    Attributes
    ----------
    array : ndarray, shape (X, Y, Z)
        Voxel values in the file's own axis order (not reoriented); a 2D file has Z = 1.
        Integer files without intensity scaling keep their integer dtype; float32 files stay
        float32. In memory, writable, usually Fortran-ordered like the file itself (no
        reordering copy on load, none on save).
    affine : ndarray, shape (4, 4), float64
        Voxel-to-world (RAS+ mm) transform: nibabel's ``img.affine`` (the sform if its code is
        set, else the qform, else pixdim).
    header : nibabel.Nifti1Header or nibabel.Nifti2Header
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
        """Voxel size in mm along the array's three axes (:func:`softseg.geometry.voxel_size`)."""
        return voxel_size(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


@dataclass(frozen=True, eq=False)
class NiftiInfo:
    """What :func:`check_nifti` learnt from a header (nothing of the data was read).

    Attributes
    ----------
    path : Path
    shape : tuple of 3 int
        Shape of the array :func:`load_volume` returns (2D files: ``(X, Y, 1)``; trailing
        singleton dimensions dropped).
    file_shape : tuple of int
        ``dim[1 : dim[0] + 1]`` as stored.
    stored_dtype : numpy.dtype
        Voxel type on disk.
    scaled : bool
        ``scl_slope``/``scl_inter`` turn the stored values into floats.
    affine : ndarray, shape (4, 4), float64
        Equal to nibabel's ``img.affine`` (a 2D file's missing slice direction completed).
    spacing : tuple of 3 float
        Voxel size in mm (lengths of the affine's columns).
    nbytes : int
        Peak memory needed to load the array (stored bytes, plus the scaled copy).
    header : nibabel.Nifti1Header or nibabel.Nifti2Header
        The header, with nibabel's own fixes applied (as ``nib.load`` applies them).
    compressed : bool
        gzip data.
    """

    path: Path
    shape: tuple[int, int, int]
    file_shape: tuple[int, ...]
    stored_dtype: np.dtype
    scaled: bool
    affine: np.ndarray
    spacing: tuple[float, float, float]
    nbytes: int
    header: nib.Nifti1Header
    compressed: bool


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


# ----------------------------------------------------------------------------- file checks
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_file(path: str | os.PathLike, *, what: str = "file") -> Path:
    """Refuse anything that cannot be read as a regular file, without opening it.

    Symbolic links are followed. A FIFO would block the reader forever, a device could stream
    without end; both are refused, as are symbolic-link loops and unreadable files.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is (``"image"``, ``"model file"``), used in messages.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        One line naming the path: no such file, broken link, symbolic-link loop, a folder, a
        FIFO / device / socket, permission denied or an I/O error.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise InputError(f"{p}: broken symbolic link (points to {os.readlink(p)}); fix the link") from None
        raise InputError(f"{p}: no such file; check the path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{p}: symbolic link loop; point the link at a real {what}") from None
        raise InputError(f"{p}: cannot read the {what} ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a folder; give the {what} file itself")
    if not stat.S_ISREG(st.st_mode):
        kind = next((text for test, text in _KINDS if test(st.st_mode)), "not a regular file")
        raise InputError(f"{p}: is {kind}, not a regular file; give the {what} itself")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: cannot read the {what} (permission denied)")
    return p


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None when unknown.

    The smallest of: the system's available memory (``MemAvailable`` of ``/proc/meminfo``, or
    psutil where installed), the cgroup v2 limit minus its usage (containers, Slurm jobs), and
    the address-space limit (``ulimit -v``) minus the current size.
    """
    limits: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        try:
            import psutil  # optional; macOS/Windows

            limits.append(int(psutil.virtual_memory().available))
        except Exception:  # noqa: BLE001 - unknown platform: no limit known
            pass
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            rel = next((ln.split(":", 2)[2].strip() for ln in fh if ln.startswith("0::")), None)
        if rel is not None:
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
            high = (base / "memory.max").read_text().strip()
            if high != "max":
                limits.append(int(high) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as fh:
                used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits.append(soft - used)
    except (ImportError, OSError, ValueError):
        pass
    return max(0, min(limits)) if limits else None


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale / 10:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(nbytes: int, *, what: str, path: str | os.PathLike | None = None) -> None:
    """Refuse work that needs more memory than is available (:func:`available_memory`).

    Parameters
    ----------
    nbytes : int
        Estimated peak bytes.
    what : str
        What needs it (``"loading 1450 x 1450 x 1450 uint8"``), used in the message.
    path : path-like, optional
        File the message starts with.

    Raises
    ------
    InputError
    """
    free = available_memory()
    if free is None or nbytes <= free:
        return
    prefix = f"{path}: " if path is not None else ""
    raise InputError(
        f"{prefix}{what} needs {_size(nbytes)} of memory but only {_size(free)} is available; "
        "use a machine with more memory, or crop or downsample the image first"
    )


# ----------------------------------------------------------------------------- header checks
def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _read_head(path: Path, what: str) -> tuple[bytes, bool, int, int | None]:
    """(first 540 bytes of the NIfTI stream, compressed?, file size, gzip ISIZE trailer)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            compressed = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            if not compressed:
                return fh.read(540), False, size, None
            try:
                head = gzip.GzipFile(fileobj=fh).read(540)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise InputError(
                    f"{path}: truncated or corrupt gzip data ({_short(exc)}); re-export or re-download it"
                ) from None
            isize = None
            if size >= 18:
                fh.seek(-4, os.SEEK_END)
                isize = int.from_bytes(fh.read(4), "little")
            return head, True, size, isize
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or _short(exc)})") from None


def _parse_header(path: Path, block: bytes, compressed: bool) -> nib.Nifti1Header:
    where = "its decompressed data" if compressed else "it"
    if len(block) < 348:
        raise InputError(
            f"{path}: not a NIfTI file ({where} holds {len(block)} bytes, a NIfTI header needs 348); "
            "expected a .nii or .nii.gz image"
        )
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")}
    if 540 in sizes and len(block) >= 540:
        klass, magics = nib.Nifti2Header, (b"n+2",)
    elif 348 in sizes:
        klass, magics = nib.Nifti1Header, (b"n+1",)
    else:
        gz = " (the gzip data is intact)" if compressed else ""
        raise InputError(
            f"{path}: not a NIfTI file: its header size field is not 348 or 540{gz}; "
            "expected a .nii or .nii.gz image"
        )
    header = klass(binaryblock=block[: klass.template_dtype.itemsize], check=False)
    magic = bytes(header["magic"].item())[:3]
    if magic in (b"ni1", b"ni2"):
        raise InputError(f"{path}: is the header of a .hdr/.img pair; convert the pair to one .nii file")
    if magic not in magics:
        raise InputError(f"{path}: not a NIfTI file (magic {magic!r}, expected {magics[0]!r})")
    code = int(header["datatype"])
    if code in _REFUSED_TYPES:
        advice = (
            "convert it to one greyscale channel first" if code in (128, 2304)
            else "save the magnitude (or the real part) as a real-valued image first" if code in (32, 1792, 2048)
            else "re-save it as uint8"
        )
        raise InputError(f"{path}: holds {_REFUSED_TYPES[code]} voxels; softseg needs real-valued scalar images; {advice}")
    from nibabel.batteryrunners import BatteryRunner

    # nibabel's own header fixes (as nib.load applies them), without its log messages
    header, reports = BatteryRunner(klass._get_checks()).check_fix(header)
    for rep in reports:
        if rep.problem_level >= 40:  # what nib.load refuses
            raise InputError(f"{path}: invalid NIfTI header ({rep.problem_msg}); re-export the image")
    return header


def _shape(path: Path, header: nib.Nifti1Header) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: invalid NIfTI header (dim[0] = {ndim}, must be 1..7); re-export the image")
    file_shape = tuple(dim[1 : ndim + 1])
    if any(d < 0 for d in file_shape):
        raise InputError(f"{path}: invalid NIfTI header (negative dimension in {file_shape}); re-export the image")
    if any(d == 0 for d in file_shape):
        raise InputError(f"{path}: has a zero-length dimension (shape {file_shape}); the image holds no voxels")
    if ndim == 1:
        raise InputError(f"{path}: is a 1D NIfTI file (shape {file_shape}); expected a 2D or 3D image")
    spatial = file_shape[:3] if ndim >= 3 else file_shape + (1,)
    if ndim > 3 and any(d != 1 for d in file_shape[3:]):
        raise InputError(
            f"{path}: expected a 3D volume, got shape {file_shape}; "
            "extract one 3D volume first (e.g. fslroi or nibabel slicing)"
        )
    return file_shape, spatial  # type: ignore[return-value]


def _affine(path: Path, header: nib.Nifti1Header, shape: tuple[int, int, int]) -> np.ndarray:
    s_code, q_code = int(header["sform_code"]), int(header["qform_code"])
    with np.errstate(all="ignore"):
        if s_code != 0 and not np.isfinite(header.get_sform()).all():
            raise InputError(f"{path}: the sform (sform_code {s_code}) holds NaN/Inf; fix the file's geometry")
        if q_code != 0:
            try:
                qform = header.get_qform()
            except Exception as exc:  # noqa: BLE001 - invalid quaternion (nibabel raises ValueError)
                raise InputError(f"{path}: the qform is invalid ({_short(exc)}); fix the file's geometry") from None
            if not np.isfinite(qform).all():
                raise InputError(f"{path}: the qform (qform_code {q_code}) holds NaN/Inf; fix the file's geometry")
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    source = "sform" if s_code != 0 else "qform" if q_code != 0 else "pixdim (no sform/qform)"
    if not np.isfinite(affine).all():
        raise InputError(f"{path}: the {source} holds NaN/Inf; fix the file's geometry")
    matrix = affine[:3, :3]
    norms = np.linalg.norm(matrix, axis=0)
    if shape[2] == 1 and norms[2] == 0 and norms[0] > 0 and norms[1] > 0:
        # a single slice whose sform gives no slice direction: the slice normal, pixdim[3] thick
        thick = float(header["pixdim"][3]) if float(header["pixdim"][3]) > 0 else 1.0
        normal = np.cross(matrix[:, 0], matrix[:, 1])
        affine = affine.copy()
        affine[:3, 2] = normal / np.linalg.norm(normal) * thick
        warnings.warn(
            f"{path}: the {source} gives no slice direction for this single slice; using the slice "
            f"normal with thickness {thick:g} mm",
            GeometryWarning,
            stacklevel=4,
        )
        matrix, norms = affine[:3, :3], np.linalg.norm(affine[:3, :3], axis=0)
    if not abs(np.linalg.det(matrix)) > 1e-6 * float(np.prod(norms)):
        raise InputError(
            f"{path}: the {source} is singular (voxel axes of zero length or parallel: "
            f"{np.round(matrix, 4).tolist()}); fix the file's geometry"
        )
    return affine


def _check_spacing(path: Path, header: nib.Nifti1Header, affine: np.ndarray, ndim: int) -> tuple[float, float, float]:
    spacing = voxel_size(affine)
    lo, hi = VOXEL_SIZE_RANGE_MM
    if not all(lo <= s <= hi for s in spacing):
        units = header.get_xyzt_units()[0]
        note = f" (the header's units are {units!r})" if units not in ("mm", "unknown") else ""
        raise InputError(
            f"{path}: voxel size {' x '.join(f'{s:g}' for s in spacing)} mm is outside the supported "
            f"{lo:g} to {hi:g} mm per axis{note}; the sform/qform is probably wrong, fix the file's geometry"
        )
    if int(header["sform_code"]) != 0:
        k = 3 if ndim >= 3 else 2
        pixdim = tuple(float(v) for v in header["pixdim"][1:4])
        if not np.allclose(pixdim[:k], spacing[:k], rtol=1e-4, atol=1e-6):
            warnings.warn(
                f"{path}: pixdim gives voxel size {' x '.join(f'{v:g}' for v in pixdim[:k])} mm but the "
                f"sform gives {' x '.join(f'{v:g}' for v in spacing[:k])} mm; softseg uses the sform's "
                "(as nibabel and the viewer do)",
                GeometryWarning,
                stacklevel=4,
            )
    return spacing


def _check_data_size(path: Path, fh_size: int, needed: int, isize: int | None, compressed: bool, desc: str) -> None:
    if not compressed:
        if fh_size < needed:
            raise InputError(
                f"{path}: truncated: the header describes {desc} ({needed} bytes with the header) but the "
                f"file holds {fh_size} bytes; re-export or re-download it"
            )
        return
    if needed > _MAX_DEFLATE_RATIO * fh_size + 65536:
        raise InputError(
            f"{path}: the header describes {desc} ({needed} bytes) but a compressed file of {fh_size} "
            "bytes cannot hold that much; the header is wrong or the file is truncated"
        )
    if isize is not None and isize == needed % 2**32:
        return  # a single-member gzip whose trailer agrees (the usual case: no extra pass)
    if needed >= 2**32:
        return  # the trailer is ambiguous; the memory check and the read itself decide
    # the trailer disagrees: truncated, a lying header, bytes after the data, or a multi-member
    # gzip (bgzip); count the decompressed bytes in 1 MiB chunks (nothing large is allocated)
    total = 0
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
            while total < needed:
                chunk = gz.read(min(1 << 20, needed - total))
                if not chunk:
                    break
                total += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip data ({_short(exc)}); re-export or re-download it") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image ({exc.strerror or _short(exc)})") from None
    if total < needed:
        raise InputError(
            f"{path}: truncated: the header describes {desc} ({needed} bytes with the header) but the "
            f"gzip data holds {total} bytes; re-export or re-download it"
        )


def check_nifti(path: str | os.PathLike, *, what: str = "image", label: bool = False) -> NiftiInfo:
    """Validate a NIfTI file from its header alone, before anything is allocated.

    Parameters
    ----------
    path : path-like
        A NIfTI-1 or NIfTI-2 single file, gzip-compressed or not (the content decides, not
        the suffix).
    what : str
        What the file is (``"image"``, ``"rater"``), used in messages.
    label : bool
        The file is a label map (the same header checks; :func:`load_volume` then refuses
        NaN/Inf voxels).

    Returns
    -------
    NiftiInfo

    Raises
    ------
    InputError
        One line naming the file: not a regular file (FIFO, device, folder, link loop),
        unreadable, truncated or corrupt gzip, not a NIfTI header, an invalid header, sizes the
        file cannot hold, more memory than available (:func:`check_memory`), RGB / complex /
        1-bit voxels, a zero-length dimension, a 1D file, more than 3 non-singleton dimensions,
        NaN/Inf or singular sform/qform, voxel sizes outside :data:`VOXEL_SIZE_RANGE_MM`.

    Warns
    -----
    GeometryWarning
        pixdim and the sform give different voxel sizes (the sform's are used, as nibabel does),
        or a single slice's missing slice direction was completed.
    """
    p = check_regular_file(path, what=what)
    block, compressed, size, isize = _read_head(p, what)
    header = _parse_header(p, block, compressed)
    file_shape, shape = _shape(p, header)
    stored = header.get_data_dtype()
    try:
        slope, inter = header.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 - nibabel: HeaderDataError for an infinite intercept
        raise InputError(f"{p}: invalid intensity scaling ({_short(exc)}); fix scl_slope/scl_inter") from None
    scaled = slope is not None and (slope != 1.0 or (inter or 0.0) != 0.0)
    n_vox = math.prod(file_shape)
    desc = f"{' x '.join(map(str, file_shape))} {stored.name} voxels"
    _check_data_size(p, size, header.get_data_offset() + n_vox * stored.itemsize, isize, compressed, desc)
    nbytes = n_vox * stored.itemsize + (n_vox * 8 if scaled else 0)
    check_memory(nbytes, what=f"loading {desc}", path=p)
    affine = _affine(p, header, shape)
    spacing = _check_spacing(p, header, affine, len(file_shape))
    return NiftiInfo(
        path=p,
        shape=shape,
        file_shape=file_shape,
        stored_dtype=stored,
        scaled=scaled,
        affine=affine,
        spacing=spacing,
        nbytes=nbytes,
        header=header,
        compressed=compressed,
    )


# ----------------------------------------------------------------------------- loading
def load_volume(path: str | os.PathLike, *, label: bool = False, what: str | None = None) -> Volume:
    """Read a NIfTI volume (checked first with :func:`check_nifti`).

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file. 2D files load as ``(X, Y, 1)``; a 4D (or higher) file
        whose extra axes have length 1 is squeezed to 3D.
    label : bool
        The file is a label map (binary, confidence levels or soft): NaN or Inf values are
        refused.
    what : str, optional
        What the file is, for messages (default ``"label map"`` / ``"image"``).

    Returns
    -------
    Volume
        ``array`` in file axis order, ``affine`` == nibabel's ``img.affine``.

    Raises
    ------
    InputError
        Everything :func:`check_nifti` refuses; truncated or corrupt voxel data; an I/O error;
        NaN/Inf in a label.
    """
    what = what or ("label map" if label else "image")
    info = check_nifti(path, what=what, label=label)
    from nibabel.arrayproxy import ArrayProxy

    try:
        with open(info.path, "rb") as raw:
            fobj = gzip.GzipFile(fileobj=raw) if info.compressed else raw
            with fobj if info.compressed else contextlib.nullcontext(fobj):
                proxy = ArrayProxy(fobj, info.header, mmap=not info.compressed)
                array = np.asanyarray(proxy)
                if isinstance(array, np.memmap) or not array.flags.writeable:
                    # own, writable memory (the file may be replaced later); order "K" keeps
                    # NIfTI's Fortran layout, so the copy is a plain memcpy
                    array = np.array(array, order="K")
    except (EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(
            f"{info.path}: truncated or corrupt image data ({_short(exc)}); re-export or re-download it"
        ) from None
    except OSError as exc:
        if exc.errno is not None:
            raise InputError(f"{info.path}: cannot read the {what} ({exc.strerror})") from None
        raise InputError(
            f"{info.path}: truncated or corrupt image data ({_short(exc)}); re-export or re-download it"
        ) from None
    if array.shape != info.shape:
        array = array.reshape(info.shape, order="A")
    if label and array.dtype.kind == "f" and not np.isfinite(array).all():
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"{info.path}: label contains {n_bad} NaN/Inf voxels; labels must be finite values in [0, 1] "
            "or integer levels"
        )
    header = info.header.copy()
    if info.file_shape != info.shape:
        header.set_data_shape(info.shape)
    return Volume(array=array, affine=info.affine.copy(), header=header, path=info.path)


# ----------------------------------------------------------------------------- writing
def _output_dtype(data: np.ndarray) -> np.dtype:
    if data.dtype == np.bool_:
        return np.dtype(np.uint8)
    if data.dtype.kind == "f":
        return np.dtype(np.float32)
    if data.dtype.kind in "iu":
        return data.dtype
    raise InputError(f"cannot save an array of dtype {data.dtype}; use a numeric or boolean array")


def nifti_image(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    like: Volume | str | os.PathLike | None = None,
    affine: np.ndarray | None = None,
) -> nib.Nifti1Image:
    """The nibabel image :func:`save_volume` writes (validated; nothing is written).

    See :func:`save_volume` for the parameters; *path* is only checked (suffix) and named in
    messages.
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
    return img


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
    """Write *data* as a NIfTI file (and its sidecar), all or nothing.

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
        Replace an existing file (and sidecar).
    sidecar : mapping, optional
        Written as JSON next to the image (``x.nii.gz`` -> ``x.json``). Image and sidecar are
        one :class:`softseg.outputs.OutputSet`: the sidecar is renamed into place first, the
        image last; after a failure or a kill neither changed.
    durable : bool
        Also fsync before the rename (see :func:`atomic_path`).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        Bad suffix, shape or dtype; an existing output (without ``overwrite``); a missing or
        read-only folder — all before anything is written.
    OutputError
        Disk full or I/O error while writing (nothing was written).
    """
    path = Path(path)
    img = nifti_image(path, data, like=like, affine=affine)
    targets = [path] if sidecar is None else [path, sidecar_path(path)]
    outs = OutputSet(targets, overwrite=overwrite, durable=durable)
    with outs:
        outs.save_image(path, img)
        if sidecar is not None:
            outs.write_json(targets[1], sidecar)
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON sidecar of a NIfTI file (a JSON object), or None when there is none.

    Read with :func:`softseg.schema.load_json` (regular file, size, UTF-8, depth, no NaN).

    Raises
    ------
    InputError
        The sidecar is not a regular file, not valid JSON, or not a JSON object.
    """
    from softseg.schema import load_json

    side = sidecar_path(path)
    if not os.path.lexists(side):
        return None
    data = load_json(side, what="JSON sidecar")
    if not isinstance(data, dict):
        raise InputError(
            f"{side}: a sidecar must be a JSON object ({{...}}); got a {type(data).__name__}; fix or delete it"
        )
    return data
