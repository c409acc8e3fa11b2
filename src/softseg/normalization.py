"""Options of the normalized ReLU's divisor, checked without torch (issue 15).

What each option computes, and why, is in :mod:`softseg.activations`; this module holds the names
and their checks so that candidates (listed by the napari widgets) and model cards validate them
without importing torch.
"""

from __future__ import annotations

import math

from softseg.errors import InputError

__all__ = ["NORMALIZATIONS", "check_negative_slope", "check_normalization", "inference_window"]

#: Normalisation option of the normalized ReLU -> one-line description (a plain dict, STYLE.md 6).
NORMALIZATIONS: dict[str, str] = {
    "sample_max": "divide by the maximum of each slice (the SoftSeg paper's formula per sample)",
    "batch_max": "divide by the maximum of the batch (ivadomed); prediction: of the volume",
    "volume_max": "train as sample_max; prediction divides by the maximum of the whole volume",
    "floor": "divide by max(maximum of the slice, tau)",
    "fixed": "min(relu / tau, 1): no window, a voxel's value depends on its own logit only",
    "running_max": "min(relu / c, 1), c = running mean of the training batch maximum, stored",
}

#: Options whose divisor needs ``tau`` (a positive number).
_NEEDS_TAU = ("floor", "fixed", "running_max")
#: Window of each option at prediction (see :func:`inference_window`).
_INFERENCE_WINDOW = {
    "sample_max": "sample",
    "floor": "sample",
    "batch_max": "volume",
    "volume_max": "volume",
    "fixed": "none",
    "running_max": "none",
}


def check_normalization(normalization: str, tau: float | None = None) -> str:
    """Validate a normalisation option and its ``tau``; returns the option.

    Raises
    ------
    InputError
        Unknown option (the message lists them), or ``tau`` missing, not finite or <= 0 for an
        option that divides by it.
    """
    if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
        raise InputError(
            f"unknown normalized ReLU normalisation {normalization!r}; choose one of: "
            f"{', '.join(NORMALIZATIONS)}"
        )
    if normalization in _NEEDS_TAU:
        if (tau is None or isinstance(tau, bool) or not isinstance(tau, (int, float))
                or not math.isfinite(tau) or tau <= 0):
            raise InputError(
                f"normalisation {normalization!r} divides by tau; give a finite tau > 0 "
                f"(got {tau!r})"
            )
    return normalization


def inference_window(normalization: str) -> str:
    """What prediction must look at to normalise: ``"sample"`` (each slice on its own),
    ``"volume"`` (the maximum over every slice of the volume first: pass it as ``divisor``) or
    ``"none"`` (each voxel on its own).

    Raises
    ------
    InputError
        Unknown option.
    """
    return _INFERENCE_WINDOW[check_normalization(normalization, tau=1.0)]


def check_negative_slope(negative_slope: float) -> float:
    """Validate the training-time slope of the ReLU below 0; returns it as a float.

    Raises
    ------
    InputError
        Not a finite number in [0, 1).
    """
    if (isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float))
            or not math.isfinite(negative_slope) or not 0 <= negative_slope < 1):
        raise InputError(
            f"negative_slope (the ReLU's training gradient below 0) must be a number in [0, 1); "
            f"got {negative_slope!r}"
        )
    return float(negative_slope)
