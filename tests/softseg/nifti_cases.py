"""NIfTI files from the field, built byte by byte with nibabel/gzip (never with softseg).

``BAD``: files softseg must refuse, each with the regex its one-line message must match (after
the file's path). ``ODD``: valid but unusual files softseg must accept with nibabel's numbers.
Used by test_io.py, test_reliability.py and tests/napari_softseg/test_reliability_reader.py;
``ORIENTATIONS`` / ``orientation_affine``: the affines test_io.py and test_geometry.py run on.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (16, 16, 8)


def blob(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    a = np.zeros(shape, dtype)
    a[4:12, 4:12, 2:6] = 1
    return a


def save(path: Path, array: np.ndarray, affine=None, **fields) -> Path:
    """nib.save a Nifti1Image, after setting raw header *fields* (e.g. ``pixdim=...``)."""
    img = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    for key, value in fields.items():
        img.header[key] = value
    img.update_header = lambda: None  # keep the raw fields exactly as set
    nib.save(img, path)
    return path


def _raw(array: np.ndarray, **fields) -> bytes:
    """The bytes of a single-file NIfTI-1 image with raw header *fields* set (uncompressed)."""
    img = nib.Nifti1Image(array, np.eye(4))
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio), "header": nib.FileHolder(fileobj=bio)})
    raw = bytearray(bio.getvalue())
    hdr = nib.Nifti1Header(bytes(raw[:348]), check=False)
    for key, value in fields.items():
        hdr[key] = value
    raw[:348] = hdr.binaryblock
    return bytes(raw)


def write_raw(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ----------------------------------------------------------------------------- refused
def _claim(dims):
    return lambda p: write_raw(p, _raw(np.zeros((8, 8, 8), np.uint8), dim=[3, *dims, 1, 1, 1, 1]))


def _rgb(p):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), p)
    return p


def _complex(p):
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.complex64), np.eye(4)), p)
    return p


def _sform(matrix, pixdim=(1.0, 1.0, 1.0), array=None):
    """A file whose sform (code 1) is *matrix* (3 x 3) and whose qform is unset."""
    m = np.asarray(matrix, dtype=float)
    rows = {f"srow_{a}": np.append(m[i], 0.0) for i, a in enumerate("xyz")}
    return lambda p: write_raw(
        p, _raw(blob() if array is None else array, sform_code=1, qform_code=0, pixdim=[1.0, *pixdim, 1, 1, 1, 1], **rows)
    )


def _nan_qform(p):
    return write_raw(p, _raw(blob(), qform_code=1, sform_code=0, quatern_b=np.nan))


def _fifo(p):
    os.mkfifo(p)
    return p


def _loop(p):
    os.symlink(p.name, p)  # points at itself
    return p


def _broken(p):
    os.symlink(p.with_name("gone.nii.gz"), p)
    return p


def _folder(p):
    p.mkdir()
    return p


def _truncated_gz(p):
    data = gzip.compress(_raw(np.random.default_rng(0).random(SHAPE).astype(np.float32)))
    p.write_bytes(data[: len(data) // 2])
    return p


def _intact_gz_bad_header(p):
    p.write_bytes(gzip.compress(b"this gzip stream is fine but it holds no NIfTI header " * 20))
    return p


def _text(p):
    p.write_text("this is not an image\n")
    return p


def _ni1(p):
    return write_raw(p, _raw(blob(), magic=b"ni1"))


def _unreadable(p):
    save(p, blob())
    p.chmod(0)
    return p


#: name -> (builder(path) -> path, regex of the message after "<path>: ")
BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "claims_1450_cubed_in_67_bytes": (_claim([1450, 1450, 1450]), r"1450 x 1450 x 1450 uint8 .*cannot hold that much"),
    "claims_10000_cubed": (_claim([10000, 10000, 10000]), r"10000 x 10000 x 10000 uint8 .*cannot hold that much"),
    "zero_length_dimension": (lambda p: write_raw(p, _raw(blob(), dim=[3, 16, 0, 8, 1, 1, 1, 1])), r"zero-length dimension"),
    "negative_dimension": (lambda p: write_raw(p, _raw(blob(), dim=[3, 16, -16, 8, 1, 1, 1, 1])), r"negative dimension"),
    "one_dimensional": (lambda p: save(p, np.zeros(16, np.float32)), r"1D NIfTI file"),
    "four_dimensional": (lambda p: save(p, np.zeros((4, 4, 4, 3), np.float32)), r"expected a 3D volume, got shape \(4, 4, 4, 3\)"),
    "rgb": (_rgb, r"RGB colour"),
    "complex": (_complex, r"complex64"),
    "nan_sform": (_sform(np.diag([1.0, np.nan, 1.0])), r"sform .*NaN"),
    "nan_qform": (_nan_qform, r"qform"),
    "singular_sform": (_sform(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])), r"sform is singular"),
    "voxel_1e-4_mm": (_sform(np.diag([1e-4, 1e-4, 1e-4])), r"voxel size 0.0001 x 0.0001 x 0.0001 mm is outside"),
    "voxel_300_mm": (_sform(np.diag([300.0, 1.0, 1.0])), r"voxel size 300 x 1 x 1 mm is outside"),
    "fifo": (_fifo, r"FIFO"),
    "symlink_loop": (_loop, r"symbolic link loop"),
    "broken_symlink": (_broken, r"broken symbolic link"),
    "folder": (_folder, r"is a folder"),
    "missing": (lambda p: p, r"no such file"),
    "truncated_gzip": (_truncated_gz, r"truncated or corrupt gzip data"),
    "intact_gzip_bad_header": (_intact_gz_bad_header, r"not a NIfTI file: .*\(the gzip data is intact\)"),
    "text_file": (_text, r"not a NIfTI file"),
    "hdr_img_pair_header": (_ni1, r"\.hdr/\.img pair"),
    "unknown_datatype": (lambda p: write_raw(p, _raw(blob(), datatype=999)), r"data code 999 not recognized"),
    "one_bit_datatype": (lambda p: write_raw(p, _raw(blob(), datatype=1, bitpix=1)), r"1-bit binary"),
    "infinite_intercept": (lambda p: write_raw(p, _raw(blob(), scl_slope=1.0, scl_inter=np.inf)), r"intensity scaling"),
    "vox_offset_inside_header": (lambda p: write_raw(p, _raw(blob(), vox_offset=100)), r"vox offset 100 too low"),
    "unreadable": (_unreadable, r"permission denied"),
}
#: kinds about the file itself (not its content): a dataset scan skips them before loading
FILE_KINDS = {"fifo", "symlink_loop", "broken_symlink", "folder", "missing", "unreadable"}


def make_bad(kind: str, folder: Path, name: str = "bad.nii.gz") -> tuple[Path, str]:
    """Build the *kind* case in *folder*; returns (path, regex of the message after the path)."""
    build, regex = BAD[kind]
    path = folder / name
    build(path)
    return path, regex


def skip_reason(kind: str) -> str | None:
    """Why a kind cannot be built here (None when it can)."""
    if kind == "unreadable" and os.geteuid() == 0:
        return "root reads files whatever their mode"
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        return "no FIFOs on this platform"
    return None


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


# ----------------------------------------------------------------------------- accepted
def _values(shape=SHAPE, dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(7).random(shape) * 100).astype(dtype)


def _oblique() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = [-40.5, 12.25, 7.0]
    return aff


def _big_endian(p):
    hdr = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(_values(), np.diag([0.8, 0.8, 2.0, 1.0]), header=hdr)
    nib.save(img, p)
    assert nib.load(p).header.endianness == ">"
    return p


def _multi_member(p):
    raw = _raw(_values())
    half = len(raw) // 2
    p.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    return p


def _trailing_bytes(p):
    p.write_bytes(gzip.compress(_raw(_values()) + b"\0" * 100))
    return p


def _with_extension(p):
    img = nib.Nifti1Image(_values(), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment that moves the data offset"))
    nib.save(img, p)
    return p


def _swapped_suffix(p):
    """Gzip content in a .nii name (or plain content in a .nii.gz name): the content decides."""
    raw = _raw(_values())
    p.write_bytes(raw if p.name.endswith(".gz") else gzip.compress(raw))
    return p


def _two_d_no_slice_direction(p):
    arr = _values((16, 12))
    rows = {"srow_x": [0.5, 0.0, 0.0, -4.0], "srow_y": [0.0, 0.7, 0.0, 3.0], "srow_z": [0.0, 0.0, 0.0, 10.0]}
    return write_raw(p, _raw(arr, sform_code=1, qform_code=0, pixdim=[1.0, 0.5, 0.7, 3.0, 1, 1, 1, 1], **rows))


#: name -> (builder(path) -> path, file name). nibabel's own reading is the reference.
ODD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "2d_single_slice": (lambda p: save(p, _values((16, 12)), np.diag([0.5, 0.7, 3.0, 1.0])), "odd.nii.gz"),
    "2d_sform_without_slice_direction": (_two_d_no_slice_direction, "odd.nii.gz"),
    "pixdim_disagrees_with_sform": (_sform(np.diag([1.0, 1.0, 2.5]), pixdim=(1.0, 1.0, 1.0), array=_values()), "odd.nii.gz"),
    "qform_only_oblique": (lambda p: _qform_only(p), "odd.nii"),
    "no_sform_no_qform": (lambda p: write_raw(p, _raw(_values(), sform_code=0, qform_code=0, pixdim=[1, 0.9, 0.9, 3, 1, 1, 1, 1])), "odd.nii.gz"),
    "zero_pixdim_with_qform": (lambda p: write_raw(p, _raw(_values(), sform_code=0, qform_code=1, pixdim=[1, 0.5, 0.0, 2.0, 1, 1, 1, 1])), "odd.nii.gz"),
    "negative_pixdim_with_qform": (lambda p: write_raw(p, _raw(_values(), sform_code=0, qform_code=1, pixdim=[1, -0.5, 0.5, 2.0, 1, 1, 1, 1])), "odd.nii.gz"),
    "qfac_minus_one": (lambda p: write_raw(p, _raw(_values(), sform_code=0, qform_code=1, pixdim=[-1, 0.5, 0.5, 2.0, 1, 1, 1, 1])), "odd.nii.gz"),
    "big_endian": (_big_endian, "odd.nii.gz"),
    "nifti2": (lambda p: nib.save(nib.Nifti2Image(_values(), _oblique()), p) or p, "odd.nii.gz"),
    "multi_member_gzip": (_multi_member, "odd.nii.gz"),
    "bytes_after_the_data": (_trailing_bytes, "odd.nii.gz"),
    "scaled_uint8": (lambda p: write_raw(p, _raw(_values(dtype=np.uint8), scl_slope=1 / 255, scl_inter=0.0)), "odd.nii.gz"),
    "extension_moves_the_data": (_with_extension, "odd.nii.gz"),
    "gzip_content_named_nii": (_swapped_suffix, "odd.nii"),
    "plain_content_named_nii_gz": (_swapped_suffix, "odd.nii.gz"),
    "trailing_singleton_axes": (lambda p: save(p, _values((16, 16, 8, 1, 1))), "odd.nii.gz"),
}


def _qform_only(p):
    img = nib.Nifti1Image(_values(), _oblique())
    img.set_qform(_oblique(), code=1)
    img.set_sform(None, code=0)
    nib.save(img, p)
    return p


def make_odd(kind: str, folder: Path) -> Path:
    build, name = ODD[kind]
    path = folder / name
    build(path)
    return path


def nibabel_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) as nibabel reads the file, the content deciding the compression."""
    data = path.read_bytes()
    gz = data[:2] == b"\x1f\x8b"
    ref = path.with_name("reference" + (".nii.gz" if gz else ".nii"))
    ref.write_bytes(data)
    img = nib.load(ref)
    arr = np.asanyarray(img.dataobj)
    ref.unlink()
    return arr, np.asarray(img.affine, dtype=np.float64)


