"""Uncertainty: per-voxel predictive entropy and the subject entropy (label-fusion paper)."""

from __future__ import annotations

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
