"""Candidates side by side: metrics tables, plot data, the papers' figures and an HTML report.

The same engine serves the napari "Compare candidates" widget (one subject, layers), the
``softseg compare MODEL...`` command (trained models on a dataset's test subjects) and the
repeated-training protocol ``softseg compare --train ...`` (mean ± std tables and Wilcoxon tests
here; the training loop over splits in :mod:`softseg.protocol`).

Every number comes from :mod:`softseg.metrics`; this module only binarises, pools and arranges.

Conventions
-----------
* A prediction is **soft**: a floating-point array with values in [0, 1]. It is binarised as
  ``prediction >= threshold`` with the threshold cast to the prediction's dtype (so the slider,
  the table and the sweep agree voxel for voxel on float32 data).
* The reference may be binary or soft. Overlap metrics (Dice, precision, recall, volume
  differences, lesion detection) and calibration (ECE, reliability diagram) use the reference
  binarised at 0.5 (the papers binarise STAPLE's probability the same way). MSE and the soft
  volume difference use the reference as given. Brier score and the rater entropy use the rater
  average when raters are given (label-fusion paper), otherwise the reference as given.
* Volumes are in mL: voxel count (or Σp for the soft volume) × voxel volume (mm³) / 1000.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.io import atomic_path, write_json

__all__ = [
    "FIGURES",
    "METRICS",
    "SWEEP_THRESHOLDS",
    "Comparison",
    "Curves",
    "MetricSpec",
    "PreparedReference",
    "Summary",
    "binarize",
    "band",
    "check_prediction",
    "check_reference",
    "compare_predictions",
    "available_figures",
    "draw_figure",
    "evaluate_subject",
    "format_value",
    "min_wilcoxon_pairs",
    "pool_curves",
    "prepare_reference",
    "render_figures",
    "summarize",
    "support_box",
    "threshold_curves",
    "threshold_readouts",
    "volume_curve",
    "voxel_volume_ml",
    "wilcoxon_pvalues",
    "write_report",
]

#: Thresholds of the Dice/volume sweeps: 0.05 ... 0.95 step 0.05 (SoftSeg paper, Fig. 3).
SWEEP_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
_HIST_BINS = 50


@dataclass(frozen=True)
class MetricSpec:
    """How one column of the table is named, shown and judged.

    Attributes
    ----------
    title : str
        Column header (the papers' names).
    scale : float
        Display factor (100 for percentages); values are stored unscaled.
    unit : str
        Shown after the title, e.g. ``"%"`` or ``"mL"``.
    best : {"max", "min", "zero", ""}
        What a better value is: larger, smaller, closer to 0, or not a score.
    digits : int
        Decimals shown after scaling.
    """

    title: str
    scale: float = 1.0
    unit: str = ""
    best: str = ""
    digits: int = 2

    @property
    def header(self) -> str:
        return f"{self.title} [{self.unit}]" if self.unit else self.title


#: Table columns in display order (a plain dict, STYLE.md 6).
METRICS: dict[str, MetricSpec] = {
    "threshold": MetricSpec("Threshold", digits=2),
    "dice": MetricSpec("Dice", 100.0, "%", "max", 1),
    "precision": MetricSpec("Precision", 100.0, "%", "max", 1),
    "recall": MetricSpec("Recall", 100.0, "%", "max", 1),
    "avd": MetricSpec("AVD", 100.0, "%", "min", 1),
    "rvd": MetricSpec("RVD", 100.0, "%", "zero", 1),
    "soft_rvd": MetricSpec("Soft RVD", 100.0, "%", "zero", 1),
    "mse": MetricSpec("MSE", 100.0, "%", "min", 3),
    "ltpr": MetricSpec("LTPR", 100.0, "%", "max", 1),
    "lfdr": MetricSpec("LFDR", 100.0, "%", "min", 1),
    "ece": MetricSpec("ECE", 100.0, "%", "min", 2),
    "brier": MetricSpec("Brier", 1e4, "×1e-4", "min", 2),
    "entropy": MetricSpec("Entropy", 1.0, "nats", "", 1),
    "rater_entropy": MetricSpec("Rater entropy", 1.0, "nats", "", 1),
    "entropy_error": MetricSpec("|ΔEntropy|", 1.0, "nats", "min", 1),
    "soft_volume_ml": MetricSpec("Soft volume", 1.0, "mL", "", 3),
    "binary_volume_ml": MetricSpec("Binary volume", 1.0, "mL", "", 3),
    "reference_volume_ml": MetricSpec("Reference volume", 1.0, "mL", "", 3),
}


def format_value(name: str, value: float) -> str:
    """Text of one table cell: the value scaled and rounded as :data:`METRICS` says."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    spec = METRICS.get(name, MetricSpec(name))
    return f"{value * spec.scale:.{spec.digits}f}"


# --------------------------------------------------------------------------------------------
# input checks and binarisation
# --------------------------------------------------------------------------------------------


def check_prediction(prediction: np.ndarray, *, name: str = "prediction") -> np.ndarray:
    """Refuse anything that is not a soft prediction (floating point, finite, in [0, 1]).

    Parameters
    ----------
    prediction : ndarray
        Candidate soft prediction.
    name : str
        Used in the error message (a layer or file name).

    Returns
    -------
    ndarray
        The same array (not copied).

    Raises
    ------
    InputError
        Integer/bool labels, NaN/Inf, or values outside [0, 1] (an image, logits).
    """
    arr = np.asarray(prediction)
    if arr.dtype.kind not in "f":
        raise InputError(
            f"{name!r} holds {arr.dtype} labels, not a soft prediction: choose a floating-point "
            "probability map in [0, 1] (from the Predict widget or `softseg predict`), or use the "
            "labels as the reference instead"
        )
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name!r} contains NaN or Inf values; a soft prediction must be finite")
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{name!r} has values from {lo:.4g} to {hi:.4g}, outside [0, 1]: it looks like an "
            "image or logits, not a soft prediction; choose a probability map"
        )
    return arr


