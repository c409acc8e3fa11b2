"""``softseg demo``: napari with the plugin's widgets docked and the SoftSeg phantom loaded."""

from __future__ import annotations

import argparse

HELP = "open napari with the SoftSeg phantom and the plugin's widgets docked"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and quit")


def run(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="napari-softseg demo")
    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0
