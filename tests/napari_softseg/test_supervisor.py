"""The child-process supervisor of the Train widget, against a small scripted child.

The child here is a test fixture: a few lines of Python printing events in the documented
``softseg.events`` schema (and misbehaving on purpose). The widget tests drive the real
``softseg train``.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest

from napari_softseg._supervisor import (
    DeviceProbe,
    Prestarter,
    TrainingProcess,
    is_alive,
    supervise,
    train_argv,
)
from softseg import events as ev

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from softseg import events as ev

    mode = sys.argv[1]
    stop = []
    if mode != "stubborn":
        signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def emit(event):
        print(ev.to_json(event), flush=True)

    if mode == "crash":
        print("loading data", flush=True)
        emit(ev.StepEvent(epoch=1, epochs=2, step=1, steps=2, loss=0.5, eta_s=None))
        print("Traceback (most recent call last):", file=sys.stderr)
        print("softseg train: error: subject 'sub-01' has no rater files", file=sys.stderr)
        sys.exit(2)
    if mode == "nan":
        emit(ev.CheckpointEvent(epoch=1, path="ckpt.safetensors", reason="epoch"))
        emit(ev.ErrorEvent(epoch=2, kind="nan", message="loss became NaN; lower --lr",
                           checkpoint="ckpt.safetensors"))
        sys.exit(1)
    epochs = 2 if mode == "ok" else 10_000
    for epoch in range(1, epochs + 1):
        for step in (1, 2):
            if stop:
                emit(ev.CheckpointEvent(epoch=epoch - 1, path="ckpt.safetensors", reason="cancel"))
                emit(ev.DoneEvent(epoch=epoch - 1, epochs=epochs, reason="cancelled",
                                  best_epoch=None, best_val_loss=None, threshold=None,
                                  path=None, checkpoint="ckpt.safetensors", elapsed_s=0.1))
                sys.exit(0)
            print("a stray print from some library", flush=True)
            emit(ev.StepEvent(epoch=epoch, epochs=epochs, step=step, steps=2, loss=1.0 / epoch,
                              eta_s=1.0))
            time.sleep(0.02 if mode == "ok" else 0.05)
        emit(ev.ValEvent(epoch=epoch, val_loss=0.5 / epoch, val_dice=0.4, val_soft_dice=0.3))
    emit(ev.DoneEvent(epoch=epochs, epochs=epochs, reason="completed", best_epoch=2,
                      best_val_loss=0.25, threshold=0.45, path="model.safetensors",
                      checkpoint="ckpt.safetensors", elapsed_s=0.2))
    """
)


