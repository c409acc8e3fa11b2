"""softseg.io: loading, atomic saving, dtypes, bad input (nothing written), geometry round trips."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from softseg.errors import InputError
from softseg.io import (
    atomic_path,
    check_writable,
    is_nifti_path,
    load_volume,
    read_sidecar,
    save_volume,
    sidecar_path,
)

from nifti_cases import ORIENTATIONS, orientation_affine


def _write(path: Path, array: np.ndarray, affine: np.ndarray, *, qform_only: bool = False) -> Path:
    img = nib.Nifti1Image(array, affine)
    if qform_only:
        img.set_qform(affine, code=1)
        img.set_sform(None, code=0)
    else:
        img.set_qform(affine, code=1)
    nib.save(img, path)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_is_bit_exact(tmp_path, orientation, dtype):
    rng = np.random.default_rng(1)
    array = (rng.random((9, 11, 7)) * 100).astype(dtype)
    src = _write(tmp_path / "in.nii.gz", array, orientation_affine(orientation))
    vol = load_volume(src)
    assert vol.array.dtype == np.dtype(dtype)
    out = save_volume(tmp_path / "out.nii.gz", vol.array, like=vol)
    a, b = nib.load(src), nib.load(out)
    assert b.get_data_dtype() == a.get_data_dtype()
    assert np.array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))
    assert np.array_equal(b.affine, a.affine)
    assert b.header.binaryblock == a.header.binaryblock


def test_qform_only_file_round_trip(tmp_path):
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    src = _write(tmp_path / "q.nii", array, orientation_affine("oblique"), qform_only=True)
    vol = load_volume(src)
    out = save_volume(tmp_path / "q_out.nii", vol.array, like=vol)
    a, b = nib.load(src), nib.load(out)
    assert int(b.header["sform_code"]) == 0 and int(b.header["qform_code"]) == 1
    assert np.array_equal(b.affine, a.affine)
    assert b.header.binaryblock == a.header.binaryblock
    assert Path(out).read_bytes() == Path(src).read_bytes()


def test_spacing_and_array_agree_with_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    array = np.random.default_rng(2).random((8, 10, 6)).astype(np.float32)
    src = _write(tmp_path / "a.nii.gz", array, orientation_affine("anisotropic"))
    vol = load_volume(src)
    ref = sitk.ReadImage(str(src))
    assert vol.spacing == pytest.approx(ref.GetSpacing(), rel=1e-6)
    # SimpleITK arrays are (z, y, x); nibabel's are (x, y, z)
    assert np.array_equal(vol.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))


# --------------------------------------------------------------------------- dtypes
def test_float_maps_are_float32_and_unscaled(tmp_path):
    soft = np.linspace(0, 1, 4 * 5 * 6).reshape(4, 5, 6)  # float64 in
    out = save_volume(tmp_path / "soft.nii.gz", soft, affine=np.eye(4))
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    assert img.header.get_slope_inter() == (None, None)
    raw = np.asanyarray(img.dataobj)
    assert raw.dtype == np.float32
    assert np.array_equal(raw, soft.astype(np.float32))
    assert len(np.unique(raw)) == soft.size  # nothing quantised


def test_float_written_over_int_reference_stays_float(tmp_path):
    ref = _write(tmp_path / "lab.nii.gz", np.zeros((4, 4, 4), np.int16), np.eye(4))
    soft = np.full((4, 4, 4), 0.37, dtype=np.float64)
    out = save_volume(tmp_path / "soft.nii.gz", soft, like=ref)
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    assert np.asanyarray(img.dataobj)[0, 0, 0] == np.float32(0.37)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(np.int16, np.int16), (np.uint8, np.uint8), (np.int32, np.int32), (np.uint16, np.uint16), (bool, np.uint8)],
)
def test_integer_labels_keep_integer_dtype(tmp_path, dtype, expected):
    labels = (np.arange(60).reshape(3, 4, 5) % 3).astype(dtype)
    out = save_volume(tmp_path / "lab.nii.gz", labels, affine=np.eye(4))
    img = nib.load(out)
    assert img.get_data_dtype() == np.dtype(expected)
    assert np.array_equal(np.asanyarray(img.dataobj), labels.astype(expected))
    assert load_volume(out).array.dtype == np.dtype(expected)


def test_trailing_singleton_dimension_is_squeezed(tmp_path):
    array = np.random.default_rng(3).random((5, 6, 7, 1)).astype(np.float32)
    src = _write(tmp_path / "t.nii.gz", array, np.eye(4))
    vol = load_volume(src)
    assert vol.shape == (5, 6, 7)
    assert np.array_equal(vol.array, array[..., 0])


# --------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: no such file"):
        load_volume(tmp_path / "nope.nii.gz")


def test_not_a_nifti(tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("this is not an image\n")
    with pytest.raises(InputError, match=r"notes\.nii\.gz: not a NIfTI file") as info:
        load_volume(bad)
    assert "\n" not in str(info.value)


def test_truncated_gzip_header(tmp_path):
    src = _write(tmp_path / "ok.nii.gz", np.ones((20, 20, 20), np.float32), np.eye(4))
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(src.read_bytes()[:100])
    with pytest.raises(InputError, match=r"cut\.nii\.gz: truncated or corrupt gzip") as info:
        load_volume(bad)
    assert "\n" not in str(info.value)


def test_truncated_gzip_data(tmp_path):
    rng = np.random.default_rng(4)
    src = _write(tmp_path / "ok.nii.gz", rng.random((30, 30, 30)).astype(np.float32), np.eye(4))
    bad = tmp_path / "cut.nii.gz"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # header intact, voxel data cut
    with pytest.raises(InputError, match=r"cut\.nii\.gz: truncated or corrupt"):
        load_volume(bad)


def test_corrupt_gzip_stream(tmp_path):
    raw = nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4))
    plain = tmp_path / "plain.nii"
    nib.save(raw, plain)
    payload = bytearray(gzip.compress(plain.read_bytes()))
    payload[len(payload) // 2 : len(payload) // 2 + 16] = b"\x00" * 16
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(bytes(payload))
    with pytest.raises(InputError, match=r"corrupt\.nii\.gz: "):
        load_volume(bad)


def test_4d_volume_is_refused(tmp_path):
    src = _write(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 4, 3), np.float32), np.eye(4))
    with pytest.raises(InputError, match=r"fmri\.nii\.gz: expected a 3D volume, got shape \(4, 4, 4, 3\)"):
        load_volume(src)


def test_nan_in_label_is_refused(tmp_path):
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    arr[0, 0, 0] = np.inf
    src = _write(tmp_path / "rater-1.nii.gz", arr, np.eye(4))
    with pytest.raises(InputError, match=r"rater-1\.nii\.gz: label contains 2 NaN/Inf voxels"):
        load_volume(src, label=True)
    assert np.isnan(load_volume(src).array[1, 2, 3])  # an image may hold NaN


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_volume(tmp_path)


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot write into (root ignores chmod, so use /proc/1 there)."""
    if os.geteuid() == 0:
        folder = Path("/proc/1")
        assert not os.access(folder, os.W_OK)
        yield folder
        return
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_unwritable_output_folder(unwritable_folder):
    before = set(os.listdir(unwritable_folder))
    with pytest.raises(InputError, match="is not writable"):
        save_volume(unwritable_folder / "out.nii.gz", np.zeros((3, 3, 3)), affine=np.eye(4))
    assert set(os.listdir(unwritable_folder)) == before


