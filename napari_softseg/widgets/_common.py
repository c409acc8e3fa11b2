"""Small helpers every SoftSeg dock widget shares (no widget imports another widget).

* :func:`confirm_overwrite` — **the one rule for every widget that writes**: never replace a file
  without the user's explicit confirmation. Call it with every path the write would create
  (image, JSON sidecar, ...); write with ``overwrite=True`` only when it returned True.
* :func:`ask` — a modal question with named buttons (the recovery offer, "discard?").
* :func:`notify` — a napari notification whose *Source* is a readable name (napari's own
  ``show_info`` shows the ``NotificationManager`` object's repr there) and that may carry
  action buttons.
* :func:`scroll_area`, :func:`collapsible`, :func:`banner` — compact docks: the contents scroll
  instead of growing the window, advanced options fold away, an important offer sits at the top
  in colour.
* :func:`canvas_widget` — napari's canvas widget, found through Qt from a docked widget (no
  private napari attribute).
* :class:`PaintModeRemovalGuard` — works around a napari 0.9 / vispy crash: removing a Labels
  layer while it is in paint or erase mode, then drawing a new layer, ends in a segmentation
  fault in ``glDrawArrays`` (seen under Mesa, software and llvmpipe). The guard switches such a
  layer to pan/zoom and lets the canvas draw once, just before napari removes it.

Dialogs are real ``QMessageBox`` objects run with ``exec()``; tests answer them as a person would
(find the active modal box, click the button by its text).
"""

from __future__ import annotations

import datetime as _dt
import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from napari.utils.notifications import Notification, NotificationSeverity, notification_manager
from qtpy.QtCore import QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

__all__ = [
    "NamedNotification",
    "PaintModeRemovalGuard",
    "ask",
    "banner",
    "canvas_widget",
    "collapsible",
    "confirm_overwrite",
    "existing",
    "notify",
    "scroll_area",
]

#: Notification source used when a widget gives none.
DEFAULT_SOURCE = "SoftSeg"


