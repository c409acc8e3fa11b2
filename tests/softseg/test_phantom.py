"""softseg.phantom: the partial-volume phantom and dataset folders."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from softseg.phantom import _Blob, _blob_fractions, _lesion_fraction, phantom, write_dataset
from softseg.errors import InputError

SMALL = (40, 44, 16)


@pytest.fixture(scope="module")
def ph():
    return phantom(SMALL, seed=0)


def test_arrays_types_and_shapes(ph):
    assert ph.image.dtype == np.float32 and ph.image.shape == SMALL
    assert ph.truth.dtype == np.float32 and ph.truth.shape == SMALL
    assert ph.raters.dtype == np.uint8 and ph.raters.shape == (4, *SMALL)
    assert set(np.unique(ph.raters)) <= {0, 1}
    assert ph.lesions.dtype.kind in "iu" and ph.lesions.shape == SMALL
    assert ph.spacing == (1.0, 1.0, 2.0)
    assert np.allclose(np.diag(ph.affine), [1.0, 1.0, 2.0, 1.0])
    assert np.isfinite(ph.image).all()


def test_truth_is_a_partial_volume_fraction(ph):
    t = ph.truth
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    partial = (t > 0) & (t < 1)
    assert partial.sum() > 0.3 * (t > 0).sum()  # a thin rim: most target voxels are partial
    assert (t == 1).sum() > 0 and (t == 0).sum() > t.size // 2
    # many distinct fractions (multiples of 1/64 with 4x4x4 supersampling), not a few levels
    assert len(np.unique(t[partial])) > 30
    assert np.allclose(t * 64, np.round(t * 64), atol=1e-4)


def test_partial_volume_matches_analytic_ellipsoid_volume():
    """With no surface perturbation the blob is an ellipsoid: volume 4/3 pi a b c."""
    spacing = np.array([1.0, 1.0, 2.0])
    shape = (48, 44, 24)
    coords = [(np.arange(n) - (n - 1) / 2.0) * d for n, d in zip(shape, spacing)]
    radii = np.array([17.3, 14.1, 19.7])
    blob = _Blob(radii=radii, amps=np.zeros(1), freqs=np.ones(1), dirs=np.eye(3)[:1], phases=np.zeros(1))
    outer, inner = _blob_fractions(blob, coords, spacing, (1.0, 0.8), 4)
    voxel = float(np.prod(spacing))
    exact = 4.0 / 3.0 * np.pi * np.prod(radii)
    assert outer.sum() * voxel == pytest.approx(exact, rel=3e-3)
    assert inner.sum() * voxel == pytest.approx(exact * 0.8**3, rel=3e-3)
    # the boundary-band shortcut gives exactly what supersampling every voxel gives
    centres = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
    ticks = (np.arange(4) + 0.5) / 4 - 0.5
    offsets = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), -1).reshape(-1, 3) * spacing
    brute = (blob.rho(centres[..., None, :] + offsets) < 1.0).mean(axis=-1)
    assert np.array_equal(outer, brute)


def test_lesion_fraction_matches_analytic_volume():
    spacing = np.array([1.0, 1.0, 2.0])
    coords = [(np.arange(n) - (n - 1) / 2.0) * d for n, d in zip((30, 30, 15), spacing)]
    radii = np.array([3.1, 2.4, 2.9])
    box, frac = _lesion_fraction(np.array([0.3, -1.2, 0.7]), radii, coords, spacing, 8)
    assert frac.sum() * np.prod(spacing) == pytest.approx(4.0 / 3.0 * np.pi * np.prod(radii), rel=0.02)


def test_image_has_tissue_contrast(ph):
    img, t = ph.image, ph.truth
    background = img[t == 0][: 200]  # corners are outside the blob
    lesion = img[(ph.lesions > 0) & (t > 0.99)]
    assert lesion.size > 0
    assert lesion.mean() > 1.3 * np.median(img[t == 0][img[t == 0] > 200])  # lesions brighter than interior
    corner = img[:4, :4, :]
    assert corner.mean() < 0.2 * lesion.mean() and corner.std() > 0  # dark, noisy background
    assert background.size > 0


def test_raters_disagree_like_people(ph):
    vols = ph.raters.reshape(ph.n_raters, -1).sum(axis=1)
    assert len({r.tobytes() for r in ph.raters}) == ph.n_raters  # all different
    low, high = int(np.argmin(ph.rater_levels)), int(np.argmax(ph.rater_levels))
    assert vols[low] > vols[high]  # a lower decision level draws a larger structure
    assert min(ph.rater_levels) == pytest.approx(0.3) and max(ph.rater_levels) == pytest.approx(0.7)
    reference = ph.truth > 0.5
    for r in ph.raters.astype(bool):  # still close to the truth
        dice = 2 * (r & reference).sum() / (r.sum() + reference.sum())
        assert dice > 0.6


def test_missed_lesions_are_absent_from_that_rater():
    seen_miss = False
    for seed in range(4):
        p = phantom(SMALL, seed=seed, miss_probability=0.3)
        for r, missed in enumerate(p.missed_lesions):
            for k in missed:
                seen_miss = True
                assert p.raters[r][p.lesions == k].sum() == 0
    assert seen_miss
    none = phantom(SMALL, seed=0, miss_probability=0.0)
    assert all(m == () for m in none.missed_lesions)
    found = [none.raters[:, none.lesions == k].any() for k in range(1, int(none.lesions.max()) + 1)]
    assert all(found)


def test_lesions_are_small_and_several(ph):
    n = int(ph.lesions.max())
    assert n >= 3
    sizes = [int((ph.lesions == k).sum()) for k in range(1, n + 1)]
    assert min(sizes) >= 1 and max(sizes) < 150


def test_same_seed_same_data_different_seed_different_data(ph):
    again = phantom(SMALL, seed=0)
    for name in ("image", "truth", "raters", "lesions", "affine"):
        assert np.array_equal(getattr(ph, name), getattr(again, name))
    other = phantom(SMALL, seed=1)
    assert not np.array_equal(ph.truth, other.truth)
    assert not np.array_equal(ph.image, other.image)


def test_anisotropic_spacing_and_rater_count():
    p = phantom((24, 20, 12), spacing=(0.8, 0.9, 3.0), n_raters=2, seed=3)
    assert p.raters.shape == (2, 24, 20, 12)
    assert np.allclose(np.diag(p.affine)[:3], [0.8, 0.9, 3.0])
    assert np.allclose(p.affine[:3, 3], -(np.array([24, 20, 12]) - 1) / 2 * [0.8, 0.9, 3.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (4, 40, 40)}, "shape must be 3 integers >= 8"),
        ({"shape": (40, 40)}, "shape must be 3 integers >= 8"),
        ({"n_raters": 0}, "n_raters must be >= 1"),
        ({"spacing": (1, 0, 1)}, "spacing must be 3 positive numbers"),
        ({"levels": (0.7, 0.3)}, "levels must satisfy"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        phantom(**{"shape": SMALL, **kwargs})


def test_write_dataset_layout(tmp_path):
    root = write_dataset(tmp_path / "ds", n_subjects=3, shape=(24, 24, 10), n_raters=3, seed=5)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["subjects"] == ["sub-01", "sub-02", "sub-03"]
    assert meta["groups"] == {"sub-01": "centre-A", "sub-02": "centre-B", "sub-03": "centre-A"}
    assert meta["channels"] == ["image"] and meta["raters"] == ["1", "2", "3"]
    for subject in meta["subjects"]:
        folder = root / subject
        img = nib.load(folder / "image.nii.gz")
        truth = nib.load(folder / "truth_soft.nii.gz")
        assert img.get_data_dtype() == np.float32 and truth.get_data_dtype() == np.float32
        assert img.shape == (24, 24, 10)
        for r in (1, 2, 3):
            rater = nib.load(folder / f"rater-{r}.nii.gz")
            assert rater.get_data_dtype() == np.uint8
            assert json.loads((folder / f"rater-{r}.json").read_text())["rater"] == str(r)
        t = np.asanyarray(truth.dataobj)
        assert t.min() >= 0 and t.max() <= 1 and ((t > 0) & (t < 1)).any()
    # subjects differ, the dataset is reproducible
    a = np.asanyarray(nib.load(root / "sub-01" / "truth_soft.nii.gz").dataobj)
    b = np.asanyarray(nib.load(root / "sub-02" / "truth_soft.nii.gz").dataobj)
    assert not np.array_equal(a, b)
    again = write_dataset(tmp_path / "ds2", n_subjects=1, shape=(24, 24, 10), n_raters=3, seed=5)
    assert np.array_equal(np.asanyarray(nib.load(again / "sub-01" / "image.nii.gz").dataobj),
                          np.asanyarray(nib.load(root / "sub-01" / "image.nii.gz").dataobj))


def test_write_dataset_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="folder is not empty"):
        write_dataset(tmp_path / "ds", n_subjects=1, shape=(16, 16, 8))
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["precious.txt"]
    with pytest.raises(InputError, match="n_subjects must be >= 1"):
        write_dataset(tmp_path / "other", n_subjects=0)
    assert not (tmp_path / "other").exists()


def test_phantom_command(tmp_path, capsys):
    from softseg.cli import main

    out = tmp_path / "ds"
    assert main(["phantom", str(out), "--subjects", "2", "--shape", "20", "20", "8", "--raters", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["subjects"] == ["sub-01", "sub-02"] and printed["raters"] == ["1", "2"]
    assert (out / "sub-02" / "rater-2.nii.gz").exists()
    assert main(["phantom", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softseg phantom: error: ") and "--overwrite" in err and "\n" not in err
    assert main(["phantom", str(out), "--subjects", "1", "--shape", "20", "20", "8", "--overwrite"]) == 0
