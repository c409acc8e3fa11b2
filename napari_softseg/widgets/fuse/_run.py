"""The fusion the *Fuse raters* widget runs in its worker: snapshots -> the one engine.

Two classes: each rater goes through :meth:`RaterInput.soft` (the one levels -> soft
conversion) and :func:`softseg.fusion.iter_fuse`. Multi-class (``n_classes=K``): each rater is
its integer label map (:func:`softseg.class_levels.label_map`; the painted class of a voxel,
whatever its confidence) or, when a rater painted confidence levels and ``use_confidence`` is
on, its class probabilities (:func:`softseg.class_levels.class_soft_maps` ->
:func:`softseg.fusion.class_probabilities`), fused with
``iter_fuse(..., n_classes=K, class_maps=True)`` exactly as ``softseg fuse --classes K`` fuses
per-class rater files. The engine refuses confidence class maps for STAPLE and the label vote
(one class per voxel); the widget then offers the painted classes instead.

Nothing here touches a layer: the worker sees only snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from softseg import fusion
from softseg.errors import InputError

from napari_softseg.widgets.fuse._inputs import RaterInput

__all__ = [
    "METHODS",
    "ROI_AROUND",
    "ROI_MODES",
    "ROI_WHOLE",
    "FusionOutput",
    "iter_fusion",
    "method_choices",
    "run_fusion",
]


def _choices() -> dict[str, tuple[str, bool | None]]:
    """Combo entry -> (method of softseg.fusion.METHODS, soft option), from the registry."""
    out: dict[str, tuple[str, bool | None]] = {}
    for name in fusion.fusion_methods():
        spec = fusion.METHODS[name]
        out[spec.title] = (name, False if spec.soft_variant else None)
        if spec.soft_variant:
            out[f"soft {spec.title}"] = (name, True)
    return out


#: Combo entry -> (fusion method, soft option): derived from :data:`softseg.fusion.METHODS`.
METHODS: dict[str, tuple[str, bool | None]] = _choices()
ROI_AROUND = "around the raters' union"
ROI_WHOLE = "whole volume"
ROI_MODES = (ROI_AROUND, ROI_WHOLE)


def method_choices(*, multiclass: bool) -> list[str]:
    """Combo entries for two-class or multi-class fusion (the registry's ``multiclass`` flag)."""
    if not multiclass:
        return list(METHODS)
    return [c for c, (name, soft) in METHODS.items() if fusion.METHODS[name].multiclass and not soft]


@dataclass(frozen=True, eq=False)
class FusionOutput:
    """What the worker hands back to the main thread: the engine's result and its inputs.

    Attributes
    ----------
    choice : str
        The combo entry ("STAPLE", "soft STAPLE", "majority vote", ...).
    names : tuple of str
        Rater layer names, in the result's rater order.
    uids : tuple of str
        :func:`~napari_softseg._metadata.layer_uid` of every layer the raters came from.
    sources : tuple of (str or None)
        The files they were read from.
    result : softseg.fusion.FusionResult
    roi_mode : str
    classes : tuple of str or None
        Multi-class: class names 1..K (background excluded).
    use_confidence : bool
        Multi-class: the raters' painted confidence was used (class maps).
    seconds : float
        Time in the worker.
    """

    choice: str
    names: tuple[str, ...]
    result: fusion.FusionResult
    roi_mode: str
    uids: tuple[str, ...] = ()
    sources: tuple[str | None, ...] = ()
    classes: tuple[str, ...] | None = None
    use_confidence: bool = False
    margin: int = 10
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The combo entry ("STAPLE", "soft STAPLE", "majority vote", ...)."""
        return self.choice

    @property
    def multiclass(self) -> bool:
        return self.result.n_classes is not None

    @property
    def fused(self) -> np.ndarray:
        return self.result.fused

    @property
    def fused_kind(self) -> str:
        """"labels" (binary or multi-class label map) or "soft"."""
        return "soft" if self.result.fused.dtype.kind == "f" else "labels"

    @property
    def disagreement(self) -> np.ndarray:
        return self.result.disagreement

    @property
    def sensitivity(self) -> np.ndarray | None:
        return self.result.sensitivity

    @property
    def specificity(self) -> np.ndarray | None:
        return self.result.specificity

    @property
    def pairwise_dice(self) -> np.ndarray:
        return self.result.pairwise_dice

    @property
    def staple(self) -> Any:
        return self.result.staple

    @property
    def class_labels(self) -> tuple[str, ...]:
        """"background" and the class names (index 0..K), multi-class only."""
        return ("background", *(self.classes or ()))


def run_fusion(
    raters: Sequence[RaterInput],
    *,
    method: str,
    roi_mode: str = ROI_AROUND,
    margin: int = 10,
    n_classes: int | None = None,
    classes: Sequence[str] | None = None,
    use_confidence: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> FusionOutput:
    """Fuse rater snapshots with the engine (blocking; see :func:`iter_fusion`).

    *progress* receives the ``(fraction, text)`` steps.
    """
    steps = iter_fusion(
        raters, method=method, roi_mode=roi_mode, margin=margin, n_classes=n_classes,
        classes=classes, use_confidence=use_confidence,
    )
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(*item)


def _class_inputs(
    raters: Sequence[RaterInput], k: int, use_confidence: bool
) -> tuple[np.ndarray, bool]:
    """(R, *spatial) label maps, or (R, K+1, *spatial) class probabilities when a rater's
    painted confidence is used; and whether they are class maps."""
    if use_confidence and any(r.has_confidence for r in raters):
        return np.stack([r.class_probabilities(k) for r in raters]), True
    return np.stack([r.label_map(k) for r in raters]), False


def iter_fusion(
    raters: Sequence[RaterInput],
    *,
    method: str,
    roi_mode: str = ROI_AROUND,
    margin: int = 10,
    n_classes: int | None = None,
    classes: Sequence[str] | None = None,
    use_confidence: bool = True,
) -> Any:
    """Generator: yields ``(fraction, text)`` progress steps, returns a :class:`FusionOutput`.

    Parameters
    ----------
    raters : sequence of RaterInput
    method : str
        A key of :data:`METHODS` (a method's title, or "soft STAPLE").
    roi_mode : str
        One of :data:`ROI_MODES`.
    margin : int
        Voxels added around the raters' union for the default region.
    n_classes : int, optional
        K >= 2: multi-class fusion of label maps / class codes (0 = background, 1..K).
    classes : sequence of str, optional
        Class names 1..K (default "class 1" ...).
    use_confidence : bool
        Multi-class: fuse the raters' painted confidence (class probabilities) when some rater
        has confidence levels below 1; off: each voxel's painted class.

    Returns
    -------
    FusionOutput
        As the generator's return value (``StopIteration.value``).

    Raises
    ------
    InputError
        Unknown method or region, values beyond the scale or the classes (naming the layer).
    SoftRatersError
        A method that needs binary raters (two classes) or one class per voxel (multi-class)
        given confidence or soft values.
    """
    if method not in METHODS:
        raise InputError(f"unknown fusion method {method!r}; choose one of {list(METHODS)}")
    if roi_mode not in ROI_MODES:
        raise InputError(f"unknown region {roi_mode!r}; choose one of {list(ROI_MODES)}")
    t0 = time.perf_counter()
    name, soft = METHODS[method]
    names = [f"layer {r.name!r}" for r in raters]
    options: dict[str, Any] = {"roi": "auto" if roi_mode == ROI_AROUND else None, "margin": margin, "names": names}
    class_names: tuple[str, ...] | None = None
    class_maps = False
    if n_classes is not None:
        k = int(n_classes)
        class_names = tuple(classes) if classes is not None else tuple(f"class {c}" for c in range(1, k + 1))
        if len(class_names) != k:
            raise InputError(f"{len(class_names)} class names for {k} classes")
        if soft:
            raise InputError("soft STAPLE is a two-class method; choose STAPLE (multi-label) for classes")
        yield 0.02, "reading the painted classes"
        stack, class_maps = _class_inputs(raters, k, use_confidence)
        options.update(n_classes=k, class_maps=class_maps)
    else:
        yield 0.02, "converting levels to soft values"
        maps = [r.soft() for r in raters]
        if any(m.dtype.kind == "f" for m in maps):
            maps = [m.astype(np.float32, copy=False) for m in maps]
        stack = np.stack(maps)
        del maps
        options["soft"] = soft
    result = yield from fusion.iter_fuse(stack, name, **options)
    spatial = stack.shape[-3:]
    return FusionOutput(
        choice=method,
        names=tuple(r.name for r in raters),
        uids=tuple(u for r in raters for u in r.uids),
        sources=tuple(r.source for r in raters),
        result=result,
        roi_mode=roi_mode,
        classes=class_names,
        use_confidence=class_maps,
        margin=int(margin),
        seconds=time.perf_counter() - t0,
        extra={"roi_voxels": int(result.roi.sum()) if result.roi is not None else int(np.prod(spatial))},
    )
