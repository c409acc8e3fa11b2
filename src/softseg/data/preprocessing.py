"""Preprocessing of the SoftSeg protocol (Table 1 of the paper): resampling, z-score, crop/pad.

1. **Resampling** to the target spacing with :func:`scipy.ndimage.zoom` in ``grid_mode`` (the
   field of view is kept exactly; the output size is the native extent divided by the target
   spacing, rounded): spline order 2 for images, linear (order 1) for labels, which is what makes
   label borders fractional (soft ground truth). An axis whose target is ``None`` is not resampled.
2. **Per-contrast z-score** over the whole resampled volume (each channel of each subject: mean
   0, standard deviation 1; a constant channel is only centred).
3. **Centre crop / pad** of every slice to the crop size; images are padded with their channel's
   minimum (background), labels with 0.

Arrays are in the display order of :mod:`softseg.geometry` (axis 0 = axial slices), as
:func:`softseg.data.load_subject` returns them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from softseg.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from softseg.data.dataset import SubjectData

__all__ = [
    "Preprocessing",
    "center_crop_or_pad",
    "median_spacing",
    "preprocess_image",
    "preprocess_label",
    "resample",
    "resampled_shape",
    "resolve_spacing",
    "zscore",
]

@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing of a model, stored in its model file.

    Attributes
    ----------
    spacing : tuple of 3 (float or None)
        Target voxel size (mm) along display axes (S, H, W) = (slice, rows, cols); ``None`` keeps
        the native spacing of that axis.
    crop : tuple of 2 int
        Training slice size (rows, cols). Prediction runs on whole slices.
    channels : tuple of str
        Input channel names, in order.
    normalization : str
        ``"zscore"``: per-volume, per-channel z-score.
    orientation : str
        Axis codes of the arrays the network sees (``"SPL"``: slices along superior, rows
        posterior, cols left), see :mod:`softseg.geometry`.
    """

    spacing: tuple[float | None, float | None, float | None]
    crop: tuple[int, int]
    channels: tuple[str, ...]
    normalization: str = "zscore"
    orientation: str = "SPL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "spacing": list(self.spacing),
            "crop": list(self.crop),
            "channels": list(self.channels),
            "normalization": self.normalization,
            "orientation": self.orientation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        known = {"spacing", "crop", "channels", "normalization", "orientation"}
        extra = set(data) - known
        if extra:
            raise InputError(f"unknown preprocessing keys {sorted(extra)}; valid: {sorted(known)}")
        spacing = tuple(None if s is None else float(s) for s in data["spacing"])
        if len(spacing) != 3:
            raise InputError(f"preprocessing spacing must have 3 entries (S, H, W); got {list(spacing)}")
        return cls(
            spacing=spacing,  # type: ignore[arg-type]
            crop=tuple(int(c) for c in data["crop"]),  # type: ignore[arg-type]
            channels=tuple(str(c) for c in data["channels"]),
            normalization=str(data.get("normalization", "zscore")),
            orientation=str(data.get("orientation", "SPL")),
        )


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float | None]
) -> tuple[int, ...]:
    """Grid size after resampling: native extent / target spacing, rounded (at least 1)."""
    out = []
    for n, s, t in zip(shape, spacing, target):
        out.append(int(n) if t is None else max(1, int(round(n * float(s) / float(t)))))
    return tuple(out)


