"""Click *Train* -> first progress shown: how long, and what the time is spent on (issue 11:
first progress event shown <= 5 s; report what the wait is made of).

What a person does: open the phantom's layers, open *Plugins > SoftSeg > Train* (Plugins-menu
path), keep the **quick** preset (the CPU default) and click *Train*. Each run is stopped
(Cancel) once its first training step has arrived, so only the start is measured.

Two ways of starting, alternated in one process (the machine is shared, so the load is recorded):

* ``prestarted`` — what the dock does: an interpreter that has already imported torch and the
  trainer (:class:`napari_softseg._supervisor.Prestarter`) waits for the click;
* ``fresh`` (reference) — a new ``python -m softseg train`` process per click (the dock without
  its waiting interpreter).

Per run, seconds after the click (:attr:`TrainWidget.timings`): ``status_shown`` (the dock's
first status line, set in the click handler), ``data_written`` (layers written as the dataset
folder), ``process_started``, ``first_event`` (first progress line of the child),
``first_step`` (first training step) and ``first_shown`` (first progress drawn in the dock).
Ratios: fresh / prestarted of ``first_step``.

Run: ``xvfb-run -a .venv/bin/python benchmarks/train_start.py``; writes
``benchmarks/results/train_start.json``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import load_average, machine, save_result  # noqa: E402

SHAPE = (96, 96, 32)  # phantom file order (X, Y, Z): display 32 x 96 x 96
REPEATS = 2  # runs per mode
PRESTART_WAIT_S = 40.0  # time a user spends on the form before clicking (imports finish)
TARGET_S = 5.0
MARKS = ("data_written", "process_started", "first_event", "first_step", "first_shown")


def _pump(app, until, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.01)
    return False


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_softseg._sample_data import phantom_layers

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="train-start-"))
    load_start = load_average()
    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    for data, kwargs, kind in phantom_layers(SHAPE, n_raters=3, seed=1):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softseg", "Train")
    assert widget.preset.value == "quick", widget.preset.value
    widget.set_layers([viewer.layers["phantom image"]],
                      [viewer.layers[f"rater-{i}"] for i in (1, 2, 3)])
    widget.device.value = "cpu"
    pre = widget._prestarter
    start_prestarter = pre.start
    runs: list[dict] = []
    for i in range(2 * REPEATS):
        mode = ("prestarted", "fresh")[i % 2]
        if mode == "fresh":
            pre.close()
            pre.start = lambda: pre  # the dock's automatic prestart is off for this run
        else:
            pre.start = start_prestarter
            pre.start()
            _pump(app, lambda: False, PRESTART_WAIT_S)
        widget.output.value = tmp / f"run-{i}.safetensors"
        done: list[object] = []
        widget.finished.connect(done.append)
        click_load = load_average()[0]
        widget.start()
        t0 = widget.timings["click"]
        status_shown = time.perf_counter() - t0  # the click handler set the first status line
        ok = _pump(app, lambda: "first_step" in widget.timings, 600.0)
        _pump(app, lambda: "first_shown" in widget.timings, 5.0)
        widget.cancel()
        _pump(app, lambda: bool(done), 120.0)
        widget.finished.disconnect(done.append)
        rec = {"mode": mode, "prestarted": bool(widget.process and widget.process.prestarted),
               "load_1min_at_click": click_load, "reached_first_step": ok,
               "status_shown": status_shown}
        rec.update({m: widget.timings[m] - t0 for m in MARKS if m in widget.timings})
        runs.append(rec)
        print(rec, flush=True)
    viewer.close()

    def med(mode: str, mark: str) -> float | None:
        vals = [r[mark] for r in runs if r["mode"] == mode and mark in r]
        return statistics.median(vals) if vals else None

    summary = {mode: {m: med(mode, m) for m in ("status_shown", *MARKS)}
               for mode in ("prestarted", "fresh")}
    pre_step, fresh_step = summary["prestarted"]["first_step"], summary["fresh"]["first_step"]
    result = {
        "benchmark": "train_start",
        "what": "seconds from the Train click to each stage, quick preset, phantom "
                f"{SHAPE} (file order), CPU; prestarted interpreter vs a fresh process",
        "target_s": TARGET_S,
        "machine": machine(load_average_start=load_start, load_average_end=load_average()),
        "median": summary,
        "ratio_fresh_to_prestarted_first_step": (fresh_step / pre_step
                                                 if pre_step and fresh_step else None),
        "status_shown_meets_target": all(r["status_shown"] <= TARGET_S for r in runs),
        "first_step_meets_target_prestarted": bool(pre_step is not None and pre_step <= TARGET_S),
        "runs": runs,
    }
    out = save_result(Path(__file__).parent / "results" / "train_start.json", result)
    print(out)
    for mode, vals in summary.items():
        print(mode, {k: None if v is None else round(v, 2) for k, v in vals.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
