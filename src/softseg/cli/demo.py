"""``softseg demo``: napari with the plugin's widgets docked and the SoftSeg phantom loaded.

The phantom (:func:`softseg.datasets.phantom`) is written as NIfTI files into a folder and opened
through the plugin's own reader (``viewer.open(path, plugin="napari-softseg")``), so the layers
carry their file geometry and source paths exactly as a user's data would. Every dock widget
contributed in the plugin manifest is docked (tabbed together); a widget that fails to open is
reported on stderr and skipped.

napari, Qt and npe2 are imported inside :func:`run` so that ``softseg --help`` stays fast and
the engine never imports Qt.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from softseg.errors import InputError

__all__ = ["HELP", "add_arguments", "dock_all_widgets", "open_phantom", "run"]

HELP = "open napari with the SoftSeg phantom and the plugin's widgets docked"
PLUGIN = "napari-softseg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--screenshot",
        metavar="PNG",
        help="save a screenshot of the whole window to PNG and quit (headless under xvfb-run)",
    )
    parser.add_argument(
        "--shape",
        metavar=("X", "Y", "Z"),
        type=int,
        nargs=3,
        default=None,
        help="phantom grid in file order (default 96 96 32; Z is the axial slice axis)",
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom random seed (default 0)")
    parser.add_argument("--raters", type=int, default=4, help="number of raters (default 4)")
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="write the phantom files into DIR and keep them (default: a temporary folder "
        "removed when napari closes)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace phantom files already in DIR"
    )
    parser.add_argument(
        "--no-widgets", action="store_true", help="do not dock the plugin's widgets"
    )
    parser.add_argument(
        "--size",
        metavar=("W", "H"),
        type=int,
        nargs=2,
        default=(1600, 1000),
        help="window size in pixels (default 1600 1000)",
    )


def open_phantom(
    viewer, folder: Path, *, shape=None, seed: int = 0, n_raters: int = 4, overwrite: bool = False
):
    """Write a phantom into *folder* and open it in *viewer* with the plugin's reader.

    Returns the opened layers (image, soft truth, raters) and the display slice that shows the
    most lesion voxels (a good first view).
    """
    import numpy as np

    from softseg.datasets import DEFAULT_SHAPE, phantom, write_phantom_files
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


def run(args: argparse.Namespace) -> int:
    if args.raters < 1:
        raise InputError(f"--raters must be >= 1; got {args.raters}")
    if args.screenshot and not args.screenshot.lower().endswith(".png"):
        raise InputError(f"--screenshot {args.screenshot}: expected a .png file name")
    if args.screenshot:
        from softseg.io import check_writable

        check_writable(args.screenshot, overwrite=True)

    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and not os.environ.get("QT_QPA_PLATFORM")
    ):
        raise InputError(
            "no display found (DISPLAY is not set); run it under a virtual X server, e.g. "
            'xvfb-run -a -s "-screen 0 1600x1000x24" softseg demo --screenshot demo.png, '
            "or use make demo"
        )

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
