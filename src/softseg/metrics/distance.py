"""Surface distance: the (percentile) Hausdorff distance in mm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from softseg.metrics._common import (
    binarize_raw,
    check_percentile,
    check_threshold,
    pair,
    support_box,
    voxel_spacing,
)

__all__ = ["hausdorff_distance"]


def surface(mask: np.ndarray) -> np.ndarray:
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
    p, g = pair(prediction, truth)
    q = check_percentile(percentile)
    t = check_threshold(threshold)
    return hausdorff(binarize_raw(p, t), binarize_raw(g, t), voxel_spacing(spacing, p.ndim), q)


def hausdorff(pm: np.ndarray, gm: np.ndarray, sp: tuple[float, ...], q: float) -> float:
    """Hausdorff distance of two bool masks (validated), the empty-mask policy included."""
    # Only the box around both masks matters: all surface voxels lie inside it, so distances
    # computed in the crop are exact. The 1-voxel pad keeps the erosion identical to the full
    # array's (outside voxels are background either way).
    box = support_box(pm, gm, pad=1)
    if box[0].stop <= box[0].start:
        return 0.0  # both empty
    pm, gm = pm[box], gm[box]
    if not (pm.any() and gm.any()):
        return math.inf  # only one is empty
    ps = surface(pm)
    gs = surface(gm)
    d_pg = ndimage.distance_transform_edt(~gs, sampling=sp)[ps]
    d_gp = ndimage.distance_transform_edt(~ps, sampling=sp)[gs]
    return float(max(np.percentile(d_pg, q), np.percentile(d_gp, q)))
