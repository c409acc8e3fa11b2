"""The Train dock's *One model per rater (rater ensemble)* (issue 15 #3, the rater ensemble in the
widgets): one ``softseg train`` child per rater, one after another, each on that rater's targets
alone, files named as the protocol names members; Cancel ends the sequence and keeps the finished
members; the members predict as the Predict dock's ensemble (the mean of the models).

Opened as users open it (Plugins menu, wrapped viewer), driven by real clicks; tiny phantom
(display 8 x 32 x 32), crop 32, depth 2, width 4, CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_softseg._metadata import PREDICTION_KEY, UNCERTAINTY_KEY, role
from napari_softseg._sample_data import phantom_layers
from softseg.modelfile import read_card
from softseg.protocol.ensemble import MEMBER_FUSION, member_model

from model_support import untrained_model

SHAPE = (32, 32, 8)  # phantom file order (X, Y, Z) -> display (8, 32, 32)
SLOW = pytest.mark.slow  # tests that run training children


def _click(widget):
    """A user's click on a magicgui button or check box."""
    from qtpy.QtWidgets import QCheckBox
    from qtpy.QtTest import QTest

    if isinstance(widget.native, QCheckBox):
        widget.native.click()  # the box, wherever its text ends
    else:
        QTest.mouseClick(widget.native, Qt.MouseButton.LeftButton)


def _setup(make_napari_viewer, menu_widget, tmp_path, *, raters=(1, 2), epochs=1):
    viewer = make_napari_viewer()
    for data, kwargs, kind in phantom_layers(SHAPE, n_raters=3, seed=2):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = menu_widget(viewer, "train")
    widget.set_layers([viewer.layers["phantom image"]],
                      [viewer.layers[f"rater-{i}"] for i in raters])
    widget.candidate.value = "conventional"
    widget.epochs.value = epochs
    widget.patience.value = max(epochs, 1)
    widget.batch_size.value = 4
    widget.crop.value = 32
    widget.depth.value = 2
    widget.unet_width.value = 4
    widget.device.value = "cpu"
    widget.output.value = tmp_path / "model.safetensors"
    return viewer, widget


def _statuses(widget):
    """The dock's status lines as the user sees them (read every 20 ms while the test runs)."""
    from qtpy.QtCore import QTimer

    seen: list[str] = []

    def read():
        text = str(widget.status.value)
        if not seen or seen[-1] != text:
            seen.append(text)

    timer = QTimer(widget.native)
    timer.setInterval(20)
    timer.timeout.connect(read)
    timer.start()
    return seen


def _member(tmp_path, rater):
    return tmp_path / member_model(".", "model", rater)


# ------------------------------------------------------------------------------ refusals
def test_one_rater_is_refused_in_one_line(make_napari_viewer, menu_widget, tmp_path):
    from softseg.phantom import write_dataset

    viewer, widget = _setup(make_napari_viewer, menu_widget, tmp_path, raters=(1,))
    assert widget.fusion.enabled
    _click(widget.ensemble)
    assert widget.ensemble.value and not widget.fusion.enabled  # members fuse nothing
    _click(widget.train_button)
    assert not widget.running
    assert widget.status.value == (
        "not started: a rater ensemble trains one model per rater and needs 2 or more raters; "
        "1 rater layer chosen: choose more raters or untick 'One model per rater'")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    # a dataset folder with one rater: the same words
    folder = write_dataset(tmp_path / "one-rater", n_subjects=2, shape=SHAPE, n_raters=1)
    widget.source.value = "Dataset folder"
    widget.dataset.value = folder
    _click(widget.train_button)
    assert not widget.running
    assert widget.status.value == (
        "not started: a rater ensemble trains one model per rater and needs 2 or more raters; "
        "the dataset folder has 1 (rater 1): add another rater's files or untick 'One model per "
        "rater'")
    assert "\n" not in widget.status.value and "--" not in widget.status.value
    # fine-tuning makes one model
    widget.source.value = "Open layers"
    widget.set_layers([viewer.layers["phantom image"]],
                      [viewer.layers["rater-1"], viewer.layers["rater-2"]])
    widget.parent_model.value = untrained_model(tmp_path / "parent.safetensors")
    _click(widget.finetune_button)
    assert not widget.running and "fine-tuning trains one model; untick 'One model per rater'" \
        in widget.status.value
    _click(widget.ensemble)
    assert not widget.ensemble.value and widget.fusion.enabled


