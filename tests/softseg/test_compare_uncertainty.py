"""The Compare report's uncertainty section (issue 15 #3): entropy MAE and the uncertainty-error
AUROC per candidate, their plots, and the ROC data pooled over subjects."""

from __future__ import annotations

import numpy as np
import pytest

from softseg import compare, metrics


def _case(seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros((6, 20, 20), np.float32)
    truth[2:4, 5:15, 5:15] = 1
    raters = np.stack([truth, np.roll(truth, 1, axis=2)])
    preds = {
        "softseg": np.clip(truth * 0.45 + rng.random(truth.shape) * 0.6, 0, 1).astype(np.float32),
        "conventional": (rng.random(truth.shape) < 0.05).astype(np.float32) * 0.99 + truth * 0.01,
    }
    return truth, raters, preds


def test_table_auroc_is_the_entropy_error_detection():
    truth, raters, preds = _case()
    result = compare.compare_predictions(preds, truth, thresholds=0.5, raters=raters)
    for name, p in preds.items():
        row = result.rows[name][0]
        err = metrics.misclassified(p, truth, threshold=0.5)
        exact = metrics.uncertainty_error_auroc(metrics.entropy(p), err)
        assert row["uncertainty_auroc"] == pytest.approx(exact, abs=2 / 200)  # 200 histogram bins
        c = result.curves[name]
        assert c.roc_error_counts.sum() == err.sum()
        assert c.roc_correct_counts.sum() == err.size - err.sum()


def test_roc_data_pools_by_addition():
    truth, raters, preds = _case()
    one = compare.compare_predictions(preds, truth, thresholds=0.5, raters=raters).curves["softseg"]
    pooled = compare.pool_curves([one, one])
    np.testing.assert_array_equal(pooled.roc_error_counts, 2 * one.roc_error_counts)
    back = compare.Curves.from_dict(pooled.as_dict())
    np.testing.assert_array_equal(back.roc_correct_counts, pooled.roc_correct_counts)
    # curves stored before issue 15 (no ROC data) still load and pool
    old = {k: v for k, v in one.as_dict().items() if not k.startswith("roc_")}
    legacy = compare.Curves.from_dict(old)
    assert legacy.roc_error_counts.size == 0
    assert "uncertainty_error" not in compare.available_figures({"a": legacy})
    assert compare.pool_curves([legacy, one]).roc_error_counts.size == 0


def test_report_has_an_uncertainty_section(tmp_path):
    truth, raters, preds = _case()
    result = compare.compare_predictions(preds, truth, thresholds=0.5, raters=raters)
    index = compare.write_report(tmp_path / "r", result)
    text = index.read_text()
    assert "<h2>Uncertainty</h2>" in text and "Uncertainty AUROC" in text and "MAE" in text
    assert (tmp_path / "r" / "figures" / "uncertainty_error.png").stat().st_size > 1000
    assert (tmp_path / "r" / "figures" / "entropy.png").exists()
    # the uncertainty figures are in their section, not repeated under Figures
    assert text.count("figures/uncertainty_error.png") == 1


def test_uncertainty_figure_plots_the_voxelwise_roc():
    """The plotted ROC of the report figure, checked point by point against voxel counts: point
    j >= 1 flags the voxels whose binary entropy (by hand) is above the bin edge j - 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, raters, preds = _case()
    result = compare.compare_predictions(preds, truth, thresholds=0.5, raters=raters)
    fig, ax = plt.subplots()
    try:
        compare.draw_figure(ax, "uncertainty_error", result.curves)
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(preds) <= set(lines)
        for name, p in preds.items():
            p64 = p.astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.nan_to_num(p64 * np.log(p64)) - np.nan_to_num((1 - p64) * np.log1p(-p64))
            err = (p64 >= 0.5) != (truth > 0.5)
            edges = np.linspace(0.0, np.log(2.0), 201)
            fpr, tpr = lines[name].get_xdata(), lines[name].get_ydata()
            assert fpr[0] == tpr[0] == 1.0  # every voxel flagged
            for j in range(1, len(edges) + 1):
                above = h > edges[j - 1]
                assert tpr[j] == pytest.approx(above[err].mean(), abs=1.5 / err.sum())
                assert fpr[j] == pytest.approx(above[~err].mean(), abs=1.5 / (~err).sum())
            assert tpr[-1] == fpr[-1] == 0.0
    finally:
        plt.close(fig)
