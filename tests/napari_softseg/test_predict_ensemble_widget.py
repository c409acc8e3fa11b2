"""The Predict dock's "ensemble (mean of the models)" option (issue 15 #3, the rater ensemble in the
widgets): several model files give one prediction, the mean of the members, plus entropy and
between-member variance layers made as the Uncertainty option makes them, with the numbers
``softseg predict -m A -m B ...`` writes; offered only with 2 or more files; members with other
classes refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg._metadata import (PREDICTION_KEY, UNCERTAINTY_KEY, layer_uid, prediction_threshold,
                                      role)

from model_support import untrained_model
from test_predict_uncertainty import _binary_entropy, _run
from test_predict_widget import write_oblique_image

pytestmark = pytest.mark.slow


def test_ensemble_layers_match_the_cli_and_the_members(make_napari_viewer, open_widget, qtbot, tmp_path):
    import nibabel as nib

    from softseg.cli import main
    from softseg.geometry import DisplayGeometry
    from softseg.io import load_volume
    from softseg.predict import predict_volume

    oblique = write_oblique_image(tmp_path / "sag.nii.gz", shape=(24, 24, 8))
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "predict")
    [image] = viewer.open(oblique, plugin="napari-softseg")
    models = [untrained_model(tmp_path / f"m{i}.safetensors", seed=i, thresholds=(t,))
              for i, t in enumerate((0.2, 0.4, 0.9))]
    assert not widget.ensemble_offered()  # no model yet
    widget.models.value = (models[0],)
    assert not widget.ensemble_offered()
    widget.models.value = tuple(models)
    assert widget.ensemble_offered()
    widget.uncertainty.value = "ensemble"
    assert not widget.passes.enabled and widget.uncertainty_option() == ("ensemble", 3)
    widget.set_images([image])
    layers = _run(widget, qtbot)
    name = "sag · conventional:ensemble"
    assert [lyr.name for lyr in layers] == [name, f"{name} · entropy", f"{name} · variance"]
    pred, ent, var = layers
    assert [role(lyr) for lyr in layers] == ["prediction", "uncertainty", "uncertainty"]
    assert ent.visible and not var.visible
    assert ent.metadata[UNCERTAINTY_KEY] == {"method": "ensemble", "passes": 3, "seed": None,
                                             "map": "entropy", "unit": "nats", "index": None,
                                             "class": None}
    info = pred.metadata[PREDICTION_KEY]
    assert info["models"] == [str(m.resolve()) for m in models]
    assert info["model"] == " + ".join(info["models"])
    assert info["uncertainty"] == {"method": "ensemble", "passes": 3, "seed": None}
    assert prediction_threshold(pred) == pytest.approx(0.5)  # the mean of 0.2, 0.4, 0.9
    for lyr in layers:
        assert lyr.data.shape == image.data.shape and lyr.data.dtype == np.float32
        np.testing.assert_allclose(lyr.scale, image.scale)

    # the files softseg predict -m ... writes, shown in the reader's geometry: the same numbers
    out = tmp_path / "cli"
    argv = ["predict", *(a for m in models for a in ("-m", str(m))), str(oblique), "-o", str(out),
            "--device", "cpu"]
    assert main(argv) == 0
    geo = DisplayGeometry.from_metadata(image.metadata)
    for lyr, suffix in ((pred, "pred"), (ent, "entropy"), (var, "variance")):
        data = np.asarray(nib.load(out / f"sag_{suffix}.nii.gz").dataobj)
        np.testing.assert_allclose(lyr.data, geo.to_display(data), atol=1e-6)
    # independent of the ensemble code: each member predicted alone, summarised by numpy
    vol = load_volume(oblique)
    each = np.stack([geo.to_display(predict_volume(m, vol, device="cpu")) for m in models])
    each = each.astype(np.float64)
    assert each.std(axis=0).max() > 1e-3
    np.testing.assert_allclose(pred.data, each.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(var.data, each.var(axis=0), atol=1e-6)
    np.testing.assert_allclose(ent.data, _binary_entropy(each.mean(axis=0)), atol=1e-5)

    # Threshold offers the ensemble as a prediction, never its uncertainty maps
    tw = open_widget(viewer, "threshold")
    offered = [tw.layer_list.item(i).text() for i in range(tw.layer_list.count())]
    refs = [tw.reference_combo.itemText(i) for i in range(tw.reference_combo.count())]
    assert name in offered
    assert not any("entropy" in t or "variance" in t for t in offered + refs)

    # predicting again updates the same layers; a member alone gets layers of its own
    uids = [layer_uid(lyr) for lyr in layers]
    again = _run(widget, qtbot)
    assert [layer_uid(lyr) for lyr in again] == uids
    widget.uncertainty.value = "none"
    widget.models.value = (models[0],)
    single = _run(widget, qtbot)
    assert [lyr.name for lyr in single] == ["sag · conventional"]
    assert all(layer_uid(lyr) in {layer_uid(x) for x in viewer.layers} for lyr in again)


def test_ensemble_offer_and_refusal(make_napari_viewer, menu_widget, qtbot, tmp_path):
    from napari_softseg._prediction import start_prediction

    viewer = make_napari_viewer()
    widget = menu_widget(viewer, "predict")
    img = viewer.add_image(np.random.default_rng(0).random((4, 20, 20), dtype=np.float32), name="img")
    one = untrained_model(tmp_path / "one.safetensors")
    two = untrained_model(tmp_path / "two.safetensors", seed=1)
    tissues = untrained_model(tmp_path / "tissues.safetensors", classes=("grey matter", "csf"))
    widget.models.value = (one, two)
    widget.uncertainty.value = "ensemble"
    widget.models.value = (one,)  # one file left: not an ensemble any more
    assert not widget.ensemble_offered() and widget.uncertainty.value == "none"
    assert "ensemble is not offered" in widget.status.value
    tip = widget.uncertainty.native.model().item(3).toolTip()
    assert tip == "an ensemble averages 2 or more models; 1 model file(s) chosen"
    # members with other classes: one line naming both files, nothing added
    done = []
    worker = start_prediction(viewer, [one, tissues], [img], device="cpu",
                              uncertainty=("ensemble", 2),
                              on_done=lambda layers, err: done.append((layers, err)), start=False)
    assert worker is None
    [(added, error)] = done
    assert added == [] and "\n" not in error
    assert error.startswith("one.safetensors and tissues.safetensors cannot be averaged: their "
                            "classes differ (foreground vs grey matter, csf)")
    assert [lyr.name for lyr in viewer.layers] == ["img"]
