"""The one fusion entry point: :func:`fuse` -> :class:`FusionResult`, and the method registry.

Every path that fuses raters calls :func:`fuse` (or its generator form :func:`iter_fuse`):
``softseg fuse``, the *Fuse raters* widget, the training data (:func:`training_target`, through
``softseg.data.fuse_raters``) and the protocol's reference (``softseg.protocol.ground_truth``).
So the same inputs give the same fused map, STAPLE probability and rater statistics everywhere.

Methods (:data:`METHODS`, a plain dict; STYLE.md 6):

============ ============================ ======================== ===============================
name         fused map (two classes)      raters                   K classes (integer labels)
============ ============================ ======================== ===============================
staple       STAPLE probability (float32) binary, or soft (soft    multi-label STAPLE labels and
                                          STAPLE, ``soft``)        class posteriors
average      mean of the raters (float32) values in [0, 1]         class fractions; their argmax
                                                                   (ties -> 0; soft class maps:
                                                                   within TIE_TOLERANCE)
majority     majority vote (uint8 0/1)    binary                   label vote (ties -> 0)
union        any rater (uint8 0/1)        binary                   --
intersection every rater (uint8 0/1)      binary                   --
random       none: training draws one rater per subject and epoch
============ ============================ ======================== ===============================

STAPLE's output is the same documented thing on every path: its **probability** (posterior of
foreground, float32, 0 outside the region); the **consensus** is ``probability >= 0.5``
(:meth:`FusionResult.consensus`), given where a binary map is asked for: the training target
and the protocol's reference of ``staple`` (see :func:`training_target`).

Region (``roi``): ``"auto"`` (default on every path) = :func:`~softseg.fusion.default_roi`, the
box of the raters' union grown by ``margin`` voxels; ``None`` = the whole volume (as SimpleITK);
or a boolean mask. STAPLE estimates its prior and rater parameters inside it (0 outside), and
the rater statistics below are counted inside it.

Rater statistics (one definition, :mod:`softseg.fusion.agreement`): sensitivity and specificity
of rater ``j`` against the reference ``W`` inside the region with soft counts,
``sum(W d_j) / sum(W)`` and ``sum((1 - W)(1 - d_j)) / sum(1 - W)``; ``W`` is the fused map, and
for STAPLE the posterior of its last M-step (so the numbers are STAPLE's own estimates, equal to
SimpleITK's). Multi-class: confusion matrices (R, K+1, K+1), rows = true class, each row sums to
1. Pairwise Dice between raters (soft counts; multi-class: mean over classes 1..K) and the
disagreement map (entropy in nats of the raters' vote fractions) complete the result.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from softseg.errors import InputError
from softseg.fusion.agreement import (
    binary_confusion,
    disagreement,
    rater_performance,
    soft_class_confusion,
)
from softseg.fusion.raters import is_binary, as_raters, default_roi, roi_box, roi_mask
from softseg.fusion.staple_em import DEFAULT_MAX_ITER, staple
from softseg.fusion.voting import average, intersection, majority_vote, union

__all__ = [
    "CLASS_SUM_TOLERANCE",
    "TIE_TOLERANCE",
    "METHODS",
    "RATER_STATISTICS",
    "FusionResult",
    "MethodSpec",
    "SoftRatersError",
    "class_probabilities",
    "fuse",
    "fusion_methods",
    "get_method",
    "iter_fuse",
    "training_fusions",
    "training_target",
]

Progress = Callable[[float, str], None]

#: The one definition of the rater statistics, in words (CLI sidecar, widget caption).
RATER_STATISTICS = (
    "each rater against the fused map inside the region, soft counts: sensitivity = "
    "sum(W d) / sum(W), specificity = sum((1 - W)(1 - d)) / sum(1 - W); STAPLE: its own estimates "
    "(W = its posterior)"
)


@dataclass(frozen=True)
class MethodSpec:
    """One fusion method of :data:`METHODS`.

    Attributes
    ----------
    name : str
        Registry key (CLI ``--method``/``--fusion`` value, model-card ``fusion``).
    title : str
        Short name shown in the viewer ("majority vote").
    description : str
        One line for help texts and tooltips.
    output : {"soft", "binary", "raters"}
        What the fused map holds for two classes ("raters": no fused map, training only).
    binary_input : bool
        Needs binary (0/1) raters.
    soft_variant : bool
        Has a soft form for confidence/soft maps (soft STAPLE).
    multiclass : bool
        Defined for integer label maps with ``n_classes``.
    training : bool
        Offered as a way to build training targets (``softseg train --fusion``).
    target : str
        What :attr:`FusionResult.target` (the training target and the protocol's reference)
        is, in words; empty for methods that are not training fusions.
    """

    name: str
    title: str
    description: str
    output: Literal["soft", "binary", "raters"]
    binary_input: bool = False
    soft_variant: bool = False
    multiclass: bool = False
    training: bool = False
    target: str = ""

    @property
    def fuses(self) -> bool:
        """True when the method makes a fused map (all but ``random``)."""
        return self.output != "raters"


#: The one registry of fusion methods: CLI choices, widget combo, training fusions, the
#: protocol's references all derive from it.
METHODS: dict[str, MethodSpec] = {
    "staple": MethodSpec(
        "staple",
        "STAPLE",
        "STAPLE (Warfield 2004): EM estimate of each rater's sensitivity and specificity; the "
        "probability map, and its consensus (>= 0.5) as a training target",
        "soft",
        soft_variant=True,
        multiclass=True,
        training=True,
        target="STAPLE consensus of the raters (probability >= 0.5), the papers' reference",
    ),
    "average": MethodSpec(
        "average",
        "average",
        "mean of the raters: a soft map whose value is the fraction of raters who agree",
        "soft",
        multiclass=True,
        training=True,
        target="average of the raters (soft)",
    ),
    "majority": MethodSpec(
        "majority",
        "majority vote",
        "majority vote of the raters: a binary map (ties give background)",
        "binary",
        binary_input=True,
        multiclass=True,
        training=True,
        target="majority vote of the raters",
    ),
    "union": MethodSpec(
        "union", "union", "foreground where any rater says foreground", "binary", binary_input=True
    ),
    "intersection": MethodSpec(
        "intersection",
        "intersection",
        "foreground where every rater says foreground",
        "binary",
        binary_input=True,
    ),
    "random": MethodSpec(
        "random",
        "random rater",
        "no fusion: one rater drawn at random per subject at every epoch (Lemay 2022)",
        "raters",
        training=True,
    ),
}


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``; an unknown name is an :class:`InputError` listing them."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown fusion method {name!r}; choose one of: {', '.join(METHODS)}"
        ) from None


def fusion_methods(*, multiclass: bool = False) -> tuple[str, ...]:
    """Names of the methods that make a fused map (``softseg fuse --method``, the Fuse widget)."""
    return tuple(k for k, s in METHODS.items() if s.fuses and (s.multiclass or not multiclass))


def training_fusions() -> tuple[str, ...]:
    """Names offered for training targets (``softseg train --fusion``, the Train widget)."""
    return tuple(k for k, s in METHODS.items() if s.training)


class SoftRatersError(InputError):
    """A method that needs binary raters (or binary STAPLE) was given soft or level maps.

    ``names`` lists the raters that hold soft values; callers may offer soft STAPLE.
    """

    def __init__(self, message: str, *, method: str, names: Sequence[str]) -> None:
        super().__init__(message)
        self.method = method
        self.names = tuple(names)


# ------------------------------------------------------------------------------------ result
@dataclass(frozen=True, eq=False)
class FusionResult:
    """What :func:`fuse` returns: one typed result for every path.

    Attributes
    ----------
    method : str
        Key of :data:`METHODS`.
    fused : ndarray (*spatial)
        The method's map: STAPLE probability or average (float32 in [0, 1]), majority / union /
        intersection (uint8 0/1); multi-class: integer label map (uint8, uint16 beyond 255
        classes) with 0 = background.
    probability : ndarray or None
        Two classes: STAPLE's probability (*spatial), float32 (the same array as ``fused``);
        multi-class: class probabilities (K+1, *spatial), float32, summing to 1 (STAPLE's
        posterior, or the fraction of raters per class for ``average``); else None.
    sensitivity, specificity : ndarray (R,), float64, or None
        Two classes only; see the module notes for the one definition.
    confusion : ndarray (R, K+1, K+1), float64
        ``confusion[j, t, s]``: share of true class ``t`` that rater ``j`` labels ``s`` (rows =
        true class, each row sums to 1). Two classes: ``[[spec, 1 - spec], [1 - sens, sens]]``.
    pairwise_dice : ndarray (R, R), float64
        Dice between raters (soft counts; multi-class: mean over classes 1..K), ones on the
        diagonal.
    disagreement : ndarray (*spatial), float32
        Entropy (nats) of the raters' vote fractions: 0 where all agree, at most ln 2 (two
        classes) or ln(K+1).
    class_disagreement : ndarray (K+1, *spatial), float32, or None
        Multi-class: binary entropy (nats) of each class's vote fraction.
    roi : ndarray (*spatial) of bool, or None
        The region used (None = whole volume).
    n_classes : int or None
        K for multi-class results, None for two-class ones.
    soft : bool
        Soft STAPLE was used (some rater held soft or confidence values).
    staple : StapleResult or MultiLabelStapleResult or None
        The EM's details (prior, iterations, converged) for ``staple``.
    undecided_voxels : int
        Multi-class ``majority``/``staple``: voxels where the vote or posterior tied (labelled 0).
    """

    method: str
    fused: np.ndarray
    probability: np.ndarray | None
    sensitivity: np.ndarray | None
    specificity: np.ndarray | None
    confusion: np.ndarray
    pairwise_dice: np.ndarray
    disagreement: np.ndarray
    class_disagreement: np.ndarray | None
    roi: np.ndarray | None
    n_classes: int | None = None
    soft: bool = False
    staple: Any = None
    undecided_voxels: int = 0

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def n_raters(self) -> int:
        return int(self.pairwise_dice.shape[0])

    @property
    def roi_box(self) -> list[list[int]] | None:
        """``[[start, stop], ...]`` per axis of the region's bounding box (None: whole volume)."""
        if self.roi is None:
            return None
        return [[s.start, s.stop] for s in roi_box(self.roi)]

    def consensus(self, threshold: float = 0.5) -> np.ndarray:
        """A hard map: soft results (STAPLE, average) at ``>= threshold`` as uint8 0/1; hard and
        multi-class results as they are."""
        if self.n_classes is not None or self.fused.dtype.kind != "f":
            return self.fused
        if not 0.0 < float(threshold) <= 1.0:
            raise InputError(f"consensus threshold must lie in (0, 1]; got {threshold!r}")
        return (self.fused >= np.float32(threshold)).view(np.uint8)

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        """The result's numbers as a JSON-able dict (what ``softseg fuse --json`` prints and the
        sidecars of fused maps record, from the CLI and from the widget alike).

        Keys: ``method``, ``soft``, ``roi`` (``{"mode": "none"}`` or ``{"mode": "region",
        "box": [[start, stop], ...], "voxels": n}``), ``staple`` (prior, iterations,
        converged), ``sensitivity_specificity`` (:data:`RATER_STATISTICS`), ``raters`` (one
        entry per rater: ``name`` and ``sensitivity``/``specificity``, or multi-class
        ``confusion``), ``pairwise_dice``, ``mean_pairwise_dice``, ``output_dtype``; multi-class
        also ``n_classes``, ``confusion_orientation``, ``undecided_voxels``.
        """
        names = [str(n) for n in names]
        if len(names) != self.n_raters:
            raise InputError(f"summary: {len(names)} names for {self.n_raters} raters")
        out: dict[str, Any] = {"method": self.method, "soft": bool(self.soft)}
        out["roi"] = (
            {"mode": "none"}
            if self.roi is None
            else {"mode": "region", "box": self.roi_box, "voxels": int(np.count_nonzero(self.roi))}
        )
        if self.staple is not None:
            prior = self.staple.prior
            out["staple"] = {
                "prior": np.asarray(prior).tolist() if np.ndim(prior) else float(prior),
                "iterations": int(self.staple.iterations),
                "converged": bool(self.staple.converged),
            }
        out["sensitivity_specificity"] = RATER_STATISTICS
        if self.n_classes is None:
            out["raters"] = [
                {"name": n, "sensitivity": float(p), "specificity": float(q)}
                for n, p, q in zip(names, self.sensitivity, self.specificity)
            ]
        else:
            out["n_classes"] = int(self.n_classes)
            out["raters"] = [
                {"name": n, "confusion": self.confusion[j].tolist()} for j, n in enumerate(names)
            ]
            out["confusion_orientation"] = (
                "rows = true class (0 = background), columns = rater's label; rows sum to 1"
            )
            out["undecided_voxels"] = int(self.undecided_voxels)
        pair = np.asarray(self.pairwise_dice, dtype=np.float64)
        off = pair[~np.eye(len(pair), dtype=bool)]
        out["pairwise_dice"] = pair.tolist()
        out["mean_pairwise_dice"] = float(off.mean()) if off.size else 1.0
        out["output_dtype"] = str(self.fused.dtype)
        return out

    @property
    def target(self) -> np.ndarray:
        """The map a model is trained on and evaluated against (see :func:`training_target`)."""
        return self.consensus() if self.method == "staple" else self.fused


