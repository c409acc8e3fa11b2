"""Rater stacks: validation of fusion inputs and the STAPLE region of interest.

Raters are given as one array of shape ``(R, *spatial)`` or as a sequence of ``R`` arrays of the
same shape, with values in [0, 1]: binary masks (0/1, bool or any numeric dtype) or soft maps
(painted confidence levels converted with :func:`softseg.confidence.as_rater_values`). Values
within :data:`softseg.checks.PROBABILITY_TOLERANCE` of [0, 1] (rounding of a scaled uint8 map,
a smoothed mask, a float32 softmax) are valid and clipped onto the interval; anything beyond is
refused with the true extremes and the rater's name (issue 13, item 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from softseg.checks import as_probability
from softseg.errors import InputError

__all__ = [
    "any_nonzero",
    "as_raters",
    "default_roi",
    "first_soft_value",
    "is_binary",
    "rater_name",
    "roi_box",
    "roi_mask",
    "stack_maps",
]


def rater_name(names: Sequence[str] | None, index: int) -> str:
    """How messages name rater *index* (0-based): ``names[index]`` (a file or layer name) when
    given, else ``"rater <index>"``."""
    if names is not None and index < len(names):
        return str(names[index])
    return f"rater {index}"


def stack_maps(
    maps: np.ndarray | Sequence[np.ndarray],
    *,
    min_raters: int = 2,
    what: str = "fusion",
    names: Sequence[str] | None = None,
    noun: str = "raters",
) -> np.ndarray:
    """One array ``(R, *spatial)`` from an array or a sequence of same-shape maps (no value checks).

    The shared first step of :func:`as_raters` and
    :func:`softseg.fusion.multilabel.as_label_maps`: count, shapes, emptiness.

    Parameters
    ----------
    maps : ndarray (R, *spatial) or sequence of R ndarrays (*spatial)
    min_raters : int
        Fewest maps accepted.
    what : str
        Name of the operation, first in every message.
    names : sequence of str, optional
        One name per map (file or layer) for messages; default "rater i".
    noun : str
        What the maps are, in messages ("raters", "label maps").

    Returns
    -------
    ndarray (R, *spatial)
        The input itself when it already is an array (no copy), else the stacked maps.

    Raises
    ------
    InputError
        Not an array or a sequence of arrays, fewer than ``min_raters``, shapes that differ, an
        empty array.
    """
    if isinstance(maps, np.ndarray):
        arr = maps
        if arr.ndim < 2:
            raise InputError(
                f"{what}: expected {noun} of shape (R, *spatial); got an array of shape {arr.shape}"
            )
    else:
        try:
            items = [np.asarray(r) for r in maps]
        except TypeError:
            raise InputError(
                f"{what}: expected an array (R, *spatial) or a list of {noun}; got "
                f"{type(maps).__name__}"
            ) from None
        if not items:
            raise InputError(f"{what}: no {noun} given; give at least {min_raters}")
        for i, item in enumerate(items[1:], start=1):
            if item.shape != items[0].shape:
                raise InputError(
                    f"{what}: {rater_name(names, i)} has shape {item.shape} but "
                    f"{rater_name(names, 0)} has shape {items[0].shape}; all {noun} must be on "
                    "the same voxel grid"
                )
        arr = np.stack(items) if len(items) > 1 else items[0][None]
    n = arr.shape[0]
    if n < min_raters:
        raise InputError(
            f"{what}: got {n} rater{'s' if n != 1 else ''}; a fusion needs at least {min_raters}"
        )
    if arr.size == 0:
        raise InputError(f"{what}: {noun} are empty arrays (shape {arr.shape})")
    return arr


def as_raters(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    min_raters: int = 2,
    binary: bool = False,
    what: str = "fusion",
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Validate raters and return them as one array of shape ``(R, *spatial)``.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays (*spatial)
        Binary (0/1, any numeric or bool dtype) or soft values in [0, 1].
    min_raters : int
        Fewest raters accepted.
    binary : bool
        Also require every value to be 0 or 1.
    what : str
        Name of the operation, used in error messages.
    names : sequence of str, optional
        One name per rater (file or layer name) used in error messages; default "rater i".

    Returns
    -------
    ndarray, shape (R, *spatial)
        The input array itself when it already was one and needed no clipping (no copy), else
        the stacked (and, for values within rounding of [0, 1], clipped) arrays.

    Raises
    ------
    InputError
        Fewer than ``min_raters`` raters, shapes that differ, a non-numeric dtype, NaN/Inf,
        values outside [0, 1] beyond the tolerance (message names the rater and prints its
        extremes at full precision), or (``binary=True``) non-binary values.
    """
    arr = stack_maps(raters, min_raters=min_raters, what=what, names=names)
    n = arr.shape[0]
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{what}: raters must be numeric or boolean; got dtype {arr.dtype}")
    lo = 0 if arr.dtype.kind == "u" else arr.min()
    hi = arr.max()
    if not (lo >= 0 and hi <= 1):  # also true for NaN: find the rater and say what is wrong
        hint = (
            "convert confidence levels to soft values (with their scale) or binarise label maps "
            "first"
        )
        rows = [
            as_probability(arr[j], name=f"{what}: {rater_name(names, j)}", hint=hint)
            for j in range(n)
        ]
        arr = np.stack(rows)
    if binary and not is_binary(arr):
        j = next(j for j in range(n) if not is_binary(arr[j]))
        raise InputError(
            f"{what}: needs binary raters (0/1) but {rater_name(names, j)} holds values such "
            f"as {first_soft_value(arr[j])!r}; binarise them (e.g. raters >= 0.5)"
        )
    return arr


