"""The Train dock, opened as users open it (Plugins menu, wrapped viewer) and directly, driving
the real ``softseg train`` child process.

Tiny phantom (display 12 x 40 x 40), crop 32, depth 2, CPU, 1-2 epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_softseg._metadata import PREDICTION_KEY, layer_uid, set_role
from napari_softseg._sample_data import phantom_layers
from napari_softseg._supervisor import is_alive
from softseg.config import PRESETS
from softseg.modelfile import read_card

from annotate_support import Dialogs
from model_support import untrained_model

SHAPE = (40, 40, 12)  # phantom file order (X, Y, Z) -> display (12, 40, 40)
SLOW = pytest.mark.slow  # tests that run the training child


@pytest.fixture
def notes():
    """(source, message) of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    got: list[tuple[str, str]] = []
    notification_manager.notification_ready.connect(
        lambda n: got.append((str(getattr(n, "source", "")), str(n.message))))
    return got


def _add_phantom(viewer):
    for data, kwargs, kind in phantom_layers(SHAPE, n_raters=3, seed=1):
        getattr(viewer, f"add_{kind}")(data, **kwargs)


def _tiny(widget, tmp_path, *, epochs=2):
    widget.set_layers([widget._viewer.layers["phantom image"]],
                      [widget._viewer.layers[f"rater-{i}"] for i in (1, 2, 3)])
    widget.fusion.value = "average"
    widget.epochs.value = epochs
    widget.patience.value = 50
    widget.batch_size.value = 4
    widget.crop.value = 32
    widget.depth.value = 2
    widget.unet_width.value = 8
    widget.device.value = "cpu"
    widget.output.value = tmp_path / "model.safetensors"


@pytest.fixture
def menu_setup(make_napari_viewer, menu_widget, tmp_path):
    viewer = make_napari_viewer()
    _add_phantom(viewer)
    widget = menu_widget(viewer, "train")
    _tiny(widget, tmp_path)
    return viewer, widget, tmp_path


# ------------------------------------------------------------------------------ opening the dock
def test_opening_the_dock_imports_neither_torch_nor_matplotlib(tmp_path):
    """Issue 11: opening Train (and Predict) froze napari for seconds (torch for the device list,
    matplotlib for the curves). A fresh process opens both docks from the Plugins menu and
    reports what the main thread imported."""
    code = textwrap.dedent("""
        import json, sys, time
        import napari
        viewer = napari.Viewer(show=True)
        before = set(sys.modules)
        t0 = time.process_time()
        viewer.window.add_plugin_dock_widget("napari-softseg", "Train")
        viewer.window.add_plugin_dock_widget("napari-softseg", "Predict")
        cpu = time.process_time() - t0
        new = set(sys.modules) - before
        print(json.dumps({"torch": "torch" in new, "matplotlib": "matplotlib" in new,
                          "cpu_s": cpu}))
        viewer.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["torch"] and not got["matplotlib"], got


def test_defaults_fit_the_device_and_the_paper_is_one_click_away(make_napari_viewer, open_widget):
    from softseg.candidates import CANDIDATES, FUSIONS
    from napari_softseg.widgets.train import default_preset

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "train")
    # this machine has no GPU: the short CPU run, values straight from the engine's preset
    assert default_preset(["cpu"]) == default_preset(None) == "quick"
    assert default_preset(["cuda:0", "cpu"]) == "paper"
    assert widget.preset.value == "quick"
    assert widget.config() == PRESETS["quick"]
    quick = PRESETS["quick"]
    assert (widget.epochs.value, widget.unet_width.value) == (quick.optim.epochs, quick.model.width)
    widget.preset.value = "paper"  # one click
    assert widget.config() == PRESETS["paper"]
    assert (widget.epochs.value, widget.batch_size.value, widget.crop.value, widget.depth.value,
            widget.patience.value, widget.unet_width.value) == (200, 8, 128, 3, 50, 32)
    # the probe's answer does not undo the user's choice
    widget._on_devices()
    assert widget.preset.value == "paper"
    assert list(widget.fusion.choices) == list(FUSIONS)
    assert list(widget.candidate.choices) == list(CANDIDATES)
    assert widget.candidate_info.value == CANDIDATES["softseg"].description
    widget.candidate.value = "conventional"
    assert widget.candidate_info.value == CANDIDATES["conventional"].description
    assert widget.device.choices[0] == "auto" and "cpu" in widget.device.choices
    assert not widget.predict_button.enabled  # until a run has written a model


def test_foreground_oversampling_reaches_the_config(make_napari_viewer, open_widget):
    """The dock's 'Foreground oversampling' is DataConfig.foreground_oversampling (issue 15)."""
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "train")
    assert widget.oversampling.value == 0.0 == widget.config().data.foreground_oversampling
    widget.oversampling.value = 0.33
    assert widget.config().data.foreground_oversampling == 0.33
    assert widget.config() == PRESETS["quick"].updated({"data": {"foreground_oversampling": 0.33}})
    widget.preset.value = "paper"  # a preset shows its own value again
    assert widget.oversampling.value == 0.0


