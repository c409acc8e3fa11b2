"""The one fusion entry point: fuse() / FusionResult, the METHODS registry, training targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softseg import fusion
from softseg.errors import InputError
from softseg.fusion import METHODS, SoftRatersError, fuse


def _raters() -> np.ndarray:
    """Three binary raters on a 12 x 12 x 6 grid: a square drawn a little differently."""
    r = np.zeros((3, 12, 12, 6), np.uint8)
    r[0, 4:8, 4:8, 2:4] = 1
    r[1, 4:9, 4:8, 2:4] = 1
    r[2, 5:8, 4:8, 2:5] = 1
    return r


def _by_hand(d: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    d, w = d.astype(np.float64).ravel(), w.astype(np.float64).ravel()
    return (d * w).sum() / w.sum(), ((1 - d) * (1 - w)).sum() / (1 - w).sum()


def test_registry_is_the_one_method_list():
    assert list(METHODS) == ["staple", "average", "majority", "union", "intersection", "random"]
    assert fusion.fusion_methods() == ("staple", "average", "majority", "union", "intersection")
    assert fusion.fusion_methods(multiclass=True) == ("staple", "average", "majority")
    assert fusion.training_fusions() == ("staple", "average", "majority", "random")
    for name, spec in METHODS.items():
        assert spec.name == name and spec.title and spec.description
        assert bool(spec.target) == (spec.training and spec.fuses)
    from softseg import candidates, protocol

    assert candidates.FUSIONS == fusion.training_fusions()
    assert list(protocol.GROUND_TRUTHS) == ["staple", "average", "majority", "truth"]
    with pytest.raises(InputError, match="unknown fusion method 'median'; choose one of: staple, average"):
        fusion.get_method("median")
    with pytest.raises(InputError, match="'random' is a training choice"):
        fuse(_raters(), "random")


@pytest.mark.parametrize(
    ("method", "primitive"),
    [
        ("average", fusion.average),
        ("majority", fusion.majority_vote),
        ("union", fusion.union),
        ("intersection", fusion.intersection),
    ],
)
def test_simple_methods_and_the_one_rater_statistic(method, primitive):
    raters = _raters()
    res = fuse(raters, method, margin=1)
    np.testing.assert_array_equal(res.fused, primitive(raters))
    assert res.probability is None and res.staple is None and res.n_classes is None
    # region: the union's box grown by one voxel
    assert res.roi_box == [[3, 10], [3, 9], [1, 6]]
    box = (slice(3, 10), slice(3, 9), slice(1, 6))
    for j in range(3):
        sens, spec = _by_hand(raters[j][box], res.fused[box])
        assert res.sensitivity[j] == pytest.approx(sens, abs=1e-12)
        assert res.specificity[j] == pytest.approx(spec, abs=1e-12)
        np.testing.assert_allclose(res.confusion[j], [[spec, 1 - spec], [1 - sens, sens]], atol=1e-12)
    # the whole volume gives other specificities (more background), same sensitivities
    whole = fuse(raters, method, roi=None)
    assert whole.roi is None and whole.roi_box is None
    np.testing.assert_allclose(whole.sensitivity, res.sensitivity, atol=1e-12)
    assert np.all(whole.specificity >= res.specificity)


def test_staple_output_is_its_probability_and_its_estimates():
    raters = _raters()
    res = fuse(raters, "staple")
    ref = fusion.staple(raters, roi=fusion.default_roi(raters))
    assert res.fused is res.probability and res.fused.dtype == np.float32
    np.testing.assert_array_equal(res.fused, ref.probability.astype(np.float32))
    np.testing.assert_array_equal(res.sensitivity, ref.sensitivity)
    np.testing.assert_array_equal(res.specificity, ref.specificity)
    # STAPLE's estimates are the one definition with W = the posterior of its last M-step: at
    # convergence the final probability gives the same numbers to within tol
    region = res.roi
    for j in range(3):
        sens, spec = _by_hand(raters[j][region], ref.probability[region])
        assert res.sensitivity[j] == pytest.approx(sens, abs=1e-6)
        assert res.specificity[j] == pytest.approx(spec, abs=1e-6)
    # the consensus when asked: probability >= 0.5, the training target
    np.testing.assert_array_equal(res.consensus(), (res.probability >= 0.5).astype(np.uint8))
    np.testing.assert_array_equal(res.target, res.consensus())
    assert fuse(raters, "average").target.dtype == np.float32  # soft targets stay soft


def test_soft_staple_automatic_refused_or_allowed():
    raters = _raters().astype(np.float32)
    raters[0] *= np.float32(2 / 3)  # a confidence map
    auto = fuse(raters, "staple")
    assert auto.soft
    np.testing.assert_array_equal(
        auto.probability, fusion.staple(raters, soft=True, roi=auto.roi).probability.astype(np.float32)
    )
    with pytest.raises(SoftRatersError, match=r"binary STAPLE needs binary \(0/1\) raters but a\.nii holds") as info:
        fuse(raters, "staple", soft=False, names=["a.nii", "b.nii", "c.nii"])
    assert info.value.names == ("a.nii",) and info.value.method == "staple"
    with pytest.raises(SoftRatersError, match="majority vote needs binary"):
        fuse(raters, "majority")
    binary = _raters()
    assert not fuse(binary, "staple", soft=True).soft
    np.testing.assert_array_equal(fuse(binary, "staple", soft=True).fused, fuse(binary, "staple").fused)


def test_values_within_rounding_are_accepted_beyond_are_named():
    raters = _raters().astype(np.float32)
    raters[1, 5, 5, 2] = np.float32(1.0000001)
    raters[2, 0, 0, 0] = np.float32(-1e-8)
    res = fuse(raters, "majority")
    np.testing.assert_array_equal(res.fused, fusion.majority_vote(_raters()))
    raters[1, 5, 5, 2] = 1.25
    with pytest.raises(InputError, match=r"^average: b\.nii\.gz: values must lie in \[0, 1\].*max 1\.25"):
        fuse(raters, "average", names=["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    raters[1, 5, 5, 2] = np.nan
    with pytest.raises(InputError, match=r"b\.nii\.gz: contains 1 NaN/Inf"):
        fuse(raters, "average", names=["a.nii.gz", "b.nii.gz", "c.nii.gz"])


def test_iter_fuse_yields_steps_and_returns_the_result():
    raters = _raters()
    steps, seen = fusion.iter_fuse(raters, "staple"), []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    np.testing.assert_array_equal(result.fused, fuse(raters, "staple").fused)
    notes = []
    fuse(raters, "staple", progress=lambda f, t: notes.append(t))
    assert any(t.startswith("STAPLE iteration") for t in notes)


def test_summary_is_json_and_names_every_rater():
    res = fuse(_raters(), "staple")
    summary = res.summary(["a", "b", "c"])
    text = json.dumps(summary)  # strict JSON-able
    assert [r["name"] for r in summary["raters"]] == ["a", "b", "c"]
    assert summary["roi"]["mode"] == "region" and summary["roi"]["voxels"] == int(res.roi.sum())
    assert summary["staple"]["iterations"] == res.staple.iterations and "NaN" not in text
    with pytest.raises(InputError, match="2 names for 3 raters"):
        res.summary(["a", "b"])


# ------------------------------------------------------------------------------- training
def test_training_targets():
    raters = _raters().astype(np.float32)
    staple = fusion.training_target(raters, "staple")
    assert staple.shape == (1, *raters.shape[1:]) and staple.dtype == np.float32
    np.testing.assert_array_equal(staple[0], fuse(raters, "staple").consensus())
    np.testing.assert_array_equal(fusion.training_target(raters, "average")[0], raters.mean(axis=0))
    np.testing.assert_array_equal(fusion.training_target(raters, "random"), raters)
    np.testing.assert_array_equal(fusion.training_target(raters[:1], "staple"), raters[:1])
    soft = raters * np.float32(0.6)  # every rater cut at 0.5 votes as before
    np.testing.assert_array_equal(
        fusion.training_target(soft, "majority")[0], fusion.majority_vote(_raters())
    )
    with pytest.raises(InputError, match="unknown fusion 'union'; choose one of staple, average, majority, random"):
        fusion.training_target(raters, "union")


def test_multiclass_training_targets():
    labels = np.stack([_raters()[0] * 2, _raters()[1], _raters()[2] * 2])
    avg = fusion.training_target(labels, "average", n_classes=2)
    assert avg.shape == (1, 3, *labels.shape[1:])
    np.testing.assert_allclose(avg[0, 2], (labels == 2).mean(axis=0))
    np.testing.assert_allclose(avg.sum(axis=1), 1.0, atol=1e-6)
    vote = fusion.training_target(labels, "majority", n_classes=2)
    assert set(np.unique(vote)) == {0.0, 1.0} and np.all(vote.sum(axis=1) == 1)
    rand = fusion.training_target(labels, "random", n_classes=2)
    assert rand.shape == (3, 3, *labels.shape[1:])
    np.testing.assert_array_equal(rand[1, 1], labels[1] == 1)


# ------------------------------------------------------------------------------ multi-class
def test_two_class_label_maps_give_the_binary_numbers():
    """K = 1: the multi-class path's confusion matrices are the binary sensitivity/specificity."""
    raters = _raters()
    for method in ("average", "majority"):
        binary = fuse(raters, method)
        multi = fuse(raters, method, n_classes=1)
        np.testing.assert_allclose(multi.confusion, binary.confusion, atol=1e-12)
        np.testing.assert_array_equal(multi.roi, binary.roi)
        np.testing.assert_allclose(multi.pairwise_dice, binary.pairwise_dice, atol=1e-12)
        np.testing.assert_allclose(multi.disagreement, binary.disagreement, atol=1e-6)


