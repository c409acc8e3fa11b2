"""Binarisation, threshold sweeps and the one optimal-threshold search (SoftSeg paper).

Binarisation is ``value >= threshold``, the convention of the papers' toolbox (ivadomed),
compared in the map's own precision: the threshold is rounded to float32 for a float32 map, so
a value stored as float32(0.35) is foreground at threshold 0.35, and the slider, the sweep and
the metric table agree voxel for voxel.

The SoftSeg paper picks, per model, the threshold in 0.05, 0.10, ..., 0.95 that maximises Dice
on the training + validation images (:func:`optimal_threshold`); the trainer, ``softseg
evaluate --optimal`` and the widgets all call this one search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.metrics._common import (
    as_unit,
    binarize_raw,
    box_size,
    check_threshold,
    pair,
    ratio,
    total,
    voxel_spacing,
)
from softseg.metrics.overlap import dice_from_sums

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ThresholdSweep",
    "band",
    "binarize",
    "optimal_threshold",
    "threshold_curves",
    "threshold_readouts",
    "threshold_sweep",
    "volume_ml",
]

#: The SoftSeg paper's threshold grid: 0.05, 0.10, ..., 0.95.
DEFAULT_THRESHOLDS = np.round(np.arange(1, 20) * 0.05, 10)


def volume_ml(amount: float, spacing: Sequence[float]) -> float:
    """``amount`` voxels (a count, or ``sum p`` for a soft volume) in mL.

    The one conversion every table, readout and curve uses: ``amount * prod(spacing) / 1000``
    with ``spacing`` the validated voxel size in mm.
    """
    return amount * float(np.prod(spacing)) / 1000.0


def binarize(
    prob: Any, threshold: float = 0.5, *, out: np.ndarray | None = None, checked: bool = False
) -> np.ndarray:
    """``prob >= threshold`` as a bool array, compared in the map's own precision.

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
    threshold : float in (0, 1]
    out : ndarray of bool, same shape, optional
        Written in place (e.g. a bool view of an overlay layer's uint8 array).
    checked : bool
        ``prob`` was already validated (e.g. once when a layer was chosen): skip the value
        check, which costs two passes over the array (a slider moving over a large volume).

    Returns
    -------
    ndarray of bool, same shape (``out`` when given)
    """
    t = check_threshold(threshold)
    arr = np.asarray(prob) if checked else as_unit(prob, "prob")
    _check_out(out, arr.shape)
    return binarize_raw(arr, t, out=out)


def band(
    prob: Any, low: float, high: float, *, out: np.ndarray | None = None, checked: bool = False
) -> np.ndarray:
    """The uncertain band ``low <= prob < high`` as a bool array (``out`` reused if given).

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
    low, high : float, ``0 <= low <= high <= 1``
    out, checked
        As :func:`binarize`.
    """
    lo, hi = float(low), float(high)
    if not (0.0 <= lo <= hi <= 1.0):
        raise InputError(f"band needs 0 <= low <= high <= 1; got low={low!r} and high={high!r}")
    arr = np.asarray(prob) if checked else as_unit(prob, "prob")
    _check_out(out, arr.shape)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    cast = arr.dtype.type if arr.dtype.kind == "f" else float
    mask = np.greater_equal(arr, cast(lo), out=out)
    mask &= arr < cast(hi)
    return mask


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if out is not None and (out.shape != shape or out.dtype != np.bool_):
        raise InputError(f"out must be a bool array of shape {shape}; got {out.dtype} {out.shape}")


# ------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True, eq=False)
class ThresholdSweep:
    """Dice and volume of ``prob >= t`` for each threshold t.

    Attributes
    ----------
    thresholds : ndarray (T,), increasing
    dice : ndarray (T,) or None
        Dice of the binarised prediction against the truth (soft truth -> soft counts);
        None without a truth.
    volume_ml : ndarray (T,)
        Volume of the binarised prediction, mL (1 mm^3 voxels without spacing).
    truth_volume_ml : float
        Volume of the truth (sum of its values times the voxel volume), mL; NaN without truth.
    """

    thresholds: np.ndarray
    dice: np.ndarray | None
    volume_ml: np.ndarray
    truth_volume_ml: float

    @property
    def best_threshold(self) -> float:
        """The threshold with the highest Dice (the lowest one among ties)."""
        if self.dice is None:
            raise InputError("a sweep without a truth has no Dice-optimal threshold")
        return float(self.thresholds[int(np.argmax(self.dice))])


def check_thresholds(thresholds: Sequence[float] | None) -> np.ndarray:
    """A strictly increasing threshold grid in (0, 1] (default :data:`DEFAULT_THRESHOLDS`)."""
    if thresholds is None:
        return DEFAULT_THRESHOLDS.copy()
    try:
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"thresholds must be numbers in (0, 1]; got {thresholds!r}") from None
    if t.size == 0:
        raise InputError("thresholds is empty; give at least one value in (0, 1]")
    if not np.all(np.isfinite(t)) or t.min() <= 0 or t.max() > 1:
        raise InputError(f"thresholds must lie in (0, 1]; got {t.tolist()}")
    if np.any(np.diff(t) <= 0):
        raise InputError("thresholds must be strictly increasing")
    return t


def threshold_sweep(
    prob: Any,
    truth: Any | None = None,
    *,
    thresholds: Sequence[float] | None = None,
    spacing: Sequence[float] | float | None = None,
) -> ThresholdSweep:
    """Dice and predicted volume at each threshold (SoftSeg paper, fig. 3), in one pass.

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
    truth : ndarray, same shape, values in [0, 1], optional
        Without it only the volumes are computed.
    thresholds : sequence of float, optional
        Strictly increasing values in (0, 1]; default 0.05, 0.10, ..., 0.95.
    spacing : sequence of float, optional
        Voxel size in mm, for the volumes.

    Returns
    -------
    ThresholdSweep
        ``dice[i] == dice(prob >= thresholds[i], truth)`` exactly.
    """
    if truth is None:
        p, g = as_unit(prob, "prob"), None
    else:
        p, g = pair(prob, truth, names=("prob", "truth"))
    return sweep(p, g, check_thresholds(thresholds), voxel_spacing(spacing, p.ndim))


def sweep(
    p: np.ndarray, g: np.ndarray | None, t: np.ndarray, sp: Sequence[float]
) -> ThresholdSweep:
    """:func:`threshold_sweep` on validated arrays."""
    pf = p.reshape(-1)
    if pf.dtype == np.bool_:
        pf = pf.view(np.uint8)
    # compare in the prediction's own dtype, exactly as ``p >= t`` does
    t_cmp = t.astype(pf.dtype) if pf.dtype.kind == "f" else t
    keep = pf >= t_cmp[0]
    idx = np.searchsorted(t_cmp, pf[keep], side="right") - 1  # largest threshold <= p
    count = np.bincount(idx, minlength=t.size)[::-1].cumsum()[::-1].astype(np.float64)
    volumes = np.array([volume_ml(c, sp) for c in count])
    if g is None:
        return ThresholdSweep(t.copy(), None, volumes, float("nan"))
    gf = g.reshape(-1)
    sum_g = total(gf)
    gs = gf[keep].astype(np.float64)
    tp = np.bincount(idx, weights=gs, minlength=t.size)[::-1].cumsum()[::-1]
    dice_values = np.array([dice_from_sums(c, sum_g, x) for c, x in zip(count, tp)])
    return ThresholdSweep(t.copy(), dice_values, volumes, volume_ml(sum_g, sp))


def optimal_threshold(
    prob: Any | Sequence[Any],
    truth: Any | Sequence[Any],
    *,
    thresholds: Sequence[float] | None = None,
) -> float:
    """The threshold that maximises Dice (SoftSeg paper: on training + validation images).

    Parameters
    ----------
    prob, truth : ndarray, or sequences of ndarrays of equal length
        One image, or several (the mean Dice over images is maximised). Values in [0, 1]
        (within rounding; see :func:`softseg.checks.as_probability`).
    thresholds : sequence of float, optional
        Default 0.05, 0.10, ..., 0.95.

    Returns
    -------
    float
        The best threshold; the lowest one among ties.

    Raises
    ------
    InputError
        Unequal numbers of predictions and truths, shapes that differ, values outside [0, 1].
    """
    t = check_thresholds(thresholds)
    if isinstance(prob, np.ndarray) or not isinstance(prob, Sequence):
        probs, truths = [prob], [truth]
    else:
        probs = list(prob)
        truths = [truth] if isinstance(truth, np.ndarray) else list(truth)
        if len(probs) != len(truths) or not probs:
            raise InputError(
                f"optimal_threshold: got {len(probs)} predictions and {len(truths)} truths; "
                "give one truth per prediction"
            )
    mean = np.zeros(t.size)
    for i, (pi, gi) in enumerate(zip(probs, truths)):
        p, g = pair(pi, gi, names=(f"prob[{i}]", f"truth[{i}]"))
        mean += sweep(p, g, t, (1.0,) * p.ndim).dice
    return float(t[int(np.argmax(mean))])


# --------------------------------------------------------------------- live readouts
def threshold_readouts(
    mask: Any,
    *,
    soft_volume_ml: float,
    reference: Any | None = None,
    spacing: Sequence[float] | None = None,
    box: tuple[slice, ...] | None = None,
) -> dict[str, float]:
    """Live readouts of one binarised prediction (the Threshold widget), with the keys and
    the values of :func:`softseg.metrics.evaluate`.

    Parameters
    ----------
    mask : ndarray of bool (or 0/1 integers), shape (*spatial)
        The binarised prediction (or the band ``lo <= p < hi``).
    soft_volume_ml : float
        ``sum p`` times the voxel volume of the soft prediction, mL (constant while a slider
        moves; :func:`softseg.metrics.volume` / 1000).
    reference : ndarray, same shape, values in [0, 1], optional
        Binary or soft reference, binarised at 0.5 as in the metric table; adds ``dice``,
        ``precision`` and ``recall``.
    spacing : sequence of float (mm), optional
    box : tuple of slice, optional
        A :func:`softseg.metrics.support_box` of the prediction and the reference; the counts
        are taken inside it (same values, less work). Voxels outside it must be 0 in ``mask``
        and below 0.5 in ``reference``.

    Returns
    -------
    dict
        ``binary_volume_ml`` and ``soft_volume_ml``; with a reference also ``dice``,
        ``precision``, ``recall``.
    """
    m = np.asarray(mask)
    sp = voxel_spacing(spacing, m.ndim)
    if box is None or box_size(box) == 0:
        box = tuple(slice(None) for _ in m.shape)
    m = as_unit(m[box], "mask")
    if m.dtype != np.bool_:
        raise InputError("mask must be binary (bool or 0/1); binarise the prediction first")
    n_pred = float(np.count_nonzero(m))
    out = {"binary_volume_ml": volume_ml(n_pred, sp), "soft_volume_ml": float(soft_volume_ml)}
    if reference is not None:
        ref = np.asarray(reference)
        if ref.shape != np.shape(mask):
            raise InputError(
                f"reference shape {ref.shape} and mask shape {np.shape(mask)} differ; "
                "both must be on the same voxel grid"
            )
        r = binarize_raw(as_unit(ref[box], "reference"), 0.5)
        n_ref = float(np.count_nonzero(r))
        tp = float(np.count_nonzero(m & r))
        out["dice"] = dice_from_sums(n_pred, n_ref, tp)
        out["precision"] = ratio(tp, n_pred, best=1.0)
        out["recall"] = ratio(tp, n_ref, best=1.0)
    return out


def threshold_curves(
    prediction: Any,
    *,
    reference: Any | None = None,
    thresholds: Sequence[float] | None = None,
    spacing: Sequence[float] | None = None,
) -> dict[str, np.ndarray | None]:
    """Volume (and Dice, with a reference) against threshold: the Threshold widget's plot.

    The reference is binarised at 0.5, as in the metric table.

    Returns
    -------
    dict
        ``thresholds`` (T,), ``volume_ml`` (T,), ``dice`` (T,) or None.
    """
    from softseg.metrics._common import support_box

    t = check_thresholds(thresholds)
    p = as_unit(prediction, "prediction")
    sp = voxel_spacing(spacing, p.ndim)
    g = None
    if reference is not None:
        ref = np.asarray(reference)
        if ref.shape != p.shape:
            raise InputError(
                f"reference shape {ref.shape} and prediction shape {p.shape} differ; "
                "both must be on the same voxel grid"
            )
        g = binarize_raw(as_unit(ref, "reference"), 0.5)
    box = support_box(p, g)
    if box_size(box) == 0:
        box = tuple(slice(0, 1) for _ in p.shape)  # all zero: one background voxel says it all
    s = sweep(p[box], None if g is None else g[box], t, sp)
    return {"thresholds": t, "volume_ml": s.volume_ml, "dice": s.dice}