def test_target_list_offers_no_image_and_no_output(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    _add_phantom(viewer)
    viewer.add_image(np.zeros((12, 40, 40), np.float32), name="T2")  # another image, no role
    viewer.add_image(np.zeros((12, 40, 40), np.float32), name="pred",
                     metadata=set_role({}, "prediction"))
    viewer.add_labels(np.zeros((12, 40, 40), np.uint8), name="overlay",
                      metadata=set_role({}, "threshold_overlay"))
    viewer.add_image(np.zeros((12, 40, 40), np.float32), name="fused (average)",
                     metadata=set_role({}, "fused"))
    widget = open_widget(viewer, "train")
    assert widget.offered_images() == ["phantom image", "T2"]
    assert widget.offered_targets() == ["truth (soft)", "rater-1", "rater-2", "rater-3",
                                        "fused (average)"]
    # choices hold layer uids (they survive the Plugins menu's proxies)
    widget.set_layers([viewer.layers["phantom image"]], [viewer.layers["rater-2"]])
    assert widget.targets.value == [layer_uid(viewer.layers["rater-2"])]


def test_bad_choices_are_one_line_messages_in_the_docks_words(make_napari_viewer, open_widget,
                                                              tmp_path, notes):
    viewer = make_napari_viewer()
    _add_phantom(viewer)
    widget = open_widget(viewer, "train")
    _tiny(widget, tmp_path)
    widget.targets.value = []
    widget.train_button.clicked.emit()
    assert not widget.running
    assert "choose rater layers" in widget.status.value
    assert ("Train", widget.status.value) in notes  # the source is the dock's name
    widget.output.value = ""
    widget.train_button.clicked.emit()
    assert "'Model file'" in widget.status.value and "--" not in widget.status.value
    # the message a training child writes for the command line, in the dock's words
    from napari_softseg.widgets.train._wording import gui_message

    assert gui_message("softseg train: error: m.checkpoint.safetensors: a checkpoint of an "
                       "interrupted run exists; pass --resume to continue it or --overwrite to "
                       "start over") == (
        "m.checkpoint.safetensors: a checkpoint of an interrupted run exists; tick 'Resume' to "
        "continue it or replace the model file (the dock asks first) to start over")
    assert gui_message("lower --lr (now 0.001) and --resume") == \
        "lower 'Learning rate' (now 0.001) and 'Resume'"


def test_every_option_the_engine_names_has_words():
    """Every ``--option`` in a message of the trainer, the data loader or the CLI's train
    command has an entry in the dock's word list (issue 11 #12)."""
    import re
    from pathlib import Path

    import softseg

    from napari_softseg.widgets.train._wording import OPTION_WORDS, gui_message

    root = Path(softseg.__file__).parent
    files = [*root.joinpath("training").glob("*.py"), *root.joinpath("data").glob("*.py"),
             root / "layers_dataset.py"]
    named = set()
    for path in files:
        for literal in re.findall(r'f?"([^"\n]*--[a-z][^"\n]*)"', path.read_text()):
            named |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", literal))
    assert named, "no option found: the scan is broken"
    assert named <= set(OPTION_WORDS), sorted(named - set(OPTION_WORDS))
    assert all("--" not in gui_message(f"set {opt}") for opt in OPTION_WORDS)


def test_history_and_checkpoint_names_match_the_engine():
    from softseg.training.callbacks import history_path
    from softseg.training.checkpoint import checkpoint_path

    from napari_softseg.widgets.train._history import checkpoint_of, history_csv_of

    for name in ("/a/m.safetensors", "/a/b.c.safetensors", "/a/model"):
        assert history_csv_of(name) == history_path(name)
        assert checkpoint_of(name) == checkpoint_path(name)


# ------------------------------------------------------------------------------ training
@SLOW
def test_train_from_layers_keeps_its_data_predicts_and_updates_in_place(menu_setup, qtbot, notes):
    viewer, widget, tmp_path = menu_setup
    widget.val_fraction.value = 0.4  # options the engine's split errors name are in the dock
    widget.test_fraction.value = 0.2
    with qtbot.waitSignal(widget.finished, timeout=300_000) as blocker:
        widget.train_button.clicked.emit()
        assert widget.running and not widget.train_button.enabled
    outcome = blocker.args[0]
    assert outcome.ok, (outcome.error_line, widget.process.stderr_tail)
    model = tmp_path / "model.safetensors"
    assert model.is_file() and widget.model_path == model
    card = read_card(model)
    # the child trained with exactly the configuration the dock built (one typed config)
    assert card.training.config == widget.config()
    assert card.training.config.data.val_fraction == 0.4
    assert card.training.config.data.test_fraction == 0.2
    assert (len(card.split.val), len(card.split.test), len(card.split.train)) == (2, 1, 2)
    # the dataset the card names still exists, beside the model, with the settings file
    assert card.dataset and os.path.isdir(card.dataset)
    assert str(tmp_path / "model.training-data") in card.dataset
    assert (tmp_path / "model.train-config.json").is_file()
    assert "kept in model.training-data" in widget.note.value
    # curves, progress, status
    assert len(widget.curves.val_y) == 2 and all(np.isfinite(widget.curves.train_y))
    assert widget.progress.value == widget.progress.max
    assert widget.best.value.startswith("epoch ")
    assert widget.process.returncode == 0 and not is_alive(widget.process.pid)
    assert widget.status.value.startswith("done (completed)")
    assert not any(src == "Train" and "failed" in msg for src, msg in notes)
    t = widget.timings
    assert t["click"] < t["data_written"] <= t["process_started"] <= t["first_event"]

    # "Predict on the training image": a soft prediction in the image's geometry, role
    # prediction, the candidate's colour, transparent where p is small
    image = viewer.layers["phantom image"]
    with qtbot.waitSignal(widget.predict_current().finished, timeout=120_000):
        pass
    pred = viewer.layers["phantom image · softseg"]
    assert pred.metadata["softseg_role"] == "prediction"
    assert pred.data.shape == image.data.shape
    np.testing.assert_allclose(pred.scale, image.scale)
    assert pred.metadata[PREDICTION_KEY]["threshold"] == pytest.approx(card.threshold)
    from softseg.palette import candidate_rgb

    np.testing.assert_allclose(pred.colormap.map(np.array([1.0]))[0],
                               [*candidate_rgb("softseg"), 1.0], atol=1e-6)
    assert pred.colormap.map(np.array([0.0, 0.04]))[:, 3].tolist() == [0.0, 0.0]
    # predicting again updates the layer in place: no "… [1]" copy
    uid = layer_uid(pred)
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(widget.predict_current().finished, timeout=120_000):
        pass
    assert len(viewer.layers) == n_layers
    assert layer_uid(viewer.layers["phantom image · softseg"]) == uid

    # the history of the finished model, drawn
    history = widget.open_history(model)
    assert [r.epoch for r in history.rows] == [1, 2]
    assert widget.curves.epoch_x == [1.0, 2.0] and len(widget.curves.val_y) == 2
    csv_history = widget.open_history(tmp_path / "model.history.csv")
    assert [r.loss for r in csv_history.rows] == [r.loss for r in history.rows]
    assert widget.curves.draws >= 1
    # a file that is neither: one line
    (tmp_path / "notes.txt").write_text("hello")
    assert widget.open_history(tmp_path / "notes.txt") is None
    assert "not a training history" in widget.status.value

    # training again on the same model file asks first; Cancel keeps everything
    before = model.stat().st_mtime_ns
    dialogs = Dialogs("Cancel")
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: bool(dialogs.seen), timeout=10_000)
    assert not widget.running and model.stat().st_mtime_ns == before
    assert "model.safetensors" in dialogs.seen[0] and "kept" in widget.status.value


