"""Parts of the trainer: early stopping, the output lock, checkpoint files, the history CSV."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from softseg.errors import InputError
from softseg.training import (
    HISTORY_COLUMNS,
    EarlyStopping,
    checkpoint_path,
    history_path,
    lock_path,
    output_lock,
    write_history_csv,
)
from softseg.training.checkpoint import check_resume_config, read_checkpoint, write_checkpoint


def test_early_stopping_hand_computed():
    s = EarlyStopping(patience=2, min_delta=0.1)
    seq = [1.0, 0.95, 0.85, 0.9, float("nan"), 0.7]
    improved = [s.update(e, {"val_loss": v, "val_dice": 0.5}) for e, v in enumerate(seq, start=1)]
    # 1.0 first; 0.95 not < 0.9; 0.85 < 0.9; 0.9 no; NaN never; then patience 2 reached
    assert improved == [True, False, True, False, False, True]
    assert s.best == {"epoch": 6, "val_loss": 0.7, "val_dice": 0.5} and s.bad_epochs == 0
    t = EarlyStopping(patience=2, min_delta=0.0)
    for e, v in enumerate([1.0, 1.0, 1.0], start=1):
        t.update(e, {"val_loss": v})
    assert t.should_stop and t.best["epoch"] == 1
    u = EarlyStopping(patience=2, min_delta=0.0)
    u.load_state_dict(t.state_dict())
    assert u.should_stop and u.best == t.best
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0, min_delta=0.0)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(patience=1, min_delta=math.inf)


def test_output_lock_refuses_a_second_holder_in_another_process(tmp_path):
    out = tmp_path / "m.safetensors"
    code = textwrap.dedent(f"""
        from softseg.errors import InputError
        from softseg.training import output_lock
        try:
            with output_lock({str(out)!r}):
                print("acquired")
        except InputError as exc:
            print("refused:", exc)
    """)
    with output_lock(out) as path:
        assert path == lock_path(out) and path.exists()
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert other.stdout.startswith("refused: ") and "another softseg train run" in other.stdout
        with pytest.raises(InputError, match="another softseg train run is writing this model"):
            with output_lock(out):
                pass
    assert not lock_path(out).exists()
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "acquired"


def test_a_killed_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "m.safetensors"
    code = textwrap.dedent(f"""
        import os, signal, sys
        from softseg.training import output_lock
        with output_lock({str(out)!r}):
            print("held", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9 and proc.stdout.strip() == "held"
    with output_lock(out):  # the OS dropped the dead process's lock
        pass


def test_checkpoint_files(tmp_path):
    ckpt = checkpoint_path(tmp_path / "m.safetensors")
    assert ckpt.name == "m.checkpoint.safetensors"
    assert history_path(tmp_path / "m.safetensors").name == "m.history.csv"
    old = os.umask(0o022)
    try:
        write_checkpoint(ckpt, {"w": torch.arange(3.0)}, {"epoch": 2, "history": [{"val_loss": float("nan")}]})
    finally:
        os.umask(old)
    assert (ckpt.stat().st_mode & 0o777) == 0o644
    tensors, doc = read_checkpoint(ckpt)
    assert torch.equal(tensors["w"], torch.arange(3.0)) and doc["epoch"] == 2 and doc["version"] == 1
    assert doc["history"] == [{"val_loss": None}]  # strict JSON: NaN stored as null
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(InputError, match="not a softseg training checkpoint"):
        read_checkpoint(other)
    saved = {"seed": 0, "device": "cpu", "optim": {"lr": 0.001, "epochs": 2}}
    check_resume_config(saved, {"seed": 0, "device": "cuda", "optim": {"lr": 0.001, "epochs": 9}}, path=ckpt)
    with pytest.raises(InputError, match=r"different settings \(seed: 0 -> 1; optim.lr: 0.001 -> 0.01\)"):
        check_resume_config(saved, {"seed": 1, "device": "cpu", "optim": {"lr": 0.01, "epochs": 2}}, path=ckpt)


def test_history_csv_reads_back_exactly(tmp_path):
    rows = [{"epoch": 1, "loss": 0.1 + 0.2, "val_loss": float("nan"), "val_dice": 1 / 3, "val_soft_dice": 0.0,
             "lr": 1e-3, "elapsed_s": 1.5}]
    path = write_history_csv(tmp_path / "h.csv", rows)
    with open(path, newline="") as fh:
        (got,) = list(csv.DictReader(fh))
    assert tuple(got) == HISTORY_COLUMNS
    assert float(got["loss"]) == 0.1 + 0.2 and float(got["val_dice"]) == 1 / 3 and got["val_loss"] == ""
