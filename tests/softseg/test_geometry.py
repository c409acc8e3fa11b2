"""softseg.geometry: display orientation (S, P, L), scale/translate, metadata, exact save."""

from __future__ import annotations

import copy
import pickle

import nibabel as nib
import numpy as np
import pytest

from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, display_geometry, save_display_array
from softseg.io import load_volume

from nifti_cases import ORIENTATIONS, orientation_affine

SHAPE = (9, 11, 7)


def _write(path, array: np.ndarray, affine: np.ndarray, *, qform_only: bool = False):
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    if qform_only:
        img.set_sform(None, code=0)
    nib.save(img, path)
    return path


def _world_centres(affine: np.ndarray, shape) -> np.ndarray:
    """RAS mm of every voxel centre, shape (*shape, 3), computed straight from the affine."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_display_axes_point_superior_posterior_left(orientation):
    affine = orientation_affine(orientation)
    geom = DisplayGeometry.from_affine(affine, SHAPE)
    world = geom.to_display(np.moveaxis(_world_centres(affine, SHAPE), -1, 0))  # (3, *display)
    x, y, z = world
    # along each display axis the matching anatomical coordinate must grow (on average for oblique)
    assert np.diff(z, axis=0).mean() > 0  # axis 0: towards superior
    assert np.diff(-y, axis=1).mean() > 0  # axis 1: towards posterior (anterior at the top)
    assert np.diff(-x, axis=2).mean() > 0  # axis 2: towards the patient's left (radiological)
    if orientation != "oblique":  # exact: one anatomical coordinate per display axis
        assert np.allclose(np.diff(z, axis=0), geom.scale[0])
        assert np.allclose(np.diff(-y, axis=1), geom.scale[1])
        assert np.allclose(np.diff(-x, axis=2), geom.scale[2])


@pytest.mark.parametrize(
    ("orientation", "display_shape", "scale"),
    [
        ("ras", (7, 11, 9), (1.0, 1.0, 1.0)),
        ("lps", (7, 11, 9), (1.0, 1.0, 1.0)),
        ("anisotropic", (7, 11, 9), (3.2, 0.75, 0.6)),
        ("sagittal", (11, 9, 7), (1.0, 1.0, 1.2)),  # file axes point A, S, L
    ],
)
def test_shape_and_scale_by_hand(orientation, display_shape, scale):
    geom = DisplayGeometry.from_affine(orientation_affine(orientation), SHAPE)
    assert geom.display_shape == display_shape
    assert geom.scale == pytest.approx(scale)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_translate_is_the_position_of_display_voxel_zero(orientation):
    affine = orientation_affine(orientation)
    geom = DisplayGeometry.from_affine(affine, SHAPE)
    flat = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    file_index = np.unravel_index(int(geom.to_display(flat)[0, 0, 0]), SHAPE)
    x, y, z, _one = affine @ np.array([*file_index, 1.0])
    assert geom.translate == pytest.approx((z, -y, -x))


def test_napari_world_coordinates_match_the_affine():
    """Non-oblique: translate + scale * display index = (S, P, L) position of that voxel."""
    affine = orientation_affine("lps")
    geom = DisplayGeometry.from_affine(affine, SHAPE)
    world = geom.to_display(np.moveaxis(_world_centres(affine, SHAPE), -1, 0))
    i, j, k = 3, 5, 2
    expected = np.array(geom.translate) + np.array(geom.scale) * [i, j, k]
    x, y, z = world[:, i, j, k]
    assert np.allclose(expected, [z, -y, -x])


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_to_display_from_display_bit_exact(orientation):
    geom = DisplayGeometry.from_affine(orientation_affine(orientation), SHAPE)
    rng = np.random.default_rng(5)
    for arr in (rng.random(SHAPE).astype(np.float32), rng.integers(0, 5, size=(3, *SHAPE)).astype(np.uint8)):
        disp = geom.to_display(arr)
        assert disp.flags.c_contiguous and disp.dtype == arr.dtype
        assert disp.shape[-3:] == geom.display_shape
        back = geom.from_display(disp)
        assert back.tobytes() == arr.tobytes()
    # the rater axis stays in front: each rater is reoriented on its own
    stack = rng.random((2, *SHAPE))
    assert np.array_equal(geom.to_display(stack)[1], geom.to_display(stack[1]))


def test_wrong_shapes_are_refused():
    geom = DisplayGeometry.from_affine(orientation_affine("lps"), SHAPE)
    with pytest.raises(InputError, match=r"expected an array of shape \(\.\.\., 9, 11, 7\) in file order"):
        geom.to_display(np.zeros((7, 11, 9)))
    with pytest.raises(InputError, match="in display order"):
        geom.from_display(np.zeros(SHAPE))
    with pytest.raises(InputError, match="singular"):
        DisplayGeometry.from_affine(np.diag([1.0, 0.0, 1.0, 1.0]), SHAPE)
    with pytest.raises(InputError, match="4x4"):
        DisplayGeometry.from_affine(np.eye(3), SHAPE)


def test_metadata_survives_copy_and_pickle():
    affine = orientation_affine("oblique")
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header["descrip"] = b"scanner X"
    geom = DisplayGeometry.from_affine(affine, SHAPE, header=header)
    meta = {"other": 1, **geom.as_metadata()}
    for clone in (copy.deepcopy(meta), pickle.loads(pickle.dumps(meta))):
        again = DisplayGeometry.from_metadata(clone)
        assert again is not None
        assert again.affine.tobytes() == affine.tobytes()
        assert again.header.binaryblock == geom.header.binaryblock
        assert again.file_shape == SHAPE
        assert np.array_equal(again.transform, geom.transform)
    # the inner dict and a doubly nested one are accepted too; no geometry -> None
    inner = meta["softseg_geometry"]
    assert DisplayGeometry.from_metadata(inner).file_shape == SHAPE
    assert DisplayGeometry.from_metadata({"softseg_geometry": meta}).file_shape == SHAPE
    assert DisplayGeometry.from_metadata({}) is None
    assert DisplayGeometry.from_metadata(None) is None


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("qform_only", [False, True])
def test_save_display_array_reproduces_the_file(tmp_path, orientation, qform_only):
    rng = np.random.default_rng(6)
    array = (rng.random(SHAPE) * 300).astype(np.int16)
    src = _write(tmp_path / "in.nii.gz", array, orientation_affine(orientation), qform_only=qform_only)
    vol = load_volume(src)
    geom = DisplayGeometry.from_metadata(copy.deepcopy(display_geometry(vol).as_metadata()))
    out = save_display_array(tmp_path / "out.nii.gz", geom.to_display(vol.array), geom)
    a, b = nib.load(src), nib.load(out)
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    assert b.get_data_dtype() == a.get_data_dtype()
    assert a.affine.tobytes() == b.affine.tobytes()
    assert a.header.binaryblock == b.header.binaryblock


def test_save_display_array_nifti2_and_bad_shape(tmp_path):
    array = np.random.default_rng(7).random(SHAPE).astype(np.float32)
    img = nib.Nifti2Image(array, orientation_affine("anisotropic"))
    src = tmp_path / "n2.nii"
    nib.save(img, src)
    vol = load_volume(src)
    geom = DisplayGeometry.from_metadata(display_geometry(vol).as_metadata())
    out = save_display_array(tmp_path / "n2_out.nii", geom.to_display(vol.array), geom)
    assert src.read_bytes() == out.read_bytes()
    with pytest.raises(InputError, match="display order"):
        save_display_array(tmp_path / "bad.nii", np.zeros(SHAPE), geom)
    assert not (tmp_path / "bad.nii").exists()


def test_geometry_without_header_writes_its_affine(tmp_path):
    affine = orientation_affine("lps")
    geom = DisplayGeometry.from_affine(affine, SHAPE)
    data = np.random.default_rng(8).random(geom.display_shape).astype(np.float32)
    out = save_display_array(tmp_path / "new.nii.gz", data, geom)
    img = nib.load(out)
    assert np.allclose(img.affine, affine)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.array_equal(geom.to_display(np.asanyarray(img.dataobj)), data)


def _display_affine(geom: DisplayGeometry) -> np.ndarray:
    """Voxel-to-RAS affine of the display array, derived from the file affine by brute force."""
    shape = geom.file_shape
    flat = np.arange(np.prod(shape)).reshape(shape)
    disp = geom.to_display(flat)
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    world = []
    for c in corners:
        file_index = np.unravel_index(int(disp[c]), shape)
        world.append(geom.affine @ np.array([*file_index, 1.0]))
    out = np.eye(4)
    out[:, 3] = world[0]
    for axis in range(3):
        out[:3, axis] = (world[axis + 1] - world[0])[:3]
    return out


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    given = None

if given is not None:

    @settings(max_examples=40, deadline=None)
    @given(
        perm=st.permutations([0, 1, 2]),
        signs=st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3),
        spacing=st.tuples(*[st.floats(0.2, 5.0)] * 3),
        shape=st.tuples(*[st.integers(2, 6)] * 3),
        tilt=st.floats(-0.3, 0.3),
    )
    def test_any_orientation_displays_as_spl_and_inverts_exactly(perm, signs, spacing, shape, tilt):
        rot = np.zeros((3, 3))
        for i, (p, s) in enumerate(zip(perm, signs)):
            rot[p, i] = s
        c, s = np.cos(tilt), np.sin(tilt)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ rot  # mildly oblique
        affine = np.eye(4)
        affine[:3, :3] = rot * np.array(spacing)
        affine[:3, 3] = [3.0, -7.0, 11.0]
        geom = DisplayGeometry.from_affine(affine, shape)
        arr = np.random.default_rng(0).random(shape).astype(np.float32)
        assert geom.from_display(geom.to_display(arr)).tobytes() == arr.tobytes()
        assert nib.aff2axcodes(_display_affine(geom)) == ("S", "P", "L")
        # scale sits on a 2**-20 mm grid (geometry._dyadic), so compare to that resolution
        voxel_sizes = np.linalg.norm(_display_affine(geom)[:3, :3], axis=0)
        assert np.allclose(geom.scale, voxel_sizes, rtol=0, atol=2.0**-20)


# --------------------------------------------------------------------------- one voxel size (issue 13 #3)
from softseg.geometry import GRID_TOLERANCE_MM, check_same_grid, voxel_size  # noqa: E402
from softseg.io import Volume, check_nifti  # noqa: E402


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_voxel_size_is_the_affines_column_lengths_for_every_holder(tmp_path, orientation):
    aff = orientation_affine(orientation)
    # hand-computed: the scale factors the test affines were built from
    expected = {"ras": (1, 1, 1), "lps": (1, 1, 1), "anisotropic": (0.6, 0.75, 3.2),
                "oblique": (0.9, 1.1, 2.5), "sagittal": (1.0, 1.0, 1.2)}[orientation]
    assert voxel_size(aff) == pytest.approx(expected, abs=1e-12)
    assert voxel_size(aff[:3, :3]) == pytest.approx(expected, abs=1e-12)
    # nibabel's own helper agrees; io (through softseg.affines) and geometry share one function
    assert voxel_size(aff) == pytest.approx(tuple(nib.affines.voxel_sizes(aff)), abs=1e-12)
    import softseg.affines

    assert voxel_size is softseg.affines.voxel_size
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), aff), path)
    vol = load_volume(path)
    # every holder gives the same numbers (float32 sform: within float32 rounding)
    for holder in (vol, check_nifti(path), display_geometry(vol)):
        assert voxel_size(holder) == pytest.approx(expected, rel=1e-6)
    assert vol.spacing == voxel_size(vol)
    assert display_geometry(vol).file_spacing == voxel_size(vol)
    with pytest.raises(InputError, match=r"expected a \(4, 4\) affine"):
        voxel_size(np.eye(2))


def _vol(affine, shape=(4, 4, 4), name="a.nii.gz"):
    from pathlib import Path

    return Volume(array=np.zeros(shape, np.float32), affine=np.asarray(affine, float), header=nib.Nifti1Header(), path=Path("/data") / name)


def test_check_same_grid_names_both_files_and_the_real_problem():
    a = _vol(np.eye(4), name="a.nii.gz")
    check_same_grid(a, _vol(np.eye(4) + np.diag([GRID_TOLERANCE_MM, 0, 0, 0]), name="b.nii.gz"))  # within tolerance
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    with pytest.raises(InputError, match=r"^/data/b\.nii\.gz and /data/a\.nii\.gz have different affines \(largest difference 0\.5 mm"):
        check_same_grid(a, _vol(shifted, name="b.nii.gz"))
    with pytest.raises(InputError, match=r"^/data/b\.nii\.gz has shape \(4, 4, 3\) but /data/a\.nii\.gz has shape \(4, 4, 4\)"):
        check_same_grid(a, _vol(np.eye(4), shape=(4, 4, 3), name="b.nii.gz"))
    nan = np.eye(4)
    nan[1, 1] = np.nan
    # two files with the same NaN affine are not "different affines": the NaN is named
    with pytest.raises(InputError, match=r"^/data/a\.nii\.gz: the affine holds NaN/Inf"):
        check_same_grid(_vol(nan, name="a.nii.gz"), _vol(nan, name="b.nii.gz"))
    # a caller's hint (how its user fixes it) ends every message
    hint = "a label must lie on its image's voxel grid"
    with pytest.raises(InputError, match=r"resample one onto the other's grid first; a label must lie on its image's voxel grid$"):
        check_same_grid(a, _vol(shifted, name="b.nii.gz"), hint=hint)
    with pytest.raises(InputError, match=r"the affine holds NaN/Inf; fix the file's sform/qform; a label must"):
        check_same_grid(_vol(nan, name="a.nii.gz"), a, hint=hint)


def test_display_geometry_names_the_file_of_a_bad_affine():
    singular = np.eye(4)
    singular[2, 2] = 0.0
    with pytest.raises(InputError, match=r"^/data/s\.nii\.gz: affine is singular"):
        display_geometry(_vol(singular, name="s.nii.gz"))
