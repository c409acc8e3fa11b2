"""Multi-class confidence painting: one painted value holds a class and a confidence level.

Why our own code: this is the product's own encoding of what a rater paints (DESIGN.md
decisions 2 and 11), not a general-purpose format.

A rater paints the structures of a multi-class project (grey matter, white matter, CSF ...) in
**one** napari Labels layer, as ITK-SNAP and 3D Slicer raters are used to: classes are mutually
exclusive, a voxel holds at most one class. Each class is painted with a confidence level from
the rater's :class:`~softseg.confidence.ConfidenceScale` (``L`` levels). The painted integer
*code* of a voxel is

    code = 0                               background
    code = (c - 1) * L + l                 class c in 1..K at level l in 1..L

so that with one class (``K = 1``) the code *is* the level: single-class layers and files of
earlier releases are valid one-class codes. Codes run from 0 to ``K * L``.

Files on disk follow the multi-class contract (docs/training.md): one level map per rater and
class, ``rater-<id>_label-<class>.nii.gz``, i.e. :func:`class_level_maps` of the layer;
:func:`codes_from_class_level_maps` is the inverse (refusing voxels claimed by two classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from softseg.errors import InputError

__all__ = [
    "class_level_maps",
    "class_soft_maps",
    "codes_from_class_level_maps",
    "decode",
    "encode",
    "label_map",
    "max_code",
]


def _check_counts(n_classes: Any, n_levels: Any) -> tuple[int, int]:
    try:
        k, lv = int(n_classes), int(n_levels)
    except (TypeError, ValueError):
        raise InputError(
            f"numbers of classes and levels must be whole numbers; got {n_classes!r}, {n_levels!r}"
        ) from None
    if k < 1 or lv < 1 or k != n_classes or lv != n_levels:
        raise InputError(f"need at least 1 class and 1 level; got {n_classes!r} classes, {n_levels!r} levels")
    return k, lv


def max_code(n_classes: int, n_levels: int) -> int:
    """The largest painted code, ``K * L``."""
    k, lv = _check_counts(n_classes, n_levels)
    return k * lv


def encode(class_index: int, level: int, *, n_levels: int) -> int:
    """The code of class ``class_index`` (1..K) at ``level`` (1..L); 0 when either is 0.

    Raises
    ------
    InputError
        A negative class or a level outside 0..L.
    """
    c, lv = int(class_index), int(level)
    _check_counts(1, n_levels)
    if c < 0 or not 0 <= lv <= n_levels:
        raise InputError(f"class {c} level {lv}: classes are 1..K and levels 1..{n_levels} (0 = background)")
    if c == 0 or lv == 0:
        return 0
    return (c - 1) * int(n_levels) + lv


def _codes(codes: Any, n_classes: int, n_levels: int, name: str) -> np.ndarray:
    k, lv = _check_counts(n_classes, n_levels)
    arr = np.asarray(codes)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise InputError(f"{name}: painted codes must be whole numbers; got fractional or NaN values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{name}: painted codes must be integers; got dtype {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > k * lv:
            raise InputError(
                f"{name}: holds values {lo}..{hi} but {k} class(es) x {lv} level(s) allow 0..{k * lv}; "
                "repaint the voxels above the scale or add classes/levels"
            )
    return arr


def decode(codes: Any, *, n_classes: int, n_levels: int, name: str = "rater layer") -> tuple[np.ndarray, np.ndarray]:
    """Split painted codes into a class map and a level map.

    Parameters
    ----------
    codes : ndarray of int, any shape
        Values ``0..K*L``.
    n_classes, n_levels : int
        ``K`` and ``L``.
    name : str
        Used in error messages.

    Returns
    -------
    classes : ndarray, same shape, uint8 (uint16 when K > 255)
        0 = background, 1..K.
    levels : ndarray, same shape, uint8
        0 = background, 1..L.

    Raises
    ------
    InputError
        Non-integer values, or values outside ``0..K*L``.
    """
    arr = _codes(codes, n_classes, n_levels, name)
    lv = int(n_levels)
    painted = arr > 0
    shifted = np.where(painted, arr.astype(np.int64) - 1, 0)
    cdtype = np.uint8 if n_classes <= 255 else np.uint16
    classes = np.where(painted, shifted // lv + 1, 0).astype(cdtype)
    levels = np.where(painted, shifted % lv + 1, 0).astype(np.uint8)
    return classes, levels


def label_map(codes: Any, *, n_classes: int, n_levels: int, min_level: int = 1, name: str = "rater layer") -> np.ndarray:
    """The class of each voxel (0..K), counting voxels painted at ``min_level`` or above.

    This is the rater's integer label map for multi-label fusion (label vote, multi-label
    STAPLE). Returns uint8 (uint16 when K > 255).
    """
    classes, levels = decode(codes, n_classes=n_classes, n_levels=n_levels, name=name)
    if min_level > 1:
        classes = np.where(levels >= min_level, classes, 0).astype(classes.dtype)
    return classes


def class_level_maps(codes: Any, *, n_classes: int, n_levels: int, name: str = "rater layer") -> np.ndarray:
    """One level map per class: shape ``(K, *spatial)``, uint8, values 0..L.

    ``out[c - 1]`` is the level painted for class ``c`` (0 where another class or nothing is
    painted): the content of the per-class file ``rater-<id>_label-<class>.nii.gz``.
    """
    classes, levels = decode(codes, n_classes=n_classes, n_levels=n_levels, name=name)
    k = int(n_classes)
    out = np.zeros((k, *np.shape(levels)), dtype=np.uint8)
    for c in range(1, k + 1):
        np.copyto(out[c - 1], levels, where=classes == c)
    return out


def class_soft_maps(codes: Any, *, scale: Any, n_classes: int, name: str = "rater layer") -> np.ndarray:
    """Soft value of each class: shape ``(K, *spatial)``, float32 in [0, 1].

    ``out[c - 1]`` is the scale's value of the level painted for class ``c`` (0 elsewhere).
    The per-voxel sum over classes is the painted value, at most 1; the background's soft value is
    ``1 - out.sum(0)``.

    Parameters
    ----------
    codes : ndarray of int
    scale : softseg.confidence.ConfidenceScale
        The layer's scale (``L = scale.n_levels``).
    n_classes : int
    """
    maps = class_level_maps(codes, n_classes=n_classes, n_levels=scale.n_levels, name=name)
    return scale.lut[maps]


def codes_from_class_level_maps(
    level_maps: Sequence[Any] | np.ndarray, *, n_levels: int, names: Sequence[str] | None = None
) -> np.ndarray:
    """Inverse of :func:`class_level_maps`: per-class level maps ``(K, *spatial)`` -> codes.

    Parameters
    ----------
    level_maps : ndarray (K, *spatial) or sequence of K arrays, integer levels 0..L
    n_levels : int
    names : sequence of str, optional
        Name of each class's file, used in error messages.

    Returns
    -------
    ndarray (*spatial), uint8 (uint16 when K*L > 255)

    Raises
    ------
    InputError
        Shapes differ, a level outside 0..L, or a voxel painted for two classes (classes are
        mutually exclusive in one rater's layer).
    """
    maps = [np.asarray(m) for m in level_maps]
    if not maps:
        raise InputError("no class maps given")
    k, lv = _check_counts(len(maps), n_levels)
    labels = list(names) if names is not None else [f"class {c}" for c in range(1, k + 1)]
    shape = maps[0].shape
    for m, nm in zip(maps, labels):
        if m.shape != shape:
            raise InputError(f"{nm}: shape {m.shape} differs from {labels[0]}'s {shape}; put every class on one grid")
    dtype = np.uint8 if k * lv <= 255 else np.uint16
    out = np.zeros(shape, dtype=dtype)
    claimed = np.zeros(shape, dtype=bool)
    for c, (m, nm) in enumerate(zip(maps, labels), start=1):
        arr = _codes(m, 1, lv, nm)
        painted = arr > 0
        both = painted & claimed
        if both.any():
            where = tuple(int(i[0]) for i in np.nonzero(both))
            raise InputError(
                f"{nm}: voxel {where} is also painted for another class; a rater's classes must not overlap"
            )
        out[painted] = ((c - 1) * lv + arr[painted]).astype(dtype)
        claimed |= painted
    return out
