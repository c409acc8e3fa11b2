"""Does the viewer stay responsive while the Train and Predict widgets work? (issue 6)

A 10 ms ``QTimer`` probe runs in the main thread of a real napari viewer (shown, under Xvfb when
there is no display); every timeout records ``time.perf_counter()``. The largest gap between two
timeouts is the longest time the event loop could not react (a user would see a freeze of that
length). Target: **largest gap <= 100 ms** while

* ``train``: the Train widget trains from open layers (phantom, a few epochs, CPU) - click to
  ``finished``: the layers are snapshotted and written, the ``softseg train`` child runs, events
  stream in, curves are redrawn, the model is read;
* ``predict``: the Predict widget predicts a 197 x 233 x 189 volume with that model - click to
  ``finished``, including the snapshot and adding the result layer;

with two references measured in the same run:

* ``idle``: the same probe with the viewer idle, before and after the work (``idle_end``);
* ``concurrent_idle_viewer``: a second napari viewer process, idle, probing at the same time as
  each phase. The build machine is shared (2 cores, other jobs running), so this separates the
  load of the machine from what the widgets cost the event loop.

``--priority N`` runs the viewer at nice N (e.g. -10) to emulate a workstation where the viewer
does not compete with foreign jobs; the training child and the prediction thread stay 10 nice
levels below the viewer either way (that is the product's design, not a benchmark setting).

Run: ``xvfb-run -a .venv/bin/python benchmarks/gui_responsiveness.py`` (``make``-free; writes
``benchmarks/results/gui_responsiveness.json``). This task has no GPU: everything runs on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_MS = 100.0


class Probe:
    """Timestamps of a 10 ms QTimer in the main thread."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.stamps: list[float] = []
        self.labels: list[str] = []
        self.label = lambda: ""
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.stamps.append(time.perf_counter())
        self.labels.append(self.label())

    def start(self, label=None) -> None:
        """Start probing; *label* () -> str says what the widget was showing (for the worst gaps)."""
        self.label = label or (lambda: "")
        self.stamps = [time.perf_counter()]
        self.labels = ["start"]
        self.load_start = os.getloadavg()[0]
        self.timer.start()

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        self.stamps.append(time.perf_counter())
        self.labels.append("stop")
        stamps = np.asarray(self.stamps)
        gaps = np.diff(stamps) * 1000.0
        worst = np.argsort(gaps)[::-1][:5]
        # "while running": gaps that start after the first second and end before the last one,
        # i.e. without the click handler (napari creates its activity-dock entry there) and
        # without showing the result (napari inserts the new layer there).
        inner = (stamps >= stamps[0] + 1.0) & (stamps <= stamps[-1] - 1.0)
        return {
            "while_running": gap_stats(stamps[inner]),
            "worst_gaps": [
                {"ms": round(float(gaps[i]), 1),
                 "at_s": round(self.stamps[i + 1] - self.stamps[0], 2),
                 "before": self.labels[i][:90], "after": self.labels[i + 1][:90]}
                for i in worst
            ],
            "loadavg_1min": [round(self.load_start, 2), round(os.getloadavg()[0], 2)],
            "duration_s": round(self.stamps[-1] - self.stamps[0], 3),
            "ticks": int(gaps.size),
            "max_gap_ms": round(float(gaps.max()), 2),
            "p99_gap_ms": round(float(np.percentile(gaps, 99)), 2),
            "median_gap_ms": round(float(np.median(gaps)), 2),
            "gaps_over_100ms": int((gaps > 100.0).sum()),
        }


def gap_stats(stamps: np.ndarray) -> dict[str, float]:
    """Largest / p99 / median gap (ms) between consecutive probe timestamps."""
    gaps = np.diff(np.asarray(stamps)) * 1000.0
    if gaps.size == 0:
        return {"ticks": 0}
    return {
        "ticks": int(gaps.size),
        "max_gap_ms": round(float(gaps.max()), 2),
        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 2),
        "median_gap_ms": round(float(np.median(gaps)), 2),
        "gaps_over_100ms": int((gaps > 100.0).sum()),
    }