# ------------------------------------------------------------------------------- overwriting
def existing(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The paths among *paths* that exist now (files or folders), in the given order."""
    return [Path(p) for p in paths if Path(p).exists()]


def _describe(path: Path) -> str:
    try:
        when = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except OSError:
        when = "unknown time"
    return f"{path.name}  (written {when})"


def ask(
    parent: QWidget | None,
    title: str,
    text: str,
    buttons: Sequence[str],
    *,
    informative: str = "",
    default: str | None = None,
    escape: str | None = None,
    icon: QMessageBox.Icon = QMessageBox.Icon.Question,
) -> str | None:
    """Ask a question with named buttons; return the text of the button pressed.

    Parameters
    ----------
    parent : QWidget or None
        The dialog is centred on it.
    title, text, informative : str
        Window title, main question, details (smaller text).
    buttons : sequence of str
        Button texts, left to right. A button named ``"Cancel"`` gets the reject role.
    default : str, optional
        The button Enter presses (the last one when not given).
    escape : str, optional
        The button Escape presses (``"Cancel"`` when there is one).

    Returns
    -------
    str or None
        The pressed button's text; None when the box was closed otherwise.
    """
    box = QMessageBox(parent)
    box.setIcon(icon)
    box.setWindowTitle(title)
    box.setText(text)
    if informative:
        box.setInformativeText(informative)
    made: dict[str, QPushButton] = {}
    for label in buttons:
        role = (
            QMessageBox.ButtonRole.RejectRole
            if label == "Cancel"
            else QMessageBox.ButtonRole.AcceptRole
        )
        made[label] = box.addButton(label, role)
    default = default if default in made else (buttons[-1] if buttons else None)
    if default is not None:
        box.setDefaultButton(made[default])
    escape = escape if escape in made else ("Cancel" if "Cancel" in made else None)
    if escape is not None:
        box.setEscapeButton(made[escape])
    box.exec()
    clicked = box.clickedButton()
    answer = next((label for label, btn in made.items() if clicked is btn), None)
    box.deleteLater()
    return answer


def confirm_overwrite(
    paths: Iterable[str | os.PathLike],
    *,
    parent: QWidget | None = None,
    title: str = "Replace existing files?",
) -> bool:
    """Ask before replacing files; True when nothing would be replaced or the user said *Replace*.

    Parameters
    ----------
    paths : iterable of path-like
        Every file the write would create (the output and its sidecar ...).
    parent : QWidget, optional
    title : str

    Returns
    -------
    bool
        True: write (with ``overwrite=True``). False: the user kept the files; write nothing.
    """
    found = existing(paths)
    if not found:
        return True
    names = "\n".join(_describe(p) for p in found)
    folder = found[0].parent
    answer = ask(
        parent,
        title,
        f"{'This file exists' if len(found) == 1 else 'These files exist'} in {folder}:\n{names}",
        ["Cancel", "Replace"],
        informative="Replace loses what is in them now. Cancel keeps them; you can choose another file name.",
        default="Cancel",
        icon=QMessageBox.Icon.Warning,
    )
    return answer == "Replace"


# ------------------------------------------------------------------------------ notifications
class NamedNotification(Notification):
    """A napari notification that reports a readable ``source`` (a widget's name)."""

    def __init__(
        self,
        message: str,
        severity: str | NotificationSeverity = "info",
        *,
        source: str = DEFAULT_SOURCE,
        actions: Sequence[tuple[str, Callable]] = (),
    ) -> None:
        super().__init__(message, severity=severity, actions=tuple(actions))
        self._source_name = str(source)

    @property
    def source(self) -> str:  # napari's Event.source would be the NotificationManager object
        return self._source_name


def notify(
    message: str,
    *,
    severity: str = "info",
    source: str = DEFAULT_SOURCE,
    actions: Sequence[tuple[str, Callable]] = (),
) -> NamedNotification:
    """Show a one-line napari notification from *source* (e.g. ``"Soft annotation"``).

    Parameters
    ----------
    message : str
        Collapsed to one line.
    severity : {"info", "warning", "error"}
    source : str
        Shown as the notification's source.
    actions : sequence of (label, callable)
        Buttons on the notification; the callable receives the notification widget.

    Returns
    -------
    NamedNotification
        The dispatched notification (also in ``notification_manager.records``).
    """
    note = NamedNotification(
        " ".join(str(message).split()), severity, source=source, actions=actions
    )
    notification_manager.dispatch(note)
    return note


# ------------------------------------------------------------------------------ compact docks
def scroll_area(content: QWidget, *, min_height: int = 120) -> QScrollArea:
    """*content* in a frameless vertical scroll area (no horizontal bar), for a dock's body.

    A dock whose body scrolls asks the main window for little height, so several docks fit one
    screen; the body is as wide as the dock.
    """
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(content)
    area.setMinimumHeight(min_height)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    return area


def collapsible(title: str, *widgets: QWidget, expanded: bool = False) -> QCollapsible:
    """A titled section that folds (superqt ``QCollapsible``), holding *widgets*."""
    section = QCollapsible(title, expandedIcon="▼", collapsedIcon="▶")
    section.setDuration(0)  # no animation: instant and testable
    for w in widgets:
        section.addWidget(w)
    if expanded:
        section.expand(animate=False)
    else:
        section.collapse(animate=False)
    return section


class _Banner(QFrame):
    """A coloured strip with a message and buttons (see :func:`banner`)."""

    def __init__(self, colour: str) -> None:
        super().__init__()
        self.setObjectName("softsegBanner")
        self.setStyleSheet(
            f"QFrame#softsegBanner {{ background-color: {colour}; border-radius: 4px; }}"
            "QFrame#softsegBanner QLabel { color: black; font-weight: bold; }"
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.label)
        self._row = QHBoxLayout()
        layout.addLayout(self._row)
        self.buttons: dict[str, QPushButton] = {}

    def add_button(
        self, text: str, callback: Callable[[], object], *, tooltip: str = ""
    ) -> QPushButton:
        btn = QPushButton(text)
        btn.setToolTip(tooltip)
        btn.clicked.connect(lambda *_: callback())
        self._row.addWidget(btn)
        self.buttons[text] = btn
        return btn

    def set_text(self, text: str) -> None:
        self.label.setText(text)


def banner(colour: str = "#f4b63f") -> _Banner:
    """A hidden coloured banner (amber by default) with ``set_text`` and ``add_button``."""
    b = _Banner(colour)
    b.setVisible(False)
    return b


# ------------------------------------------------------------------------------ the canvas
def canvas_widget(widget: QWidget) -> QWidget | None:
    """napari's canvas (an OpenGL widget) in the main window that holds *widget*, or None.

    Found with Qt's own API (the window's central widget's OpenGL child), so no private napari
    attribute is touched; None before *widget* is docked.
    """
    try:
        from qtpy.QtOpenGLWidgets import QOpenGLWidget
    except ImportError:  # Qt5 bindings
        from qtpy.QtWidgets import QOpenGLWidget  # type: ignore[attr-defined,no-redef]
    try:
        window = widget.window()
    except RuntimeError:
        return None
    central = window.centralWidget() if hasattr(window, "centralWidget") else None
    if central is None:
        return None
    found = central.findChildren(QOpenGLWidget)
    return found[0] if found else None


class PaintModeRemovalGuard(QObject):
    """Before napari removes a Labels layer in paint or erase mode: pan/zoom mode, one redraw.

    The redraw is skipped while several layers are selected (they are being removed together).
    Found by trial under Xvfb/Mesa (napari 0.9.2, vispy 0.17): without the redraw a single removal
    crashes; with it, removing a whole selection crashes.

    See the module docstring (a napari 0.9 / vispy segmentation fault). Parameters: the viewer
    (or its Plugins-menu proxy) and a docked widget of its window (to find the canvas).
    """

    def __init__(self, viewer: Any, anchor: QWidget) -> None:
        super().__init__(anchor)
        self.viewer = viewer
        self._anchor = weakref.ref(anchor)
        self.switched = 0
        self._batch: bool | None = None
        viewer.layers.events.removing.connect(self._before_removal)

    def _end_batch(self) -> None:
        self._batch = None

    def _before_removal(self, event: Any) -> None:
        try:
            layer = self.viewer.layers[event.index]
        except (IndexError, KeyError, TypeError):
            return
        if str(getattr(layer, "mode", "")) not in ("paint", "erase"):
            return
        layer.mode = "pan_zoom"
        self.switched += 1
        if self._batch is None:  # first removal since the event loop last ran
            self._batch = len(self.viewer.layers.selection) > 1
            QTimer.singleShot(0, self._end_batch)
        if self._batch:
            # several layers go at once (select all + delete): napari survives those without a
            # redraw, and a redraw between two of the removals is what crashes then
            return
        anchor = self._anchor()
        canvas = canvas_widget(anchor) if anchor is not None else None
        if canvas is not None and canvas.isVisible():
            canvas.repaint()  # draw once without the paint-mode state, before the removal

    def close(self) -> None:
        try:
            self.viewer.layers.events.removing.disconnect(self._before_removal)
        except (TypeError, ValueError, RuntimeError):
            pass
