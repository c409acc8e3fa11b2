"""How raters agree: disagreement (entropy) maps, rater performance against a reference.

One definition of a rater's sensitivity and specificity serves every path (the CLI, the Fuse
widget, training and the protocol): rater ``j`` (values ``d_j`` in [0, 1]) is scored against a
reference ``W`` in [0, 1] inside a region, with soft counts::

    sensitivity_j = sum(W * d_j) / sum(W)
    specificity_j = sum((1 - W) * (1 - d_j)) / sum(1 - W)

(:func:`softseg.metrics.recall` and :func:`softseg.metrics.specificity` of ``d_j`` against ``W``;
1.0 when the denominator is 0). These are exactly STAPLE's M-step formulas (Warfield et al. 2004,
eqs. 14-15), so for STAPLE the EM's own estimates are this definition with ``W`` = the posterior
of its last M-step (the numbers SimpleITK's ``GetSensitivity``/``GetSpecificity`` report); for
the other methods ``W`` is the fused map. The multi-class counterpart is the confusion matrix
``theta_j[t, s]`` = share of the reference's class ``t`` that rater ``j`` labels ``s`` (rows =
true class, each row sums to 1; :func:`softseg.fusion.multilabel.confusion_matrices`); for two
classes :func:`binary_confusion` gives ``theta_j[1, 1]`` = sensitivity, ``theta_j[0, 0]`` =
specificity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from softseg.errors import InputError
from softseg.fusion.raters import is_binary, as_raters, roi_box
from softseg.fusion.voting import vote_count, average

__all__ = [
    "binary_confusion",
    "disagreement",
    "rater_performance",
    "soft_class_confusion",
]


def disagreement(raters: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Per-voxel entropy (nats) of the rater average: 0 where all agree, ln 2 at a 50/50 split.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, values in [0, 1]

    Returns
    -------
    ndarray (*spatial), float32, values in [0, ln 2]
        ``-(m ln m + (1 - m) ln(1 - m))`` with ``m`` the rater average (see
        :func:`softseg.metrics.entropy`).
    """
    from softseg.metrics import entropy

    arr = as_raters(raters, what="disagreement")
    if not is_binary(arr):
        return entropy(average(arr))
    # binary raters: the average takes R + 1 values k / R; the entropy of those, looked up by the
    # vote count (the same numbers as entropy(average(raters)), without a log per voxel)
    n = arr.shape[0]
    table = entropy(np.arange(n + 1, dtype=np.float32) / np.float32(n))
    return table[vote_count(arr)]


def _region(roi: np.ndarray | None, spatial: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray | None]:
    """Box slices of the region, and the mask inside the box when the region is not a box."""
    if roi is None:
        return roi_box(None, spatial), None
    box = roi_box(roi)
    inner = roi[box]
    return box, (None if inner.all() else inner)


def rater_performance(
    raters: np.ndarray | Sequence[np.ndarray],
    reference: np.ndarray,
    *,
    roi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity of each rater against a reference, with soft counts.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, values in [0, 1]
    reference : ndarray (*spatial), values in [0, 1]
        The fused map (binary or soft).
    roi : ndarray (*spatial) of bool, optional
        Count only inside this region (the whole array when None).

    Returns
    -------
    sensitivity, specificity : ndarray (R,), float64, values in [0, 1]
        See the module notes for the definition (1.0 where the reference has no foreground,
        respectively no background, inside the region).

    Raises
    ------
    InputError
        Shapes that differ, values outside [0, 1].
    """
    from softseg.metrics import recall, specificity

    arr = as_raters(raters, min_raters=1, what="rater performance")
    reference = np.asarray(reference)
    if reference.shape != arr.shape[1:]:
        raise InputError(
            f"rater performance: reference has shape {reference.shape} but the raters' spatial "
            f"shape is {arr.shape[1:]}"
        )
    box, inner = _region(roi, arr.shape[1:])
    ref = reference[box] if inner is None else reference[box][inner]
    sens = np.empty(arr.shape[0])
    spec = np.empty(arr.shape[0])
    for j in range(arr.shape[0]):
        d = arr[j][box] if inner is None else arr[j][box][inner]
        sens[j] = recall(d, ref)
        spec[j] = specificity(d, ref)
    return sens, spec


def binary_confusion(sensitivity: np.ndarray, specificity: np.ndarray) -> np.ndarray:
    """(R, 2, 2) confusion matrices from sensitivities and specificities (rows = true class).

    ``[[specificity, 1 - specificity], [1 - sensitivity, sensitivity]]`` per rater.
    """
    p = np.asarray(sensitivity, dtype=np.float64)
    q = np.asarray(specificity, dtype=np.float64)
    out = np.empty((p.size, 2, 2))
    out[:, 0, 0], out[:, 0, 1] = q, 1.0 - q
    out[:, 1, 0], out[:, 1, 1] = 1.0 - p, p
    return out


def soft_class_confusion(
    class_maps: np.ndarray, reference: np.ndarray, *, roi: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrices of raters given as class probabilities, against soft class maps.

    The form of :func:`softseg.fusion.multilabel.confusion_matrices` (label-map raters) for
    raters that are themselves class probabilities ``Q_j`` (confidence-painted class maps):
    ``theta[j, t, s] = sum(P_t Q_js) / sum(P_t)`` over the region, ``P`` the reference's class
    probabilities (soft counts on both sides; with one-hot maps it is the label-map form).

    Parameters
    ----------
    class_maps : ndarray (R, K+1, *spatial), float, each rater's class probabilities
    reference : ndarray (K+1, *spatial), float, the reference's class probabilities
    roi : ndarray (*spatial) of bool, optional

    Returns
    -------
    ndarray (R, K+1, K+1), float64; rows = true class, each row sums to 1; a class with no
    reference weight gets the identity row.
    """
    n, k1 = class_maps.shape[:2]
    if reference.shape != class_maps.shape[1:]:
        raise InputError(
            f"class confusion: reference has shape {reference.shape}; expected {class_maps.shape[1:]}"
        )
    box, inner = _region(roi, class_maps.shape[2:])

    def cut(a: np.ndarray) -> np.ndarray:
        part = a[(slice(None), *box)]
        return (part if inner is None else part[:, inner]).reshape(k1, -1).astype(np.float64)

    ref = cut(reference)
    weight = ref.sum(axis=1)
    out = np.stack([ref @ cut(class_maps[j]).T for j in range(n)])
    eye = np.eye(k1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = out / np.where(weight > 0, weight, 1.0)[None, :, None]
    return np.where((weight > 0)[None, :, None], rows, eye[None])
