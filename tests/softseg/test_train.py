"""softseg.train: config parsing, a 2-epoch run, determinism, cancel/resume, NaN/OOM, early stop."""

from __future__ import annotations

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
from softseg.modelfile import REQUIRED_KEYS, read_metadata
from softseg.train import THRESHOLDS, Trainer, TrainConfig, checkpoint_path, fit, train


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
    with pytest.raises(InputError, match=r"config.optim: unknown key\(s\) learning_rate; valid keys: lr, batch_size"):
        TrainConfig.from_dict({"optim": {"learning_rate": 0.1}})
    with pytest.raises(InputError, match=r"config: unknown key\(s\) epochs"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(InputError, match="unknown fusion 'vote'; choose one of staple, average, majority, random"):
        TrainConfig.from_dict({"data": {"fusion": "vote"}})
    with pytest.raises(InputError, match="batch size must be an integer >= 1"):
        _config(optim={"batch_size": 0})


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

    meta = read_metadata(out)
    assert set(REQUIRED_KEYS) <= set(meta)
    assert meta["candidate"]["name"] == "softseg" and meta["candidate"]["title"] == "Soft-ReLU-Wing"
    assert meta["architecture"]["config"]["width"] == 4 and meta["architecture"]["config"]["depth"] == 3
    zooms = nib.load(dataset / "sub-01" / "image.nii.gz").header.get_zooms()
    # default spacing: slices native, in-plane = median (display rows = y, cols = x)
    assert meta["preprocessing"]["spacing"] == [None, pytest.approx(zooms[1]), pytest.approx(zooms[0])]
    assert meta["preprocessing"]["crop"] == [32, 32] and meta["preprocessing"]["channels"] == ["image"]
    assert meta["preprocessing"]["normalization"] == "zscore"
    assert meta["threshold"] in THRESHOLDS
    sweep = meta["validation"]["threshold_sweep"]
    assert [t for t, _ in sweep] == list(THRESHOLDS)
    assert meta["threshold"] == sweep[int(np.argmax([d for _, d in sweep]))][0]
    best = meta["validation"]
    assert best["best_epoch"] == done.best_epoch and best["val_loss"] == done.best_val_loss
    assert 0 <= best["val_dice"] <= 1 and 0 <= best["val_soft_dice"] <= 1
    prov = meta["provenance"]
    assert prov["seed"] == 3 and prov["fusion"] == "average" and prov["raters"] == ["1", "2", "3"]
    assert prov["epochs"] == 2 and prov["softseg_version"] == __version__
    assert len(prov["subjects"]["train"]) == 2 and len(prov["subjects"]["val"]) == 1
    assert TrainConfig.from_dict(prov["config"]) == _config()


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
    meta = read_metadata(out)
    assert [h["epoch"] for h in meta["validation"]["history"]] == [1, 2]


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
    meta = read_metadata(tmp_path / "m.safetensors")
    assert meta["candidate"]["name"] == "gdl-boundary" and meta["provenance"]["fusion"] == "random"
    assert meta["provenance"]["epochs"] == 2


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
