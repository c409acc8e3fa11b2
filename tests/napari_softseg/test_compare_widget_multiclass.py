"""The Compare dock's multi-class face (issue 14, Build #4): two K-class predictions (per-class
soft layers + argmax layer, one GROUP_KEY each) are one row each; by default binarised by argmax
(label-fusion paper), or at each model's per-class thresholds; the summary (multi-class ECE,
accuracy) and the per-class tables equal ``softseg.compare.compare_class_predictions`` on the
same arrays, and the per-class Dice equals numpy's count on the label map."""

from __future__ import annotations

import numpy as np
import pytest

from candidates_support import CLASSES, add_kclass_prediction, kclass_arrays
from napari_softseg._metadata import CLASS_KEY, set_role
from prediction_support import prediction_metadata
from softseg import compare

SCALE = (2.0, 1.0, 1.0)
THRESHOLDS = {"softseg": (0.45, 0.4, 0.35), "conventional": (0.5, 0.55, 0.3)}
TITLES = {c: f"image · {c} (3 classes)" for c in THRESHOLDS}


@pytest.fixture(scope="module")
def arrays():
    soft, labels = kclass_arrays()
    sharp, _ = kclass_arrays(blur=0.4, seed=1, shift=0.03)
    return {"softseg": soft, "conventional": sharp, "labels": labels}


@pytest.fixture
def setup(make_napari_viewer, open_widget, qtbot, arrays):
    viewer = make_napari_viewer()
    viewer.add_image(arrays["softseg"][0] * 100, name="image", scale=SCALE,
                     metadata=set_role({}, "image"))
    viewer.add_labels(arrays["labels"], name="labels", scale=SCALE,
                      metadata={CLASS_KEY: list(CLASSES)})
    for cand, t in THRESHOLDS.items():
        add_kclass_prediction(viewer, arrays[cand], candidate=cand, thresholds=t, scale=SCALE)
    widget = open_widget(viewer, "compare")
    return viewer, widget, qtbot


def _run(widget, qtbot):
    widget.comparison = None
    widget.run()
    qtbot.waitUntil(lambda: widget.comparison is not None and widget._worker is None,
                    timeout=60000)
    assert not widget.last_error, widget.last_error


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return 2.0 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())


def _check_tables(widget, expected, arrays, binarised):
    """The summary rows and each class's table equal the engine; Dice also by numpy."""
    widget.class_combo.setCurrentText("all classes (multi-class ECE, accuracy)")
    shown = widget.table_values()
    assert set(shown) == set(THRESHOLDS)
    assert {"ece", "accuracy"} <= set(widget.table_columns())
    for cand, values in shown.items():
        for metric, value in values.items():
            assert value == pytest.approx(expected.rows[cand][0][metric], nan_ok=True), metric
    for k, cname in enumerate(CLASSES, start=1):
        widget.class_combo.setCurrentText(cname)
        assert widget.shown() is widget.comparison.per_class[cname]
        widget.set_columns(["dice", "precision", "recall", "ece"])
        shown = widget.table_values()
        for cand, values in shown.items():
            want = expected.per_class[cname].rows[cand][0]
            for metric, value in values.items():
                assert value == pytest.approx(want[metric], nan_ok=True), (cname, metric)
            assert values["dice"] == pytest.approx(
                _dice(binarised[cand][k], arrays["labels"] == k), rel=1e-12), (cname, cand)
        # the class's plots are drawn (reliability, histogram, Dice and volume vs threshold)
        titles = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
        assert "Dice vs threshold" in titles and "Reliability diagram" in titles


def test_argmax_by_default_then_per_class_thresholds_equal_the_engine(setup, arrays):
    viewer, widget, qtbot = setup
    offered = [widget.prediction_list.item(i).text()
               for i in range(widget.prediction_list.count())]
    assert sorted(offered) == sorted(TITLES.values())  # one entry per K-class prediction
    widget.choose(reference="labels", predictions=list(TITLES.values()))
    assert widget.argmax_check.isVisibleTo(widget) and widget.argmax_check.isChecked()
    assert not widget.rater_list.isEnabled()  # raters: single-class comparisons only
    assert not widget.slider.isEnabled()  # argmax needs no threshold
    _run(widget, qtbot)
    preds = {c: arrays[c] for c in THRESHOLDS}
    expected = compare.compare_class_predictions(preds, arrays["labels"], classes=CLASSES,
                                                 spacing=SCALE)
    # argmax by plain numpy (no ties in these maps)
    binarised = {c: np.stack([p.argmax(axis=0) == k for k in range(4)])
                 for c, p in preds.items()}
    _check_tables(widget, expected, arrays, binarised)

    # each model's own per-class thresholds (from its card)
    widget.argmax_check.setChecked(False)
    widget.own_optimum.setChecked(True)
    _run(widget, qtbot)
    assert widget.thresholds_used == {c: dict(zip(CLASSES, t)) for c, t in THRESHOLDS.items()}
    expected = compare.compare_class_predictions(preds, arrays["labels"], classes=CLASSES,
                                                 thresholds=THRESHOLDS, spacing=SCALE)
    binarised = {c: np.stack([np.zeros_like(p[0], bool)]
                             + [p[k] >= np.float32(t) for k, t in enumerate(THRESHOLDS[c], 1)])
                 for c, p in preds.items()}
    _check_tables(widget, expected, arrays, binarised)


def test_single_and_k_class_predictions_are_not_compared_together(setup, arrays):
    viewer, widget, qtbot = setup
    viewer.add_image(arrays["softseg"][1], name="image · single", scale=SCALE,
                     metadata=prediction_metadata(0.5, candidate="single"))
    widget.choose(reference="labels", predictions=[TITLES["softseg"], "image · single"])
    widget.run()
    assert "one kind" in widget.last_error
    assert widget.comparison is None
