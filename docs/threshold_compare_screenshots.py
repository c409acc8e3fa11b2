"""Screenshots of the Threshold and Compare candidates docks on a 3-class prediction, for the docs:
``docs/threshold_classes.png`` and ``docs/compare_classes.png``.

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/threshold_compare_screenshots.py``

Two small 3-class models (``softseg`` and ``conventional`` candidates, grey matter / white matter /
CSF) are trained on a 4-subject MNI dataset at 4 mm (``softseg.anatomy.write_dataset``; 150
epochs on the CPU, cached in ``$SOFTSEG_SHOTS`` or a temporary folder) and predict the MNI
sample subject (not in their training set) through the Predict dock's code path
(``start_prediction``). The docks are opened as a user opens them (*Plugins > SoftSeg*, the
wrapped viewer) in a 1600 x 1000 window.

* ``threshold_classes.png``: the ``softseg`` model's K-class prediction as one entry, one slider
  per class starting at the class's threshold from the model card, the contour overlays in the
  class colours, per-class readouts against the soft truth and the per-class Dice/volume curves.
* ``compare_classes.png``: both models compared (argmax, the label-fusion paper's binarisation)
  against the per-class soft truth; the grey-matter table and its plots; the ``conventional`` model's
  argmax labels over the T1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuse_screenshots import _save, _settle, _window  # the docs' screenshot helpers (1600 x 1000)

OUT = Path(__file__).parent
SPACING = 4.0
CANDIDATES = ("softseg", "conventional")


def models(folder: Path) -> list[Path]:
    """Train (once) the two 3-class models on a small MNI dataset."""
    from softseg.anatomy import write_dataset

    ds = folder / "ds"
    if not ds.exists():
        write_dataset(ds, n_subjects=4, n_raters=2, spacing=SPACING, seed=0)
    paths = []
    for cand in CANDIDATES:
        path = folder / f"{cand}.safetensors"
        if not path.exists():
            subprocess.run(
                [sys.executable, "-m", "softseg", "train", str(ds), "--out", str(path),
                 "--candidate", cand, "--epochs", "150", "--crop", "48", "--width", "8",
                 "--depth", "3", "--batch-size", "8", "--val-fraction", "0.25",
                 "--device", "cpu", "--no-augment", "--overwrite"], check=True)
        paths.append(path)
    return paths


def _predicted_viewer(app, paths: list[Path]):
    from napari_softseg._prediction import start_prediction
    from napari_softseg._sample_data import mni_layers

    viewer = _window("napari-softseg: thresholds and comparison of 3 tissue classes")
    for data, kwargs, kind in mni_layers(spacing=SPACING):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    done: list = []
    start_prediction(viewer, [str(p) for p in paths], [viewer.layers["T1w"]], device="cpu",
                     on_done=lambda layers, error: done.append(error))
    while not done:
        app.processEvents()
        time.sleep(0.02)
    assert done[0] is None, done[0]
    for lyr in viewer.layers:
        lyr.visible = lyr.name == "T1w"
    return viewer


def threshold(app, paths: list[Path]) -> None:
    viewer = _predicted_viewer(app, paths)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softseg", "Threshold")
    title = next(widget.layer_list.item(i).text() for i in range(widget.layer_list.count())
                 if "softseg" in widget.layer_list.item(i).text())
    widget.style_combo.setCurrentText("contour")  # the anatomy stays visible
    widget.select_layers([title])
    widget.reference_combo.setCurrentText("truth (3 classes)")
    end = time.perf_counter() + 60
    while not widget.curves_ready and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)
    widget.update_readouts()
    z = viewer.layers["T1w"].data.shape[0] // 2 + 2
    viewer.dims.current_step = (z, 0, 0)
    viewer.reset_view()
    _settle(app, 1.0)
    widget.plot.draw()
    _settle(app, 0.5)
    _save(viewer, OUT / "threshold_classes.png")
    viewer.close()


def comparison(app, paths: list[Path]) -> None:
    viewer = _predicted_viewer(app, paths)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softseg", "Compare candidates")
    titles = [widget.prediction_list.item(i).text() for i in range(widget.prediction_list.count())]
    widget.choose(reference="truth (3 classes)", predictions=titles)
    widget.run()
    while widget.comparison is None or widget._worker is not None:
        if widget.last_error:
            raise RuntimeError(widget.last_error)
        app.processEvents()
        time.sleep(0.02)
    widget.class_combo.setCurrentText("grey matter")
    labels = next(ly for ly in viewer.layers if ly.name.endswith("conventional · labels"))
    labels.visible = True
    labels.opacity = 0.5
    z = viewer.layers["T1w"].data.shape[0] // 2 + 2
    viewer.dims.current_step = (z, 0, 0)
    viewer.reset_view()
    _settle(app, 1.0)
    _save(viewer, OUT / "compare_classes.png")
    viewer.close()


def main() -> None:
    from qtpy.QtWidgets import QApplication

    folder = Path(os.environ.get("SOFTSEG_SHOTS") or tempfile.mkdtemp(prefix="softseg-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = models(folder)
    app = QApplication.instance() or QApplication([])
    threshold(app, paths)
    comparison(app, paths)


if __name__ == "__main__":
    main()
