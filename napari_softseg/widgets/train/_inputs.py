"""Which open layers the Train dock offers, and the main-thread snapshot a run trains on.

Layers are identified by :func:`napari_softseg._metadata.layer_uid` (napari's ``unique_id``,
which survives the Plugins menu's wrapped viewer) and judged by their role and kind
(:mod:`napari_softseg._metadata`), never by Python identity:

* **image channels**: :func:`napari_softseg._prediction.is_input_image` (3D, non-RGB Image
  layers that are images: role ``"image"`` or none, kind not ``"soft"``) — never a widget's
  output (prediction, fused map, overlay ...);
* **targets**: Labels layers that a rater painted or a fusion made (role ``"rater"``,
  ``"fused"`` or none), and soft Image layers that are labels (kind ``"soft"``, a fused map, a
  STAPLE probability) — never an image (issue 11 #11), a prediction or an overlay.

:func:`snapshot` copies the chosen layers' data in the main thread (the user may paint while
the worker writes the training folder) and refuses bad choices with one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_softseg._metadata import (
    CONFIDENCE_KEY,
    KIND_KEY,
    PREANNOTATION_KEY,
    SOURCE_KEY,
    find_layer,
    layer_uid,
    role,
)
from napari_softseg._prediction import is_input_image
from softseg.errors import InputError

__all__ = [
    "LayerSnapshot",
    "TARGET_IMAGE_ROLES",
    "TARGET_LABEL_ROLES",
    "image_choices",
    "is_target_candidate",
    "snapshot",
    "target_choices",
]

#: Roles of Labels layers offered as targets.
TARGET_LABEL_ROLES = (None, "rater", "fused")
#: Roles of Image layers offered as targets (soft labels: a fused map, STAPLE's probability, or a
#: soft map without role whose kind is ``"soft"``).
TARGET_IMAGE_ROLES = ("fused", "staple_probability")


def _is(layer: Any, kind: str) -> bool:
    from napari.layers import Image, Labels

    return isinstance(layer, Image if kind == "image" else Labels)


def is_target_candidate(layer: Any) -> bool:
    """Whether the dock offers ``layer`` as a training target (see the module notes)."""
    if np.ndim(layer.data) != 3:
        return False
    r = role(layer)
    if _is(layer, "labels"):
        return r in TARGET_LABEL_ROLES
    if _is(layer, "image") and not getattr(layer, "rgb", False):
        if r in TARGET_IMAGE_ROLES:
            return True
        return r in (None, "rater") and layer.metadata.get(KIND_KEY) == "soft"
    return False


def image_choices(layers: Iterable[Any]) -> list[tuple[str, str]]:
    """``(name, uid)`` of the layers offered as image channels, in layer-list order."""
    return [(lyr.name, layer_uid(lyr)) for lyr in layers if is_input_image(lyr)]


def target_choices(layers: Iterable[Any]) -> list[tuple[str, str]]:
    """``(name, uid)`` of the layers offered as targets, in layer-list order."""
    return [(lyr.name, layer_uid(lyr)) for lyr in layers if is_target_candidate(lyr)]


@dataclass
class LayerSnapshot:
    """Copies of the chosen layers, taken in the main thread (what the worker writes).

    Attributes
    ----------
    channels, targets : dict of str to ndarray (S, P, L)
        Layer name -> copied data, in the user's order.
    sidecars : dict of str to dict
        Target name -> its sidecar entries (the painted levels' confidence scale, a
        pre-annotation record).
    geometry : softseg.geometry.DisplayGeometry
        Of the first image layer.
    source : dict
        Layer names and files, recorded in the training folder's ``dataset.json``.
    image_uids : list of str
        The image layers' uids (to predict on them after training).
    preannotated : list of str
        Targets a model made that the rater has not corrected.
    """

    channels: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    sidecars: dict[str, dict[str, Any]]
    geometry: Any
    source: dict[str, Any]
    image_uids: list[str] = field(default_factory=list)
    preannotated: list[str] = field(default_factory=list)

    @property
    def image_name(self) -> str:
        return next(iter(self.channels))


def _resolve(layers: Any, uids: Sequence[str], what: str) -> list[Any]:
    found = []
    for uid in uids:
        lyr = find_layer(layers, uid)
        if lyr is None:
            raise InputError(f"a chosen {what} layer was removed; choose again")
        found.append(lyr)
    return found


def snapshot(layers: Any, image_uids: Sequence[str], target_uids: Sequence[str], *,
             candidate: str) -> LayerSnapshot:
    """Copy the chosen layers (main thread).

    Parameters
    ----------
    layers : napari LayerList (or its proxy)
    image_uids, target_uids : sequence of str
        :func:`~napari_softseg._metadata.layer_uid` of the chosen layers, in order.
    candidate : str
        Named in the message when no target is chosen.

    Raises
    ------
    InputError
        No image or no target chosen, a chosen layer removed or of another shape.
    """
    from napari_softseg._layers import layer_geometry

    images = _resolve(layers, image_uids, "image")
    targets = [t for t in _resolve(layers, target_uids, "target")
               if layer_uid(t) not in set(image_uids)]
    if not images:
        raise InputError("choose one or more image layers as input channels")
    if not targets:
        raise InputError(
            f"candidate {candidate!r} trains from labels: choose rater layers, a fused layer or a "
            "soft label as target"
        )
    shape = tuple(np.shape(images[0].data))
    for lyr in images[1:] + targets:
        if tuple(np.shape(lyr.data)) != shape:
            raise InputError(
                f"layer {lyr.name!r} has shape {tuple(np.shape(lyr.data))} but the image "
                f"{images[0].name!r} has {shape}; choose layers of one volume"
            )
    geometry = layer_geometry(images[0])
    channels = {lyr.name: np.array(lyr.data, copy=True) for lyr in images}
    tgts: dict[str, np.ndarray] = {}
    sidecars: dict[str, dict[str, Any]] = {}
    preannotated: list[str] = []
    for lyr in targets:
        tgts[lyr.name] = np.array(lyr.data, copy=True)
        side: dict[str, Any] = {}
        scale = lyr.metadata.get(CONFIDENCE_KEY)
        if scale is not None:
            side[CONFIDENCE_KEY] = scale.as_dict() if hasattr(scale, "as_dict") else dict(scale)
        record = lyr.metadata.get(PREANNOTATION_KEY)
        if isinstance(record, dict):
            side["preannotated_by"] = record.get("model")
            side["preannotation"] = dict(record)
            if not record.get("rater_changed_voxels"):
                preannotated.append(lyr.name)
        if side:
            sidecars[lyr.name] = side
    return LayerSnapshot(
        channels=channels,
        targets=tgts,
        sidecars=sidecars,
        geometry=geometry,
        source={
            "images": [lyr.name for lyr in images],
            "targets": [lyr.name for lyr in targets],
            "files": [str(lyr.metadata.get(SOURCE_KEY) or "") for lyr in images + targets],
        },
        image_uids=[layer_uid(lyr) for lyr in images],
        preannotated=preannotated,
    )
