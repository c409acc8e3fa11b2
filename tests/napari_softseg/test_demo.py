"""``softseg demo``: the README's first command, headless, and the CLI around it.

The default data is a brain made from the MNI template (``--data mni``); the phantom stays an
option (``--data phantom``). Tests generate the MNI subject once into a private cache
(``$SOFTSEG_CACHE_DIR``) so they never write into the user's cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import npe2
import pytest

from softseg.anatomy import CACHE_ENV, cached_subject

SOFTSEG = [sys.executable, "-m", "softseg"]


def _run(args, timeout=400, env=None):
    return subprocess.run([*SOFTSEG, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """A private cache holding the demo's default subject (seed 0, tissue, 2 mm, 4 raters)."""
    root = tmp_path_factory.mktemp("softseg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        cached_subject(seed=0, target="tissue", spacing=2.0, n_raters=4)
    return root


def _canvas_contrast(viewer):
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    h, w = canvas.shape[:2]
    centre = canvas[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean()
    corner = canvas[: h // 10, : w // 10].mean()
    return centre, corner, canvas.std()


def test_demo_screenshot_shows_window_brain_raters_and_widgets(tmp_path, cache_root):
    from matplotlib.image import imread

    png = tmp_path / "demo.png"
    env = {**os.environ, CACHE_ENV: str(cache_root)}
    done = _run(["demo", "--screenshot", str(png), "--size", "1200", "800"], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    pixels = imread(png)[..., :3]
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 900
    assert pixels.std() > 0.05  # not a blank window
    # every widget of the manifest was docked, and the brain's layers were opened
    names = [w.display_name for w in (npe2.PluginManifest.from_distribution("napari-softseg").contributions.widgets or [])]
    report = next(line for line in done.stderr.splitlines() if "layers:" in line)
    assert report.startswith("softseg demo: MNI brain (cached, target tissue)")
    for layer in ("T1w", "truth · grey matter", "truth · csf", "rater-1 · grey matter", "rater-4 · csf"):
        assert layer in report
    for name in names:
        assert name in report.split("widgets:")[1]
    assert "could not open widget" not in done.stderr


def test_demo_canvas_shows_the_brain(make_napari_viewer, tmp_path, cache_root, monkeypatch):
    from napari_softseg._demo import dock_all_widgets, open_mni

    monkeypatch.setenv(CACHE_ENV, str(cache_root))
    viewer = make_napari_viewer(show=True)
    layers, best, hit = open_mni(viewer, tmp_path, seed=0, n_raters=4)
    assert hit
    assert [layer.name for layer in layers][:5] == [
        "T1w", "truth · grey matter", "truth · white matter", "truth · csf", "rater-1 · grey matter"
    ]
    assert len(layers) == 16
    # opened from the demo folder, not from the cache: painting and saving never touch the cache
    assert all(layer.metadata["source_path"].startswith(str(tmp_path)) for layer in layers)
    dock_all_widgets(viewer)
    viewer.dims.set_current_step(0, best)
    viewer.reset_view()
    centre, corner, spread = _canvas_contrast(viewer)
    assert centre > corner + 40  # the brain sits in the middle of a dark canvas
    assert spread > 20


def test_demo_canvas_shows_the_phantom(make_napari_viewer, tmp_path):
    from napari_softseg._demo import dock_all_widgets, open_phantom

    viewer = make_napari_viewer(show=True)
    layers, best = open_phantom(viewer, tmp_path, shape=(48, 48, 16), seed=2)
    assert [layer.name for layer in layers] == ["image", "truth_soft", "rater-1", "rater-2", "rater-3", "rater-4"]
    assert all(layer.metadata["source_path"].startswith(str(tmp_path)) for layer in layers)
    dock_all_widgets(viewer)
    viewer.dims.set_current_step(0, best)
    viewer.reset_view()
    centre, corner, spread = _canvas_contrast(viewer)
    assert centre > corner + 40  # the bright phantom sits in the middle of a dark canvas
    assert spread > 20


def test_cli_help_version_and_bad_arguments(tmp_path):
    assert _run(["--version"]).stdout.startswith("softseg ")
    helped = _run(["demo", "--help"])
    assert helped.returncode == 0 and "--screenshot" in helped.stdout and "--data {mni,phantom}" in helped.stdout
    cases = [
        (["--raters", "0"], "softseg demo: error: --raters must be >= 1; got 0"),
        (["--data", "mni", "--shape", "8", "8", "8"], "softseg demo: error: --shape sets the phantom's grid; with --data mni use --spacing MM"),
        # --shape alone still means the phantom (the README's `softseg demo --shape ...`)
        (["--shape", "8", "8", "8", "--spacing", "3"], "softseg demo: error: --spacing and --target apply to --data mni; the phantom takes --shape"),
        (["--data", "phantom", "--spacing", "3"], "softseg demo: error: --spacing and --target apply to --data mni; the phantom takes --shape"),
        (["--spacing", "0.1"], "softseg demo: error: --spacing must be between 0.5 and 8 mm; got 0.1"),
    ]
    for args, message in cases:
        bad = _run(["demo", *args])
        assert bad.returncode == 2 and bad.stderr.strip() == message
    jpg = _run(["demo", "--screenshot", str(tmp_path / "x.jpg")])
    assert jpg.returncode == 2 and "expected a .png file name" in jpg.stderr
    nowhere = _run(["demo", "--screenshot", str(tmp_path / "missing" / "x.png")])
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == []


def test_demo_without_nilearn_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['nilearn'] = None\n"
        "from softseg.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("install it with: pip install 'napari-softseg[anatomy]'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_demo_without_a_display_says_how_to_run_it():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([*SOFTSEG, "demo"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("softseg demo: error: no display found") and "xvfb-run" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
