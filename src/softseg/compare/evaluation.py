"""Evaluation of candidates: the metric table (from :func:`softseg.metrics.evaluate`) plus the
plot data of the papers' figures, for one subject or pooled over subjects.

Every number comes from :mod:`softseg.metrics`; this module only prepares the reference once,
runs candidates side by side and pools plot data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from softseg import metrics
from softseg.checks import as_probability
from softseg.errors import InputError

__all__ = [
    "HIST_BINS",
    "SWEEP_THRESHOLDS",
    "Comparison",
    "Curves",
    "check_prediction",
    "compare_class_predictions",
    "compare_predictions",
    "evaluate_subject",
    "evaluate_subject_classes",
    "pool_curves",
    "prepare_reference",
]

#: Thresholds of the Dice/volume sweeps: 0.05 ... 0.95 step 0.05 (SoftSeg paper, Fig. 3).
SWEEP_THRESHOLDS = metrics.DEFAULT_THRESHOLDS
#: Bins of the histogram of non-zero prediction values (SoftSeg paper, Fig. 4).
HIST_BINS = 50


def check_prediction(prediction: Any, *, name: str = "prediction") -> np.ndarray:
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
        The same array (values within rounding of [0, 1] clipped, in a copy).

    Raises
    ------
    InputError
        Integer/bool labels, NaN/Inf, or values outside [0, 1] beyond rounding (an image,
        logits); the message gives the true extremes.
    """
    arr = np.asarray(prediction)
    if arr.dtype.kind != "f":
        raise InputError(
            f"{name!r} holds {arr.dtype} labels, not a soft prediction: choose a floating-point "
            "probability map in [0, 1] (from the Predict widget or `softseg predict`), or use the "
            "labels as the reference instead"
        )
    return as_probability(
        arr, name=repr(name),
        hint="it looks like an image or logits, not a soft prediction; choose a probability map",
    )


def prepare_reference(
    reference: Any, *, raters: Any | None = None, name: str = "reference"
) -> metrics.Reference:
    """The reference (and the raters' average) checked once for several candidates.

    Parameters
    ----------
    reference : ndarray (*spatial), binary or soft in [0, 1]
    raters : ndarray (R, *spatial) of soft values in [0, 1], optional
        Their average (:func:`softseg.fusion.average`) is the reference of the Brier score and
        of the entropy comparison.
    name : str
        For messages.
    """
    rater_average = None
    if raters is not None:
        from softseg.fusion import average

        arr = np.asarray(raters)
        ref_shape = tuple(np.shape(reference))
        if arr.ndim != len(ref_shape) + 1 or tuple(arr.shape[1:]) != ref_shape:
            raise InputError(
                f"raters have shape {tuple(arr.shape)} but {name!r} has shape {ref_shape}; "
                f"expected (R, {', '.join(map(str, ref_shape))})"
            )
        rater_average = average(arr)
    return metrics.prepare_reference(reference, rater_average=rater_average, name=name)


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
    #: entropy histograms of misclassified / correct voxels (metrics.ErrorDetection), pooled by
    #: addition; empty when not computed
    roc_error_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    roc_correct_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (lists)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else list(value)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Curves:
        """Inverse of :meth:`as_dict` (``None`` read back as NaN)."""
        kw: dict[str, Any] = {
            key: tuple(value) if key == "subjects" else np.asarray(value, dtype=np.float64)
            for key, value in d.items()
        }
        kw["hist_counts"] = kw["hist_counts"].astype(np.int64)
        return cls(**kw)

    @property
    def has_raters(self) -> bool:
        return bool(np.isfinite(self.rater_entropy).any())


