"""Value checks shared by every path that takes probabilities: one tolerance, one message.

Why our own code: "values in [0, 1] up to floating-point rounding" is a policy of this product
(what a soft label or a prediction may hold), not a generic validation rule a library offers.

Probabilities that come from files and other programs are rarely exactly inside [0, 1]:

* a uint8 map stored with ``scl_slope = 1/255`` decodes 255 to ``1.00000006`` (float32);
* a Gaussian-smoothed 0/1 map holds ``1 + 2e-16`` and ``-1e-17`` (float64);
* a float32 softmax can overshoot 1 by an ulp (``1.19e-7``).

All of these are valid probabilities. :func:`as_probability` accepts values within
:data:`PROBABILITY_TOLERANCE` of [0, 1], clips them onto the interval (so later arithmetic sees
exact bounds) and refuses anything beyond with the true extreme values printed at full
precision (``repr``), never rounded to a misleading ``max 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softseg.errors import InputError

__all__ = ["PROBABILITY_TOLERANCE", "as_probability", "probability_range_error"]

#: Values in ``[-tol, 1 + tol]`` are valid probabilities (rounding of float32 decoding,
#: smoothing in float64, softmax overshoot are all below 1e-6; float32's ulp at 1 is 1.2e-7).
PROBABILITY_TOLERANCE = 1e-6


def probability_range_error(name: str, lo: float, hi: float, *, hint: str = "") -> InputError:
    """The one message for values outside [0, 1] beyond the tolerance (full-precision extremes)."""
    text = (
        f"{name}: values must lie in [0, 1] (tolerance {PROBABILITY_TOLERANCE:g}); "
        f"got min {float(lo)!r}, max {float(hi)!r}"
    )
    if hint:
        text += f"; {hint}"
    return InputError(text)


def as_probability(
    array: Any,
    *,
    name: str = "values",
    tol: float = PROBABILITY_TOLERANCE,
    hint: str = "",
) -> np.ndarray:
    """Check that an array holds probabilities and clip rounding overshoot onto [0, 1].

    Parameters
    ----------
    array : array_like, any shape, bool / integer / floating dtype
        Values that should lie in [0, 1].
    name : str
        What the array is (a file name, ``"prediction"``, ...), used in the error message.
    tol : float, >= 0
        Values in ``[-tol, 1 + tol]`` are accepted (default :data:`PROBABILITY_TOLERANCE`).
    hint : str
        Appended to the error message (how to fix it).

    Returns
    -------
    ndarray, same shape and dtype
        The input itself (no copy) when it already lies in [0, 1]; otherwise a clipped copy.
        Booleans and unsigned/signed integers in {0, 1} are returned unchanged.

    Raises
    ------
    InputError
        Non-numeric dtype, NaN/Inf values, or values outside ``[-tol, 1 + tol]``; the message
        prints the true minimum and maximum with ``repr`` precision.

    Examples
    --------
    >>> as_probability(np.float32([0, 255]) * np.float32(1 / 255)).max()
    1.0
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name}: expected numeric values in [0, 1]; got dtype {arr.dtype}")
    if arr.size == 0:
        return arr
    if arr.dtype.kind == "f":
        lo, hi = np.min(arr), np.max(arr)  # NaN propagates into both
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise InputError(f"{name}: contains {bad} NaN/Inf values; fix or mask them first")
    else:
        lo, hi = arr.min(), arr.max()
    if lo >= 0 and hi <= 1:
        return arr
    if lo < -tol or hi > 1 + tol or arr.dtype.kind != "f":
        raise probability_range_error(name, lo, hi, hint=hint)
    return np.clip(arr, 0, 1).astype(arr.dtype, copy=False)
