"""Simple fusions (average, majority vote, union, intersection) and random-rater sampling.

Inputs as in :mod:`softseg.fusion.raters`: ``(R, *spatial)`` with values in [0, 1]; the hard
fusions need binary raters. Each function validates its input with
:func:`~softseg.fusion.raters.as_raters`; :func:`softseg.fusion.fuse` is the entry point that
the CLI, the widget, training and the protocol call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from softseg.errors import InputError
from softseg.fusion.raters import as_raters

__all__ = ["average", "intersection", "majority_vote", "sample_rater", "union", "vote_count"]


def average(raters: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Soft fusion: the mean of the raters.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, values in [0, 1]

    Returns
    -------
    ndarray (*spatial), float32, values in [0, 1]
        For binary raters, the fraction of raters that voted foreground.
    """
    arr = as_raters(raters, what="average")
    total = arr.sum(axis=0, dtype=np.float64 if arr.dtype == np.float64 else np.float32)
    total /= arr.shape[0]
    return total.astype(np.float32, copy=False)


def majority_vote(raters: np.ndarray | Sequence[np.ndarray], *, ties: int = 0) -> np.ndarray:
    """Hard fusion: foreground where more than half of the raters say foreground.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, binary (0/1)
    ties : {0, 1}
        What a tie (exactly half of an even number of raters) gives: 0 = background
        (default), 1 = foreground. SimpleITK's ``LabelVoting`` gives ties a separate
        "undecided" label instead.

    Returns
    -------
    ndarray (*spatial), uint8, values 0/1
    """
    if ties not in (0, 1):
        raise InputError(
            f"majority_vote: ties must be 0 (background) or 1 (foreground); got {ties!r}"
        )
    arr = as_raters(raters, binary=True, what="majority_vote")
    n = arr.shape[0]
    votes = vote_count(arr)
    out = votes > n // 2  # more than half
    if ties == 1 and n % 2 == 0:
        out |= votes == n // 2
    return out.view(np.uint8)


def vote_count(arr: np.ndarray) -> np.ndarray:
    """Foreground votes per voxel of binary raters (R, *spatial), in a narrow integer type."""
    dtype = np.uint8 if arr.shape[0] < 256 else np.int32
    if arr.dtype in (np.bool_, np.uint8, np.int8):
        rows = (r.view(np.uint8) for r in arr)
    else:
        rows = ((r != 0).view(np.uint8) for r in arr)
    votes = np.zeros(arr.shape[1:], dtype=dtype)
    for row in rows:
        np.add(votes, row, out=votes, casting="unsafe")
    return votes


def union(raters: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Hard fusion: foreground where any rater says foreground.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, binary (0/1)

    Returns
    -------
    ndarray (*spatial), uint8, values 0/1
    """
    arr = as_raters(raters, binary=True, what="union")
    return np.any(arr != 0, axis=0).astype(np.uint8)


def intersection(raters: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Hard fusion: foreground where every rater says foreground.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, binary (0/1)

    Returns
    -------
    ndarray (*spatial), uint8, values 0/1
    """
    arr = as_raters(raters, binary=True, what="intersection")
    return np.all(arr != 0, axis=0).astype(np.uint8)


def sample_rater(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    rng: np.random.Generator,
    return_index: bool = False,
) -> np.ndarray | tuple[np.ndarray, int]:
    """Draw one rater uniformly at random (random-rater training, label-fusion paper).

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays
        One subject's raters (a single rater is allowed: it is always drawn).
    rng : numpy.random.Generator
        Source of randomness (e.g. ``np.random.default_rng(seed)``); draw again at every
        epoch to show the network a different rater.
    return_index : bool
        Also return which rater was drawn.

    Returns
    -------
    ndarray (*spatial), or (ndarray, int) with ``return_index=True``
        The drawn rater itself (not a copy when ``raters`` is an array).
    """
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"sample_rater: rng must be a numpy.random.Generator (np.random.default_rng(seed)); "
            f"got {type(rng).__name__}"
        )
    if isinstance(raters, np.ndarray):
        if raters.ndim < 2:
            raise InputError(
                f"sample_rater: expected raters of shape (R, *spatial); got {raters.shape}"
            )
        n = raters.shape[0]
    else:
        raters = list(raters)
        n = len(raters)
    if n < 1:
        raise InputError("sample_rater: no raters given")
    index = int(rng.integers(n))
    chosen = np.asarray(raters[index])
    return (chosen, index) if return_index else chosen