@SLOW
def test_a_perfect_validation_dice_is_flagged(menu_setup, qtbot, notes):
    """A model file whose card reports validation Dice 1.000 on a tiny validation set."""
    from softseg.card import ValidationCard
    from softseg.modelfile import load_model, save_model

    from napari_softseg.widgets.train._report import validation_note

    viewer, widget, tmp_path = menu_setup
    widget.epochs.value = 1
    with qtbot.waitSignal(widget.finished, timeout=300_000) as blocker:
        widget.train_button.clicked.emit()
    assert blocker.args[0].ok
    loaded = load_model(widget.model_path)
    assert validation_note(loaded.card) is None or loaded.card.validation.val_dice >= 0.995
    perfect = loaded.card.model_copy(update={"validation": ValidationCard(
        best_epoch=1, val_loss=0.01, val_dice=1.0, val_soft_dice=0.99)})
    path = save_model(tmp_path / "perfect.safetensors", loaded.model, perfect)
    widget.model_path = path
    widget._report_model()
    slices = {s["subject"]: s["axial_slices"] for s in json.loads(
        (__import__("pathlib").Path(perfect.dataset) / "dataset.json").read_text())["subjects"]}
    n_val = sum(slices[n][1] - slices[n][0] for n in perfect.split.val)
    assert widget.note.value.startswith(
        f"⚠ validation Dice 1.000 measured on only {n_val} slices")
    assert "'Validation fraction'" in widget.note.value
    assert any(src == "Train" and "Dice 1.000" in msg for src, msg in notes)