# ------------------------------------------------------------------------------------- fuse
def _region(roi: Any, arr: np.ndarray, margin: int) -> np.ndarray | None:
    if isinstance(roi, str):
        if roi == "auto":
            return default_roi(arr, margin=margin)
        if roi == "none":
            return None
        raise InputError(f"unknown roi {roi!r}; use 'auto', 'none' (None) or a boolean mask")
    return roi_mask(roi, arr.shape[1:])


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    return [str(x) for x in names] if names is not None else [f"rater {j}" for j in range(n)]


def iter_fuse(
    raters: np.ndarray | Sequence[np.ndarray],
    method: str,
    *,
    roi: str | np.ndarray | None = "auto",
    margin: int = 10,
    soft: bool | None = None,
    n_classes: int | None = None,
    class_maps: bool = False,
    ties: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float | None = None,
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Generator[tuple[float, str], None, FusionResult]:
    """Generator form of :func:`fuse`: yields ``(fraction, text)`` steps, returns the result.

    For background workers (napari ``thread_worker``): ``result = yield from iter_fuse(...)``.
    ``progress`` additionally receives STAPLE's per-iteration notes. Parameters as :func:`fuse`.
    """
    spec = get_method(method)
    if not spec.fuses:
        raise InputError(
            f"{method!r} is a training choice (one rater drawn per subject and epoch), not a "
            f"fusion; choose one of: {', '.join(fusion_methods())}"
        )
    if ties not in (0, 1):
        raise InputError(f"ties must be 0 (background) or 1 (foreground); got {ties!r}")
    if not isinstance(margin, (int, np.integer)) or isinstance(margin, bool) or margin < 0:
        raise InputError(f"margin must be a whole number of voxels >= 0; got {margin!r}")
    if n_classes is not None:
        return (
            yield from _iter_fuse_classes(
                raters, spec, roi=roi, margin=margin, n_classes=n_classes, class_maps=class_maps,
                max_iter=max_iter, tol=tol, names=names, progress=progress,
            )
        )
    if class_maps:
        raise InputError("class_maps=True needs n_classes (the number of foreground classes K)")
    yield 0.05, "checking raters"
    arr = as_raters(raters, what=spec.name, names=names)
    n = arr.shape[0]
    label = _names(names, n)
    soft_raters = [label[j] for j in range(n) if not is_binary(arr[j])]
    if soft_raters and (spec.binary_input or (spec.soft_variant and soft is False)):
        what = f"binary {spec.title}" if spec.soft_variant else spec.title
        hint = (
            f"use soft {spec.title}"
            if spec.soft_variant
            else "use average or soft STAPLE, or binarise them"
        )
        raise SoftRatersError(
            f"{what} needs binary (0/1) raters but {', '.join(soft_raters)} "
            f"hold{'s' if len(soft_raters) == 1 else ''} confidence levels or soft values; {hint}",
            method=spec.name,
            names=soft_raters,
        )
    yield 0.15, "region of interest"
    region = _region(roi, arr, int(margin))
    yield 0.25, spec.title
    result = None
    probability = None
    if spec.name == "staple":

        def note(it: int, change: float) -> None:
            if progress is not None:
                progress(0.5, f"STAPLE iteration {it} (change {change:.2g})")

        result = staple(
            arr, roi=region, soft=bool(soft_raters), max_iter=max_iter,
            tol=1e-7 if tol is None else tol, progress=note,
        )
        fused = probability = result.probability.astype(np.float32)
    elif spec.name == "average":
        fused = average(arr)
    elif spec.name == "majority":
        fused = majority_vote(arr, ties=ties)
    elif spec.name == "union":
        fused = union(arr)
    else:
        fused = intersection(arr)
    yield 0.7, "disagreement"
    from softseg.metrics import pairwise_dice

    dis = disagreement(arr)
    yield 0.8, "rater statistics"
    pair = pairwise_dice(arr)
    if result is not None:
        sens, spec_ = np.asarray(result.sensitivity), np.asarray(result.specificity)
    else:
        sens, spec_ = rater_performance(arr, fused, roi=region)
    yield 1.0, "done"
    return FusionResult(
        method=spec.name,
        fused=fused,
        probability=probability,
        sensitivity=sens,
        specificity=spec_,
        confusion=binary_confusion(sens, spec_),
        pairwise_dice=pair,
        disagreement=dis,
        class_disagreement=None,
        roi=region,
        soft=bool(soft_raters) and spec.name == "staple",
        staple=result,
    )


def fuse(
    raters: np.ndarray | Sequence[np.ndarray],
    method: str,
    *,
    roi: str | np.ndarray | None = "auto",
    margin: int = 10,
    soft: bool | None = None,
    n_classes: int | None = None,
    class_maps: bool = False,
    ties: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float | None = None,
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> FusionResult:
    """Fuse raters with one method of :data:`METHODS` (see the module notes).

    Parameters
    ----------
    raters : ndarray (R, *spatial) or sequence of R ndarrays (*spatial)
        Two classes: values in [0, 1] (binary 0/1, or soft maps such as confidence levels
        converted with :func:`softseg.confidence.as_rater_values`); values within 1e-6 of
        [0, 1] are clipped (:func:`softseg.checks.as_probability`). Multi-class
        (``n_classes=K``): integer label maps, 0 = background, 1..K. At least two raters.
    method : str
        A key of :data:`METHODS` that fuses (not ``"random"``).
    roi : "auto", "none", None or ndarray (*spatial) of bool
        Region for STAPLE's estimation and for the rater statistics (module notes).
    margin : int, >= 0
        Voxels added around the raters' union for ``roi="auto"``.
    soft : bool or None
        STAPLE with soft or confidence raters: None (default) uses soft STAPLE exactly when some
        rater holds values other than 0/1 (on binary raters soft STAPLE is bit-identical to
        binary STAPLE); False refuses soft raters (:class:`SoftRatersError`); True allows them.
    n_classes : int, optional
        K: the raters are integer label maps with classes 1..K (multi-class fusion).
    class_maps : bool
        With ``n_classes``: the raters are class probabilities of shape (R, K+1, *spatial)
        (background first, summing to 1 within :data:`CLASS_SUM_TOLERANCE`; see
        :func:`class_probabilities` to build them from per-class maps). One-hot maps are fused
        as the label maps they are; soft ones (confidence levels) only by ``average``, whose
        label map is the class of the largest mean probability, classes within
        :data:`TIE_TOLERANCE` (1e-6) of it counting as a tie (-> 0, background).
    ties : {0, 1}
        Two-class ``majority`` with an even number of raters: what a tie gives.
    max_iter : int
        STAPLE iteration cap.
    tol : float, optional
        STAPLE convergence tolerance (default 1e-7 for two classes, as ITK's STAPLE; 1e-5 for
        multi-label STAPLE, as ITK's MultiLabelSTAPLE).
    names : sequence of str, optional
        One name per rater (file or layer name) used in error messages.
    progress : callable(fraction, text), optional
        Called at each step and at each STAPLE iteration.

    Returns
    -------
    FusionResult

    Raises
    ------
    InputError
        Unknown method, ``"random"``, fewer than two raters, shapes that differ, values outside
        [0, 1] or NaN (naming the rater), a bad region or option, label values above K.
    SoftRatersError
        A binary method (or ``soft=False`` STAPLE) given soft or confidence raters.

    Examples
    --------
    >>> r = np.zeros((3, 4, 4), np.uint8); r[:, 1:3, 1:3] = 1; r[2, 0, 0] = 1
    >>> res = fuse(r, "staple", roi=None)
    >>> int(res.consensus().sum()), res.sensitivity.round(3).tolist()
    (4, [1.0, 1.0, 1.0])
    """
    steps = iter_fuse(
        raters, method, roi=roi, margin=margin, soft=soft, n_classes=n_classes,
        class_maps=class_maps, ties=ties, max_iter=max_iter, tol=tol, names=names,
        progress=progress,
    )
    while True:
        try:
            fraction, text = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(fraction, text)


# ------------------------------------------------------------------------------- multi-class
#: How far the classes of a voxel may sum above 1 (float32 maps of several classes, each within
#: rounding) before a set of per-class maps is refused. The prediction contract uses 1e-5 too.
CLASS_SUM_TOLERANCE = 1e-5
#: Multi-class soft fusion (average of class maps, a random rater's class map): classes whose
#: probability lies within this of the voxel's largest are a tie, and a tie gives background
#: (0), as an exact tie of the label vote does. Far above float32 rounding of averaged
#: confidence values (~1e-7), far below any difference one rater's confidence level makes.
TIE_TOLERANCE = 1e-6


def class_probabilities(
    class_maps: np.ndarray | Sequence[np.ndarray], *, name: str = "rater"
) -> np.ndarray:
    """One rater's per-class maps (K, *spatial) in [0, 1] -> class probabilities (K+1, *spatial).

    Background (index 0) is ``1 - sum`` of the classes. A voxel whose classes sum above 1 by
    more than :data:`CLASS_SUM_TOLERANCE` is refused (values within it are rescaled to sum 1).

    Parameters
    ----------
    class_maps : ndarray (K, *spatial) or sequence of K ndarrays, values in [0, 1]
        Binary, soft or converted confidence maps of classes 1..K.
    name : str
        The rater (file names), first in every message.

    Returns
    -------
    ndarray (K+1, *spatial), float32, values in [0, 1], summing to 1 at every voxel

    Raises
    ------
    InputError
        Shapes that differ, values outside [0, 1], classes summing above 1.
    """
    arr = as_raters(class_maps, min_raters=1, what=name, names=[f"class {k + 1}" for k in range(len(class_maps))])
    maps = arr.astype(np.float32, copy=False)
    total = maps.sum(axis=0, dtype=np.float64)
    worst = float(total.max())
    if worst > 1.0 + CLASS_SUM_TOLERANCE:
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(total)), total.shape))
        raise InputError(
            f"{name}: the per-class maps sum to {worst!r} at voxel {where}; a voxel's classes "
            f"must sum to at most 1 (tolerance {CLASS_SUM_TOLERANCE:g}): one class per voxel, or "
            "confidences that share 1"
        )
    out = np.empty((maps.shape[0] + 1, *maps.shape[1:]), dtype=np.float32)
    over = total > 1.0
    if over.any():  # rounding only: rescale those voxels to sum exactly 1
        maps = maps.copy()
        maps[:, over] /= total[over].astype(np.float32)
        total = np.minimum(total, 1.0)
    out[1:] = maps
    out[0] = (1.0 - total).astype(np.float32)
    np.clip(out[0], 0.0, 1.0, out=out[0])
    return out


