"""The Threshold dock's multi-class face (issue 14, Build #4): a K-class prediction as napari shows
it (per-class soft layers + argmax layer, one GROUP_KEY) is one entry; one slider per class starts
at that class's threshold from the model card; the argmax view; per-class readouts equal
``softseg.metrics.evaluate_classes`` on the same arrays against a label map, a layer painted
with class codes, or one truth layer per class; overlays in the class colours."""

from __future__ import annotations

import numpy as np
import pytest

from candidates_support import CLASS_HEX, CLASSES, add_kclass_prediction, kclass_arrays
from napari_softseg._metadata import CLASS_KEY, CONFIDENCE_KEY, layers_with_role, set_role
from prediction_support import prediction_metadata
from softseg import metrics
from softseg.class_levels import encode
from softseg.confidence import ConfidenceScale

SCALE = (2.0, 1.0, 1.0)
THRESHOLDS = (0.45, 0.4, 0.35)
GROUP = "image · softseg (3 classes)"
KEYS = ("dice", "precision", "recall", "binary_volume_ml", "soft_volume_ml")


@pytest.fixture(scope="module")
def arrays():
    probs, labels = kclass_arrays()
    return {"probs": probs, "labels": labels}


@pytest.fixture
def setup(make_napari_viewer, open_widget, arrays):
    viewer = make_napari_viewer()
    viewer.add_image(arrays["probs"][0] * 100, name="image", scale=SCALE,
                     metadata=set_role({}, "image"))
    viewer.add_labels(arrays["labels"], name="labels", scale=SCALE,
                      metadata={CLASS_KEY: list(CLASSES)})
    add_kclass_prediction(viewer, arrays["probs"], thresholds=THRESHOLDS, scale=SCALE)
    widget = open_widget(viewer, "threshold")
    return viewer, widget


def _class_layer(cname):
    return f"image · softseg · {cname}"


def _assert_readouts_equal_evaluate_classes(widget, expected):
    widget.update_readouts()
    for cname in CLASSES:
        got = widget.last_readouts[_class_layer(cname)]
        for key in KEYS:
            want = expected.per_class[cname][key]
            if key == "soft_volume_ml":
                assert got[key] == pytest.approx(want, rel=1e-9), (cname, key)
            else:
                assert got[key] == want, (cname, key)  # counts: exact


def test_per_class_sliders_start_at_the_card_thresholds_and_readouts_equal_evaluate_classes(
        setup, arrays):
    viewer, widget = setup
    probs, labels = arrays["probs"], arrays["labels"]
    # one entry for the K-class prediction (not one per class layer, not the argmax layer)
    offered = [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())]
    assert offered == [GROUP]
    widget.select_layers([GROUP])
    assert widget.reference_combo.currentText() == "labels"  # the label map, not the image
    assert {c: s.value() for c, s in widget.class_sliders.items()} == dict(
        zip(CLASSES, (pytest.approx(t) for t in THRESHOLDS)))
    assert widget.class_box.isVisibleTo(widget) and not widget.slider.isVisibleTo(widget)
    overlays = layers_with_role(viewer.layers, "threshold_overlay")
    assert len(overlays) == 3
    for k, (cname, t) in enumerate(zip(CLASSES, THRESHOLDS), start=1):
        overlay = widget.overlay_layer(_class_layer(cname))
        np.testing.assert_array_equal(overlay.data.astype(bool), probs[k] >= np.float32(t))
        # drawn in the class colour the prediction's argmax layer uses
        rgba = overlay.colormap.map(np.array([1]))[0]
        want = [int(CLASS_HEX[cname][i:i + 2], 16) / 255 for i in (1, 3, 5)]
        np.testing.assert_allclose(rgba[:3], want, atol=1e-6)
    expected = metrics.evaluate_classes(probs, labels, classes=CLASSES, thresholds=THRESHOLDS,
                                        spacing=SCALE)
    _assert_readouts_equal_evaluate_classes(widget, expected)

    # one class's slider moves only its overlay
    before = {c: widget.overlay_layer(_class_layer(c)).data.copy() for c in CLASSES}
    widget.class_sliders["white matter"].setValue(0.7)
    np.testing.assert_array_equal(widget.overlay_layer(_class_layer("white matter")).data
                                  .astype(bool), probs[2] >= np.float32(0.7))
    for c in ("grey matter", "csf"):
        np.testing.assert_array_equal(widget.overlay_layer(_class_layer(c)).data, before[c])
    expected = metrics.evaluate_classes(probs, labels, classes=CLASSES,
                                        thresholds=(0.45, 0.7, 0.35), spacing=SCALE)
    _assert_readouts_equal_evaluate_classes(widget, expected)

    # the argmax view: each voxel its most probable class, background included
    widget.argmax_check.setChecked(True)
    argmax = probs.argmax(axis=0)  # plain numpy (no ties in these maps)
    for k, cname in enumerate(CLASSES, start=1):
        np.testing.assert_array_equal(widget.overlay_layer(_class_layer(cname)).data.astype(bool),
                                      argmax == k)
    assert not widget.class_box.isEnabled()
    expected = metrics.evaluate_classes(probs, labels, classes=CLASSES, spacing=SCALE)
    _assert_readouts_equal_evaluate_classes(widget, expected)
    assert "argmax" in widget.readout_label.text()