def test_class_maps_one_hot_equal_label_maps_and_soft_ones_average_only():
    labels = np.stack([_raters()[0] * 2, _raters()[1], _raters()[2] * 2])
    one_hot = np.stack([[lab == c for c in range(3)] for lab in labels]).astype(np.float32)
    for method in ("staple", "average", "majority"):
        a = fuse(labels, method, n_classes=2)
        b = fuse(one_hot, method, n_classes=2, class_maps=True)
        np.testing.assert_array_equal(a.fused, b.fused)
        np.testing.assert_allclose(a.confusion, b.confusion, atol=1e-12)
    soft = one_hot.copy()
    soft[0, 2] *= 0.5
    soft[0, 0] = 1 - soft[0, 1:].sum(axis=0)
    res = fuse(soft, "average", n_classes=2, class_maps=True)
    np.testing.assert_allclose(res.probability, soft.mean(axis=0), atol=1e-7)
    assert res.soft and res.fused.dtype == np.uint8
    # soft raters against the soft reference, by hand: theta[j, t, s] = sum(P_t Q_js) / sum(P_t)
    p = res.probability[(slice(None), res.roi)].astype(np.float64)
    q = soft[0][(slice(None), res.roi)].astype(np.float64)
    np.testing.assert_allclose(res.confusion[0], (p @ q.T) / p.sum(axis=1)[:, None], atol=1e-12)
    with pytest.raises(SoftRatersError, match="multi-class STAPLE needs one class per voxel but r0"):
        fuse(soft, "staple", n_classes=2, class_maps=True, names=["r0", "r1", "r2"])
    with pytest.raises(InputError, match="must sum to 1"):
        fuse(soft * 0.9, "average", n_classes=2, class_maps=True)
    with pytest.raises(InputError, match="union is defined for two classes only"):
        fuse(labels, "union", n_classes=2)


