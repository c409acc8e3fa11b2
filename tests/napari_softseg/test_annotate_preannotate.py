"""Pre-annotation in *Soft annotation* (issue 17 #2): a rater layer started from a prediction layer
(one class, or the K layers of a K-class run) or from a model file, marked as the model's, with
the rater's corrections counted in the layer metadata, the autosave snapshot and the exported
sidecar.

The mapping is checked by hand: default scale 1/3, 2/3, 1 -> level boundaries 1/6, 1/2, 5/6
(nearest level); K classes: the argmax class (background = 1 - sum) at the level of its value.
"""

import numpy as np

from softseg.autosave import list_recoveries
from softseg.io import load_volume
from softseg.preannotate import RULE, is_uncorrected, prediction_to_codes
from softseg.sidecar import read_rater_sidecar

from napari_softseg._metadata import CLASS_KEY, GROUP_KEY, PREANNOTATION_KEY, PREDICTION_KEY, set_role
from napari_softseg.widgets.annotate._preannotate import MODEL_FILE
from annotate_support import click, make_model, type_text
from annotate_support import image_file, recovery_root, setup  # noqa: F401 (pytest fixtures)

#: prediction values and their levels on the default scale (boundaries 1/6, 1/2, 5/6)
VALUES = (0.0, 0.1, 0.3, 0.45, 0.6, 0.8, 0.9, 1.0)
LEVELS = (0, 0, 1, 1, 2, 2, 3, 3)