def test_missing_output_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_volume(tmp_path / "no" / "out.nii.gz", np.zeros((3, 3, 3)), affine=np.eye(4))
    assert _listing(tmp_path) == []


def test_existing_output_is_not_replaced(tmp_path):
    target = save_volume(tmp_path / "out.nii.gz", np.ones((3, 3, 3), np.float32), affine=np.eye(4))
    before = target.read_bytes()
    with pytest.raises(InputError, match=r"out\.nii\.gz: already exists; pass overwrite=True"):
        save_volume(target, np.zeros((3, 3, 3), np.float32), affine=np.eye(4))
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["out.nii.gz"]  # no temporary file left behind
    save_volume(target, np.zeros((3, 3, 3), np.float32), affine=np.eye(4), overwrite=True)
    assert np.array_equal(load_volume(target).array, np.zeros((3, 3, 3), np.float32))
    assert _listing(tmp_path) == ["out.nii.gz"]


def test_existing_sidecar_blocks_the_whole_save(tmp_path):
    (tmp_path / "lab.json").write_text("{}")
    with pytest.raises(InputError, match=r"lab\.json: already exists"):
        save_volume(tmp_path / "lab.nii.gz", np.zeros((3, 3, 3), np.uint8), affine=np.eye(4), sidecar={"rater": "1"})
    assert _listing(tmp_path) == ["lab.json"]  # the image was not written either


