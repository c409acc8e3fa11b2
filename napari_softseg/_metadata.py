"""Every ``layer.metadata`` key the plugin reads or writes, and the accessors that use them.

One module owns the keys (DESIGN.md decisions 8 and 9): widgets import the constants and
helpers from here and never spell a key themselves.

Layer identity
--------------
napari hands a plugin widget (opened from *Plugins > SoftSeg*) a *wrapped* viewer: the layer
objects read back from ``viewer.layers`` are proxies, not the objects the widget stored, so
``a is b`` and ``layer in my_list`` fail. Widgets therefore identify a layer by

* :func:`layer_uid`: napari's own ``Layer.unique_id`` (a UUID that the proxy forwards), for
  "this exact layer" (selections, "the overlay of that prediction");
* :func:`role`: a role string in the metadata (:data:`ROLE_KEY`) for "what this layer is"
  (a rater, a fused map, a threshold overlay), which also survives saving and reopening
  through the plugin's reader and writer.

:func:`find_layer` looks a uid up in ``viewer.layers``; it returns ``None`` once the layer was
removed, so a widget never draws from a removed layer.

Importing this module imports neither napari nor Qt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CLASS_KEY",
    "CONFIDENCE_KEY",
    "GROUP_KEY",
    "GEOMETRY_KEY",
    "HUE_KEY",
    "KIND_KEY",
    "OWNER_KEY",
    "PREANNOTATION_KEY",
    "PREDICTION_KEY",
    "RATER_KEY",
    "ROLES",
    "ROLE_KEY",
    "SIDECAR_KEY",
    "SOURCE_KEY",
    "UNCERTAINTY_KEY",
    "find_layer",
    "has_role",
    "layer_uid",
    "layers_with_role",
    "prediction_card",
    "prediction_threshold",
    "role",
    "set_role",
]

# --- keys written by the reader / sample data (kept for files saved by earlier releases) ------
#: Path the layer was read from (``None`` for generated data).
SOURCE_KEY = "source_path"
#: ``"image"``, ``"soft"`` or ``"labels"`` (napari_softseg._layers.KINDS).
KIND_KEY = "softseg_kind"
#: Rater id of a rater label map.
RATER_KEY = "softseg_rater"
#: Confidence scale of a level map (same key as ``softseg.confidence.METADATA_KEY``).
CONFIDENCE_KEY = "softseg_confidence"
#: The JSON sidecar read beside a file.
SIDECAR_KEY = "softseg_sidecar"
#: Original geometry (same key as ``softseg.geometry.METADATA_KEY``).
GEOMETRY_KEY = "softseg_geometry"
#: A model's prediction: threshold, candidate, model path, provenance.
PREDICTION_KEY = "softseg_prediction"
#: Class (structure) a layer holds in a multi-class project: ``{"index": k, "name": ...}``.
CLASS_KEY = "softseg_class"
#: Palette index of a rater's colour (``napari_softseg._raters.PALETTE``); kept through autosave
#: and restore so a rater keeps their colour.
HUE_KEY = "softseg_hue"
#: A rater layer started from a model's prediction (issue 17): ``softseg.preannotate.
#: preannotation_record`` (model, source, rule, model_voxels, rater_changed_voxels).
PREANNOTATION_KEY = "softseg_preannotation"
#: An uncertainty map of a prediction (role ``"uncertainty"``, issue 15 #3): ``{"map": "entropy" |
#: "variance", "method", "passes", "seed", "unit", "index": class index or None, "class"}``.
UNCERTAINTY_KEY = "softseg_uncertainty"

# --- identity ---------------------------------------------------------------------------------
#: What a layer is, for widgets (see :data:`ROLES`).
ROLE_KEY = "softseg_role"
#: ``layer_uid`` of the layer this one was derived from (an overlay's prediction, ...).
OWNER_KEY = "softseg_owner"
#: One id (a uuid string) shared by the layers of one K-class prediction run: its per-class soft
#: layers (role "prediction", each with ``CLASS_KEY = {"index": k, "name": ..., "classes": [...]}``)
#: and its argmax layer (role "prediction_labels"). Widgets group a K-class prediction by it.
GROUP_KEY = "softseg_group"

#: Roles a layer can have. Outputs of a widget are never offered back to it as inputs.
ROLES = (
    "image",  # an MR image
    "rater",  # a rater's painted level map (Labels)
    "fused",  # a fusion result (Fuse widget / softseg fuse)
    "staple_probability",  # STAPLE's probability map
    "disagreement",  # per-voxel disagreement (entropy) map
    "prediction",  # a model's soft prediction (one layer per class for a K-class model)
    "prediction_labels",  # a K-class prediction's argmax label map (Labels)
    "uncertainty",  # a prediction's uncertainty map (MC dropout / TTA)
    "threshold_overlay",  # Threshold widget's live binarised overlay
    "threshold_result",  # Threshold widget's applied (saved) binarised result
    "compare_view",  # a layer shown by the Compare widget's grid view
)


def layer_uid(layer: Any) -> str:
    """A string that identifies ``layer`` through napari's proxies: ``str(layer.unique_id)``."""
    return str(layer.unique_id)


