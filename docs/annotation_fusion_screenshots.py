"""Screenshots of the "Soft annotation" and "Fuse raters" widgets for the README.

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/annotation_fusion_screenshots.py``
Writes ``docs/annotate.png`` and ``docs/fuse.png``.

Two raters annotate the SoftSeg phantom with confidence levels: level 3 (high) where the partial
volume is almost complete, level 2 (medium) on partial voxels, level 1 (low) on the faint border.
The strokes go through the widget's rater layers and napari's own paint/fill calls, like a rater's.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent


def _settle(app, seconds: float = 0.4) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def _save_small(viewer, path: Path) -> None:
    """Screenshot of the whole window, quantised to a palette PNG to stay small."""
    from PIL import Image as PILImage

    rgba = viewer.screenshot(canvas_only=False, flash=False)
    img = PILImage.fromarray(rgba[..., :3])
    img.quantize(colors=200, method=PILImage.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {img.size[0]}x{img.size[1]}, {path.stat().st_size // 1024} KB")


def _focus(viewer, layer, truth_slice: np.ndarray) -> None:
    """Centre the camera on the labelled part of the slice and zoom so it fills the canvas."""
    rows, cols = np.nonzero(truth_slice > 0.05)
    lo = layer.data_to_world((0, rows.min(), cols.min()))
    hi = layer.data_to_world((0, rows.max(), cols.max()))
    viewer.reset_view()
    viewer.camera.center = (0.0, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2)
    canvas = viewer.window._qt_viewer.canvas.native
    span = max(abs(hi[1] - lo[1]) / canvas.height(), abs(hi[2] - lo[2]) / canvas.width())
    viewer.camera.zoom = 0.92 / span


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from softseg.confidence import ConfidenceScale
    from softseg.phantom import phantom
    from softseg.io import save_volume

    from napari_softseg.widgets.annotate import AnnotateWidget
    from napari_softseg.widgets.fuse import FuseWidget

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp())
    os.environ["SOFTSEG_RECOVERY_DIR"] = str(tmp / "fallback")
    ph = phantom((96, 96, 32), n_raters=4, seed=0)
    save_volume(tmp / "image.nii.gz", ph.image, affine=ph.affine)

    viewer = napari.Viewer(title="napari-softseg: soft annotation")
    viewer.window._qt_window.resize(1700, 950)
    viewer.open(str(tmp / "image.nii.gz"), plugin="napari-softseg")
    ann = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(ann, name="Soft annotation", area="right")
    image = viewer.layers["image"]
    geom_layer = image
    from softseg.geometry import DisplayGeometry

    geom = DisplayGeometry.from_metadata(geom_layer.metadata)
    truth = geom.to_display(ph.truth)
    z = int(np.argmax((truth > 0.5).sum(axis=(1, 2))))  # the fullest axial slice

    # rater "alice": three confidence levels from the partial volume of the phantom
    alice = ann.add_rater_layer("alice")
    levels = np.digitize(truth, [0.15, 0.5, 0.85]).astype(np.uint8)
    for level in (1, 2, 3):
        idx = np.nonzero(levels[z - 2 : z + 3] == level)
        alice.data_setitem((idx[0] + z - 2, idx[1], idx[2]), level)
    # rater "bob": the paper's scale, a bit more generous, painted with napari's brush
    bob = ann.add_rater_layer("bob")
    ann.set_scale(ConfidenceScale.from_paper(), layer=bob)
    shifted = np.roll(levels, 2, axis=2)
    for level in (1, 2, 3):
        idx = np.nonzero(shifted[z] == level)
        bob.data_setitem((np.full(idx[0].shape, z), idx[0], idx[1]), level)
    bob.visible = False
    viewer.layers.selection.active = alice
    ann._layer.value = alice
    ann.select_level(2)
    viewer.dims.current_step = (z, 0, 0)
    _focus(viewer, alice, truth[z])
    # status bar: the value under the cursor, as when the mouse rests on a medium voxel
    spot = np.argwhere(levels[z] == 2)[len(np.argwhere(levels[z] == 2)) // 3]
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(alice.data_to_world((z, *spot)))
    viewer.update_status_from_cursor()
    ann.flush_autosave()
    _settle(app, 1.0)
    _save_small(viewer, OUT / "annotate.png")
    ann.close_autosave()

    # fusion of the phantom's four raters
    viewer2 = napari.Viewer(title="napari-softseg: fuse raters")
    viewer2.window._qt_window.resize(1700, 950)
    from napari_softseg._sample_data import phantom_layers

    for data, kwargs, kind in phantom_layers((96, 96, 32), n_raters=4, seed=0):
        getattr(viewer2, f"add_{kind}")(data, **kwargs)
    for name in ("truth (soft)", "rater-1", "rater-2", "rater-3", "rater-4"):
        viewer2.layers[name].visible = False
    fuse = FuseWidget(viewer2)
    viewer2.window.add_dock_widget(fuse, name="Fuse raters", area="right")
    fuse.set_raters([lyr for lyr in viewer2.layers if lyr.name.startswith("rater-")])
    fuse.method = "STAPLE"
    fuse.run()
    while fuse.busy:
        app.processEvents()
        time.sleep(0.01)
    # consensus as a green outline over the map of where the raters disagree
    fuse.result_layers["disagreement"].visible = True
    fuse.result_layers["fused"].contour = 1
    viewer2.layers.selection.active = fuse.result_layers["fused"]
    viewer2.dims.current_step = (z, 0, 0)
    _focus(viewer2, fuse.result_layers["fused"], truth[z])
    _settle(app, 1.0)
    _save_small(viewer2, OUT / "fuse.png")
    viewer.close()
    viewer2.close()


if __name__ == "__main__":
    main()