@pytest.fixture
def child(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def make(mode: str) -> TrainingProcess:
        return TrainingProcess([sys.executable, str(script), mode], cwd=tmp_path)

    return make


def _wait_for_step(proc: TrainingProcess) -> list[ev.Event]:
    got = []
    for event in proc.events():
        got.append(event)
        if isinstance(event, ev.StepEvent):
            return got
    raise AssertionError("child ended before its first step")


def test_train_argv_hands_the_config_file():
    argv = train_argv("data", config="run.json", out="m.safetensors", overwrite=True, python="py")
    assert argv == ["py", "-m", "softseg", "train", "data", "--config", "run.json", "--out",
                    "m.safetensors", "--overwrite", "--json-progress"]
    assert train_argv("d", config="c.json", out="m.safetensors", resume=True, python="py")[-2:] == [
        "--resume", "--json-progress"]
    # fine-tuning and uncorrected pre-annotations (mc-train's flags)
    assert train_argv("d", config="c.json", out="m.safetensors", init="parent.safetensors",
                      allow_preannotated=True, python="py")[-4:] == [
        "--init", "parent.safetensors", "--allow-preannotated", "--json-progress"]


def test_widget_config_round_trips_through_the_child_command_line(tmp_path):
    """What the Train widget builds is exactly what the child trains with: one typed config,
    handed over as a JSON file (no settings in argv)."""
    from softseg.cli import build_parser
    from softseg.cli.train import build_config
    from softseg.config import PRESETS

    cfg = PRESETS["paper"].updated({"candidate": "conventional", "optim": {"lr": 0.0123, "epochs": 7},
                                    "data": {"crop": [48, 48], "fusion": "staple"}})
    path = cfg.to_json_file(tmp_path / "run.json")
    argv = train_argv("data", config=path, out="m.safetensors", python="py")
    assert build_config(build_parser().parse_args(argv[3:-1])) == cfg


def test_completed_run_yields_typed_events_and_skips_stray_lines(child):
    proc = child("ok").start()
    got = list(proc.events())
    out = proc.outcome()
    assert [type(e).__name__ for e in got] == (
        ["StepEvent", "StepEvent", "ValEvent"] * 2 + ["DoneEvent"]
    )
    assert got[2].val_loss == 0.5 and got[5].val_loss == 0.25
    assert out.ok and out.returncode == 0 and out.error_line is None
    assert out.done.path == "model.safetensors" and out.done.threshold == 0.45
    assert not is_alive(proc.pid)


def test_cancel_asks_child_to_save_then_reaps_it(child):
    proc = child("long").start()
    _wait_for_step(proc)
    if sys.platform.startswith("linux"):  # background priority: the viewer wins the CPU
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(own + 10, 19)
    proc.stop(timeout=10.0)
    rest = list(proc.events())
    out = proc.outcome()
    assert out.cancelled and not out.killed and out.returncode == 0
    assert isinstance(rest[-1], ev.DoneEvent) and rest[-1].reason == "cancelled"
    assert out.checkpoint == "ckpt.safetensors"
    assert out.error_line is None
    assert not is_alive(proc.pid)


def test_stubborn_child_is_killed_after_timeout(child):
    proc = child("stubborn").start()
    _wait_for_step(proc)
    t0 = time.perf_counter()
    proc.stop(timeout=0.5)
    list(proc.events())  # stdout closes when the child dies
    out = proc.outcome()
    assert time.perf_counter() - t0 < 10
    assert out.killed and out.returncode == -signal.SIGKILL
    assert "killed" in out.error_line
    assert not is_alive(proc.pid)


def test_crash_reports_the_childs_error_line(child):
    proc = child("crash").start()
    list(proc.events())
    out = proc.outcome()
    assert out.returncode == 2 and not out.ok
    assert out.error_line == "softseg train: error: subject 'sub-01' has no rater files"


def test_error_event_wins_and_keeps_checkpoint(child):
    proc = child("nan").start()
    list(proc.events())
    out = proc.outcome()
    assert out.error.kind == "nan"
    assert out.error_line == "loss became NaN; lower --lr"
    assert out.checkpoint == "ckpt.safetensors"


def test_missing_interpreter_fails_cleanly(tmp_path):
    proc = TrainingProcess([str(tmp_path / "no-such-python"), "-m", "softseg"])
    with pytest.raises(FileNotFoundError):
        proc.start()
    assert proc.pid is None and not proc.running


def test_supervise_in_a_thread_worker(child, qtbot):
    from napari.qt.threading import thread_worker

    proc = child("ok")
    worker = thread_worker(supervise, start_thread=False)(proc)
    yielded, returned = [], []
    worker.yielded.connect(yielded.append)
    worker.returned.connect(returned.append)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        worker.start()
    assert len(yielded) == 7 and isinstance(yielded[-1], ev.DoneEvent)
    assert returned and returned[0].ok
    assert not is_alive(proc.pid)


# ------------------------------------------------------------------------------ prestarted runs
def test_prestarted_interpreter_runs_the_command_as_python_would(child, tmp_path):
    """A run handed to a waiting interpreter: same argv, working folder, events, exit status and
    priority as a fresh ``python`` (the test's child checks its own sys.argv and cwd)."""
    pre = Prestarter(modules=("json",)).start()
    try:
        assert pre.waiting
        waiting_pid = pre.pid
        proc = child("ok")
        proc._prestarter = pre
        proc.start()
        assert proc.prestarted and proc.pid == waiting_pid and not pre.waiting
        if sys.platform.startswith("linux"):
            own = os.getpriority(os.PRIO_PROCESS, 0)
            assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(own + 10, 19)
        got = list(proc.events())
        out = proc.outcome()
        assert [type(e).__name__ for e in got] == (
            ["StepEvent", "StepEvent", "ValEvent"] * 2 + ["DoneEvent"])
        assert out.ok and out.returncode == 0 and not is_alive(proc.pid)
        assert pre.handed_over == 1
        # nothing waits now: the next run starts a fresh interpreter
        second = child("ok")
        second._prestarter = pre
        second.start()
        assert not second.prestarted
        list(second.events())
        assert second.outcome().ok
    finally:
        pre.close()


def test_prestarted_run_sees_its_arguments_and_folder(tmp_path):
    script = tmp_path / "where.py"
    script.write_text("import os, sys\nprint(repr((sys.argv, os.getcwd())), file=sys.stderr)\n"
                      "sys.exit(3)\n")
    pre = Prestarter(modules=()).start()
    try:
        proc = TrainingProcess([sys.executable, str(script), "a b", "c"], cwd=tmp_path,
                               prestarter=pre).start()
        assert proc.prestarted
        list(proc.events())
        out = proc.outcome()
        assert out.returncode == 3
        assert out.error_line == repr(([str(script), "a b", "c"], str(tmp_path)))
    finally:
        pre.close()


def test_prestarted_module_run_and_cancel(tmp_path):
    """``python -m softseg ...`` through the waiting interpreter: the CLI itself runs (here a
    bad dataset: exit 2 with its one-line error), and the waiting interpreter is killed by close."""
    pre = Prestarter(modules=("softseg.cli",)).start()
    proc = TrainingProcess(train_argv(tmp_path / "missing", config=tmp_path / "c.json",
                                      out=tmp_path / "m.safetensors"), prestarter=pre).start()
    assert proc.prestarted
    list(proc.events())
    out = proc.outcome()
    assert out.returncode == 2 and out.error.kind == "input"
    assert out.error_line.endswith("c.json: training configuration not found")
    other = Prestarter(modules=()).start()
    pid = other.pid
    other.close()
    assert not other.waiting and not is_alive(pid)


def test_prestarter_only_takes_runs_of_its_interpreter(child):
    pre = Prestarter(modules=(), python=sys.executable).start()
    try:
        assert pre.hand_over(["/some/other/python", "-m", "softseg"]) is None
        assert pre.waiting  # still waiting for a run it can take
    finally:
        pre.close()


def test_device_probe_in_a_child_process():
    """The devices come from a child interpreter (this process need not import torch); the
    answer is what softseg.device says there."""
    probe = DeviceProbe().start()
    devices = probe.wait(timeout=300)
    assert probe.done and probe.error is None
    assert devices[-1] == "cpu" and all(isinstance(d, str) for d in devices)
    from softseg.device import available_devices

    assert devices == available_devices()


def test_device_probe_failure_falls_back_to_cpu(tmp_path):
    bad = tmp_path / "python-that-fails"
    bad.write_text("#!/bin/sh\necho 'torch: broken install' >&2\nexit 1\n")
    bad.chmod(0o755)
    probe = DeviceProbe(python=str(bad)).start()
    assert probe.wait(timeout=60) == ["cpu"] and probe.error == "torch: broken install"