def find_layer(layers: Iterable[Any], uid: str | None) -> Any | None:
    """The layer of ``layers`` (e.g. ``viewer.layers``) whose :func:`layer_uid` is ``uid``."""
    if uid is None:
        return None
    for layer in layers:
        if layer_uid(layer) == uid:
            return layer
    return None


def role(layer_or_metadata: Any) -> str | None:
    """The role of a layer (or of its metadata mapping), ``None`` when it has none."""
    meta = layer_or_metadata if isinstance(layer_or_metadata, Mapping) else getattr(layer_or_metadata, "metadata", None)
    if not isinstance(meta, Mapping):
        return None
    value = meta.get(ROLE_KEY)
    return value if isinstance(value, str) else None


def has_role(layer: Any, *roles: str) -> bool:
    """True when the layer's role is one of ``roles``."""
    return role(layer) in roles


def set_role(metadata: dict[str, Any], value: str, *, owner: str | None = None) -> dict[str, Any]:
    """Write a role (and optionally the uid of the layer it derives from) into ``metadata``.

    Returns ``metadata`` (modified in place) for use in ``add_image(..., metadata=...)``.

    Raises
    ------
    ValueError
        ``value`` is not one of :data:`ROLES`.
    """
    if value not in ROLES:
        raise ValueError(f"unknown layer role {value!r}; known: {', '.join(ROLES)}")
    metadata[ROLE_KEY] = value
    if owner is not None:
        metadata[OWNER_KEY] = owner
    return metadata


def layers_with_role(layers: Iterable[Any], *roles: str) -> list[Any]:
    """The layers whose role is one of ``roles``, in order."""
    return [layer for layer in layers if role(layer) in roles]


def prediction_card(layer: Any) -> Any:
    """The model card (:class:`softseg.card.ModelCard`) of a prediction layer, ``None`` for a
    layer that is not a model's prediction. The Predict widget writes it (key ``"card"`` of
    :data:`PREDICTION_KEY`); a malformed one raises :class:`~softseg.errors.InputError`."""
    from softseg.card import card_from_document

    info = (getattr(layer, "metadata", None) or {}).get(PREDICTION_KEY)
    doc = info.get("card") if isinstance(info, Mapping) else None
    return None if doc is None else card_from_document(doc, source=f"layer {layer.name!r}: model card")


def prediction_threshold(layer: Any, *, class_index: int = 0) -> float:
    """The optimal threshold of a prediction layer's model (``class_index`` of its classes).

    Raises :class:`~softseg.errors.InputError` when the layer holds no model prediction: there
    is no silent 0.5."""
    from softseg.errors import InputError

    card = prediction_card(layer)
    if card is None:
        raise InputError(f"layer {layer.name!r} is not a model's prediction; it has no optimal threshold")
    return float(card.thresholds[class_index])