def test_members_of_a_dataset_folder_and_resume(tmp_path):
    """Members from a folder train on rater_view written as links; Resume keeps finished
    members and resumes the one with a checkpoint."""
    from softseg.config import PRESETS
    from softseg.data import scan_dataset
    from softseg.phantom import write_dataset

    from napari_softseg.widgets.train._ensemble import ensemble_run, write_rater_view
    from napari_softseg.widgets.train._history import checkpoint_of
    from napari_softseg.widgets.train._run import TrainRun

    folder = write_dataset(tmp_path / "data", n_subjects=2, shape=SHAPE, n_raters=3)
    out = tmp_path / "models" / "m.safetensors"
    base = TrainRun(config=PRESETS["quick"].updated({"data": {"fusion": "staple"}}), out=out,
                    folder=folder)
    ens = ensemble_run(base)
    assert ens.raters == ("1", "2", "3")
    assert ens.paths == tuple(tmp_path / "models" / f"m-rater-{r}.safetensors" for r in "123")
    assert all(m.config.data.fusion == MEMBER_FUSION == "average" for m in ens.members)
    assert all(m.config.optim == PRESETS["quick"].optim for m in ens.members)
    assert ens.kept == (False,) * 3 and not any(m.resume for m in ens.members)
    # member 2's data: every subject with its image and rater 2's file (and sidecar), as links
    view = write_rater_view(ens.views[1], ens.members[1].folder)
    assert view == tmp_path / "models" / "m-rater-2.training-data"
    info = scan_dataset(view)
    assert info.rater_ids == ("2",) and info.names == ("sub-01", "sub-02")
    sub = view / "sub-01"
    assert sorted(p.name for p in sub.iterdir()) == ["image.nii.gz", "rater-2.json",
                                                     "rater-2.nii.gz"]
    assert all(p.is_symlink() for p in sub.iterdir())
    assert (sub / "rater-2.nii.gz").resolve() == (folder / "sub-01" / "rater-2.nii.gz").resolve()
    assert (folder / "sub-01" / "rater-1.nii.gz").is_file()  # the dataset is untouched
    # Resume: member 1 finished, member 2 has a checkpoint, member 3 never started
    ens.paths[0].write_bytes(b"m1")
    ens.paths[1].write_bytes(b"old")
    checkpoint_of(ens.paths[1]).write_bytes(b"ckpt")
    again = ensemble_run(TrainRun(config=base.config, out=out, folder=folder, resume=True))
    assert again.kept == (True, False, False)
    assert [m.resume for m in again.members] == [False, True, False]
    # a subject without one of the raters: the protocol's refusal
    (folder / "sub-02" / "rater-3.nii.gz").unlink()
    (folder / "sub-02" / "rater-3.json").unlink()
    from softseg.errors import InputError

    with pytest.raises(InputError, match="subject 'sub-02' has no rater 3"):
        ensemble_run(base)


# ------------------------------------------------------------------------------ training
@SLOW
def test_two_rater_layers_train_two_members_and_predict_their_mean(make_napari_viewer,
                                                                   menu_widget, qtbot, tmp_path):
    from softseg.predict import predict_volume
    from softseg.uncertainty import predict_ensemble

    from napari_softseg._layers import layer_geometry

    viewer, widget = _setup(make_napari_viewer, menu_widget, tmp_path)
    _click(widget.ensemble)
    seen = _statuses(widget)
    with qtbot.waitSignal(widget.finished, timeout=600_000) as blocker:
        _click(widget.train_button)
        assert widget.running and not widget.train_button.enabled
    outcome = blocker.args[0]
    assert outcome.ok, (outcome.error_line, widget.process.stderr_tail)
    members = [_member(tmp_path, "rater-1"), _member(tmp_path, "rater-2")]
    assert [p.name for p in members] == ["model-rater-rater-1.safetensors",
                                         "model-rater-rater-2.safetensors"]
    assert widget.member_paths == members and all(p.is_file() for p in members)
    assert not (tmp_path / "model.safetensors").exists()  # the stem only names the members
    # progress in the dock's words, member by member
    assert any(s.startswith("rater 1 of 2 (rater-1) · epoch 1/1") for s in seen), seen
    assert any(s.startswith("rater 2 of 2 (rater-2) · epoch 1/1") for s in seen), seen
    assert widget.best.value.startswith("rater 2 of 2 (rater-2) · epoch 1: validation loss")
    assert seen.index(next(s for s in seen if s.startswith("rater 2 of 2"))) > \
        seen.index(next(s for s in seen if s.startswith("rater 1 of 2")))
    assert widget.status.value.startswith("done in ") and "2 models, one per rater" in \
        widget.status.value
    # each member trained on its rater alone: card, configuration and its training folder
    expected = widget.config().updated({"data": {"fusion": MEMBER_FUSION}})
    for path, rater in zip(members, ("rater-1", "rater-2")):
        card = read_card(path)
        assert card.raters == (rater,) and card.fusion == "average"
        assert card.training.config == expected
        subjects = [p for p in sorted(Path(card.dataset).iterdir())
                    if p.is_dir()]
        assert subjects
        for sub in subjects:
            assert sorted(p.name for p in sub.glob("rater-*.nii.gz")) == [f"rater-{rater}.nii.gz"]
        assert f"{path.name}: trained on {rater}'s labels alone" in widget.note.value
    # the members differ (their raters differ), so their mean is not either member
    image = viewer.layers["phantom image"]
    geo = layer_geometry(image)
    volume = [geo.volume(geo.from_display(np.asarray(image.data, np.float32)))]
    each = np.stack([geo.to_display(predict_volume(p, volume, device="cpu")) for p in members])

    # "Predict on the training image": the ensemble mean, the Predict dock's layers
    assert widget.predict_button.enabled
    _click(widget.predict_button)
    name = "phantom image · conventional:ensemble"
    qtbot.waitUntil(lambda: name in viewer.layers and f"{name} · entropy" in viewer.layers,
                    timeout=180_000)
    pred = viewer.layers[name]
    assert role(pred) == "prediction"
    info = pred.metadata[PREDICTION_KEY]
    assert info["models"] == [str(p.resolve()) for p in members]
    assert info["uncertainty"] == {"method": "ensemble", "passes": 2, "seed": None}
    assert viewer.layers[f"{name} · entropy"].metadata[UNCERTAINTY_KEY]["method"] == "ensemble"
    maps = predict_ensemble(members, volume, device="cpu")  # the engine, called directly
    np.testing.assert_allclose(pred.data, geo.to_display(maps.mean), atol=1e-6)
    np.testing.assert_allclose(pred.data, each.astype(np.float64).mean(axis=0), atol=1e-6)
    assert np.abs(each[0] - each[1]).max() > 1e-4