def resample(
    array: np.ndarray,
    shape: Sequence[int],
    *,
    order: int,
) -> np.ndarray:
    """Resample the last three axes of *array* onto a grid of *shape* covering the same extent.

    Uses :func:`scipy.ndimage.zoom` with ``grid_mode=True`` (voxel edges aligned, so the field
    of view is kept exactly and resampling back to the original shape is the inverse mapping)
    and ``mode='nearest'`` at the borders.

    Parameters
    ----------
    array : ndarray, shape (..., A, B, C)
    shape : 3 ints
    order : int
        Spline order: 2 for images, 1 (linear) for labels and predictions.

    Returns
    -------
    ndarray, shape (..., *shape), float32
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape[-3:]) == shape:
        return array.astype(np.float32, copy=False)
    lead = array.shape[:-3]
    flat = array.reshape((-1,) + array.shape[-3:])
    out = np.empty((flat.shape[0],) + shape, dtype=np.float32)
    zoom = [o / n for o, n in zip(shape, flat.shape[1:])]
    opts = {"output": np.float32, "order": order, "mode": "nearest", "grid_mode": True, "prefilter": order > 1}
    for i in range(flat.shape[0]):
        vol = flat[i].astype(np.float32, copy=False)
        if shape[0] == flat.shape[1]:
            # slices kept (the usual 2D case): zoom each slice in-plane. Identical to the 3D zoom
            # (an interpolating spline sampled at its own knots along axis 0) with 3x / 2x fewer taps.
            for k in range(shape[0]):
                out[i, k] = ndimage.zoom(vol[k], zoom[1:], **opts)
        else:
            out[i] = ndimage.zoom(vol, zoom, **opts)
    return out.reshape(lead + shape)


def zscore(images: np.ndarray) -> np.ndarray:
    """Per-channel z-score of a (C, ...) array (a constant channel is only centred)."""
    images = np.asarray(images, dtype=np.float32)
    out = np.empty_like(images)
    for c in range(images.shape[0]):
        ch = images[c]
        mean = float(ch.mean(dtype=np.float64))
        std = float(ch.std(dtype=np.float64))
        out[c] = (ch - mean) / (std if std > 1e-8 else 1.0)
    return out


def center_crop_or_pad(array: np.ndarray, size: Sequence[int], *, value: float | np.ndarray = 0.0) -> np.ndarray:
    """Centre-crop or pad the last two axes to *size*.

    Parameters
    ----------
    array : ndarray, shape (..., H, W)
    size : (rows, cols)
    value : float or ndarray broadcastable to ``array.shape[:-2] + (1, 1)``
        Padding value.

    Returns
    -------
    ndarray, shape (..., rows, cols)
        Crop start is ``(n - size) // 2``; padding before is ``(size - n) // 2``.
    """
    rows, cols = (int(s) for s in size)
    h, w = array.shape[-2:]
    out = np.empty(array.shape[:-2] + (rows, cols), dtype=array.dtype)
    out[...] = value
    sy, sx = max(0, (h - rows) // 2), max(0, (w - cols) // 2)
    dy, dx = max(0, (rows - h) // 2), max(0, (cols - w) // 2)
    ny, nx = min(h, rows), min(w, cols)
    out[..., dy : dy + ny, dx : dx + nx] = array[..., sy : sy + ny, sx : sx + nx]
    return out


def _target_shape(shape: Sequence[int], spacing: Sequence[float], prep: Preprocessing) -> tuple[int, ...]:
    return resampled_shape(shape[-3:], spacing, prep.spacing)


def preprocess_image(images: np.ndarray, spacing: Sequence[float], prep: Preprocessing, *, crop: bool = True) -> np.ndarray:
    """Resample (spline order 2), z-score per channel and (optionally) centre crop/pad.

    Parameters
    ----------
    images : ndarray, shape (C, S, H, W), display order
    spacing : 3 floats, mm along (S, H, W)
    prep : Preprocessing
    crop : bool
        Crop/pad slices to ``prep.crop`` (training); prediction keeps whole slices.

    Returns
    -------
    ndarray, shape (C, S', H', W') float32
    """
    if images.shape[0] != len(prep.channels):
        raise InputError(
            f"image has {images.shape[0]} channel(s) but the model expects {len(prep.channels)} "
            f"({', '.join(prep.channels)})"
        )
    out = zscore(resample(images, _target_shape(images.shape, spacing, prep), order=2))
    if crop:
        low = out.reshape(out.shape[0], -1).min(axis=1).reshape(-1, 1, 1, 1)
        out = center_crop_or_pad(out, prep.crop, value=low)
    return out


def preprocess_label(labels: np.ndarray, spacing: Sequence[float], prep: Preprocessing) -> np.ndarray:
    """Resample (linear) and centre crop/pad label maps (..., S, H, W); values stay in [0, 1].

    Leading axes (raters, classes) are kept: ``(R, S, H, W)`` or ``(R, K, S, H, W)``.
    """
    out = resample(labels, _target_shape(labels.shape, spacing, prep), order=1)
    np.clip(out, 0.0, 1.0, out=out)
    return center_crop_or_pad(out, prep.crop, value=0.0)



def median_spacing(subjects: Sequence[SubjectData]) -> tuple[float, float, float]:
    """Median voxel size (S, H, W) of the subjects (the default training spacing in-plane)."""
    arr = np.array([s.spacing for s in subjects], dtype=np.float64)
    return tuple(float(v) for v in np.median(arr, axis=0))  # type: ignore[return-value]


def resolve_spacing(
    spacing: Sequence[float | None] | None, subjects: Sequence[SubjectData]
) -> tuple[float | None, float | None, float | None]:
    """Target spacing (S, H, W) of a run: given values, or the median in-plane spacing of the
    training subjects with the slice axis kept native."""
    med = median_spacing(subjects)
    if spacing is None:
        return (None, med[1], med[2])
    spacing = tuple(spacing)
    if len(spacing) != 3:
        raise InputError(f"spacing must have 3 entries (S, H, W); got {list(spacing)}")
    for s in spacing:
        if s is not None and (not math.isfinite(float(s)) or float(s) <= 0):
            raise InputError(f"spacing values must be positive mm; got {list(spacing)}")
    return tuple(None if s is None else float(s) for s in spacing)  # type: ignore[return-value]
