"""How fast does the Threshold overlay follow the slider, and how fast is the Compare table?
(issue 7)

In a real napari viewer (shown, under Xvfb when there is no display), on a 197 x 233 x 189 soft
prediction (the SoftSeg phantom's partial-volume truth, smoothed):

* ``threshold``: ``slider.setValue(v)`` (what a drag emits) -> the overlay Labels layer is
  rewritten in place and refreshed -> Qt events processed -> the canvas repainted
  synchronously. Target: **median <= 30 ms**.
* ``contrast``: napari's own contrast-limit change on the same soft layer, timed the same way
  (the reference measured in the same run).
* ``compare``: the metrics table + plot data of 3 candidates of that size
  (:func:`softseg.compare.compare_predictions`, what the Compare widget runs in its worker),
  wall and CPU time; and the Compare widget end to end (click -> table and figures shown).
  Target: **<= 2 s**.

Run: ``xvfb-run -a .venv/bin/python benchmarks/threshold_latency.py`` (writes
``benchmarks/results/threshold_latency.json``). The machine's load average is recorded: the
machine is shared, so wall times depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

SHAPE = (197, 233, 189)
TARGET_SLIDER_MS = 30.0
TARGET_TABLE_S = 2.0


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "median_ms": round(float(np.median(a)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2),
            "min_ms": round(float(a.min()), 2), "max_ms": round(float(a.max()), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="slider moves to time")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "threshold_latency.json"))
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage

    from napari_softseg.widgets.compare import CompareWidget
    from napari_softseg.widgets.threshold import ThresholdWidget
    from softseg import compare, metrics
    from softseg.phantom import phantom

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    ph = phantom(SHAPE, n_raters=4, seed=0)
    phantom_s = time.perf_counter() - t0
    truth = ph.truth
    preds = {
        "smooth": np.clip(ndimage.gaussian_filter(truth, 1.5), 0, 1).astype(np.float32),
        "soft": np.clip(ndimage.gaussian_filter(truth, 0.7), 0, 1).astype(np.float32),
        "hard": (truth >= 0.5).astype(np.float32),
    }

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.add_image(ph.image, name="image", scale=ph.spacing)
    viewer.add_image(truth, name="truth", scale=ph.spacing)
    for name, p in preds.items():
        viewer.add_image(p, name=name, scale=ph.spacing, colormap="magma", blending="additive",
                         metadata={"softseg_prediction": {"threshold": 0.5}})
    viewer.dims.set_point(0, SHAPE[0] // 2 * ph.spacing[0])
    widget = ThresholdWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Threshold")
    widget.select_layers(["soft"])
    canvas = viewer.window._qt_viewer.canvas._scene_canvas.native
    app = QApplication.instance()
    for _ in range(5):
        app.processEvents()

    stages: dict[str, list[tuple[float, float, float]]] = {"slider": [], "contrast": []}

    def timed(action, kind: str) -> float:
        app.processEvents()  # anything pending (e.g. the resting readouts) runs before timing
        start = time.perf_counter()
        action()  # the handler: overlay rewritten in place + layer refreshed (or clims set)
        t1 = time.perf_counter()
        app.processEvents()  # Qt/napari events, widget repaints
        t2 = time.perf_counter()
        canvas.repaint()  # synchronous GL paint: the overlay is on screen when this returns
        t3 = time.perf_counter()
        stages[kind].append(((t1 - start) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
        return (t3 - start) * 1000.0

    values = np.round(np.linspace(0.05, 0.95, args.repeats), 2)
    values = np.concatenate([values[::2], values[1::2][::-1]])  # jumps both ways
    layer = viewer.layers["soft"]
    overlay = viewer.layers["soft [threshold]"]
    slider_ms, contrast_ms = [], []
    for k, v in enumerate(values):
        slider_ms.append(timed(lambda v=v: widget.slider.setValue(float(v)), "slider"))
        assert np.array_equal(overlay.data.astype(bool), preds["soft"] >= np.float32(v))
        hi = 0.5 + 0.5 * (k % 2)
        contrast_ms.append(timed(lambda hi=hi: setattr(layer, "contrast_limits", (0.0, hi)),
                                 "contrast"))
    compute_ms = []  # the numpy part alone: binarise 8.7 M voxels in place
    for v in values[:10]:
        s = time.perf_counter()
        metrics.binarize(preds["soft"], float(v), out=overlay.data.view(np.bool_), checked=True)
        compute_ms.append((time.perf_counter() - s) * 1000.0)

    # ---------------------------------------------------------------- compare table
    engine = []
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        compare.compare_predictions(preds, truth, thresholds=0.5, raters=ph.raters,
                                    spacing=ph.spacing)
        engine.append({"wall_s": round(time.perf_counter() - w0, 3),
                       "cpu_s": round(time.process_time() - c0, 3)})
    one_thread = []
    for _ in range(2):
        w0 = time.perf_counter()
        compare.compare_predictions(preds, truth, thresholds=0.5, raters=ph.raters,
                                    spacing=ph.spacing, max_workers=1)
        one_thread.append(round(time.perf_counter() - w0, 3))

    cw = CompareWidget(viewer)
    viewer.window.add_dock_widget(cw, name="Compare")
    for i, r in enumerate(ph.raters):
        viewer.add_labels(r, name=f"rater-{i + 1}", scale=ph.spacing)
    cw.choose(image="image", reference="truth", predictions=list(preds),
              raters=[f"rater-{i + 1}" for i in range(ph.raters.shape[0])])
    widget_s = []
    for _ in range(2):
        cw.comparison = None
        start = time.perf_counter()
        cw.run()
        while cw.comparison is None or cw._worker is not None:
            app.processEvents()
            time.sleep(0.002)
        app.processEvents()
        widget_s.append(round(time.perf_counter() - start, 3))

    slider = _stats(slider_ms)
    contrast = _stats(contrast_ms)
    best_engine = min(e["wall_s"] for e in engine)
    result = {
        "benchmark": "threshold_latency",
        "shape": list(SHAPE),
        "voxels": int(np.prod(SHAPE)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": [round(x, 2) for x in load_start],
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "phantom_seconds": round(phantom_s, 2),
        "threshold_slider": {**slider, "target_median_ms": TARGET_SLIDER_MS,
                             "meets_target": slider["median_ms"] <= TARGET_SLIDER_MS},
        "napari_contrast_limits": contrast,
        "ratio_slider_to_contrast": round(slider["median_ms"] / contrast["median_ms"], 2),
        "median_stage_ms": {
            kind: dict(zip(("handler", "qt_events", "gl_repaint"),
                           (round(float(x), 2) for x in np.median(np.asarray(v), axis=0))))
            for kind, v in stages.items()},
        "binarize_in_place_ms": _stats(compute_ms),
        "compare_table_3_candidates": {
            "engine_runs": engine,
            "engine_best_wall_s": best_engine,
            "engine_one_thread_wall_s": one_thread,
            "widget_end_to_end_s": widget_s,
            "target_s": TARGET_TABLE_S,
            "meets_target": best_engine <= TARGET_TABLE_S,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