@SLOW
def test_cancel_leaves_a_loadable_checkpoint_and_no_child(menu_setup, qtbot):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from softseg.models import UNet2D

    viewer, widget, tmp_path = menu_setup
    widget.epochs.value = 500
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.curves.val_y) >= 1, timeout=240_000)
    pid = widget.process.pid
    assert is_alive(pid)
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.cancel_button.clicked.emit()
    outcome = blocker.args[0]
    assert outcome.cancelled and not outcome.killed and outcome.returncode == 130  # 128 + SIGINT
    assert outcome.stopped and outcome.error_line is None
    assert not (tmp_path / "model.safetensors").exists()
    assert not is_alive(pid)
    tensors = load_file(outcome.checkpoint)
    with safe_open(outcome.checkpoint, framework="pt") as fh:
        doc = json.loads(next(v for k, v in fh.metadata().items() if k != "format"))
    assert doc["epoch"] >= 1
    net = UNet2D(1, depth=2, width=8)
    net.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    assert torch.isfinite(net(torch.zeros(1, 1, 32, 32))).all()
    assert "stopped; checkpoint kept" in widget.status.value and "'Resume'" in widget.status.value
    assert widget.train_button.enabled


@SLOW
def test_closing_napari_while_training_asks_first(menu_setup, qtbot):
    """Issue 11 #10: the window's close is held until the user answers; 'Keep training' keeps
    both, 'Stop training and close' stops the child (checkpoint) and closes."""
    from napari_softseg.widgets.train._close_guard import KEEP, STOP

    viewer, widget, _ = menu_setup
    viewer.show()  # a user's window (a script's hidden viewer closes without asking)
    window = widget.native.window()
    qtbot.waitUntil(window.isVisible, timeout=10_000)
    widget.epochs.value = 500
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.process is not None and widget.process.running, timeout=60_000)
    dialogs = Dialogs(KEEP)
    window.close()
    assert dialogs.seen and "training run is still going" in dialogs.seen[0]
    assert window.isVisible() and widget.running and widget.process.running
    proc = widget.process
    # 'Stop training and close': the guard lets napari's close go on and stops the child. The
    # close event is handed to the guard itself: a really closed main window is deleted under
    # the test viewer's feet (napari's own close path is not ours to test).
    from qtpy.QtGui import QCloseEvent

    dialogs = Dialogs(STOP)
    held = widget._close_guard.eventFilter(window, QCloseEvent())
    assert dialogs.seen and "training run is still going" in dialogs.seen[0]
    assert held is False  # napari closes
    qtbot.waitUntil(lambda: not is_alive(proc.pid), timeout=120_000)
    # Popen.poll() answers None while another thread of the supervisor is inside Popen.wait()
    # (it holds the reaping lock), so the exit status can lag the process's end by a moment
    qtbot.waitUntil(lambda: proc.returncode is not None, timeout=30_000)
    assert proc.stop_requested
    # the dock takes the run's end from the supervisor's signal; until it has, closing the
    # viewer (the fixture's teardown) would ask again, with no one there to answer
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)


