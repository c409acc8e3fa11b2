"""softseg.anatomy: the MNI-template subject generator, checked against independent references.

References: nilearn's own template images (volumes computed here with nibabel from the images
nilearn's loaders return), SimpleITK (B-spline transform and resampling), hand-computed
expectations. Most tests run on a slab of the real template (same code path, a fraction of the
cost); the volume checks use the whole template.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from softseg.anatomy import (
    CLASSES,
    TARGETS,
    RaterModel,
    Template,
    load_template,
    make_subject,
    random_field,
)
from softseg.anatomy.subject import _make_grid, _rotation, _sample_template
from softseg.errors import InputError

sitk = pytest.importorskip("SimpleITK")  # test dependency (pyproject [test])


def _nilearn_arrays():
    """The three images as nilearn's public loaders return them (float, [0, 1])."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    return (np.asarray(img.get_fdata()) for img in (t1, gm, wm)), t1.affine


def _slab(template: Template, box=((50, 150), (60, 180), (55, 95)), border=2) -> Template:
    """A box of the real template whose outer `border` voxels are emptied (so interpolation at
    its edges sees zeros, as it does at the edges of the whole template)."""
    sl = tuple(slice(a, b) for a, b in box)

    def cut(x):
        y = np.array(x[sl], dtype=np.float32)
        y[:border], y[-border:] = 0, 0
        y[:, :border], y[:, -border:] = 0, 0
        y[:, :, :border], y[:, :, -border:] = 0, 0
        return y

    t1, gm, wm = cut(template.t1), cut(template.gm), cut(template.wm)
    affine = template.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([a for a, _ in box], dtype=float)
    return Template(t1=t1, gm=gm, wm=wm, mask=t1 > 0, affine=affine)


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def slab(template):
    return _slab(template)


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


IDENTITY = dict(deformation_mm=0.0, scale_range=(1.0, 1.0), rotation_deg=0.0, translation_mm=0.0)


# ------------------------------------------------------------------------------ template
def test_template_is_nilearns_with_the_t1_support_as_head_mask(template):
    (t1, gm, wm), affine = _nilearn_arrays()
    assert template.shape == (197, 233, 189)
    np.testing.assert_array_equal(template.affine, affine)
    np.testing.assert_array_equal(template.mask, t1 > 0)
    np.testing.assert_allclose(template.gm, np.where(t1 > 0, gm, 0), atol=1e-7)
    np.testing.assert_allclose(template.wm, np.where(t1 > 0, wm, 0), atol=1e-7)
    assert (gm + wm <= 1 + 1e-6).all()  # so csf = 1 - GM - WM >= 0 inside the mask
    volumes = template.volumes_ml()
    # the numbers the template module documents (nilearn 0.10+ ships these exact images)
    assert volumes["head"] == pytest.approx(1886.539, abs=1e-3)
    assert gm.sum() / 1000 == pytest.approx(1008.199, abs=1e-2)
    assert volumes["grey matter"] == pytest.approx(gm[t1 > 0].sum() / 1000, rel=1e-9)
    assert gm[t1 <= 0].sum() / 1000 == pytest.approx(11.58, abs=0.01)
    # nilearn's own brain mask (T1 > 0.2) is a subset of ours
    assert ((t1 > 0.2) <= template.mask).all()


