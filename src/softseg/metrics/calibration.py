"""Calibration: reliability diagram, expected calibration error (ECE), Brier score.

Calibration follows the label-fusion paper (Lemay et al. 2022) and Guo et al. (2017):
confidence = the largest class probability, K bins ``[k/K, (k+1)/K)`` with the **last bin
closed** so that a confidence of exactly 1.0 is counted, accuracy = fraction of the bin's voxels
whose predicted class equals the reference class,
``ECE = sum_k (n_k / N) |accuracy_k - confidence_k|``. The google-research code the paper used
(``uncertainties/sources/postprocessing/metrics.py``) digitizes with ``np.linspace(0.1, 1, K)``
and silently drops confidences equal to 1.0 -- every saturated voxel of a normalized-ReLU
output would vanish from its ECE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.metrics._common import CHUNK, as_finite, as_unit, binarize_raw, check_n_bins, pair
from softseg.metrics.overlap import sq_sum

__all__ = [
    "ReliabilityDiagram",
    "brier_score",
    "expected_calibration_error",
    "reliability_diagram",
]


@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """Per-bin calibration statistics.

    Attributes
    ----------
    edges : ndarray (K + 1,)
        Bin edges ``0, 1/K, ..., 1``; bin k is ``[edges[k], edges[k+1])``, the last one closed.
    confidence : ndarray (K,)
        Mean confidence of the voxels in each bin (NaN for an empty bin).
    accuracy : ndarray (K,)
        Fraction of the bin's voxels whose predicted class equals the reference class (NaN for
        an empty bin).
    count : ndarray (K,), int64
        Voxels per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error ``sum_k (n_k / N) |accuracy_k - confidence_k|``."""
        n = self.count.sum()
        used = self.count > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.dot(self.count[used] / n, gap))


def _binary_confidence(p: np.ndarray, gm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness of a foreground probability against a bool mask."""
    if p.dtype == np.bool_:
        return np.ones(p.shape, dtype=np.float32), p == gm
    pred_fg = p >= p.dtype.type(0.5)
    conf = np.where(pred_fg, p, 1 - p)
    return conf, pred_fg == gm


def class_labels(truth: Any, n_classes: int, name: str = "truth") -> np.ndarray:
    """Integer class labels in ``0..n_classes-1`` as int64 (float labels must be whole)."""
    tr = as_finite(truth, name)
    if tr.dtype == np.bool_:
        tr = tr.astype(np.uint8)
    if tr.dtype.kind == "f" and not np.all(tr == np.round(tr)):
        raise InputError(
            f"{name} must hold integer class labels 0..{n_classes - 1} (use the argmax of "
            "one-hot maps)"
        )
    lo, hi = tr.min(), tr.max()
    if lo < 0 or hi >= n_classes:
        raise InputError(
            f"{name} labels must lie in 0..{n_classes - 1}; got {float(lo):g}..{float(hi):g}"
        )
    return tr.astype(np.int64, copy=False)


