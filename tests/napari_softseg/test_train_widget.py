"""The Train dock widget in a real viewer, driving the real ``softseg train`` child process.

Tiny phantom (display 12 x 40 x 40), crop 32, depth 2, CPU, 1-2 epochs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_softseg._sample_data import phantom_layers
from napari_softseg._supervisor import is_alive
from softseg.modelfile import read_card

pytestmark = pytest.mark.slow

SHAPE = (40, 40, 12)  # phantom file order (X, Y, Z) -> display (12, 40, 40)


@pytest.fixture
def notes(monkeypatch):
    """Messages shown as napari notifications during the test."""
    from napari.utils.notifications import notification_manager

    got: list[str] = []
    notification_manager.notification_ready.connect(lambda n: got.append(str(n.message)))
    return got


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    from napari_softseg.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    for data, kwargs, kind in phantom_layers(SHAPE, n_raters=3, seed=1):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.images.value = [viewer.layers["phantom image"]]
    widget.targets.value = [viewer.layers[f"rater-{i}"] for i in (1, 2, 3)]
    widget.fusion.value = "average"
    widget.epochs.value = 2
    widget.batch_size.value = 4
    widget.crop.value = 32
    widget.depth.value = 2
    widget.device.value = "cpu"
    widget.output.value = tmp_path / "model.safetensors"
    return viewer, widget, tmp_path


def test_defaults_follow_the_paper_and_registry(setup):
    from softseg.candidates import CANDIDATES, FUSIONS
    from softseg.config import PRESETS
    from napari_softseg.widgets.train import TrainWidget

    viewer, _, _ = setup
    fresh = TrainWidget(viewer)
    fresh.device.value = "cpu"
    assert fresh.config() == PRESETS["paper"].updated({"device": "cpu"})  # one set of defaults
    assert list(fresh.fusion.choices) == list(FUSIONS)
    assert (fresh.epochs.value, fresh.batch_size.value, fresh.crop.value, fresh.depth.value,
            fresh.patience.value) == (200, 8, 128, 3, 50)
    assert fresh.lr.value == pytest.approx(1e-3)
    assert [v for v in fresh.candidate.choices] == list(CANDIDATES)
    assert fresh.candidate.value == "softseg"
    assert fresh.candidate_info.value == CANDIDATES["softseg"].description
    fresh.candidate.value = "conventional"
    assert fresh.candidate_info.value == CANDIDATES["conventional"].description
    assert fresh.device.choices[-1] == "cpu"
    assert not fresh.predict_button.enabled  # until a run has written a model


def test_train_from_layers_then_predict(setup, qtbot, notes):
    viewer, widget, tmp_path = setup
    with qtbot.waitSignal(widget.finished, timeout=240_000) as blocker:
        widget.train_button.clicked.emit()
        assert widget.running and not widget.train_button.enabled
    outcome = blocker.args[0]
    assert outcome.ok, (outcome.error_line, widget.process.stderr_tail)
    model = tmp_path / "model.safetensors"
    assert model.is_file() and widget.model_path == model
    card = read_card(model)
    assert card.candidate.name == "softseg" and card.fusion == "average"
    assert 0.0 < card.threshold < 1.0
    # the child trained with exactly the configuration the widget built (one typed config)
    assert card.training.config == widget.config()
    assert (card.training.config.optim.epochs, card.training.config.data.crop) == (2, (32, 32))
    # curves received every step and both validation passes
    assert len(widget.curves.val_y) == 2
    steps = outcome.done.epoch * 1  # at least one step per epoch
    assert len(widget.curves.train_y) >= steps
    assert all(np.isfinite(widget.curves.train_y))
    assert widget.progress.value == widget.progress.max
    assert widget.best.value.startswith("epoch ")
    assert widget.process.returncode == 0 and not is_alive(widget.process.pid)
    assert widget._tmpdir is None  # temporary dataset removed
    assert widget.status.value.startswith("done (completed)") and "model.safetensors" in widget.status.value
    assert not any(n.startswith("Training failed") for n in notes)

    # "Predict on current image" becomes available and adds a soft prediction in the image's geometry
    assert widget.predict_button.enabled
    image = viewer.layers["phantom image"]
    widget.predict_button.clicked.emit()
    worker = widget.predict_worker
    assert worker is not None
    qtbot.waitUntil(lambda: "phantom image · softseg" in viewer.layers, timeout=60_000)
    pred = viewer.layers["phantom image · softseg"]
    assert pred.data.shape == image.data.shape
    np.testing.assert_allclose(pred.scale, image.scale)
    np.testing.assert_allclose(pred.translate, image.translate)
    assert 0.0 <= float(pred.data.min()) and float(pred.data.max()) <= 1.0
    assert pred.metadata["softseg_prediction"]["threshold"] == pytest.approx(card.threshold)


def test_cancel_leaves_a_loadable_checkpoint_and_no_child(setup, qtbot):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from softseg.models import UNet2D

    viewer, widget, tmp_path = setup
    widget.epochs.value = 500
    widget.patience.value = 500
    widget.train_button.clicked.emit()
    # wait until a first epoch is complete (a checkpoint exists), then cancel
    qtbot.waitUntil(lambda: len(widget.curves.val_y) >= 1, timeout=180_000)
    pid = widget.process.pid
    assert is_alive(pid)
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.cancel_button.clicked.emit()
    outcome = blocker.args[0]
    assert outcome.cancelled and not outcome.killed and outcome.returncode == 130  # 128 + SIGINT
    assert outcome.stopped and outcome.error_line is None
    assert outcome.done is not None and outcome.done.reason == "cancelled"
    assert not (tmp_path / "model.safetensors").exists()
    assert not is_alive(pid)
    ckpt = outcome.checkpoint
    assert ckpt is not None
    tensors = load_file(ckpt)
    with safe_open(ckpt, framework="pt") as fh:
        doc = json.loads(next(v for k, v in fh.metadata().items() if k != "format"))
    assert doc["epoch"] >= 1
    net = UNet2D(1, depth=2)
    net.load_state_dict({k[len("model/"):]: v for k, v in tensors.items()
                         if k.startswith("model/")})
    assert torch.isfinite(net(torch.zeros(1, 1, 32, 32))).all()
    assert "cancelled" in widget.status.value
    assert widget.train_button.enabled  # ready for another run


def test_closing_the_viewer_stops_training(setup, qtbot):
    viewer, widget, _ = setup
    widget.epochs.value = 500
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.process is not None and len(widget.curves.train_y) >= 1,
                    timeout=180_000)
    proc = widget.process
    viewer.close()
    qtbot.waitUntil(lambda: not is_alive(proc.pid), timeout=60_000)
    assert proc.returncode is not None


def test_bad_input_and_child_errors_are_notifications(setup, qtbot, notes):
    viewer, widget, tmp_path = setup
    # no target chosen: refused before anything starts
    widget.targets.value = []
    widget.train_button.clicked.emit()
    assert not widget.running
    assert any("choose rater layers" in n for n in notes)

    # a dataset folder whose subject has no rater file: the child says so, exit 2
    bad = tmp_path / "bad-dataset" / "sub-01"
    bad.mkdir(parents=True)
    from softseg.io import save_volume

    save_volume(bad / "image.nii.gz", np.zeros((8, 8, 8), np.float32), affine=np.eye(4))
    widget.source.value = "Dataset folder"
    widget.dataset.value = bad.parent
    with qtbot.waitSignal(widget.finished, timeout=60_000) as blocker:
        widget.train_button.clicked.emit()
    outcome = blocker.args[0]
    assert outcome.returncode == 2 and not outcome.ok
    assert "sub-01" in outcome.error_line and "rater" in outcome.error_line
    assert any(n.startswith("Training failed:") and "sub-01" in n for n in notes)
    assert not is_alive(widget.process.pid)
    # the viewer keeps working
    layer = viewer.add_image(np.zeros((4, 4, 4)), name="still works")
    assert "still works" in viewer.layers and layer.visible
    assert widget.train_button.enabled
