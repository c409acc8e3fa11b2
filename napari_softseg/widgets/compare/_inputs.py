"""What the Compare dock compares: the chosen layers checked and copied in the main thread
(:func:`collect`), then evaluated in a worker thread by the engine (:func:`run_job`:
:func:`softseg.compare.compare_predictions` or, for K-class candidates,
:func:`softseg.compare.compare_class_predictions`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from softseg import compare
from softseg.errors import InputError

from napari_softseg._metadata import find_layer
from napari_softseg.widgets._candidates import (
    Candidate,
    ReferenceChoice,
    read_reference,
    short_labels,
    threshold_of,
)

__all__ = ["BadInput", "Job", "collect", "run_job"]


@dataclass(frozen=True)
class BadInput:
    """What the worker returns when the input was refused (shown, not raised)."""

    message: str


@dataclass
class Job:
    """Snapshots of the chosen layers and the settings of one comparison."""

    predictions: dict[str, np.ndarray]  # label -> (*spatial) or (K, *spatial)
    reference: np.ndarray
    reference_name: str
    thresholds: Any  # see compare_predictions / compare_class_predictions
    spacing: tuple[float, ...]
    classes: tuple[str, ...] | None = None
    raters: list[tuple[str, np.ndarray]] = field(default_factory=list)  # soft maps
    keys: dict[str, str] = field(default_factory=dict)  # label -> candidate key
    colors: dict[str, str] = field(default_factory=dict)  # label -> "#rrggbb"


def collect(layers: Iterable[Any], chosen: Sequence[Candidate], reference: ReferenceChoice | None,
            *, mode: str, common: float, raters: Sequence[Any] = ()) -> Job:
    """Check the choices and copy the arrays (main thread; InputError on bad input).

    ``mode``: ``"optimal"`` (each model's thresholds from its card), ``"common"`` (``common``
    for every candidate and class) or ``"argmax"`` (K classes: the most probable class).
    """
    from napari_softseg._raters import rater_soft

    layers = list(layers)
    if len(chosen) < 2:
        raise InputError(f"choose at least two predictions to compare; {len(chosen)} chosen")
    kinds = {c.classes for c in chosen}
    if len(kinds) != 1:
        raise InputError("choose predictions of one kind: all single-class, or all K-class with "
                         "the same classes")
    classes = next(iter(kinds))
    if reference is None:
        raise InputError("choose a reference (a truth, fused raters, a label map)")
    labels = short_labels(chosen)
    ref = read_reference(reference, layers)
    spatial = ref.shape[1:] if reference.kind == "classes" else ref.shape
    predictions: dict[str, np.ndarray] = {}
    thresholds: dict[str, Any] = {}
    spacing: tuple[float, ...] = ()
    for cand in chosen:
        soft_layers = cand.layers(layers)
        for layer in soft_layers:
            if np.shape(layer.data) != spatial:
                raise InputError(
                    f"prediction {layer.name!r} has shape {np.shape(layer.data)} but the "
                    f"reference {reference.title!r} has shape {spatial}; choose layers on one grid")
            if np.asarray(layer.data).dtype.kind != "f":  # the value range: in the worker
                compare.check_prediction(np.asarray(layer.data), name=layer.name)
        label = labels[cand.key]
        if classes is None:
            predictions[label] = np.array(soft_layers[0].data, copy=True)
        else:
            predictions[label] = np.stack([np.asarray(ly.data) for ly in soft_layers])
        spacing = tuple(float(s) for s in soft_layers[0].scale[-len(spatial):])
        if mode == "optimal":
            found = [threshold_of(ly) for ly in soft_layers]
            if any(t is None for t in found):
                raise InputError(f"{cand.title!r} is not a model's prediction, so it has no "
                                 "optimal threshold; compare at one threshold instead")
            thresholds[label] = found[0] if classes is None else dict(zip(classes, found))
    if mode == "common":
        thresholds = {label: float(common) for label in predictions}
        if classes is not None:
            thresholds = float(common)
    elif mode == "argmax":
        if classes is None:
            raise InputError("the argmax needs K-class predictions")
        thresholds = None
    rater_maps = []
    for layer in raters:
        if np.shape(layer.data) != spatial:
            raise InputError(f"rater {layer.name!r} has shape {np.shape(layer.data)} but the "
                             f"reference {reference.title!r} has shape {spatial}")
        rater_maps.append((str(layer.name), rater_soft(layer)))
    return Job(predictions=predictions, reference=np.array(ref, copy=True),
               reference_name=reference.title, thresholds=thresholds, spacing=spacing,
               classes=classes, raters=rater_maps,
               keys={labels[c.key]: c.key for c in chosen},
               colors={labels[c.key]: c.color for c in chosen})


def run_job(job: Job) -> compare.Comparison | BadInput:
    """The engine's comparison of a :class:`Job` (worker thread); bad input is an answer."""
    try:
        if job.classes is None:
            raters = np.stack([a for _, a in job.raters]) if job.raters else None
            return compare.compare_predictions(
                job.predictions, job.reference, thresholds=job.thresholds, raters=raters,
                spacing=job.spacing, reference_name=job.reference_name)
        return compare.compare_class_predictions(
            job.predictions, job.reference, classes=job.classes, thresholds=job.thresholds,
            spacing=job.spacing, reference_name=job.reference_name)
    except InputError as exc:  # a returned exception would be re-raised by the worker
        return BadInput(str(exc))


def layers_of(layers: Iterable[Any], uids: Sequence[str]) -> list[Any]:
    """The layers with these uids that are still in the viewer."""
    layers = list(layers)
    return [ly for ly in (find_layer(layers, u) for u in uids) if ly is not None]
