"""Segmentation, lesion, calibration and uncertainty metrics (SoftSeg and label-fusion papers).

Every metric takes ``(prediction, truth)`` arrays of the same shape (any number of dimensions)
with values in [0, 1]: binary masks or soft maps. Volumes and distances take an optional voxel
``spacing`` in mm (one value per axis; default 1 mm, i.e. voxel units).

Soft overlap
    With soft inputs the overlap counts are soft: ``TP = sum p*g``, ``FP = sum p*(1-g)``,
    ``FN = sum (1-p)*g``, ``TN = sum (1-p)*(1-g)``. On binary masks these are the usual counts.
    To evaluate a binarised prediction as the SoftSeg paper does, binarise it first
    (:func:`binarize`, ``p >= threshold``; :func:`optimal_threshold` picks the threshold).

Binarisation
    Metrics that need objects or surfaces (Hausdorff distance, lesion detection) and the
    calibration metrics binarise soft maps with ``value >= threshold`` (0.5 by default), the
    convention of the papers' toolbox (ivadomed). The comparison is made in the map's own
    precision (the threshold is rounded to float32 for a float32 map), so a value stored as
    float32(0.35) is foreground at threshold 0.35; :func:`threshold_sweep` uses the same rule.

Empty masks (one policy for every metric)
    An undefined ratio 0/0 takes the metric's best value, because nothing could go wrong;
    a ratio x/0 with x != 0 takes its limit (+-inf):

    ======================  ===========  =================  ======================
    metric                  both empty   truth empty only   prediction empty only
    ======================  ===========  =================  ======================
    dice                    1            0                  0
    precision               1            0                  1 (no false positive)
    recall (sensitivity)    1            1 (nothing missed) 0
    relative vol. diff.     0            -inf               1
    absolute vol. diff.     0            +inf               1
    Hausdorff distance      0            +inf               +inf
    LTPR                    1            1 (nothing missed) 0
    LFDR                    0            1                  0 (nothing detected)
    ======================  ===========  =================  ======================

    ``specificity`` is 1 when the truth has no background. :func:`evaluate` reports
    non-finite values as they are; the CLI writes them as ``null`` in JSON.

Calibration follows the label-fusion paper (Lemay et al. 2022) and Guo et al. (2017):
confidence = the largest class probability, K bins ``[k/K, (k+1)/K)`` with the **last bin
closed** so that a confidence of exactly 1.0 is counted. The google-research code the paper used
(``uncertainties/sources/postprocessing/metrics.py``) digitizes with ``np.linspace(0.1, 1, K)``
and silently drops confidences equal to 1.0 -- every saturated voxel of a normalized-ReLU
output would vanish from its ECE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from softseg.errors import InputError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LesionDetection",
    "ReliabilityDiagram",
    "ThresholdSweep",
    "absolute_volume_difference",
    "binarize",
    "brier_score",
    "dice",
    "entropy",
    "evaluate",
    "expected_calibration_error",
    "hausdorff_distance",
    "lesion_detection",
    "mse",
    "optimal_threshold",
    "pairwise_dice",
    "precision",
    "recall",
    "relative_volume_difference",
    "reliability_diagram",
    "specificity",
    "subject_entropy",
    "threshold_sweep",
    "volume",
]

#: The SoftSeg paper's threshold grid: 0.05, 0.10, ..., 0.95.
DEFAULT_THRESHOLDS = np.round(np.arange(1, 20) * 0.05, 10)
_CHUNK = 1 << 16  # voxels per block in the streaming loops: temporaries stay in cache


# ------------------------------------------------------------------------------ validation
def _array(x: Any, name: str, *, unit: bool = True) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be a numeric or boolean array; got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if unit:
        lo, hi = arr.min(), arr.max()  # NaN and +-inf show up here: one pass less
        if arr.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
            _raise_non_finite(arr, name)
        if lo < 0 or hi > 1:
            raise InputError(
                f"{name} has values outside [0, 1] (min {float(lo):g}, max {float(hi):g}); "
                "give probabilities, soft maps or 0/1 masks"
            )
        if arr.dtype.kind in "iu":  # whole numbers in [0, 1]: a mask; bool takes the fast paths
            return arr != 0
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
        _raise_non_finite(arr, name)
    return arr


def _raise_non_finite(arr: np.ndarray, name: str) -> None:
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    raise InputError(f"{name} contains {bad} NaN/Inf values; metrics need finite values")


def _pair(
    prediction: Any, truth: Any, *, names: tuple[str, str] = ("prediction", "truth")
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(prediction)
    ref = np.asarray(truth)
    if pred.shape != ref.shape:
        raise InputError(
            f"{names[0]} shape {pred.shape} and {names[1]} shape {ref.shape} differ; "
            "both must be on the same voxel grid"
        )
    return _array(pred, names[0]), _array(ref, names[1])


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        values = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(values) != ndim:
        raise InputError(f"spacing has {len(values)} values for an array with {ndim} axes")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"spacing must be positive finite mm values; got {values}")
    return values


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (0.0 < t <= 1.0):
        raise InputError(f"threshold must lie in (0, 1]; got {threshold!r}")
    return t


def binarize(prob: Any, threshold: float = 0.5) -> np.ndarray:
    """``prob >= threshold`` as a bool array (the papers' toolbox convention).

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
    threshold : float in (0, 1]

    Returns
    -------
    ndarray of bool, same shape
    """
    arr = _array(prob, "prob")
    return _binarize(arr, _check_threshold(threshold))


def _binarize(arr: np.ndarray, threshold: float) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind == "f":  # compare in the map's own precision (see the module notes)
        return arr >= arr.dtype.type(threshold)
    return arr >= threshold


# ------------------------------------------------------------------------- overlap metrics
def _total(a: np.ndarray) -> float:
    if a.dtype == np.bool_:
        return float(np.count_nonzero(a))
    return float(a.sum(dtype=np.float64))


def _sums(p: np.ndarray, g: np.ndarray) -> tuple[float, float, float]:
    """(sum p, sum g, sum p*g): exact counts for bool masks, else products in the inputs'
    precision accumulated in float64."""
    sp, sg = _total(p), _total(g)
    if p.dtype == np.bool_ and g.dtype == np.bool_:
        tp = float(np.count_nonzero(p & g))
    elif g.dtype == np.bool_:
        tp = float(p[g].sum(dtype=np.float64))
    elif p.dtype == np.bool_:
        tp = float(g[p].sum(dtype=np.float64))
    else:
        tp = float(np.multiply(p, g).sum(dtype=np.float64))
    return sp, sg, tp


def _ratio(num: float, den: float, *, best: float) -> float:
    if den > 0:
        return num / den
    return best if num == 0 else math.copysign(math.inf, num)


def _dice(sp: float, sg: float, tp: float) -> float:
    return _ratio(2.0 * tp, sp + sg, best=1.0)


def dice(prediction: Any, truth: Any) -> float:
    """Dice coefficient ``2 TP / (2 TP + FP + FN) = 2 sum(p g) / (sum p + sum g)``.

    Parameters
    ----------
    prediction, truth : ndarray, same shape, values in [0, 1] (soft counts for soft maps)

    Returns
    -------
    float in [0, 1]; 1.0 when both are empty.
    """
    p, g = _pair(prediction, truth)
    return _dice(*_sums(p, g))


def precision(prediction: Any, truth: Any) -> float:
    """Precision ``TP / (TP + FP) = sum(p g) / sum p``; 1.0 when the prediction is empty."""
    p, g = _pair(prediction, truth)
    sp, _, tp = _sums(p, g)
    return _ratio(tp, sp, best=1.0)


def recall(prediction: Any, truth: Any) -> float:
    """Recall (sensitivity) ``TP / (TP + FN) = sum(p g) / sum g``; 1.0 when the truth is empty."""
    p, g = _pair(prediction, truth)
    _, sg, tp = _sums(p, g)
    return _ratio(tp, sg, best=1.0)


def specificity(prediction: Any, truth: Any) -> float:
    """Specificity ``TN / (TN + FP) = sum((1-p)(1-g)) / sum(1-g)``; 1.0 when the truth is all
    foreground."""
    p, g = _pair(prediction, truth)
    sp, sg, tp = _sums(p, g)
    n = float(p.size)
    tn = n - sp - sg + tp
    return _ratio(tn, n - sg, best=1.0)


def mse(prediction: Any, truth: Any) -> float:
    """Mean squared error over **all** voxels, ``mean((p - g)**2)``, in [0, 1]."""
    p, g = _pair(prediction, truth)
    return _mse(p, g)


def _mse(p: np.ndarray, g: np.ndarray) -> float:
    return _sq_sum(p, g) / p.size


def _sq_sum(p: np.ndarray, g: np.ndarray) -> float:
    """``sum((p - g)**2)``: differences in the inputs' precision, float64 accumulation."""
    if p.dtype == np.bool_ and g.dtype == np.bool_:
        return float(np.count_nonzero(p ^ g))
    dtype = np.result_type(p.dtype, g.dtype, np.float32)
    a, b = p.reshape(-1), g.reshape(-1)
    total = 0.0
    for start in range(0, a.size, _CHUNK):  # block by block: temporaries stay in cache
        d = np.subtract(a[start : start + _CHUNK], b[start : start + _CHUNK], dtype=dtype)
        d = d.astype(np.float64, copy=False)
        np.multiply(d, d, out=d)  # no BLAS dot: its threads spin on a busy machine
        total += float(d.sum())
    return total


def volume(mask: Any, *, spacing: Sequence[float] | float | None = None) -> float:
    """Volume ``sum(values) * voxel volume`` in mm^3 (voxel units without ``spacing``)."""
    arr = _array(mask, "mask")
    sp = _spacing(spacing, arr.ndim)
    total = _total(arr)
    return total * float(np.prod(sp))


def relative_volume_difference(
    prediction: Any, truth: Any, *, spacing: Sequence[float] | float | None = None
) -> float:
    """Relative volume difference ``(V_truth - V_pred) / V_truth`` (SoftSeg paper's sign).

    Negative means over-segmentation, positive under-segmentation. The voxel volume cancels,
    ``spacing`` is accepted for symmetry with :func:`volume`. Empty truth: 0 when the
    prediction is empty too, else ``-inf``.
    """
    p, g = _pair(prediction, truth)
    _spacing(spacing, p.ndim)
    sp, sg, _ = _sums(p, g)
    return _ratio(sg - sp, sg, best=0.0)


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
    """
    from softseg.fusion import as_raters

    arr = as_raters(raters, min_raters=1, what="pairwise_dice")
    n = arr.shape[0]
    flat = arr.reshape(n, -1)
    if arr.dtype == np.bool_ or arr.dtype.kind in "iu":
        masks = [row != 0 for row in flat]
        sums = [float(np.count_nonzero(m)) for m in masks]
        inter = lambda i, j: float(np.count_nonzero(masks[i] & masks[j]))  # noqa: E731
    else:
        rows = [row.astype(np.float64, copy=False) for row in flat]
        sums = [float(r.sum()) for r in rows]
        inter = lambda i, j: float(np.multiply(rows[i], rows[j]).sum())  # noqa: E731
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = _dice(sums[i], sums[j], inter(i, j))
    return out


# ------------------------------------------------------------------------ distance metrics
def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    box = []
    for ax in range(mask.ndim):
        flags = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax))
        idx = np.flatnonzero(flags)
        box.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + 1 + pad, mask.shape[ax])))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour in the background (or on the array border)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hausdorff_distance(
    prediction: Any,
    truth: Any,
    *,
    spacing: Sequence[float] | float | None = None,
    percentile: float = 95.0,
    threshold: float = 0.5,
) -> float:
    """Symmetric (percentile) Hausdorff distance between the surfaces, in mm.

    For each surface voxel of one mask, the Euclidean distance (``distance_transform_edt``
    with ``sampling=spacing``) to the nearest surface voxel of the other; the result is the
    larger of the two directed ``percentile``-th percentiles (linear interpolation, as in
    MONAI). ``percentile=100`` is the classical Hausdorff distance.

    Parameters
    ----------
    prediction, truth : ndarray, same shape, values in [0, 1], binarised at ``threshold``
    spacing : sequence of float, optional
        Voxel size in mm per axis.
    percentile : float in [0, 100]
    threshold : float in (0, 1]

    Returns
    -------
    float
        mm; 0.0 when both masks are empty, ``inf`` when only one is.
    """
    p, g = _pair(prediction, truth)
    if not 0.0 <= float(percentile) <= 100.0:
        raise InputError(f"percentile must lie in [0, 100]; got {percentile!r}")
    t = _check_threshold(threshold)
    return _hausdorff(
        _binarize(p, t), _binarize(g, t), _spacing(spacing, p.ndim), float(percentile)
    )


def _hausdorff(pm: np.ndarray, gm: np.ndarray, sp: tuple[float, ...], q: float) -> float:
    has_p, has_g = bool(pm.any()), bool(gm.any())
    if not has_p and not has_g:
        return 0.0
    if not (has_p and has_g):
        return math.inf
    # Only the box around both masks matters: all surface voxels lie inside it, so distances
    # computed in the crop are exact. The 1-voxel pad keeps the erosion identical to the full
    # array's (outside voxels are background either way).
    box = _bbox(pm | gm, 1)
    ps = _surface(pm[box])
    gs = _surface(gm[box])
    d_pg = ndimage.distance_transform_edt(~gs, sampling=sp)[ps]
    d_gp = ndimage.distance_transform_edt(~ps, sampling=sp)[gs]
    return float(max(np.percentile(d_pg, q), np.percentile(d_gp, q)))


# ------------------------------------------------------------------------ lesion detection
@dataclass(frozen=True)
class LesionDetection:
    """Lesion-wise detection counts (ivadomed convention).

    Attributes
    ----------
    ltpr : float
        Lesion true-positive rate: detected true lesions / true lesions (1.0 without true
        lesions).
    lfdr : float
        Lesion false-detection rate: false predicted components / (detected true lesions +
        false predicted components) (0.0 when that is 0/0).
    n_true : int
        Connected components of the truth.
    n_predicted : int
        Connected components of the prediction.
    n_detected : int
        True lesions with at least ``min_overlap`` predicted voxels.
    n_false : int
        Predicted components with fewer than ``min_overlap`` voxels inside the truth.
    """

    ltpr: float
    lfdr: float
    n_true: int
    n_predicted: int
    n_detected: int
    n_false: int


def lesion_detection(
    prediction: Any,
    truth: Any,
    *,
    min_overlap: int = 3,
    connectivity: int | None = None,
    threshold: float = 0.5,
) -> LesionDetection:
    """Lesion true-positive and false-detection rates (Nair et al. 2020, the papers' toolbox).

    Lesions are connected components (default 18-connectivity in 3D, 8 in 2D:
    ``scipy.ndimage.generate_binary_structure(ndim, 2)``). A true lesion is detected when at
    least ``min_overlap`` of its voxels are predicted; a predicted component is a false
    detection when fewer than ``min_overlap`` of its voxels lie in the truth. As in ivadomed,
    a true lesion smaller than ``min_overlap`` voxels can never be detected (use
    ``min_overlap=1`` to count any overlap).

    Parameters
    ----------
    prediction, truth : ndarray, same shape, values in [0, 1], binarised at ``threshold``
    min_overlap : int >= 1
        Overlap in voxels that makes a detection.
    connectivity : int, optional
        ``scipy.ndimage`` connectivity rank, 1..ndim (3D: 1 = 6-, 2 = 18-, 3 = 26-connected).
        Default 2 (1 for 1D arrays).
    threshold : float in (0, 1]

    Returns
    -------
    LesionDetection
    """
    p, g = _pair(prediction, truth)
    if not isinstance(min_overlap, (int, np.integer)) or min_overlap < 1:
        raise InputError(f"min_overlap must be a whole number of voxels >= 1; got {min_overlap!r}")
    rank = min(2, p.ndim) if connectivity is None else connectivity
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= p.ndim:
        raise InputError(f"connectivity must be an integer in 1..{p.ndim}; got {connectivity!r}")
    t = _check_threshold(threshold)
    return _lesions(_binarize(p, t), _binarize(g, t), int(min_overlap), int(rank))


def _lesions(pm: np.ndarray, gm: np.ndarray, min_overlap: int, rank: int) -> LesionDetection:
    both = pm | gm
    if not both.any():
        return LesionDetection(1.0, 0.0, 0, 0, 0, 0)
    box = _bbox(both, 0)  # components never leave the box around both masks
    pm, gm = pm[box], gm[box]
    structure = ndimage.generate_binary_structure(pm.ndim, rank)
    lab_g, n_g = ndimage.label(gm, structure=structure)
    lab_p, n_p = ndimage.label(pm, structure=structure)
    hits_g = np.bincount(lab_g[pm], minlength=n_g + 1)[1:]  # predicted voxels per true lesion
    hits_p = np.bincount(lab_p[gm], minlength=n_p + 1)[1:]  # true voxels per predicted comp.
    n_detected = int(np.count_nonzero(hits_g >= min_overlap))
    n_false = int(np.count_nonzero(hits_p < min_overlap))
    ltpr = _ratio(float(n_detected), float(n_g), best=1.0)
    lfdr = _ratio(float(n_false), float(n_detected + n_false), best=0.0)
    return LesionDetection(ltpr, lfdr, int(n_g), int(n_p), n_detected, n_false)


# ----------------------------------------------------------------------------- calibration
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
    pred_fg = p >= 0.5
    conf = np.where(pred_fg, p, 1 - p)
    return conf, pred_fg == gm


def _confidence_correct(pr: np.ndarray, tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness (bool) per voxel of multi-class maps (class axis first)."""
    if pr.ndim == tr.ndim + 1 and pr.shape[1:] == tr.shape:  # multi-class, class axis first
        pr = _array(pr, "prob")
        tr = _array(tr, "truth", unit=False)
        n_classes = pr.shape[0]
        if n_classes < 2:
            raise InputError(
                f"a multi-class prob needs at least 2 classes on axis 0; got {pr.shape}"
            )
        if tr.dtype == np.bool_:
            tr = tr.astype(np.uint8)
        if tr.dtype.kind == "f" and not np.all(tr == np.round(tr)):
            raise InputError(
                "multi-class truth must hold integer class labels (use argmax of one-hot maps)"
            )
        if tr.min() < 0 or tr.max() >= n_classes:
            raise InputError(
                f"multi-class truth labels must lie in 0..{n_classes - 1}; got "
                f"{float(tr.min()):g}..{float(tr.max()):g}"
            )
        if pr.dtype == np.bool_:
            pr = pr.astype(np.float32)
        conf = pr.max(axis=0)
        correct = pr.argmax(axis=0) == tr.astype(np.int64)
        return conf, correct
    raise InputError(
        f"prob shape {pr.shape} and truth shape {tr.shape} do not match: give a foreground "
        "probability of the truth's shape, or class probabilities (C, *spatial) with integer "
        "labels (*spatial)"
    )


def _reliability(
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
    adds voxels of confidence 1 that are correct (the zero-probability background that
    :func:`evaluate` leaves out)."""
    small = np.uint8 if 2 * n_bins <= 256 else np.intp  # narrow indices: less memory traffic
    pairs = np.zeros(2 * n_bins, dtype=np.int64)  # (bin, correct) counts
    conf_sum = np.zeros(n_bins)
    size = (conf if prob is None else prob).size
    flat_a = (conf if prob is None else prob).reshape(-1)
    flat_b = (correct if prob is None else truth_mask).reshape(-1)
    for start in range(0, size, _CHUNK):
        a = flat_a[start : start + _CHUNK]
        b = flat_b[start : start + _CHUNK]
        if prob is None:
            c, ok = a, b
        else:
            c, ok = _binary_confidence(a, b)
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


def _n_bins(n_bins: Any) -> int:
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InputError(f"n_bins must be an integer >= 1; got {n_bins!r}")
    return int(n_bins)


def reliability_diagram(prob: Any, truth: Any, *, n_bins: int = 10) -> ReliabilityDiagram:
    """Reliability diagram of a binary or multi-class probability map.

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
        Binary: foreground probability, same shape as ``truth``; predicted class =
        ``prob >= 0.5``, confidence = ``max(prob, 1 - prob)``.
        Multi-class: class probabilities ``(C, *spatial)`` (class axis first); predicted
        class = argmax (first among ties), confidence = the largest class probability.
    truth : ndarray
        Binary: reference mask (soft values binarised at 0.5). Multi-class: integer labels
        ``(*spatial)`` in ``0..C-1``.
    n_bins : int
        K equal bins on [0, 1]; a voxel goes to bin ``floor(K * confidence)`` and the last
        bin is closed, so a confidence of exactly 1.0 counts. (The google-research code used
        by the paper drops it, which would discard every saturated voxel of a
        normalized-ReLU output.)

    Returns
    -------
    ReliabilityDiagram
    """
    k = _n_bins(n_bins)
    pr, tr = np.asarray(prob), np.asarray(truth)
    if pr.shape == tr.shape:  # binary: confidence computed block by block
        pr, tr = _array(pr, "prob"), _array(tr, "truth")
        return _reliability(None, None, k, prob=pr, truth_mask=_binarize(tr, 0.5))
    conf, correct = _confidence_correct(pr, tr)
    return _reliability(conf, correct, k)


def expected_calibration_error(prob: Any, truth: Any, *, n_bins: int = 10) -> float:
    """Expected calibration error (label-fusion paper, eq. 5), in [0, 1].

    ``ECE = sum_k (n_k / N) |accuracy(B_k) - confidence(B_k)|`` over the bins of
    :func:`reliability_diagram` (same arguments).
    """
    return reliability_diagram(prob, truth, n_bins=n_bins).ece


def brier_score(prob: Any, reference: Any) -> float:
    """Brier score ``mean((prob - reference)**2)`` (label-fusion paper, eq. 2).

    ``reference`` is typically the rater average. Class maps ``(C, *spatial)`` are compared
    element-wise (average over classes and voxels); pass one class to get per-class scores.
    """
    p, r = _pair(prob, reference, names=("prob", "reference"))
    return _mse(p, r)


# ----------------------------------------------------------------------------- uncertainty
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
    arr = _array(prob, "prob")
    p = arr if arr.dtype.kind == "f" else arr.astype(np.float32)
    if class_axis is None:
        return _binary_entropy(p).astype(np.float32, copy=False)
    return (0.0 - np.sum(_xlogx(p), axis=class_axis)).astype(np.float32, copy=False)


def _xlogx(p: np.ndarray) -> np.ndarray:
    """``p ln p`` with ``0 ln 0 = 0``, in p's float precision."""
    out = np.zeros_like(p)
    np.log(p, out=out, where=p > 0)
    out *= p
    return out


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """``-(p ln p + (1-p) ln(1-p))`` with ``0 ln 0 = 0``, in p's float precision."""
    h = np.zeros_like(p)
    np.log(p, out=h, where=p > 0)
    h *= p
    q = 1 - p
    lq = np.zeros_like(p)
    np.log(q, out=lq, where=q > 0)
    lq *= q
    h += lq
    np.negative(h, out=h)
    np.maximum(h, 0, out=h)  # -0.0 -> 0.0
    return h


def _entropy_sum(p: np.ndarray) -> float:
    """Sum of the binary entropy; voxels at exactly 0 or 1 add nothing and are skipped."""
    if p.dtype == np.bool_:
        return 0.0
    flat = p.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _CHUNK):  # block by block: temporaries stay in cache
        total += float(_binary_entropy(flat[start : start + _CHUNK]).sum(dtype=np.float64))
    return total


def subject_entropy(prob: Any, *, class_axis: int | None = None) -> float:
    """Entropy of a whole subject: the sum of :func:`entropy` over voxels (paper eq. 1), nats."""
    return float(entropy(prob, class_axis=class_axis).sum(dtype=np.float64))


# ---------------------------------------------------------------------------- thresholding
@dataclass(frozen=True, eq=False)
class ThresholdSweep:
    """Dice and volume of ``prob >= t`` for each threshold t.

    Attributes
    ----------
    thresholds : ndarray (T,), increasing
    dice : ndarray (T,)
        Dice of the binarised prediction against the truth (soft truth -> soft counts).
    volume : ndarray (T,)
        Volume of the binarised prediction, mm^3 (voxels without spacing).
    truth_volume : float
        Volume of the truth (sum of its values times the voxel volume).
    """

    thresholds: np.ndarray
    dice: np.ndarray
    volume: np.ndarray
    truth_volume: float

    @property
    def best_threshold(self) -> float:
        """The threshold with the highest Dice (the lowest one among ties)."""
        return float(self.thresholds[int(np.argmax(self.dice))])


def _thresholds(thresholds: Sequence[float] | None) -> np.ndarray:
    if thresholds is None:
        return DEFAULT_THRESHOLDS.copy()
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise InputError("thresholds is empty")
    if not np.all(np.isfinite(t)) or t.min() <= 0 or t.max() > 1:
        raise InputError(f"thresholds must lie in (0, 1]; got {t.tolist()}")
    if np.any(np.diff(t) <= 0):
        raise InputError("thresholds must be strictly increasing")
    return t


def threshold_sweep(
    prob: Any,
    truth: Any,
    *,
    thresholds: Sequence[float] | None = None,
    spacing: Sequence[float] | float | None = None,
) -> ThresholdSweep:
    """Dice and predicted volume at each threshold (SoftSeg paper, fig. 3).

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
    truth : ndarray, same shape, values in [0, 1]
    thresholds : sequence of float, optional
        Increasing values in (0, 1]; default 0.05, 0.10, ..., 0.95.
    spacing : sequence of float, optional
        Voxel size in mm, for the volumes.

    Returns
    -------
    ThresholdSweep
        ``dice[i] == dice(prob >= thresholds[i], truth)`` exactly, computed in one pass.
    """
    p, g = _pair(prob, truth, names=("prob", "truth"))
    return _sweep(p, g, _thresholds(thresholds), _spacing(spacing, p.ndim))


def _sweep(p: np.ndarray, g: np.ndarray, t: np.ndarray, sp: tuple[float, ...]) -> ThresholdSweep:
    voxel = float(np.prod(sp))
    pf = p.reshape(-1)
    gf = g.reshape(-1)
    sum_g = _total(gf)
    # compare in the prediction's own dtype, exactly as ``p >= t`` does
    t_cmp = t.astype(pf.dtype) if pf.dtype.kind == "f" else t
    keep = pf >= t_cmp[0]
    ps = pf[keep]
    gs = gf[keep].astype(np.float64)
    idx = np.searchsorted(t_cmp, ps, side="right") - 1  # largest threshold <= p
    count = np.bincount(idx, minlength=t.size)[::-1].cumsum()[::-1].astype(np.float64)
    tp = np.bincount(idx, weights=gs, minlength=t.size)[::-1].cumsum()[::-1]
    dice_values = np.array([_dice(c, sum_g, x) for c, x in zip(count, tp)])
    return ThresholdSweep(t.copy(), dice_values, count * voxel, sum_g * voxel)


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
        One image, or several (the mean Dice over images is maximised).
    thresholds : sequence of float, optional
        Default 0.05, 0.10, ..., 0.95.

    Returns
    -------
    float
        The best threshold; the lowest one among ties.
    """
    t = _thresholds(thresholds)
    if isinstance(prob, np.ndarray) or not isinstance(prob, Sequence):
        probs, truths = [prob], [truth]
    else:
        probs, truths = list(prob), list(truth)
        if len(probs) != len(truths) or not probs:
            raise InputError(
                f"optimal_threshold: got {len(probs)} predictions and {len(truths)} truths; "
                "give one truth per prediction"
            )
    total = np.zeros(t.size)
    for i, (pi, gi) in enumerate(zip(probs, truths)):
        p, g = _pair(pi, gi, names=(f"prob[{i}]", f"truth[{i}]"))
        total += _sweep(p, g, t, (1.0,) * p.ndim).dice
    return float(t[int(np.argmax(total))])


# --------------------------------------------------------------------------- all at once
def evaluate(
    prediction: Any,
    truth: Any,
    *,
    spacing: Sequence[float] | float | None = None,
    threshold: float | None = None,
    min_overlap: int = 3,
    n_bins: int = 10,
    percentile: float = 95.0,
    reference: Any | None = None,
) -> dict[str, float | int | None]:
    """The full metric set of the papers for one image, validated once.

    Parameters
    ----------
    prediction : ndarray, values in [0, 1]
        Soft prediction (or binary mask).
    truth : ndarray, same shape, values in [0, 1]
    spacing : sequence of float, optional
        Voxel size in mm.
    threshold : float in (0, 1], optional
        Binarise the prediction (``>=``) before the overlap and volume metrics, as the
        papers do. Without it they use soft counts. Hausdorff distance and lesion detection
        binarise at ``threshold`` or 0.5; calibration, Brier score and entropy use the raw
        prediction.
    min_overlap : int
        For :func:`lesion_detection`.
    n_bins : int
        For :func:`expected_calibration_error`.
    percentile : float
        For :func:`hausdorff_distance`.
    reference : ndarray, optional
        Soft reference for the Brier score and the entropy comparison (e.g. the rater
        average); default the truth.

    Returns
    -------
    dict
        ``dice, precision, recall, specificity, mse, relative_volume_difference,
        absolute_volume_difference, volume_prediction_mm3, volume_truth_mm3,
        hausdorff_mm, ltpr, lfdr, n_true_lesions, n_predicted_lesions, n_detected_lesions,
        n_false_lesions, ece, brier_score, entropy_prediction, entropy_reference,
        entropy_abs_difference``, plus ``threshold`` and ``hausdorff_percentile``.
    """
    p, g = _pair(prediction, truth)
    sp = _spacing(spacing, p.ndim)
    t = None if threshold is None else _check_threshold(threshold)
    if not isinstance(min_overlap, (int, np.integer)) or min_overlap < 1:
        raise InputError(f"min_overlap must be a whole number of voxels >= 1; got {min_overlap!r}")
    if not 0.0 <= float(percentile) <= 100.0:
        raise InputError(f"percentile must lie in [0, 100]; got {percentile!r}")
    k = _n_bins(n_bins)
    if reference is None:
        ref = g
    else:
        ref = np.asarray(reference)
        if ref.shape != p.shape:
            raise InputError(
                f"reference shape {ref.shape} and prediction shape {p.shape} differ; "
                "both must be on the same voxel grid"
            )
        ref = _array(ref, "reference")
    n = p.size
    voxel = float(np.prod(sp))

    # objects and surfaces: binary masks on the grid (cropped to their boxes inside)
    bin_t = 0.5 if t is None else t
    pm = _binarize(p, bin_t)
    gm = _binarize(g, 0.5)
    lesions = _lesions(pm, gm, int(min_overlap), min(2, p.ndim))
    hausdorff = _hausdorff(pm, gm, sp, float(percentile))

    # voxel-wise metrics: a voxel where prediction, truth and reference are all 0 adds nothing
    # to any sum and is a confident, correct background voxel for calibration, so only the
    # support is gathered (most of a medical volume is background)
    n_support = n
    if np.count_nonzero(p) < 0.5 * n:  # a dense prediction (e.g. sigmoid) skips the search
        support = _nonzero(p) | _nonzero(g)
        if ref is not g:
            support |= _nonzero(ref)
        n_support = int(np.count_nonzero(support))
    if n_support < 0.5 * n:
        where = np.flatnonzero(support)
        ps, gs, rs = (a.reshape(-1)[where] for a in (p, g, ref))
    else:
        ps, gs, rs = p.reshape(-1), g.reshape(-1), ref.reshape(-1)
        n_support = n
    n_empty = n - n_support
    po = _binarize(ps, t) if t is not None else ps
    s_p, s_g, tp = _sums(po, gs)
    diagram = _reliability(
        None, None, k, prob=ps, truth_mask=_binarize(gs, 0.5), n_sure_right=n_empty
    )
    h_pred = _entropy_sum(ps)
    h_ref = _entropy_sum(rs)
    rvd = _ratio(s_g - s_p, s_g, best=0.0)
    return {
        "threshold": t,
        "dice": _dice(s_p, s_g, tp),
        "precision": _ratio(tp, s_p, best=1.0),
        "recall": _ratio(tp, s_g, best=1.0),
        "specificity": _ratio(n - s_p - s_g + tp, n - s_g, best=1.0),
        "mse": _sq_sum(po, gs) / n,
        "relative_volume_difference": rvd,
        "absolute_volume_difference": abs(rvd),
        "volume_prediction_mm3": s_p * voxel,
        "volume_truth_mm3": s_g * voxel,
        "hausdorff_mm": hausdorff,
        "hausdorff_percentile": float(percentile),
        "ltpr": lesions.ltpr,
        "lfdr": lesions.lfdr,
        "n_true_lesions": lesions.n_true,
        "n_predicted_lesions": lesions.n_predicted,
        "n_detected_lesions": lesions.n_detected,
        "n_false_lesions": lesions.n_false,
        "ece": diagram.ece,
        "brier_score": _sq_sum(ps, rs) / n,
        "entropy_prediction": h_pred,
        "entropy_reference": h_ref,
        "entropy_abs_difference": abs(h_pred - h_ref),
    }


def _nonzero(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.bool_ else a != 0