def check_reference(reference: np.ndarray, shape: Sequence[int], *, name: str = "reference",
                    against: str = "prediction") -> np.ndarray:
    """Check a reference (binary or soft in [0, 1]) has the prediction's shape; returns float32."""
    arr = np.asarray(reference)
    if tuple(arr.shape) != tuple(shape):
        raise InputError(
            f"{name!r} has shape {tuple(arr.shape)} but {against!r} has shape {tuple(shape)}; "
            "they must cover the same voxels (resample one onto the other first)"
        )
    if arr.dtype.kind == "b":
        return arr.astype(np.float32)
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
        raise InputError(
            f"{name!r} has values from {lo:.4g} to {hi:.4g}; a reference must be binary or soft "
            "in [0, 1] (for confidence-level labels convert them with their confidence scale)"
        )
    return arr.astype(np.float32, copy=False)


def _cast_threshold(prediction: np.ndarray, threshold: float) -> np.generic:
    dtype = prediction.dtype if prediction.dtype.kind == "f" else np.float64
    return np.asarray(threshold, dtype=dtype)[()]


def binarize(prediction: np.ndarray, threshold: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """``prediction >= threshold`` (threshold cast to the prediction's dtype).

    Parameters
    ----------
    prediction : ndarray of float, any shape
    threshold : float
    out : ndarray of bool (or a bool view of uint8), same shape, optional
        Written in place (the threshold widget reuses its overlay buffer).

    Returns
    -------
    ndarray of bool
    """
    return np.greater_equal(prediction, _cast_threshold(prediction, threshold), out=out)


def band(prediction: np.ndarray, low: float, high: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """The uncertain band ``low <= prediction < high`` as a bool array (``out`` reused if given)."""
    if high < low:
        raise InputError(f"band needs low <= high; got low={low} and high={high}")
    mask = np.greater_equal(prediction, _cast_threshold(prediction, low), out=out)
    mask &= prediction < _cast_threshold(prediction, high)
    return mask


def voxel_volume_ml(spacing: Sequence[float] | None) -> float:
    """Volume of one voxel in mL from its spacing in mm (1 mm³ when ``spacing`` is None)."""
    if spacing is None:
        return 1e-3
    return float(np.prod([abs(float(s)) for s in spacing])) / 1000.0


def volume_curve(prediction: np.ndarray, thresholds: Sequence[float], *, spacing=None) -> np.ndarray:
    """Binarised volume (mL) at each threshold: ``count(p >= t) × voxel volume``.

    Parameters
    ----------
    prediction : ndarray of float in [0, 1]
    thresholds : sequence of float, all > 0
    spacing : sequence of float (mm), optional

    Returns
    -------
    ndarray of float64, shape (T,)
    """
    values = prediction[prediction > 0]  # every threshold is > 0: the zeros never count
    values.sort()
    t = np.asarray(thresholds, dtype=values.dtype if values.size else np.float64)
    counts = values.size - np.searchsorted(values, t, side="left")
    return counts.astype(np.float64) * voxel_volume_ml(spacing)


def support_box(*arrays: np.ndarray | None) -> tuple[slice, ...]:
    """Bounding box (slices) of the voxels that are non-zero in any of ``arrays``.

    Overlap metrics (Dice, precision, recall) and binarised volumes at thresholds > 0 do not
    change when computed inside this box, which makes live readouts cheap on large volumes.
    An all-zero input gives an empty box.
    """
    arrays = [np.asarray(a) for a in arrays if a is not None]
    if not arrays:
        raise InputError("support_box needs at least one array")
    shape = arrays[0].shape
    box = []
    for axis in range(len(shape)):
        other = tuple(i for i in range(len(shape)) if i != axis)
        occupied = np.zeros(shape[axis], dtype=bool)
        for a in arrays:
            occupied |= np.any(a != 0, axis=other)
        idx = np.flatnonzero(occupied)
        box.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
    return tuple(box)


def threshold_readouts(
    mask: np.ndarray,
    *,
    soft_volume_ml: float,
    reference: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    box: tuple[slice, ...] | None = None,
) -> dict[str, float]:
    """Live readouts of the Threshold widget for one binarised prediction.

    Parameters
    ----------
    mask : ndarray of bool (or 0/1 uint8), shape (*spatial)
        The binarised prediction (or the band ``lo <= p < hi``).
    soft_volume_ml : float
        Σp × voxel volume of the soft prediction (constant while the slider moves).
    reference : ndarray, same shape, optional
        Binary or soft reference (binarised at 0.5); adds Dice, precision and recall.
    spacing : sequence of float (mm), optional
    box : tuple of slice, optional
        A :func:`support_box` of the prediction and reference; the overlap metrics are computed
        inside it (same values, less work). Voxels outside the box must be 0 in ``mask``.

    Returns
    -------
    dict with ``binary_volume_ml``, ``soft_volume_ml`` and, with a reference, ``dice``,
    ``precision``, ``recall``.
    """
    from softseg import metrics

    mask = np.asarray(mask)
    out = {
        "binary_volume_ml": metrics.volume(mask.astype(bool, copy=False), spacing=spacing) / 1000.0,
        "soft_volume_ml": float(soft_volume_ml),
    }
    if reference is not None:
        box = box if box is not None else tuple(slice(None) for _ in mask.shape)
        m = mask[box].astype(bool, copy=False)
        r = np.asarray(reference)[box] >= 0.5
        out["dice"] = float(metrics.dice(m, r))
        out["precision"] = float(metrics.precision(m, r))
        out["recall"] = float(metrics.recall(m, r))
    return out


def threshold_curves(
    prediction: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    spacing: Sequence[float] | None = None,
) -> dict[str, np.ndarray | None]:
    """Volume (and Dice, with a reference) against threshold for the Threshold widget's plot.

    Returns
    -------
    dict with ``thresholds`` (T,), ``volume_ml`` (T,), ``dice`` (T,) or None.
    """
    from softseg import metrics

    thresholds = np.asarray(thresholds, dtype=np.float64)
    out: dict[str, np.ndarray | None] = {
        "thresholds": thresholds,
        "volume_ml": volume_curve(prediction, thresholds, spacing=spacing),
        "dice": None,
    }
    if reference is not None:
        box = support_box(prediction, reference)
        sweep = metrics.threshold_sweep(prediction[box], np.asarray(reference)[box] >= 0.5,
                                        thresholds=thresholds, spacing=spacing)
        out["dice"] = np.asarray(sweep.dice, dtype=np.float64)
        out["volume_ml"] = np.asarray(sweep.volume, dtype=np.float64) / 1000.0
    return out


# --------------------------------------------------------------------------------------------
# one subject
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Curves:
    """Plot data of one candidate (one or several subjects pooled).

    Attributes
    ----------
    thresholds : ndarray, shape (T,)
    dice : ndarray, shape (S, T)
        Dice at each threshold for each subject (SoftSeg Fig. 3).
    volume_ml : ndarray, shape (S, T)
        Binarised volume at each threshold (mL).
    reference_volume_ml : ndarray, shape (S,)
    hist_edges : ndarray, shape (B + 1,)
    hist_counts : ndarray of int64, shape (B,)
        Counts of the non-zero prediction values (SoftSeg Fig. 4), pooled.
    rel_count, rel_confidence, rel_accuracy : ndarray, shape (K,)
        Reliability diagram (label-fusion Fig. 4), pooled over subjects (count-weighted).
    entropy, rater_entropy : ndarray, shape (S,)
        Subject entropy of the prediction and of the rater average (NaN without raters).
    subjects : tuple of str
    """

    thresholds: np.ndarray
    dice: np.ndarray
    volume_ml: np.ndarray
    reference_volume_ml: np.ndarray
    hist_edges: np.ndarray
    hist_counts: np.ndarray
    rel_count: np.ndarray
    rel_confidence: np.ndarray
    rel_accuracy: np.ndarray
    entropy: np.ndarray
    rater_entropy: np.ndarray
    subjects: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (lists)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else list(value)
        return out

    @property
    def has_raters(self) -> bool:
        return bool(np.isfinite(self.rater_entropy).any())


@dataclass(frozen=True, eq=False)
class PreparedReference:
    """A checked reference and what every candidate is compared with (computed once).

    Build it with :func:`prepare_reference`.

    Attributes
    ----------
    soft : ndarray of float32
        The reference as given (binary or soft).
    binary : ndarray of bool
        ``soft >= 0.5``: the reference of overlap and calibration metrics.
    rater_average : ndarray of float32 or None
        Reference of the Brier score (``soft`` when there are no raters).
    rater_entropy : float
        Subject entropy of the rater average (NaN without raters).
    box : tuple of slice
        Where the reference or the rater average is non-zero (:func:`support_box`).
    """

    soft: np.ndarray
    binary: np.ndarray
    rater_average: np.ndarray | None
    rater_entropy: float
    box: tuple[slice, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.soft.shape)


def prepare_reference(reference: np.ndarray, *, raters: np.ndarray | None = None,
                      name: str = "reference") -> PreparedReference:
    """Check a reference (and raters) once for several candidates.

    Parameters
    ----------
    reference : ndarray, binary or soft in [0, 1]
    raters : ndarray, shape (R, *reference.shape), optional
    """
    from softseg import fusion, metrics

    ref = check_reference(reference, np.shape(reference), name=name)
    rater_avg = None
    h_rater = math.nan
    if raters is not None:
        raters = np.asarray(raters)
        if raters.ndim != ref.ndim + 1 or tuple(raters.shape[1:]) != ref.shape:
            raise InputError(
                f"raters have shape {tuple(raters.shape)} but {name!r} has shape {ref.shape}; "
                f"expected (R, {', '.join(map(str, ref.shape))})"
            )
        rater_avg = np.asarray(fusion.average(raters), dtype=np.float32)
        h_rater = float(metrics.subject_entropy(rater_avg))
    box = support_box(ref, rater_avg)
    return PreparedReference(soft=ref, binary=ref >= np.float32(0.5), rater_average=rater_avg,
                             rater_entropy=h_rater, box=box)


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    out = []
    for x, y in zip(a, b):
        if x.stop <= x.start:
            out.append(y)
        elif y.stop <= y.start:
            out.append(x)
        else:
            out.append(slice(min(x.start, y.start), max(x.stop, y.stop)))
    return tuple(out)


def _whole_mean(metric, box_size: int, total: int, *arrays) -> float:
    """A voxel-mean metric computed inside a box outside which every term is 0, rescaled to the
    whole volume: ``mean_all = mean_box * n_box / n_all`` (exact, and much less work)."""
    if box_size == 0:
        return 0.0
    return float(metric(*arrays)) * box_size / total


def evaluate_subject(
    prediction: np.ndarray,
    reference: np.ndarray | PreparedReference,
    *,
    threshold: float = 0.5,
    raters: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    n_bins: int = 10,
    min_overlap: int = 3,
    name: str = "prediction",
    subject: str = "",
) -> tuple[dict[str, float], Curves]:
    """Every table metric and the plot data of one soft prediction against one reference.

    Parameters
    ----------
    prediction : ndarray of float, shape (*spatial), values in [0, 1]
    reference : ndarray (same shape, binary or soft in [0, 1]) or PreparedReference
    threshold : float in (0, 1]
        Binarisation threshold for the overlap metrics.
    raters : ndarray, shape (R, *spatial), optional
        The raters' maps: Brier score and rater entropy use their average (ignored when
        ``reference`` is already a :class:`PreparedReference`).
    spacing : sequence of float (mm), optional
        Voxel size for volumes (1 mm³ when omitted).
    thresholds : sequence of float
        Thresholds of the Dice/volume sweeps (in (0, 1]).
    n_bins : int
        Reliability-diagram / ECE bins.
    min_overlap : int
        Lesion detection: voxels a true lesion needs to count as detected.
    name, subject : str
        For error messages and the curves' subject list.

    Returns
    -------
    metrics : dict of str -> float
        The keys of :data:`METRICS`.
    curves : Curves
        With S = 1.

    Notes
    -----
    Every metric comes from :mod:`softseg.metrics`. Metrics that only see voxels where the
    prediction, the reference or the rater average is non-zero (overlaps, volumes, lesions,
    entropies, sweeps at thresholds > 0) are computed inside that bounding box, which gives the
    same values; the voxel means (MSE, Brier) are computed there too and rescaled to the whole
    volume. Calibration (ECE, reliability diagram) uses the whole volume, because background
    voxels are confident and correct and count in its bins.
    """
    from softseg import metrics

    prediction = check_prediction(prediction, name=name)
    if threshold <= 0 or threshold > 1:
        raise InputError(f"threshold must be in (0, 1]; got {threshold}")
    if isinstance(reference, PreparedReference):
        prep = reference
        if prep.shape != prediction.shape:
            raise InputError(f"reference has shape {prep.shape} but {name!r} has shape "
                             f"{prediction.shape}; all layers must have the same shape")
    else:
        if tuple(np.shape(reference)) != prediction.shape:
            check_reference(reference, prediction.shape, against=name)
        prep = prepare_reference(reference, raters=raters)
    box = _union_box(support_box(prediction), prep.box)
    n_box = int(np.prod([s.stop - s.start for s in box]))
    # contiguous copies once, rather than one hidden copy per metric call
    pr, rf, rb = (np.ascontiguousarray(a[box]) for a in (prediction, prep.soft, prep.binary))
    pb = binarize(pr, threshold)
    soft_ref = (np.ascontiguousarray(prep.rater_average[box])
                if prep.rater_average is not None else rf)

    lesions = metrics.lesion_detection(pb, rb, min_overlap=min_overlap)
    h_pred = float(metrics.subject_entropy(pr))
    h_rater = prep.rater_entropy
    rd = metrics.reliability_diagram(prediction, prep.binary, n_bins=n_bins)
    row = {
        "threshold": float(threshold),
        "dice": float(metrics.dice(pb, rb)),
        "precision": float(metrics.precision(pb, rb)),
        "recall": float(metrics.recall(pb, rb)),
        "avd": float(metrics.absolute_volume_difference(pb, rb)),
        "rvd": float(metrics.relative_volume_difference(pb, rb)),
        "soft_rvd": float(metrics.relative_volume_difference(pr, rf)),
        "mse": _whole_mean(metrics.mse, n_box, prediction.size, pr, rf),
        "ltpr": float(lesions.ltpr),
        "lfdr": float(lesions.lfdr),
        "ece": float(rd.ece),
        "brier": _whole_mean(metrics.brier_score, n_box, prediction.size, pr, soft_ref),
        "entropy": h_pred,
        "rater_entropy": h_rater,
        "entropy_error": abs(h_pred - h_rater) if math.isfinite(h_rater) else math.nan,
        "soft_volume_ml": metrics.volume(pr, spacing=spacing) / 1000.0,
        "binary_volume_ml": metrics.volume(pb, spacing=spacing) / 1000.0,
        "reference_volume_ml": metrics.volume(rf, spacing=spacing) / 1000.0,
    }

    thresholds = np.asarray(thresholds, dtype=np.float64)
    sweep = metrics.threshold_sweep(pr, rb, thresholds=thresholds, spacing=spacing)
    counts, edges = np.histogram(pr[pr > 0], bins=_HIST_BINS, range=(0.0, 1.0))
    curves = Curves(
        thresholds=thresholds,
        dice=np.asarray(sweep.dice, dtype=np.float64)[None, :],
        volume_ml=np.asarray(sweep.volume, dtype=np.float64)[None, :] / 1000.0,
        reference_volume_ml=np.array([row["reference_volume_ml"]]),
        hist_edges=edges,
        hist_counts=counts.astype(np.int64),
        rel_count=np.asarray(rd.count, dtype=np.float64),
        rel_confidence=np.nan_to_num(np.asarray(rd.confidence, dtype=np.float64)),
        rel_accuracy=np.nan_to_num(np.asarray(rd.accuracy, dtype=np.float64)),
        entropy=np.array([h_pred]),
        rater_entropy=np.array([h_rater]),
        subjects=(subject,),
    )
    return row, curves


def pool_curves(curves: Sequence[Curves]) -> Curves:
    """Pool the curves of several subjects of one candidate (stack sweeps, sum counts)."""
    if not curves:
        raise InputError("no curves to pool: evaluate at least one subject")
    first = curves[0]
    for c in curves[1:]:
        if not np.array_equal(c.thresholds, first.thresholds) or c.rel_count.shape != first.rel_count.shape:
            raise InputError("curves to pool must share thresholds and reliability bins")
    count = np.sum([c.rel_count for c in curves], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.sum([c.rel_confidence * c.rel_count for c in curves], axis=0) / count
        acc = np.sum([c.rel_accuracy * c.rel_count for c in curves], axis=0) / count
    return Curves(
        thresholds=first.thresholds,
        dice=np.concatenate([c.dice for c in curves]),
        volume_ml=np.concatenate([c.volume_ml for c in curves]),
        reference_volume_ml=np.concatenate([c.reference_volume_ml for c in curves]),
        hist_edges=first.hist_edges,
        hist_counts=np.sum([c.hist_counts for c in curves], axis=0),
        rel_count=count,
        rel_confidence=np.nan_to_num(conf),
        rel_accuracy=np.nan_to_num(acc),
        entropy=np.concatenate([c.entropy for c in curves]),
        rater_entropy=np.concatenate([c.rater_entropy for c in curves]),
        subjects=tuple(s for c in curves for s in c.subjects),
    )


@dataclass(frozen=True, eq=False)
class Comparison:
    """Candidates evaluated on one or more subjects.

    Attributes
    ----------
    rows : dict of candidate -> list of per-subject (or per-repeat) metric dicts
    curves : dict of candidate -> pooled :class:`Curves`
    reference_name : str
    """

    rows: dict[str, list[dict[str, float]]]
    curves: dict[str, Curves]
    reference_name: str = "reference"

    @property
    def candidates(self) -> list[str]:
        return list(self.rows)


def compare_predictions(
    predictions: Mapping[str, np.ndarray],
    reference: np.ndarray,
    *,
    thresholds: float | Mapping[str, float] = 0.5,
    raters: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    sweep: Sequence[float] = SWEEP_THRESHOLDS,
    reference_name: str = "reference",
    subject: str = "",
    max_workers: int = 4,
) -> Comparison:
    """Evaluate two or more soft predictions of one subject against one reference.

    Parameters
    ----------
    predictions : mapping of name -> ndarray of float in [0, 1], all of one shape
    reference : ndarray, same shape, binary or soft
    thresholds : float or mapping of name -> float
        One common threshold, or each candidate's own (e.g. its optimal threshold).
    raters, spacing, sweep
        As :func:`evaluate_subject`.
    max_workers : int
        Candidates evaluated in parallel threads (at most the number of CPUs).

    Returns
    -------
    Comparison
        One row per candidate (a one-element list).

    Raises
    ------
    InputError
        Fewer than two candidates, shapes that differ, a non-soft prediction.
    """
    if len(predictions) < 2:
        raise InputError(
            f"comparing needs at least two candidates; got {len(predictions)} "
            f"({', '.join(predictions) or 'none'}); add another prediction"
        )
    shapes = {name: tuple(np.shape(p)) for name, p in predictions.items()}
    ref_shape = tuple(np.shape(reference))
    for name, shape in shapes.items():
        if shape != ref_shape:
            raise InputError(
                f"prediction {name!r} has shape {shape} but reference {reference_name!r} has "
                f"shape {ref_shape}; all layers must have the same shape"
            )
    for name, pred in predictions.items():
        check_prediction(pred, name=name)
    prep = prepare_reference(reference, raters=raters, name=reference_name)

    def one(name: str) -> tuple[dict[str, float], Curves]:
        t = thresholds[name] if isinstance(thresholds, Mapping) else thresholds
        return evaluate_subject(predictions[name], prep, threshold=float(t), spacing=spacing,
                                thresholds=sweep, name=name, subject=subject)

    # numpy and scipy release the GIL in the heavy loops: candidates run side by side
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(len(predictions), os.cpu_count() or 1, max_workers))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip(predictions, pool.map(one, list(predictions))))
    rows = {name: [results[name][0]] for name in predictions}
    curves = {name: results[name][1] for name in predictions}
    return Comparison(rows=rows, curves=curves, reference_name=reference_name)


# --------------------------------------------------------------------------------------------
# summaries and statistics
# --------------------------------------------------------------------------------------------


def min_wilcoxon_pairs(alpha: float = 0.05) -> int:
    """Smallest number of paired samples for which a two-sided exact Wilcoxon signed-rank test
    can reach ``p < alpha`` at all.

    With n pairs and no ties, the most extreme outcome (all differences of one sign) has exact
    two-sided p-value ``2 / 2**n``; a smaller n can never be significant, whatever the data.
    For alpha = 0.05: n = 5 gives 0.0625, n = 6 gives 0.03125, so the answer is 6. Zero
    differences are dropped by the test, so ties with the reference reduce the effective n.
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1); got {alpha}")
    n = 1
    while 2.0 / 2.0**n >= alpha:
        n += 1
    return n


def wilcoxon_pvalues(
    values: Mapping[str, Sequence[float]], reference: str
) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank p-value of each candidate against ``reference``.

    Parameters
    ----------
    values : mapping of candidate -> sequence of float
        Paired samples (same order: repeat k of every candidate used split k).
    reference : str
        The candidate everything is tested against (its own entry is NaN).

    Returns
    -------
    dict of candidate -> p-value (NaN when fewer than two usable pairs; 1.0 when every pair
    is equal).
    """
    from scipy.stats import wilcoxon

    if reference not in values:
        raise InputError(f"reference candidate {reference!r} is not among {sorted(values)}")
    ref = np.asarray(values[reference], dtype=np.float64)
    out: dict[str, float] = {}
    for name, vals in values.items():
        if name == reference:
            out[name] = math.nan
            continue
        x = np.asarray(vals, dtype=np.float64)
        if x.shape != ref.shape:
            raise InputError(f"{name!r} has {x.size} samples but {reference!r} has {ref.size}; "
                             "the test needs paired samples")
        keep = np.isfinite(x) & np.isfinite(ref)
        d = x[keep] - ref[keep]
        if d.size < 2:
            out[name] = math.nan
        elif np.all(d == 0):
            out[name] = 1.0
        else:
            out[name] = float(wilcoxon(x[keep], ref[keep], alternative="two-sided").pvalue)
    return out


@dataclass(frozen=True)
class Summary:
    """Mean ± std table over subjects or repeats, with optional p-values.

    Attributes
    ----------
    mean, std : dict candidate -> dict metric -> float
    n : dict candidate -> int
    pvalues : dict candidate -> dict metric -> float (empty without a reference)
    reference : str or None
    alpha : float
    unit : str
        What the samples are ("subjects" or "repeats").
    """

    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    n: dict[str, int]
    pvalues: dict[str, dict[str, float]] = field(default_factory=dict)
    reference: str | None = None
    alpha: float = 0.05
    unit: str = "subjects"

    def significant(self, candidate: str, metric: str) -> bool:
        p = self.pvalues.get(candidate, {}).get(metric, math.nan)
        return bool(p < self.alpha)

    def cell(self, candidate: str, metric: str) -> str:
        """``"mean ± std"`` in display units, with ``**`` when p < alpha (papers' marker)."""
        m, s = self.mean[candidate][metric], self.std[candidate][metric]
        text = format_value(metric, m)
        if self.n[candidate] > 1 and not math.isnan(s):
            text += f" ± {format_value(metric, s)}"
        if self.significant(candidate, metric):
            text += " **"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean, "std": self.std, "n": self.n, "pvalues": self.pvalues,
            "reference": self.reference, "alpha": self.alpha, "unit": self.unit,
        }