@SLOW
def test_cancel_stops_the_sequence_and_keeps_the_finished_member(make_napari_viewer,
                                                                 menu_widget, qtbot, tmp_path):
    from napari_softseg._supervisor import is_alive
    from napari_softseg.widgets.train._history import checkpoint_of

    viewer, widget = _setup(make_napari_viewer, menu_widget, tmp_path, epochs=100)
    users = untrained_model(tmp_path / "model.safetensors")  # the user's file at the stem
    before_file = users.read_bytes()
    before_layers = {lyr.name: np.array(lyr.data, copy=True) for lyr in viewer.layers}
    first, second = _member(tmp_path, "rater-1"), _member(tmp_path, "rater-2")
    _click(widget.ensemble)
    _click(widget.train_button)

    def second_is_training():
        proc = widget.process
        return (proc is not None and str(second) in proc.argv and proc.running
                and widget.status.value.startswith("rater 2 of 2 (rater-2) · epoch"))

    qtbot.waitUntil(second_is_training, timeout=600_000)
    assert first.is_file()
    pid = widget.process.pid
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        _click(widget.cancel_button)
    outcome = blocker.args[0]
    assert outcome.cancelled and not outcome.killed and outcome.returncode == 130
    assert not is_alive(pid)
    assert widget.member_paths == [first] and read_card(first).raters == ("rater-1",)
    assert not second.exists() and checkpoint_of(second).is_file()
    assert widget.status.value == (
        f"stopped at rater 2 of 2; models kept: {first.name}; checkpoint kept: "
        f"{checkpoint_of(second).name} ('Resume' continues)")
    assert not widget.predict_button.enabled and widget.train_button.enabled
    # nothing the user had is removed or changed
    assert users.read_bytes() == before_file
    assert [lyr.name for lyr in viewer.layers] == list(before_layers)
    for lyr in viewer.layers:
        np.testing.assert_array_equal(lyr.data, before_layers[lyr.name])


@SLOW
def test_a_dataset_folder_trains_one_member_per_rater_on_links(make_napari_viewer, menu_widget,
                                                               qtbot, tmp_path):
    from softseg.phantom import write_dataset

    folder = write_dataset(tmp_path / "data", n_subjects=3, shape=SHAPE, n_raters=2, seed=4)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    viewer, widget = _setup(make_napari_viewer, menu_widget, tmp_path)
    widget.source.value = "Dataset folder"
    widget.dataset.value = folder
    widget.output.value = tmp_path / "m.safetensors"
    _click(widget.ensemble)
    with qtbot.waitSignal(widget.finished, timeout=600_000) as blocker:
        _click(widget.train_button)
    assert blocker.args[0].ok, (blocker.args[0].error_line, widget.process.stderr_tail)
    members = [tmp_path / "m-rater-1.safetensors", tmp_path / "m-rater-2.safetensors"]
    assert widget.member_paths == members
    for path, rater in zip(members, ("1", "2")):
        card = read_card(path)
        assert card.raters == (rater,) and card.fusion == "average"
        data = tmp_path / f"m-rater-{rater}.training-data"
        assert os.path.samefile(card.dataset, data)
        assert sorted(p.name for p in data.rglob("rater-*.nii.gz")) == [f"rater-{rater}.nii.gz"] * 3
        assert f"{path.name}: trained on rater {rater}'s labels alone" in widget.note.value
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == files  # untouched
