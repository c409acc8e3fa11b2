"""The plugin's docks open as tabs of one another, titles readable, inside a 1000-pixel screen.

napari's *Plugins* menu docks every widget in the right area, one **below** the other
(``Window.add_dock_widget(widget, name=...)``): six SoftSeg docks then ask for a window taller
than a 1000-pixel screen, each squeezed to a strip (issue 11, fault 7). Instead, a SoftSeg dock
that opens while another SoftSeg dock is shown in the same area joins it **as a tab**
(``QMainWindow.tabifyDockWidget``, the way IDEs and 3D Slicer group their panels) and comes to
the front. The area's tabs sit along the window's edge (``QMainWindow.setTabPosition``: East
for the right area), where "Soft annotation", "Fuse raters", "Train", "Predict", "Threshold"
and "Compare candidates" are readable in full; the tab shows the widget's name without napari's
"(SoftSeg)" suffix (the dock's own title bar keeps it). A dock the user dragged elsewhere or
floated is left where it is; docks of other plugins are never touched.

Qt only (``src/softseg`` stays free of it): a widget calls :func:`dock_as_tab` with its Qt
widget once, in its constructor; the grouping happens when napari first shows it in a dock.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QTabWidget, QWidget

__all__ = ["DOCK_PROPERTY", "DOCK_WIDTH", "dock_as_tab", "group_docks"]

#: Qt property set on the QDockWidget of every SoftSeg widget.
DOCK_PROPERTY = "softseg_dock"
#: Width (pixels) a SoftSeg dock is widened to when it opens narrower: the forms' labels, file
#: fields and tables unclipped (napari's right area starts at about 300 pixels).
DOCK_WIDTH = 430
#: napari's suffix of a plugin dock's name: the manifest's display name or the package name
_SUFFIXES = (" (SoftSeg)", " (napari-softseg)")


class _TabWhenShown(QObject):
    """Event filter: on the widget's first Show, group its dock with the other SoftSeg docks."""

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Show:
            obj.removeEventFilter(self)
            QTimer.singleShot(0, lambda: group_docks(obj))
        return False


def dock_as_tab(widget: QWidget) -> None:
    """Make ``widget``'s dock join the other SoftSeg docks as a tab when napari first shows it.

    Parameters
    ----------
    widget : QWidget
        The widget napari puts in a dock (a magicgui Container's ``.native``, or the QWidget).
    """
    grouping = _TabWhenShown(widget)  # parented: lives as long as the widget
    widget.installEventFilter(grouping)


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def group_docks(widget: QWidget) -> bool:
    """Tabify ``widget``'s dock with the SoftSeg docks shown in its dock area; True if it did.

    Safe to call at any time: a widget that is not in a dock of a main window, or whose dock is
    floating, is left alone (returns False).
    """
    try:
        dock = _dock_of(widget)
    except RuntimeError:  # the C++ widget is already gone (viewer closed)
        return False
    if dock is None or dock.isFloating():
        return False
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow):
        return False
    area = window.dockWidgetArea(dock)
    if area == Qt.DockWidgetArea.NoDockWidgetArea:
        return False
    dock.setProperty(DOCK_PROPERTY, True)
    for suffix in _SUFFIXES:
        if dock.windowTitle().endswith(suffix):
            dock.setWindowTitle(dock.windowTitle()[: -len(suffix)])
    if area in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea) \
            and dock.width() < DOCK_WIDTH:
        window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    left = area == Qt.DockWidgetArea.LeftDockWidgetArea
    edge = QTabWidget.TabPosition.West if left else QTabWidget.TabPosition.East
    if window.tabifiedDockWidgets(dock):  # already in a tab group (napari's tabify=True, the user)
        window.setTabPosition(area, edge)
        return False
    siblings = [
        d for d in window.findChildren(QDockWidget)
        if d is not dock and d.property(DOCK_PROPERTY) and d.isVisible() and not d.isFloating()
        and window.dockWidgetArea(d) == area
    ]
    if not siblings:
        return False
    window.setTabPosition(area, edge)
    window.tabifyDockWidget(siblings[-1], dock)
    dock.show()
    dock.raise_()
    return True
