"""The installed plugin: manifest validity, contributions, every dock widget in a real viewer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2
import pytest

PLUGIN = "napari-softseg"
MANIFEST = npe2.PluginManifest.from_distribution(PLUGIN)
WIDGETS = [w.display_name for w in (MANIFEST.contributions.widgets or [])]
ROOT = Path(__file__).resolve().parents[2]


def test_manifest_validates_and_imports():
    assert MANIFEST.name == PLUGIN
    MANIFEST.validate_imports()  # every python_name resolves to an importable object
    done = subprocess.run(
        [str(Path(sys.executable).with_name("npe2")), "validate", PLUGIN],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout


def test_manifest_inside_the_package_is_the_root_file():
    import napari_softseg

    inside = Path(napari_softseg.__file__).parent / "napari.yaml"
    assert inside.resolve() == (ROOT / "napari.yaml").resolve()
    assert inside.read_text() == (ROOT / "napari.yaml").read_text()


def test_reader_writers_and_sample_data_are_contributed():
    contributions = MANIFEST.contributions
    patterns = {p for r in contributions.readers for p in r.filename_patterns}
    assert {"*.nii", "*.nii.gz"} <= patterns
    writers = {tuple(w.layer_types): set(w.filename_extensions) for w in contributions.writers}
    assert writers[("image",)] == {".nii", ".nii.gz"}
    assert writers[("labels",)] == {".nii", ".nii.gz"}
    samples = {s.key: s.display_name for s in contributions.sample_data}
    assert samples["phantom"] == "SoftSeg phantom"


def test_importing_the_plugin_is_light():
    code = (
        "import sys, napari_softseg, napari_softseg._layers, napari_softseg._reader, "
        "napari_softseg._writer, napari_softseg._sample_data, softseg.geometry, softseg.phantom\n"
        "heavy = [m for m in ('torch', 'PyQt6', 'PyQt5', 'PySide6', 'napari', 'magicgui') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("name", WIDGETS)
def test_every_contributed_widget_opens(make_napari_viewer, name):
    from napari_softseg._sample_data import phantom_layers

    viewer = make_napari_viewer()
    for data, kwargs, layer_type in phantom_layers((32, 32, 10), n_raters=2, seed=0):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert widget is not None
    assert dock.widget() is not None
    assert name in dock.name
    native = getattr(widget, "native", widget)
    assert native.sizeHint().isValid()
