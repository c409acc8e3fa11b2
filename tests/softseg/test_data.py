"""softseg.data: dataset layout and validation, preprocessing, fusion, splits, slices."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from softseg import data as D
from softseg.phantom import write_dataset
from softseg.errors import InputError
from softseg.io import save_volume


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ds"
    write_dataset(root, n_subjects=4, shape=(40, 36, 8), n_raters=3, seed=1)
    return root


def _write_subject(folder, images, raters, affine=None, *, rater_sidecar=None):
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else affine
    for name, arr in images.items():
        save_volume(folder / f"{name}.nii.gz", arr, affine=affine)
    for rid, arr in raters.items():
        save_volume(folder / f"rater-{rid}.nii.gz", arr, affine=affine, sidecar=rater_sidecar)


# ------------------------------------------------------------------ layout and validation
def test_scan_phantom_dataset(dataset):
    info = D.scan_dataset(dataset)
    assert info.names == ("sub-01", "sub-02", "sub-03", "sub-04")
    assert info.channels == ("image",)
    assert info.classes == ("target",)
    assert info.rater_ids == ("1", "2", "3")
    groups = json.loads((dataset / "dataset.json").read_text())["groups"]
    assert {s.name: s.group for s in info.subjects} == groups
    assert all(len(s.raters) == 3 for s in info.subjects)


def test_empty_dataset_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="empty dataset") as exc:
        D.scan_dataset(tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="no such dataset folder"):
        D.scan_dataset(tmp_path / "missing")


def test_subject_without_image_or_raters_is_named(tmp_path):
    img = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    lab = (img > 0.5).astype(np.uint8)
    _write_subject(tmp_path / "a", {"image": img}, {"1": lab})
    _write_subject(tmp_path / "b", {}, {"1": lab})
    with pytest.raises(InputError, match="subject 'b' has no image"):
        D.scan_dataset(tmp_path)
    (tmp_path / "b" / "rater-1.nii.gz").unlink()
    _write_subject(tmp_path / "b", {"image": img}, {})
    with pytest.raises(InputError, match="subject 'b' has no rater"):
        D.scan_dataset(tmp_path)


def test_shape_and_affine_mismatch_inside_subject(tmp_path):
    img = np.zeros((8, 8, 4), np.float32)
    _write_subject(tmp_path / "s1", {"image": img}, {"1": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(InputError, match=r"subject 's1': \S*s1/rater-1\.nii\.gz has shape \(8, 8, 3\)"):  # full path
        D.load_subject(D.scan_dataset(tmp_path).subjects[0])
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    save_volume(tmp_path / "s1" / "rater-1.nii.gz", np.zeros((8, 8, 4), np.uint8), affine=shifted, overwrite=True)
    with pytest.raises(InputError, match="different affines"):
        D.load_subject(D.scan_dataset(tmp_path).subjects[0])


def test_multi_contrast_channels_sorted_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    lab = np.zeros((8, 8, 4), np.uint8)
    _write_subject(tmp_path / "s1", {"image_t2": rng.random((8, 8, 4)), "image_flair": rng.random((8, 8, 4))}, {"1": lab})
    info = D.scan_dataset(tmp_path)
    assert info.channels == ("flair", "t2")
    sub = D.load_subject(info.subjects[0])
    flair = nib.load(tmp_path / "s1" / "image_flair.nii.gz").get_fdata()
    # identity affine (RAS) -> display (S, P, L): transpose and flip rows/cols
    np.testing.assert_allclose(sub.images[0], np.flip(flair.transpose(2, 1, 0), axis=(1, 2)), rtol=1e-6)
    _write_subject(tmp_path / "s2", {"image_t2": rng.random((8, 8, 4))}, {"1": lab})
    with pytest.raises(InputError, match="subject 's2' has channels"):
        D.scan_dataset(tmp_path)


def test_orientation_does_not_change_the_slices(tmp_path):
    """The same voxels stored RAS or LPS (flipped array, matching affine) give identical slices."""
    rng = np.random.default_rng(3)
    img = rng.random((10, 12, 5)).astype(np.float32)
    lab = (img > 0.6).astype(np.uint8)
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    lps = ras.copy()
    lps[0, 0] = lps[1, 1] = -1.0
    lps[0, 3], lps[1, 3] = 9.0, 11.0  # voxel (9, 11, k) of the flipped array is voxel (0, 0, k)
    _write_subject(tmp_path / "a", {"image": img}, {"1": lab}, ras)
    _write_subject(tmp_path / "b", {"image": img[::-1, ::-1]}, {"1": lab[::-1, ::-1]}, lps)
    a, b = (D.load_subject(s) for s in D.scan_dataset(tmp_path).subjects)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.raters, b.raters)
    assert a.spacing == b.spacing == (2.0, 1.0, 1.0)


def test_confidence_levels_need_a_scale(tmp_path):
    img = np.zeros((6, 6, 3), np.float32)
    levels = np.zeros((6, 6, 3), np.uint8)
    levels[1:3, 1:3, 1] = 2
    levels[3, 3, 1] = 3
    side = {"softseg_confidence": {"values": [0.25, 0.5, 1.0]}}
    _write_subject(tmp_path / "s1", {"image": img}, {"1": levels}, rater_sidecar=side)
    sub = D.load_subject(D.scan_dataset(tmp_path).subjects[0])
    soft = sub.geometry.from_display(sub.raters[0])
    assert soft[1, 1, 1] == pytest.approx(0.5) and soft[3, 3, 1] == pytest.approx(1.0) and soft[0, 0, 0] == 0
    (tmp_path / "s1" / "rater-1.json").unlink()
    with pytest.raises(InputError, match="rater-1.nii.gz: .*confidence levels up to 3"):
        D.load_subject(D.scan_dataset(tmp_path).subjects[0])


# ------------------------------------------------------------------ preprocessing
def test_resample_linear_hand_values():
    ramp = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    # halving: output voxel centres at input coordinates 0.5 and 2.5 (field of view kept)
    np.testing.assert_allclose(D.resample(ramp, (1, 1, 2), order=1)[0, 0], [0.5, 2.5])
    # doubling: centres at -0.25, 0.25, ..., 3.25 (edges clamp to the nearest voxel)
    np.testing.assert_allclose(
        D.resample(ramp, (1, 1, 8), order=1)[0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]
    )
    assert D.resampled_shape((10, 33, 40), (2.0, 0.5, 1.0), (None, 1.0, 0.8)) == (10, 16, 50)


def test_resample_matches_simpleitk_inside():
    rng = np.random.default_rng(0)
    arr = rng.random((6, 20, 17)).astype(np.float32)
    spacing = (2.0, 0.7, 0.9)
    target = (None, 1.0, 0.5)
    shape = D.resampled_shape(arr.shape, spacing, target)
    ours = D.resample(arr, shape, order=1)
    out_sp = [n * s / m for n, s, m in zip(arr.shape, spacing, shape)]
    img = sitk.GetImageFromArray(arr)  # sitk axes are reversed: (W, H, S)
    img.SetSpacing(spacing[::-1])
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in shape[::-1]])
    f.SetOutputSpacing(out_sp[::-1])
    f.SetOutputOrigin([(-s + o) / 2 for s, o in zip(spacing[::-1], out_sp[::-1])])
    f.SetInterpolator(sitk.sitkLinear)
    ref = sitk.GetArrayFromImage(f.Execute(img))
    # compare where every output centre falls inside the input grid (no border convention)
    inside = np.ones(shape, bool)
    for ax, (n, s, o, m) in enumerate(zip(arr.shape, spacing, out_sp, shape)):
        pos = ((np.arange(m) + 0.5) * o) / s - 0.5
        ok = (pos >= 0) & (pos <= n - 1)
        inside &= ok.reshape([-1 if i == ax else 1 for i in range(3)])
    assert inside.sum() > 100
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-5)


def test_linear_label_resampling_makes_soft_borders():
    lab = np.zeros((1, 2, 16, 16), np.float32)
    lab[0, :, 4:11, 5:12] = 1.0
    prep = D.Preprocessing(spacing=(None, 1.5, 1.5), crop=(12, 12), channels=("image",))
    out = D.preprocess_label(lab, (1.0, 1.0, 1.0), prep)
    assert out.shape == (1, 2, 12, 12)
    assert out.min() >= 0 and out.max() <= 1
    frac = out[(out > 0.01) & (out < 0.99)]
    assert frac.size > 0  # fractional border values: soft ground truth "for free"
    assert out.sum() * 1.5**2 == pytest.approx(lab.sum(), rel=0.05)  # area kept


def test_zscore_per_channel():
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(5, 3, (4, 8, 8)), rng.normal(-2, 0.1, (4, 8, 8)), np.full((4, 8, 8), 7.0)])
    z = D.zscore(x)
    for c in range(2):
        assert z[c].mean() == pytest.approx(0, abs=1e-5)
        assert z[c].std() == pytest.approx(1, abs=1e-4)
    np.testing.assert_array_equal(z[2], 0)  # constant channel: centred only


def test_center_crop_or_pad():
    a = np.arange(20).reshape(4, 5)
    np.testing.assert_array_equal(D.center_crop_or_pad(a, (2, 3)), a[1:3, 1:4])
    p = D.center_crop_or_pad(a, (6, 5), value=-1)
    np.testing.assert_array_equal(p[1:5], a)
    assert (p[0] == -1).all() and (p[5] == -1).all()
    np.testing.assert_array_equal(D.center_crop_or_pad(a, (6, 3), value=-1)[1:5], a[:, 1:4])


def test_preprocess_image_channel_mismatch():
    prep = D.Preprocessing(spacing=(None, 1.0, 1.0), crop=(8, 8), channels=("t1", "t2"))
    with pytest.raises(InputError, match="1 channel.*expects 2"):
        D.preprocess_image(np.zeros((1, 2, 8, 8), np.float32), (1, 1, 1), prep)


# ------------------------------------------------------------------ fusion, splits, slices
def test_fuse_raters():
    r = np.zeros((3, 1, 4, 4), np.float32)
    r[0, 0, :2] = 1
    r[1, 0, :3] = 1
    r[2, 0, :1] = 1
    avg = D.fuse_raters(r, "average")
    np.testing.assert_allclose(avg[0, 0, :, 0], [1, 2 / 3, 1 / 3, 0])
    np.testing.assert_array_equal(D.fuse_raters(r, "majority")[0, 0, :, 0], [1, 1, 0, 0])
    staple = D.fuse_raters(r, "staple")
    assert set(np.unique(staple)) <= {0.0, 1.0} and staple.shape == (1, 1, 4, 4)
    assert D.fuse_raters(r, "random").shape == (3, 1, 4, 4)
    with pytest.raises(InputError, match="unknown fusion 'mean'; choose one of staple, average"):
        D.fuse_raters(r, "mean")


def test_split_reproducible_and_disjoint():
    names = [f"s{i}" for i in range(10)]
    a = D.split_subjects(names, val_fraction=0.2, test_fraction=0.2, seed=5)
    b = D.split_subjects(list(reversed(names)), val_fraction=0.2, test_fraction=0.2, seed=5)
    assert a == b
    assert (len(a.train), len(a.val), len(a.test)) == (6, 2, 2)
    assert sorted(a.train + a.val + a.test) == sorted(names)
    assert a != D.split_subjects(names, val_fraction=0.2, test_fraction=0.2, seed=6)
    with pytest.raises(InputError, match="too few"):
        D.split_subjects(["a", "b"], val_fraction=0.5, test_fraction=0.5)


def test_split_leave_one_group_out(dataset):
    info = D.scan_dataset(dataset)
    groups = {s.name: s.group for s in info.subjects}
    split = D.split_subjects(info.names, val_fraction=0.25, groups=groups, test_group="centre-B", seed=0)
    assert set(split.test) == {n for n, g in groups.items() if g == "centre-B"}
    assert not set(split.test) & set(split.train + split.val)
    with pytest.raises(InputError, match="no subject in group 'centre-Z'; groups in dataset.json: centre-A, centre-B"):
        D.split_subjects(info.names, groups=groups, test_group="centre-Z")


def test_build_slices(dataset):
    info = D.scan_dataset(dataset)
    subs = [D.load_subject(s) for s in info.subjects[:2]]
    prep = D.Preprocessing(spacing=D.resolve_spacing(None, subs), crop=(32, 32), channels=info.channels)
    assert prep.spacing == (None, subs[0].spacing[1], subs[0].spacing[2])
    rand = D.build_slices(subs, prep, fusion="random")
    n = sum(s.images.shape[1] for s in subs)
    assert rand.images.shape == (n, 1, 32, 32)
    assert rand.subject_slices == ((0, 8), (8, 16))
    assert [lab.shape for lab in rand.labels] == [(3, 8, 32, 32)] * 2
    chosen = rand.label_array([2, 0])
    np.testing.assert_array_equal(chosen[:8, 0], rand.labels[0][2])
    np.testing.assert_array_equal(chosen[8:, 0], rand.labels[1][0])
    avg = D.build_slices(subs, prep, fusion="average")
    np.testing.assert_allclose(avg.label_array(), rand.label_array(), atol=1e-6)
    assert 0 < avg.label_array().max() <= 1