def _curves(
    prediction: np.ndarray,
    ref: metrics.Reference,
    ev: metrics.Evaluation,
    thresholds: np.ndarray,
    spacing: Sequence[float] | None,
    subject: str,
) -> Curves:
    box = ev.box  # every voxel outside is zero in prediction and reference
    pr = prediction[box]
    sweep = metrics.threshold_sweep(pr, ref.mask[box], thresholds=thresholds, spacing=spacing)
    nonzero = pr[pr > 0]
    counts, edges = np.histogram(nonzero, bins=HIST_BINS, range=(0.0, 1.0))
    rd = ev.reliability
    return Curves(
        thresholds=np.asarray(thresholds, dtype=np.float64),
        dice=np.asarray(sweep.dice, dtype=np.float64)[None, :],
        volume_ml=np.asarray(sweep.volume_ml, dtype=np.float64)[None, :],
        reference_volume_ml=np.array([ev.values["reference_volume_ml"]]),
        hist_edges=edges,
        hist_counts=counts.astype(np.int64),
        rel_count=np.asarray(rd.count, dtype=np.float64),
        rel_confidence=np.nan_to_num(np.asarray(rd.confidence, dtype=np.float64)),
        rel_accuracy=np.nan_to_num(np.asarray(rd.accuracy, dtype=np.float64)),
        entropy=np.array([ev.values["entropy"]]),
        rater_entropy=np.array([ev.values["rater_entropy"]]),
        subjects=(subject,),
        **({} if ev.errors is None else {
            "roc_error_counts": ev.errors.error_counts.astype(np.float64),
            "roc_correct_counts": ev.errors.correct_counts.astype(np.float64)}),
    )


def evaluate_subject(
    prediction: Any,
    reference: Any,
    *,
    threshold: float,
    raters: Any | None = None,
    spacing: Sequence[float] | None = None,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    n_bins: int = 10,
    min_overlap: int = 3,
    percentile: float = 95.0,
    name: str = "prediction",
    subject: str = "",
) -> tuple[dict[str, float], Curves]:
    """The metric table and the plot data of one soft prediction against one reference.

    Parameters
    ----------
    prediction : ndarray of float, shape (*spatial), values in [0, 1]
    reference : ndarray (same shape, binary or soft in [0, 1]) or :class:`softseg.metrics.Reference`
    threshold : float in (0, 1]
        Binarisation threshold of the prediction (its optimal threshold, or a common one).
    raters : ndarray, shape (R, *spatial), optional
        The raters' soft maps: their average is the reference of the Brier score and of the
        entropy comparison (not with a prepared reference: give them to
        :func:`prepare_reference`).
    spacing : sequence of float (mm), optional
        Voxel size (1 mm without it).
    thresholds : sequence of float
        Thresholds of the Dice/volume sweeps (in (0, 1]).
    n_bins, min_overlap, percentile
        As :func:`softseg.metrics.evaluate`.
    name, subject : str
        For error messages and the curves' subject list.

    Returns
    -------
    metrics : dict of str -> float
        :func:`softseg.metrics.evaluate`'s table (keys of :data:`softseg.metrics.METRICS`).
    curves : Curves
        With S = 1.
    """
    prediction = check_prediction(prediction, name=name)
    if isinstance(reference, metrics.Reference):
        if raters is not None:
            raise InputError(
                "give the raters to prepare_reference(), not with a prepared reference")
        ref = reference
    else:
        ref_shape = tuple(np.shape(reference))
        if ref_shape != prediction.shape:
            raise InputError(
                f"reference has shape {ref_shape} but {name!r} has shape {prediction.shape}; "
                "they must cover the same voxels (resample one onto the other first)"
            )
        ref = prepare_reference(reference, raters=raters)
    ev = metrics.evaluation(prediction, ref, threshold=threshold, spacing=spacing,
                            n_bins=n_bins, min_overlap=min_overlap, percentile=percentile,
                            name=name)
    t = np.asarray(thresholds, dtype=np.float64)
    return ev.values, _curves(prediction, ref, ev, t, spacing, subject)


