"""The Threshold dock widget in a real napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from softseg import metrics
from softseg.phantom import phantom
from softseg.geometry import display_geometry
from softseg.io import load_volume, save_volume
from prediction_support import prediction_metadata

SCALE = (2.0, 1.0, 1.0)  # mm: voxel volume 2 mm^3


@pytest.fixture(scope="module")
def arrays():
    ph = phantom((48, 48, 12), n_raters=3, seed=1)
    truth = np.moveaxis(ph.truth, 2, 0)  # (slices, rows, cols)
    soft = np.clip(ndimage.gaussian_filter(truth, 1.2), 0, 1).astype(np.float32)
    sharp = np.clip(ndimage.gaussian_filter(truth, 0.5), 0, 1).astype(np.float32)
    image = np.moveaxis(ph.image, 2, 0)
    return {"soft": soft, "sharp": sharp, "truth": truth, "image": image}


@pytest.fixture
def setup(make_napari_viewer, qtbot, arrays):
    from napari_softseg.widgets.threshold import ThresholdWidget

    viewer = make_napari_viewer(show=True)  # shown: the canvas is really drawn
    viewer.add_image(arrays["image"], name="image", scale=SCALE)
    viewer.add_labels((arrays["truth"] >= 0.5).astype(np.uint8), name="truth", scale=SCALE)
    viewer.add_image(arrays["soft"], name="soft", scale=SCALE, colormap="magma",
                     metadata=prediction_metadata(0.35))
    viewer.add_image(arrays["sharp"], name="sharp", scale=SCALE,
                     metadata=prediction_metadata(0.7, candidate="sharp"))
    widget = ThresholdWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Threshold")
    return viewer, widget, qtbot


def _overlay(viewer, name):
    return viewer.layers[f"{name} [threshold]"]


def _canvas(viewer):
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


def test_slider_drives_overlay_readouts_and_canvas(setup, arrays):
    viewer, widget, qtbot = setup
    soft = arrays["soft"]
    viewer.dims.set_point(0, 6 * SCALE[0])
    widget.select_layers(["soft"])
    # starts at the layer's optimal threshold
    assert widget.slider.value() == pytest.approx(0.35)
    overlay = _overlay(viewer, "soft")
    np.testing.assert_array_equal(overlay.data, soft >= np.float32(0.35))
    n_layers = len(viewer.layers)
    widget.reference_combo.setCurrentText("truth")
    before = _canvas(viewer)

    widget.slider.setValue(0.6)  # what dragging emits: valueChanged
    # the overlay follows at once, in the same layer (no new layers)
    assert len(viewer.layers) == n_layers and _overlay(viewer, "soft") is overlay
    mask = soft >= np.float32(0.6)
    assert mask.any() and (soft >= np.float32(0.35)).sum() > mask.sum()
    np.testing.assert_array_equal(overlay.data.astype(bool), mask)
    after = _canvas(viewer)
    assert np.abs(after.astype(int) - before.astype(int)).sum() > 0, "overlay not redrawn"

    qtbot.waitUntil(lambda: widget.last_readouts.get("soft", {}).get("binary_volume_ml")
                    == pytest.approx(mask.sum() * 2e-3), timeout=3000)
    r = widget.last_readouts["soft"]
    ref = arrays["truth"] >= 0.5
    # plain numpy
    assert r["soft_volume_ml"] == pytest.approx(soft.sum(dtype=np.float64) * 2e-3, rel=1e-9)
    inter = np.logical_and(mask, ref).sum()
    assert r["dice"] == pytest.approx(2 * inter / (mask.sum() + ref.sum()))
    assert r["precision"] == pytest.approx(inter / mask.sum())
    assert r["recall"] == pytest.approx(inter / ref.sum())
    # softseg.metrics on the full volume
    assert r["dice"] == pytest.approx(metrics.dice(mask, ref))
    assert "Dice" in widget.readout_label.text()

    # the plot: the sweep equals metrics.threshold_sweep on the full volume
    qtbot.waitUntil(lambda: widget.curves_ready, timeout=5000)
    curves = widget._entries["soft"].curves
    sweep = metrics.threshold_sweep(soft, ref, thresholds=curves["thresholds"], spacing=SCALE)
    np.testing.assert_allclose(curves["dice"], sweep.dice)
    np.testing.assert_allclose(curves["volume_ml"], sweep.volume_ml)
    assert [line.get_xdata()[0] for line in widget._cursors] == [pytest.approx(0.6)]


def test_range_mode_shows_only_the_band(setup, arrays):
    viewer, widget, qtbot = setup
    soft = arrays["soft"]
    widget.select_layers(["soft"])
    widget.range_mode.setChecked(True)
    assert widget.range_slider.isVisible() and not widget.slider.isVisible()
    widget.range_slider.setValue((0.3, 0.6))
    overlay = _overlay(viewer, "soft").data.astype(bool)
    band = (soft >= np.float32(0.3)) & (soft < np.float32(0.6))
    np.testing.assert_array_equal(overlay, band)
    assert band.any() and not overlay[soft >= 0.6].any() and not overlay[soft < 0.3].any()
    qtbot.waitUntil(lambda: widget.last_readouts.get("soft", {}).get("binary_volume_ml")
                    == pytest.approx(band.sum() * 2e-3), timeout=3000)
    # new data in the prediction layer: the overlay and the soft volume follow
    viewer.layers["soft"].data = arrays["sharp"]
    band = (arrays["sharp"] >= np.float32(0.3)) & (arrays["sharp"] < np.float32(0.6))
    np.testing.assert_array_equal(_overlay(viewer, "soft").data.astype(bool), band)
    assert widget._entries["soft"].soft_volume_ml == pytest.approx(
        arrays["sharp"].sum(dtype=np.float64) * 2e-3)


def test_one_slider_drives_all_or_each_at_its_optimum(setup, arrays):
    viewer, widget, _ = setup
    widget.select_layers(["soft", "sharp"])
    widget.slider.setValue(0.5)
    for name in ("soft", "sharp"):
        np.testing.assert_array_equal(_overlay(viewer, name).data.astype(bool),
                                      arrays[name] >= np.float32(0.5))
    widget.own_optimum.setChecked(True)
    assert not widget.slider.isEnabled()
    np.testing.assert_array_equal(_overlay(viewer, "soft").data.astype(bool),
                                  arrays["soft"] >= np.float32(0.35))
    np.testing.assert_array_equal(_overlay(viewer, "sharp").data.astype(bool),
                                  arrays["sharp"] >= np.float32(0.7))
    widget.style_combo.setCurrentText("contour")
    assert _overlay(viewer, "soft").contour == 1 and _overlay(viewer, "sharp").contour == 1
    # deselecting removes that layer's overlay
    widget.select_layers(["soft"])
    assert "sharp [threshold]" not in viewer.layers


def test_a_layer_without_a_model_card_has_no_optimum_and_says_so(setup, arrays):
    viewer, widget, _ = setup
    viewer.add_image(arrays["soft"], name="plain", scale=SCALE)  # a soft map, not a prediction
    widget.select_layers(["plain", "soft"])
    widget.slider.setValue(0.6)
    widget.own_optimum.setChecked(True)
    assert widget.slider.isEnabled()  # the plain layer still follows the slider
    assert "'plain'" in widget.status.text() and "no optimal threshold" in widget.status.text()
    assert widget.current_thresholds() == {"plain": (0.6, None), "soft": (0.35, None)}
    np.testing.assert_array_equal(_overlay(viewer, "plain").data.astype(bool),
                                  arrays["soft"] >= np.float32(0.6))  # not a silent 0.5


def test_bad_layers_are_refused_with_a_reason(setup):
    viewer, widget, _ = setup
    n = len(viewer.layers)
    widget.select_layers(["image"])  # an MR image, not a probability map
    assert "must lie in [0, 1]" in widget.status.text()
    assert len(viewer.layers) == n and widget.selected_names() == []
    viewer.add_labels(np.zeros((4, 5, 6), dtype=np.uint8), name="small")
    widget.select_layers(["soft"])
    widget.reference_combo.setCurrentText("small")
    assert "shape (4, 5, 6)" in widget.status.text()
    assert widget.reference_data() is None


def test_apply_adds_labels_and_saves_nifti_with_geometry(make_napari_viewer, tmp_path, arrays):
    from napari_softseg.widgets.threshold import ThresholdWidget

    file_soft = np.moveaxis(arrays["soft"], 0, 2)  # back to (X, Y, Z)
    affine = np.diag([-0.8, 0.9, 2.0, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    src = save_volume(tmp_path / "pred.nii.gz", file_soft, affine=affine)
    geometry = display_geometry(load_volume(src))
    viewer = make_napari_viewer()
    viewer.add_image(geometry.to_display(file_soft), name="pred", scale=geometry.scale,
                     translate=geometry.translate,
                     metadata={**geometry.as_metadata(), **prediction_metadata(0.4)})
    widget = ThresholdWidget(viewer)
    widget.select_layers(["pred"])
    widget.save_check.setChecked(True)
    widget.save_folder.setText(str(tmp_path))
    (layer,) = widget.apply()
    display_mask = viewer.layers["pred"].data >= np.float32(0.4)
    np.testing.assert_array_equal(layer.data.astype(bool), display_mask)
    assert layer.metadata["softseg_threshold"]["low"] == pytest.approx(0.4)
    saved = load_volume(tmp_path / "pred_thr0.40.nii.gz")
    np.testing.assert_allclose(saved.affine, affine)
    np.testing.assert_array_equal(saved.array.astype(bool), file_soft >= np.float32(0.4))
    # a second apply refuses to overwrite and says so
    widget.apply()
    assert "exist" in widget.status.text().lower()


def test_painted_rater_reference_goes_through_its_confidence_scale(setup, arrays):
    """A reference painted with confidence levels counts only levels whose soft value is >= 0.5."""
    viewer, widget, qtbot = setup
    truth = arrays["truth"]
    levels = np.zeros(truth.shape, np.uint8)
    levels[truth > 0.2] = 1  # low: 1/3, background once binarised
    levels[truth >= 0.5] = 3  # high: 1.0
    scale = {"values": [1 / 3, 2 / 3, 1.0], "names": ["low", "medium", "high"]}
    viewer.add_labels(levels, name="painted", scale=SCALE, metadata={"softseg_confidence": scale})
    widget.select_layers(["soft"])
    widget.reference_combo.setCurrentText("painted")
    ref = widget.reference_data()
    np.testing.assert_allclose(np.unique(ref), [0.0, 1 / 3, 1.0], rtol=1e-6)
    widget.slider.setValue(0.5)
    widget.update_readouts()
    soft = arrays["soft"]
    expected = metrics.dice(soft >= np.float32(0.5), truth >= 0.5)  # the low band is not truth
    assert widget.last_readouts["soft"]["dice"] == pytest.approx(expected, abs=1e-6)