def _as_class_maps(
    raters: Any, k: int, names: Sequence[str] | None, what: str, *, min_raters: int = 2
) -> np.ndarray:
    """Validate (R, K+1, *spatial) class probabilities."""
    arr = np.asarray(raters) if not isinstance(raters, np.ndarray) else raters
    if arr.ndim < 3 or arr.shape[1] != k + 1:
        raise InputError(
            f"{what}: class maps must have shape (R, K+1, *spatial) = (R, {k + 1}, ...); got "
            f"{arr.shape}"
        )
    label = _names(names, arr.shape[0])
    rows = []
    for j in range(arr.shape[0]):
        probs = as_raters(arr[j], min_raters=1, what=f"{what}: {label[j]}")
        total = probs.sum(axis=0, dtype=np.float64)
        err = float(np.abs(total - 1.0).max())
        if err > CLASS_SUM_TOLERANCE:
            raise InputError(
                f"{what}: {label[j]}: class probabilities must sum to 1 at every voxel (within "
                f"{CLASS_SUM_TOLERANCE:g}); off by {err!r} (build them with class_probabilities)"
            )
        rows.append(probs.astype(np.float32, copy=False))
    if len(rows) < min_raters:
        raise InputError(f"{what}: got {len(rows)} rater; a fusion needs at least {min_raters}")
    return np.stack(rows)


