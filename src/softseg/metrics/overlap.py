"""Overlap and volume metrics: Dice, precision, recall, specificity, MSE, volumes.

Every function takes ``(prediction, truth)`` arrays of one shape (any number of dimensions)
with values in [0, 1]: binary masks or soft maps. With soft inputs the counts are soft:
``TP = sum p*g``, ``FP = sum p*(1-g)``, ``FN = sum (1-p)*g``, ``TN = sum (1-p)*(1-g)``; on
binary masks these are the usual counts. To evaluate a binarised prediction as the SoftSeg
paper does, binarise it first (:func:`softseg.metrics.binarize`).

Empty masks follow one policy for every metric (see :mod:`softseg.metrics`): an undefined
0/0 takes the metric's best value, ``x/0`` with ``x != 0`` its limit (+-inf).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.metrics._common import CHUNK, as_unit, pair, ratio, total, voxel_spacing

__all__ = [
    "absolute_volume_difference",
    "dice",
    "mse",
    "pairwise_dice",
    "precision",
    "recall",
    "relative_volume_difference",
    "specificity",
    "volume",
]


def sums(p: np.ndarray, g: np.ndarray) -> tuple[float, float, float]:
    """(sum p, sum g, sum p*g): exact counts for bool masks, else products in the inputs'
    precision accumulated in float64."""
    sp, sg = total(p), total(g)
    if p.dtype == np.bool_ and g.dtype == np.bool_:
        tp = float(np.count_nonzero(p & g))
    elif g.dtype == np.bool_:
        tp = float(p[g].sum(dtype=np.float64))
    elif p.dtype == np.bool_:
        tp = float(g[p].sum(dtype=np.float64))
    else:
        tp = float(np.multiply(p, g).sum(dtype=np.float64))
    return sp, sg, tp


def dice_from_sums(sp: float, sg: float, tp: float) -> float:
    return ratio(2.0 * tp, sp + sg, best=1.0)


def dice(prediction: Any, truth: Any) -> float:
    """Dice coefficient ``2 TP / (2 TP + FP + FN) = 2 sum(p g) / (sum p + sum g)``.

    Parameters
    ----------
    prediction, truth : ndarray, same shape, values in [0, 1] (soft counts for soft maps)

    Returns
    -------
    float in [0, 1]; 1.0 when both are empty.

    Raises
    ------
    InputError
        Shapes differ, a non-numeric dtype, NaN/Inf, or values outside [0, 1] beyond rounding.
    """
    p, g = pair(prediction, truth)
    return dice_from_sums(*sums(p, g))


def precision(prediction: Any, truth: Any) -> float:
    """Precision ``TP / (TP + FP) = sum(p g) / sum p``; 1.0 when the prediction is empty."""
    p, g = pair(prediction, truth)
    sp, _, tp = sums(p, g)
    return ratio(tp, sp, best=1.0)


def recall(prediction: Any, truth: Any) -> float:
    """Recall (sensitivity) ``TP / (TP + FN) = sum(p g) / sum g``; 1.0 when the truth is empty."""
    p, g = pair(prediction, truth)
    _, sg, tp = sums(p, g)
    return ratio(tp, sg, best=1.0)


def specificity(prediction: Any, truth: Any) -> float:
    """Specificity ``TN / (TN + FP) = sum((1-p)(1-g)) / sum(1-g)``; 1.0 when the truth is all
    foreground."""
    p, g = pair(prediction, truth)
    sp, sg, tp = sums(p, g)
    n = float(p.size)
    return ratio(n - sp - sg + tp, n - sg, best=1.0)


def mse(prediction: Any, truth: Any) -> float:
    """Mean squared error over **all** voxels, ``mean((p - g)**2)``, in [0, 1]."""
    p, g = pair(prediction, truth)
    return sq_sum(p, g) / p.size


def sq_sum(p: np.ndarray, g: np.ndarray) -> float:
    """``sum((p - g)**2)``: differences in the inputs' precision, float64 accumulation.

    ``p`` and ``g`` must have one shape; they are read block by block in C order.
    """
    if p.dtype == np.bool_ and g.dtype == np.bool_:
        return float(np.count_nonzero(p ^ g))
    dtype = np.result_type(p.dtype, g.dtype, np.float32)
    a, b = p.reshape(-1), g.reshape(-1)
    out = 0.0
    for start in range(0, a.size, CHUNK):  # block by block: temporaries stay in cache
        d = np.subtract(a[start : start + CHUNK], b[start : start + CHUNK], dtype=dtype)
        d = d.astype(np.float64, copy=False)
        np.multiply(d, d, out=d)  # no BLAS dot: its threads spin on a busy machine
        out += float(d.sum())
    return out


def volume(mask: Any, *, spacing: Sequence[float] | float | None = None) -> float:
    """Volume ``sum(values) * voxel volume`` in mm^3 (voxel units without ``spacing``).

    Parameters
    ----------
    mask : ndarray, values in [0, 1] (a soft map counts ``sum p``)
    spacing : sequence of float or float, optional
        Voxel size in mm per axis.

    Returns
    -------
    float, mm^3
    """
    arr = as_unit(mask, "mask")
    sp = voxel_spacing(spacing, arr.ndim)
    return total(arr) * float(np.prod(sp))


def relative_volume_difference(
    prediction: Any, truth: Any, *, spacing: Sequence[float] | float | None = None
) -> float:
    """Relative volume difference ``(V_truth - V_pred) / V_truth`` (SoftSeg paper's sign).

    Negative means over-segmentation, positive under-segmentation. The voxel volume cancels;
    ``spacing`` is accepted (and checked) for symmetry with :func:`volume`. Empty truth: 0
    when the prediction is empty too, else ``-inf``.
    """
    p, g = pair(prediction, truth)
    voxel_spacing(spacing, p.ndim)
    sp, sg, _ = sums(p, g)
    return ratio(sg - sp, sg, best=0.0)


def absolute_volume_difference(
    prediction: Any, truth: Any, *, spacing: Sequence[float] | float | None = None
) -> float:
    """Absolute volume difference ``|V_truth - V_pred| / V_truth`` = ``|RVD|``."""
    return abs(relative_volume_difference(prediction, truth, spacing=spacing))


def pairwise_dice(raters: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Dice between every pair of raters (soft counts for soft maps).

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, values in [0, 1]

    Returns
    -------
    ndarray (R, R), float64, symmetric, ones on the diagonal

    Raises
    ------
    InputError
        No rater, raters of different shapes, or values that are not in [0, 1].
    """
    if isinstance(raters, np.ndarray):
        if raters.ndim < 2:
            raise InputError(
                f"pairwise_dice: expected raters of shape (R, *spatial); got {raters.shape}"
            )
        items = list(raters)
    else:
        try:
            items = [np.asarray(r) for r in raters]
        except TypeError:
            raise InputError(
                "pairwise_dice: expected an array (R, *spatial) or a list of arrays; got "
                f"{type(raters).__name__}"
            ) from None
    if not items:
        raise InputError("pairwise_dice: no raters given")
    for i, item in enumerate(items[1:], start=1):
        if item.shape != items[0].shape:
            raise InputError(
                f"pairwise_dice: rater {i} has shape {item.shape} but rater 0 has shape "
                f"{items[0].shape}; all raters must be on the same voxel grid"
            )
    rows = [as_unit(r, f"rater {i}").reshape(-1) for i, r in enumerate(items)]
    if all(r.dtype == np.bool_ for r in rows):
        sizes = [float(np.count_nonzero(r)) for r in rows]
        inter = lambda i, j: float(np.count_nonzero(rows[i] & rows[j]))  # noqa: E731
    else:
        rows = [r.astype(np.float64, copy=False) for r in rows]
        sizes = [float(r.sum()) for r in rows]
        inter = lambda i, j: float(np.multiply(rows[i], rows[j]).sum())  # noqa: E731
    n = len(rows)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = dice_from_sums(sizes[i], sizes[j], inter(i, j))
    return out
