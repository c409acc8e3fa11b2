"""The trainer (softseg.training): a 2-epoch run, its card and history, determinism,
cancel/resume, NaN/OOM, early stop, the output lock."""

from __future__ import annotations

import csv
import threading

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from softseg import __version__
from softseg import events as ev
from softseg.phantom import write_dataset
from softseg.errors import InputError
from softseg.candidates import get_candidate
from softseg.config import TrainConfig
from softseg.data import scan_dataset
from softseg.modelfile import read_card
from softseg.training import HISTORY_COLUMNS, THRESHOLDS, Trainer, checkpoint_path, fit, history_path, lock_path, output_lock, train


def _config(**over) -> TrainConfig:
    base = {
        "candidate": "softseg",
        "seed": 3,
        "device": "cpu",
        "data": {"crop": [32, 32], "val_fraction": 0.34, "fusion": "average"},
        "model": {"depth": 3, "width": 4},
        "optim": {"epochs": 2, "batch_size": 4},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "ds"
    write_dataset(root, n_subjects=3, shape=(48, 48, 8), n_raters=3, seed=0)
    return root


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted 2-epoch run: its events and model file."""
    out = tmp_path_factory.mktemp("ref") / "model.safetensors"
    events = list(train(dataset, _config(), out=out))
    return events, out


def _weights(path):
    return load_file(str(path))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ configuration
def test_config_round_trip_and_unknown_keys():
    cfg = _config()
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg
    assert cfg.data.crop == (32, 32) and cfg.optim.lr == 1e-3
    with pytest.raises(InputError, match=r"^config: optim.learning_rate: unknown key$"):
        TrainConfig.from_dict({"optim": {"learning_rate": 0.1}})
    with pytest.raises(InputError, match=r"^config: epochs: unknown key$"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(InputError, match="unknown fusion 'vote'; choose one of staple, average, majority, random"):
        TrainConfig.from_dict({"data": {"fusion": "vote"}})
    with pytest.raises(InputError, match="optim.batch_size: Input should be greater than or equal to 1"):
        _config(optim={"batch_size": 0})
    with pytest.raises(TypeError, match="softseg.config.TrainConfig"):
        Trainer(None, cfg.as_dict(), out="m.safetensors")


# ------------------------------------------------------------------ a full run
def test_two_epoch_run_events_and_model_file(reference, dataset):
    events, out = reference
    types = [e.type for e in events]
    assert set(types) <= set(ev.EVENT_TYPES)
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    # 2 training subjects x 8 slices, batch 4 -> 4 steps per epoch
    assert [(e.epoch, e.step, e.steps) for e in steps] == [(ep, s, 4) for ep in (1, 2) for s in (1, 2, 3, 4)]
    assert all(np.isfinite(e.loss) and e.eta_s >= 0 for e in steps)
    epochs = [e for e in events if isinstance(e, ev.EpochEvent)]
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[-1].lr == pytest.approx(0.0, abs=1e-12)  # cosine annealing reaches 0 at T_max
    assert epochs[0].lr == pytest.approx(0.5e-3)
    done = events[-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "completed" and done.epoch == 2
    assert done.path == str(out) and out.exists()
    assert done.checkpoint is None and not checkpoint_path(out).exists()
    for e in events:  # every event survives the JSON line format
        assert ev.from_json(ev.to_json(e)) == e

    card = read_card(out)
    assert card.format_version == 2 and card.classes == scan_dataset(dataset).classes == ("target",)
    assert card.candidate.name == "softseg" and card.candidate.title == "Soft-ReLU-Wing+DML"
    assert card.candidate.activation.name == "normalized_relu" and card.candidate.soft_gt is True
    assert card.architecture.config.width == 4 and card.architecture.config.depth == 3
    zooms = nib.load(dataset / "sub-01" / "image.nii.gz").header.get_zooms()
    # default spacing: slices native, in-plane = median (display rows = y, cols = x)
    assert card.preprocessing.spacing == (None, pytest.approx(zooms[1]), pytest.approx(zooms[0]))
    assert card.preprocessing.crop == (32, 32) and card.channels == ("image",)
    assert card.preprocessing.normalization == "zscore"
    assert card.threshold in THRESHOLDS and card.thresholds == (card.threshold,)
    (curve,) = card.validation.curves
    assert curve.thresholds == THRESHOLDS
    assert card.threshold == curve.thresholds[int(np.argmax(curve.dice))]
    best = card.validation
    assert best.best_epoch == done.best_epoch and best.val_loss == done.best_val_loss
    assert 0 <= best.val_dice <= 1 and 0 <= best.val_soft_dice <= 1
    assert card.fusion == "average" and card.raters == ("1", "2", "3")
    t = card.training
    assert t.seed == 3 and t.epochs == 2 and t.max_epochs == 2 and t.stop_reason == "completed"
    assert t.config == _config() and t.device == "cpu" and 0 < t.seconds <= done.elapsed_s + 1
    assert card.software.softseg == __version__ and card.software.torch == torch.__version__
    assert len(card.split.train) == 2 and len(card.split.val) == 1
    # the history in the card and in <model>.history.csv are the epoch events' numbers
    epoch_rows = [{k: getattr(e, k) for k in HISTORY_COLUMNS} for e in epochs]
    assert [row.model_dump() for row in card.history] == epoch_rows
    with open(history_path(out), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows] == epoch_rows
    assert not lock_path(out).exists()  # the lock is gone with the run


def test_same_seed_same_weights(reference, dataset, tmp_path):
    _, ref_out = reference
    again = tmp_path / "again.safetensors"
    fit(dataset, _config(), out=again)
    assert _same_weights(ref_out, again)
    other = tmp_path / "other.safetensors"
    fit(dataset, _config(seed=4), out=other)
    assert not _same_weights(ref_out, other)


def test_cancel_then_resume_continues_exactly(reference, dataset, tmp_path):
    _, ref_out = reference
    out = tmp_path / "m.safetensors"
    cancel = threading.Event()
    first = []
    for e in train(dataset, _config(), out=out, cancel=cancel):
        first.append(e)
        if isinstance(e, ev.StepEvent) and (e.epoch, e.step) == (2, 1):
            cancel.set()
    done = first[-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "cancelled" and done.path is None
    assert done.epoch == 1 and done.threshold is None
    ckpt = checkpoint_path(out)
    assert done.checkpoint == str(ckpt) and ckpt.exists() and not out.exists()
    assert [e.reason for e in first if isinstance(e, ev.CheckpointEvent)] == ["epoch", "cancel"]

    with pytest.raises(InputError, match="checkpoint of an interrupted run exists; pass --resume"):
        list(train(dataset, _config(), out=out))
    with pytest.raises(InputError, match=r"--resume with different settings \(optim.lr: 0.001 -> 0.01\)"):
        list(train(dataset, _config(optim={"lr": 0.01}), out=out, resume=True))

    second = list(train(dataset, _config(), out=out, resume=True))
    steps = [(e.epoch, e.step) for e in second if isinstance(e, ev.StepEvent)]
    assert steps == [(2, 2), (2, 3), (2, 4)]
    assert second[-1].reason == "completed" and out.exists() and not ckpt.exists()
    assert _same_weights(ref_out, out)  # bit-identical to the uninterrupted run on CPU
    card = read_card(out)
    assert [h.epoch for h in card.history] == [1, 2]
    # the resumed run's history file holds each epoch once, with the numbers the card has
    with open(history_path(out), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["val_loss"]) for r in rows] == [h.val_loss for h in card.history]


def test_resume_finishes_with_the_checkpoints_recipe(dataset, tmp_path):
    """A run interrupted before the registry gave its candidate's name another recipe (issue 15:
    ``softseg`` became Adaptive Wing + DML, the old recipe is ``softseg-wing``) finishes with the
    recipe it started with: bit-identical to an uninterrupted ``softseg-wing`` run, whether the
    checkpoint records its recipe or (written by the previous release) does not."""
    from softseg.training.checkpoint import read_checkpoint, write_checkpoint

    wing = _config(candidate="softseg-wing")
    ref = tmp_path / "wing.safetensors"
    fit(dataset, wing, out=ref)
    softseg_now = tmp_path / "softseg.safetensors"
    fit(dataset, _config(), out=softseg_now)
    assert not _same_weights(ref, softseg_now)  # the two recipes train differently
    for recorded in (True, False):
        out = tmp_path / f"old-{recorded}.safetensors"
        cancel = threading.Event()
        for e in train(dataset, wing, out=out, cancel=cancel):
            if isinstance(e, ev.StepEvent) and (e.epoch, e.step) == (2, 1):
                cancel.set()
        tensors, doc = read_checkpoint(checkpoint_path(out))
        assert doc["recipe"]["name"] == "softseg-wing" and doc["recipe"]["loss_params"]["balance"] == 0.05
        doc["config"]["candidate"] = "softseg"  # what the previous release called this recipe
        if not recorded:
            del doc["recipe"]  # ... and its checkpoints did not record the recipe
        write_checkpoint(checkpoint_path(out), tensors, doc)
        trainer = Trainer(dataset, _config(), out=out, resume=True)
        events = list(trainer.run())
        assert events[-1].reason == "completed"
        assert _same_weights(ref, out), recorded
        # the user is told (softseg train prints the notes)
        assert len(trainer.notes) == 1 and "the recipe this run started with (softseg-wing" in trainer.notes[0]
        card = read_card(out)
        assert card.candidate.name == "softseg-wing"
        assert card.candidate.loss_params == get_candidate("softseg-wing").loss_params


def test_resume_accepts_a_renamed_candidates_new_name(dataset, tmp_path):
    """A checkpoint of ``softseg-dml`` (the name of today's ``softseg`` recipe for one release)
    resumes as ``--candidate softseg``; a configuration naming it reads as ``softseg``."""
    from softseg.training.checkpoint import read_checkpoint, write_checkpoint

    out = tmp_path / "m.safetensors"
    cancel = threading.Event()
    for e in train(dataset, _config(), out=out, cancel=cancel):
        if isinstance(e, ev.StepEvent) and (e.epoch, e.step) == (2, 1):
            cancel.set()
    tensors, doc = read_checkpoint(checkpoint_path(out))
    doc["config"]["candidate"] = "softseg-dml"
    del doc["recipe"]
    write_checkpoint(checkpoint_path(out), tensors, doc)
    assert _config(candidate="softseg-dml").candidate == "softseg"
    list(train(dataset, _config(), out=out, resume=True))
    ref = tmp_path / "ref.safetensors"
    fit(dataset, _config(), out=ref)
    assert _same_weights(ref, out)


def test_resume_without_checkpoint(dataset, tmp_path):
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        list(train(dataset, _config(), out=tmp_path / "x.safetensors", resume=True))
    with pytest.raises(InputError, match="folder .* does not exist"):
        list(train(dataset, _config(), out=tmp_path / "nope" / "x.safetensors"))


class _NanAtEpoch2(Trainer):
    """A hook override (no change to the loop): poison the inputs from epoch 2 on."""

    def begin_epoch(self) -> None:
        super().begin_epoch()
        if self.epoch == 2:
            self.train_images = torch.full_like(self.train_images, float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(dataset, tmp_path):
    out = tmp_path / "m.safetensors"
    events = list(_NanAtEpoch2(dataset, _config(), out=out).run())
    err = events[-1]
    assert isinstance(err, ev.ErrorEvent) and err.kind == "nan"
    assert "NaN" in err.message and "epoch 2" in err.message and "last good checkpoint (epoch 1)" in err.message
    assert "\n" not in err.message
    ckpt = checkpoint_path(out)
    assert err.checkpoint == str(ckpt) and ckpt.exists() and not out.exists()
    # the kept checkpoint is loadable: resuming with clean data finishes the run
    done = fit(dataset, _config(), out=out, resume=True)
    assert done.reason == "completed" and out.exists()


class _Oom(Trainer):
    def train_step(self, images, labels):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_says_lower_the_batch_size(dataset, tmp_path):
    events = list(_Oom(dataset, _config(), out=tmp_path / "m.safetensors").run())
    err = events[-1]
    assert isinstance(err, ev.ErrorEvent) and err.kind == "oom"
    assert "lower the batch size (--batch-size 2)" in err.message


def test_early_stopping_random_fusion_boundary_candidate(dataset, tmp_path):
    cfg = _config(
        candidate="gdl-boundary",
        data={"fusion": "random"},
        optim={"epochs": 5, "patience": 1, "min_delta": 100.0},
    )
    events = list(train(dataset, cfg, out=tmp_path / "m.safetensors"))
    done = events[-1]
    assert done.reason == "early_stopping" and done.epoch == 2 and done.best_epoch == 1
    assert [e.epoch for e in events if isinstance(e, ev.BestEvent)] == [1]
    card = read_card(tmp_path / "m.safetensors")
    assert card.candidate.name == "gdl-boundary" and card.fusion == "random"
    assert card.training.epochs == 2 and card.training.stop_reason == "early_stopping"


def test_a_second_run_on_the_same_output_is_refused(dataset, tmp_path):
    out = tmp_path / "m.safetensors"
    with output_lock(out):  # another run holds the output
        with pytest.raises(InputError, match=r"another softseg train run is writing this model") as exc:
            list(train(dataset, _config(), out=out))
        assert "\n" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, lock released
    # two trainers at once: the second is refused while the first runs, and the first finishes
    first = train(dataset, _config(optim={"epochs": 1}), out=out)
    next(first)  # the first run holds the lock now
    with pytest.raises(InputError, match="another softseg train run"):
        next(train(dataset, _config(optim={"epochs": 1}), out=out))
    assert isinstance(list(first)[-1], ev.DoneEvent) and out.exists()
    assert not lock_path(out).exists()


def test_tensorboard_scalars_are_the_epoch_events(dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    events = list(train(dataset, _config(optim={"epochs": 1}), out=tmp_path / "m.safetensors", tensorboard=logs))
    epoch = next(e for e in events if isinstance(e, ev.EpochEvent))
    acc = EventAccumulator(str(logs))
    acc.Reload()
    scalars = {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert scalars["loss/val"] == [(1, pytest.approx(epoch.val_loss, rel=1e-6))]
    assert scalars["dice/val"] == [(1, pytest.approx(epoch.val_dice, rel=1e-6))]
    assert scalars["lr"] == [(1, pytest.approx(epoch.lr, rel=1e-6, abs=1e-12))]
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert [v for _, v in scalars["loss/step"]] == pytest.approx([e.loss for e in steps], rel=1e-6)


def test_unknown_candidate_lists_names(dataset, tmp_path):
    with pytest.raises(InputError, match="softseg"):
        list(train(dataset, _config(candidate="nope"), out=tmp_path / "m.safetensors"))
    assert not (tmp_path / "m.safetensors").exists()


def test_event_lines_are_strict_json_and_tolerant_to_read():
    line = ev.to_json(ev.StepEvent(epoch=1, epochs=2, step=1, steps=4, loss=float("nan"), eta_s=None))
    assert line == '{"type": "step", "epoch": 1, "epochs": 2, "step": 1, "steps": 4, "loss": null, "eta_s": null}'
    assert ev.from_json("some library warning") is None
    assert ev.from_json('{"type": "future-kind", "x": 1}') is None
    newer = ev.from_json('{"type": "lr", "epoch": 3, "lr": 0.1, "added_later": true}')
    assert newer == ev.LrEvent(epoch=3, lr=0.1)
    with pytest.raises(ValueError, match="bad 'lr' event"):
        ev.from_dict({"type": "lr", "epoch": 3})
