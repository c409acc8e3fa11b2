"""Input checks and small helpers shared by the metric modules (private).

Every metric validates its inputs here, once, so that the same bad input gives the same one-line
:class:`~softseg.errors.InputError` on every path (Python, CLI, widgets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from softseg.checks import as_probability
from softseg.errors import InputError

#: Voxels per block in the streaming loops: temporaries stay in cache.
CHUNK = 1 << 16
_HINT = "give probabilities, soft maps or 0/1 masks"


def as_unit(x: Any, name: str) -> np.ndarray:
    """Values in [0, 1] as bool (masks) or float (soft maps), checked once.

    Bool arrays are returned as they are; integer arrays must hold only 0 and 1 and become
    bool; floating-point values within :data:`softseg.checks.PROBABILITY_TOLERANCE` of [0, 1]
    are accepted and clipped (:func:`softseg.checks.as_probability`), beyond it refused with the
    true extremes at full precision.
    """
    arr = np.asarray(x)
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be a numeric or boolean array; got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}); give at least one voxel")
    arr = as_probability(arr, name=name, hint=_HINT)
    if arr.dtype.kind in "iu":  # whole numbers in [0, 1]: a mask; bool takes the fast paths
        return arr != 0
    return arr


def as_finite(x: Any, name: str) -> np.ndarray:
    """A numeric, non-empty array without NaN/Inf (labels, class indices)."""
    arr = np.asarray(x)
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be a numeric or boolean array; got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}); give at least one voxel")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{name}: contains {bad} NaN/Inf values; fix or mask them first")
    return arr


def same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"{names[0]} shape {a.shape} and {names[1]} shape {b.shape} differ; "
            "both must be on the same voxel grid"
        )


def pair(
    prediction: Any, truth: Any, *, names: tuple[str, str] = ("prediction", "truth")
) -> tuple[np.ndarray, np.ndarray]:
    """Two arrays of one shape with values in [0, 1] (see :func:`as_unit`)."""
    pred, ref = np.asarray(prediction), np.asarray(truth)
    same_shape(pred, ref, names)
    return as_unit(pred, names[0]), as_unit(ref, names[1])


def voxel_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Voxel size in mm per axis (1 mm without ``spacing``); positive and finite."""
    if spacing is None:
        return (1.0,) * ndim
    try:
        if np.isscalar(spacing):
            values = (float(spacing),) * ndim  # type: ignore[arg-type]
        else:
            values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"spacing must be numbers (mm per axis); got {spacing!r}") from None
    if len(values) != ndim:
        raise InputError(f"spacing has {len(values)} values for an array with {ndim} axes")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"spacing must be positive finite mm values; got {values}")
    return values


def check_threshold(threshold: Any, name: str = "threshold") -> float:
    """A binarisation threshold in (0, 1] (``p >= threshold`` is foreground)."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in (0, 1]; got {threshold!r}") from None
    if not (0.0 < t <= 1.0):
        raise InputError(f"{name} must lie in (0, 1]; got {threshold!r}")
    return t


def _whole(value: Any) -> bool:
    """An integer (numpy's included), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_n_bins(n_bins: Any) -> int:
    if not _whole(n_bins) or n_bins < 1:
        raise InputError(f"n_bins must be an integer >= 1; got {n_bins!r}")
    return int(n_bins)


def check_min_overlap(min_overlap: Any) -> int:
    if not _whole(min_overlap) or min_overlap < 1:
        raise InputError(f"min_overlap must be a whole number of voxels >= 1; got {min_overlap!r}")
    return int(min_overlap)


def check_percentile(percentile: Any) -> float:
    try:
        q = float(percentile)
    except (TypeError, ValueError):
        raise InputError(f"percentile must be a number in [0, 100]; got {percentile!r}") from None
    if not 0.0 <= q <= 100.0:
        raise InputError(f"percentile must lie in [0, 100]; got {percentile!r}")
    return q


def check_connectivity(connectivity: Any, ndim: int) -> int:
    rank = min(2, ndim) if connectivity is None else connectivity
    if not _whole(rank) or not 1 <= rank <= ndim:
        raise InputError(f"connectivity must be an integer in 1..{ndim}; got {connectivity!r}")
    return int(rank)


def ratio(num: float, den: float, *, best: float) -> float:
    """``num / den``; the empty-mask policy when ``den == 0``: ``best`` for 0/0, else +-inf."""
    if den > 0:
        return num / den
    return best if num == 0 else math.copysign(math.inf, num)


def binarize_raw(arr: np.ndarray, threshold: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """``arr >= threshold`` compared in the map's own precision (no validation)."""
    if arr.dtype == np.bool_:
        if out is None:
            return arr
        np.copyto(out, arr)
        return out
    t = arr.dtype.type(threshold) if arr.dtype.kind == "f" else threshold
    return np.greater_equal(arr, t, out=out)


def total(a: np.ndarray) -> float:
    """Sum of a mask (exact count) or of a soft map (float64 accumulation)."""
    if a.dtype == np.bool_:
        return float(np.count_nonzero(a))
    return float(a.sum(dtype=np.float64))


def _axis_flags(a: np.ndarray) -> list[np.ndarray]:
    """Per axis, whether each index holds a non-zero value (two passes over 3D data)."""
    if a.ndim == 1:
        return [a != 0]
    first = np.any(a, axis=0)  # (*shape[1:]): one full pass
    flags = [np.any(a, axis=tuple(range(1, a.ndim)))]  # second full pass
    rest = _axis_flags(first)
    return flags + rest


def support_box(*arrays: np.ndarray | None, pad: int = 0) -> tuple[slice, ...]:
    """Bounding box (one slice per axis) of the voxels that are non-zero in any of ``arrays``.

    Parameters
    ----------
    *arrays : ndarray or None, all of one shape
        Masks or soft maps; ``None`` entries are skipped.
    pad : int, >= 0
        Voxels added on each side (clipped to the array).

    Returns
    -------
    tuple of slice
        ``slice(0, 0)`` on every axis when every array is all zero (an empty box).

    Notes
    -----
    Overlap metrics, binarised volumes at thresholds > 0, lesion components and surfaces do
    not change when computed inside this box, which makes live readouts cheap on large
    volumes.
    """
    items = [np.asarray(a) for a in arrays if a is not None]
    if not items:
        raise InputError("support_box needs at least one array")
    shape = items[0].shape
    for a in items[1:]:
        if a.shape != shape:
            raise InputError(f"support_box: arrays of shapes {shape} and {a.shape} differ")
    occupied = None
    for a in items:
        flags = _axis_flags(a)
        occupied = flags if occupied is None else [o | f for o, f in zip(occupied, flags)]
    box = []
    for axis, flags in enumerate(occupied or []):
        idx = np.flatnonzero(flags)
        if idx.size == 0:
            return tuple(slice(0, 0) for _ in shape)
        box.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + 1 + pad, shape[axis])))
    return tuple(box)


def union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    """The smallest box holding two boxes (an empty box adds nothing)."""
    if box_size(a) == 0:
        return b
    if box_size(b) == 0:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def box_size(box: tuple[slice, ...]) -> int:
    return int(np.prod([max(s.stop - s.start, 0) for s in box]))
