"""Uncertainty: per-voxel predictive entropy and the subject entropy (label-fusion paper), and
uncertainty as a detector of misclassified voxels (AUROC, ROC data).

The per-voxel maps of MC dropout and test-time augmentation come from :mod:`softseg.uncertainty`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.metrics._common import CHUNK, as_unit

__all__ = ["binary_entropy", "entropy", "subject_entropy", "xlogx"]


def entropy(prob: Any, *, class_axis: int | None = None) -> np.ndarray:
    """Per-voxel predictive entropy in nats.

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
        Foreground probability (binary entropy ``-(p ln p + (1-p) ln(1-p))``, at most ln 2),
        or class probabilities with ``class_axis`` (``-sum_c p_c ln p_c``).
    class_axis : int, optional
        Axis holding the classes.

    Returns
    -------
    ndarray, float32, ``prob``'s shape without ``class_axis``; ``0 ln 0 = 0``.

    Notes
    -----
    The label-fusion paper's eq. 1 writes ``-sum p_i log p_i`` with ``p_i`` the foreground
    prediction; we use the full binary entropy (both classes, as in Jungo et al. 2018, whom the
    paper cites), which is symmetric in p and 1 - p and maximal at 0.5.
    """
    arr = as_unit(prob, "prob")
    p = arr if arr.dtype.kind == "f" else arr.astype(np.float32)
    if class_axis is None:
        return binary_entropy(p).astype(np.float32, copy=False)
    if not -p.ndim <= class_axis < p.ndim:
        raise InputError(f"class_axis {class_axis} is out of range for shape {p.shape}")
    return (0.0 - np.sum(xlogx(p), axis=class_axis)).astype(np.float32, copy=False)


def xlogx(p: np.ndarray) -> np.ndarray:
    """``p ln p`` with ``0 ln 0 = 0``, in p's float precision."""
    out = np.zeros_like(p)
    np.log(p, out=out, where=p > 0)
    out *= p
    return out


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """``-(p ln p + (1-p) ln(1-p))`` with ``0 ln 0 = 0``, in p's float precision."""
    h = xlogx(p)
    h += xlogx(1 - p)
    np.negative(h, out=h)
    np.maximum(h, 0, out=h)  # -0.0 -> 0.0
    return h


def entropy_sum(p: np.ndarray) -> float:
    """Sum of the binary entropy of a validated map; masks (0 or 1 everywhere) add nothing."""
    if p.dtype == np.bool_:
        return 0.0
    flat = p.reshape(-1)
    out = 0.0
    for start in range(0, flat.size, CHUNK):  # block by block: temporaries stay in cache
        out += float(binary_entropy(flat[start : start + CHUNK]).sum(dtype=np.float64))
    return out


def subject_entropy(prob: Any, *, class_axis: int | None = None) -> float:
    """Entropy of a whole subject: the sum of :func:`entropy` over voxels (paper eq. 1), nats."""
    if class_axis is None:
        return entropy_sum(as_unit(prob, "prob"))
    return float(entropy(prob, class_axis=class_axis).sum(dtype=np.float64))


# ----------------------------------------------------------------------------- error detection
#: Bins of the uncertainty histograms kept for ROC plots (:class:`ErrorDetection`).
ROC_BINS = 100


