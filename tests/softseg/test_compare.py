"""softseg.compare: table metrics against hand-computed values, statistics against scipy,
the HTML report's files and figures."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import ndimage
from scipy.stats import wilcoxon

from softseg import compare
from softseg.phantom import phantom
from softseg.errors import InputError

# four voxels (1 x 1 x 4): prediction and truth of the hand-computed case
P4 = np.array([0.95, 0.85, 0.3, 0.1], dtype=np.float32).reshape(1, 1, 4)
G4 = np.array([1, 0, 0, 0], dtype=np.float32).reshape(1, 1, 4)
R4 = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=np.uint8).reshape(2, 1, 1, 4)


def _h(p):
    return sum(-x * math.log(x) - (1 - x) * math.log(1 - x) for x in p if 0 < x < 1)


def test_subject_metrics_hand_computed():
    row, curves = compare.evaluate_subject(P4, G4, threshold=0.5, raters=R4,
                                           spacing=(1.0, 1.0, 2.0), thresholds=[0.2, 0.5, 0.9])
    # binarised at 0.5: [1, 1, 0, 0] vs [1, 0, 0, 0] -> TP 1, FP 1, FN 0
    assert row["dice"] == pytest.approx(2 / 3)
    assert row["precision"] == pytest.approx(0.5)
    assert row["recall"] == pytest.approx(1.0)
    assert row["rvd"] == pytest.approx(-1.0)  # (V_truth - V_pred) / V_truth, over-segmentation
    assert row["avd"] == pytest.approx(1.0)
    assert row["soft_rvd"] == pytest.approx((1 - 2.2) / 1)
    assert row["mse"] == pytest.approx((0.05**2 + 0.85**2 + 0.3**2 + 0.1**2) / 4, rel=1e-6)
    # Brier against the rater average [1, 0.5, 0, 0]
    assert row["brier"] == pytest.approx((0.05**2 + 0.35**2 + 0.3**2 + 0.1**2) / 4, rel=1e-6)
    # ECE: confidences 0.95, 0.85, 0.7, 0.9; correct: yes, no, yes, yes
    ece = 2 / 4 * abs(1 - 0.925) + 1 / 4 * abs(0 - 0.85) + 1 / 4 * abs(1 - 0.7)
    assert row["ece"] == pytest.approx(ece, rel=1e-6)
    assert row["entropy"] == pytest.approx(_h([0.95, 0.85, 0.3, 0.1]), rel=1e-6)
    assert row["rater_entropy"] == pytest.approx(math.log(2), rel=1e-6)
    assert row["entropy_error"] == pytest.approx(abs(row["entropy"] - math.log(2)))
    # volumes in mL with 2 mm^3 voxels
    assert row["soft_volume_ml"] == pytest.approx(2.2 * 2e-3, rel=1e-6)
    assert row["binary_volume_ml"] == pytest.approx(2 * 2e-3)
    assert row["reference_volume_ml"] == pytest.approx(1 * 2e-3)
    # sweep: Dice of p >= 0.2, 0.5, 0.9 -> [1,1,1,0], [1,1,0,0], [1,0,0,0]
    np.testing.assert_allclose(curves.dice[0], [2 / 4, 2 / 3, 1.0])
    np.testing.assert_allclose(curves.volume_ml[0], np.array([3, 2, 1]) * 2e-3)
    assert curves.hist_counts.sum() == 4  # four non-zero values
    assert curves.rel_count.sum() == 4


def test_lesion_detection_in_table():
    truth = np.zeros((12, 12, 30), dtype=np.float32)
    truth[2:5, 2:5, 2:5] = 1  # lesion 1: detected
    truth[2:5, 2:5, 20:23] = 1  # lesion 2: missed
    pred = np.zeros_like(truth)
    pred[2:5, 2:5, 2:5] = 0.9
    pred[8:11, 8:11, 12:15] = 0.8  # a false detection
    row, _ = compare.evaluate_subject(pred, truth, threshold=0.5)
    assert row["ltpr"] == pytest.approx(0.5)
    assert row["lfdr"] == pytest.approx(0.5)  # 1 false / (1 detected + 1 false)
    assert math.isnan(row["rater_entropy"]) and math.isnan(row["entropy_error"])


def test_cropping_to_support_changes_nothing():
    ph = phantom((24, 24, 10), n_raters=2, seed=3)
    pred = np.clip(ndimage.gaussian_filter(ph.truth, 0.8), 0, 1).astype(np.float32)
    small, _ = compare.evaluate_subject(pred, ph.truth, threshold=0.4)
    pad = ((5, 7), (3, 0), (0, 9))
    big, _ = compare.evaluate_subject(np.pad(pred, pad), np.pad(ph.truth, pad), threshold=0.4)
    for k in ("dice", "precision", "recall", "avd", "rvd", "soft_rvd", "ltpr", "lfdr",
              "soft_volume_ml", "binary_volume_ml", "entropy"):
        assert big[k] == pytest.approx(small[k], rel=1e-9), k
    ratio = np.pad(pred, pad).size / pred.size  # means over all voxels scale with N
    assert big["mse"] * ratio == pytest.approx(small["mse"], rel=1e-6)


def test_bad_predictions_and_references_are_explained():
    good = np.full((4, 4, 4), 0.5, dtype=np.float32)
    with pytest.raises(InputError, match="at least two candidates"):
        compare.compare_predictions({"a": good}, good, thresholds=0.5)
    with pytest.raises(InputError, match=r"shape \(4, 4, 3\)"):
        compare.compare_predictions({"a": good, "b": good[..., :3]}, good, thresholds=0.5)
    with pytest.raises(InputError, match="not a soft prediction"):
        compare.compare_predictions({"a": good, "b": (good > 0).astype(np.uint8)}, good,
                                    thresholds=0.5)
    with pytest.raises(InputError, match=r"'b': values must lie in \[0, 1\].*max 150\.0"):
        compare.compare_predictions({"a": good, "b": good * 300}, good, thresholds=0.5)
    with pytest.raises(InputError, match="NaN"):
        compare.compare_predictions({"a": good, "b": np.where(good > 0, np.nan, 0)}, good,
                                    thresholds=0.5)
    with pytest.raises(InputError, match="reference"):
        compare.compare_predictions({"a": good, "b": good}, good * 4, thresholds=0.5)
    with pytest.raises(InputError, match="raters have shape"):
        compare.evaluate_subject(good, good, threshold=0.5, raters=np.zeros((2, 4, 4, 5)))


def test_min_wilcoxon_pairs_against_scipy():
    assert compare.min_wilcoxon_pairs(0.05) == 6
    assert compare.min_wilcoxon_pairs(0.01) == 8
    for alpha in (0.05, 0.01):
        n = compare.min_wilcoxon_pairs(alpha)
        # the most extreme data (every difference of one sign) just reaches significance at n,
        # and cannot at n - 1
        x = np.arange(1.0, n + 1)
        assert wilcoxon(x, np.zeros(n)).pvalue < alpha
        assert wilcoxon(x[:-1], np.zeros(n - 1)).pvalue >= alpha


def test_wilcoxon_and_summary():
    rng = np.random.default_rng(1)
    ref = rng.random(8)
    better = ref + 0.05 + 0.01 * rng.random(8)
    same = ref.copy()
    noisy = ref + rng.normal(0, 0.05, 8)
    p = compare.wilcoxon_pvalues({"ref": ref, "better": better, "same": same, "noisy": noisy}, "ref")
    assert math.isnan(p["ref"]) and p["same"] == 1.0
    assert p["better"] == pytest.approx(wilcoxon(better, ref).pvalue)
    assert p["noisy"] == pytest.approx(wilcoxon(noisy, ref).pvalue)

    rows = {name: [{"dice": float(v)} for v in vals]
            for name, vals in (("ref", ref), ("better", better), ("noisy", noisy))}
    s = compare.summarize(rows, reference="ref", unit="repeats")
    assert s.mean["better"]["dice"] == pytest.approx(better.mean())
    assert s.std["better"]["dice"] == pytest.approx(better.std(ddof=1))
    assert s.significant("better", "dice") and s.cell("better", "dice").endswith("**")
    assert not s.cell("ref", "dice").endswith("**")
    with pytest.raises(InputError, match="not among"):
        compare.summarize(rows, reference="softseg")


def _comparison():
    ph = phantom((32, 32, 10), n_raters=3, seed=4)
    preds = {
        "smooth": np.clip(ndimage.gaussian_filter(ph.truth, 1.2), 0, 1).astype(np.float32),
        "hard": (ph.truth >= 0.5).astype(np.float32),
    }
    return compare.compare_predictions(preds, ph.truth, thresholds={"smooth": 0.35, "hard": 0.5},
                                       raters=ph.raters, spacing=ph.spacing), ph


def test_pool_curves_sums_counts_and_weights_reliability():
    comp, _ = _comparison()
    c = comp.curves["smooth"]
    pooled = compare.pool_curves([c, c])
    np.testing.assert_array_equal(pooled.hist_counts, 2 * c.hist_counts)
    np.testing.assert_allclose(pooled.rel_confidence, c.rel_confidence)
    assert pooled.dice.shape == (2, c.thresholds.size) and len(pooled.subjects) == 2


def test_report_folder_has_table_and_every_figure(tmp_path):
    comp, _ = _comparison()
    index = compare.write_report(tmp_path / "report", comp, title="t", meta={"dataset": "x"})
    folder = index.parent
    html = index.read_text()
    for name in compare.FIGURES:  # raters given: the entropy plot too
        png = folder / "figures" / f"{name}.png"
        assert png.exists() and f"figures/{name}.png" in html
        img = imread(png)[..., :3]
        assert img.std() > 0.05, f"{name} looks blank"
    with open(folder / "summary.csv", newline="") as fh:
        rows = {r["candidate"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"smooth", "hard"}
    assert float(rows["hard"]["dice_mean"]) == pytest.approx(comp.rows["hard"][0]["dice"])
    data = json.loads((folder / "metrics.json").read_text())
    assert data["samples"]["smooth"][0]["ece"] == pytest.approx(comp.rows["smooth"][0]["ece"])
    assert "Dice [%]" in html and "smooth" in html


# ------------------------------------------------------------- non-finite values, test n
def test_summary_counts_non_finite_values_and_infinite_means():
    rows = {
        "a": [{"rvd": 0.1, "rater_entropy": math.nan}, {"rvd": -math.inf, "rater_entropy": 2.0},
              {"rvd": 0.3, "rater_entropy": 4.0}],
        "b": [{"rvd": math.inf}, {"rvd": -math.inf}, {"rvd": 0.0}],
    }
    s = compare.summarize(rows)
    # a healthy subject with a predicted lesion (RVD = -inf) is not dropped: the mean is -inf
    assert s.mean["a"]["rvd"] == -math.inf and math.isnan(s.std["a"]["rvd"])
    assert s.counts["a"]["rvd"] == {"finite": 2, "inf": 1, "nan": 0}
    assert s.cell("a", "rvd") == "-inf [1 inf]"
    assert math.isnan(s.mean["b"]["rvd"])  # +inf and -inf: undefined
    assert s.counts["b"]["rvd"]["inf"] == 2
    # NaN = not applicable (no raters for that subject): left out, counted, shown as n
    assert s.mean["a"]["rater_entropy"] == 3.0
    assert s.counts["a"]["rater_entropy"] == {"finite": 2, "inf": 0, "nan": 1}
    assert s.cell("a", "rater_entropy") == "3.0 ± 1.4 [n=2]"


def test_wilcoxon_reports_the_pairs_it_used():
    ref = [0.50, 0.61, 0.40, 0.70, 0.55, 0.52, 0.48, 0.66, math.nan]
    cand = [0.60, 0.71, 0.40, 0.81, 0.62, 0.60, 0.59, 0.75, 0.90]
    r = compare.wilcoxon_tests({"ref": ref, "cand": cand}, "ref")
    # pair 8 has no reference value, pair 2 is a tie (zero difference): 7 pairs remain
    assert r["cand"].n == 7
    d = np.array(cand[:8]) - np.array(ref[:8])
    assert r["cand"].pvalue == pytest.approx(wilcoxon(d[d != 0]).pvalue)
    assert r["ref"].n == 0 and math.isnan(r["ref"].pvalue)
    # an infinite value is a sample (the most extreme difference), inf vs inf is a tie
    r = compare.wilcoxon_tests({"ref": [1.0, 2.0, math.inf, 4.0, 5.0, 6.0],
                                "cand": [math.inf, 2.5, math.inf, 4.5, 5.5, 6.5]}, "ref")
    assert r["cand"].n == 5
    rows = {c: [{"dice": v} for v in vals] for c, vals in (("ref", ref), ("cand", cand))}
    s = compare.summarize(rows, reference="ref")
    assert s.n_test["cand"]["dice"] == 7 and s.n["cand"] == 9
    assert s.counts["ref"]["dice"]["nan"] == 1


def test_entropy_mae_is_the_mean_entropy_error_over_subjects():
    rng = np.random.default_rng(5)
    rows, errors = [], []
    for _ in range(3):
        raters = (rng.random((3, 6, 6, 3)) < 0.4).astype(np.uint8)
        pred = rng.random((6, 6, 3)).astype(np.float32)
        avg = raters.mean(axis=0)
        row, _ = compare.evaluate_subject(pred, raters[0], threshold=0.5, raters=raters)
        rows.append(row)
        h = lambda p: float(np.sum([-x * math.log(x) - (1 - x) * math.log(1 - x)  # noqa: E731
                                    for x in np.ravel(p) if 0 < x < 1]))
        errors.append(abs(h(pred) - h(avg)))
    s = compare.summarize({"c": rows})
    assert s.mean["c"]["entropy_error"] == pytest.approx(np.mean(errors), rel=1e-5)


def test_report_keeps_infinities_explicit(tmp_path):
    comp, _ = _comparison()
    comp.rows["hard"][0]["rvd"] = -math.inf  # as on a healthy subject
    compare.write_report(tmp_path / "r", comp)
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert data["samples"]["hard"][0]["rvd"] == "-inf"
    assert data["summary"]["mean"]["hard"]["rvd"] == "-inf"
    assert data["summary"]["counts"]["hard"]["rvd"] == {"finite": 0, "inf": 1, "nan": 0}
    assert compare.number(data["samples"]["hard"][0]["rvd"]) == -math.inf
    with open(tmp_path / "r" / "summary.csv", newline="") as fh:
        row = {r["candidate"]: r for r in csv.DictReader(fh)}["hard"]
    assert row["rvd_mean"] == "-inf" and row["rvd_n_inf"] == "1"
    assert "[1 inf]" in (tmp_path / "r" / "index.html").read_text()


def test_multiclass_comparison_report_and_console_table(tmp_path):
    from softseg.cli.compare import _print_table

    rng = np.random.default_rng(7)
    labels = np.zeros((10, 12, 6), dtype=np.uint8)
    labels[2:8, 2:6] = 1
    labels[2:8, 6:10] = 2
    onehot = np.stack([labels == k for k in range(3)]).astype(np.float32)
    sharp = ndimage.gaussian_filter(onehot, (0, 0.6, 0.6, 0.6))
    noisy = np.clip(onehot + 0.3 * rng.random(onehot.shape), 0, None)
    preds = {"sharp": sharp / sharp.sum(axis=0), "noisy": noisy / noisy.sum(axis=0)}
    comp = compare.compare_class_predictions(preds, labels, classes=["grey matter", "csf"])
    assert set(comp.per_class) == {"grey matter", "csf"}
    direct = compare.evaluate_subject_classes(preds["noisy"], labels,
                                              classes=["grey matter", "csf"])
    assert comp.per_class["csf"].rows["noisy"][0] == direct[0].per_class["csf"]
    assert comp.rows["noisy"][0] == direct[0].overall  # multi-class ECE and accuracy
    index = compare.write_report(tmp_path / "r", comp)
    html = index.read_text()
    assert "grey matter" in html and "Multi-class summary" in html
    assert (tmp_path / "r" / "figures" / "grey-matter" / "reliability.png").exists()
    with open(tmp_path / "r" / "samples_grey-matter.csv", newline="") as fh:
        rows = {r["candidate"]: r for r in csv.DictReader(fh)}
    assert float(rows["sharp"]["dice"]) == comp.per_class["grey matter"].rows["sharp"][0]["dice"]
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(data["classes"]) == {"grey matter", "csf"}
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        _print_table(comp, compare.summarize(comp.rows))
    text = buf.getvalue()
    assert "class: grey matter" in text and "class: csf" in text and "Dice [%]" in text