def reference_probe(out: str, stop_file: str) -> None:
    """Idle napari viewer probing its event loop until *stop_file* exists (separate process)."""
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_softseg._sample_data import phantom_layers

    viewer = napari.Viewer(show=True)
    for data, kwargs, kind in phantom_layers((96, 96, 32), n_raters=3, seed=0):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    probe = Probe()
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(200)
    poll.timeout.connect(lambda: Path(stop_file).exists() and loop.quit())
    poll.start()
    probe.start()
    Path(out + ".ready").write_text("ready")
    loop.exec()
    probe.timer.stop()
    np.save(out, np.asarray(probe.stamps))
    viewer.close()


def run_loop_until(signal=None, *, timeout_s: float) -> None:
    """Spin the Qt event loop until *signal* fires (or for *timeout_s* when None)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    if signal is not None:
        signal.connect(lambda *_: loop.quit())
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--shape", default="197,233,189", help="prediction volume (file order)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gui_responsiveness.json"))
    parser.add_argument("--priority", type=int, default=None,
                        help="nice value of the viewer process (see the module docstring)")
    parser.add_argument("--reference-probe", nargs=2, metavar=("OUT", "STOP"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_probe:
        reference_probe(*args.reference_probe)
        return
    if args.priority is not None:  # before any thread exists: every thread inherits it
        os.setpriority(os.PRIO_PROCESS, 0, args.priority)
    import subprocess
    import sys

    ref_dir = Path(tempfile.mkdtemp(prefix="softseg-bench-ref-"))
    ref_out, ref_stop = str(ref_dir / "stamps.npy"), str(ref_dir / "stop")
    reference = subprocess.Popen([sys.executable, __file__, "--reference-probe", ref_out, ref_stop])
    windows: dict[str, tuple[float, float]] = {}

    import napari
    import torch
    from qtpy.QtCore import QTimer

    from napari_softseg._sample_data import phantom_layers
    from napari_softseg.widgets.predict import PredictWidget
    from napari_softseg.widgets.train import TrainWidget
    from softseg.geometry import DisplayGeometry

    viewer = napari.Viewer(show=True)
    for data, kwargs, kind in phantom_layers((96, 96, 32), n_raters=3, seed=0):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    train = TrainWidget(viewer)
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    viewer.window.add_dock_widget(predict, name="Predict", tabify=True)
    run_loop_until(timeout_s=2.0)  # let the window settle
    t_wait = time.perf_counter()
    while not Path(ref_out + ".ready").exists() and time.perf_counter() - t_wait < 120:
        run_loop_until(timeout_s=0.5)
    run_loop_until(timeout_s=2.0)
    probe = Probe()
    results: dict[str, object] = {}

    # --- reference: idle viewer ------------------------------------------------------------
    probe.start()
    run_loop_until(timeout_s=args.idle_s)
    results["idle"] = probe.stop()
    windows["idle"] = (probe.stamps[0], probe.stamps[-1])
    print("idle   ", results["idle"], flush=True)

    # --- training from layers ----------------------------------------------------------------
    tmp = Path(tempfile.mkdtemp(prefix="softseg-bench-"))
    train.set_layers([viewer.layers["phantom image"]],
                     [viewer.layers[f"rater-{i}"] for i in (1, 2, 3)])
    train.epochs.value = args.epochs
    train.crop.value = 64
    train.device.value = "cpu"
    train.output.value = tmp / "bench.safetensors"
    t0 = time.perf_counter()
    probe.start(lambda: train.status.value)
    train.train_button.clicked.emit()
    run_loop_until(train.finished, timeout_s=900)
    stats = probe.stop()
    windows["train"] = (probe.stamps[0], probe.stamps[-1])
    wall = time.perf_counter() - t0
    outcome = train.outcome
    if outcome is None or not outcome.ok:
        raise SystemExit(f"training failed: {outcome}")
    stats.update({
        "wall_s": round(wall, 2),
        "epochs": outcome.done.epoch,
        "step_points": len(train.curves.train_y),
        "val_points": len(train.curves.val_y),
        "curve_full_draws": train.curves.draws,
        "curve_blits": train.curves.blits,
        "data": "phantom (96, 96, 32) from layers, 3 raters averaged, crop 64, depth 3, width 32, batch 8",
    })
    results["train"] = stats
    print("train  ", stats, flush=True)

    # --- prediction of a 197 x 233 x 189 volume ---------------------------------------------------
    shape = tuple(int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(0)
    from scipy import ndimage

    vol = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    geo = DisplayGeometry.from_affine(affine, shape)
    image = viewer.add_image(geo.to_display(vol), name="big", **{
        k: v for k, v in geo.layer_kwargs().items()})
    predict.models.value = (train.model_path,)
    predict.set_images([image])
    predict.device.value = "cpu"
    run_loop_until(timeout_s=1.0)
    t0 = time.perf_counter()
    probe.start(lambda: predict.status.value)
    predict.run_button.clicked.emit()
    run_loop_until(predict.finished, timeout_s=900)
    stats = probe.stop()
    windows["predict"] = (probe.stamps[0], probe.stamps[-1])
    wall = time.perf_counter() - t0
    if predict.last_error is not None or not predict.last_layers:
        raise SystemExit(f"prediction failed: {predict.last_error}")
    stats.update({"wall_s": round(wall, 2), "shape": list(shape),
                  "result_shape": list(predict.last_layers[0].data.shape)})
    results["predict"] = stats
    print("predict", stats, flush=True)

    # --- reference: napari's own cost of adding a layer of that size (no widget involved) -------
    pred = predict.last_layers[0]
    kwargs = {"scale": pred.scale, "translate": pred.translate, "colormap": pred.colormap,
              "contrast_limits": (0.0, 1.0), "metadata": dict(pred.metadata)}
    data = np.array(pred.data, copy=True)
    run_loop_until(timeout_s=1.0)
    probe.start()
    QTimer.singleShot(300, lambda: viewer.add_image(data, name="plain add_image", **kwargs))
    run_loop_until(timeout_s=2.0)
    results["napari_add_layer_reference"] = probe.stop()
    windows["napari_add_layer_reference"] = (probe.stamps[0], probe.stamps[-1])
    print("add    ", results["napari_add_layer_reference"], flush=True)

    # --- reference again at the end (the machine's load changes during the run) ------------------
    probe.start()
    run_loop_until(timeout_s=args.idle_s)
    results["idle_end"] = probe.stop()
    windows["idle_end"] = (probe.stamps[0], probe.stamps[-1])
    Path(ref_stop).write_text("stop")
    reference.wait(timeout=120)
    ref = np.load(ref_out)
    concurrent = {}
    for name, (lo, hi) in windows.items():
        concurrent[name] = gap_stats(ref[(ref >= lo) & (ref <= hi)])
    print("idle   ", results["idle_end"], flush=True)

    out = {
        "benchmark": "gui_responsiveness",
        "probe": "10 ms QTimer in the napari main thread; gap = time between two timeouts",
        "target_max_gap_ms": TARGET_MS,
        "notes": [
            "2-core machine shared with other jobs: see loadavg_1min per phase and the "
            "concurrent idle viewer, which suffers the same foreign load",
            "under Xvfb napari renders with Mesa llvmpipe (software OpenGL): napari's animated "
            "'in progress' indicator of the activity dock, shown while any progress bar runs, "
            "makes Qt recompose the window in software (~30% of a core during a run)",
        ],
        "results": results,
        "concurrent_idle_viewer": concurrent,
        "viewer_nice": os.getpriority(os.PRIO_PROCESS, 0),
        "pass": {
            k: results[k]["max_gap_ms"] <= TARGET_MS for k in ("train", "predict")
        },
        "ratio_max_gap_vs_idle": {
            k: round(results[k]["max_gap_ms"]
                     / max(results["idle"]["max_gap_ms"], results["idle_end"]["max_gap_ms"]), 2)
            for k in ("train", "predict")
        },
        "ratio_max_gap_vs_concurrent_idle_viewer": {
            k: round(results[k]["max_gap_ms"] / concurrent[k]["max_gap_ms"], 2)
            for k in ("train", "predict") if concurrent[k].get("max_gap_ms")
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "napari": napari.__version__,
            "gpu": "none in this task (CPU only); GPU throughput/memory-after-cancel not measured",
            "display": os.environ.get("DISPLAY", ""),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["pass"]), "->", args.out)
    viewer.close()


if __name__ == "__main__":
    main()