def test_missing_nilearn_gives_one_line_naming_the_extra():
    code = (
        "import sys; sys.modules['nilearn'] = None\n"
        "from softseg.anatomy import make_subject\n"
        "from softseg.errors import InputError\n"
        "try:\n    make_subject(seed=0)\nexcept InputError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "nilearn" in lines[0] and "pip install 'napari-softseg[anatomy]'" in lines[0]


# ------------------------------------------------------------------------------ B-spline
def _itk_bspline(field):
    """SimpleITK's cubic BSplineTransform over the field's domain with the field's coefficients."""
    tx = sitk.BSplineTransform(3, 3)
    tx.SetTransformDomainOrigin(tuple(field.origin))
    tx.SetTransformDomainPhysicalDimensions(tuple(field.size))
    tx.SetTransformDomainMeshSize(field.mesh_size)
    tx.SetTransformDomainDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    tx.SetParameters(tuple(field.itk_parameters()))
    return tx


def test_bspline_field_equals_simpleitk_bspline_transform():
    rng = np.random.default_rng(4)
    field = random_field(
        (-10.0, -20.0, 5.0), (100.0, 80.0, 60.0), control_spacing_mm=23.0, components=3,
        rms=2.0, rng=rng,
    )
    tx = _itk_bspline(field)
    points = field.origin + rng.random((300, 3)) * field.size
    ours = field.at_points(points)
    theirs = np.array([np.subtract(tx.TransformPoint(tuple(p)), p) for p in points])
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    grid = [np.linspace(field.origin[a], field.origin[a] + field.size[a], 9) for a in range(3)]
    on_grid = field.on_grid(grid, dtype=np.float64).reshape(3, -1).T
    mesh = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(on_grid, field.at_points(mesh), atol=1e-10)


def test_random_field_rms_is_the_requested_one():
    fields = [
        random_field((0, 0, 0), (200, 200, 200), control_spacing_mm=20, components=3, rms=2.0,
                     rng=np.random.default_rng(s))
        for s in range(3)
    ]
    axes = [np.linspace(0, 200, 41)] * 3
    rms = np.sqrt(np.mean([np.mean(f.on_grid(axes, dtype=np.float64) ** 2) for f in fields]))
    assert rms == pytest.approx(2.0, rel=0.1)


# ------------------------------------------------------------------------------ warp
def test_warp_equals_simpleitk_resample_with_the_same_transform(slab):
    """Our warp (B-spline displacement, then the similarity) == SimpleITK's Resample with a
    CompositeTransform(affine, bspline) and linear interpolation, voxel by voxel."""
    grid = _make_grid(np.array([1.0, 1.0, 1.0]), slab)
    rng = np.random.default_rng(3)
    lo = grid.affine[:3, 3] - 0.5
    field = random_field(lo, np.array(grid.shape, float), control_spacing_mm=30, components=3,
                         rms=2.0, rng=rng)
    scale, shift = 1.04, np.array([2.0, -3.0, 1.0])
    centre = slab.affine[:3, :3] @ np.argwhere(slab.mask).mean(0) + slab.affine[:3, 3]
    matrix = _rotation(np.array([4.0, -3.0, 5.0])).T / scale
    ours = _sample_template(slab, grid, field, matrix, centre, shift)

    bspline = _itk_bspline(field)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(matrix.ravel()))
    affine.SetCenter(tuple(centre))
    affine.SetTranslation(tuple(-matrix @ shift))
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    composite.AddTransform(bspline)  # applied first
    reference = sitk.Image([int(n) for n in grid.shape], sitk.sitkFloat32)
    reference.SetOrigin(tuple(grid.affine[:3, 3]))
    for key in ("gm", "t1"):
        image = sitk.GetImageFromArray(np.ascontiguousarray(getattr(slab, key).transpose(2, 1, 0)))
        image.SetOrigin(tuple(slab.affine[:3, 3]))
        warped = sitk.Resample(image, reference, composite, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        theirs = sitk.GetArrayFromImage(warped).transpose(2, 1, 0)
        assert theirs.sum() > 1000  # the brain is in the box
        np.testing.assert_allclose(ours[key], theirs, atol=1e-5)


# ------------------------------------------------------------------------------ volumes
def test_identity_subject_has_the_template_volumes_computed_from_nilearn(template):
    """Block averaging preserves each class's volume: with the identity transform and a 2 mm
    grid every output voxel is the mean of 8 whole template voxels."""
    (t1, gm, wm), _ = _nilearn_arrays()
    head = t1 > 0
    expected = {
        "grey matter": gm[head].sum() / 1000.0,
        "white matter": wm[head].sum() / 1000.0,
        "csf": (1.0 - gm - wm)[head].sum() / 1000.0,
    }
    subject = make_subject(seed=0, spacing=2.0, n_raters=1, **IDENTITY)
    volumes = subject.volumes_ml()
    for name in CLASSES:
        assert volumes[name] == pytest.approx(expected[name], abs=1e-3), name
    # the head (non-background) volume is the mask volume; block means are exact: check one
    # block by hand (output voxel -> template voxels 2i+x0 .. 2i+x0+1)
    assert (1 - subject.fraction("background")).sum() * 8 / 1000 == pytest.approx(head.sum() / 1000, abs=1e-3)
    x0 = np.rint(np.linalg.solve(template.affine, np.r_[subject.affine[:3, 3], 1])[:3] - 0.5).astype(int)
    i = np.array([40, 50, 45])
    lo = x0 + 2 * i
    block = np.where(head, gm, 0)[lo[0]:lo[0] + 2, lo[1]:lo[1] + 2, lo[2]:lo[2] + 2]
    assert subject.fraction("grey matter")[tuple(i)] == pytest.approx(block.mean(), abs=1e-6)


def test_deformation_changes_volumes_by_a_bounded_amount(template):
    """V_subject / (scale**3 V_template) lies within [1/max J, 1/min J] of the local deformation
    (change of variables) and, for the defaults, within the documented +-8 %."""
    base = template.volumes_ml()
    for seed in (1,):
        subject = make_subject(seed=seed, n_raters=1, spacing=2.0)
        t = subject.transform
        j_min, j_max = t.jacobian_range
        assert 0.4 < j_min < 1 < j_max < 2.2  # smooth and fold-free
        for name, volume in subject.volumes_ml().items():
            ratio = volume / (base[name] * t.scale**3)
            assert 1 / j_max <= ratio <= 1 / j_min, (seed, name, ratio)
            assert abs(ratio - 1) < 0.08, (seed, name, ratio)


# ------------------------------------------------------------------------------ subjects
@pytest.mark.parametrize("target", list(TARGETS))
def test_classes_sum_to_one_and_fractions_are_probabilities(slab, target):
    subject = make_subject(seed=5, target=target, template=slab, n_raters=2)
    assert subject.truth.dtype == np.float32
    assert subject.truth.shape == (len(TARGETS[target]) + 1, *subject.shape)
    assert subject.truth.min() >= 0 and subject.truth.max() <= 1
    np.testing.assert_allclose(subject.truth.sum(axis=0), 1.0, atol=1e-6)
    assert subject.raters.dtype == np.uint8 and subject.raters.max() <= len(TARGETS[target])
    assert subject.image.dtype == np.float32 and np.isfinite(subject.image).all()
    assert subject.affine[0, 0] == subject.spacing[0] == 2.0


def test_same_seed_same_subject_other_seed_other_subject(slab):
    a = make_subject(seed=11, target="tissue-lesion", template=slab, n_raters=2)
    b = make_subject(seed=11, target="tissue-lesion", template=slab, n_raters=2)
    c = make_subject(seed=12, target="tissue-lesion", template=slab, n_raters=2)
    for name in ("image", "truth", "raters", "lesions"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.transform == b.transform
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.truth, c.truth)
    assert a.transform.scale != c.transform.scale


def test_t1_contrast_and_noise(slab):
    s = make_subject(seed=3, template=slab, n_raters=1, bias=0.0, noise=0.03, gamma_range=(1, 1))
    labels = s.truth_labels()
    pure = s.truth.max(axis=0) > 0.95
    wm, gm, csf = (np.median(s.image[pure & (labels == k)]) for k in (2, 1, 3))
    # the template's T1 (rescaled to 1): white ~0.87, grey ~0.65, CSF ~0.27, times 1000
    assert wm > gm > csf
    assert wm == pytest.approx(870, rel=0.06) and gm == pytest.approx(650, rel=0.1)
    background = s.image[(s.fraction("background") == 1)]
    # Rician noise on a zero signal: Rayleigh with mean sigma * sqrt(pi / 2)
    assert background.mean() == pytest.approx(0.03 * wm * np.sqrt(np.pi / 2), rel=0.1)


def test_raters_disagree_like_people(slab):
    """Dice of each rater against the argmax of the truth, in the range reported for manual
    tissue segmentations; raters differ from each other."""
    s = make_subject(seed=0, n_raters=4, template=slab)
    labels = s.truth_labels()
    dice = {name: [_dice(s.raters[r] == k, labels == k) for r in range(4)]
            for k, name in enumerate(s.classes, start=1)}
    assert 0.82 < min(dice["grey matter"]) and max(dice["grey matter"]) < 0.97
    assert 0.82 < min(dice["white matter"]) and max(dice["white matter"]) < 0.97
    assert 0.45 < min(dice["csf"]) and max(dice["csf"]) < 0.9
    pairwise = [_dice(s.raters[i] == 1, s.raters[j] == 1) for i in range(4) for j in range(i)]
    assert max(pairwise) < 0.97
    # a rater's decision offsets move their GM/WM boundary: more GM offset -> more GM voxels
    offsets = np.array(s.rater_record.offsets)
    preference = offsets[:, 1] - offsets[:, 2]
    gm_counts = [(s.raters[r] == 1).sum() for r in range(4)]
    assert np.corrcoef(preference, gm_counts)[0, 1] > 0.5


def test_lesions_are_small_in_white_matter_and_spare_most_slices(template):
    s = make_subject(seed=2, target="tissue-lesion", n_raters=4)
    n = int(s.lesions.max())
    assert 3 <= n <= 8
    wm_before = s.fraction("white matter") + s.fraction("lesion")  # lesions replaced WM
    for k in range(1, n + 1):
        voxels = s.lesions == k
        assert voxels.any()
        volume_mm3 = s.fraction("lesion")[voxels].sum() * np.prod(s.spacing)
        # mean diameter 2..8 mm ellipsoid: volume between pi/6 (2^3)*0.5 and pi/6 (8^3)*1.5
        assert 2.0 < volume_mm3 < 410, (k, volume_mm3)
        assert wm_before[voxels].mean() > 0.8
    slices_with = (s.fraction("lesion") > 0).any(axis=(0, 1)).mean()
    assert slices_with < 0.35  # most axial slices hold no lesion
    lesion_dice = [_dice(s.raters[r] == 4, s.fraction("lesion") >= 0.5) for r in range(4)]
    assert 0.2 < np.mean(lesion_dice) < 0.9


def test_lesion_target_is_single_class_with_rater_levels(slab):
    model = RaterModel(miss_probability=0.0, jitter_mm=0.0, lesion_levels=(0.3, 0.7))
    s = make_subject(seed=4, target="lesion", template=slab, n_raters=3, raters=model,
                     n_lesions=5)
    assert s.classes == ("lesion",)
    assert sorted(s.rater_record.lesion_levels) == pytest.approx([0.3, 0.5, 0.7])
    frac = s.fraction("lesion")
    # without jitter a rater marks exactly the voxels whose lesion fraction beats their level
    for r, level in enumerate(s.rater_record.lesion_levels):
        differ = (s.raters[r] == 1) != (frac > level)
        assert (np.abs(frac[differ] - level) < 1e-6).all()  # float32 rounding at the level only
        assert (s.raters[r] == 1).sum() > 0
    assert s.rater_record.missed_lesions == ((), (), ())


def test_misses_remove_whole_lesions(slab):
    model = RaterModel(miss_probability=1.0)
    s = make_subject(seed=4, target="lesion", template=slab, n_raters=2, raters=model, n_lesions=4)
    assert all(len(m) == int(s.lesions.max()) for m in s.rater_record.missed_lesions)
    assert not s.raters.any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": "tumour"}, "unknown target 'tumour'; expected one of tissue, tissue-lesion, lesion"),
        ({"spacing": 0.1}, "spacing must be 1 or 3 voxel sizes between 0.5 and 8 mm"),
        ({"spacing": (2, 2)}, "spacing must be 1 or 3 voxel sizes"),
        ({"n_raters": 0}, "n_raters must be >= 1; got 0"),
        ({"noise": -1}, "noise must be a finite number >= 0; got -1"),
        ({"scale_range": (1.2, 1.1)}, "scale_range must be (low, high)"),
        ({"n_lesions": 99, "target": "lesion"}, "n_lesions must be a count or a (low, high) range within 0 .. 50; got 99"),
        ({"n_lesions": (5, 2), "target": "lesion"}, "n_lesions must be a count or a (low, high) range"),
    ],
)
def test_bad_parameters_are_one_line_errors(slab, kwargs, message):
    with pytest.raises(InputError) as info:
        make_subject(template=slab, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_rater_model_checks_its_fields():
    with pytest.raises(InputError, match="lesion_levels must satisfy 0 < low <= high < 1"):
        RaterModel(lesion_levels=(0.0, 0.5))
    with pytest.raises(InputError, match="class_offset must be in"):
        RaterModel(class_offset=0.7)
    assert json.loads(json.dumps(RaterModel().as_dict()))["lesion_levels"] == [0.3, 0.7]
