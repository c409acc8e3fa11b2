"""The Reference list of the Threshold and Compare candidates docks.

:class:`ReferenceCombo` holds :class:`~napari_softseg.widgets._candidates.ReferenceChoice` s.
Until the user picks one it shows the likeliest (:func:`default_reference`: a truth, then a
fused map, a label map, a rater; never the MR image), following layers as they are added or
removed; once the user picked one it keeps that choice while it is offered."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox

from napari_softseg.widgets._candidates import ReferenceChoice, default_reference

__all__ = ["NONE", "ReferenceCombo"]

NONE = "(none)"
_KEY = Qt.ItemDataRole.UserRole


class ReferenceCombo(QComboBox):
    """A combo box of reference choices (see the module docstring).

    Signals
    -------
    chosen
        The reference in effect changed (by the user, or because its layer went).
    """

    chosen = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._choices: dict[str, ReferenceChoice] = {}
        self.user_chosen = False
        self._filling = False
        self.addItem(NONE, None)
        self.setToolTip("What the overlap metrics are measured against (binarised at 0.5)")
        self.currentIndexChanged.connect(self._on_index)

    def _on_index(self, _index: int) -> None:
        if not self._filling:
            self.user_chosen = True
            self.chosen.emit()

    def set_choices(self, choices: Sequence[ReferenceChoice]) -> None:
        """Offer ``choices`` (emits :attr:`chosen` when the reference in effect changes)."""
        before = self.currentData(_KEY)
        self._choices = {c.key: c for c in choices}
        if self.user_chosen and before in self._choices:
            key = before
        elif self.user_chosen and before is None:
            key = None  # the user chose no reference
        else:
            self.user_chosen = False
            key = default_reference(choices)
        self._filling = True
        try:
            self.clear()
            self.addItem(NONE, None)
            for c in choices:
                self.addItem(c.title, c.key)
            self.setCurrentIndex(max(self.findData(key, _KEY), 0) if key else 0)
        finally:
            self._filling = False
        if self.currentData(_KEY) != before:
            self.chosen.emit()

    def choice(self) -> ReferenceChoice | None:
        """The reference chosen now (None: no reference)."""
        return self._choices.get(self.currentData(_KEY))

    def drop(self) -> None:
        """Fall back to no reference (a reference that did not fit), without emitting."""
        self._filling = True
        try:
            self.setCurrentIndex(0)
        finally:
            self._filling = False
