"""Widgets opened the way users open them.

napari's *Plugins > SoftSeg > ...* menu calls ``viewer.window.add_plugin_dock_widget(plugin,
display_name)``, which builds the widget with a *wrapped* viewer (a proxy whose layers are proxies
too). Tests that take the ``open_widget`` fixture run twice: once through that path
(``"plugin_menu"``) and once with the widget class built directly on the plain viewer
(``"direct"``), so identity bugs that only the wrapped viewer shows are caught.

Usage::

    def test_something(make_napari_viewer, open_widget):
        viewer = make_napari_viewer()
        widget = open_widget(viewer, "fuse")
"""

from __future__ import annotations

import importlib

import pytest

PLUGIN = "napari-softseg"

#: key -> (display name in napari.yaml, "module:Class")
WIDGETS = {
    "annotate": ("Soft annotation", "napari_softseg.widgets.annotate:AnnotateWidget"),
    "fuse": ("Fuse raters", "napari_softseg.widgets.fuse:FuseWidget"),
    "train": ("Train", "napari_softseg.widgets.train:TrainWidget"),
    "predict": ("Predict", "napari_softseg.widgets.predict:PredictWidget"),
    "threshold": ("Threshold", "napari_softseg.widgets.threshold:ThresholdWidget"),
    "compare": ("Compare candidates", "napari_softseg.widgets.compare:CompareWidget"),
}

WIDGET_PATHS = ("plugin_menu", "direct")


def open_widget_by(path: str, viewer, key: str):
    """Open widget ``key`` on ``viewer`` through ``path`` (``"plugin_menu"`` or ``"direct"``)."""
    display, target = WIDGETS[key]
    if path == "plugin_menu":
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, display)
        return widget
    module, cls = target.split(":")
    widget = getattr(importlib.import_module(module), cls)(viewer)
    viewer.window.add_dock_widget(widget, name=display)
    return widget


@pytest.fixture(params=WIDGET_PATHS)
def open_widget(request):
    """A function ``open_widget(viewer, key)``; the test runs once per path in WIDGET_PATHS."""

    def _open(viewer, key: str):
        return open_widget_by(request.param, viewer, key)

    _open.path = request.param
    return _open


@pytest.fixture
def menu_widget():
    """A function ``menu_widget(viewer, key)``: always the Plugins-menu path (wrapped viewer)."""

    def _open(viewer, key: str):
        return open_widget_by("plugin_menu", viewer, key)

    return _open
