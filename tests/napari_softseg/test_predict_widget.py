"""The Predict dock widget in a real viewer: the model card, geometry of the result, K-class
layers, updates in place, bad input, cancel."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from napari_softseg._metadata import CLASS_KEY, GROUP_KEY, PREDICTION_KEY, layer_uid, role
from softseg.errors import InputError
from softseg.modelfile import read_card

from model_support import untrained_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny softseg model trained for one epoch with the engine (CPU)."""
    from softseg.phantom import write_dataset
    from softseg.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from softseg.training import fit

    root = tmp_path_factory.mktemp("predict-model")
    data = write_dataset(root / "phantoms", n_subjects=3, shape=(32, 32, 8), n_raters=2, seed=3)
    cfg = TrainConfig(candidate="softseg", device="cpu", seed=0,
                      data=DataConfig(crop=(32, 32)), model=ModelConfig(depth=2, width=8),
                      optim=OptimConfig(epochs=1, batch_size=4))
    fit(data, cfg, out=root / "softseg.safetensors")
    return root / "softseg.safetensors"


def write_oblique_image(path, shape=(36, 36, 10)):
    """Write a phantom image stored sagittal-first with flipped axes (file order != display
    order) to ``path`` (``shape`` = the phantom's X, Y, Z); returns the path."""
    from softseg.phantom import phantom

    ph = phantom(shape, n_raters=1, seed=5)
    data = np.transpose(ph.image, (2, 0, 1))[::-1]  # file axes: (Z flipped, X, Y)
    aff = ph.affine @ np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, shape[2] - 1], [0, 0, 0, 1.0]])
    aff[:3, 3] += (12.5, -30.0, 7.0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), aff), path)
    return path


@pytest.fixture
def oblique_image(tmp_path):
    """An image stored sagittal-first with flipped axes (file order != display order)."""
    return write_oblique_image(tmp_path / "sag.nii.gz")


@pytest.fixture
def notes():
    from napari.utils.notifications import notification_manager

    got: list[str] = []
    notification_manager.notification_ready.connect(lambda n: got.append(str(n.message)))
    return got


@pytest.fixture
def viewer_widget(make_napari_viewer):
    from napari_softseg.widgets.predict import PredictWidget

    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    return viewer, widget


def test_metadata_is_shown_per_model(viewer_widget, model_file, tmp_path):
    _, widget = viewer_widget
    bogus = tmp_path / "notes.safetensors"
    bogus.write_bytes(b"hello, not a model")
    widget.models.value = (model_file, bogus)
    text = widget.model_info.value
    card = read_card(model_file)
    first, second = text.splitlines()
    assert "Soft-ReLU-Wing+DML (softseg)" in first and "trained on phantoms" in first
    assert f"threshold {card.threshold:.2f}" in first
    assert f"val Dice {card.validation.val_dice:.3f}" in first
    assert second.startswith("notes.safetensors: ✗") and "not a safetensors" in second
    # the full card (what softseg info prints) is shown in the dock, for the readable model only
    from softseg.card import render_card

    assert widget.card_texts() == render_card(card, path=str(model_file))
    assert widget.card_section.isVisible() or not widget.native.isVisible()
    widget.models.value = ()
    assert widget.card_texts() == "" and widget.model_info.value == "no model chosen"