def is_binary(arr: np.ndarray) -> bool:
    """True when every value is 0 or 1 (values are already known to lie in [0, 1]); integer and
    boolean arrays are binary by type (checked values in [0, 1])."""
    if arr.dtype == np.bool_ or arr.dtype.kind in "iu":
        return True
    return bool(np.all((arr == 0) | (arr == 1)))


def first_soft_value(arr: np.ndarray) -> float:
    """The first value of *arr* that is neither 0 nor 1 (0.0 when there is none): the example a
    "needs binary raters" message shows."""
    flat = arr.ravel()
    idx = np.flatnonzero((flat != 0) & (flat != 1))
    return float(flat[idx[0]]) if idx.size else 0.0


def roi_mask(roi: np.ndarray | None, spatial: tuple[int, ...]) -> np.ndarray | None:
    """Check a region of interest against the raters' spatial shape; None stays None.

    Raises
    ------
    InputError
        A shape that differs from ``spatial``, values other than 0/1, or an empty mask.
    """
    if roi is None:
        return None
    roi = np.asarray(roi)
    if roi.shape != spatial:
        raise InputError(f"roi has shape {roi.shape} but the raters' spatial shape is {spatial}")
    if roi.dtype != np.bool_:
        if roi.dtype.kind not in "iuf" or not np.all((roi == 0) | (roi == 1)):
            raise InputError("roi must be a boolean mask (or 0/1 values)")
        roi = roi.astype(bool)
    if not roi.any():
        raise InputError("roi is empty; give a mask with at least one voxel or roi=None")
    return roi


def default_roi(raters: np.ndarray | Sequence[np.ndarray], *, margin: int = 10) -> np.ndarray:
    """Region of interest for STAPLE: the bounding box of the raters' union, grown by ``margin``.

    A global STAPLE prior depends on how much background the array holds; estimating inside
    this box makes the result independent of the field of view around the labelled
    structure.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, values in [0, 1]
        A voxel belongs to the union when any rater gives it a value above 0.
    margin : int
        Voxels added on every side of the box (clipped at the array border).

    Returns
    -------
    ndarray (*spatial), bool
        True inside the box. When no rater labelled anything, the whole array.
    """
    if not isinstance(margin, (int, np.integer)) or isinstance(margin, bool) or margin < 0:
        raise InputError(
            f"default_roi: margin must be a whole number of voxels >= 0; got {margin!r}"
        )
    arr = as_raters(raters, min_raters=1, what="default_roi")
    spatial = arr.shape[1:]
    roi = np.zeros(spatial, dtype=bool)
    labelled = np.flatnonzero(any_nonzero(arr.reshape(arr.shape[0], -1), is_binary(arr)))
    if labelled.size == 0:
        roi[...] = True
        return roi
    coords = np.unravel_index(labelled, spatial)
    box = []
    for ax in range(len(spatial)):
        lo, hi = int(coords[ax].min()), int(coords[ax].max())
        box.append(slice(max(lo - margin, 0), min(hi + 1 + margin, spatial[ax])))
    roi[tuple(box)] = True
    return roi


def roi_box(roi: np.ndarray | None, spatial: tuple[int, ...] | None = None) -> tuple[slice, ...]:
    """Slices of the bounding box of a region (the whole array when ``roi`` is None).

    For a box-shaped region (:func:`default_roi`) ``array[roi_box(roi)]`` is exactly the
    region, as a view (no boolean-mask copy).
    """
    if roi is None:
        if spatial is None:
            raise InputError("roi_box: give the spatial shape when roi is None")
        return tuple(slice(0, s) for s in spatial)
    box = []
    for axis in range(roi.ndim):
        flags = np.any(roi, axis=tuple(a for a in range(roi.ndim) if a != axis))
        idx = np.flatnonzero(flags)
        box.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
    return tuple(box)


def any_nonzero(votes: np.ndarray, binary: bool) -> np.ndarray:
    """(N,) bool: some rater (row of ``votes``, shape (R, N)) gave the voxel a value above 0."""
    out = np.zeros(votes.shape[1], dtype=bool)
    for row in votes:
        if binary and row.dtype in (np.bool_, np.uint8, np.int8):
            out |= row.view(np.bool_)  # 0/1 bytes are valid booleans
        else:
            out |= row != 0
    return out