def test_class_probabilities_from_per_class_maps():
    gm = np.array([[1.0, 0.5, 0.0]], np.float32)
    wm = np.array([[0.0, 0.5, 0.25]], np.float32)
    probs = fusion.class_probabilities([gm, wm], name="rater-a")
    np.testing.assert_allclose(probs, [[[0.0, 0.0, 0.75]], [[1.0, 0.5, 0.0]], [[0.0, 0.5, 0.25]]])
    # within rounding above 1: rescaled to sum 1 exactly
    close = fusion.class_probabilities([gm, wm + np.float32(3e-6)], name="rater-a")
    assert close.sum(axis=0).max() <= 1.0 + 1e-7 and close.min() >= 0
    with pytest.raises(InputError, match=r"rater-a: the per-class maps sum to 1\.25 at voxel \(0, 0\)"):
        fusion.class_probabilities([gm, wm + np.float32(0.25)], name="rater-a")


def test_multiclass_training_targets_from_class_maps():
    """Per-class rater files (class probabilities): one-hot maps give the label-map targets;
    soft ones are averaged, or reduced to each rater's most probable class for STAPLE/vote."""
    labels = np.stack([_raters()[0] * 2, _raters()[1], _raters()[2] * 2])
    one_hot = np.stack([[lab == c for c in range(3)] for lab in labels]).astype(np.float32)
    for method in ("staple", "average", "majority", "random"):
        np.testing.assert_array_equal(
            fusion.training_target(one_hot, method, n_classes=2, class_maps=True),
            fusion.training_target(labels, method, n_classes=2),
        )
    soft = one_hot.copy()
    soft[0, 2] *= 0.4  # rater 0 unsure of class 2: its most probable class there is background
    soft[0, 0] = 1 - soft[0, 1:].sum(axis=0)
    reduced = labels.copy()
    reduced[0][labels[0] == 2] = 0
    np.testing.assert_array_equal(
        fusion.training_target(soft, "staple", n_classes=2, class_maps=True),
        fusion.training_target(reduced, "staple", n_classes=2),
    )
    avg = fusion.training_target(soft, "average", n_classes=2, class_maps=True)
    np.testing.assert_allclose(avg[0], soft.mean(axis=0), atol=1e-7)
    with pytest.raises(InputError, match="class_maps=True needs n_classes"):
        fusion.training_target(soft, "average", class_maps=True)


