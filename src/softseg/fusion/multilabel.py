"""Multi-class rater fusion: label voting, per-class average and disagreement, multi-label STAPLE.

Raters are integer label maps given as one array of shape ``(R, *spatial)`` or a sequence of
``R`` arrays of the same shape: 0 = background, 1..K = classes (DESIGN decision 11). Booleans
(K = 1) and floating arrays that hold whole numbers (nibabel's ``get_fdata()``) are accepted.
Every fusion needs at least two raters.

Multi-label STAPLE
------------------
:func:`multilabel_staple` is the multi-class STAPLE of Warfield, Zou and Wells (2004) in the
form of Rohlfing, Russakoff and Maurer (2004): per rater ``j`` a confusion matrix
``theta_j[s, t] = P(rater j says s | true label t)``, class priors ``f(t)``, and an EM over the
hidden true label. It follows ITK's ``MultiLabelSTAPLEImageFilter`` (SimpleITK
``sitk.MultiLabelSTAPLE``, which computes in double precision: its confusion matrices are not
float32 values) so both give the same labels and
confusion matrices (to ~1e-15 in practice, tested to 1e-6). The conventions, read from ITK's
source (``itkMultiLabelSTAPLEImageFilter.hxx``, ITK 5.4):

* the labels are ``0 .. T-1`` with ``T`` = the largest label any rater used + 1 (classes up to
  ``n_classes`` above it do not exist for ITK; here they get prior 0, an identity confusion row
  and probability 0, and never win);
* the prior ``f(t)`` is the fraction of all rater labels (over raters and voxels) equal to ``t``
  and stays fixed (or the ``prior`` given, normalised);
* the initial confusion matrices come from a label vote (:func:`label_vote`, ties = undecided
  label ``T``): ``theta0_j[s, v]`` counts the voxels where rater ``j`` says ``s`` and the vote
  is ``v``, each row ``s`` normalised to sum 1. ITK stores each matrix as a row-major
  ``(T + 1) x T`` array and writes a tied vote ``v = T`` one column past the row's end, i.e. into
  ``theta0_j[s + 1, 0]``; we reproduce this (it only shapes the starting point, but EM climbs to
  a local optimum that depends on the start: with two raters, where every disagreement is a tie,
  leaving it out changed 75 of 210 labels in a random three-class case we tried);
* each iteration is an E-step ``W(t) ~ f(t) prod_j theta_j[d_j, t]`` (normalised over ``t``;
  left alone when every class has weight 0) followed by an M-step
  ``theta_j[s, t] = sum_{d_j = s} W(t) / sum W(t)`` (a column with no weight stays 0 in ITK;
  we report it as an identity row, see below);
* it stops once no entry of any confusion matrix moved by ``tol`` or more (ITK's
  ``TerminationUpdateThreshold``, default 1e-5; strict ``<``), or after ``max_iter`` iterations
  (ITK's ``MaximumNumberOfIterations``, unlimited by default);
* the label is the class of largest ``f(t) prod_j theta_j[d_j, t]`` computed once more from the
  final matrices, in ITK's order of multiplication; when that maximum is not unique (or is 0)
  the voxel gets the *undecided* label (ITK: largest label + 1).

Orientation: ITK's ``GetConfusionMatrix(j)`` returns ``theta_j`` as ``(T + 1) x T`` (rows =
rater's label, columns = true label, columns sum to 1, a last row that is 0 after the first
iteration). :attr:`MultiLabelStapleResult.confusion` is its transpose without that row:
``(R, K + 1, K + 1)``, **rows = true class, columns = rater's label, rows sum to 1** -- the
orientation of :func:`confusion_matrices` and of ``softseg fuse --json``. A true class that ends
with no posterior weight (ITK: a zero column) is reported as the identity row, like binary
STAPLE keeps a rater perfect on an empty class.

Class probabilities (ITK does not expose them): ``probabilities[t]`` is the normalised
``W(t)`` of an E-step with the final matrices (the posterior of the returned labels). Where
every class has weight 0 (the raters' combination is impossible under the estimated matrices;
ITK: undecided) they fall back to the raters' class fractions (:func:`class_average`).

Speed: voxels with the same label tuple share every quantity of the EM, so voxels are grouped
by tuple (``T**R`` codes counted with one ``bincount``), the EM runs on the tuple counts (a few
hundred numbers per iteration instead of a pass over the volume) and labels and probabilities
are broadcast back with lookup tables -- as binary :func:`softseg.fusion.staple` does with vote
patterns.

Region of interest: the prior is global, so the result depends on how much background the array
holds. ``roi`` restricts everything (prior, vote, EM) to a boolean mask -- the same as running ITK
on the roi voxels alone; outside it the label is 0 and the background probability 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from softseg.checks import as_probability
from softseg.errors import InputError
from softseg.fusion.raters import rater_name, roi_mask, stack_maps

__all__ = [
    "MultiLabelStapleResult",
    "as_label_maps",
    "class_average",
    "class_disagreement",
    "class_disagreements",
    "class_votes",
    "confusion_matrices",
    "label_vote",
    "multilabel_staple",
]

#: Default iteration cap. ITK's is unlimited; at tol = 1e-5 the EM stops after tens to a few
#: hundred iterations.
DEFAULT_MAX_ITER = 10_000

# Label tuples: up to _DENSE_TABLE possible codes the per-tuple tables are indexed by the code
# itself (no renumbering pass over the voxels); up to _DENSE_CODES they are counted with one
# bincount and renumbered; beyond, grouped with np.unique.
_DENSE_TABLE = 1 << 12
_DENSE_CODES = 1 << 22
# Most confusion-matrix entries (all raters) the EM holds at once (8 bytes each: 2 GB); ITK
# allocates the same matrices.
_MAX_MATRIX_ENTRIES = 1 << 28


# --------------------------------------------------------------------------------------- input
def as_label_maps(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    n_classes: int | None = None,
    min_raters: int = 2,
    what: str = "fusion",
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Validate integer label maps and return them as one array with the number of classes.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays (*spatial)
        Integer labels 0 (background) .. K. Booleans (K = 1) and floating arrays holding whole
        numbers are accepted.
    n_classes : int >= 1, optional
        K, the number of foreground classes. Default: the largest label found (at least 1).
    min_raters : int
        Fewest raters accepted.
    what : str
        Name of the operation, used in error messages.
    names : sequence of str, optional
        One name per rater (file or layer name) used in error messages; default "rater i".

    Returns
    -------
    labels : ndarray (R, *spatial), unsigned integer (uint8 when K < 256)
        The input itself when it already was an unsigned array (no copy).
    n_classes : int
        K.

    Raises
    ------
    InputError
        Fewer than ``min_raters`` raters, shapes that differ, an empty array, a non-numeric
        dtype, NaN/Inf or fractional values, negative labels, a label above ``n_classes``, or a
        bad ``n_classes``.
    """
    if n_classes is not None and (
        isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1
    ):
        raise InputError(f"{what}: n_classes must be a whole number >= 1; got {n_classes!r}")
    arr = stack_maps(raters, min_raters=min_raters, what=what, names=names, noun="label maps")
    n = arr.shape[0]
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    elif arr.dtype.kind not in "iuf":
        raise InputError(f"{what}: label maps must hold integers; got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise InputError(f"{what}: label maps contain {bad} NaN/Inf values; fix them first")
        frac = arr != np.round(arr)
        if frac.any():
            j, *_ = np.unravel_index(int(np.argmax(frac)), arr.shape)
            value = float(arr.reshape(-1)[int(np.argmax(frac))])
            raise InputError(
                f"{what}: {rater_name(names, j)} holds the non-integer label {value:g}; label "
                "maps hold whole numbers 0..K (for soft per-class maps use the per-class fusions)"
            )
    lo = 0 if arr.dtype.kind == "u" else arr.min()
    if lo < 0:
        j = int(np.argmax((arr < 0).reshape(n, -1).any(axis=1)))
        raise InputError(
            f"{what}: {rater_name(names, j)} holds the negative label {_num(lo)}; labels are 0 "
            "(background) ..K"
        )
    hi = int(arr.max())
    if n_classes is None:
        n_classes = max(hi, 1)
    elif hi > n_classes:
        j = int(np.argmax((arr.reshape(n, -1) > n_classes).any(axis=1)))
        raise InputError(
            f"{what}: {rater_name(names, j)} holds label {hi} but n_classes is {n_classes} "
            f"(labels 0..{n_classes}); pass n_classes={hi} or fix the label map"
        )
    dtype = np.min_scalar_type(int(n_classes))
    if arr.dtype != dtype and not (arr.dtype.kind == "u" and arr.dtype.itemsize <= 2):
        arr = arr.astype(dtype)
    return arr, int(n_classes)


def _num(value: object) -> str:
    return f"{float(value):g}" if isinstance(value, (float, np.floating)) else str(int(value))


def _undecided_label(undecided: int | None, n_classes: int, what: str) -> int:
    if undecided is None:
        return n_classes + 1
    if (
        isinstance(undecided, bool)
        or not isinstance(undecided, (int, np.integer))
        or not 0 <= undecided < 2**32
    ):
        raise InputError(
            f"{what}: undecided must be a label >= 0 (or None for K + 1); got {undecided!r}"
        )
    return int(undecided)


def _label_dtype(n_classes: int, undecided: int) -> np.dtype:
    return np.promote_types(np.min_scalar_type(max(n_classes + 1, undecided)), np.uint8)


# ------------------------------------------------------------------------------- label tuples
@dataclass(frozen=True, eq=False)
class _Tuples:
    """Voxels grouped by their tuple of rater labels."""

    codes: np.ndarray  # (N,) index of each voxel's tuple in `patterns`
    patterns: np.ndarray  # (P, R) int64 rater labels of each tuple
    counts: np.ndarray  # (P,) float64 voxels per tuple (0 for tuples absent from a dense table)


def _group_labels(labels: np.ndarray, n_labels: int) -> _Tuples:
    """Group voxels (columns of ``labels`` (R, N), values < ``n_labels``) by label tuple."""
    n_raters, n_vox = labels.shape
    base = max(int(n_labels), 1)
    total = base**n_raters
    if total > 1 << 62:  # too many possible tuples for an integer code: sort the rows
        uniq, codes, counts = np.unique(
            labels.T, axis=0, return_inverse=True, return_counts=True
        )
        return _Tuples(codes.reshape(-1), uniq.astype(np.int64), counts.astype(np.float64))
    # code = sum_j label_j * base**j, in the narrowest unsigned type that holds it
    dtype = np.min_scalar_type(total - 1)
    code = labels[0].astype(dtype)
    digit = np.empty(n_vox, dtype=dtype)
    for j in range(1, n_raters):
        np.multiply(labels[j], dtype.type(base**j), out=digit, casting="unsafe")
        np.add(code, digit, out=code)
    del digit
    if total <= _DENSE_TABLE:  # tables indexed by the code itself (absent tuples count 0)
        counts = np.bincount(code, minlength=total).astype(np.float64)
        present = np.arange(total)
        codes = code
    elif total <= _DENSE_CODES:
        full = np.bincount(code, minlength=total)
        present = np.flatnonzero(full)
        counts = full[present].astype(np.float64)
        lut = np.zeros(total, dtype=np.min_scalar_type(max(present.size - 1, 0)))
        lut[present] = np.arange(present.size)
        codes = lut[code]
    else:
        present, codes, counts_int = np.unique(code, return_inverse=True, return_counts=True)
        counts = counts_int.astype(np.float64)
        codes = codes.reshape(-1)
    rest = present.astype(np.int64)
    patterns = np.empty((present.size, n_raters), dtype=np.int64)
    for j in range(n_raters):
        patterns[:, j] = rest % base
        rest //= base
    return _Tuples(codes, patterns, counts)


def _vote(patterns: np.ndarray, undecided: int) -> np.ndarray:
    """ITK LabelVoting per tuple: the unique most frequent label, else ``undecided``.

    Counts, for every rater, how many raters gave the same label (no table over all labels, so
    sparse label values such as 2035 cost nothing), in chunks of tuples.
    """
    n_pat, n_raters = patterns.shape
    out = np.empty(n_pat, dtype=np.int64)
    step = max(1, (1 << 22) // (n_raters * n_raters))
    for lo in range(0, n_pat, step):
        block = patterns[lo : lo + step]
        agree = (block[:, :, None] == block[:, None, :]).sum(axis=2)  # (P, R)
        top = agree == agree.max(axis=1, keepdims=True)
        high = np.where(top, block, -1).max(axis=1)
        low = np.where(top, block, np.iinfo(np.int64).max).min(axis=1)
        out[lo : lo + step] = np.where(high == low, high, undecided)
    return out


def _broadcast(table: np.ndarray, codes: np.ndarray, mask: np.ndarray | None, fill, spatial):
    """Per-tuple values (P,) back to voxels (``fill`` outside ``mask``)."""
    if mask is None:
        return np.take(table, codes).reshape(spatial)
    out = np.full(spatial, fill, dtype=table.dtype)
    out[mask] = np.take(table, codes)
    return out


def _voxels(labels: np.ndarray, roi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(R, N) labels of the voxels used (all, or those in the validated roi) and the mask."""
    if roi is None:
        return labels.reshape(labels.shape[0], -1), None
    mask = roi_mask(roi, labels.shape[1:])
    return labels[:, mask], mask


# ----------------------------------------------------------------------------- simple fusions
def label_vote(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    n_classes: int | None = None,
    undecided: int | None = None,
) -> np.ndarray:
    """Majority vote over labels: at each voxel the label most raters gave.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, integer labels 0..K
    n_classes : int, optional
        K (default: the largest label found).
    undecided : int, optional
        Label given where the largest number of votes is shared by several labels. Default
        ``K + 1``, ITK's "undecided" label (its largest label + 1). ``undecided=0`` gives
        ties to background, so the map only holds 0..K.

    Returns
    -------
    ndarray (*spatial), uint8 (or the narrowest unsigned type that holds K + 1 and ``undecided``)

    Raises
    ------
    InputError
        See :func:`as_label_maps`; a bad ``undecided``.

    Notes
    -----
    Equal to SimpleITK's ``LabelVotingImageFilter`` at every voxel (ties included) when
    ``undecided`` is ITK's label, i.e. when the highest class K occurs in some rater or
    ``undecided`` is set to the same value in both.

    Examples
    --------
    >>> label_vote(np.array([[0, 1, 2], [1, 1, 0], [1, 2, 0]])).tolist()
    [1, 1, 0]
    """
    labels, k = as_label_maps(raters, n_classes=n_classes, what="label_vote")
    tie = _undecided_label(undecided, k, "label_vote")
    tuples = _group_labels(labels.reshape(labels.shape[0], -1), k + 1)
    table = _vote(tuples.patterns, tie).astype(_label_dtype(k, tie))
    return _broadcast(table, tuples.codes, None, 0, labels.shape[1:])


def class_votes(
    raters: np.ndarray | Sequence[np.ndarray], *, n_classes: int | None = None
) -> np.ndarray:
    """How many raters gave each class, per voxel.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, integer labels 0..K
    n_classes : int, optional
        K (default: the largest label found).

    Returns
    -------
    ndarray (K + 1, *spatial), uint8 (int32 for 256 raters or more), values 0..R
        Index 0 = background; sums to R at every voxel. :func:`class_average` is this / R.

    Raises
    ------
    InputError
        See :func:`as_label_maps`.
    """
    labels, k = as_label_maps(raters, n_classes=n_classes, what="class_votes")
    dtype = np.uint8 if labels.shape[0] < 256 else np.int32
    out = np.zeros((k + 1, *labels.shape[1:]), dtype=dtype)
    hit = np.empty(labels.shape[1:], dtype=bool)
    for c in range(k + 1):
        for row in labels:
            np.equal(row, c, out=hit)
            np.add(out[c], hit, out=out[c], casting="unsafe")
    return out


def _fractions(votes: np.ndarray, n: int) -> np.ndarray:
    """Class fractions ``votes / R`` as float32 (the values :func:`class_average` returns)."""
    return np.divide(votes, np.float32(n), dtype=np.float32)


def class_average(
    raters: np.ndarray | Sequence[np.ndarray], *, n_classes: int | None = None
) -> np.ndarray:
    """Soft multi-class fusion: the fraction of raters that gave each class.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, integer labels 0..K
    n_classes : int, optional
        K (default: the largest label found).

    Returns
    -------
    ndarray (K + 1, *spatial), float32, values in {0, 1/R, ..., 1}
        Index 0 = background; :func:`class_votes` / R. Sums to 1 at every voxel (to float32
        rounding). For K = 1, ``[1]`` is :func:`softseg.fusion.average` of the raters.

    Raises
    ------
    InputError
        See :func:`as_label_maps`.
    """
    labels, k = as_label_maps(raters, n_classes=n_classes, what="class_average")
    return _fractions(class_votes(labels, n_classes=k), labels.shape[0])


def class_disagreement(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    n_classes: int | None = None,
    per_class: bool = False,
) -> np.ndarray:
    """Per-voxel disagreement of label maps: entropy (nats) of the raters' class fractions.

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, integer labels 0..K
    n_classes : int, optional
        K (default: the largest label found).
    per_class : bool
        False: one map, the entropy ``-sum_c m_c ln m_c`` of :func:`class_average` ``m``;
        True: one map per class, the binary entropy ``-(m_c ln m_c + (1 - m_c) ln(1 - m_c))``
        ("do the raters agree on class c here?").

    Returns
    -------
    ndarray, float32
        ``per_class=False``: (*spatial), values in [0, ln min(R, K + 1)]; 0 where all raters
        agree. For K = 1 it equals :func:`softseg.fusion.disagreement`.
        ``per_class=True``: (K + 1, *spatial), values in [0, ln 2]. ``0 ln 0 = 0``.
        Bit for bit :func:`softseg.metrics.entropy` of :func:`class_average` (``class_axis=0``
        for the one map).

    Raises
    ------
    InputError
        See :func:`as_label_maps`.

    Notes
    -----
    A class fraction takes only the R + 1 values ``v / R``, so the entropy terms are looked up
    by the vote counts (:func:`class_votes`) instead of a logarithm per voxel and class (the
    binary :func:`softseg.fusion.disagreement` does the same); :func:`class_disagreements` gives
    both maps from one count.
    """
    total, classes = class_disagreements(raters, n_classes=n_classes, total=not per_class,
                                         per_class=per_class)
    return classes if per_class else total


def class_disagreements(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    n_classes: int | None = None,
    total: bool = True,
    per_class: bool = True,
    votes: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both maps of :func:`class_disagreement` from one vote count (what ``fuse`` shows).

    Parameters
    ----------
    raters, n_classes
        As :func:`class_disagreement`.
    total, per_class : bool
        Which of the two maps to compute (the other comes back as None).
    votes : ndarray (K + 1, *spatial), optional
        :func:`class_votes` of the same raters when the caller already has it.

    Returns
    -------
    total : ndarray (*spatial) float32, or None
        ``class_disagreement(raters)``.
    per_class : ndarray (K + 1, *spatial) float32, or None
        ``class_disagreement(raters, per_class=True)``.
    """
    from softseg.metrics.uncertainty import binary_entropy, xlogx

    labels, k = as_label_maps(raters, n_classes=n_classes, what="class_disagreement")
    n = labels.shape[0]
    if votes is None:
        votes = class_votes(labels, n_classes=k)
    elif votes.shape != (k + 1, *labels.shape[1:]):
        raise InputError(
            f"class_disagreement: votes must have shape {(k + 1, *labels.shape[1:])}; got {votes.shape}"
        )
    # the R + 1 possible fractions, exactly as class_average computes them (float32)
    fractions = _fractions(np.arange(n + 1), n)
    out_total = out_classes = None
    if total:
        # -sum_c m_c ln m_c, summed over c in class order in float32: the same operations as
        # metrics.entropy(class_average(...), class_axis=0) (numpy reduces axis 0 in order)
        terms = xlogx(fractions)
        acc = terms[votes[0]]
        for c in range(1, k + 1):
            acc += terms[votes[c]]
        out_total = np.subtract(np.float32(0.0), acc, dtype=np.float32)
    if per_class:
        out_classes = binary_entropy(fractions)[votes]
    return out_total, out_classes


def confusion_matrices(
    raters: np.ndarray | Sequence[np.ndarray],
    reference: np.ndarray,
    *,
    n_classes: int | None = None,
    roi: np.ndarray | None = None,
) -> np.ndarray:
    """Each rater's confusion matrix against a reference (e.g. a fused label map).

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays, integer labels 0..K
    reference : ndarray (*spatial) of integer labels, or (K + 1, *spatial) class probabilities
        The true classes: a label map such as :func:`label_vote` or
        :attr:`MultiLabelStapleResult.labels` (voxels whose label lies outside 0..K, e.g. an
        undecided label K + 1, are ignored), or soft class maps in [0, 1] such as
        :func:`class_average` (soft counts: each voxel counts ``P_t`` towards true class ``t``).
    n_classes : int, optional
        K (default: the largest rater label, at least 1; with a soft reference, its number of
        maps - 1).
    roi : ndarray (*spatial) of bool, optional
        Count only these voxels.

    Returns
    -------
    ndarray (R, K + 1, K + 1), float64
        ``[j, t, s]`` = share of the voxels of true class ``t`` that rater ``j`` labelled ``s``
        (``sum_v P_t(v) [L_j(v) = s] / sum_v P_t(v)``, with ``P_t`` one-hot for a label map):
        **rows = true class, columns = rater's label**, each row sums to 1; the diagonal is
        each rater's per-class sensitivity (recall). For K = 1 and a soft reference ``(1 - W,
        W)``, ``[j, 1, 1]`` and ``[j, 0, 0]`` are the soft sensitivity ``sum W d / sum W`` and
        specificity ``sum (1 - W)(1 - d) / sum (1 - W)``. A class absent from the reference
        gets the identity row (nothing to count; the rater is taken as perfect there, as binary
        STAPLE does for an empty class).

    Raises
    ------
    InputError
        See :func:`as_label_maps`; a reference of another shape, a label reference that is not
        integer or negative, a soft reference outside [0, 1]; a bad roi.
    """
    ref = np.asarray(reference)
    labels, k = as_label_maps(raters, n_classes=n_classes, what="confusion_matrices")
    spatial = labels.shape[1:]
    if n_classes is None and ref.ndim == labels.ndim and ref.shape[0] - 1 > k:
        k = ref.shape[0] - 1  # a soft reference says how many classes there are
    size = k + 1
    counts = np.empty((labels.shape[0], size, size), dtype=np.float64)
    if ref.shape == (size, *spatial):
        prob = as_probability(ref, name="confusion_matrices: reference")
        votes, mask = _voxels(labels, roi)
        for t in range(size):
            weight = (prob[t][mask] if mask is not None else prob[t].reshape(-1)).astype(
                np.float64
            )
            for j, row in enumerate(votes):
                counts[j, t] = np.bincount(row, weights=weight, minlength=size)
    elif ref.shape == spatial:
        ref_maps, _ = as_label_maps(ref[None], min_raters=1, what="confusion_matrices: reference")
        votes, mask = _voxels(labels, roi)
        truth = ref_maps[0][mask] if mask is not None else ref_maps[0].reshape(-1)
        keep = truth <= k
        if not keep.all():
            truth, votes = truth[keep], votes[:, keep]
        base = truth.astype(np.int64) * size
        for j, row in enumerate(votes):
            counts[j] = np.bincount(base + row, minlength=size * size).reshape(size, size)
    else:
        raise InputError(
            f"confusion_matrices: reference has shape {ref.shape}; expected a label map of the "
            f"raters' spatial shape {spatial} or {size} class maps of shape {(size, *spatial)}"
        )
    totals = counts.sum(axis=2, keepdims=True)
    eye = np.broadcast_to(np.eye(size), counts.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), eye)


# ------------------------------------------------------------------------- multi-label STAPLE
@dataclass(frozen=True, eq=False)
class MultiLabelStapleResult:
    """Output of :func:`multilabel_staple`.

    Attributes
    ----------
    labels : ndarray (*spatial), uint8 (or the narrowest unsigned type holding K + 1, undecided)
        The most probable class, ``undecided`` where the maximum is shared; 0 outside the roi.
    probabilities : ndarray (K + 1, *spatial), float32, or None
        Posterior probability of each class (index 0 = background), summing to 1 at every
        voxel; ``(1, 0, ..., 0)`` outside the roi. None with ``probabilities=False``.
    confusion : ndarray (R, K + 1, K + 1), float64
        ``confusion[j, t, s] = P(rater j says s | true class t)``: rows = true class, columns
        = rater's label, rows sum to 1 (ITK's ``GetConfusionMatrix(j)`` transposed without its
        last row). The diagonal is each rater's per-class sensitivity. Classes with no
        posterior weight get the identity row.
    prior : ndarray (K + 1,), float64
        The fixed class priors (sum 1).
    iterations : int
        EM iterations run (E-step + M-step).
    converged : bool
        Whether the ``tol`` test stopped the iterations.
    undecided : int
        The label given to ties.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    confusion: np.ndarray
    prior: np.ndarray
    iterations: int
    converged: bool
    undecided: int


def multilabel_staple(
    raters: np.ndarray | Sequence[np.ndarray],
    *,
    n_classes: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = 1e-5,
    prior: np.ndarray | Sequence[float] | None = None,
    roi: np.ndarray | None = None,
    undecided: int | None = None,
    probabilities: bool = True,
    progress: Callable[[int, float], None] | None = None,
) -> MultiLabelStapleResult:
    """Multi-label STAPLE consensus of integer label maps (equal to SimpleITK's filter).

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays
        Integer label maps, 0 = background, 1..K. At least two raters.
    n_classes : int, optional
        K (default: the largest label found, at least 1). Classes above the largest label
        used get prior 0 and never win.
    max_iter : int
        Most EM iterations (ITK's ``MaximumNumberOfIterations``).
    tol : float
        Stop once no confusion-matrix entry changed by ``tol`` or more in an iteration (ITK's
        ``TerminationUpdateThreshold``, default 1e-5).
    prior : array_like (K + 1,), optional
        Fixed class priors (non-negative, normalised here; ITK's ``SetPriorProbabilities``, whose
        results do not depend on the normalisation). Default: each label's share of all rater
        labels in the roi (ITK's estimate).
    roi : ndarray (*spatial) of bool, optional
        Estimate and label only inside this mask (see the module notes); outside, label 0.
    undecided : int, optional
        Label of voxels where the most probable class is not unique. Default ``K + 1`` (ITK's
        largest label + 1). ``undecided=0`` gives ties to background.
    probabilities : bool
        Also return the per-class posterior maps (K + 1 float32 maps of the volume's size).
    progress : callable(iteration, max_change), optional
        Called after every iteration with the largest change of a confusion-matrix entry.

    Returns
    -------
    MultiLabelStapleResult

    Raises
    ------
    InputError
        See :func:`as_label_maps`; a bad option, roi or prior.

    References
    ----------
    Warfield, Zou, Wells (2004), IEEE TMI 23(7):903-921; Rohlfing, Russakoff, Maurer (2004),
    IEEE TMI 23(8):983-994; ITK ``MultiLabelSTAPLEImageFilter``.

    Examples
    --------
    >>> r = np.zeros((3, 4, 4), np.uint8); r[:, 1:3, 1:3] = 2; r[:, 0, :2] = 1; r[2, 3, 3] = 1
    >>> res = multilabel_staple(r)
    >>> int(res.labels[3, 3]), res.probabilities.shape, res.confusion.shape
    (0, (3, 4, 4), (3, 3, 3))
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InputError(f"multilabel_staple: max_iter must be an integer >= 1; got {max_iter!r}")
    number = isinstance(tol, (int, float, np.floating, np.integer)) and not isinstance(tol, bool)
    if not number or not np.isfinite(tol) or tol < 0:
        raise InputError(f"multilabel_staple: tol must be a finite number >= 0; got {tol!r}")
    labels, k = as_label_maps(raters, n_classes=n_classes, what="multilabel_staple")
    tie = _undecided_label(undecided, k, "multilabel_staple")
    n_raters, spatial = labels.shape[0], labels.shape[1:]
    fixed_prior = _prior(prior, k)
    votes, mask = _voxels(labels, roi)
    tuples = _group_labels(votes, k + 1)
    present = np.flatnonzero(tuples.counts)
    patterns = tuples.patterns[present]
    n_used = int(patterns.max()) + 1  # ITK's label count T
    if n_raters * (n_used + 1) * n_used > _MAX_MATRIX_ENTRIES:
        raise InputError(
            f"multilabel_staple: labels up to {n_used - 1} need {n_raters} confusion matrices "
            f"of {n_used + 1} x {n_used} entries; renumber the labels to 0..K (consecutive) first"
        )
    weight, theta, g, iterations, converged = _staple_em(
        patterns,
        tuples.counts[present],
        n_labels=n_used,
        prior=None if fixed_prior is None else fixed_prior[:n_used],
        max_iter=int(max_iter),
        tol=float(tol),
        progress=progress,
    )

    # labels: ITK's tie rule on the unnormalised weights (largest unique and > 0)
    best = weight.max(axis=1)
    tied = ((weight == best[:, None]).sum(axis=1) > 1) | ~(best > 0)
    table = np.zeros(tuples.counts.size, dtype=_label_dtype(k, tie))
    table[present] = np.where(tied, tie, weight.argmax(axis=1))
    out_labels = _broadcast(table, tuples.codes, mask, 0, spatial)

    confusion = np.broadcast_to(np.eye(k + 1), (n_raters, k + 1, k + 1)).copy()
    mass = theta.sum(axis=1)  # (R, T): a true class with weight has a column summing to 1
    block = np.swapaxes(theta[:, :n_used, :], 1, 2)  # (R, t, s)
    confusion[:, :n_used, :n_used] = np.where(mass[:, :, None] > 0, block, np.eye(n_used))
    if fixed_prior is None:
        full_prior = np.zeros(k + 1)
        full_prior[:n_used] = g
    else:
        full_prior = fixed_prior

    probs = None
    if probabilities:
        total = weight.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            post = weight / np.where(total > 0, total, 1.0)
        empty = ~(total[:, 0] > 0)
        if empty.any():  # impossible combinations: the raters' class fractions
            fractions = np.zeros((int(empty.sum()), n_used))
            rows = np.arange(fractions.shape[0])
            for j in range(n_raters):
                np.add.at(fractions, (rows, patterns[empty, j]), 1.0 / n_raters)
            post[empty] = fractions
        post_table = np.zeros((n_used, tuples.counts.size), dtype=np.float32)
        post_table[:, present] = post.T
        probs = np.empty((k + 1, *spatial), dtype=np.float32)
        flat = probs.reshape(k + 1, -1)
        for c in range(n_used):
            if mask is None:
                np.take(post_table[c], tuples.codes, out=flat[c])
            else:
                flat[c] = 1.0 if c == 0 else 0.0
                flat[c][mask.reshape(-1)] = np.take(post_table[c], tuples.codes)
        flat[n_used:] = 0.0
    return MultiLabelStapleResult(
        labels=out_labels,
        probabilities=probs,
        confusion=confusion,
        prior=full_prior,
        iterations=iterations,
        converged=converged,
        undecided=tie,
    )


def _prior(prior, n_classes: int) -> np.ndarray | None:
    if prior is None:
        return None
    try:
        values = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"multilabel_staple: prior must be {n_classes + 1} numbers (background + classes)"
        ) from None
    if values.shape != (n_classes + 1,):
        raise InputError(
            f"multilabel_staple: prior must hold {n_classes + 1} values (background + "
            f"{n_classes} classes); got shape {values.shape}"
        )
    if not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise InputError(
            "multilabel_staple: prior values must be finite, >= 0 and not all 0; got "
            f"{values.tolist()}"
        )
    return values / values.sum()


def _staple_em(
    patterns: np.ndarray,
    counts: np.ndarray,
    *,
    n_labels: int,
    prior: np.ndarray | None,
    max_iter: int,
    tol: float,
    progress: Callable[[int, float], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """ITK's multi-label EM on grouped voxels.

    ``patterns`` (P, R) labels < ``n_labels`` (= T), ``counts`` (P,) voxels per tuple. Returns
    the final unnormalised E-step weights (P, T), the confusion matrices in ITK's layout
    (R, T + 1, T) [rater's label, true label], the priors (T,), iterations and converged.
    """
    n_raters = patterns.shape[1]
    t = n_labels
    # initial matrices from the vote; ITK writes the undecided vote v = T at flat index s*T + T,
    # i.e. row s + 1, column 0 of its row-major (T + 1) x T array
    vote = _vote(patterns, t)
    theta = np.zeros((n_raters, (t + 1) * t))
    for j in range(n_raters):
        theta[j] = np.bincount(patterns[:, j] * t + vote, weights=counts, minlength=(t + 1) * t)
    theta = theta.reshape(n_raters, t + 1, t)
    rows = theta.sum(axis=2, keepdims=True)
    theta = np.where(rows > 0, theta / np.where(rows > 0, rows, 1.0), theta)
    if prior is None:
        g = np.zeros(t)
        for j in range(n_raters):
            g += np.bincount(patterns[:, j], weights=counts, minlength=t)
        g = g / g.sum()
    else:
        g = prior.copy()
    # M-step sums: entry (s, c) of rater j's matrix collects tuple p's weight of class c when
    # rater j says s in p; flat index s * T + c for every (p, c)
    where = [(patterns[:, j, None] * t + np.arange(t)).ravel() for j in range(n_raters)]
    updated = np.empty_like(theta)
    iterations = 0
    converged = False
    for it in range(max_iter):
        weight = _e_step(theta, patterns, g)
        total = weight.sum(axis=1, keepdims=True)
        weight = np.where(total != 0, weight / np.where(total != 0, total, 1.0), weight)
        cw = (counts[:, None] * weight).ravel()  # (P * T,)
        for j in range(n_raters):
            updated[j] = np.bincount(where[j], weights=cw, minlength=(t + 1) * t).reshape(t + 1, t)
        col = updated.sum(axis=1, keepdims=True)
        normalised = np.where(col != 0, updated / np.where(col != 0, col, 1.0), updated)
        change = float(np.abs(normalised - theta).max())
        theta = normalised
        iterations = it + 1
        if progress is not None:
            progress(iterations, change)
        if change < tol:
            converged = True
            break
    return _e_step(theta, patterns, g), theta, g, iterations, converged


def _e_step(theta: np.ndarray, patterns: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Unnormalised ``f(t) prod_j theta_j[d_j, t]`` per tuple (P, T), multiplied in ITK's order."""
    weight = np.repeat(g[None, :], patterns.shape[0], axis=0)
    for j in range(patterns.shape[1]):
        weight *= theta[j][patterns[:, j]]
    return weight