def test_predictions_in_the_image_geometry(viewer_widget, model_file, oblique_image, qtbot, tmp_path):
    from softseg.io import load_volume
    from softseg.predict import predict_volume

    viewer, widget = viewer_widget
    [image] = viewer.open(oblique_image, plugin="napari-softseg")
    second = tmp_path / "copy.safetensors"
    shutil.copy(model_file, second)
    widget.models.value = (model_file, second)
    widget.set_images([image])
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.clicked.emit()
    layers = blocker.args[0]
    assert widget.last_error is None and len(layers) == 2
    # the final status is not overwritten by progress messages delivered late; a second model
    # of the same candidate is named by its file (no "[1]")
    assert widget.status.value == "shown: sag · softseg, sag · softseg (copy)"
    assert widget.progress.value == 100
    pred = layers[0]
    assert pred.name == "sag · softseg" and layers[1].name == "sag · softseg (copy)"
    assert pred.data.shape == image.data.shape and pred.data.dtype == np.float32
    np.testing.assert_allclose(pred.scale, image.scale)
    np.testing.assert_allclose(pred.translate, image.translate)
    assert tuple(pred.contrast_limits) == (0.0, 1.0)
    assert pred.colormap.colors[0][3] == 0.0 and pred.colormap.colors[-1][3] == 1.0
    from napari_softseg._metadata import prediction_card, prediction_threshold

    info = pred.metadata["softseg_prediction"]
    card = read_card(model_file)
    assert prediction_card(pred) == card  # the typed card travels with the layer
    assert prediction_threshold(pred) == card.threshold == info["threshold"]
    assert info["candidate"] == "softseg" and info["model"] == str(model_file.resolve())
    with pytest.raises(InputError, match="is not a model's prediction; it has no optimal threshold"):
        prediction_threshold(image)  # no silent 0.5
    np.testing.assert_array_equal(pred.metadata["softseg_geometry"]["affine"],
                                  image.metadata["softseg_geometry"]["affine"])
    # reference: the engine on the file itself (native order), shown with the reader's geometry
    native = predict_volume(model_file, load_volume(oblique_image), device="cpu")
    from softseg.geometry import DisplayGeometry

    geo = DisplayGeometry.from_metadata(image.metadata)
    np.testing.assert_allclose(pred.data, geo.to_display(native), atol=1e-5)
    # a saved prediction lands back on the file's own grid
    assert geo.from_display(pred.data).shape == nib.load(oblique_image).shape
    # one colour per candidate (issue 11 #8): both maps in softseg's colour, transparent below
    # TRANSPARENT_BELOW so the anatomy stays visible
    from napari_softseg._prediction import TRANSPARENT_BELOW
    from softseg.palette import candidate_rgb

    for layer in layers:
        rgba = layer.colormap.map(np.array([0.0, TRANSPARENT_BELOW - 1e-3, 1.0]))
        assert rgba[:2, 3].tolist() == [0.0, 0.0]
        np.testing.assert_allclose(rgba[2], [*candidate_rgb("softseg"), 1.0], atol=1e-6)
    # predicting again updates both layers in place (same layers, no copies)
    uids = [layer_uid(lyr) for lyr in layers]
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.clicked.emit()
    assert [layer_uid(lyr) for lyr in blocker.args[0]] == uids and len(viewer.layers) == n_layers


def test_channel_mismatch_and_bad_model_are_notifications(viewer_widget, model_file, tmp_path,
                                                          notes, qtbot):
    import torch

    viewer, widget = viewer_widget
    a = viewer.add_image(np.random.default_rng(0).random((6, 20, 20), dtype=np.float32), name="a")
    b = viewer.add_image(np.random.default_rng(1).random((6, 20, 20), dtype=np.float32), name="b")
    widget.models.value = (model_file,)
    widget.set_images([a, b])
    widget.run_button.clicked.emit()
    assert widget.worker is None and widget.last_error is not None
    assert any("expects 1 input channel" in n for n in notes)

    pickle = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle)
    widget.models.value = (pickle,)
    assert "pickle" in widget.model_info.value
    widget.set_images([a])
    widget.run_button.clicked.emit()
    assert any("PyTorch pickle" in n for n in notes)
    assert len(viewer.layers) == 2  # nothing added, viewer fine
    viewer.add_points(np.zeros((1, 3)))
    assert len(viewer.layers) == 3