# --------------------------------------------------------------- orientations (valid files)
#: Voxel-to-RAS affines the geometry tests run every case on (test_io.py, test_geometry.py).
ORIENTATIONS = ["ras", "lps", "anisotropic", "oblique", "sagittal"]


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """(3, 3) rotation: about x by *ax*, then y by *ay*, then z by *az* (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def orientation_affine(kind: str) -> np.ndarray:
    """The (4, 4) affine of one of :data:`ORIENTATIONS` (voxel sizes hand-chosen: ras/lps 1 mm,
    anisotropic 0.6 x 0.75 x 3.2, oblique 0.9 x 1.1 x 2.5, sagittal 1 x 1 x 1.2 mm)."""
    aff = np.eye(4)
    if kind == "ras":
        aff[:3, 3] = [-10.0, -12.0, -5.0]
    elif kind == "lps":
        aff[:3, :3] = np.diag([-1.0, -1.0, 1.0])
        aff[:3, 3] = [20.5, 30.25, -7.0]
    elif kind == "anisotropic":
        aff[:3, :3] = np.diag([0.6, 0.75, 3.2])
        aff[:3, 3] = [1.5, -2.5, 40.0]
    elif kind == "oblique":
        aff[:3, :3] = rotation(0.2, -0.3, 0.35) @ np.diag([0.9, 1.1, 2.5])
        aff[:3, 3] = [-90.3, 12.7, 44.1]
    elif kind == "sagittal":  # slices stored along x (file axis 2 points left)
        aff[:3, :3] = np.array([[0.0, 0.0, -1.2], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        aff[:3, 3] = [50.0, -30.0, 10.0]
    else:
        raise ValueError(f"unknown orientation {kind!r}; expected one of {ORIENTATIONS}")
    return aff