@dataclass(frozen=True, eq=False)
class ErrorDetection:
    """Uncertainty as a detector of misclassified voxels.

    Attributes
    ----------
    auroc : float in [0, 1]
        Area under the ROC curve of "uncertainty >= u flags an error" (exact, ties count 1/2:
        the Mann-Whitney statistic U / (n_errors n_correct)); 0.5 = no better than chance,
        1 = every error is more uncertain than every correct voxel. NaN without errors or
        without correct voxels (nothing to separate).
    n_errors, n_correct : int
        Misclassified and correctly classified voxels.
    edges : ndarray (ROC_BINS + 1,)
        Uncertainty bins ``[edges[k], edges[k+1])`` (the last closed) of the histograms.
    error_counts, correct_counts : ndarray (ROC_BINS,) int64
        Voxels per bin; they pool over subjects by addition and give :meth:`roc`.
    """

    auroc: float
    n_errors: int
    n_correct: int
    edges: np.ndarray
    error_counts: np.ndarray
    correct_counts: np.ndarray

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false-positive rate, true-positive rate) at the bin edges, from (1, 1) down to
        (0, 0): flagging every voxel with uncertainty >= ``edges[k]``, k = 0 .. ROC_BINS."""
        return roc_from_counts(self.error_counts, self.correct_counts)


def roc_from_counts(error_counts: Any, correct_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC points from histograms of uncertainty (errors, correct voxels) over shared bins.

    Returns ``(fpr, tpr)``, each of length ``bins + 1``: flagging the voxels in bins ``k..`` for
    k = 0 .. bins (k = bins flags none). NaN rates when a class is empty.
    """
    e = np.asarray(error_counts, dtype=np.float64)
    c = np.asarray(correct_counts, dtype=np.float64)
    tail_e = np.concatenate([np.cumsum(e[::-1])[::-1], [0.0]])
    tail_c = np.concatenate([np.cumsum(c[::-1])[::-1], [0.0]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return tail_c / c.sum(), tail_e / e.sum()


def _auroc(u_err: np.ndarray, u_ok: np.ndarray, n_ok_at_zero: int = 0) -> float:
    """Mann-Whitney AUROC of positives ``u_err`` over negatives ``u_ok`` (ties 1/2); ``n_ok_at_zero``
    more negatives with uncertainty 0 (voxels left out by the caller)."""
    n_err, n_ok = u_err.size, u_ok.size + n_ok_at_zero
    if n_err == 0 or n_ok == 0:
        return math.nan
    neg = np.sort(u_ok.astype(np.float64, copy=False), kind="stable")
    pos = u_err.astype(np.float64, copy=False)
    below = np.searchsorted(neg, pos, side="left").astype(np.float64)
    ties = np.searchsorted(neg, pos, side="right") - below
    # the extra negatives sit at 0 (the smallest uncertainty): beaten by u > 0, tied by u == 0
    extra = np.where(pos > 0, float(n_ok_at_zero), 0.5 * n_ok_at_zero)
    u_stat = float(np.sum(below + 0.5 * ties + extra, dtype=np.float64))
    return u_stat / (float(n_err) * float(n_ok))


def error_detection(
    uncertainty: Any,
    error: Any,
    *,
    mask: Any = None,
    max_uncertainty: float = math.log(2.0),
    n_correct_at_zero: int = 0,
) -> ErrorDetection:
    """How well a per-voxel uncertainty finds the misclassified voxels (AUROC and ROC data).

    Parameters
    ----------
    uncertainty : ndarray (*spatial), float, finite, >= 0
        E.g. the predictive entropy (:func:`entropy`) or an MC dropout / TTA variance map.
    error : ndarray (*spatial), bool
        True where the binarised prediction disagrees with the reference
        (:func:`misclassified`).
    mask : ndarray (*spatial) of bool, optional
        Only these voxels count (e.g. a region of interest); default all.
    max_uncertainty : float > 0
        Upper end of the histogram bins (default ln 2, the largest binary entropy); larger
        values go to the last bin. The AUROC does not depend on it.
    n_correct_at_zero : int >= 0
        Correct voxels with uncertainty 0 left out of the arrays (e.g. outside a crop where the
        prediction and the reference are both 0); counted as if they were there.

    Returns
    -------
    ErrorDetection

    Raises
    ------
    InputError
        Shapes that differ, a non-bool error map, negative or non-finite uncertainty, a bad
        ``max_uncertainty`` or ``n_correct_at_zero``.

    Notes
    -----
    Uncertainty as a detector of errors is the evaluation of Jungo & Reyes 2019 ("Assessing
    reliability and challenges of uncertainty estimations for medical image segmentation") and
    Mehrtash et al. 2020; the AUROC equals scikit-learn's ``roc_auc_score(error, uncertainty)``
    (tested).
    """
    u = np.asarray(uncertainty)
    e = np.asarray(error)
    if u.shape != e.shape:
        raise InputError(f"uncertainty shape {u.shape} and error shape {e.shape} differ; give maps of one grid")
    if e.dtype != np.bool_:
        raise InputError(f"error must be a bool map (prediction != reference); got dtype {e.dtype}")
    if u.dtype.kind not in "fiu":
        raise InputError(f"uncertainty must be numeric; got dtype {u.dtype}")
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != u.shape or m.dtype != np.bool_:
            raise InputError(f"mask must be a bool map of shape {u.shape}; got {m.dtype} {m.shape}")
        u, e = u[m], e[m]
    u = u.reshape(-1)
    e = e.reshape(-1)
    if u.size and (not np.isfinite(u).all() or u.min() < 0):
        raise InputError("uncertainty must be finite and >= 0")
    if not (isinstance(max_uncertainty, (int, float)) and math.isfinite(max_uncertainty) and max_uncertainty > 0):
        raise InputError(f"max_uncertainty must be a finite number > 0; got {max_uncertainty!r}")
    if isinstance(n_correct_at_zero, bool) or not isinstance(n_correct_at_zero, (int, np.integer)) or n_correct_at_zero < 0:
        raise InputError(f"n_correct_at_zero must be a whole number >= 0; got {n_correct_at_zero!r}")
    u_err, u_ok = u[e], u[~e]
    edges = np.linspace(0.0, float(max_uncertainty), ROC_BINS + 1)

    def hist(values: np.ndarray) -> np.ndarray:
        idx = np.minimum((values.astype(np.float64) / max_uncertainty * ROC_BINS).astype(np.int64), ROC_BINS - 1)
        return np.bincount(idx, minlength=ROC_BINS).astype(np.int64)

    ok_counts = hist(u_ok)
    ok_counts[0] += int(n_correct_at_zero)
    return ErrorDetection(
        auroc=_auroc(u_err, u_ok, int(n_correct_at_zero)),
        n_errors=int(u_err.size),
        n_correct=int(u_ok.size) + int(n_correct_at_zero),
        edges=edges,
        error_counts=hist(u_err),
        correct_counts=ok_counts,
    )


def uncertainty_error_auroc(uncertainty: Any, error: Any, *, mask: Any = None) -> float:
    """AUROC of ``uncertainty`` as a detector of the voxels where ``error`` is True
    (:func:`error_detection`'s ``auroc``; NaN when either class is empty)."""
    return error_detection(uncertainty, error, mask=mask).auroc


def misclassified(prediction: Any, reference: Any, *, threshold: float) -> np.ndarray:
    """Bool map of misclassified voxels: ``(prediction >= threshold) != (reference >= 0.5)``.

    Parameters
    ----------
    prediction, reference : ndarray, same shape, values in [0, 1]
    threshold : float in (0, 1]
        The prediction's binarisation threshold (its optimal threshold).
    """
    from softseg.metrics._common import binarize_raw, check_threshold, pair

    p, g = pair(prediction, reference, names=("prediction", "reference"))
    return binarize_raw(p, check_threshold(threshold)) != binarize_raw(g, 0.5)
