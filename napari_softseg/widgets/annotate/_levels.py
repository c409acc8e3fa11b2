"""Confidence levels on a rater layer: the level bar, the keys 0..9, and levels off the scale refused.

* :class:`LevelBar` — legend and picker at once: one coloured button per level (0 = eraser).
* :func:`bind_level_keys` — keys ``1..K`` pick a level and ``0`` the eraser, on that layer only
  (on a multi-class layer the level of the class being painted, :mod:`._classes`).
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

from softseg.confidence import MAX_LEVELS, ConfidenceScale

from napari_softseg._raters import layer_classes, layer_scale, level_rgba
from napari_softseg.widgets.annotate._buttons import ButtonBar, ButtonSpec
from napari_softseg.widgets.annotate._classes import current_class, top_code

__all__ = ["LevelBar", "LevelGuard", "bind_level_keys", "set_level"]


def _top_level(layer: Any) -> int:
    scale = layer_scale(layer)
    return scale.n_levels if scale is not None else 1


def _allowed(layer: Any) -> str:
    """``levels 1..3`` or, on a class-code layer, ``3 classes x 3 levels (codes 1..9)``."""
    classes, n = layer_classes(layer), _top_level(layer)
    if classes:
        return f"{len(classes)} classes x {n} levels (codes 1..{len(classes) * n})"
    return f"levels 1..{n}"


def set_level(layer: Any, level: int, *, on_message: Callable[[str], None] | None = None) -> bool:
    """Select a confidence level on a rater layer (0 = eraser); False when the scale lacks it.

    On a multi-class layer the class being painted is kept (code ``(class - 1) * L + level``).
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
    classes = layer_classes(layer)
    layer.selected_label = (current_class(layer) - 1) * n + level if classes else level
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
        label, top = int(layer.selected_label), top_code(layer)
        if 0 <= label <= top:
            return
        self.refused += 1
        n = _top_level(layer)
        layer.selected_label = top
        scale = layer_scale(layer)
        name = scale.names[n - 1] if scale is not None else str(n)
        classes = layer_classes(layer)
        what = f"class {classes[-1]}, level {n} ({name})" if classes else f"level {n} ({name})"
        self._on_message(
            f"{layer.name}: label {label} is not on the confidence scale ({_allowed(layer)}); "
            f"painting with {what}. Add levels under Confidence scale to use more."
        )

    def _on_paint(self, event: Any = None) -> None:
        layer, n = self.layer, top_code(self.layer)
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
            f"({_allowed(layer)}); the stroke was undone"
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


class LevelBar(ButtonBar):
    """Legend + picker: one coloured button per level (0 = eraser), ``on_pick(level)`` on click."""

    def rebuild(self, scale: ConfidenceScale | None, hue: Sequence[float]) -> None:
        """One button per level of *scale* in the rater's *hue* (none without a scale)."""
        if scale is None:
            self.set_buttons([])
            return
        specs = [ButtonSpec(0, "0 erase", "eraser (keys 0 or E)")]
        for k, (name, value) in enumerate(zip(scale.names, scale.values), start=1):
            # the swatch is the level's colour composited over a mid-grey image
            rgba = level_rgba(hue, value)
            a = float(rgba[3])
            specs.append(ButtonSpec(
                k, f"{k} {name}\n{value:.2g}", f"level {k}: {name}, soft value {value:.3g} (key {k})",
                [a * c + (1 - a) * 0.35 for c in rgba[:3]],
            ))
        self.set_buttons(specs)

    def show_level(self, level: int) -> None:
        """Check the button of *level* (without calling ``on_pick``)."""
        self.check(level)
