"""Confidence levels on a rater layer: the level bar, the keys 0..9, and levels off the scale refused.

* :class:`LevelBar` — legend and picker at once: one coloured button per level (0 = eraser).
* :func:`bind_level_keys` — keys ``1..K`` pick a level and ``0`` the eraser, on that layer only.
* :class:`LevelGuard` — napari lets a rater pick any label (its spin box, the *new label* button,
  ``M``, ``+``/``=``), but a label the confidence scale does not know paints invisible strokes
  that only an export would refuse. The guard sets such a pick back to the top level at once, and
  a stroke that still paints an unknown value (from a script) is undone; both say why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QPushButton, QSizePolicy, QWidget

from softseg.confidence import MAX_LEVELS, ConfidenceScale

from napari_softseg._raters import layer_scale, level_rgba

__all__ = ["LevelBar", "LevelGuard", "bind_level_keys", "set_level"]


def _top_level(layer: Any) -> int:
    scale = layer_scale(layer)
    return scale.n_levels if scale is not None else 1


def set_level(layer: Any, level: int, *, on_message: Callable[[str], None] | None = None) -> bool:
    """Select a confidence level on a rater layer (0 = eraser); False when the scale lacks it.

    The brush comes on unless fill or polygon is active.
    """
    n = _top_level(layer)
    if level == 0:
        layer.mode = "erase"
        return True
    if level > n:
        if on_message is not None:
            on_message(
                f"{layer.name}: no level {level}; this scale has levels 1..{n} (0 or E erases)"
            )
        return False
    layer.selected_label = level
    if str(layer.mode) not in ("paint", "fill", "polygon"):
        layer.mode = "paint"
    return True


def bind_level_keys(layer: Any, on_level: Callable[[Any, int], None]) -> None:
    """Keys 1..9 pick a level and 0 the eraser on this layer only (napari's E, P, F ... stay).

    ``on_level(layer, level)`` is called with the layer napari passes to key bindings.
    """
    for k in range(0, MAX_LEVELS + 1):

        def select_level(lyr: Any, level: int = k) -> None:
            on_level(lyr, level)

        select_level.__doc__ = f"Select confidence level {k}" if k else "Eraser"
        layer.bind_key(str(k), select_level, overwrite=True)


class LevelGuard:
    """Keeps a rater layer's painted values on its confidence scale (see the module docstring).

    Parameters
    ----------
    layer : napari Labels layer
    on_message : callable(text)
        Shown to the rater (status line and a notification).
    """

    def __init__(self, layer: Any, on_message: Callable[[str], None]) -> None:
        self.layer = layer
        self._on_message = on_message
        self.refused = 0
        layer.events.selected_label.connect(self._on_selected)
        layer.events.paint.connect(self._on_paint)

    def _on_selected(self, event: Any = None) -> None:
        layer = self.layer
        label, n = int(layer.selected_label), _top_level(layer)
        if 0 < label <= n or label == 0:
            return
        self.refused += 1
        layer.selected_label = n
        scale = layer_scale(layer)
        name = scale.names[n - 1] if scale is not None else str(n)
        self._on_message(
            f"{layer.name}: label {label} is not on the confidence scale (levels 1..{n}); "
            f"painting with level {n} ({name}). Add levels under Confidence scale to use more."
        )

    def _on_paint(self, event: Any = None) -> None:
        layer, n = self.layer, _top_level(self.layer)
        atoms = getattr(event, "value", None) or []
        bad = set()
        for atom in atoms:
            # napari's history atoms: (indices, old values, new value) or a masked-paint
            # named tuple whose last field is ``new_value``
            value = getattr(atom, "new_value", None)
            if value is None:
                try:
                    value = atom[2]
                except (TypeError, IndexError, KeyError):
                    continue
            try:
                top = int(np.max(value))
            except (TypeError, ValueError):
                continue
            if top > n:
                bad.add(top)
        if not bad:
            return
        self.refused += 1
        # undo after napari finished recording the stroke (we are inside its paint event)
        QTimer.singleShot(0, layer.undo)
        self._on_message(
            f"{layer.name}: a stroke painted label {max(bad)}, which is not on the confidence scale "
            f"(levels 1..{n}); the stroke was undone"
        )

    def close(self) -> None:
        for emitter, cb in (
            (self.layer.events.selected_label, self._on_selected),
            (self.layer.events.paint, self._on_paint),
        ):
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass


class LevelBar(QWidget):
    """Legend + picker: one coloured button per level (0 = eraser), ``on_pick(level)`` on click."""

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

    def rebuild(self, scale: ConfidenceScale | None, hue: Sequence[float]) -> None:
        """One button per level of *scale* in the rater's *hue* (none without a scale)."""
        for b in self.buttons:
            self._group.removeButton(b)
            self._layout.removeWidget(b)
            b.setParent(None)  # gone now, not at the next turn of the event loop
            b.deleteLater()
        self.buttons = []
        if scale is None:
            return
        items = [(0, "0 erase", None)] + [
            (k, f"{k} {name}\n{value:.2g}", level_rgba(hue, value))
            for k, (name, value) in enumerate(zip(scale.names, scale.values), start=1)
        ]
        for k, text, rgba in items:
            btn = QPushButton(text)
            btn.setCheckable(True)
            btn.setMinimumWidth(10)
            btn.setToolTip(
                "eraser (keys 0 or E)"
                if k == 0
                else f"level {k}: {scale.names[k - 1]}, soft value {scale.values[k - 1]:.3g} (key {k})"
            )
            if rgba is not None:
                # the swatch is the level's colour composited over a mid-grey image
                a = float(rgba[3])
                rgb = [int(255 * (a * c + (1 - a) * 0.35)) for c in rgba[:3]]
                fg = "black" if sum(rgb) > 380 else "white"
                btn.setStyleSheet(
                    f"QPushButton {{ background-color: rgb({rgb[0]},{rgb[1]},{rgb[2]}); color: {fg}; padding: 2px; }}"
                    "QPushButton:checked { border: 3px solid white; }"
                )
            self._group.addButton(btn, k)
            self._layout.addWidget(btn)
            self.buttons.append(btn)

    def show_level(self, level: int) -> None:
        """Check the button of *level* (without calling ``on_pick``)."""
        btn = self._group.button(level)
        if btn is not None:
            btn.setChecked(True)
