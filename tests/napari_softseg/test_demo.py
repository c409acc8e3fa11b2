"""``softseg demo``: the README's first command, headless, and the CLI around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2
import numpy as np
import pytest

SOFTSEG = [sys.executable, "-m", "softseg"]


def _run(args, timeout=300):
    return subprocess.run([*SOFTSEG, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_screenshot_shows_window_phantom_and_widgets(tmp_path):
    from matplotlib.image import imread

    png = tmp_path / "demo.png"
    done = _run(["demo", "--screenshot", str(png), "--shape", "48", "48", "16", "--seed", "2", "--size", "1200", "800"])
    assert done.returncode == 0, done.stderr[-3000:]
    pixels = imread(png)[..., :3]
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 900
    assert pixels.std() > 0.05  # not a blank window
    # every widget of the manifest was docked, and the phantom layers were opened
    names = [w.display_name for w in (npe2.PluginManifest.from_distribution("napari-softseg").contributions.widgets or [])]
    report = next(line for line in done.stderr.splitlines() if "layers:" in line)
    for layer in ("image", "truth_soft", "rater-1", "rater-4"):
        assert layer in report
    for name in names:
        assert name in report.split("widgets:")[1]
    assert "could not open widget" not in done.stderr


def test_demo_canvas_shows_the_phantom(make_napari_viewer, tmp_path):
    from napari_softseg._demo import dock_all_widgets, open_phantom

    viewer = make_napari_viewer(show=True)
    layers, best = open_phantom(viewer, tmp_path, shape=(48, 48, 16), seed=2)
    assert [layer.name for layer in layers] == ["image", "truth_soft", "rater-1", "rater-2", "rater-3", "rater-4"]
    assert all(layer.metadata["source_path"].startswith(str(tmp_path)) for layer in layers)
    dock_all_widgets(viewer)
    viewer.dims.set_current_step(0, best)
    viewer.reset_view()
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    h, w = canvas.shape[:2]
    centre = canvas[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean()
    corner = canvas[: h // 10, : w // 10].mean()
    assert centre > corner + 40  # the bright phantom sits in the middle of a dark canvas
    assert canvas.std() > 20


def test_cli_help_version_and_bad_arguments(tmp_path):
    assert _run(["--version"]).stdout.startswith("softseg ")
    helped = _run(["demo", "--help"])
    assert helped.returncode == 0 and "--screenshot" in helped.stdout
    bad = _run(["demo", "--raters", "0"])
    assert bad.returncode == 2
    assert bad.stderr.strip() == "softseg demo: error: --raters must be >= 1; got 0"
    jpg = _run(["demo", "--screenshot", str(tmp_path / "x.jpg")])
    assert jpg.returncode == 2 and "expected a .png file name" in jpg.stderr
    nowhere = _run(["demo", "--screenshot", str(tmp_path / "missing" / "x.png")])
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == []


def test_demo_without_a_display_says_how_to_run_it():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([*SOFTSEG, "demo"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("softseg demo: error: no display found") and "xvfb-run" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
