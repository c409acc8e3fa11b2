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
#: Bins of uncertainty above 0 in :class:`ErrorDetection`'s histograms (plus one bin for exactly 0).
ROC_BINS = 200


@dataclass(frozen=True, eq=False)
class ErrorDetection:
    """Uncertainty as a detector of misclassified voxels, as histograms that pool by addition.

    Attributes
    ----------
    auroc : float in [0, 1]
        Area under the ROC curve of "uncertainty >= u flags an error", from the histograms:
        voxels in one bin count as ties (1/2), so it is exact when no two different values share
        a bin and otherwise within the fraction of (error, correct) pairs sharing a bin of the
        exact value (:func:`uncertainty_error_auroc`). NaN without errors or without correct
        voxels.
    n_errors, n_correct : int
    edges : ndarray (ROC_BINS + 1,)
        Bins of the uncertainty above 0: ``(edges[k], edges[k+1]]``; uncertainty exactly 0 has
        its own bin (index 0 of the counts).
    error_counts, correct_counts : ndarray (ROC_BINS + 1,) int64
        Voxels with uncertainty 0, then per bin.
    """

    auroc: float
    n_errors: int
    n_correct: int
    edges: np.ndarray
    error_counts: np.ndarray
    correct_counts: np.ndarray

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false-positive rate, true-positive rate) from (1, 1) down to (0, 0) (:func:`roc_from_counts`)."""
        return roc_from_counts(self.error_counts, self.correct_counts)


def roc_from_counts(error_counts: Any, correct_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC points from histograms of uncertainty (errors, correct voxels) over shared bins in
    increasing order.

    Returns ``(fpr, tpr)``, each of length ``bins + 1``: point k flags the voxels in bins
    ``k..`` (k = 0 flags every voxel, k = bins none). NaN rates when a class is empty.
    """
    e = np.asarray(error_counts, dtype=np.float64)
    c = np.asarray(correct_counts, dtype=np.float64)
    tail_e = np.concatenate([np.cumsum(e[::-1])[::-1], [0.0]])
    tail_c = np.concatenate([np.cumsum(c[::-1])[::-1], [0.0]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return tail_c / c.sum(), tail_e / e.sum()


def auroc_from_counts(error_counts: Any, correct_counts: Any) -> float:
    """Mann-Whitney AUROC of histogram counts over shared increasing bins (one bin = ties)."""
    e = np.asarray(error_counts, dtype=np.float64)
    c = np.asarray(correct_counts, dtype=np.float64)
    n_e, n_c = e.sum(), c.sum()
    if n_e == 0 or n_c == 0:
        return math.nan
    below = np.concatenate([[0.0], np.cumsum(c)[:-1]])
    return float(np.dot(e, below + 0.5 * c) / (n_e * n_c))


def _check_maps(uncertainty: Any, error: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
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
    u, e = u.reshape(-1), e.reshape(-1)
    if u.size and (not np.isfinite(u).all() or u.min() < 0):
        raise InputError("uncertainty must be finite and >= 0")
    return u, e


def _check_extra(n_correct_at_zero: Any) -> int:
    if isinstance(n_correct_at_zero, bool) or not isinstance(n_correct_at_zero, (int, np.integer)) or n_correct_at_zero < 0:
        raise InputError(f"n_correct_at_zero must be a whole number >= 0; got {n_correct_at_zero!r}")
    return int(n_correct_at_zero)


def error_detection(
    uncertainty: Any,
    error: Any,
    *,
    mask: Any = None,
    max_uncertainty: float = math.log(2.0),
    n_correct_at_zero: int = 0,
) -> ErrorDetection:
    """How well a per-voxel uncertainty finds the misclassified voxels (AUROC and ROC data).

    One pass over the voxels (histograms), so it is cheap enough for every metric table.

    Parameters
    ----------
    uncertainty : ndarray (*spatial), float, finite, in [0, max_uncertainty]
        E.g. the predictive entropy (:func:`entropy`, at most ln 2 for one class) or an MC
        dropout / TTA variance map (at most 0.25: pass ``max_uncertainty=0.25``).
    error : ndarray (*spatial), bool
        True where the binarised prediction disagrees with the reference (:func:`misclassified`).
    mask : ndarray (*spatial) of bool, optional
        Only these voxels count (e.g. a region of interest); default all.
    max_uncertainty : float > 0
        Upper end of the bins (default ln 2, the largest binary entropy); values above it (beyond
        1e-6 relative) are refused.
    n_correct_at_zero : int >= 0
        Correct voxels with uncertainty 0 left out of the arrays (e.g. outside a crop where the
        prediction and the reference are both 0); counted as if they were there.

    Returns
    -------
    ErrorDetection

    Raises
    ------
    InputError
        Shapes that differ, a non-bool error map, negative, non-finite or too large uncertainty,
        a bad ``max_uncertainty`` or ``n_correct_at_zero``.

    Notes
    -----
    Uncertainty as a detector of errors: Jungo & Reyes 2019 ("Assessing reliability and
    challenges of uncertainty estimations for medical image segmentation"), Mehrtash et al. 2020.
    """
    u, e = _check_maps(uncertainty, error, mask)
    extra = _check_extra(n_correct_at_zero)
    if not (isinstance(max_uncertainty, (int, float)) and math.isfinite(max_uncertainty) and max_uncertainty > 0):
        raise InputError(f"max_uncertainty must be a finite number > 0; got {max_uncertainty!r}")
    hi = float(max_uncertainty)
    if u.size and float(u.max()) > hi * (1 + 1e-6):
        raise InputError(
            f"uncertainty reaches {float(u.max())!r}, above max_uncertainty {hi!r}; pass the map's "
            "largest possible value (ln 2 for binary entropy, 0.25 for a variance)"
        )
    hist = _ErrorHistogram(hi)
    for start in range(0, u.size, CHUNK):
        hist.add(u[start : start + CHUNK], e[start : start + CHUNK])
    return hist.result(extra)


class _ErrorHistogram:
    """Accumulates (bin, error) counts block by block: 0 -> bin 0, (edges[k], edges[k+1]] -> k + 1."""

    def __init__(self, hi: float) -> None:
        self.hi = hi
        self.pairs = np.zeros(2 * (ROC_BINS + 1), dtype=np.int64)

    def add(self, u: np.ndarray, e: np.ndarray) -> None:
        dtype = u.dtype if u.dtype.kind == "f" else np.float64
        idx = np.ceil(u * np.asarray(ROC_BINS / self.hi, dtype=dtype))
        idx = np.minimum(idx, ROC_BINS).astype(np.int64)
        idx *= 2
        idx += e
        self.pairs += np.bincount(idx, minlength=2 * (ROC_BINS + 1))

    def result(self, extra: int) -> ErrorDetection:
        ok_counts, err_counts = self.pairs[0::2].copy(), self.pairs[1::2].copy()
        ok_counts[0] += extra
        return ErrorDetection(
            auroc=auroc_from_counts(err_counts, ok_counts),
            n_errors=int(err_counts.sum()),
            n_correct=int(ok_counts.sum()),
            edges=np.linspace(0.0, self.hi, ROC_BINS + 1),
            error_counts=err_counts,
            correct_counts=ok_counts,
        )


def entropy_and_errors(p: np.ndarray, error: np.ndarray, *, n_correct_at_zero: int = 0) -> tuple[float, ErrorDetection]:
    """Subject entropy (:func:`subject_entropy`) and the error detection of the per-voxel binary
    entropy (:func:`error_detection`), in one pass over a validated foreground map.

    Parameters
    ----------
    p : ndarray, float or bool, values in [0, 1] (validated by the caller)
    error : ndarray of bool, same shape
    n_correct_at_zero : int
        As :func:`error_detection` (voxels outside the caller's crop).
    """
    hist = _ErrorHistogram(math.log(2.0))
    flat, err = p.reshape(-1), error.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, CHUNK):
        block = flat[start : start + CHUNK]
        h = np.zeros(block.shape, np.float32) if block.dtype == np.bool_ else binary_entropy(block)
        total += float(h.sum(dtype=np.float64))
        hist.add(h, err[start : start + CHUNK])
    return total, hist.result(_check_extra(n_correct_at_zero))


def uncertainty_error_auroc(uncertainty: Any, error: Any, *, mask: Any = None, n_correct_at_zero: int = 0) -> float:
    """Exact AUROC of ``uncertainty`` as a detector of the voxels where ``error`` is True.

    The Mann-Whitney statistic ``U / (n_errors n_correct)`` with ties counting 1/2 (equal to
    scikit-learn's ``roc_auc_score(error, uncertainty)``; sorts the correct voxels, so it costs
    O(N log N): for metric tables use :func:`error_detection`). Arguments as there; NaN when
    either class is empty.
    """
    u, e = _check_maps(uncertainty, error, mask)
    extra = _check_extra(n_correct_at_zero)
    u_err, u_ok = u[e], u[~e]
    n_err, n_ok = u_err.size, u_ok.size + extra
    if n_err == 0 or n_ok == 0:
        return math.nan
    neg = np.sort(u_ok.astype(np.float64, copy=False))
    pos = u_err.astype(np.float64, copy=False)
    below = np.searchsorted(neg, pos, side="left").astype(np.float64)
    ties = np.searchsorted(neg, pos, side="right") - below
    # the extra correct voxels sit at 0 (the smallest uncertainty): beaten by u > 0, tied by u == 0
    extra_credit = np.where(pos > 0, float(extra), 0.5 * extra)
    return float(np.sum(below + 0.5 * ties + extra_credit, dtype=np.float64)) / (float(n_err) * float(n_ok))


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