def test_per_class_curves_and_legend(setup, arrays, qtbot):
    viewer, widget = setup
    probs, labels = arrays["probs"], arrays["labels"]
    widget.select_layers([GROUP])
    qtbot.waitUntil(lambda: widget.curves_ready, timeout=10000)
    for k, cname in enumerate(CLASSES, start=1):
        curves = widget.entry(_class_layer(cname)).curves
        sweep = metrics.threshold_sweep(probs[k], labels == k, thresholds=curves["thresholds"],
                                        spacing=SCALE)
        np.testing.assert_allclose(curves["dice"], sweep.dice)
        np.testing.assert_allclose(curves["volume_ml"], sweep.volume_ml)
    legend = [t.get_text() for t in widget.plot.ax.get_legend().get_texts()]
    assert legend[:3] == [f"softseg · {c}: Dice" for c in CLASSES]
    widget.plot.draw()  # a hidden dock draws only when asked; the cursors follow the draw
    assert sorted(line.get_xdata()[0] for line in widget.plot.cursors) == pytest.approx(
        sorted(THRESHOLDS))


def test_references_painted_codes_and_per_class_truth_layers(setup, arrays):
    viewer, widget = setup
    probs, labels = arrays["probs"], arrays["labels"]
    # a rater who painted the classes with confidence in one layer (class_levels codes)
    scale = ConfidenceScale.default()
    levels = np.where(labels > 0, 3, 0).astype(np.uint8)
    levels[::2] = np.where(labels[::2] > 0, 1, 0)  # low confidence on every other slice
    codes = np.zeros(labels.shape, np.uint8)
    for k in range(1, 4):
        for lv in (1, 3):
            codes[(labels == k) & (levels == lv)] = encode(k, lv, n_levels=3)
    viewer.add_labels(codes, name="rater-1", scale=SCALE,
                      metadata={**set_role({}, "rater"), CLASS_KEY: list(CLASSES),
                                CONFIDENCE_KEY: scale.as_dict()})
    # one soft truth layer per class (as the MNI sample opens them)
    soft_truth = np.clip(probs + 0.02, 0, 1) / 1.08
    for k, cname in enumerate(CLASSES, start=1):
        viewer.add_image(soft_truth[k], name=f"truth · {cname}", scale=SCALE,
                         metadata={CLASS_KEY: {"index": k, "name": cname}})
    # the per-class truth maps are a reference, not single-class predictions
    offered = [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())]
    assert offered == [GROUP]
    widget.select_layers([GROUP])
    refs = [widget.reference_combo.itemText(i) for i in range(widget.reference_combo.count())]
    assert {"labels", "rater-1", "truth (3 classes)"} <= set(refs)
    assert widget.reference_combo.currentText() == "truth (3 classes)"  # a truth first
    expected = metrics.evaluate_classes(probs, soft_truth[1:], classes=CLASSES,
                                        thresholds=THRESHOLDS, spacing=SCALE)
    _assert_readouts_equal_evaluate_classes(widget, expected)
    # the painted classes, whatever their confidence: the rater's label map
    widget.reference_combo.setCurrentText("rater-1")
    expected = metrics.evaluate_classes(probs, labels, classes=CLASSES, thresholds=THRESHOLDS,
                                        spacing=SCALE)
    _assert_readouts_equal_evaluate_classes(widget, expected)
    # a single-class map is no reference for three classes
    viewer.add_labels((labels > 0).astype(np.uint8), name="brain mask", scale=SCALE,
                      metadata={CLASS_KEY: ["brain"]})
    refs = [widget.reference_combo.itemText(i) for i in range(widget.reference_combo.count())]
    assert "brain mask" not in refs


def test_one_k_class_prediction_at_a_time_without_a_card_and_after_a_class_layer_goes(
        setup, arrays):
    viewer, widget = setup
    probs = arrays["probs"]
    viewer.add_image(probs[1], name="image · single", scale=SCALE,
                     metadata=prediction_metadata(0.5, candidate="single"))
    add_kclass_prediction(viewer, probs, candidate="plain", thresholds=None, scale=SCALE)
    widget.select_layers(["image · single"])
    widget.select_layers(["image · single", GROUP])  # the K-class one is thresholded alone
    assert widget.selected_names() == [GROUP]
    widget.select_layers([GROUP, "image · single"])
    widget.select_layers(["image · plain (3 classes)"])
    assert widget.selected_names() == ["image · plain (3 classes)"]
    assert [s.value() for s in widget.class_sliders.values()] == [0.5, 0.5, 0.5]
    assert "not a model's prediction" in widget.status.text()
    # a class layer removed: the whole K-class view closes, no overlay stays
    viewer.layers.remove("image · plain · white matter")
    assert widget.selected_names() == []
    assert not layers_with_role(viewer.layers, "threshold_overlay")
    offered = [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())]
    assert "image · plain (3 classes)" not in offered  # an incomplete group is not offered
    # Apply keeps one result per class, updated in place
    widget.select_layers([GROUP])
    first = widget.apply()
    n = len(viewer.layers)
    widget.class_sliders["csf"].setValue(0.6)
    second = widget.apply()
    assert len(first) == 3 and len(viewer.layers) == n
    assert [ly.name for ly in second] == [
        "image · softseg · grey matter · threshold 0.45",
        "image · softseg · white matter · threshold 0.40",
        "image · softseg · csf · threshold 0.60"]
