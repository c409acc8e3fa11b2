"""softseg.metrics.evaluate, the one metric table: hand-computed values (the papers' formulas),
SimpleITK's overlap measures, the METRICS registry, values within rounding of [0, 1], healthy
subjects (everything empty)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from softseg import compare
from softseg import metrics as M
from softseg.errors import InputError
from softseg.metrics.table import TABLE_KEYS

# four voxels (1 x 1 x 4), 2 mm^3 each: prediction, reference and rater average
P4 = np.array([0.95, 0.85, 0.3, 0.1], dtype=np.float32).reshape(1, 1, 4)
G4 = np.array([1, 0, 0, 0], dtype=np.uint8).reshape(1, 1, 4)
A4 = np.array([1.0, 0.5, 0.0, 0.0], dtype=np.float32).reshape(1, 1, 4)
SPACING = (1.0, 1.0, 2.0)


def _h(values) -> float:
    """Binary entropy (nats) summed over values, written out."""
    return sum(-x * math.log(x) - (1 - x) * math.log(1 - x) for x in values if 0 < x < 1)


def test_every_key_by_hand():
    v = M.evaluate(P4, G4, threshold=0.5, spacing=SPACING, rater_average=A4)
    assert list(v) == list(TABLE_KEYS)  # the registry's keys, in its order
    # binarised at 0.5: P = [1, 1, 0, 0] vs G = [1, 0, 0, 0]: TP 1, FP 1, FN 0, TN 2
    assert v["threshold"] == 0.5
    assert v["dice"] == pytest.approx(2 / 3)
    assert v["precision"] == pytest.approx(1 / 2)
    assert v["recall"] == 1.0
    assert v["specificity"] == pytest.approx(2 / 3)
    assert v["rvd"] == pytest.approx(-1.0)  # (V_ref - V_pred) / V_ref: over-segmentation
    assert v["avd"] == pytest.approx(1.0)
    # surfaces: P at z = 0, 2 mm; G at z = 0 -> directed distances [0, 2] and [0];
    # 95th percentile with linear interpolation: 0.95 * 2 mm
    assert v["hausdorff_mm"] == pytest.approx(1.9)
    # one true lesion with 1 predicted voxel (< 3): missed; the predicted component is false
    assert (v["ltpr"], v["lfdr"]) == (0.0, 1.0)
    assert (v["n_true_lesions"], v["n_predicted_lesions"]) == (1, 1)
    assert (v["n_detected_lesions"], v["n_false_lesions"]) == (0, 1)
    # soft: sum p = 2.2, sum g = 1, sum p g = 0.95
    assert v["soft_dice"] == pytest.approx(2 * 0.95 / 3.2, rel=1e-6)
    assert v["soft_rvd"] == pytest.approx((1 - 2.2) / 1, rel=1e-6)
    assert v["mse"] == pytest.approx((0.05**2 + 0.85**2 + 0.3**2 + 0.1**2) / 4, rel=1e-6)
    # ECE, 10 bins: confidences .95 .85 .7 .9 (bins 9 8 7 9), correct T F T T
    ece = 2 / 4 * abs(1 - (0.95 + 0.9) / 2) + 1 / 4 * abs(0 - 0.85) + 1 / 4 * abs(1 - 0.7)
    assert v["ece"] == pytest.approx(ece, rel=1e-6)
    # Brier score against the rater average [1, 0.5, 0, 0] (label-fusion paper, eq. 2)
    assert v["brier"] == pytest.approx((0.05**2 + 0.35**2 + 0.3**2 + 0.1**2) / 4, rel=1e-6)
    assert v["entropy"] == pytest.approx(_h([0.95, 0.85, 0.3, 0.1]), rel=1e-6)
    assert v["rater_entropy"] == pytest.approx(math.log(2), rel=1e-6)
    assert v["entropy_error"] == pytest.approx(abs(_h([0.95, 0.85, 0.3, 0.1]) - math.log(2)),
                                               rel=1e-6)
    assert v["soft_volume_ml"] == pytest.approx(2.2 * 2e-3, rel=1e-6)
    assert v["binary_volume_ml"] == pytest.approx(2 * 2e-3)
    assert v["reference_volume_ml"] == pytest.approx(1 * 2e-3)
    relaxed = M.evaluate(P4, G4, threshold=0.5, min_overlap=1)
    assert (relaxed["ltpr"], relaxed["lfdr"]) == (1.0, 0.0)
    assert math.isnan(relaxed["rater_entropy"]) and math.isnan(relaxed["entropy_error"])
    # without a rater average the Brier score is against the reference itself
    assert relaxed["brier"] == pytest.approx(relaxed["mse"])


def test_soft_reference_is_binarised_at_half_for_the_binary_metrics():
    soft_ref = np.array([0.9, 0.5, 0.49, 0.0], dtype=np.float32)
    pred = np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32)
    v = M.evaluate(pred, soft_ref, threshold=0.5)
    # reference >= 0.5 -> [1, 1, 0, 0]; prediction [1, 0, 1, 0]: TP 1, FP 1, FN 1
    assert v["dice"] == pytest.approx(0.5)
    assert v["reference_volume_ml"] == pytest.approx((0.9 + 0.5 + 0.49) * 1e-3, rel=1e-6)
    assert v["soft_dice"] == pytest.approx(2 * (0.9 + 0.49) / (2 + 1.89), rel=1e-6)


def test_evaluate_agrees_with_the_single_metrics_and_simpleitk():
    import SimpleITK as sitk

    rng = np.random.default_rng(4)
    truth = ndimage.gaussian_filter(rng.standard_normal((16, 18, 14)), 2) > 0.1
    prob = np.clip(ndimage.gaussian_filter(truth.astype(np.float32), 1.0)
                   + 0.05 * rng.random(truth.shape), 0, 1).astype(np.float32)
    spacing = (1.0, 0.9, 2.0)
    avg = rng.random(truth.shape).astype(np.float32)
    v = M.evaluate(prob, truth, spacing=spacing, threshold=0.4, rater_average=avg)
    binary = prob >= np.float32(0.4)
    assert v["dice"] == M.dice(binary, truth)
    assert v["precision"] == M.precision(binary, truth)
    assert v["recall"] == M.recall(binary, truth)
    assert v["specificity"] == pytest.approx(M.specificity(binary, truth), rel=1e-12)
    assert v["rvd"] == M.relative_volume_difference(binary, truth)
    assert v["hausdorff_mm"] == pytest.approx(
        M.hausdorff_distance(prob, truth, spacing=spacing, threshold=0.4), rel=1e-12)
    assert v["ltpr"] == M.lesion_detection(prob, truth, threshold=0.4).ltpr
    assert v["soft_dice"] == pytest.approx(M.dice(prob, truth), rel=1e-9)
    assert v["mse"] == pytest.approx(M.mse(prob, truth), rel=1e-9)
    assert v["ece"] == pytest.approx(M.expected_calibration_error(prob, truth), abs=1e-12)
    assert v["brier"] == pytest.approx(M.brier_score(prob, avg), rel=1e-9)
    assert v["entropy"] == pytest.approx(M.subject_entropy(prob), rel=1e-6)
    assert v["rater_entropy"] == pytest.approx(M.subject_entropy(avg), rel=1e-6)
    assert v["binary_volume_ml"] == pytest.approx(M.volume(binary, spacing=spacing) / 1000)

    # an independent implementation: ITK's LabelOverlapMeasuresImageFilter (source = prediction,
    # target = reference: FalseNegativeError = 1 - recall, FalseDiscoveryRate = 1 - precision,
    # FalsePositiveError = FP / reference background = 1 - specificity)
    def image(mask):
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.SetSpacing(spacing[::-1])  # SimpleITK's x is numpy's last axis
        return img

    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(image(binary), image(truth))
    assert v["dice"] == pytest.approx(f.GetDiceCoefficient(), rel=1e-12)
    assert v["recall"] == pytest.approx(1 - f.GetFalseNegativeError(), rel=1e-12)
    assert v["precision"] == pytest.approx(1 - f.GetFalseDiscoveryRate(), rel=1e-12)
    assert v["specificity"] == pytest.approx(1 - f.GetFalsePositiveError(), rel=1e-12)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(image(binary))
    voxel_mm3 = float(np.prod(spacing))
    assert v["binary_volume_ml"] == pytest.approx(stats.GetSum() * voxel_mm3 / 1000, rel=1e-12)


def test_cropping_and_padding_change_nothing():
    rng = np.random.default_rng(2)
    truth = ndimage.gaussian_filter(rng.standard_normal((12, 14, 10)), 1.5) > 0.2
    prob = np.clip(ndimage.gaussian_filter(truth.astype(np.float32), 0.8), 0, 1)
    small = M.evaluate(prob, truth, threshold=0.3)
    pad = ((5, 7), (3, 0), (0, 9))
    big = M.evaluate(np.pad(prob, pad), np.pad(truth, pad), threshold=0.3)
    for key in TABLE_KEYS:
        if key in ("mse", "brier", "specificity", "ece", "uncertainty_auroc"):
            continue  # over all voxels: more (confident, correct) background changes them
        assert big[key] == pytest.approx(small[key], rel=1e-9, nan_ok=True), key
    ratio = np.pad(prob, pad).size / prob.size
    assert big["mse"] * ratio == pytest.approx(small["mse"], rel=1e-9)


def test_a_prepared_reference_gives_the_same_table():
    prob = np.clip(ndimage.gaussian_filter(G4.astype(np.float32), 0.5) + P4, 0, 1)
    ref = M.prepare_reference(G4, rater_average=A4)
    assert M.evaluate(prob, ref, threshold=0.5) == M.evaluate(prob, G4, threshold=0.5,
                                                              rater_average=A4)
    with pytest.raises(InputError, match="prepare_reference"):
        M.evaluate(prob, ref, threshold=0.5, rater_average=A4)


# ------------------------------------------------------------------------------ registry
def test_registry_names_and_formats_every_key():
    assert set(TABLE_KEYS) <= set(M.METRICS)
    for key, spec in M.METRICS.items():
        assert spec.key == key and spec.title and spec.description
        assert spec.better in ("higher", "lower", "zero", "")
        assert spec.level in (1, 2, 3)
    assert M.METRICS["dice"].higher_is_better is True
    assert M.METRICS["avd"].higher_is_better is False
    assert M.METRICS["rvd"].higher_is_better is None  # best at 0
    assert M.format_value("dice", 0.91234) == "91.2"
    assert M.format_value("rvd", -math.inf) == "-inf"
    assert M.format_value("hausdorff_mm", math.inf) == "inf"
    assert M.format_value("n_true_lesions", 3) == "3"
    assert M.format_value("rater_entropy", math.nan) == "n/a"
    assert M.format_value("brier", 0.00012) == "1.20"  # shown x 1e-4
    assert M.METRICS["brier"].header == "Brier [×1e-4]"
    assert compare.METRICS is M.METRICS  # one registry


# ------------------------------------------------------------- values within rounding
def _overshoots():
    decoded = 255 * float(np.float32(1 / 255))  # uint8 255 decoded with the float32 scl_slope 1/255
    assert decoded > 1  # 1.00000006
    smoothed = np.array([1 + 2e-16, -1e-17, 0.5])  # a Gaussian-smoothed 0/1 map (float64)
    assert smoothed[0] > 1 and smoothed[1] < 0
    return np.array([decoded, 0.5, 0.0]), smoothed


@pytest.mark.parametrize("which", [0, 1])
def test_values_within_rounding_of_unit_interval_are_probabilities(which):
    p = _overshoots()[which]
    clipped = np.clip(p, 0, 1)
    g = np.array([1, 1, 0], dtype=np.uint8)
    assert M.evaluate(p, g, threshold=0.5) == M.evaluate(clipped, g, threshold=0.5)
    assert M.evaluate(g, p, threshold=0.5) == M.evaluate(g, clipped, threshold=0.5)
    assert M.dice(p, g) == M.dice(clipped, g)
    assert M.optimal_threshold(p, g) == M.optimal_threshold(clipped, g)
    assert M.expected_calibration_error(p, g) == M.expected_calibration_error(clipped, g)
    np.testing.assert_array_equal(M.threshold_sweep(p, g).dice,
                                  M.threshold_sweep(clipped, g).dice)
    comp = compare.compare_predictions({"a": p.astype(np.float32), "b": clipped}, g,
                                       thresholds=0.5)
    assert comp.rows["a"][0]["dice"] == comp.rows["b"][0]["dice"]


@pytest.mark.parametrize(
    "call",
    [
        lambda p, g: M.evaluate(p, g, threshold=0.5),
        lambda p, g: M.evaluate(g.astype(np.float64), p, threshold=0.5),
        lambda p, g: M.dice(p, g),
        lambda p, g: M.optimal_threshold([p], [g]),
        lambda p, g: M.expected_calibration_error(p, g),
        lambda p, g: compare.compare_predictions({"a": p, "b": p}, g, thresholds=0.5),
    ],
)
def test_beyond_rounding_is_refused_with_the_exact_extremes(call):
    p = np.array([0.0, 0.5, 1.01])
    g = np.array([0, 1, 1], dtype=np.uint8)
    with pytest.raises(InputError, match=r"values must lie in \[0, 1\] \(tolerance 1e-06\); "
                                         r"got min 0\.0, max 1\.01"):
        call(p, g)
    tiny = np.array([0.0, 0.5, 1 + 2e-6])  # just beyond the tolerance: refused, printed exactly
    with pytest.raises(InputError, match=r"max 1\.000002"):
        call(tiny, g)


# --------------------------------------------------------------------- healthy subjects
def test_healthy_subject_everything_empty_gets_the_best_values():
    z = np.zeros((6, 7, 5), dtype=np.float32)
    v = M.evaluate(z, z.astype(np.uint8), threshold=0.5, rater_average=z, spacing=(1, 1, 3))
    best = {"dice": 1.0, "precision": 1.0, "recall": 1.0, "specificity": 1.0, "rvd": 0.0,
            "avd": 0.0, "hausdorff_mm": 0.0, "ltpr": 1.0, "lfdr": 0.0, "n_true_lesions": 0,
            "n_predicted_lesions": 0, "n_detected_lesions": 0, "n_false_lesions": 0,
            "soft_dice": 1.0, "soft_rvd": 0.0, "mse": 0.0, "ece": 0.0, "brier": 0.0,
            "entropy": 0.0, "rater_entropy": 0.0, "entropy_error": 0.0, "soft_volume_ml": 0.0,
            "binary_volume_ml": 0.0, "reference_volume_ml": 0.0}
    assert {k: v[k] for k in best} == best
    ev = M.evaluation(z, z, threshold=0.5)
    assert ev.reliability.count.sum() == z.size  # every voxel counted: confident and right


def test_structure_predicted_on_a_healthy_subject_takes_the_limits():
    z = np.zeros((6, 7, 5), dtype=np.float32)
    p = z.copy()
    p[2:4, 2:4, 1:3] = 0.9
    v = M.evaluate(p, z, threshold=0.5)
    assert (v["dice"], v["precision"], v["recall"]) == (0.0, 0.0, 1.0)
    assert v["rvd"] == -math.inf and v["avd"] == math.inf and v["soft_rvd"] == -math.inf
    assert v["hausdorff_mm"] == math.inf
    assert (v["ltpr"], v["lfdr"], v["n_false_lesions"]) == (1.0, 1.0, 1)


def test_compare_evaluates_healthy_subjects():
    """A SoftSeg model outputs exact zeros on a lesion-free subject: no "prob is empty"."""
    z = np.zeros((8, 9, 4), dtype=np.float32)
    comp = compare.compare_predictions({"softseg": z, "conventional": z.copy()}, z,
                                       thresholds=0.5, raters=np.zeros((2, 8, 9, 4), np.uint8))
    for cand in comp.rows:
        row = comp.rows[cand][0]
        assert row["dice"] == 1.0 and row["rvd"] == 0.0 and row["ece"] == 0.0
        assert row["rater_entropy"] == 0.0
        curves = comp.curves[cand]
        np.testing.assert_array_equal(curves.dice, 1.0)
        np.testing.assert_array_equal(curves.volume_ml, 0.0)
        assert curves.hist_counts.sum() == 0 and curves.rel_count.sum() == z.size


def test_bad_options_are_one_line_errors():
    with pytest.raises(TypeError):
        M.evaluate(P4, G4)  # the threshold is always explicit
    for kw, msg in (({"threshold": 0.0}, "threshold"), ({"threshold": "abc"}, "threshold"),
                    ({"threshold": 0.5, "spacing": (1, 0, 1)}, "spacing"),
                    ({"threshold": 0.5, "n_bins": 0}, "n_bins"),
                    ({"threshold": 0.5, "percentile": 101}, "percentile"),
                    ({"threshold": 0.5, "min_overlap": 0}, "min_overlap")):
        with pytest.raises(InputError, match=msg):
            M.evaluate(P4, G4, **kw)
    with pytest.raises(InputError, match=r"prediction shape \(1, 1, 4\) and reference shape"):
        M.evaluate(P4, G4[..., :3], threshold=0.5)
    with pytest.raises(InputError, match="rater average"):
        M.evaluate(P4, G4, threshold=0.5, rater_average=A4[..., :2])