def test_wrong_suffix_and_shape(tmp_path):
    with pytest.raises(InputError, match=r"must end in \.nii or \.nii\.gz"):
        save_volume(tmp_path / "out.png", np.zeros((3, 3, 3)))
    with pytest.raises(InputError, match=r"expected a 3D array to save, got shape \(3, 3\)"):
        save_volume(tmp_path / "out.nii", np.zeros((3, 3)))
    ref = save_volume(tmp_path / "ref.nii", np.zeros((3, 3, 3)))
    with pytest.raises(InputError, match="does not match the reference volume"):
        save_volume(tmp_path / "out.nii", np.zeros((3, 3, 4)), like=ref)
    with pytest.raises(InputError, match="dtype complex128"):
        save_volume(tmp_path / "out.nii", np.zeros((3, 3, 3), complex))
    assert _listing(tmp_path) == ["ref.nii"]


def test_interrupted_write_leaves_previous_file_and_no_temp(tmp_path):
    target = save_volume(tmp_path / "keep.nii.gz", np.ones((3, 3, 3), np.float32), affine=np.eye(4))
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="power cut"):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("power cut")
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["keep.nii.gz"]


# --------------------------------------------------------------------------- sidecars & helpers
def test_sidecar_written_and_read(tmp_path):
    out = save_volume(
        tmp_path / "rater-2.nii.gz", np.zeros((3, 3, 3), np.uint8), affine=np.eye(4), sidecar={"rater": "2"}
    )
    assert sidecar_path(out) == tmp_path / "rater-2.json"
    assert read_sidecar(out) == {"rater": "2"}
    (tmp_path / "rater-2.json").write_text("{broken")
    with pytest.raises(InputError, match=r"rater-2\.json: not valid JSON"):
        read_sidecar(out)
    assert read_sidecar(tmp_path / "other.nii.gz") is None


def test_is_nifti_path_and_check_writable(tmp_path):
    assert is_nifti_path("a.nii") and is_nifti_path("B.NII.GZ") and not is_nifti_path("a.nrrd")
    assert check_writable(tmp_path / "x.nii.gz") == tmp_path / "x.nii.gz"
    with pytest.raises(InputError, match="is a folder"):
        check_writable(tmp_path)


def test_truncated_uncompressed_file(tmp_path):
    src = _write(tmp_path / "ok.nii", np.ones((20, 20, 20), np.float32), np.eye(4))
    bad = tmp_path / "cut.nii"
    bad.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(InputError, match=r"cut\.nii: truncated: the header describes 20 x 20 x 20 float32 voxels \(32352 bytes with the header\) but the file holds 5000 bytes"):
        load_volume(bad)


def test_loaded_arrays_are_in_memory_and_writable(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    for name in ("a.nii", "a.nii.gz"):
        src = _write(tmp_path / name, array, np.eye(4))
        vol = load_volume(src)
        assert type(vol.array) is np.ndarray and vol.array.flags.writeable
        vol.array[0, 0, 0] = -1  # never writes through to the file
        assert load_volume(src).array[0, 0, 0] == 0
        src.unlink()  # the volume does not depend on the file any more
        assert vol.array[1, 2, 3] == array[1, 2, 3]


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    from softseg.io import save_volume, write_json

    old = os.umask(0o022)
    try:
        img = save_volume(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), np.float32))
        side = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert img.stat().st_mode & 0o777 == 0o644
    assert side.stat().st_mode & 0o777 == 0o644
    os.chmod(img, 0o640)  # replacing a file keeps its mode
    save_volume(img, np.ones((2, 2, 2), np.float32), overwrite=True)
    assert img.stat().st_mode & 0o777 == 0o640


# =========================================================================== issue 13: the field's files
import logging  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402

import nifti_cases as cases  # noqa: E402

from softseg.errors import GeometryWarning  # noqa: E402
from softseg.io import (  # noqa: E402
    VOXEL_SIZE_RANGE_MM,
    available_memory,
    check_memory,
    check_nifti,
    check_regular_file,
)


