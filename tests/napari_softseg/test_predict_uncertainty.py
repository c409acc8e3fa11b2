"""The Predict dock's Uncertainty option (issue 15 #3): MC dropout / test-time augmentation give
the mean as the prediction plus entropy and variance layers (role ``uncertainty``) in the image's
geometry, with the numbers of :func:`softseg.uncertainty.predict_with_uncertainty` (what
``softseg predict --mc-dropout / --tta`` writes), updated in place, never offered to Threshold as
a prediction or a reference; a model without dropout is not offered MC dropout."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg._metadata import (CLASS_KEY, GROUP_KEY, PREDICTION_KEY, UNCERTAINTY_KEY,
                                      layer_uid, role)

from model_support import untrained_model
from test_predict_widget import write_oblique_image

pytestmark = pytest.mark.slow


@pytest.fixture
def oblique_image(tmp_path):
    """A small image stored sagittal-first with flipped axes (file order != display order)."""
    return write_oblique_image(tmp_path / "sag.nii.gz", shape=(24, 24, 8))


def _run(widget, qtbot):
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.clicked.emit()
    assert widget.last_error is None, widget.last_error
    return blocker.args[0]


def _binary_entropy(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
    return h


def test_mc_dropout_layers_match_the_engine(make_napari_viewer, open_widget, oblique_image,
                                            qtbot, tmp_path):
    from softseg.geometry import DisplayGeometry
    from softseg.io import load_volume
    from softseg.uncertainty import predict_with_uncertainty

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "predict")
    [image] = viewer.open(oblique_image, plugin="napari-softseg")
    model = untrained_model(tmp_path / "drop.safetensors")  # dropout 0.3
    widget.models.value = (model,)
    assert widget.mc_dropout_offered()
    assert not widget.passes.enabled  # "none": no passes to choose
    widget.uncertainty.value = "mc_dropout"
    assert widget.passes.enabled
    widget.passes.value = 3
    widget.set_images([image])
    layers = _run(widget, qtbot)
    assert [lyr.name for lyr in layers] == [
        "sag · conventional", "sag · conventional · entropy", "sag · conventional · variance"]
    pred, ent, var = layers
    assert [role(lyr) for lyr in layers] == ["prediction", "uncertainty", "uncertainty"]
    assert ent.visible and not var.visible
    assert ent.metadata[UNCERTAINTY_KEY] == {"method": "mc_dropout", "passes": 3, "seed": 0,
                                             "map": "entropy", "unit": "nats", "index": None,
                                             "class": None}
    assert var.metadata[UNCERTAINTY_KEY]["map"] == "variance"
    assert pred.metadata[PREDICTION_KEY]["uncertainty"] == {"method": "mc_dropout", "passes": 3,
                                                            "seed": 0}
    for lyr in layers:  # the image's geometry
        assert lyr.data.shape == image.data.shape and lyr.data.dtype == np.float32
        np.testing.assert_allclose(lyr.scale, image.scale)
        np.testing.assert_allclose(lyr.translate, image.translate)
        np.testing.assert_array_equal(lyr.metadata["softseg_geometry"]["affine"],
                                      image.metadata["softseg_geometry"]["affine"])
    assert tuple(ent.contrast_limits) == pytest.approx((0.0, np.log(2)))
    # the CLI's function on the file itself (native order), shown in the reader's geometry
    maps = predict_with_uncertainty(model, load_volume(oblique_image), method="mc_dropout", n=3,
                                    device="cpu")
    geo = DisplayGeometry.from_metadata(image.metadata)
    np.testing.assert_allclose(pred.data, geo.to_display(maps.mean), atol=1e-5)
    np.testing.assert_allclose(ent.data, geo.to_display(maps.entropy), atol=1e-5)
    np.testing.assert_allclose(var.data, geo.to_display(maps.variance), atol=1e-6)
    # independent of the engine: the binary entropy (nats) of the shown mean, by numpy; dropout
    # is really on (the passes differ somewhere) and the variance is a variance of values in [0, 1]
    np.testing.assert_allclose(ent.data, _binary_entropy(pred.data), atol=1e-5)
    assert float(var.data.max()) > 1e-6 and float(var.data.max()) <= 0.25
    assert np.all(var.data <= pred.data * (1 - pred.data) + 1e-6)  # Bhatia-Davis bound

    # Threshold never offers an uncertainty map, as a prediction or as a reference
    tw = open_widget(viewer, "threshold")
    offered = [tw.layer_list.item(i).text() for i in range(tw.layer_list.count())]
    refs = [tw.reference_combo.itemText(i) for i in range(tw.reference_combo.count())]
    assert "sag · conventional" in offered
    assert not any("entropy" in t or "variance" in t for t in offered + refs)

    # predicting again (now TTA) updates the same three layers in place
    uids = [layer_uid(lyr) for lyr in layers]
    n_layers = len(viewer.layers)
    widget.uncertainty.value = "tta"
    widget.passes.value = 2
    again = _run(widget, qtbot)
    assert [layer_uid(lyr) for lyr in again] == uids and len(viewer.layers) == n_layers
    assert again[1].metadata[UNCERTAINTY_KEY]["method"] == "tta"
    maps = predict_with_uncertainty(model, load_volume(oblique_image), method="tta", n=2,
                                    device="cpu")
    np.testing.assert_allclose(again[1].data, geo.to_display(maps.entropy), atol=1e-5)
    np.testing.assert_allclose(again[0].data, geo.to_display(maps.mean), atol=1e-5)


def test_k_class_uncertainty_one_entropy_per_group(make_napari_viewer, menu_widget, oblique_image,
                                                   qtbot, tmp_path):
    from napari_softseg.widgets._candidates import candidates
    from softseg.geometry import DisplayGeometry
    from softseg.io import load_volume
    from softseg.uncertainty import predict_with_uncertainty

    viewer = make_napari_viewer()
    widget = menu_widget(viewer, "predict")
    [image] = viewer.open(oblique_image, plugin="napari-softseg")
    classes = ("grey matter", "white matter", "csf")
    model = untrained_model(tmp_path / "tissues.safetensors", classes=classes)
    widget.models.value = (model,)
    widget.uncertainty.value = "tta"
    widget.passes.value = 2
    widget.set_images([image])
    layers = _run(widget, qtbot)
    base = "sag · conventional"
    assert [lyr.name for lyr in layers] == [
        *(f"{base} · {c}" for c in classes), f"{base} · labels", f"{base} · entropy",
        *(f"{base} · {c} · variance" for c in classes)]
    soft, unc = layers[:3], layers[4:]
    assert [role(lyr) for lyr in unc] == ["uncertainty"] * 4
    assert len({lyr.metadata[GROUP_KEY] for lyr in layers}) == 1
    assert all(CLASS_KEY not in lyr.metadata for lyr in unc)
    assert [lyr.metadata[UNCERTAINTY_KEY]["class"] for lyr in unc] == [None, *classes]
    assert [lyr.visible for lyr in unc] == [True, False, False, False]
    ent = unc[0]
    assert tuple(ent.contrast_limits) == pytest.approx((0.0, np.log(4)))
    maps = predict_with_uncertainty(model, load_volume(oblique_image), method="tta", n=2,
                                    device="cpu")
    geo = DisplayGeometry.from_metadata(image.metadata)
    np.testing.assert_allclose(ent.data, geo.to_display(maps.entropy), atol=1e-5)
    for k, lyr in enumerate(unc[1:], start=1):
        np.testing.assert_allclose(lyr.data, geo.to_display(maps.variance[k]), atol=1e-6)
    # by hand: the entropy over the K + 1 classes (background = 1 - the classes) of the shown mean
    fg = np.stack([lyr.data for lyr in soft]).astype(np.float64)
    probs = np.concatenate([1.0 - fg.sum(axis=0, keepdims=True), fg])
    with np.errstate(divide="ignore", invalid="ignore"):
        by_hand = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=0)
    np.testing.assert_allclose(ent.data, by_hand, atol=1e-4)
    # Threshold/Compare see one K-class candidate made of the three class maps only
    [cand] = candidates(viewer.layers)
    assert set(cand.uids) == {layer_uid(lyr) for lyr in soft}


def test_model_without_dropout_is_not_offered_mc_dropout(make_napari_viewer, menu_widget,
                                                         qtbot, tmp_path):
    from napari_softseg._prediction import start_prediction

    viewer = make_napari_viewer()
    widget = menu_widget(viewer, "predict")
    img = viewer.add_image(np.random.default_rng(0).random((4, 20, 20), dtype=np.float32), name="img")
    with_dropout = untrained_model(tmp_path / "drop.safetensors")
    plain = untrained_model(tmp_path / "plain.safetensors", dropout=0.0)
    widget.models.value = (with_dropout,)
    widget.uncertainty.value = "mc_dropout"
    widget.models.value = (plain,)
    assert not widget.mc_dropout_offered()
    tip = widget.uncertainty.native.model().item(1).toolTip()
    assert tip.startswith("plain.safetensors has no dropout layers")
    assert widget.uncertainty.value == "none" and widget.uncertainty_option() is None
    assert "MC dropout is not offered" in widget.status.value
    widget.uncertainty.value = "tta"  # test-time augmentation stays offered
    assert widget.uncertainty_option() == ("tta", 10)
    # asked anyway (a script): the engine refuses with one line, nothing is added
    done = []
    worker = start_prediction(viewer, [plain], [img], device="cpu", uncertainty=("mc_dropout", 3),
                              on_done=lambda layers, err: done.append((layers, err)), start=False)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        worker.start()
    [(added, error)] = done
    assert added == [] and "\n" not in error
    assert "has no dropout layers" in error and "test-time augmentation" in error
    assert [lyr.name for lyr in viewer.layers] == ["img"]
    widget.models.value = (with_dropout,)
    assert widget.mc_dropout_offered()