def _plurality(probability: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Class of the largest probability; ties -> 0. Returns the labels and the tie count.

    Classes within :data:`TIE_TOLERANCE` of the largest probability are tied: class
    probabilities built from confidence levels are float32 sums (background ``1 - 1/3`` is
    0.6666666 where a class at level 2/3 is 0.6666667), so an exact comparison would let rounding
    decide a 50/50 split.
    """
    dtype = np.uint8 if k + 1 <= 255 else np.uint16
    labels = np.argmax(probability, axis=0).astype(dtype)
    low = probability.max(axis=0)
    low -= np.float32(TIE_TOLERANCE) if probability.dtype == np.float32 else TIE_TOLERANCE
    hits = np.zeros(probability.shape[1:], dtype=np.uint16 if k + 1 < 2**16 else np.uint32)
    for c in range(probability.shape[0]):  # one class at a time: no (K+1, *spatial) boolean
        np.add(hits, probability[c] >= low, out=hits, casting="unsafe")
    tied = hits > 1
    labels[tied] = 0
    return labels, int(np.count_nonzero(tied))


def _iter_fuse_classes(
    raters: Any,
    spec: MethodSpec,
    *,
    roi: Any,
    margin: int,
    n_classes: int,
    class_maps: bool,
    max_iter: int,
    tol: float | None,
    names: Sequence[str] | None,
    progress: Progress | None,
) -> Generator[tuple[float, str], None, FusionResult]:
    from softseg.fusion import multilabel as ml
    from softseg.metrics import entropy

    if not spec.multiclass:
        raise InputError(
            f"{spec.name} is defined for two classes only; for label maps choose one of: "
            f"{', '.join(fusion_methods(multiclass=True))}"
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise InputError(f"n_classes must be a whole number >= 1; got {n_classes!r}")
    k = int(n_classes)
    yield 0.05, "checking label maps"
    probs = None
    if class_maps:
        probs = _as_class_maps(raters, k, names, spec.name)
        label = _names(names, probs.shape[0])
        soft_raters = [label[j] for j in range(probs.shape[0]) if not is_binary(probs[j])]
        if not soft_raters:  # one-hot maps: the label maps they are
            labels = np.argmax(probs, axis=1).astype(np.uint8 if k + 1 <= 255 else np.uint16)
            probs = None
        elif spec.name != "average":
            raise SoftRatersError(
                f"multi-class {spec.title} needs one class per voxel but {', '.join(soft_raters)} "
                f"hold{'s' if len(soft_raters) == 1 else ''} soft or confidence class maps; use "
                "average, or binarise them",
                method=spec.name,
                names=soft_raters,
            )
    if probs is None:
        labels, k = ml.as_label_maps(
            raters if not class_maps else labels, n_classes=k, what=spec.name, names=names
        )
        occupied = labels != 0
    else:
        occupied = probs[:, 1:].max(axis=1) > 0
    yield 0.15, "region of interest"
    region = _region(roi, occupied, margin)
    del occupied
    yield 0.25, spec.title
    result = None
    probability = None
    confusion = None
    votes = None
    if probs is not None:  # soft class maps, average
        probability = probs.mean(axis=0, dtype=np.float64).astype(np.float32)
        fused, undecided = _plurality(probability, k)
    elif spec.name == "staple":

        def note(it: int, change: float) -> None:
            if progress is not None:
                progress(0.5, f"STAPLE iteration {it} (change {change:.2g})")

        kwargs: dict[str, Any] = {"max_iter": max_iter, "roi": region, "undecided": k + 1}
        if tol is not None:
            kwargs["tol"] = tol
        result = ml.multilabel_staple(labels, n_classes=k, progress=note, **kwargs)
        fused, probability = result.labels, result.probabilities
        confusion = np.asarray(result.confusion)
    else:  # the label map of both is the plurality vote (= the argmax of the class average)
        if spec.name == "average":
            votes = ml.class_votes(labels, n_classes=k)
            probability = np.divide(votes, np.float32(labels.shape[0]), dtype=np.float32)
        fused = ml.label_vote(labels, n_classes=k, undecided=k + 1)
    if probs is None:
        tied = fused == k + 1
        undecided = int(np.count_nonzero(tied))
        if undecided:
            fused = np.where(tied, 0, fused).astype(fused.dtype)
    yield 0.7, "disagreement"
    if probs is None:  # both maps from one vote count (looked up: no log per voxel)
        dis, per_class = ml.class_disagreements(labels, n_classes=k, votes=votes)
        del votes
    else:
        dis = entropy(probability, class_axis=0)
        per_class = entropy(probability)
    yield 0.8, "rater statistics"
    if confusion is None:  # against the method's reference: class fractions (average) or labels
        reference = probability if spec.name == "average" else fused
        if probs is None:
            confusion = ml.confusion_matrices(labels, reference, n_classes=k, roi=region)
        else:
            confusion = soft_class_confusion(probs, reference, roi=region)
    pair = _pairwise_class_dice(probs if probs is not None else labels, k)
    yield 1.0, "done"
    return FusionResult(
        method=spec.name,
        fused=fused,
        probability=probability,
        sensitivity=None,
        specificity=None,
        confusion=confusion,
        pairwise_dice=pair,
        disagreement=dis,
        class_disagreement=per_class,
        roi=region,
        n_classes=k,
        soft=probs is not None,
        staple=result,
        undecided_voxels=undecided,
    )


def _pairwise_class_dice(maps: np.ndarray, k: int) -> np.ndarray:
    """(R, R) mean over classes 1..K of the Dice between raters' class masks (label maps
    (R, *spatial)) or class maps (R, K+1, *spatial), soft counts."""
    from softseg.metrics import pairwise_dice

    total = np.zeros((maps.shape[0], maps.shape[0]))
    soft = maps.ndim >= 3 and maps.dtype.kind == "f" and maps.shape[1] == k + 1
    for c in range(1, k + 1):
        total += pairwise_dice(maps[:, c] if soft else (maps == c).view(np.uint8))
    return total / k


# -------------------------------------------------------------------------------- training
def training_target(
    raters: np.ndarray | Sequence[np.ndarray],
    method: str,
    *,
    n_classes: int | None = None,
    class_maps: bool = False,
    roi: str | np.ndarray | None = "auto",
) -> np.ndarray:
    """What the trainer fits for one subject (and the protocol's reference of that method).

    Parameters
    ----------
    raters : ndarray (R, *spatial), values in [0, 1]
        Integer label maps with ``n_classes``; class probabilities (R, K+1, *spatial) with
        ``class_maps=True`` as well.
    method : str
        A key of :data:`METHODS` with ``training=True``: staple, average, majority, random.
    n_classes : int, optional
        K, for multi-class raters.
    class_maps : bool
        With ``n_classes``: the raters are class probabilities (per-class rater files through
        :func:`class_probabilities`).
    roi : as :func:`fuse`

    Returns
    -------
    ndarray, float32
        Two classes: ``(1, *spatial)`` for a fusion, ``(R, *spatial)`` (the raters) for
        ``random``. Multi-class: ``(1, K+1, *spatial)`` class targets summing to 1 (one-hot of
        the fused labels, or the class fractions for ``average``), ``(R, K+1, *spatial)`` (the
        raters' class maps, one-hot for label maps) for ``random``. A single rater is its own
        target.

    Notes
    -----
    ``staple`` trains on the STAPLE **consensus** (probability >= 0.5), not on the probability:
    the label-fusion paper (Lemay et al. 2022, section 2.2) uses STAPLE as a method that
    "produces binary GTs" for both the conventional and the SoftSeg pipelines, and the SoftSeg
    candidates get their soft borders from resampling and augmentation (Gros et al. 2021). This
    keeps "SoftSeg-STAPLE" and "Conv-STAPLE" the papers' candidates; the probability itself is
    one ``softseg fuse --method staple`` away for whoever wants to train on it.
    ``majority`` with soft raters first cuts each rater at 0.5 (its own vote); multi-class
    ``staple`` and ``majority`` with soft class maps first give each rater's voxel its most
    probable class (ties -> background): both need one label per voxel.
    """
    if method not in training_fusions():
        raise InputError(
            f"unknown fusion {method!r}; choose one of {', '.join(training_fusions())}"
        )
    spec = METHODS[method]
    if n_classes is not None:
        return _class_target(raters, spec, n_classes=n_classes, class_maps=class_maps, roi=roi)
    if class_maps:
        raise InputError("class_maps=True needs n_classes (the number of foreground classes K)")
    arr = as_raters(raters, min_raters=1, what=f"training target ({method})")
    if spec.name == "random" or arr.shape[0] == 1:
        return np.array(arr, dtype=np.float32, copy=True)
    if spec.name == "majority" and not is_binary(arr):
        arr = (arr >= 0.5).view(np.uint8)
    result = fuse(arr, spec.name, roi=roi)
    return np.asarray(result.target, dtype=np.float32)[None]


def _class_target(
    raters: Any, spec: MethodSpec, *, n_classes: int, class_maps: bool, roi: Any
) -> np.ndarray:
    from softseg.fusion import multilabel as ml

    what = f"training target ({spec.name})"
    if class_maps:
        probs = _as_class_maps(raters, int(n_classes), None, what, min_raters=1)
        k = int(n_classes)
        if spec.name == "random" or probs.shape[0] == 1:
            return probs.copy()
        if spec.name == "average":
            return np.asarray(fuse(probs, "average", n_classes=k, class_maps=True, roi=roi).probability)[None]
        labels = np.stack([_plurality(p, k)[0] for p in probs])  # one label per voxel
    else:
        labels, k = ml.as_label_maps(raters, n_classes=n_classes, min_raters=1, what=what)
    if spec.name == "random" or labels.shape[0] == 1:
        return _one_hot(labels, k)
    result = fuse(labels, spec.name, n_classes=k, roi=roi)
    if spec.name == "average":
        return np.asarray(result.probability, dtype=np.float32)[None]
    return _one_hot(result.fused[None], k)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """(R, *spatial) labels -> (R, K+1, *spatial) float32 one-hot."""
    out = np.zeros((labels.shape[0], k + 1, *labels.shape[1:]), dtype=np.float32)
    for c in range(k + 1):
        out[:, c] = labels == c
    return out