def summarize(
    rows: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    reference: str | None = None,
    alpha: float = 0.05,
    unit: str = "subjects",
) -> Summary:
    """Mean ± sample std (ddof=1) of every metric per candidate; Wilcoxon p-values against
    ``reference`` when given (samples paired by position).

    NaN values (e.g. LTPR without lesions, rater entropy without raters) are left out of the
    mean and std.
    """
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    n: dict[str, int] = {}
    for cand, cand_rows in rows.items():
        mean[cand], std[cand] = {}, {}
        n[cand] = len(cand_rows)
        for metric in METRICS:
            vals = np.array([r.get(metric, math.nan) for r in cand_rows], dtype=np.float64)
            finite = vals[np.isfinite(vals)]
            mean[cand][metric] = float(finite.mean()) if finite.size else math.nan
            std[cand][metric] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    pvalues: dict[str, dict[str, float]] = {}
    if reference is not None:
        if reference not in rows:
            raise InputError(
                f"reference candidate {reference!r} is not among the candidates "
                f"({', '.join(rows)}); pick one of them with --reference"
            )
        per_metric = {
            m: wilcoxon_pvalues({c: [r.get(m, math.nan) for r in rs] for c, rs in rows.items()},
                                reference)
            for m in METRICS if m != "threshold"
        }
        for cand in rows:
            pvalues[cand] = {m: per_metric[m][cand] for m in per_metric}
    return Summary(mean=mean, std=std, n=n, pvalues=pvalues, reference=reference,
                   alpha=alpha, unit=unit)


