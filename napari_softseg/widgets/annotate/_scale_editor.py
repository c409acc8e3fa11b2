"""The confidence-scale editor of the Soft annotation dock: preset, number of levels, a table.

Shows a :class:`~softseg.confidence.ConfidenceScale` (one row per level: name, soft value) and
reads back what the rater typed; validation is the scale's own (values in (0, 1], strictly
increasing, distinct names). Applying the scale to a layer is the widget's job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, SpinBox, Table

from softseg.confidence import MAX_LEVELS, PRESETS, ConfidenceScale
from softseg.errors import InputError

__all__ = ["CUSTOM", "ScaleEditor"]

#: The preset shown when the table holds a scale that is no preset.
CUSTOM = "custom"


class ScaleEditor:
    """Preset combo, levels spin box and the table, in one magicgui ``container``.

    Attributes
    ----------
    preset, n_levels, table, apply : magicgui widgets
        ``apply`` is the *Apply scale to layer* button (the widget connects it).
    container : magicgui Container
    """

    def __init__(self) -> None:
        self._syncing = False
        self.preset = ComboBox(label="Scale", choices=[*PRESETS, CUSTOM], value=next(iter(PRESETS)))
        self.n_levels = SpinBox(label="Levels", min=1, max=MAX_LEVELS, value=3)
        self.shown = ConfidenceScale.default()
        self.table = Table(value=self.table_value(self.shown))
        self.table.tooltip = (
            "One row per level (1 = lowest confidence). Edit names and soft values in (0, 1], "
            "then Apply."
        )
        self.table.min_height = 110
        self.table.max_height = 200
        self.apply = PushButton(text="Apply scale to layer")
        top = Container(widgets=[self.preset, self.n_levels], labels=True)
        top.margins = (0, 0, 0, 0)
        self.container = Container(widgets=[top, self.table, self.apply], labels=False)
        self.container.margins = (0, 0, 0, 0)
        self._parts = (top,)
        self.preset.changed.connect(self._on_preset)
        self.n_levels.changed.connect(self._on_n_levels)

    @staticmethod
    def table_value(scale: ConfidenceScale) -> dict[str, Any]:
        """The table's content for *scale* (values rounded to 4 decimals for display)."""
        return {
            "data": [[n, round(v, 4)] for n, v in zip(scale.names, scale.values)],
            "index": list(range(1, scale.n_levels + 1)),
            "columns": ["name", "soft value"],
        }

    def load(self, scale: ConfidenceScale) -> None:
        """Show *scale* (its preset name when it is one)."""
        self._syncing = True
        try:
            self.preset.value = next((k for k, v in PRESETS.items() if v == scale), CUSTOM)
            self.n_levels.value = scale.n_levels
            self.table.value = self.table_value(scale)
            self.shown = scale
        finally:
            self._syncing = False

    def _on_preset(self, name: str) -> None:
        if self._syncing or name == CUSTOM:
            return
        self.load(PRESETS[name])

    def _on_n_levels(self, n: int) -> None:
        if self._syncing:
            return
        linear = ConfidenceScale.linear(int(n))
        self.load(linear)
        self.preset.value = next((k for k, v in PRESETS.items() if v == linear), CUSTOM)

    def scale(self) -> ConfidenceScale:
        """The scale typed in the table.

        Raises
        ------
        InputError
            A soft value that is not a number, or a scale the rules refuse (the reason).
        """
        rows = self.table.data.to_list()
        names, values = [], []
        for i, row in enumerate(rows, start=1):
            name, value = (row + [None, None])[:2]
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                raise InputError(
                    f"level {i}: soft value {value!r} is not a number; type a value in (0, 1]"
                ) from None
            names.append(str(name) if name not in (None, "") else f"level {i}")
        typed = ConfidenceScale(values=tuple(values), names=tuple(names))
        shown = self.shown
        rounded = [round(v, 4) for v in shown.values]
        if typed.names == shown.names and np.allclose(typed.values, rounded, atol=0, rtol=0):
            return shown  # unchanged: keep the exact values (1/3, not 0.3333)
        return typed