@SLOW
def test_closing_the_viewer_from_a_script_stops_training_without_asking(menu_setup, qtbot):
    viewer, widget, _ = menu_setup
    widget.epochs.value = 500
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.process is not None and widget.process.running, timeout=60_000)
    proc = widget.process
    viewer.close()  # no dialog: a script closes the canvas first
    qtbot.waitUntil(lambda: not is_alive(proc.pid), timeout=60_000)
    assert proc.returncode is not None


@SLOW
def test_child_errors_are_notifications_and_the_viewer_keeps_working(menu_setup, qtbot, notes):
    from softseg.io import save_volume

    viewer, widget, tmp_path = menu_setup
    bad = tmp_path / "bad-dataset" / "sub-01"
    bad.mkdir(parents=True)
    save_volume(bad / "image.nii.gz", np.zeros((8, 8, 8), np.float32), affine=np.eye(4))
    widget.source.value = "Dataset folder"
    widget.dataset.value = bad.parent
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.train_button.clicked.emit()
    outcome = blocker.args[0]
    assert outcome.returncode == 2 and not outcome.ok
    assert "sub-01" in outcome.error_line and "rater" in outcome.error_line
    assert widget.status.value.startswith("training failed:") and "sub-01" in widget.status.value
    assert any(src == "Train" and "sub-01" in msg for src, msg in notes)
    assert not is_alive(widget.process.pid)
    layer = viewer.add_image(np.zeros((4, 4, 4)), name="still works")
    assert "still works" in viewer.layers and layer.visible
    assert widget.train_button.enabled


# ------------------------------------------------------------------------------ fine-tuning
@pytest.fixture(scope="module")
def parent_model(tmp_path_factory):
    """A tiny single-class softseg model trained by the engine (1 epoch, CPU): the model a
    rater's corrections fine-tune."""
    from softseg.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from softseg.phantom import write_dataset
    from softseg.training import fit

    root = tmp_path_factory.mktemp("parent-model")
    data = write_dataset(root / "phantoms", n_subjects=3, shape=(40, 40, 8), n_raters=2, seed=3)
    cfg = TrainConfig(candidate="softseg", device="cpu", seed=0,
                      data=DataConfig(crop=(32, 32), fusion="average"),
                      model=ModelConfig(depth=2, width=8), optim=OptimConfig(epochs=1, batch_size=4))
    fit(data, cfg, out=root / "parent.safetensors")
    return root / "parent.safetensors"