def _grid(shape, values, seed=0):
    """A map of *shape* whose voxels take *values* (indices into it returned too)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=shape)
    return np.asarray(values, dtype=np.float32)[idx], idx


def _choose(widget, name):
    widget.preannotate.refresh()
    combo = widget.preannotate.source
    matches = [c for c in combo.choices if getattr(c, "name", c) == name]
    assert len(matches) == 1, combo.choices
    combo.value = matches[0]


def test_from_a_prediction_layer_corrections_counted_in_snapshot_and_sidecar(setup, image_file, qtbot):
    viewer, widget = setup
    shape = np.shape(viewer.layers[0].data)
    prob, idx = _grid(shape, VALUES)
    meta = set_role({PREDICTION_KEY: {"model": "/models/unet.safetensors"}}, "prediction")
    viewer.add_image(prob, name="image · softseg", metadata=meta)
    n = len(viewer.layers)

    # no rater id: one line, nothing added
    _choose(widget, "image · softseg")
    click(widget.preannotate.start)
    assert len(viewer.layers) == n and "rater id" in widget._status.value

    type_text(widget._rater_id, "AB")
    click(widget.preannotate.start)
    layer = viewer.layers["AB"]
    want = np.asarray(LEVELS, dtype=np.uint8)[idx]
    np.testing.assert_array_equal(layer.data, want)
    record = layer.metadata[PREANNOTATION_KEY]
    assert record == {"model": "/models/unet.safetensors", "source": "layer", "rule": RULE,
                      "model_voxels": int(np.count_nonzero(want)), "rater_changed_voxels": 0}
    assert CLASS_KEY not in layer.metadata
    assert "unet.safetensors" in widget._status.value

    # untouched: exported as the model's map nobody corrected (training refuses it)
    folder = image_file.parent
    path = widget.export_rater(folder / "rater-AB_levels.nii.gz", layer=layer, as_levels=True)
    side = read_rater_sidecar(path)
    assert side.preannotated_by == "/models/unet.safetensors"
    assert is_uncorrected(side.preannotated_by, side.extra["preannotation"])

    # the rater corrects a block: the changed voxels are counted against the model's map
    z = shape[0] // 2
    layer.brush_size = 5
    for y in (8, 20, 30):
        layer.paint((z, y, 12), 3)  # napari's brush (what a stroke calls)
    changed = int(np.count_nonzero(layer.data != want))
    assert changed > 0
    assert widget.flush_autosave()
    (rec,) = list_recoveries(image_file)
    assert rec.preannotated_by == "/models/unet.safetensors"
    assert rec.preannotation["rater_changed_voxels"] == changed
    qtbot.waitUntil(lambda: layer.metadata[PREANNOTATION_KEY]["rater_changed_voxels"] == changed)

    path = widget.export_rater(folder / "rater-AB_levels.nii.gz", layer=layer, as_levels=True, overwrite=True)
    side = read_rater_sidecar(path)
    assert side.extra["preannotation"]["rater_changed_voxels"] == changed
    assert not is_uncorrected(side.preannotated_by, side.extra["preannotation"])


def test_from_the_layers_of_a_k_class_prediction(setup):
    viewer, widget = setup
    shape = np.shape(viewer.layers[0].data)
    # (p1, p2) pairs and their hand-computed codes (c - 1) * 3 + level: background 1 - p1 - p2;
    # ties go to the lower index, background first ((0, 0.5) -> background)
    pairs = [((0.9, 0.05), 3), ((0.3, 0.6), 5), ((0.2, 0.1), 0), ((0.4, 0.4), 1), ((0.0, 0.5), 0),
             ((0.15, 0.7), 5), ((0.1, 0.88), 6)]
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(pairs), size=shape)
    p = np.asarray([pp for pp, _ in pairs], dtype=np.float32)
    names = ["grey matter", "white matter"]
    for k in (1, 2):
        meta = set_role({PREDICTION_KEY: {"model": "/models/tissue.safetensors"}, GROUP_KEY: "run1",
                         CLASS_KEY: {"index": k, "name": names[k - 1], "classes": names}}, "prediction")
        viewer.add_image(p[idx, k - 1], name=f"image · softseg · {names[k - 1]}", metadata=meta)
    type_text(widget._rater_id, "CD")
    _choose(widget, "image · softseg (2 classes)")
    click(widget.preannotate.start)
    layer = viewer.layers["CD"]
    assert layer.metadata[CLASS_KEY] == names
    np.testing.assert_array_equal(layer.data, np.asarray([c for _, c in pairs], np.uint8)[idx])
    assert layer.metadata[PREANNOTATION_KEY]["model"] == "/models/tissue.safetensors"


def test_a_prediction_of_another_shape_is_refused(setup):
    viewer, widget = setup
    viewer.add_image(np.zeros((5, 6, 7), np.float32), name="other", metadata=set_role({}, "prediction"))
    type_text(widget._rater_id, "AB")
    _choose(widget, "other")
    n = len(viewer.layers)
    click(widget.preannotate.start)
    assert len(viewer.layers) == n
    assert "has shape (5, 6, 7)" in widget._status.value


def test_from_a_model_file_in_a_worker(setup, image_file, tmp_path, qtbot):
    viewer, widget = setup
    model = make_model(tmp_path / "tiny.safetensors", seed=3)
    type_text(widget._rater_id, "EF")
    _choose(widget, MODEL_FILE)
    assert not widget.preannotate.model_file.native.isHidden()

    # a model for two input channels on one image: refused before anything runs
    two = make_model(tmp_path / "two.safetensors", channels=("t1", "t2"))
    widget.preannotate.model_file.value = two
    n = len(viewer.layers)
    click(widget.preannotate.start)
    assert len(viewer.layers) == n and "2 input channel" in widget._status.value

    widget.preannotate.model_file.value = model
    click(widget.preannotate.start)
    worker = widget.preannotate.worker
    assert worker is not None
    qtbot.waitUntil(lambda: "EF" in viewer.layers, timeout=120_000)
    layer = viewer.layers["EF"]
    # the layer is the documented mapping of the model's prediction, in display order
    from softseg.geometry import DisplayGeometry
    from softseg.predict import predict_volume
    from softseg.confidence import ConfidenceScale

    native = np.asarray(predict_volume(model, load_volume(image_file), device="cpu"), dtype=np.float32)
    geom = DisplayGeometry.from_metadata(layer.metadata)
    want = prediction_to_codes(geom.to_display(native), scale=ConfidenceScale.default())
    np.testing.assert_array_equal(layer.data, want)
    record = layer.metadata[PREANNOTATION_KEY]
    assert record["source"] == "file" and record["model"] == str(model.resolve())
    assert not widget.preannotate.busy


def test_from_a_k_class_model_file(setup, image_file, tmp_path, qtbot):
    viewer, widget = setup
    model = make_model(tmp_path / "tissue.safetensors", n_classes=2, seed=5)
    type_text(widget._rater_id, "GH")
    _choose(widget, MODEL_FILE)
    widget.preannotate.model_file.value = model
    click(widget.preannotate.start)
    qtbot.waitUntil(lambda: "GH" in viewer.layers, timeout=120_000)
    layer = viewer.layers["GH"]
    assert layer.metadata[CLASS_KEY] == ["class1", "class2"]
    from softseg.confidence import ConfidenceScale
    from softseg.geometry import DisplayGeometry
    from softseg.predict import predict_volume

    native = np.asarray(predict_volume(model, load_volume(image_file), device="cpu"), dtype=np.float32)
    assert native.shape[0] == 3  # background first
    geom = DisplayGeometry.from_metadata(layer.metadata)
    classes = np.stack([geom.to_display(c) for c in native[1:]])
    want = prediction_to_codes(classes, scale=ConfidenceScale.default(), n_classes=2)
    np.testing.assert_array_equal(layer.data, want)
    assert set(np.unique(layer.data).tolist()) <= set(range(7))
    assert layer.metadata[PREANNOTATION_KEY]["model_voxels"] == int(np.count_nonzero(want))
