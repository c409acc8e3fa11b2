"""Asking before napari closes while a training run goes (issue 11 #10)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

from napari_softseg.widgets._common import ask

__all__ = ["CloseGuard", "KEEP", "STOP"]

#: The question's buttons.
KEEP = "Keep training"
STOP = "Stop training and close"


class CloseGuard(QObject):
    """Asks before napari's window closes while a training runs (issue 11 #10).

    Installed on the main window for the duration of a run. A close the user started (window
    button, Ctrl+W/Ctrl+Q) is held until they answer; ``viewer.close()`` from a script closes the
    canvas first and is not asked about (the dock's destroyed hook stops the child then).
    """

    def __init__(self, widget: Any, window: QWidget) -> None:
        super().__init__(window)
        self._widget = widget
        self._window = window
        #: The texts of the questions asked (tests, docs).
        self.asked: list[str] = []
        window.installEventFilter(self)

    def remove(self) -> None:
        try:
            self._window.removeEventFilter(self)
        except RuntimeError:
            pass

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is not self._window or event.type() != QEvent.Type.Close:
            return False
        widget = self._widget
        central = getattr(self._window, "centralWidget", lambda: None)()
        if not widget.running or central is None or not central.isVisible():
            return False
        text = "A training run is still going. Closing napari stops it."
        self.asked.append(text)
        answer = ask(
            self._window, "Training is running", text,
            [KEEP, STOP],
            informative="Stopping saves a checkpoint beside the model file; 'Resume' continues "
            "from it later.",
            default=KEEP, escape=KEEP,
        )
        if answer != STOP:
            event.ignore()
            return True
        widget.cancel()
        return False