def test_multiclass_average_ties_are_decided_by_the_tolerance_not_by_rounding():
    """Two raters paint CSF at confidence 1/3, two at 2/3 (the Fuse widget's 3-class test found
    125 such voxels): CSF and background both have mean 1/2 exactly, but float32 gives
    background 1 - 0.33333334 = 0.6666666 < 0.6666667, so an exact comparison labels CSF."""
    third = np.float32(1 / 3)
    level = np.array([third, third, 2 * third, 2 * third], np.float32)  # per rater, one voxel
    near = np.float32(0.5) + np.float32(2e-3)  # a real (not rounding) majority elsewhere
    per_rater = []
    for j in range(4):
        csf = np.array([[level[j], 0.25, near]], np.float32)
        gm = np.zeros_like(csf)
        per_rater.append(fusion.class_probabilities([gm, gm, csf], name=f"r{j}"))
    probs = np.stack(per_rater)  # (4 raters, 4 classes, 1, 3)
    res = fuse(probs, "average", n_classes=3, class_maps=True, roi=None)
    mean = res.probability[:, 0, 0]
    # the exact rule would have let rounding decide (this is what the tolerance is for)
    assert mean[3] != mean[0] and abs(float(mean[3]) - float(mean[0])) < fusion.TIE_TOLERANCE
    assert res.fused[0, 0] == 0 and res.undecided_voxels == 1
    # an unambiguous background (0.75 vs 0.25) and a real 0.502 / 0.498 split are not ties
    assert res.fused[0, 1] == 0 and res.fused[0, 2] == 3
    # the training target of a soft class-map average follows the same rule
    target = fusion.training_target(probs, "average", n_classes=3, class_maps=True)
    np.testing.assert_array_equal(target[0], res.probability)