def class_argmax(pr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax over the class axis (first class among ties) and the largest probability.

    Parameters
    ----------
    pr : ndarray (C, *spatial), validated class probabilities

    Returns
    -------
    argmax : ndarray (*spatial), uint8 (intp beyond 255 classes)
    largest : ndarray (*spatial), ``pr``'s dtype (float32 for bool input)

    Notes
    -----
    One pass per class over contiguous maps: ``ndarray.argmax(axis=0)`` strides across the
    class maps and is several times slower on large volumes.
    """
    if pr.dtype == np.bool_:
        pr = pr.astype(np.float32)
    largest = pr[0].copy()
    idx = np.zeros(pr.shape[1:], dtype=np.uint8 if pr.shape[0] <= 256 else np.intp)
    for k in range(1, pr.shape[0]):
        better = pr[k] > largest  # strict: the first class wins a tie
        idx[better] = k
        np.maximum(largest, pr[k], out=largest)
    return idx, largest


def confidence_correct(
    pr: np.ndarray, labels: np.ndarray, argmax: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (largest class probability) and correctness (argmax == label) per voxel.

    ``pr`` is validated class probabilities ``(C, *spatial)``, ``labels`` integer
    ``(*spatial)``; ``argmax`` is :func:`class_argmax`'s result when already computed. The
    argmax takes the first class among ties.
    """
    idx, largest = class_argmax(pr) if argmax is None else argmax
    return largest, idx == labels


def reliability(
    conf: np.ndarray | None,
    correct: np.ndarray | None,
    n_bins: int,
    *,
    prob: np.ndarray | None = None,
    truth_mask: np.ndarray | None = None,
    n_sure_right: int = 0,
) -> ReliabilityDiagram:
    """Bin statistics from ``conf``/``correct`` (any shape), or from a binary foreground
    ``prob`` and a bool ``truth_mask`` (confidence computed block by block). ``n_sure_right``
    adds voxels of confidence 1 that are correct (zero-probability background left out by the
    caller)."""
    small = np.uint8 if 2 * n_bins <= 256 else np.intp  # narrow indices: less memory traffic
    pairs = np.zeros(2 * n_bins, dtype=np.int64)  # (bin, correct) counts
    conf_sum = np.zeros(n_bins)
    src_a = conf if prob is None else prob
    src_b = correct if prob is None else truth_mask
    flat_a, flat_b = src_a.reshape(-1), src_b.reshape(-1)
    for start in range(0, flat_a.size, CHUNK):
        a = flat_a[start : start + CHUNK]
        b = flat_b[start : start + CHUNK]
        c, ok = (a, b) if prob is None else _binary_confidence(a, b)
        # bin k holds k/K <= c < (k+1)/K, i.e. floor(K c) in the input's precision;
        # c == 1.0 gives K and goes to the last bin (the google-research code drops it)
        idx = np.multiply(c, n_bins, dtype=c.dtype).astype(small)
        np.minimum(idx, n_bins - 1, out=idx)
        conf_sum += np.bincount(idx, weights=c, minlength=n_bins)
        idx *= small(2)
        idx += ok.astype(small)
        pairs += np.bincount(idx, minlength=2 * n_bins)
    count = pairs[0::2] + pairs[1::2]
    acc_sum = pairs[1::2].astype(np.float64)
    if n_sure_right:
        count[-1] += n_sure_right
        acc_sum[-1] += n_sure_right
        conf_sum[-1] += n_sure_right
    safe = np.maximum(count, 1)
    confidence = np.where(count > 0, conf_sum / safe, np.nan)
    accuracy = np.where(count > 0, acc_sum / safe, np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return ReliabilityDiagram(edges, confidence, accuracy, count)


def reliability_diagram(prob: Any, truth: Any, *, n_bins: int = 10) -> ReliabilityDiagram:
    """Reliability diagram of a binary or multi-class probability map.

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
        Binary: foreground probability, same shape as ``truth``; predicted class =
        ``prob >= 0.5``, confidence = ``max(prob, 1 - prob)``.
        Multi-class: class probabilities ``(C, *spatial)`` (class axis first, C >= 2);
        predicted class = argmax (first among ties), confidence = the largest class
        probability (label-fusion paper).
    truth : ndarray
        Binary: reference mask (soft values binarised at 0.5). Multi-class: integer labels
        ``(*spatial)`` in ``0..C-1``.
    n_bins : int
        K equal bins on [0, 1]; a voxel goes to bin ``floor(K * confidence)`` and the last
        bin is closed, so a confidence of exactly 1.0 counts.

    Returns
    -------
    ReliabilityDiagram

    Raises
    ------
    InputError
        Shapes that fit neither form, probabilities outside [0, 1], labels out of range.
    """
    k = check_n_bins(n_bins)
    pr, tr = np.asarray(prob), np.asarray(truth)
    if pr.shape == tr.shape:  # binary: confidence computed block by block
        p, g = pair(pr, tr, names=("prob", "truth"))
        return reliability(None, None, k, prob=p, truth_mask=binarize_raw(g, 0.5))
    if pr.ndim == tr.ndim + 1 and pr.shape[1:] == tr.shape:
        if pr.shape[0] < 2:
            raise InputError(
                f"a multi-class prob needs at least 2 classes on axis 0; got shape {pr.shape}"
            )
        probs = as_unit(pr, "prob")
        labels = class_labels(tr, pr.shape[0])
        conf, correct = confidence_correct(probs, labels)
        return reliability(conf, correct, k)
    raise InputError(
        f"prob shape {pr.shape} and truth shape {tr.shape} do not match: give a foreground "
        "probability of the truth's shape, or class probabilities (C, *spatial) with integer "
        "labels (*spatial)"
    )


def expected_calibration_error(prob: Any, truth: Any, *, n_bins: int = 10) -> float:
    """Expected calibration error (label-fusion paper, eq. 5), in [0, 1].

    ``ECE = sum_k (n_k / N) |accuracy(B_k) - confidence(B_k)|`` over the bins of
    :func:`reliability_diagram` (same arguments; binary or multi-class).
    """
    return reliability_diagram(prob, truth, n_bins=n_bins).ece


def brier_score(prob: Any, reference: Any) -> float:
    """Brier score ``mean((prob - reference)**2)`` (label-fusion paper, eq. 2).

    ``reference`` is typically the rater average. Class maps ``(C, *spatial)`` are compared
    element-wise (average over classes and voxels); pass one class to get per-class scores.
    """
    p, r = pair(prob, reference, names=("prob", "reference"))
    return sq_sum(p, r) / p.size
