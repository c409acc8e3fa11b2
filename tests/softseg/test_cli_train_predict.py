"""``softseg train`` / ``softseg predict`` as a person (or the napari supervisor) runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from softseg import events as ev
from softseg.cli import main
from softseg.phantom import write_dataset
from softseg.card import ModelCard
from softseg.modelfile import read_card, save_model
from softseg.models import UNet2D
from softseg.training import checkpoint_path, history_path

TINY = ["--crop", "32", "--width", "4", "--depth", "3", "--batch-size", "4", "--val-fraction", "0.34",
        "--device", "cpu", "--seed", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def softseg(*args, cwd=None, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "softseg", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout,
    )


def in_process(capsys, *args):
    """Run ``softseg ARGS`` in this process (same ``main`` as the command): (code, out, err)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, cap.out, cap.err)


def _events(stdout: str) -> list:
    lines = [line for line in stdout.splitlines() if line.strip()]
    parsed = [ev.from_json(line) for line in lines]
    assert all(p is not None for p in parsed), lines  # every stdout line is an event
    return parsed


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "ds"
    write_dataset(root, n_subjects=3, shape=(48, 48, 8), n_raters=3, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m.safetensors"
    proc = softseg("train", dataset, "--candidate", "conventional", "--out", out, "--epochs", "2",
                   "--fusion", "staple", "--json-progress", *TINY)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_json_progress(trained):
    out, proc = trained
    events = _events(proc.stdout)
    done = events[-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "completed" and done.path == str(out)
    assert [e.epoch for e in events if isinstance(e, ev.EpochEvent)] == [1, 2]
    assert proc.stderr.strip() == ""  # JSON mode: nothing human on stderr
    card = read_card(out)
    assert card.candidate.name == "conventional" and card.fusion == "staple"
    assert card.training.distributed is None
    assert history_path(out).is_file()


def test_train_human_progress(dataset, tmp_path, capsys):
    proc = in_process(capsys, "train", dataset, "--candidate", "softseg", "--out", tmp_path / "h.safetensors",
                   "--epochs", "1", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "epoch 1/1" in proc.stderr and "done (maximum epochs)" in proc.stderr


def test_predict_writes_native_float32_with_sidecar(trained, dataset, tmp_path, capsys):
    model, _ = trained
    outdir = tmp_path / "preds"
    proc = softseg("predict", model, dataset, "-o", outdir, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [o["name"] for o in summary["outputs"]] == ["sub-01", "sub-02", "sub-03"]
    card = read_card(model)
    for sub in ("sub-01", "sub-02", "sub-03"):
        src = nib.load(dataset / sub / "image.nii.gz")
        pred = nib.load(outdir / f"{sub}_pred.nii.gz")
        assert pred.shape == src.shape
        np.testing.assert_array_equal(pred.affine, src.affine)
        assert pred.get_data_dtype() == np.float32
        data = np.asarray(pred.dataobj)
        assert data.min() >= 0 and data.max() <= 1
        side = json.loads((outdir / f"{sub}_pred.json").read_text())
        assert side["threshold"] == card.threshold and side["candidate"] == "conventional"
        assert side["model"] == str(model.resolve()) and side["binarized"] is False
    # --binarize: 0/1 masks at the model threshold, equal to thresholding the soft map
    proc = in_process(capsys, "predict", model, dataset / "sub-02" / "image.nii.gz", "-o", tmp_path / "bin", "--binarize")
    assert proc.returncode == 0, proc.stderr
    mask = nib.load(tmp_path / "bin" / "sub-02_pred.nii.gz")
    assert mask.get_data_dtype() == np.uint8
    soft = np.asarray(nib.load(outdir / "sub-02_pred.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), soft >= card.threshold)
    # existing outputs are kept unless --overwrite
    before = (outdir / "sub-01_pred.nii.gz").read_bytes()
    proc = in_process(capsys, "predict", model, dataset / "sub-01", "-o", outdir)
    assert proc.returncode == 2 and "already exists" in proc.stderr and proc.stderr.count("\n") == 1
    assert (outdir / "sub-01_pred.nii.gz").read_bytes() == before


@pytest.mark.slow
def test_sigint_saves_checkpoint_and_resume_continues(dataset, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    args = [sys.executable, "-m", "softseg", "train", str(dataset), "--candidate", "softseg",
            "--out", str(out), "--epochs", "60", "--json-progress", *TINY]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    seen = []
    for line in proc.stdout:
        e = ev.from_json(line)
        seen.append(e)
        if isinstance(e, ev.StepEvent) and (e.epoch, e.step) >= (2, 1):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, proc.stderr.read()  # interrupted: 128 + SIGINT, checkpoint saved
    events = seen + _events(rest)
    done = events[-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "cancelled"
    ckpt = checkpoint_path(out)
    assert ckpt.exists() and not out.exists()
    last_step = max((e.epoch, e.step) for e in events if isinstance(e, ev.StepEvent))
    # resume (allowed to lower --epochs) continues right after the last step done
    res = in_process(capsys, "train", dataset, "--candidate", "softseg", "--out", out, "--epochs", str(last_step[0] + 1),
                  "--resume", "--json-progress", *TINY)
    assert res.returncode == 0, res.stderr
    again = _events(res.stdout)
    first = next(e for e in again if isinstance(e, ev.StepEvent))
    expected = (last_step[0], last_step[1] + 1) if last_step[1] < first.steps else (last_step[0] + 1, 1)
    assert (first.epoch, first.step) == expected
    assert again[-1].reason == "completed" and out.exists() and not ckpt.exists()
    assert read_card(out).training.epochs == last_step[0] + 1


def _one_line_error(proc, text):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_inputs_exit_2_and_write_nothing(dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = softseg("train", empty, "--candidate", "softseg", "--out", tmp_path / "m.safetensors", "--json-progress")
    _one_line_error(proc, "empty dataset")
    err = _events(proc.stdout)[-1]
    assert isinstance(err, ev.ErrorEvent) and err.kind == "input"
    _one_line_error(
        in_process(capsys, "train", dataset, "--candidate", "softseg", "--out", tmp_path / "no" / "m.safetensors"),
        "does not exist",
    )
    _one_line_error(in_process(capsys, "train", dataset, "--candidate", "nope", "--out", tmp_path / "m.safetensors"), "nope")
    _one_line_error(
        in_process(capsys, "train", dataset, "--candidate", "softseg", "--out", tmp_path / "m.safetensors", "--crop", "4"),
        "--crop",
    )
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    _one_line_error(in_process(capsys, "predict", pt, dataset / "sub-01", "-o", tmp_path / "p1"), "PyTorch pickle")
    net = UNet2D(2, 1, depth=2, width=4)
    two = save_model(
        tmp_path / "two.safetensors", net,
        ModelCard(thresholds=(0.5,), channels=("flair", "t2"),
                  preprocessing={"spacing": (None, 1.0, 1.0), "crop": (16, 16)},
                  candidate={"name": "softseg", "activation": {"name": "sigmoid"}},
                  architecture={"name": "UNet2D", "config": net.config}),
    )
    _one_line_error(in_process(capsys, "predict", two, dataset / "sub-01", "-o", tmp_path / "p2"), "expects 2 channel(s)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "model.pt", "two.safetensors"]


@pytest.mark.slow
def test_torchrun_ddp_path_on_cpu(dataset, tmp_path):
    """``torchrun --nproc_per_node=1 -m softseg train`` (Gloo) trains and writes the model."""
    out = tmp_path / "ddp.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m", "softseg", "train",
         str(dataset), "--candidate", "softseg", "--out", str(out), "--epochs", "1", "--json-progress", *TINY],
        capture_output=True, text=True, env=ENV, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    done = [e for e in map(ev.from_json, proc.stdout.splitlines()) if e is not None][-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "completed"
    training = read_card(out).training
    assert training.distributed == "gloo" and training.world_size == 1


# ------------------------------------------------------------------ --config (issue 12 item 5)
CONFIG_ERRORS = [
    # (family, config document, text the one line names)
    ("wrong type: number as text", {"optim": {"lr": "0.01"}}, "optim.lr: Input should be a valid number"),
    ("wrong type: float for int", {"optim": {"epochs": 2.5}}, "optim.epochs: Input should be a valid integer"),
    ("wrong type: bool", {"augment": {"enabled": "yes"}}, "augment.enabled: Input should be a valid boolean"),
    ("wrong type: section", {"model": 3}, "model: Input should be an object"),
    ("wrong type: crop", {"data": {"crop": "128"}}, "data.crop: Input should be a valid array"),
    ("out of range: lr", {"optim": {"lr": 0}}, "optim.lr: Input should be greater than 0"),
    ("out of range: depth", {"model": {"depth": 9}}, "model.depth: Input should be less than or equal to 6"),
    ("out of range: dropout", {"model": {"dropout": 1.0}}, "model.dropout: Input should be less than 1"),
    ("out of range: spacing", {"data": {"spacing": [None, 0.001, 1]}},
     "data.spacing.1: Input should be greater than or equal to 0.01"),
    ("out of range: fractions", {"data": {"val_fraction": 0.6, "test_fraction": 0.5}},
     "data: val_fraction + test_fraction must stay below 1"),
    ("out of range: rotation", {"augment": {"rotation": 400}}, "augment.rotation: Input should be less than or equal to 180"),
    ("unknown key: top", {"epochs": 3}, "epochs: unknown key"),
    ("unknown key: nested", {"optim": {"learning_rate": 0.1}}, "optim.learning_rate: unknown key"),
    ("unknown value: candidate", {"candidate": "nope"}, "candidate: unknown candidate 'nope'"),
    ("unknown value: fusion", {"data": {"fusion": "vote"}}, "data.fusion: unknown fusion 'vote'"),
    ("unknown value: device", {"device": "gpu"}, "device: unknown device 'gpu'"),
]


@pytest.mark.parametrize(("family", "doc", "text"), CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_config_errors_are_one_line_exit_2_naming_the_key(dataset, tmp_path, capsys, family, doc, text):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(doc))
    proc = in_process(capsys, "train", dataset, "--out", tmp_path / "m.safetensors", "--config", cfg)
    _one_line_error(proc, f"{cfg}: {text}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"]  # nothing written


def test_config_file_problems_and_flag_errors(dataset, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    _one_line_error(in_process(capsys, "train", dataset, "--out", out, "--config", tmp_path / "none.json"),
                    "none.json: training configuration not found")
    bad = tmp_path / "bad.json"
    bad.write_text('{"optim": {"lr": 0.01')
    _one_line_error(in_process(capsys, "train", dataset, "--out", out, "--config", bad), "bad.json: not valid JSON")
    bad.write_text("[1, 2]")
    _one_line_error(in_process(capsys, "train", dataset, "--out", out, "--config", bad),
                    "bad.json: (top level): Input should be an object")
    # a flag out of range is named as an option, not as the file
    _one_line_error(in_process(capsys, "train", dataset, "--out", out, "--lr", "-1"),
                    "command-line options: optim.lr: Input should be greater than 0")


def test_config_layers_preset_file_flags(tmp_path):
    from softseg.cli import build_parser
    from softseg.cli.train import build_config
    from softseg.config import PRESETS

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"candidate": "conventional", "optim": {"lr": 0.01, "epochs": 7}}))
    parse = build_parser().parse_args
    c = build_config(parse(["train", "ds", "--out", "m.safetensors", "--preset", "quick", "--config", str(cfg),
                            "--epochs", "3"]))
    assert c.candidate == "conventional" and c.optim.lr == 0.01 and c.optim.epochs == 3
    assert c.model.width == PRESETS["quick"].model.width  # the preset's value, not overridden by the file
    assert build_config(parse(["train", "ds", "--out", "m.safetensors"])) == PRESETS["paper"]


def test_train_from_a_config_file_as_the_widget_writes_it(dataset, tmp_path, capsys):
    from softseg.config import TrainConfig

    config = TrainConfig.from_dict({"candidate": "softseg", "seed": 1, "device": "cpu",
                                    "data": {"crop": [32, 32], "val_fraction": 0.34},
                                    "model": {"depth": 3, "width": 4}, "optim": {"epochs": 1, "batch_size": 4}})
    path = config.to_json_file(tmp_path / "run.json")
    out = tmp_path / "m.safetensors"
    proc = in_process(capsys, "train", dataset, "--out", out, "--config", path, "--json-progress")
    assert proc.returncode == 0, proc.stderr
    assert read_card(out).training.config == config


# ------------------------------------------------------------------ softseg info (issue 16 item 3)
def test_info_prints_the_card(trained, capsys):
    from softseg.card import render_card

    model, _ = trained
    card = read_card(model)
    proc = in_process(capsys, "info", model)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == render_card(card, path=str(model)) + "\n"
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert lines["Candidate"].startswith("conventional (Hard-Sig-Dice): ground truth binarised at 0.5, sigmoid")
    assert lines["Classes"] == f"{card.classes[0]} (threshold {card.threshold:.2f})"
    assert lines["Raters"] == "1, 2, 3; fusion staple"
    assert lines["Training"].startswith("2 of 2 epochs (completed) in ")
    as_json = in_process(capsys, "info", model, "--json")
    assert as_json.returncode == 0 and ModelCard.model_validate_json(as_json.stdout) == card
    pt = model.parent / "x.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    _one_line_error(in_process(capsys, "info", pt), "PyTorch pickle")


# ------------------------------------------------------------------ lock (issue 13 item 12)
def test_a_second_train_on_the_same_output_is_refused(dataset, tmp_path, capsys):
    from softseg.training import output_lock

    out = tmp_path / "m.safetensors"
    with output_lock(out):
        proc = softseg("train", dataset, "--out", out, "--epochs", "1", *TINY)
    _one_line_error(proc, "another softseg train run is writing this model")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_predict_writes_all_outputs_or_none(trained, dataset, tmp_path, capsys):
    """Issue 13 #11: a bad later input (here an image whose values are NaN) leaves nothing, not
    even the output folder; the good case writes every prediction with its sidecar."""
    model, _ = trained
    good = nib.load(dataset / "sub-01" / "image.nii.gz")
    bad = tmp_path / "in" / "zz-bad.nii.gz"
    bad.parent.mkdir()
    nib.save(nib.Nifti1Image(np.full(good.shape, np.nan, np.float32), good.affine), bad)
    outdir = tmp_path / "preds"
    proc = in_process(capsys, "predict", model, dataset / "sub-01", bad, "-o", outdir)
    _one_line_error(proc, "NaN")
    assert not outdir.exists()
    proc = in_process(capsys, "predict", model, dataset / "sub-01", dataset / "sub-02", "-o", outdir)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["sub-01_pred.json", "sub-01_pred.nii.gz",
                                                        "sub-02_pred.json", "sub-02_pred.nii.gz"]