def test_finetune_refuses_bad_choices_in_one_line(make_napari_viewer, menu_widget, tmp_path):
    viewer = make_napari_viewer()
    _add_phantom(viewer)
    widget = menu_widget(viewer, "train")
    _tiny(widget, tmp_path)
    widget.finetune_button.clicked.emit()
    assert not widget.running and "choose the model to fine-tune under 'Start from'" in \
        widget.status.value
    untrained = untrained_model(tmp_path / "untrained.safetensors")  # a card without settings
    widget.parent_model.value = untrained
    widget.finetune_button.clicked.emit()
    assert not widget.running and "does not record its training settings" in widget.status.value
    widget.output.value = untrained
    widget.finetune_button.clicked.emit()
    assert "choose another 'Model file'" in widget.status.value
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.training-data").exists()


@SLOW
def test_finetune_starts_from_the_model_and_refreshes_its_prediction(
        make_napari_viewer, menu_widget, parent_model, qtbot, tmp_path):
    """Issue 17 #3 (model in the loop): *Fine-tune on the corrected raters* trains the chosen
    model further (``--init``: its candidate, network and preprocessing, recorded as the card's
    parent with the file's SHA-256); its prediction layer is predicted again with the new model
    in place, and the Predict dock switches to the new model."""
    import hashlib

    from softseg.predict import predict_volume

    from napari_softseg._layers import layer_geometry

    viewer = make_napari_viewer()
    _add_phantom(viewer)
    image = viewer.layers["phantom image"]
    predict = menu_widget(viewer, "predict")
    predict.models.value = (parent_model,)
    predict.set_images([image])
    with qtbot.waitSignal(predict.finished, timeout=120_000) as blocker:
        predict.run_button.clicked.emit()
    [pred] = blocker.args[0]
    assert pred.metadata[PREDICTION_KEY]["model"] == str(parent_model.resolve())
    before = np.array(pred.data, copy=True)
    n_layers, uid = len(viewer.layers), layer_uid(pred)

    widget = menu_widget(viewer, "train")
    _tiny(widget, tmp_path, epochs=1)
    widget.output.value = tmp_path / "finetuned.safetensors"
    widget.parent_model.value = parent_model
    # the parent takes one channel: two image layers are refused before anything is written
    t2 = viewer.add_image(np.array(image.data), name="T2")
    widget.set_layers([image, t2], [viewer.layers["rater-1"]])
    widget.finetune_button.clicked.emit()
    assert not widget.running and "takes 1 image channel(s) (image) but 2 image layer(s)" in \
        widget.status.value
    assert not (tmp_path / "finetuned.training-data").exists()
    viewer.layers.remove(t2)
    _tiny(widget, tmp_path, epochs=1)
    widget.output.value = tmp_path / "finetuned.safetensors"
    with qtbot.waitSignal(widget.finished, timeout=300_000) as blocker:
        widget.finetune_button.clicked.emit()
    outcome = blocker.args[0]
    assert outcome.ok, (outcome.error_line, widget.process.stderr_tail)
    new = tmp_path / "finetuned.safetensors"
    card, parent_card = read_card(new), read_card(parent_model)
    assert card.parent is not None
    assert card.parent.sha256 == hashlib.sha256(parent_model.read_bytes()).hexdigest()
    assert os.path.samefile(card.parent.path, parent_model)
    assert card.candidate.name == parent_card.candidate.name == "softseg"
    assert card.training.config.model == parent_card.training.config.model  # its network
    assert card.preprocessing.crop == parent_card.preprocessing.crop
    assert card.training.config.optim.epochs == 1  # the dock's epochs
    # the prediction of the parent is predicted again with the new model, in place
    qtbot.waitUntil(lambda: predict.model_paths() == [new], timeout=180_000)
    pred = viewer.layers["phantom image · softseg"]
    assert layer_uid(pred) == uid and len(viewer.layers) == n_layers
    assert pred.metadata[PREDICTION_KEY]["model"] == str(new.resolve())
    geo = layer_geometry(image)
    reference = geo.to_display(predict_volume(
        new, [geo.volume(geo.from_display(np.asarray(image.data, np.float32)))], device="cpu"))
    np.testing.assert_allclose(pred.data, reference, atol=1e-5)
    assert not np.allclose(pred.data, before)  # it changed (the fine-tuned weights)
    assert "fine-tuned model finetuned.safetensors" in predict.status.value
