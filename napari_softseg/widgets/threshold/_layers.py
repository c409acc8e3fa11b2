"""The Threshold dock's layers: one live overlay per thresholded soft layer, one result layer
per prediction after *Apply*; both found again by role and owner uid, never by identity.

Overlay (role ``threshold_overlay``, ``OWNER_KEY`` = the soft layer's uid): a uint8 Labels
layer whose array the dock rewrites **in place** on every slider move (no new layer, no new
array), drawn in the candidate's colour (a K-class prediction's class: its class colour),
transparent at 0. Result (role ``threshold_result``, same owner): *Apply* puts the current
binarised map there, updating the one result layer of that prediction instead of stacking new
ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_softseg._metadata import (
    CLASS_KEY,
    GEOMETRY_KEY,
    OWNER_KEY,
    PREDICTION_KEY,
    SOURCE_KEY,
    find_layer,
    layer_uid,
    layers_with_role,
    set_role,
)

__all__ = ["Entry", "THRESHOLD_KEY", "add_overlay", "binary_colormap", "put_result"]

#: What an applied result is: ``{"source": name, "low": t, "high": t2 | None, "argmax": bool}``.
THRESHOLD_KEY = "softseg_threshold"


@dataclass(eq=False)
class Entry:
    """One thresholded soft layer (a single-class prediction, or one class of a K-class one)."""

    uid: str  # the soft layer
    name: str  # its layer name (keys of the readouts)
    label: str  # legend label: the candidate, or "<candidate> · <class>"
    color: tuple[float, float, float]
    data: np.ndarray  # the layer's array (read only)
    spacing: tuple[float, ...]
    soft_volume_ml: float
    optimum: float | None  # the model's optimal threshold; None: not a model's prediction
    overlay_uid: str
    buffer: np.ndarray  # the overlay's own uint8 array, rewritten in place
    class_index: int | None = None  # 1..K for a class of a K-class prediction
    box: tuple[slice, ...] | None = None
    curves: dict[str, Any] = field(default_factory=dict)
    on_data: Any = None  # the callback connected to the soft layer's data event


def binary_colormap(color: Any) -> dict[Any, Any]:
    """A Labels colormap: 0 (and unknown) transparent, 1 in ``color``."""
    return {0: "transparent", 1: color, None: "transparent"}


def add_overlay(viewer: Any, layer: Any, *, name: str, color: Any, contour: bool) -> Any:
    """Add the live overlay of soft ``layer`` (see the module docstring); returns the layer."""
    meta = set_role({}, "threshold_overlay", owner=layer_uid(layer))
    overlay = viewer.add_labels(
        np.zeros(np.shape(layer.data), dtype=np.uint8),
        name=name,
        scale=layer.scale,
        translate=layer.translate,
        opacity=0.7,
        colormap=binary_colormap(color),
        metadata=meta,
    )
    overlay.editable = False
    overlay.contour = 1 if contour else 0
    return overlay


def put_result(viewer: Any, layer: Any, mask: np.ndarray, *, name: str, color: Any,
               threshold: dict[str, Any]) -> Any:
    """Show ``mask`` as soft ``layer``'s one result layer: update it when there is one, else
    add it. Returns the result layer."""
    owner = layer_uid(layer)
    meta = {k: v for k, v in (layer.metadata or {}).items()
            if k in (GEOMETRY_KEY, SOURCE_KEY, CLASS_KEY)}
    meta[THRESHOLD_KEY] = dict(threshold)
    set_role(meta, "threshold_result", owner=owner)
    meta.pop(PREDICTION_KEY, None)
    for old in layers_with_role(viewer.layers, "threshold_result"):
        if (old.metadata or {}).get(OWNER_KEY) == owner and np.shape(old.data) == mask.shape:
            old.metadata = meta
            old.data = mask
            old.name = name
            return old
    return viewer.add_labels(mask, name=name, scale=layer.scale, translate=layer.translate,
                             colormap=binary_colormap(color), opacity=0.6, metadata=meta)


def result_of(viewer: Any, owner: str) -> Any | None:
    """The result layer of the soft layer with uid ``owner``, or None."""
    for old in layers_with_role(viewer.layers, "threshold_result"):
        if (old.metadata or {}).get(OWNER_KEY) == owner:
            return old
    return None


def overlay_of(viewer: Any, entry: Entry) -> Any | None:
    """The entry's overlay layer while it is in the viewer."""
    return find_layer(viewer.layers, entry.overlay_uid)