# --------------------------------------------------------------------------------------------
# figures (matplotlib, no pyplot: works with Agg files and the widget's Qt canvas alike)
# --------------------------------------------------------------------------------------------


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _draw_reliability(ax, curves: Mapping[str, Curves], cursor: float | None = None) -> None:
    ax.plot([0, 1], [0, 1], color="red", lw=1.2, ls="--", label="perfect calibration")
    for (name, c), col in zip(curves.items(), _colors(len(curves))):
        keep = c.rel_count > 0
        ax.plot(c.rel_confidence[keep], c.rel_accuracy[keep], "o-", color=col, label=name, ms=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")


def _draw_histogram(ax, curves: Mapping[str, Curves], cursor: float | None = None) -> None:
    for (name, c), col in zip(curves.items(), _colors(len(curves))):
        total = c.hist_counts.sum()
        width = np.diff(c.hist_edges)
        density = c.hist_counts / (total * width) if total else np.zeros_like(width)
        centers = 0.5 * (c.hist_edges[1:] + c.hist_edges[:-1])
        ax.plot(centers, density, color=col, label=name)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("prediction value (non-zero voxels)")
    ax.set_ylabel("density")
    ax.set_title("Distribution of non-zero predictions")


def _draw_dice(ax, curves: Mapping[str, Curves], cursor: float | None = None) -> None:
    for (name, c), col in zip(curves.items(), _colors(len(curves))):
        d = np.asarray(c.dice, dtype=np.float64) * 100
        ax.plot(c.thresholds, np.nanmean(d, axis=0), color=col, lw=2, label=name)
        if d.shape[0] > 1:
            ax.fill_between(c.thresholds, np.nanmin(d, axis=0), np.nanmax(d, axis=0),
                            color=col, alpha=0.2)
        best = int(np.nanargmax(np.nanmean(d, axis=0)))
        ax.plot(c.thresholds[best], np.nanmean(d, axis=0)[best], "o", color=col, ms=6)
    if cursor is not None:
        ax.axvline(cursor, color="k", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold")
    ax.set_ylabel("Dice [%]")
    ax.set_title("Dice vs threshold")


def _draw_volume(ax, curves: Mapping[str, Curves], cursor: float | None = None) -> None:
    ref_drawn = False
    for (name, c), col in zip(curves.items(), _colors(len(curves))):
        ax.plot(c.thresholds, np.nanmean(c.volume_ml, axis=0), color=col, lw=2, label=name)
        if not ref_drawn and c.reference_volume_ml.size:
            ax.axhline(float(np.nanmean(c.reference_volume_ml)), color="gray", ls="--",
                       label="reference")
            ref_drawn = True
    if cursor is not None:
        ax.axvline(cursor, color="k", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold")
    ax.set_ylabel("volume [mL]")
    ax.set_title("Binarised volume vs threshold")


def _draw_entropy(ax, curves: Mapping[str, Curves], cursor: float | None = None) -> None:
    hi = 0.0
    for (name, c), col in zip(curves.items(), _colors(len(curves))):
        keep = np.isfinite(c.rater_entropy)
        ax.scatter(c.rater_entropy[keep], c.entropy[keep], color=col, label=name, s=25)
        if keep.any():
            hi = max(hi, float(np.max(c.rater_entropy[keep])), float(np.max(c.entropy[keep])))
    hi = hi * 1.05 or 1.0
    ax.plot([0, hi], [0, hi], color="k", ls="--", lw=1, label="identity")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("entropy of the rater average [nats]")
    ax.set_ylabel("prediction entropy [nats]")
    ax.set_title("Prediction vs rater entropy")


#: figure name -> (title, draw(ax, curves, **kw), needs raters). Plain dict (STYLE.md 6).
FIGURES: dict[str, tuple[str, Callable[..., None], bool]] = {
    "reliability": ("Reliability diagram", _draw_reliability, False),
    "histogram": ("Non-zero predictions", _draw_histogram, False),
    "dice_threshold": ("Dice vs threshold", _draw_dice, False),
    "volume_threshold": ("Volume vs threshold", _draw_volume, False),
    "entropy": ("Entropy vs rater entropy", _draw_entropy, True),
}


def draw_figure(ax, name: str, curves: Mapping[str, Curves], **kwargs) -> None:
    """Draw figure ``name`` of :data:`FIGURES` on a matplotlib ``Axes`` (legend included)."""
    if name not in FIGURES:
        raise InputError(f"unknown figure {name!r}; valid names: {', '.join(FIGURES)}")
    FIGURES[name][1](ax, curves, **kwargs)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def available_figures(curves: Mapping[str, Curves]) -> list[str]:
    """Figure names that make sense for these curves (the entropy plot needs raters)."""
    has_raters = any(c.has_raters for c in curves.values())
    return [name for name, (_, _, needs) in FIGURES.items() if has_raters or not needs]


def render_figures(folder: str | os.PathLike, curves: Mapping[str, Curves], *,
                   dpi: int = 100, overwrite: bool = True) -> dict[str, Path]:
    """Write every available figure as ``folder/<name>.png`` (Agg, atomic); returns the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in available_figures(curves):
        fig = Figure(figsize=(5.5, 4.0), dpi=dpi, layout="tight")
        FigureCanvasAgg(fig)
        draw_figure(fig.add_subplot(1, 1, 1), name, curves)
        path = folder / f"{name}.png"
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png")
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_text(path: Path, text: str, overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def write_report(
    folder: str | os.PathLike,
    comparison: Comparison,
    *,
    summary: Summary | None = None,
    title: str = "Candidate comparison",
    notes: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an HTML report with PNG figures, CSV tables and a JSON file.

    Layout::

        folder/index.html         tables (mean ± std, ** = p < alpha) and the figures
        folder/summary.csv        one row per candidate: mean and std of every metric
        folder/samples.csv        one row per candidate and subject (or repeat)
        folder/metrics.json       everything above plus the plot data and ``meta``
        folder/figures/*.png      reliability, histogram, dice_threshold, volume_threshold,
                                  entropy (with raters)

    Every file is written atomically; ``index.html`` last, so a report with an index is complete.

    Returns
    -------
    Path
        ``folder/index.html``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(comparison.rows)
    figs = render_figures(folder / "figures", comparison.curves, overwrite=overwrite)
    metrics = list(METRICS)

    header = ["candidate", "n"] + [f"{m}_mean" for m in metrics] + [f"{m}_std" for m in metrics]
    if summary.pvalues:
        header += [f"{m}_p" for m in metrics if m != "threshold"]
    rows = []
    for cand in comparison.rows:
        r = [cand, summary.n[cand]] + [summary.mean[cand][m] for m in metrics]
        r += [summary.std[cand][m] for m in metrics]
        if summary.pvalues:
            r += [summary.pvalues[cand].get(m, math.nan) for m in metrics if m != "threshold"]
        rows.append(r)
    _write_text(folder / "summary.csv", _csv_text(header, rows), overwrite)

    sample_rows = []
    for cand, cand_rows in comparison.rows.items():
        subjects = comparison.curves[cand].subjects if cand in comparison.curves else ()
        for i, r in enumerate(cand_rows):
            label = r.get("sample", subjects[i] if i < len(subjects) else str(i))
            sample_rows.append([cand, label] + [r.get(m, math.nan) for m in metrics])
    _write_text(folder / "samples.csv",
                _csv_text(["candidate", "sample"] + metrics, sample_rows), overwrite)

    payload = {
        "title": title,
        "meta": dict(meta or {}),
        "reference": comparison.reference_name,
        "metrics": {m: {"title": s.title, "unit": s.unit, "scale": s.scale, "best": s.best}
                    for m, s in METRICS.items()},
        "summary": summary.as_dict(),
        "samples": {c: [dict(r) for r in rs] for c, rs in comparison.rows.items()},
        "curves": {c: cv.as_dict() for c, cv in comparison.curves.items()},
        "figures": {k: str(v.relative_to(folder)) for k, v in figs.items()},
    }
    write_json(folder / "metrics.json", _json_safe(payload), overwrite=True)
    _write_text(folder / "index.html", _html(title, comparison, summary, figs, folder, notes, meta),
                overwrite)
    return folder / "index.html"


def _html(title, comparison, summary, figs, folder, notes, meta) -> str:
    e = html.escape
    shown = [m for m in METRICS if any(
        math.isfinite(summary.mean[c][m]) for c in comparison.rows)]
    opt = {"max": "opt. max", "min": "opt. 0", "zero": "opt. 0", "": ""}
    head = "".join(f"<th>{e(METRICS[m].header)}<br><small>{opt[METRICS[m].best]}</small></th>"
                   for m in shown)
    body = []
    for cand in comparison.rows:
        cells = []
        for m in shown:
            cls = ' class="sig"' if summary.significant(cand, m) else ""
            cells.append(f"<td{cls}>{e(summary.cell(cand, m))}</td>")
        ref = " (ref)" if cand == summary.reference else ""
        body.append(f"<tr><th>{e(cand)}{ref}</th><td>{summary.n[cand]}</td>{''.join(cells)}</tr>")
    legend = (f"Mean ± standard deviation over {summary.unit}. ")
    if summary.reference:
        legend += (f"** p &lt; {summary.alpha} for a two-sided Wilcoxon signed-rank test against "
                   f"{e(summary.reference)} (scipy.stats.wilcoxon, paired by {e(summary.unit)}).")
    legend += f" Reference for overlap metrics: {e(comparison.reference_name)}."
    fig_html = "".join(
        f'<figure><img src="{e(str(p.relative_to(folder)))}" alt="{e(FIGURES[k][0])}">'
        f"<figcaption>{e(FIGURES[k][0])}</figcaption></figure>" for k, p in figs.items())
    meta_html = "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in (meta or {}).items())
    notes_html = "".join(f"<p>{e(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #bbb;padding:3px 7px;text-align:right}} th{{background:#f1f1f1}}
td.sig{{font-weight:bold;background:#fff4d6}} figure{{display:inline-block;margin:8px}}
img{{max-width:560px;border:1px solid #ddd}}
</style></head><body>
<h1>{e(title)}</h1>
<ul>{meta_html}</ul>
{notes_html}
<h2>Metrics</h2>
<table><tr><th>candidate</th><th>n</th>{head}</tr>
{''.join(body)}
</table>
<p>{legend} Files: <a href="summary.csv">summary.csv</a>, <a href="samples.csv">samples.csv</a>,
<a href="metrics.json">metrics.json</a>.</p>
<h2>Figures</h2>
{fig_html}
</body></html>
"""