@pytest.mark.parametrize("kind", sorted(cases.BAD))
def test_bad_file_is_refused_with_one_line_naming_it(tmp_path, kind):
    if cases.skip_reason(kind):
        pytest.skip(cases.skip_reason(kind))
    path, regex = cases.make_bad(kind, tmp_path)
    with pytest.raises(InputError) as info:
        load_volume(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert re.search(regex, message[len(str(path)) + 2 :]), message
    # the header check alone refuses it (nothing of the data read or allocated)
    with pytest.raises(InputError, match=re.escape(str(path))):
        check_nifti(path)


@pytest.mark.parametrize("kind", sorted(cases.ODD))
def test_valid_odd_file_loads_with_nibabels_numbers(tmp_path, kind, capfd, caplog):
    path = cases.make_odd(kind, tmp_path)
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = load_volume(path)
        info = check_nifti(path)
    # nibabel's header fixes (zero/negative pixdim, qfac) give the same numbers, but no log lines
    assert caplog.records == []
    assert capfd.readouterr().err == ""
    ref_array, ref_affine = cases.nibabel_reference(path)
    assert vol.shape == info.shape and len(vol.shape) == 3
    np.testing.assert_array_equal(vol.array, ref_array.reshape(vol.shape))
    assert vol.array.dtype == ref_array.dtype
    if kind == "2d_sform_without_slice_direction":
        expected = ref_affine.copy()
        expected[:3, 2] = [0.0, 0.0, 3.0]  # the slice normal, pixdim[3] = 3 mm thick
        np.testing.assert_array_equal(vol.affine, expected)
    else:
        np.testing.assert_array_equal(vol.affine, ref_affine)
    # one voxel size: the lengths of the affine's columns (hand-computed from nibabel's affine)
    assert vol.spacing == pytest.approx(tuple(np.sqrt((vol.affine[:3, :3] ** 2).sum(axis=0))), abs=0)
    geometry_warnings = [w for w in caught if issubclass(w.category, GeometryWarning)]
    if kind in ("pixdim_disagrees_with_sform", "2d_sform_without_slice_direction"):
        assert geometry_warnings and all(str(path) in str(w.message) for w in geometry_warnings)
    else:
        assert geometry_warnings == []


def test_our_loader_prints_nothing_where_nib_load_logs(tmp_path, capfd):
    path = cases.make_odd("zero_pixdim_with_qform", tmp_path)
    capfd.readouterr()
    vol = load_volume(path)
    assert capfd.readouterr().err == ""  # nib.load prints "pixdim[1,2,3] should be non-zero ..."
    assert vol.spacing == pytest.approx((0.5, 1.0, 2.0))


def test_2d_file_is_x_by_y_by_1_with_its_affine(tmp_path):
    arr = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    affine = np.array([[0.5, 0, 0, -3.0], [0, 0.7, 0, 4.0], [0, 0, 3.0, 12.0], [0, 0, 0, 1]])
    path = cases.save(tmp_path / "slice.nii.gz", arr, affine)
    assert int(nib.load(path).header["dim"][0]) == 2
    vol = load_volume(path)
    assert vol.shape == (6, 4, 1)
    np.testing.assert_array_equal(vol.array[:, :, 0], arr)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.spacing == pytest.approx((0.5, 0.7, 3.0), rel=1e-6)
    # it saves back as a 3D volume with the same geometry
    out = save_volume(tmp_path / "copy.nii.gz", vol.array, like=vol)
    back = nib.load(out)
    assert back.shape == (6, 4, 1)
    np.testing.assert_array_equal(back.affine, nib.load(path).affine)


def test_pixdim_versus_sform_uses_the_sform_and_warns_once_naming_the_file(tmp_path):
    path = cases.make_odd("pixdim_disagrees_with_sform", tmp_path)
    with pytest.warns(GeometryWarning, match=re.escape(str(path)) + r": pixdim gives voxel size 1 x 1 x 1 mm but the sform gives 1 x 1 x 2.5 mm"):
        vol = load_volume(path)
    assert vol.spacing == (1.0, 1.0, 2.5)  # the sform's columns, as nibabel's affine and the viewer
    np.testing.assert_array_equal(vol.affine, nib.load(path).affine)
    # (ITK takes spacing from pixdim and the direction from the sform, which is why such files
    # measure differently in ITK-based tools; softseg follows nibabel everywhere)


def test_voxel_size_bounds_are_inclusive_and_documented(tmp_path):
    lo, hi = VOXEL_SIZE_RANGE_MM
    for size in (lo, hi):
        path = cases._sform(np.diag([size, 1.0, 1.0]), pixdim=(size, 1.0, 1.0))(tmp_path / f"v{size}.nii.gz")
        assert load_volume(path).spacing[0] == pytest.approx(size, rel=1e-6)


def test_memory_estimate_refuses_before_reading(tmp_path, monkeypatch):
    import softseg.io as sio

    path = save_volume(tmp_path / "a.nii.gz", np.zeros((20, 20, 20), np.float32))
    monkeypatch.setattr(sio, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"a\.nii\.gz: loading 20 x 20 x 20 float32 voxels needs 31\.2 KiB of memory but only 1\.0 KiB is available"):
        load_volume(path)
    with pytest.raises(InputError, match=r"^x: fusing needs 2\.0 KiB of memory"):
        check_memory(2000, what="fusing", path="x")
    check_memory(10, what="fusing")


def test_available_memory_honours_ulimit_v(tmp_path):
    import subprocess
    import sys

    free = available_memory()
    assert free is None or free > 0
    code = "from softseg.io import available_memory; print(available_memory())"
    limit_kb = 4_000_000
    out = subprocess.run(
        ["bash", "-c", f"ulimit -v {limit_kb}; exec {sys.executable} -c '{code}'"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert 0 < int(out) < limit_kb * 1024  # the address-space limit minus what is mapped


def test_check_regular_file_kinds(tmp_path):
    good = save_volume(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), np.float32))
    assert check_regular_file(good) == good
    link = tmp_path / "link.nii.gz"
    link.symlink_to(good)
    assert check_regular_file(link) == link  # links to regular files are fine
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match=r"pipe: is a FIFO \(named pipe\), not a regular file; give the model file itself"):
        check_regular_file(tmp_path / "pipe", what="model file")
    with pytest.raises(InputError, match="character device"):
        check_regular_file("/dev/null")


