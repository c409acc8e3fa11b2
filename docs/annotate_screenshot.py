"""Screenshot of the "Soft annotation" dock for the user guide: ``docs/annotate.png``.

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/annotate_screenshot.py``

A 1600 x 1000 window, as on a laptop screen. The image is opened from disk with the plugin's
reader (axis labels, geometry), the dock from *Plugins > SoftSeg > Soft annotation*. Rater
"alice" paints three confidence levels on a few slices of the phantom's lesion through the
widget's layer and napari's own paint calls; rater "bob" left unsaved work in an earlier session,
which the banner at the top of the dock offers to restore.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "annotate.png"


def _settle(app, seconds: float = 0.4) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    import napari
    from PIL import Image as PILImage
    from qtpy.QtWidgets import QApplication

    from softseg.autosave import choose_recovery_folder, write_snapshot
    from softseg.confidence import ConfidenceScale
    from softseg.geometry import DisplayGeometry
    from softseg.io import save_volume
    from softseg.phantom import phantom

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp())
    os.environ["SOFTSEG_RECOVERY_DIR"] = str(tmp / "fallback")
    ph = phantom((120, 120, 40), n_raters=2, seed=0)
    image_path = tmp / "sub-01" / "T2w.nii.gz"
    image_path.parent.mkdir()
    save_volume(image_path, ph.image, affine=ph.affine)
    geom = DisplayGeometry.from_affine(ph.affine, ph.shape)
    truth = geom.to_display(ph.truth)
    levels = np.digitize(truth, [0.15, 0.5, 0.85]).astype(np.uint8)
    z = int(np.argmax((truth > 0.5).sum(axis=(1, 2))))
    # bob's earlier, never exported session
    bob_levels = np.zeros_like(levels)
    bob_levels[z - 1 : z + 2] = np.roll(levels[z - 1 : z + 2], 2, axis=2)
    write_snapshot(
        choose_recovery_folder(image_path).folder,
        "bob",
        bob_levels,
        session="b0b0b0b0",
        geometry=geom,
        scale=ConfidenceScale.from_paper(),
        now=time.time() - 3 * 3600,
    )

    viewer = napari.Viewer(title="napari-softseg: soft annotation")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.window._qt_window.move(0, 0)
    viewer.open(str(image_path), plugin="napari-softseg")
    _dock, ann = viewer.window.add_plugin_dock_widget("napari-softseg", "Soft annotation")
    ann._rater_id.value = "alice"
    alice = ann.add_rater_layer("alice")
    for dz in (-3, -1, 0, 2):
        for level in (1, 2, 3):
            idx = np.nonzero(levels[z + dz] == level)
            alice.data_setitem((np.full(idx[0].shape, z + dz), idx[0], idx[1]), level)
    alice.brush_size = 4
    ann.select_level(2)
    viewer.dims.current_step = (z, 0, 0)
    _settle(app, 0.5)
    # the camera on the lesion, which then fills about half of the canvas
    rows, cols = np.nonzero(truth[z] > 0.05)
    lo = alice.data_to_world((z, rows.min(), cols.min()))
    hi = alice.data_to_world((z, rows.max(), cols.max()))
    viewer.reset_view()
    viewer.camera.center = (0.0, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2)
    canvas = viewer.window._qt_viewer.canvas.native
    span = max(abs(hi[1] - lo[1]) / canvas.height(), abs(hi[2] - lo[2]) / canvas.width())
    viewer.camera.zoom = 0.5 / span
    ann._slices.refresh()
    # the status bar: the value under the cursor, as when the mouse rests on a medium voxel
    spot = np.argwhere(levels[z] == 2)[len(np.argwhere(levels[z] == 2)) // 3]
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(alice.data_to_world((z, *spot)))
    viewer.update_status_from_cursor()
    ann.flush_autosave()
    _settle(app, 1.5)
    # the notification toast (also offering Restore) would cover the canvas corner: close it
    from qtpy.QtWidgets import QWidget

    for w in viewer.window._qt_window.findChildren(QWidget):
        if type(w).__name__ == "NapariQtNotification":
            w.close()
    _settle(app, 0.5)
    rgba = viewer.screenshot(canvas_only=False, flash=False)
    img = PILImage.fromarray(rgba[..., :3])
    img.quantize(colors=200, method=PILImage.Quantize.MEDIANCUT).save(OUT, optimize=True)
    print(f"{OUT}: {img.size[0]}x{img.size[1]}, {OUT.stat().st_size // 1024} KB")
    ann.close_autosave()
    viewer.close()


if __name__ == "__main__":
    main()
