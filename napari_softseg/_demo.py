"""The napari side of ``softseg demo``: open the phantom through the plugin's reader and dock
every widget of the manifest. The engine's CLI (:mod:`softseg.cli.demo`) validates the options
and calls :func:`launch`, so the engine itself never imports napari or Qt.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from softseg.errors import InputError

__all__ = ["PLUGIN", "dock_all_widgets", "launch", "open_phantom"]

PLUGIN = "napari-softseg"


def open_phantom(
    viewer, folder: Path, *, shape=None, seed: int = 0, n_raters: int = 4, overwrite: bool = False
):
    """Write a phantom into *folder* and open it in *viewer* with the plugin's reader.

    Returns the opened layers (image, soft truth, raters) and the display slice that shows the
    most lesion voxels (a good first view).
    """
    import numpy as np

    from softseg.phantom import DEFAULT_SHAPE, phantom, write_phantom_files
    from softseg.geometry import DisplayGeometry

    ph = phantom(tuple(shape) if shape else DEFAULT_SHAPE, n_raters=n_raters, seed=seed)
    paths = write_phantom_files(folder, ph, overwrite=overwrite)
    layers = []
    order = ["image", "truth"] + [f"rater-{r + 1}" for r in range(ph.n_raters)]
    for key in order:
        layers.extend(viewer.open(paths[key], plugin=PLUGIN))
    if len(layers) != len(order):
        raise InputError(f"{folder}: could not open the phantom files with the {PLUGIN} reader")
    for layer in layers[2:]:
        layer.visible = False  # image + soft truth shown; each rater one click away
    lesions = DisplayGeometry.from_affine(ph.affine, ph.shape).to_display(ph.lesions)
    if lesions.any():
        best = int(np.argmax((lesions > 0).sum(axis=(1, 2))))
    else:
        best = lesions.shape[0] // 2
    return layers, best


def dock_all_widgets(viewer, *, stream=sys.stderr) -> list[str]:
    """Dock every widget of the plugin manifest (tabbed); returns the names that opened."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN)
    docked: list[str] = []
    first = None
    for contribution in manifest.contributions.widgets or []:
        name = contribution.display_name
        try:
            dock, _widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=bool(docked))
        except Exception as exc:  # a broken widget must not take the demo down
            print(f"softseg demo: warning: could not open widget {name!r}: {exc}", file=stream)
            continue
        first = first or dock
        docked.append(name)
    if first is not None:
        first.show()
        first.raise_()
    return docked


def launch(args: argparse.Namespace) -> int:
    """Open the viewer for ``softseg demo`` (options already validated by the CLI)."""
    import napari
    from qtpy.QtWidgets import QApplication

    if args.data:
        folder = Path(args.data)
    else:
        folder = Path(tempfile.mkdtemp(prefix="softseg-demo-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)

    viewer = napari.Viewer(title="napari-softseg demo")
    viewer.window.resize(*args.size)
    layers, best_slice = open_phantom(
        viewer,
        folder,
        shape=args.shape,
        seed=args.seed,
        n_raters=args.raters,
        overwrite=args.overwrite,
    )
    viewer.layers.selection.active = layers[0]
    docked = [] if args.no_widgets else dock_all_widgets(viewer)
    viewer.dims.axis_labels = ("S", "P", "L")  # display axes point superior, posterior, left
    viewer.dims.set_current_step(0, best_slice)
    viewer.reset_view()
    print(
        f"softseg demo: phantom in {folder}; "
        f"layers: {', '.join(layer.name for layer in viewer.layers)}; "
        f"widgets: {', '.join(docked) if docked else 'none'}",
        file=sys.stderr,
    )
    if args.screenshot:
        for _ in range(5):
            QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        print(f"softseg demo: screenshot saved to {args.screenshot}", file=sys.stderr)
        return 0
    napari.run()
    return 0
