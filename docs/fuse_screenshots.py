"""Screenshots of the "Fuse raters" dock for the docs: ``docs/fuse.png`` and ``docs/fuse_classes.png``.

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/fuse_screenshots.py``

The dock is opened as a user opens it (*Plugins > SoftSeg > Fuse raters*, the wrapped viewer) in
a 1600 x 1000 window.

* ``fuse.png``: the phantom's four raters fused with STAPLE; the disagreement (entropy) under the
  STAPLE probability, both with titled colour bars; the rater table.
* ``fuse_classes.png``: the MNI sample (real T1, four raters x three tissue classes) fused with
  multi-label STAPLE; the fused label map in the class colours over the T1, one rater's confusion
  matrix.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent
SIZE = (1600, 1000)


def _settle(app, seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def _save(viewer, path: Path) -> None:
    """The whole window, quantised to a palette PNG to stay small."""
    from PIL import Image as PILImage

    rgba = viewer.screenshot(canvas_only=False, flash=False)
    img = PILImage.fromarray(rgba[..., :3])
    img.quantize(colors=200, method=PILImage.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {img.size[0]}x{img.size[1]}, {path.stat().st_size // 1024} KB")


def _fuse(app, widget, method: str) -> None:
    widget.method = method
    widget._run.native.click()
    while widget.busy:
        app.processEvents()
        time.sleep(0.01)
    assert widget.last_output is not None, widget._message.value


def _window(title: str):
    import napari

    viewer = napari.Viewer(title=title)
    viewer.window._qt_window.resize(*SIZE)
    viewer.window._qt_window.move(0, 0)
    return viewer


def binary(app) -> None:
    from napari_softseg._sample_data import phantom_layers

    viewer = _window("napari-softseg: fuse raters")
    for data, kwargs, kind in phantom_layers((96, 96, 32), n_raters=4, seed=0):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    for name in ("truth (soft)", "rater-1", "rater-2", "rater-3", "rater-4"):
        viewer.layers[name].visible = False
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softseg", "Fuse raters")
    widget.set_raters([viewer.layers[f"rater-{j}"] for j in range(1, 5)])
    _fuse(app, widget, "STAPLE")
    layers = widget.result_layers
    layers["disagreement"].visible = True
    fused = layers["fused"]
    z = int(np.argmax((np.asarray(fused.data) > 0.5).sum(axis=(1, 2))))
    viewer.dims.current_step = (z, 0, 0)
    viewer.reset_view()
    viewer.layers.selection.active = fused
    _settle(app, 1.0)
    _save(viewer, OUT / "fuse.png")
    viewer.close()


def classes(app) -> None:
    from napari_softseg._sample_data import mni_layers

    viewer = _window("napari-softseg: fuse tissue classes")
    for data, kwargs, kind in mni_layers():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    raters = [lyr for lyr in viewer.layers if lyr.name.startswith("rater-")]
    for lyr in viewer.layers:
        lyr.visible = lyr.name == "T1w"
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softseg", "Fuse raters")
    widget.set_raters(raters)
    _fuse(app, widget, "STAPLE")
    widget._confusion_rater.value = widget.last_output.names[1]
    fused = widget.result_layers["fused"]
    z = fused.data.shape[0] // 2 + 6
    viewer.dims.current_step = (z, 0, 0)
    viewer.reset_view()
    viewer.layers.selection.active = fused
    _settle(app, 1.0)
    _save(viewer, OUT / "fuse_classes.png")
    viewer.close()


def main() -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    binary(app)
    classes(app)


if __name__ == "__main__":
    main()
