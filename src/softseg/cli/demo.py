"""``softseg demo``: napari with the plugin's widgets docked and sample data loaded.

``--data mni`` (default): a subject made from the MNI ICBM152 template (real T1, three tissue
classes, raters per class; :mod:`softseg.anatomy`, needs the ``anatomy`` extra). The subject is
generated once and cached in the user cache folder (``$SOFTSEG_CACHE_DIR`` moves it), so later
demos open in seconds. ``--data phantom``: the analytic partial-volume phantom
(:func:`softseg.phantom.phantom`).

The files are written (copied from the cache) into a folder and opened through the plugin's own
reader, so the layers carry their file geometry and source paths exactly as a user's data would.
Every dock widget contributed in the plugin manifest is docked (tabbed together); a widget that
fails to open is reported on stderr and skipped.

The viewer side lives in the plugin package (:mod:`napari_softseg._demo`), imported inside
:func:`run`: ``softseg --help`` stays fast and the engine never imports napari or Qt.
"""

from __future__ import annotations

import argparse
import os
import sys

from softseg.errors import InputError

__all__ = ["DATA", "HELP", "add_arguments", "run"]

HELP = "open napari with sample data (real brain or phantom) and the plugin's widgets docked"

#: --data choices -> description.
DATA = {
    "mni": "a brain made from the MNI ICBM152 template: real T1, tissue classes, raters per class",
    "phantom": "the analytic partial-volume phantom with four raters",
}
_TARGETS = ("tissue", "tissue-lesion", "lesion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", choices=list(DATA), default=None,
        help="what to open: " + "; ".join(f"{k}: {v}" for k, v in DATA.items())
        + " (default mni; phantom when --shape is given)",
    )
    parser.add_argument(
        "--screenshot",
        metavar="PNG",
        help="save a screenshot of the whole window to PNG and quit (headless under xvfb-run)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--raters", type=int, default=4, help="number of raters (default 4)")
    parser.add_argument(
        "--target", choices=_TARGETS, default="tissue",
        help="mni: what the raters label (default tissue; tissue-lesion adds MS-like lesions, "
        "lesion shows lesions only)",
    )
    parser.add_argument(
        "--spacing", metavar="MM", type=float, default=None,
        help="mni: voxel size in mm (default 2)",
    )
    parser.add_argument(
        "--shape",
        metavar=("X", "Y", "Z"),
        type=int,
        nargs=3,
        default=None,
        help="phantom: grid in file order (default 96 96 32; Z is the axial slice axis)",
    )
    parser.add_argument(
        "--folder",
        metavar="DIR",
        default=None,
        help="write the files into DIR and keep them (default: a temporary folder removed when "
        "napari closes)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace sample files already in DIR"
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


def run(args: argparse.Namespace) -> int:
    if args.raters < 1:
        raise InputError(f"--raters must be >= 1; got {args.raters}")
    if args.data is None:  # --shape alone still means the phantom (as before the MNI default)
        args.data = "phantom" if args.shape is not None else "mni"
    if args.data == "mni" and args.shape is not None:
        raise InputError("--shape sets the phantom's grid; with --data mni use --spacing MM")
    if args.data == "phantom" and (args.spacing is not None or args.target != "tissue"):
        raise InputError("--spacing and --target apply to --data mni; the phantom takes --shape")
    if args.spacing is not None and not 0.5 <= args.spacing <= 8:
        raise InputError(f"--spacing must be between 0.5 and 8 mm; got {args.spacing}")
    if args.screenshot and not args.screenshot.lower().endswith(".png"):
        raise InputError(f"--screenshot {args.screenshot}: expected a .png file name")
    if args.screenshot:
        from softseg.io import check_writable

        check_writable(args.screenshot, overwrite=True)
    if args.data == "mni":
        from softseg.anatomy import check_nilearn

        check_nilearn()  # one line naming the extra, before a window opens

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

    try:
        from napari_softseg._demo import launch
    except ImportError as exc:
        raise InputError(
            f"softseg demo needs napari and a Qt binding ({exc}); "
            "install them with: pip install 'napari-softseg[napari]'"
        ) from None
    return launch(args)
