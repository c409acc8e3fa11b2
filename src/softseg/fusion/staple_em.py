"""Two-class STAPLE (Warfield et al. 2004): binary raters, and soft raters with ``soft=True``.

:func:`staple` is Warfield et al.'s (2004) expectation-maximisation over one sensitivity ``p_j``
and one specificity ``q_j`` per rater, with the conventions of ITK's ``STAPLEImageFilter``
(SimpleITK ``sitk.STAPLE``) so both give the same numbers (to ~1e-12 in practice, tested to
1e-6):

* the foreground weight ``W`` starts as the raters' average;
* the prior ``g`` is the mean of that initial ``W`` over the voxels used and stays fixed;
* each iteration is an M-step (``p``, ``q`` from ``W``) followed by an E-step (``W`` from
  ``p``, ``q``); the returned probability is ``W`` of the last E-step and the returned
  sensitivities/specificities are those it was computed from;
* it stops once no ``p_j`` or ``q_j`` moved by more than ``tol`` between two iterations (never
  after the first one), or after ``max_iter`` iterations.

``StapleResult.iterations`` counts EM iterations actually run. SimpleITK's
``GetElapsedIterations()`` reports one less when it stopped on convergence (its loop index at
the ``break``) and the same number when it stopped at ``MaximumIterations``.

Speed: voxels with the same vote pattern share every quantity of the EM, so the voxels are
grouped by pattern (``2**R`` binary patterns, counted with one ``bincount``), the EM runs on
the pattern counts (a handful of numbers per iteration instead of a pass over the volume) and
the final probability is broadcast back with a lookup table.

Region of interest: STAPLE's prior is global, so the result depends on how much background the
volume contains (padding a volume with empty voxels lowers the prior and shrinks the
consensus). ``roi`` restricts the estimation (prior, ``p``, ``q``) to a boolean mask, e.g.
:func:`softseg.fusion.default_roi` (the raters' union, boxed and dilated); voxels outside the roi get
probability 0. Without ``roi`` the whole array is used, as SimpleITK does.

Soft STAPLE (``soft=True``): a rater's value ``d`` in [0, 1] is read as the probability that it
voted "foreground". The expected complete-data log-likelihood then gives

* E-step: ``P(D | T=1) = prod_j p_j**d_j * (1 - p_j)**(1 - d_j)`` and
  ``P(D | T=0) = prod_j (1 - q_j)**d_j * q_j**(1 - d_j)``,
  ``W = g P(D|T=1) / (g P(D|T=1) + (1 - g) P(D|T=0))``;
* M-step: ``p_j = sum W d_j / sum W``, ``q_j = sum (1 - W)(1 - d_j) / sum (1 - W)``.

On binary inputs every term reduces exactly to the binary algorithm (``x**1 == x`` and
``x**0 == 1`` in IEEE arithmetic), and binary inputs given with ``soft=True`` take the binary
path, so the result is bit-identical. Soft maps painted with a confidence scale hold few
distinct values, so voxels are still grouped by their tuple of values.

Consensus: when all raters agree everywhere in the roi (all empty, all full, or identical maps)
the EM is undefined (0/0 in ITK, which returns NaN); :func:`staple` returns that consensus with
sensitivity = specificity = 1 and ``iterations = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from softseg.errors import InputError
from softseg.fusion.raters import first_soft_value, is_binary, any_nonzero, as_raters, roi_mask

__all__ = ["DEFAULT_MAX_ITER", "StapleResult", "staple"]

#: Default STAPLE iteration cap. SimpleITK's default is 2**32 - 1 (no practical cap); binary
#: STAPLE at tol=1e-7 converges in tens of iterations.
DEFAULT_MAX_ITER = 10_000


@dataclass(frozen=True, eq=False)
class StapleResult:
    """Output of :func:`staple`.

    Attributes
    ----------
    probability : ndarray (*spatial), float64, values in [0, 1]
        Posterior probability that each voxel is foreground (0 outside the roi).
    sensitivity : ndarray (R,), float64
        Estimated sensitivity ``p_j`` of each rater.
    specificity : ndarray (R,), float64
        Estimated specificity ``q_j`` of each rater.
    prior : float
        The fixed foreground prior (mean of the raters' average over the roi, or the given one).
    iterations : int
        EM iterations run (0 for a consensus).
    converged : bool
        Whether the ``tol`` test stopped the iterations (True for a consensus).
    """

    probability: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    prior: float
    iterations: int
    converged: bool

    def binary(self, threshold: float = 0.5) -> np.ndarray:
        """The consensus mask ``probability >= threshold`` as uint8 (0/1)."""
        return (self.probability >= threshold).astype(np.uint8)


def staple(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = 1e-7,
    prior: float | None = None,
    roi: np.ndarray | None = None,
    soft: bool = False,
    progress: Callable[[int, float], None] | None = None,
) -> StapleResult:
    """STAPLE consensus of binary (or, with ``soft=True``, soft) raters.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays
        Binary masks (0/1), or with ``soft=True`` values in [0, 1] (probability of a
        foreground vote). At least two raters.
    max_iter : int
        Most EM iterations (SimpleITK's ``MaximumIterations``).
    tol : float
        Stop when every sensitivity and specificity moved by at most ``tol`` since the
        previous iteration (SimpleITK uses 1e-7, hard-coded as a squared 1e-14).
    prior : float in (0, 1), optional
        Fixed foreground prior. Default: the mean of the raters' average over the roi.
    roi : ndarray (*spatial) of bool, optional
        Estimate only inside this mask; outside it the probability is 0. See
        :func:`default_roi` and the module notes on why the roi matters.
    soft : bool
        Accept soft raters (see the module notes for the likelihood used).
    progress : callable(iteration, max_change), optional
        Called after every iteration with the largest change of ``p``/``q`` (``inf`` on the
        first one); e.g. to report progress from a worker thread.

    Returns
    -------
    StapleResult

    Raises
    ------
    InputError
        Fewer than two raters, shapes that differ, NaN/Inf, values outside [0, 1], non-binary
        values with ``soft=False``, a bad roi or option.

    Examples
    --------
    >>> r = np.zeros((3, 4, 4), np.uint8); r[:, 1:3, 1:3] = 1; r[2, 0, 0] = 1
    >>> res = staple(r)
    >>> res.binary().sum(), res.sensitivity.round(3).tolist()
    (4, [1.0, 1.0, 1.0])
    """
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InputError(f"staple: max_iter must be an integer >= 1; got {max_iter!r}")
    if not np.isfinite(tol) or tol < 0:
        raise InputError(f"staple: tol must be a finite number >= 0; got {tol!r}")
    if prior is not None and not (0.0 < float(prior) < 1.0):
        raise InputError(f"staple: prior must lie strictly between 0 and 1; got {prior!r}")
    arr = as_raters(raters, what="staple")
    binary = is_binary(arr)
    if not binary and not soft:
        raise InputError(
            "staple: binary STAPLE needs 0/1 raters but got values such as "
            f"{first_soft_value(arr):g}; "
            "use soft=True (softseg fuse --soft) for confidence maps, or binarise them"
        )
    n_raters = arr.shape[0]
    spatial = arr.shape[1:]
    mask = roi_mask(roi, spatial)
    votes = arr.reshape(n_raters, -1) if mask is None else arr[:, mask]
    n_vox = votes.shape[1]

    # Voxels nobody labelled share the all-zero pattern; only the others are grouped (most
    # of a medical volume is background, so this is a small subset).
    labelled = any_nonzero(votes, binary)
    where = None if labelled.all() else np.flatnonzero(labelled)
    del labelled
    sub = votes if where is None else votes[:, where]
    if binary:
        codes, patterns, counts = _group_binary(sub)
    else:
        codes, patterns, counts = _group_soft(sub)
    if where is not None:  # append the all-zero pattern (last row)
        patterns = np.vstack([patterns, np.zeros((1, n_raters))])
        counts = np.append(counts, float(n_vox - where.size))

    if np.all(patterns == patterns[:, :1]):  # identical raters: that consensus, no EM
        weight = patterns[:, 0].copy()
        ones = np.ones(n_raters)
        g = float(np.dot(counts, weight) / counts.sum()) if prior is None else float(prior)
        prob = _broadcast(weight, codes, where, n_vox, mask, spatial)
        return StapleResult(prob, ones, ones.copy(), g, 0, True)

    weight, p, q, g, iterations, converged = _staple_em(
        patterns, counts, max_iter=max_iter, tol=tol, prior=prior, progress=progress
    )
    return StapleResult(
        probability=_broadcast(weight, codes, where, n_vox, mask, spatial),
        sensitivity=p,
        specificity=q,
        prior=g,
        iterations=iterations,
        converged=converged,
    )


def _broadcast(
    weight: np.ndarray,
    codes: np.ndarray,
    where: np.ndarray | None,
    n_vox: int,
    mask: np.ndarray | None,
    spatial: tuple[int, ...],
) -> np.ndarray:
    """Per-pattern weights back to voxels (all-zero pattern = last weight when ``where``)."""
    if where is None:
        flat = weight[codes]
    else:
        flat = np.full(n_vox, weight[-1])
        flat[where] = weight[codes]
    if mask is None:
        return flat.reshape(spatial)
    out = np.zeros(spatial, dtype=np.float64)
    out[mask] = flat
    return out


def _group_binary(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group voxels by vote pattern.

    Returns ``codes`` (N,) index of each voxel's pattern in ``patterns``, ``patterns`` (P, R)
    float64 0/1 and ``counts`` (P,) float64 number of voxels per pattern.
    """
    n_raters, n_vox = votes.shape
    if n_raters > 20:  # 2**R patterns too many to count directly: group like soft values
        return _group_soft(votes)
    dtype = np.uint8 if n_raters <= 8 else (np.uint16 if n_raters <= 16 else np.uint32)
    code = np.zeros(n_vox, dtype=dtype)
    shifted = np.empty(n_vox, dtype=dtype)
    for j in range(n_raters):
        row = votes[j]
        if row.dtype == np.bool_:
            bits = row.view(np.uint8)
        elif row.dtype == np.uint8:
            bits = row
        else:
            bits = (row != 0).view(np.uint8)
        np.left_shift(bits.astype(dtype, copy=False), j, out=shifted)
        np.bitwise_or(code, shifted, out=code)
    del shifted
    full_counts = np.bincount(code, minlength=1 << n_raters)
    present = np.flatnonzero(full_counts)
    counts = full_counts[present].astype(np.float64)
    if present.size == full_counts.size:
        codes = code
    else:
        lut = np.zeros(full_counts.size, dtype=np.int64 if present.size > 255 else np.uint8)
        lut[present] = np.arange(present.size)
        codes = lut[code]
    patterns = ((present[:, None].astype(np.int64) >> np.arange(n_raters)) & 1).astype(np.float64)
    return codes, patterns, counts


def _group_soft(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group voxels by their tuple of soft values (few distinct values in painted maps)."""
    n_raters, n_vox = votes.shape
    values, inverses = [], []
    for j in range(n_raters):
        v, inv = np.unique(votes[j], return_inverse=True)
        values.append(v.astype(np.float64))
        inverses.append(inv.reshape(-1))
    sizes = [v.size for v in values]
    total = 1
    for s in sizes:
        total *= s
    if total <= 1 << 62:
        code = np.zeros(n_vox, dtype=np.int64)
        stride = 1
        for inv, s in zip(inverses, sizes):
            code += inv.astype(np.int64) * stride
            stride *= s
        if total <= 1 << 22:
            full_counts = np.bincount(code, minlength=total)
            present = np.flatnonzero(full_counts)
            counts = full_counts[present].astype(np.float64)
            lut = np.zeros(total, dtype=np.int64)
            lut[present] = np.arange(present.size)
            codes = lut[code]
        else:
            present, codes, counts_int = np.unique(code, return_inverse=True, return_counts=True)
            counts = counts_int.astype(np.float64)
        digits = []
        rest = present.astype(np.int64)
        for s in sizes:
            digits.append(rest % s)
            rest = rest // s
    else:  # astronomically many value combinations: group on the index tuples directly
        stacked = np.stack(inverses, axis=1)
        uniq, codes, counts_int = np.unique(
            stacked, axis=0, return_inverse=True, return_counts=True
        )
        counts = counts_int.astype(np.float64)
        digits = [uniq[:, j] for j in range(n_raters)]
    patterns = np.stack([values[j][digits[j]] for j in range(n_raters)], axis=1)
    return codes.reshape(-1), patterns, counts


def _staple_em(
    patterns: np.ndarray,
    counts: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    prior: float | None,
    progress: Callable[[int, float], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int, bool]:
    """EM on grouped voxels. ``patterns`` (P, R) in [0, 1], ``counts`` (P,) voxels per pattern.

    Returns the per-pattern weight W (P,), p (R,), q (R,), the prior, iterations, converged.
    """
    n_raters = patterns.shape[1]
    neg = 1.0 - patterns
    weight = patterns.sum(axis=1) / n_raters  # ITK: the raters' average
    g = float(np.dot(counts, weight) / counts.sum()) if prior is None else float(prior)
    last_p = last_q = None
    p = np.ones(n_raters)
    q = np.ones(n_raters)
    tol_sq = tol * tol
    iterations = 0
    converged = False
    for it in range(max_iter):
        cw = counts * weight
        cb = counts * (1.0 - weight)
        p_den = cw.sum()
        q_den = cb.sum()
        # a zero denominator only happens in degenerate cases (all weight on one side); keep
        # the rater perfect there instead of producing NaN
        # einsum, not BLAS: no thread pool spinning for the (rare) long pattern lists
        p = np.einsum("k,kj->j", cw, patterns) / p_den if p_den > 0 else np.ones(n_raters)
        q = np.einsum("k,kj->j", cb, neg) / q_den if q_den > 0 else np.ones(n_raters)
        alpha = np.ones(patterns.shape[0])
        beta = np.ones(patterns.shape[0])
        for j in range(n_raters):  # same multiplication order as ITK
            d = patterns[:, j]
            alpha = alpha * (np.power(p[j], d) * np.power(1.0 - p[j], 1.0 - d))
            beta = beta * (np.power(1.0 - q[j], d) * np.power(q[j], 1.0 - d))
        num = g * alpha
        den = num + (1.0 - g) * beta
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(den > 0, num / np.where(den > 0, den, 1.0), g)
        iterations = it + 1
        if last_p is None:
            change = float("inf")
        else:
            dp = (p - last_p) ** 2
            dq = (q - last_q) ** 2
            change = float(np.sqrt(max(dp.max(), dq.max())))
            if np.all(dp <= tol_sq) and np.all(dq <= tol_sq):
                converged = True
        last_p, last_q = p, q
        if progress is not None:
            progress(iterations, change)
        if converged:
            break
    return weight, p, q, g, iterations, converged
