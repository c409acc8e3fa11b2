"""A row of checkable, coloured buttons (one checked at a time): the class bar and the level bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QPushButton, QSizePolicy, QWidget

__all__ = ["ButtonBar", "ButtonSpec"]


class ButtonSpec(NamedTuple):
    """One button: its id (passed to ``on_pick``), text, tooltip and background colour (RGB in
    [0, 1]; None keeps the theme's); ``bold`` marks the checked one in bold too."""

    ident: int
    text: str
    tooltip: str
    rgb: Sequence[float] | None = None
    bold: bool = False


class ButtonBar(QWidget):
    """Exclusive checkable buttons; a click calls ``on_pick(ident)``."""

    def __init__(self, on_pick: Callable[[int], None]) -> None:
        super().__init__()
        self._on_pick = on_pick
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(3)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._group.idClicked.connect(self._on_pick)
        self.buttons: list[QPushButton] = []
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def set_buttons(self, specs: Sequence[ButtonSpec]) -> None:
        """Replace the buttons (the old ones are gone at once, not at the next event-loop turn)."""
        for b in self.buttons:
            self._group.removeButton(b)
            self._layout.removeWidget(b)
            b.setParent(None)
            b.deleteLater()
        self.buttons = []
        for spec in specs:
            btn = QPushButton(spec.text)
            btn.setCheckable(True)
            btn.setMinimumWidth(10)
            btn.setToolTip(spec.tooltip)
            if spec.rgb is not None:
                rgb = [int(255 * c) for c in list(spec.rgb)[:3]]
                fg = "black" if sum(rgb) > 380 else "white"
                weight = " font-weight: bold;" if spec.bold else ""
                btn.setStyleSheet(
                    f"QPushButton {{ background-color: rgb({rgb[0]},{rgb[1]},{rgb[2]}); color: {fg}; padding: 2px; }}"
                    f"QPushButton:checked {{ border: 3px solid white;{weight} }}"
                )
            self._group.addButton(btn, spec.ident)
            self._layout.addWidget(btn)
            self.buttons.append(btn)

    def check(self, ident: int) -> None:
        """Check the button *ident* (without calling ``on_pick``)."""
        btn = self._group.button(int(ident))
        if btn is not None:
            btn.setChecked(True)