def evaluate_subject_classes(
    probabilities: Any,
    reference: Any,
    *,
    classes: Sequence[str],
    thresholds: Any = None,
    rater_average: Any | None = None,
    spacing: Sequence[float] | None = None,
    sweep: Sequence[float] = SWEEP_THRESHOLDS,
    n_bins: int = 10,
    min_overlap: int = 3,
    percentile: float = 95.0,
    subject: str = "",
) -> tuple[metrics.ClassEvaluation, dict[str, Curves]]:
    """Per-class tables (:func:`softseg.metrics.evaluate_classes`) and per-class plot data.

    Parameters
    ----------
    probabilities : ndarray (K+1 | K, *spatial)
        Class probabilities, background first (or left out).
    reference : ndarray
        Integer labels 0..K, or soft class maps (K+1 | K, *spatial).
    classes : sequence of str
        The K class names.
    thresholds : None (argmax), float, sequence or mapping
        As :func:`softseg.metrics.evaluate_classes`.
    rater_average : ndarray (K+1 | K, *spatial), optional
        Per-class rater average.
    spacing, sweep, n_bins, min_overlap, percentile, subject
        As :func:`evaluate_subject` (``sweep`` = its ``thresholds``).

    Returns
    -------
    evaluation : softseg.metrics.ClassEvaluation
    curves : dict of class -> Curves
        Each class's Dice/volume sweep (one-vs-rest, reference class voxels), histogram and
        one-vs-rest reliability diagram.
    """
    ce = metrics.evaluate_classes(
        probabilities, reference, classes=classes, thresholds=thresholds, spacing=spacing,
        rater_average=rater_average, n_bins=n_bins, min_overlap=min_overlap,
        percentile=percentile,
    )
    probs = np.asarray(probabilities)
    offset = 1 if probs.shape[0] == len(ce.classes) + 1 else 0
    ref = np.asarray(reference)
    t = np.asarray(sweep, dtype=np.float64)
    curves = {}
    for i, cname in enumerate(ce.classes):
        p = np.clip(probs[i + offset], 0, 1)
        if ref.shape == probs.shape[1:]:
            g = np.asarray(ref == i + 1)
        else:
            g = ref[i + (1 if ref.shape[0] == len(ce.classes) + 1 else 0)]
        r = metrics.prepare_reference(g, name=f"reference of {cname!r}")
        ev = metrics.Evaluation(values=ce.per_class[cname], reliability=ce.class_reliability[cname],
                                box=ce.boxes[cname])
        curves[cname] = _curves(p, r, ev, t, spacing, subject)
    return ce, curves


def pool_curves(curves: Sequence[Curves]) -> Curves:
    """Pool the curves of several subjects of one candidate (stack sweeps, sum counts)."""
    if not curves:
        raise InputError("no curves to pool: evaluate at least one subject")
    first = curves[0]
    for c in curves[1:]:
        if (not np.array_equal(c.thresholds, first.thresholds)
                or c.rel_count.shape != first.rel_count.shape):
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
        **({"roc_error_counts": np.sum([c.roc_error_counts for c in curves], axis=0),
            "roc_correct_counts": np.sum([c.roc_correct_counts for c in curves], axis=0)}
           if len({c.roc_error_counts.shape for c in curves}) == 1 else {}),
    )


@dataclass(frozen=True, eq=False)
class Comparison:
    """Candidates evaluated on one or more subjects.

    Attributes
    ----------
    rows : dict of candidate -> list of per-subject (or per-repeat) metric dicts
        Multi-class: the multi-class summary (``ece``, ``accuracy``) of each sample.
    curves : dict of candidate -> pooled :class:`Curves` (empty for multi-class)
    reference_name : str
    per_class : dict of class -> Comparison
        Multi-class comparisons: one single-class comparison per class (its rows are the
        class's tables); empty for one class.
    """

    rows: dict[str, list[dict[str, float]]]
    curves: dict[str, Curves]
    reference_name: str = "reference"
    per_class: dict[str, Comparison] = field(default_factory=dict)

    @property
    def candidates(self) -> list[str]:
        return list(self.rows)


