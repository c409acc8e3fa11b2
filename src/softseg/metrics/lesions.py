"""Lesion-wise detection: lesion true-positive and false-detection rates (LTPR, LFDR)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from softseg.metrics._common import (
    binarize_raw,
    check_connectivity,
    check_min_overlap,
    check_threshold,
    pair,
    ratio,
    support_box,
)

__all__ = ["LesionDetection", "lesion_detection"]


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
    p, g = pair(prediction, truth)
    overlap = check_min_overlap(min_overlap)
    rank = check_connectivity(connectivity, p.ndim)
    t = check_threshold(threshold)
    return lesions(binarize_raw(p, t), binarize_raw(g, t), overlap, rank)


def lesions(pm: np.ndarray, gm: np.ndarray, min_overlap: int, rank: int) -> LesionDetection:
    """Lesion counts of two bool masks (validated); both empty -> LTPR 1, LFDR 0."""
    box = support_box(pm, gm)  # components never leave the box around both masks
    if box[0].stop <= box[0].start:
        return LesionDetection(1.0, 0.0, 0, 0, 0, 0)
    pm, gm = pm[box], gm[box]
    structure = ndimage.generate_binary_structure(pm.ndim, rank)
    lab_g, n_g = ndimage.label(gm, structure=structure)
    lab_p, n_p = ndimage.label(pm, structure=structure)
    hits_g = np.bincount(lab_g[pm], minlength=n_g + 1)[1:]  # predicted voxels per true lesion
    hits_p = np.bincount(lab_p[gm], minlength=n_p + 1)[1:]  # true voxels per predicted comp.
    n_detected = int(np.count_nonzero(hits_g >= min_overlap))
    n_false = int(np.count_nonzero(hits_p < min_overlap))
    ltpr = ratio(float(n_detected), float(n_g), best=1.0)
    lfdr = ratio(float(n_false), float(n_detected + n_false), best=0.0)
    return LesionDetection(ltpr, lfdr, int(n_g), int(n_p), n_detected, n_false)