def test_reading_a_fifo_never_blocks(tmp_path):
    import subprocess
    import sys

    os.mkfifo(tmp_path / "r.nii.gz")
    code = f"from softseg.io import load_volume\ntry:\n    load_volume({str(tmp_path / 'r.nii.gz')!r})\nexcept Exception as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "is a FIFO" in out


def test_read_sidecar_refuses_non_objects_and_fifos(tmp_path):
    img = save_volume(tmp_path / "r.nii.gz", np.zeros((2, 2, 2), np.uint8))
    (tmp_path / "r.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"r\.json: a sidecar must be a JSON object"):
        read_sidecar(img)
    (tmp_path / "r.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match=r"r\.json: JSON nested deeper than"):
        read_sidecar(img)
    (tmp_path / "r.json").unlink()
    os.mkfifo(tmp_path / "r.json")
    with pytest.raises(InputError, match=r"r\.json: .*not a regular file"):
        read_sidecar(img)


def test_scaled_header_memory_estimate_counts_the_float_copy(tmp_path):
    path = cases.write_raw(tmp_path / "s.nii.gz", cases._raw(np.zeros((10, 10, 10), np.uint8), scl_slope=2.0, scl_inter=0.0))
    info = check_nifti(path)
    assert info.scaled and info.nbytes == 1000 * 1 + 1000 * 8
    plain = check_nifti(save_volume(tmp_path / "p.nii", np.zeros((10, 10, 10), np.uint8)))
    assert not plain.scaled and plain.nbytes == 1000


@pytest.mark.parametrize(
    ("code", "reason"), [(13, "Permission denied"), (5, "Input/output error")], ids=["unreadable", "eio"]
)
def test_unreadable_file_is_not_called_not_a_nifti(tmp_path, monkeypatch, code, reason):
    """Root reads any file, so the failure of open()/read() is injected (CI runs both ways)."""
    import builtins

    path = save_volume(tmp_path / "a.nii.gz", np.ones((4, 4, 4), np.float32))
    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    with pytest.raises(InputError) as info:
        load_volume(path)
    assert str(info.value) == f"{path}: cannot read the image ({reason})"
