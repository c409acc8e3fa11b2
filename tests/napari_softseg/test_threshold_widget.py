"""The Threshold dock in a real napari viewer (Xvfb), opened as users open it (Plugins menu)
and directly: slider, band, optima, references, Apply (one result layer), saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from annotate_support import Dialogs, click
from napari_softseg._metadata import OWNER_KEY, layer_uid, role, set_role
from prediction_support import prediction_metadata
from softseg import metrics
from softseg.geometry import display_geometry
from softseg.io import load_volume, save_volume
from softseg.phantom import phantom

SCALE = (2.0, 1.0, 1.0)  # mm: voxel volume 2 mm^3


@pytest.fixture(scope="module")
def arrays():
    ph = phantom((48, 48, 12), n_raters=3, seed=1)
    truth = np.moveaxis(ph.truth, 2, 0)  # (slices, rows, cols)
    soft = np.clip(ndimage.gaussian_filter(truth, 1.2), 0, 1).astype(np.float32)
    sharp = np.clip(ndimage.gaussian_filter(truth, 0.5), 0, 1).astype(np.float32)
    image = np.moveaxis(ph.image, 2, 0)
    return {"soft": soft, "sharp": sharp, "truth": truth, "image": image}


def add_layers(viewer, arrays):
    viewer.add_image(arrays["image"], name="image", scale=SCALE,
                     metadata=set_role({}, "image"))
    viewer.add_labels((arrays["truth"] >= 0.5).astype(np.uint8), name="truth", scale=SCALE)
    viewer.add_image(arrays["soft"], name="image · softseg", scale=SCALE, colormap="magma",
                     metadata=prediction_metadata(0.35))
    viewer.add_image(arrays["sharp"], name="image · conventional", scale=SCALE,
                     metadata=prediction_metadata(0.7, candidate="conventional"))


@pytest.fixture
def setup(make_napari_viewer, open_widget, qtbot, arrays):
    viewer = make_napari_viewer(show=True)  # shown: the canvas is really drawn
    add_layers(viewer, arrays)
    widget = open_widget(viewer, "threshold")
    return viewer, widget, qtbot


SOFT, SHARP = "image · softseg", "image · conventional"


def _canvas(viewer):
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


def test_slider_drives_overlay_readouts_and_canvas(setup, arrays):
    viewer, widget, qtbot = setup
    soft = arrays["soft"]
    viewer.dims.set_point(0, 6 * SCALE[0])
    # the MR image is not a prediction; the truth is the default reference
    offered = [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())]
    assert offered == [SOFT, SHARP]
    assert widget.reference_combo.currentText() == "truth"
    widget.select_layers([SOFT])
    # starts at the layer's optimal threshold
    assert widget.slider.value() == pytest.approx(0.35)
    overlay = widget.overlay_layer(SOFT)
    assert role(overlay) == "threshold_overlay"
    assert overlay.metadata[OWNER_KEY] == layer_uid(viewer.layers[SOFT])
    np.testing.assert_array_equal(overlay.data, soft >= np.float32(0.35))
    n_layers = len(viewer.layers)
    before = _canvas(viewer)

    widget.slider.setValue(0.6)  # what dragging emits: valueChanged
    # the overlay follows at once, in the same layer and array (no new layers)
    assert len(viewer.layers) == n_layers
    assert layer_uid(widget.overlay_layer(SOFT)) == layer_uid(overlay)
    mask = soft >= np.float32(0.6)
    assert mask.any() and (soft >= np.float32(0.35)).sum() > mask.sum()
    np.testing.assert_array_equal(overlay.data.astype(bool), mask)
    after = _canvas(viewer)
    assert np.abs(after.astype(int) - before.astype(int)).sum() > 0, "overlay not redrawn"

    qtbot.waitUntil(lambda: widget.last_readouts.get(SOFT, {}).get("binary_volume_ml")
                    == pytest.approx(mask.sum() * 2e-3), timeout=3000)
    r = widget.last_readouts[SOFT]
    ref = arrays["truth"] >= 0.5
    # plain numpy
    assert r["soft_volume_ml"] == pytest.approx(soft.sum(dtype=np.float64) * 2e-3, rel=1e-9)
    inter = np.logical_and(mask, ref).sum()
    assert r["dice"] == pytest.approx(2 * inter / (mask.sum() + ref.sum()))
    assert r["precision"] == pytest.approx(inter / mask.sum())
    assert r["recall"] == pytest.approx(inter / ref.sum())
    assert r["dice"] == pytest.approx(metrics.dice(mask, ref))
    assert "Dice" in widget.readout_label.text()

    # the plot: the sweep equals metrics.threshold_sweep on the full volume
    qtbot.waitUntil(lambda: widget.curves_ready, timeout=5000)
    curves = widget.entry(SOFT).curves
    sweep = metrics.threshold_sweep(soft, ref, thresholds=curves["thresholds"], spacing=SCALE)
    np.testing.assert_allclose(curves["dice"], sweep.dice)
    np.testing.assert_allclose(curves["volume_ml"], sweep.volume_ml)
    assert [line.get_xdata()[0] for line in widget.plot.cursors] == [pytest.approx(0.6)]
    # a legend names each curve
    legend = [t.get_text() for t in widget.plot.ax.get_legend().get_texts()]
    assert legend == ["softseg: Dice", "softseg: volume"]


def test_range_mode_shows_only_the_band(setup, arrays):
    viewer, widget, qtbot = setup
    soft = arrays["soft"]
    widget.select_layers([SOFT])
    widget.range_mode.setChecked(True)
    assert widget.range_slider.isVisibleTo(widget) and not widget.slider.isVisibleTo(widget)
    widget.range_slider.setValue((0.3, 0.6))
    overlay = widget.overlay_layer(SOFT).data.astype(bool)
    band = (soft >= np.float32(0.3)) & (soft < np.float32(0.6))
    np.testing.assert_array_equal(overlay, band)
    assert band.any() and not overlay[soft >= 0.6].any() and not overlay[soft < 0.3].any()
    qtbot.waitUntil(lambda: widget.last_readouts.get(SOFT, {}).get("binary_volume_ml")
                    == pytest.approx(band.sum() * 2e-3), timeout=3000)
    # new data in the prediction layer: the overlay and the soft volume follow
    viewer.layers[SOFT].data = arrays["sharp"]
    band = (arrays["sharp"] >= np.float32(0.3)) & (arrays["sharp"] < np.float32(0.6))
    np.testing.assert_array_equal(widget.overlay_layer(SOFT).data.astype(bool), band)
    assert widget.entry(SOFT).soft_volume_ml == pytest.approx(
        arrays["sharp"].sum(dtype=np.float64) * 2e-3)


def test_one_slider_drives_all_or_each_at_its_optimum(setup, arrays):
    viewer, widget, _ = setup
    widget.select_layers([SOFT, SHARP])
    widget.slider.setValue(0.5)
    for name, key in ((SOFT, "soft"), (SHARP, "sharp")):
        np.testing.assert_array_equal(widget.overlay_layer(name).data.astype(bool),
                                      arrays[key] >= np.float32(0.5))
    widget.own_optimum.setChecked(True)
    assert not widget.slider.isEnabled()
    np.testing.assert_array_equal(widget.overlay_layer(SOFT).data.astype(bool),
                                  arrays["soft"] >= np.float32(0.35))
    np.testing.assert_array_equal(widget.overlay_layer(SHARP).data.astype(bool),
                                  arrays["sharp"] >= np.float32(0.7))
    widget.style_combo.setCurrentText("contour")
    assert widget.overlay_layer(SOFT).contour == 1 and widget.overlay_layer(SHARP).contour == 1
    # deselecting removes that layer's overlay
    widget.select_layers([SOFT])
    assert f"{SHARP} · threshold" not in viewer.layers


def test_a_layer_without_a_model_card_has_no_optimum_and_says_so(setup, arrays):
    viewer, widget, _ = setup
    viewer.add_image(arrays["soft"], name="plain", scale=SCALE)  # a soft map, not a prediction
    widget.select_layers(["plain", SOFT])
    widget.slider.setValue(0.6)
    widget.own_optimum.setChecked(True)
    assert widget.slider.isEnabled()  # the plain layer still follows the slider
    assert "'plain'" in widget.status.text() and "no optimal threshold" in widget.status.text()
    assert widget.current_thresholds() == {SOFT: (0.35, None), "plain": (0.6, None)}
    np.testing.assert_array_equal(widget.overlay_layer("plain").data.astype(bool),
                                  arrays["soft"] >= np.float32(0.6))  # not a silent 0.5


def test_bad_layers_are_refused_with_a_reason(setup, arrays):
    viewer, widget, _ = setup
    viewer.add_image(arrays["image"], name="float image", scale=SCALE)  # no role: offered
    n = len(viewer.layers)
    widget.select_layers(["float image"])  # an MR image, not a probability map
    assert "must lie in [0, 1]" in widget.status.text()
    assert "softseg predict" not in widget.status.text()
    assert len(viewer.layers) == n and widget.selected_names() == []
    viewer.add_labels(np.zeros((4, 5, 6), dtype=np.uint8), name="small")
    widget.select_layers([SOFT])
    widget.reference_combo.setCurrentText("small")
    assert "shape (4, 5, 6)" in widget.status.text()
    assert widget.reference_combo.currentText() == "(none)"


def test_painted_rater_reference_goes_through_its_confidence_scale(setup, arrays):
    """A reference painted with confidence levels counts only levels whose soft value is >= 0.5."""
    viewer, widget, qtbot = setup
    truth = arrays["truth"]
    levels = np.zeros(truth.shape, np.uint8)
    levels[truth > 0.2] = 1  # low: 1/3, background once binarised
    levels[truth >= 0.5] = 3  # high: 1.0
    scale = {"values": [1 / 3, 2 / 3, 1.0], "names": ["low", "medium", "high"]}
    viewer.add_labels(levels, name="painted", scale=SCALE, metadata={"softseg_confidence": scale})
    widget.select_layers([SOFT])
    widget.reference_combo.setCurrentText("painted")
    ref = widget.reference_data()
    np.testing.assert_allclose(np.unique(ref), [0.0, 1 / 3, 1.0], rtol=1e-6)
    widget.slider.setValue(0.5)
    widget.update_readouts()
    soft = arrays["soft"]
    expected = metrics.dice(soft >= np.float32(0.5), truth >= 0.5)  # the low band is not truth
    assert widget.last_readouts[SOFT]["dice"] == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- Apply: one result layer
def _pred_on_disk(tmp_path, arrays, viewer):
    file_soft = np.moveaxis(arrays["soft"], 0, 2)  # back to (X, Y, Z)
    affine = np.diag([-0.8, 0.9, 2.0, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    src = save_volume(tmp_path / "pred.nii.gz", file_soft, affine=affine)
    geometry = display_geometry(load_volume(src))
    viewer.add_image(geometry.to_display(file_soft), name="image · softseg",
                     scale=geometry.scale, translate=geometry.translate,
                     metadata={**geometry.as_metadata(), **prediction_metadata(0.4)})
    return file_soft, affine


def test_apply_twice_updates_one_result_layer(make_napari_viewer, open_widget, tmp_path, arrays):
    viewer = make_napari_viewer()
    _pred_on_disk(tmp_path, arrays, viewer)
    widget = open_widget(viewer, "threshold")
    widget.select_layers([SOFT])
    (first,) = widget.apply()
    assert role(first) == "threshold_result" and first.name == f"{SOFT} · threshold 0.40"
    n = len(viewer.layers)
    widget.slider.setValue(0.7)
    (second,) = widget.apply()
    assert len(viewer.layers) == n  # updated, not stacked
    assert layer_uid(second) == layer_uid(first) and second.name == f"{SOFT} · threshold 0.70"
    display = viewer.layers[SOFT].data
    np.testing.assert_array_equal(np.asarray(second.data).astype(bool), display >= np.float32(0.7))
    assert second.metadata["softseg_threshold"]["low"] == pytest.approx(0.7)
    # neither the result nor the overlay is offered back as a prediction or a reference
    offered = [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())]
    refs = [widget.reference_combo.itemText(i) for i in range(widget.reference_combo.count())]
    assert offered == [SOFT]
    assert not [t for t in refs if "threshold" in t]


def test_save_uses_readable_names_the_prediction_geometry_and_asks_before_replacing(
        make_napari_viewer, menu_widget, tmp_path, arrays, qtbot):
    viewer = make_napari_viewer(show=True)
    file_soft, affine = _pred_on_disk(tmp_path, arrays, viewer)
    widget = menu_widget(viewer, "threshold")
    widget.select_layers([SOFT])
    widget.apply()
    out = tmp_path / "out"
    out.mkdir()
    (path,) = widget.save_results(out)  # nothing there: no question
    assert path.name == "image_softseg_threshold-0.40.nii.gz"
    saved = load_volume(path)
    np.testing.assert_allclose(saved.affine, affine)
    np.testing.assert_array_equal(saved.array.astype(bool), file_soft >= np.float32(0.4))
    side = json.loads((out / "image_softseg_threshold-0.40.json").read_text())
    assert side["softseg_threshold"]["low"] == pytest.approx(0.4)
    assert side["softseg_threshold"]["source"] == SOFT
    old = path.read_bytes()
    # the same name again: the user is asked; Cancel keeps every byte
    widget.slider.setValue(0.4)
    widget.apply()
    dialogs = Dialogs("Cancel")
    assert widget.save_results(out) == []
    assert dialogs.done and "image_softseg_threshold-0.40.nii.gz" in dialogs.seen[0]
    assert path.read_bytes() == old and "Not saved" in widget.status.text()
    assert "--" not in widget.status.text() and "overwrite=" not in widget.status.text()
    dialogs = Dialogs("Replace")
    assert widget.save_results(out) == [path]
    assert dialogs.done
    # a layer without NIfTI geometry says what to do, in GUI words
    viewer.add_image(arrays["soft"], name="loose", metadata=prediction_metadata(0.5))
    widget.select_layers(["loose"])
    widget.apply()
    assert widget.save_results(out) == []
    assert "no NIfTI geometry" in widget.status.text() and "Predict widget" in widget.status.text()
    # the button asks for a folder first
    from qtpy.QtWidgets import QFileDialog

    asked = []
    qtbot_patch = pytest.MonkeyPatch()
    qtbot_patch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: asked.append(a) or ""))
    click(widget.save_button)
    qtbot_patch.undo()
    assert asked
