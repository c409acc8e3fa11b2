"""The napari side of ``softseg demo``: open the sample data through the plugin's reader and dock
every widget of the manifest. The engine's CLI (:mod:`softseg.cli.demo`) validates the options
and calls :func:`launch`, so the engine itself never imports napari or Qt.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from softseg.errors import InputError

__all__ = ["PLUGIN", "dock_all_widgets", "launch", "open_mni", "open_phantom"]

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


def _copy_files(source: Path, folder: Path, *, overwrite: bool) -> None:
    """Copy a cached subject's NIfTI files and sidecars into *folder* (checked before copying)."""
    from softseg.io import check_writable

    names = sorted(p.name for p in source.iterdir() if p.name.endswith((".nii.gz", ".json"))
                   and p.name != "subject.json")
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        check_writable(folder / name, overwrite=overwrite)
    for name in names:
        shutil.copyfile(source / name, folder / name)


def open_mni(
    viewer,
    folder: Path,
    *,
    seed: int = 0,
    target: str = "tissue",
    spacing: float | Sequence[float] | None = None,
    n_raters: int = 4,
    overwrite: bool = False,
):
    """Open a cached MNI subject (generated on first use) from a copy in *folder*.

    Returns the layers (``T1w``, ``truth · <class>`` ..., ``rater-<id> · <class>`` ...), the
    display slice to show first (the one with the most lesion, else the largest brain
    cross-section) and whether the subject came from the cache.
    """
    import numpy as np
    from napari.layers import Layer

    from softseg.anatomy import DEFAULT_SPACING, TARGETS, cached_subject

    from napari_softseg._sample_data import subject_layers

    source, hit = cached_subject(
        seed=seed, target=target, n_raters=n_raters,
        spacing=DEFAULT_SPACING if spacing is None else spacing,
    )
    _copy_files(source, folder, overwrite=overwrite)
    classes = TARGETS[target]
    tuples = subject_layers(folder, classes=classes, n_raters=n_raters, keep_source=True)
    layers = [viewer.add_layer(Layer.create(*t)) for t in tuples]
    truth = {t[1]["name"]: t[0] for t in tuples}
    if "lesion" in classes:
        score = (truth["truth · lesion"] > 0).sum(axis=(1, 2))
    else:
        score = sum(a for name, a in truth.items() if name.startswith("truth · ")).sum(axis=(1, 2))
    return layers, int(np.argmax(score)), hit


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
    start = time.perf_counter()
    import napari
    from qtpy.QtWidgets import QApplication

    if args.folder:
        folder = Path(args.folder)
    else:
        folder = Path(tempfile.mkdtemp(prefix="softseg-demo-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)

    viewer = napari.Viewer(title="napari-softseg demo")
    viewer.window.resize(*args.size)
    if args.data == "mni":
        layers, best_slice, hit = open_mni(
            viewer, folder, seed=args.seed, target=args.target, spacing=args.spacing,
            n_raters=args.raters, overwrite=args.overwrite,
        )
        what = f"MNI brain ({'cached' if hit else 'generated'}, target {args.target})"
    else:
        layers, best_slice = open_phantom(
            viewer, folder, shape=args.shape, seed=args.seed, n_raters=args.raters,
            overwrite=args.overwrite,
        )
        what = "phantom"
    viewer.layers.selection.active = layers[0]
    docked = [] if args.no_widgets else dock_all_widgets(viewer)
    viewer.dims.axis_labels = ("S", "P", "L")  # display axes point superior, posterior, left
    viewer.dims.set_current_step(0, best_slice)
    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    print(
        f"softseg demo: {what} in {folder}; "
        f"layers: {', '.join(layer.name for layer in viewer.layers)}; "
        f"widgets: {', '.join(docked) if docked else 'none'}; "
        f"first frame after {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        print(f"softseg demo: screenshot saved to {args.screenshot}", file=sys.stderr)
        return 0
    napari.run()
    return 0
