"""Six SoftSeg docks opened from napari's *Plugins* menu fit a 1600x1000 screen, titles readable.

issue 11, fault 7: napari's menu docks every widget below the previous one; six SoftSeg docks
asked for a 1600x3964 window and cut the tab titles to "T..." / "Pr...". The docks now join one
another as tabs along the window's edge (napari_softseg.widgets._docking).
"""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QApplication, QDockWidget, QTabBar

from napari_softseg.widgets._docking import DOCK_PROPERTY, DOCK_WIDTH

from conftest import WIDGETS

NAMES = [display for display, _target in WIDGETS.values()]
SCREEN = (1600, 1000)


def _menu_actions(menu, path=()):
    for action in menu.actions():
        if action.menu():
            yield from _menu_actions(action.menu(), (*path, action.text().replace("&", "")))
        else:
            yield (*path, action.text().replace("&", "")), action


def _settle(rounds=10):
    for _ in range(rounds):
        QApplication.processEvents()


def _open_from_plugins_menu(viewer, names):
    """Trigger *Plugins > SoftSeg > <name>* as a user clicks it (napari's own action)."""
    window = viewer.window._qt_window
    actions = {path: a for path, a in _menu_actions(window.menuBar())}
    for name in names:
        actions[("Plugins", "SoftSeg", name)].trigger()
        _settle()
    _settle()
    return window


def _softseg_docks(window):
    return [d for d in window.findChildren(QDockWidget) if d.property(DOCK_PROPERTY)]


@pytest.fixture
def screen_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*SCREEN)
    _settle()
    return viewer


def test_six_docks_from_the_plugins_menu_fit_the_screen_as_readable_tabs(screen_viewer):
    window = _open_from_plugins_menu(screen_viewer, NAMES)
    assert window.frameGeometry().height() <= SCREEN[1]
    assert window.width() <= SCREEN[0]

    docks = _softseg_docks(window)
    assert sorted(d.windowTitle() for d in docks) == sorted(NAMES)  # napari's "(SoftSeg)" dropped
    # one tab group: each dock is tabified with the five others
    for dock in docks:
        assert {d.windowTitle() for d in window.tabifiedDockWidgets(dock)} == set(NAMES) - {dock.windowTitle()}
    # the last one opened is in front
    front = [d for d in docks if not d.visibleRegion().isEmpty()]
    assert [d.windowTitle() for d in front] == [NAMES[-1]]

    # every tab title shown in full: vertical tabs along the edge, each as long as its text
    bars = [b for b in window.findChildren(QTabBar)
            if b.isVisible() and {b.tabText(i) for i in range(b.count())} == set(NAMES)]
    assert len(bars) == 1
    bar = bars[0]
    metrics = bar.fontMetrics()
    for i in range(bar.count()):
        rect = bar.tabRect(i)
        assert rect.height() > rect.width()  # East: the text runs along the window's edge
        assert rect.height() >= metrics.horizontalAdvance(bar.tabText(i))
        assert bar.visibleRegion().contains(rect.center())
    # the dock area (dock + its tab bar) widened from napari's ~300 pixels for the forms
    assert front[0].width() + bar.width() >= DOCK_WIDTH - 2


def test_a_dock_the_user_floated_is_left_alone_and_others_still_group(screen_viewer):
    window = _open_from_plugins_menu(screen_viewer, NAMES[:1])
    (first,) = _softseg_docks(window)
    first.setFloating(True)
    _settle()
    _open_from_plugins_menu(screen_viewer, NAMES[1:3])
    docks = {d.windowTitle(): d for d in _softseg_docks(window)}
    assert docks[NAMES[0]].isFloating()
    assert window.tabifiedDockWidgets(docks[NAMES[0]]) == []
    assert [d.windowTitle() for d in window.tabifiedDockWidgets(docks[NAMES[2]])] == [NAMES[1]]


def test_a_plain_napari_dock_is_not_pulled_into_the_tabs(screen_viewer):
    from qtpy.QtWidgets import QLabel

    window = screen_viewer.window._qt_window
    screen_viewer.window.add_dock_widget(QLabel("another plugin"), name="other", area="right")
    _settle()
    _open_from_plugins_menu(screen_viewer, NAMES[:2])
    other = next(d for d in window.findChildren(QDockWidget) if d.windowTitle().startswith("other"))
    assert not other.property(DOCK_PROPERTY)
    assert other not in window.tabifiedDockWidgets(_softseg_docks(window)[0])
    assert other.isVisible()
