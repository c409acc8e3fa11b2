"""Classes of a multi-class rater layer: the class picker, its keys, and the class of a code.

A multi-class project paints every class in **one** Labels layer per rater (the lead's decision,
CONTRACTS.md; ITK-SNAP / 3D Slicer habit: classes are mutually exclusive). The painted value is
the class code ``(class - 1) * L + level`` (:mod:`softseg.class_levels`), so the layer's
``selected_label`` holds both the class and the level being painted: picking a class keeps the
level, picking a level keeps the class (:func:`select_code`).

* :class:`ClassBar` — one button per class in its colour, beside the level bar.
* :func:`bind_class_keys` — on a class-code layer only: ``Alt-1`` .. ``Alt-9`` pick class 1..9,
  ``C`` / ``Shift-C`` the next / previous class. None of them is a key of napari's Labels
  layer (its digits, E, P, F, L, Z, M, X, B, -, =, [, ] stay napari's or pick levels).
* :func:`parse_classes` — the *Classes* box: names separated by commas, checked as a
  dataset.json's ``"classes"`` are (:class:`softseg.dataset_json.ClassList`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from softseg.class_levels import decode, encode
from softseg.dataset_json import ClassList
from softseg.errors import InputError

from napari_softseg._raters import class_hues, layer_classes, layer_scale, level_rgba
from napari_softseg.widgets.annotate._buttons import ButtonBar, ButtonSpec

__all__ = [
    "CLASS_KEYS",
    "ClassBar",
    "bind_class_keys",
    "current_class",
    "current_level",
    "parse_classes",
    "rescaled",
    "select_code",
    "top_code",
    "unbind_class_keys",
]

#: Class keys on a multi-class rater layer: Alt-<k> picks class k; C / Shift-C cycle.
CLASS_KEYS = tuple(f"Alt-{k}" for k in range(1, 10)) + ("C", "Shift-C")


def parse_classes(text: str) -> tuple[str, ...] | None:
    """Class names typed in the *Classes* box (``"grey matter, white matter, csf"``).

    Returns None for an empty box or a single name (one structure: levels only).

    Raises
    ------
    InputError
        Names a dataset.json would refuse (twice the same, "background", no file-name key).
    """
    names = [n.strip() for n in str(text or "").split(",") if n.strip()]
    if len(names) < 2:
        return None
    return ClassList.from_names(names, source="Classes").names


def top_code(layer: Any) -> int:
    """The largest value the layer may hold: ``K * L`` (``L`` for a one-class layer)."""
    scale = layer_scale(layer)
    n = scale.n_levels if scale is not None else 1
    classes = layer_classes(layer)
    return n * (len(classes) if classes else 1)


def _levels_of(layer: Any) -> int:
    scale = layer_scale(layer)
    return scale.n_levels if scale is not None else 1


def current_class(layer: Any) -> int:
    """Class (1..K) of the label the layer paints with (1 for a one-class layer)."""
    classes = layer_classes(layer)
    if not classes:
        return 1
    label, n = int(layer.selected_label), _levels_of(layer)
    if not 1 <= label <= n * len(classes):
        return 1
    return (label - 1) // n + 1


def current_level(layer: Any) -> int:
    """Level (1..L) of the label the layer paints with."""
    label, n = int(layer.selected_label), _levels_of(layer)
    if label < 1 or label > top_code(layer):
        return n
    return (label - 1) % n + 1


def select_code(layer: Any, *, class_index: int | None = None, level: int | None = None) -> int:
    """Paint with class *class_index* (kept when None) at *level* (kept when None).

    Returns the code now selected. The brush comes on unless fill or polygon is active.

    Raises
    ------
    InputError
        A class or level the layer does not have.
    """
    classes = layer_classes(layer)
    k = len(classes) if classes else 1
    n = _levels_of(layer)
    c = current_class(layer) if class_index is None else int(class_index)
    lv = current_level(layer) if level is None else int(level)
    if not 1 <= c <= k:
        raise InputError(f"{layer.name}: no class {c}; this layer has classes 1..{k}")
    if not 1 <= lv <= n:
        raise InputError(f"{layer.name}: no level {lv}; this scale has levels 1..{n} (0 or E erases)")
    code = encode(c, lv, n_levels=n) if classes else lv
    layer.selected_label = code
    if str(layer.mode) not in ("paint", "fill", "polygon"):
        layer.mode = "paint"
    return code


def bind_class_keys(layer: Any, on_class: Callable[[Any, int], None]) -> None:
    """Bind :data:`CLASS_KEYS` on a class-code layer; ``on_class(layer, k)`` gets class 1..K
    (the cycling keys wrap around). Nothing is bound on a one-class layer."""
    classes = layer_classes(layer)
    if not classes:
        return
    k_max = len(classes)
    for k in range(1, 10):

        def pick(lyr: Any, k: int = k) -> None:
            on_class(lyr, k)

        pick.__doc__ = f"Select class {k}"
        layer.bind_key(f"Alt-{k}", pick, overwrite=True)

    def step(lyr: Any, by: int) -> None:
        on_class(lyr, (current_class(lyr) - 1 + by) % k_max + 1)

    def next_class(lyr: Any) -> None:
        step(lyr, +1)

    def previous_class(lyr: Any) -> None:
        step(lyr, -1)

    next_class.__doc__ = "Select the next class"
    previous_class.__doc__ = "Select the previous class"
    layer.bind_key("C", next_class, overwrite=True)
    layer.bind_key("Shift-C", previous_class, overwrite=True)


def unbind_class_keys(layer: Any) -> None:
    for key in CLASS_KEYS:
        try:
            layer.bind_key(key, None)
        except (KeyError, ValueError, TypeError):
            pass


class ClassBar(ButtonBar):
    """One checkable button per class, in the class colour; ``on_pick(k)`` on a click."""

    def __init__(self, on_pick: Callable[[int], None]) -> None:
        super().__init__(on_pick)
        self.setVisible(False)

    def rebuild(self, classes: Sequence[str] | None) -> None:
        """Buttons for *classes* (hidden for a one-class layer)."""
        self.setVisible(bool(classes))
        self.set_buttons([
            ButtonSpec(k, name if k > 9 else f"{name}\nAlt-{k}",
                       f"class {k}: {name} (Alt-{k}; C / Shift-C next / previous class)",
                       level_rgba(hue, 1.0)[:3], bold=True)
            for k, (name, hue) in enumerate(zip(classes or (), class_hues(classes or ())), start=1)
        ])

    def show_class(self, k: int) -> None:
        """Check the button of class *k* (without calling ``on_pick``)."""
        self.check(k)


def rescaled(layer: Any, scale: Any) -> np.ndarray | None:
    """The layer's values for a new confidence *scale*, or None when they stay as they are.

    A multi-class layer whose number of levels changes keeps each voxel's class and level (its
    codes ``(class - 1) * L + level`` are rewritten for the new ``L``).

    Raises
    ------
    InputError
        The layer holds a level the new scale does not have.
    """
    classes, old = layer_classes(layer), layer_scale(layer)
    data = np.asarray(layer.data)
    if classes and old is not None:
        cls, levels = decode(data, n_classes=len(classes), n_levels=old.n_levels, name=f"layer {layer.name!r}")
    else:
        cls, levels = None, data
    top = int(levels.max()) if levels.size else 0
    if top > scale.n_levels:
        raise InputError(
            f"layer {layer.name!r} has voxels at level {top} but the new scale has {scale.n_levels} "
            "levels; erase those voxels first or keep more levels"
        )
    if cls is None or old is None or old.n_levels == scale.n_levels:
        return None
    codes = np.where(cls > 0, (cls.astype(np.int64) - 1) * scale.n_levels + levels, 0)
    return codes.astype(np.uint8 if len(classes) * scale.n_levels <= 255 else np.uint16)
