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

**K classes** (issue 14, DESIGN decision 11): a target may hold several classes, either

* a *code layer*: one rater's Labels layer painted with class codes ``(class - 1) * L + level``
  (``CLASS_KEY`` = the list of class names, ``CONFIDENCE_KEY`` = the scale), split into per-class
  level maps by :func:`softseg.class_levels.class_level_maps`; or
* *per-class layers* of one rater (``CLASS_KEY = {"index": k, "name": ...}``, e.g. the MNI
  sample's ``rater-1 · grey matter``), grouped by rater (``RATER_KEY``, else the name before
  ``" · "``) into that rater's K maps.

The snapshot then holds ``(K, S, P, L)`` per rater and the class names
(:attr:`LayerSnapshot.classes`), which :func:`softseg.layers_dataset.write_layers_dataset` writes
as per-class rater files. Mixing one-structure and multi-class targets, raters with other class
lists, or a rater missing a class is refused with one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_softseg._metadata import (
    CLASS_KEY,
    CONFIDENCE_KEY,
    KIND_KEY,
    PREANNOTATION_KEY,
    RATER_KEY,
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
    classes : tuple of str or None
        K >= 2 class names (index 1..K) when the targets hold several classes; each target is
        then ``(K, S, P, L)`` (see the module notes). ``None``: one structure.
    """

    channels: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    sidecars: dict[str, dict[str, Any]]
    geometry: Any
    source: dict[str, Any]
    image_uids: list[str] = field(default_factory=list)
    preannotated: list[str] = field(default_factory=list)
    classes: tuple[str, ...] | None = None

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
    classes, groups = _class_groups(targets)
    for name, members in groups.items():
        if classes is None:
            (lyr,) = members
            tgts[name] = np.array(lyr.data, copy=True)
            scale = lyr.metadata.get(CONFIDENCE_KEY)
        else:
            tgts[name], scale = _class_maps(name, members, classes)
        side: dict[str, Any] = {}
        if scale is not None:
            side[CONFIDENCE_KEY] = scale.as_dict() if hasattr(scale, "as_dict") else dict(scale)
        for lyr in members:
            record = lyr.metadata.get(PREANNOTATION_KEY)
            if isinstance(record, dict):
                side["preannotated_by"] = record.get("model")
                side["preannotation"] = dict(record)
                if not record.get("rater_changed_voxels") and name not in preannotated:
                    preannotated.append(name)
        if side:
            sidecars[name] = side
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
        classes=classes,
    )


def _code_classes(layer: Any) -> tuple[str, ...] | None:
    """The class names of a code layer (``CLASS_KEY`` a list of K >= 2 names), else None."""
    names = layer.metadata.get(CLASS_KEY)
    if isinstance(names, (list, tuple)) and len(names) >= 2 and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _class_part(layer: Any) -> tuple[str, int, str] | None:
    """``(rater, index, name)`` of one class's layer of a rater (``CLASS_KEY`` a dict), else None."""
    entry = layer.metadata.get(CLASS_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return None
    try:
        index = int(entry["index"])
    except (KeyError, TypeError, ValueError):
        return None
    prefix = layer.name.split(" · ")[0] if " · " in layer.name else layer.name
    rater = layer.metadata.get(RATER_KEY)
    return (prefix if rater is None else f"{prefix}\0{rater}"), index, entry["name"]


def _class_groups(targets: Sequence[Any]) -> tuple[tuple[str, ...] | None, dict[str, list[Any]]]:
    """The targets' class names (None: one structure) and target name -> its layers.

    One structure: one layer per target (unchanged). K classes: a code layer is one target; the
    per-class layers of one rater are one target, in class order.

    Raises
    ------
    InputError
        One-structure and multi-class targets mixed; raters with other class lists; a rater
        with a class chosen twice.
    """
    single, coded, parts = [], [], {}
    for lyr in targets:
        part = _class_part(lyr)
        if _code_classes(lyr) is not None:
            coded.append(lyr)
        elif part is not None:
            parts.setdefault(part[0], []).append((part[1], part[2], lyr))
        else:
            single.append(lyr)
    if not coded and not parts:
        return None, {lyr.name: [lyr] for lyr in single}
    lists: dict[str, tuple[str, ...]] = {lyr.name: _code_classes(lyr) for lyr in coded}
    groups: dict[str, list[Any]] = {lyr.name: [lyr] for lyr in coded}
    for key, members in parts.items():
        members.sort(key=lambda m: m[0])
        name = key.split("\0")[0]
        indices = [m[0] for m in members]
        if len(set(indices)) != len(indices):
            raise InputError(f"{name}: a class is chosen twice ({', '.join(m[2].name for m in members)}); "
                             "choose each class layer of a rater once")
        lists[name] = tuple(m[1] for m in members)
        groups[name] = [m[2] for m in members]
    if single:
        raise InputError(
            f"the targets mix one-structure layers ({', '.join(lyr.name for lyr in single)}) with "
            f"multi-class layers ({', '.join(groups)}); choose one kind"
        )
    if len(groups) != len(coded) + len(parts):
        raise InputError(f"two targets are named alike ({', '.join(groups)}); rename a layer")
    first = next(iter(lists))
    for name, names in lists.items():
        if names != lists[first]:
            raise InputError(
                f"{name} holds the classes {', '.join(names)} but {first} holds "
                f"{', '.join(lists[first])}; choose the same classes for every rater"
            )
    classes = lists[first]
    if len(classes) == 1:  # one class of a multi-class set chosen: one structure, as before
        return None, groups
    return classes, groups


def _scale_of(layer: Any) -> Any:
    from softseg.confidence import ConfidenceScale

    scale = layer.metadata.get(CONFIDENCE_KEY)
    if scale is None or isinstance(scale, ConfidenceScale):
        return scale
    return ConfidenceScale.from_dict(dict(scale))


def _class_maps(name: str, members: list[Any], classes: tuple[str, ...]) -> tuple[np.ndarray, Any]:
    """One rater's ``(K, S, P, L)`` maps and the scale they are painted with (None: soft/binary).

    A code layer: its per-class level maps (:func:`softseg.class_levels.class_level_maps`).
    Per-class layers: stacked as painted when all share one scale and are integer; otherwise
    each through its own scale to values in [0, 1] (:func:`softseg.confidence.as_rater_values`).
    """
    from softseg.class_levels import class_level_maps
    from softseg.confidence import as_rater_values

    if len(members) == 1 and _code_classes(members[0]) is not None:
        (lyr,) = members
        scale = _scale_of(lyr)
        if scale is None:
            raise InputError(f"{name}: a multi-class rater layer needs its confidence scale; "
                             "add it from the Soft annotation dock")
        maps = class_level_maps(np.asarray(lyr.data), n_classes=len(classes),
                                n_levels=scale.n_levels, name=name)
        return maps, scale
    scales = [_scale_of(lyr) for lyr in members]
    integer = all(np.asarray(lyr.data).dtype.kind in "iub" for lyr in members)
    if integer and all(sc == scales[0] for sc in scales):
        return np.stack([np.array(lyr.data, copy=True) for lyr in members]), scales[0]
    soft = [as_rater_values(np.asarray(lyr.data), scale=sc, name=lyr.name)[0].astype(np.float32)
            for lyr, sc in zip(members, scales)]
    return np.stack(soft), None