def test_cancel_adds_nothing(viewer_widget, model_file, qtbot):
    from napari_softseg._prediction import start_prediction

    viewer, _ = viewer_widget
    img = viewer.add_image(np.random.default_rng(0).random((8, 24, 24), dtype=np.float32))
    done = []
    worker = start_prediction(viewer, [model_file], [img], device="cpu",
                              on_done=lambda layers, err: done.append((layers, err)), start=False)
    worker.cancel_event.set()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        worker.start()
    assert done == [([], "cancelled")]
    assert len(viewer.layers) == 1


def test_k_class_model_gives_class_maps_and_argmax_labels(make_napari_viewer, menu_widget,
                                                          oblique_image, qtbot, tmp_path):
    """Issue 14 / CONTRACTS "K-class predictions in napari": one soft layer per class
    ``<image> · <candidate> · <class>`` + one argmax Labels layer, one group; values equal the
    engine's predict_volume on the file, displayed; predicting again updates them in place."""
    from softseg.geometry import DisplayGeometry
    from softseg.io import load_volume
    from softseg.predict import class_labels, predict_volume

    from napari_softseg._metadata import prediction_threshold

    viewer = make_napari_viewer()
    widget = menu_widget(viewer, "predict")  # the Plugins-menu path (wrapped viewer)
    [image] = viewer.open(oblique_image, plugin="napari-softseg")
    model = untrained_model(tmp_path / "tissues.safetensors",
                            classes=("grey matter", "white matter", "csf"),
                            thresholds=(0.3, 0.5, 0.7))
    widget.models.value = (model,)
    assert "classes grey matter, white matter, csf" in widget.model_info.value
    from softseg.card import render_card

    assert widget.card_texts() == render_card(read_card(model), path=str(model))
    widget.set_images([image])
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.clicked.emit()
    layers = blocker.args[0]
    assert widget.last_error is None
    names = [lyr.name for lyr in layers]
    assert names == ["sag · conventional · grey matter", "sag · conventional · white matter",
                     "sag · conventional · csf", "sag · conventional · labels"]
    *soft, labels = layers
    assert [role(lyr) for lyr in layers] == ["prediction"] * 3 + ["prediction_labels"]
    groups = {lyr.metadata[GROUP_KEY] for lyr in layers}
    assert len(groups) == 1 and None not in groups
    assert [lyr.metadata[CLASS_KEY]["index"] for lyr in soft] == [1, 2, 3]
    assert all(lyr.metadata[CLASS_KEY]["classes"] == ["grey matter", "white matter", "csf"]
               for lyr in soft)
    # the card's per-class thresholds (class_index counts the card's classes from 0)
    assert [prediction_threshold(lyr, class_index=lyr.metadata[CLASS_KEY]["index"] - 1)
            for lyr in soft] == [0.3, 0.5, 0.7]
    assert all(lyr.metadata[PREDICTION_KEY]["model"] == str(model.resolve()) for lyr in layers)
    # reference: the engine on the file (native order), shown in the reader's geometry
    native = predict_volume(model, load_volume(oblique_image), device="cpu")
    geo = DisplayGeometry.from_metadata(image.metadata)
    display = geo.to_display(native)
    for k, lyr in enumerate(soft, start=1):
        assert lyr.data.shape == image.data.shape and lyr.data.dtype == np.float32
        np.testing.assert_allclose(lyr.data, display[k], atol=1e-5)
    # argmax by hand (numpy, ties to the lower class as class_labels documents)
    np.testing.assert_array_equal(labels.data, np.argmax(display, axis=0).astype(np.uint8))
    np.testing.assert_array_equal(labels.data, class_labels(display))
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(display.sum(axis=0), 1.0, atol=1e-5)
    # predicting again: the same four layers, updated in place, same group
    uids = [layer_uid(lyr) for lyr in layers]
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.clicked.emit()
    assert [layer_uid(lyr) for lyr in blocker.args[0]] == uids and len(viewer.layers) == n_layers
    assert {lyr.metadata[GROUP_KEY] for lyr in blocker.args[0]} == groups