def compare_predictions(
    predictions: Mapping[str, Any],
    reference: Any,
    *,
    thresholds: float | Mapping[str, float],
    raters: Any | None = None,
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
        As :func:`evaluate_subject` (``sweep`` = its ``thresholds``).
    max_workers : int
        Candidates evaluated in parallel threads (at most the number of CPUs).

    Returns
    -------
    Comparison
        One row per candidate (a one-element list).

    Raises
    ------
    InputError
        Fewer than two candidates, shapes that differ, a non-soft prediction, a missing
        threshold.
    """
    if len(predictions) < 2:
        raise InputError(
            f"comparing needs at least two candidates; got {len(predictions)} "
            f"({', '.join(predictions) or 'none'}); add another prediction"
        )
    ref_shape = tuple(np.shape(reference))
    for name, pred in predictions.items():
        shape = tuple(np.shape(pred))
        if shape != ref_shape:
            raise InputError(
                f"prediction {name!r} has shape {shape} but reference {reference_name!r} has "
                f"shape {ref_shape}; all layers must have the same shape"
            )
    if isinstance(thresholds, Mapping):
        missing = [n for n in predictions if n not in thresholds]
        if missing:
            raise InputError(f"no threshold for {', '.join(map(repr, missing))}")
    checked = {name: check_prediction(p, name=name) for name, p in predictions.items()}
    prep = prepare_reference(reference, raters=raters, name=reference_name)

    def one(name: str) -> tuple[dict[str, float], Curves]:
        t = thresholds[name] if isinstance(thresholds, Mapping) else thresholds
        return evaluate_subject(checked[name], prep, threshold=t, spacing=spacing,
                                thresholds=sweep, name=name, subject=subject)

    # numpy and scipy release the GIL in the heavy loops: candidates run side by side
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(len(checked), os.cpu_count() or 1, max_workers))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip(checked, pool.map(one, list(checked))))
    rows = {name: [results[name][0]] for name in checked}
    curves = {name: results[name][1] for name in checked}
    return Comparison(rows=rows, curves=curves, reference_name=reference_name)


def compare_class_predictions(
    predictions: Mapping[str, Any],
    reference: Any,
    *,
    classes: Sequence[str],
    thresholds: Any = None,
    rater_average: Any | None = None,
    spacing: Sequence[float] | None = None,
    sweep: Sequence[float] = SWEEP_THRESHOLDS,
    reference_name: str = "reference",
    subject: str = "",
) -> Comparison:
    """Evaluate two or more K-class soft predictions of one subject, class by class.

    Parameters
    ----------
    predictions : mapping of name -> ndarray (K+1 | K, *spatial)
        Class probabilities, background first (or left out), values in [0, 1].
    reference : ndarray
        Integer labels 0..K (*spatial), or soft class maps (K+1 | K, *spatial).
    classes : sequence of str
        The K class names.
    thresholds : None, float, per-class sequence/mapping, or a mapping of candidate -> those
        None: argmax (label-fusion paper); see :func:`softseg.metrics.evaluate_classes`.
    rater_average : ndarray (K+1 | K, *spatial), optional
        Per-class rater average (``softseg.fusion.fuse(raters, "average", n_classes=K)``).
    spacing, sweep, reference_name, subject
        As :func:`compare_predictions`.

    Returns
    -------
    Comparison
        ``rows``: multi-class ``ece`` and ``accuracy`` per candidate; ``per_class``: a
        :class:`Comparison` per class with its tables and plot data.
    """
    if len(predictions) < 2:
        raise InputError(
            f"comparing needs at least two candidates; got {len(predictions)} "
            f"({', '.join(predictions) or 'none'}); add another prediction"
        )
    per_cand = isinstance(thresholds, Mapping) and set(thresholds) == set(predictions)
    results = {}
    for name, probs in predictions.items():
        t = thresholds[name] if per_cand else thresholds
        results[name] = evaluate_subject_classes(
            probs, reference, classes=classes, thresholds=t, rater_average=rater_average,
            spacing=spacing, sweep=sweep, subject=subject)
    names = results[next(iter(results))][0].classes
    per_class = {
        c: Comparison(rows={n: [r[0].per_class[c]] for n, r in results.items()},
                      curves={n: r[1][c] for n, r in results.items()},
                      reference_name=f"{reference_name} ({c})")
        for c in names
    }
    return Comparison(rows={n: [dict(r[0].overall)] for n, r in results.items()}, curves={},
                      reference_name=reference_name, per_class=per_class)
