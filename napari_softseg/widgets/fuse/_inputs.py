"""Which layers the *Fuse raters* widget offers as raters, and their snapshots for the worker.

A layer is offered as a rater when it is a 3D Labels layer (binary, confidence levels, painted
class codes or an integer label map) or, for two-class fusion, a 3D soft Image layer, and

* its role (:func:`napari_softseg._metadata.role`) is none or ``"rater"`` — images, model
  predictions, threshold results and every fusion output (roles :data:`OUTPUT_ROLES`) are not
  raters;
* it is not a fused map saved earlier and opened again: its sidecar (kept by the reader under
  :data:`~napari_softseg._metadata.SIDECAR_KEY`) carries no fusion provenance
  (:class:`softseg.sidecar.RaterSidecar` ``.fusion``), and it is not one of the per-class
  probability files ``<fused>_label-<k>.nii.gz`` listed in its fused map's sidecar.

Layers are identified by :func:`~napari_softseg._metadata.layer_uid` (napari's ``unique_id``,
which survives the Plugins-menu proxies), never by Python identity.

The snapshot (:func:`collect_raters`) copies each chosen layer's data on the main thread, with
its confidence scale and, for multi-class projects, its class names
(:data:`~napari_softseg._metadata.CLASS_KEY`, a list for layers painted with class codes
``(class - 1) * L + level``, :mod:`softseg.class_levels`). Nothing here imports Qt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softseg.confidence import ConfidenceScale
from softseg.errors import InputError

from napari_softseg._metadata import (
    CLASS_KEY,
    KIND_KEY,
    RATER_KEY,
    SIDECAR_KEY,
    SOURCE_KEY,
    layer_uid,
    role,
)
from napari_softseg._raters import layer_scale

__all__ = [
    "OUTPUT_ROLES",
    "RaterInput",
    "class_names_of",
    "class_tags",
    "collect_raters",
    "is_fusion_output",
    "is_rater_candidate",
    "layer_classes",
]

#: Roles of the layers the widget makes (never offered back as raters).
OUTPUT_ROLES = ("fused", "staple_probability", "disagreement")
#: Roles a rater layer may have (none: a layer made by hand or by another tool).
_RATER_ROLES = (None, "rater")
#: ``<fused>_label-<k>.nii[.gz]``: a class probability file next to a fused label map.
#: Separator of the sample data's per-class layer names ("rater-1 · grey matter").
_SEPARATOR = " · "
_CLASS_MAP_FILE = re.compile(r"^(?P<stem>.+)_label-(?P<k>\d+)(?P<suffix>\.nii(?:\.gz)?)$", re.I)


def _is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _is_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _fusion_of_sidecar(doc: Any, source: str) -> dict | None:
    from softseg.sidecar import parse_rater_sidecar

    if not isinstance(doc, Mapping):
        return None
    try:
        return parse_rater_sidecar(dict(doc), source=source).fusion
    except InputError:  # a malformed sidecar is the reader's business, not a fused map
        return None


def _listed_class_map(path: Path) -> bool:
    """True when ``path`` is a class probability file listed by its fused map's sidecar."""
    from softseg.sidecar import read_rater_sidecar

    match = _CLASS_MAP_FILE.match(path.name)
    if match is None:
        return False
    fused = path.with_name(match.group("stem") + match.group("suffix"))
    try:
        side = read_rater_sidecar(fused)
    except (InputError, OSError):
        return False
    if side is None or not isinstance(side.fusion, Mapping):
        return False
    listed = side.fusion.get("class_maps") or []
    return any(Path(str(p)).name == path.name for p in listed if isinstance(p, str))


def is_fusion_output(layer: Any) -> bool:
    """True for a layer a fusion made: a Fuse-widget output (role), or a fused map / class
    probability file written by the widget or ``softseg fuse`` and opened again."""
    meta = getattr(layer, "metadata", None) or {}
    if role(meta) in OUTPUT_ROLES:
        return True
    source = meta.get(SOURCE_KEY)
    if _fusion_of_sidecar(meta.get(SIDECAR_KEY), f"layer {getattr(layer, 'name', '')!r}: sidecar") is not None:
        return True
    return bool(source) and _listed_class_map(Path(str(source)))


def is_rater_candidate(layer: Any, *, multiclass: bool = False) -> bool:
    """Whether the widget offers ``layer`` as a rater (see the module notes).

    Parameters
    ----------
    layer : napari layer (or its Plugins-menu proxy)
    multiclass : bool
        Multi-class fusion takes Labels layers only (class codes or integer label maps).
    """
    if np.ndim(layer.data) != 3 or role(layer) not in _RATER_ROLES:
        return False
    if _is_labels(layer):
        kind_ok = True
    else:
        kind_ok = not multiclass and _is_image(layer) and layer.metadata.get(KIND_KEY) == "soft"
    return kind_ok and not is_fusion_output(layer)


def class_names_of(layer: Any) -> tuple[str, ...] | None:
    """Class names (index 1..K) of a layer painted with class codes, None for other layers.

    The names are the list under :data:`~napari_softseg._metadata.CLASS_KEY`; a per-class layer
    (``{"index": k, "name": ...}``) holds one class and is not a code layer.
    """
    names = (getattr(layer, "metadata", None) or {}).get(CLASS_KEY)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


@dataclass(frozen=True, eq=False)
class RaterInput:
    """A snapshot of one rater layer, taken on the main thread.

    Attributes
    ----------
    name : str
        Layer name (tables, messages).
    data : ndarray, shape (S, P, L)
        A private copy of the layer's data: 0/1, confidence levels, soft values in [0, 1],
        painted class codes or an integer label map.
    scale : ConfidenceScale or None
        Level -> soft value mapping of a level or code map; None for binary, soft and label maps.
    classes : tuple of str or None
        Class names (1..K) of a layer painted with class codes; None otherwise.
    uid : str
        :func:`~napari_softseg._metadata.layer_uid` of the layer (to notice its removal).
    uids : tuple of str
        Every layer the rater's map came from (its per-class layers); ``(uid,)`` by default.
    source : str or None
        The file the layer was read from.
    """

    name: str
    data: np.ndarray
    scale: ConfidenceScale | None = None
    classes: tuple[str, ...] | None = None
    uid: str = ""
    source: str | None = None
    uids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.uids and self.uid:
            object.__setattr__(self, "uids", (self.uid,))

    def soft(self) -> np.ndarray:
        """Two-class values in [0, 1] through the one conversion,
        :func:`softseg.confidence.as_rater_values` (uint8 0/1 binary, float32 otherwise)."""
        from softseg.confidence import as_rater_values

        values, _kind = as_rater_values(self.data, scale=self.scale, name=f"layer {self.name!r}")
        return values

    @property
    def n_levels(self) -> int:
        """Confidence levels per class (1 for label maps)."""
        return self.scale.n_levels if self.scale is not None else 1

    def label_map(self, n_classes: int) -> np.ndarray:
        """The painted class of each voxel (0..K, any confidence): :func:`softseg.class_levels.label_map`."""
        from softseg.class_levels import label_map

        data = self.data
        if self.n_levels == 1 and data.dtype.kind in "u" and data.size and int(data.max()) <= n_classes:
            return data  # one level: the codes are the classes (decode would copy 4 times for nothing)
        return label_map(data, n_classes=n_classes, n_levels=self.n_levels, name=f"layer {self.name!r}")

    def class_probabilities(self, n_classes: int) -> np.ndarray:
        """(K+1, *spatial) float32 class probabilities: each class's painted confidence
        (:func:`softseg.class_levels.class_soft_maps`), background = 1 - their sum
        (:func:`softseg.fusion.class_probabilities`)."""
        from softseg.class_levels import class_soft_maps
        from softseg.fusion import class_probabilities

        scale = self.scale if self.scale is not None else ConfidenceScale.binary()
        maps = class_soft_maps(self.data, scale=scale, n_classes=n_classes, name=f"layer {self.name!r}")
        return class_probabilities(maps, name=f"layer {self.name!r}")

    @property
    def has_confidence(self) -> bool:
        """True when the scale gives some level a value below 1 (painted confidence)."""
        return self.scale is not None and float(min(self.scale.values)) < 1.0


def collect_raters(layers: Sequence[Any], *, n_classes: int | None = None) -> list[RaterInput]:
    """Copy the chosen layers' data (main thread) after checking count, shapes and kinds.

    Parameters
    ----------
    layers : sequence of napari layers
    n_classes : int, optional
        K for multi-class fusion (Labels layers only; a layer with a confidence scale of more
        than one level must carry its class names: it was painted with class codes).

    Raises
    ------
    InputError
        Fewer than two layers, layers of different shapes, a layer that is not a rater map, a
        one-class confidence layer in a multi-class fusion, layers painted with different
        class lists.
    """
    layers = list(layers)
    if len(layers) < 2:
        raise InputError(
            f"fusion needs at least two rater layers; {len(layers)} selected. "
            "Select two or more in the 'Raters' list (Ctrl/Shift-click)"
        )
    first = layers[0]
    for lyr in layers:
        labels = _is_labels(lyr)
        if not (labels or _is_image(lyr)) or np.ndim(lyr.data) != 3:
            raise InputError(f"layer {lyr.name!r} is not a rater map (a 3D Labels layer or a soft Image layer)")
        if tuple(np.shape(lyr.data)) != tuple(np.shape(first.data)):
            raise InputError(
                f"rater layer {lyr.name!r} has shape {tuple(np.shape(lyr.data))} but {first.name!r} has "
                f"{tuple(np.shape(first.data))}; fuse raters of the same image only"
            )
        if n_classes is not None:
            if not labels:
                raise InputError(
                    f"layer {lyr.name!r} is a soft map; multi-class fusion takes Labels layers painted "
                    "with classes or integer label maps"
                )
            scale = layer_scale(lyr)
            if scale is not None and scale.n_levels > 1 and class_names_of(lyr) is None and _class_tag(lyr) is None:
                raise InputError(
                    f"layer {lyr.name!r} holds confidence levels of one structure, not classes; set "
                    "Classes to 1 to fuse it, or choose layers painted with classes"
                )
    if n_classes is not None and all(_class_tag(lyr) is not None for lyr in layers):
        return _per_class_raters(layers, int(n_classes))
    if n_classes is not None:
        painted = {class_names_of(lyr) for lyr in layers} - {None}
        if len(painted) > 1:
            lists = "; ".join(", ".join(names) for names in sorted(painted))
            raise InputError(f"the layers were painted with different classes ({lists}); fuse raters of one project")
    return [
        RaterInput(
            name=lyr.name,
            data=np.array(lyr.data, copy=True),
            scale=layer_scale(lyr) if _is_labels(lyr) else None,
            classes=class_names_of(lyr),
            uid=layer_uid(lyr),
            source=(lyr.metadata or {}).get(SOURCE_KEY),
        )
        for lyr in layers
    ]


def _class_tag(layer: Any) -> tuple[int, str] | None:
    """``(index, name)`` of a per-class layer (one class of one rater), None for other layers."""
    tag = (getattr(layer, "metadata", None) or {}).get(CLASS_KEY)
    if isinstance(tag, Mapping) and isinstance(tag.get("index"), int) and not isinstance(tag.get("index"), bool):
        return int(tag["index"]), str(tag.get("name") or f"class {tag['index']}")
    return None


def class_tags(layers: Iterable[Any]) -> set[int]:
    """The class indices of the per-class layers among ``layers`` (empty when some is not one)."""
    tags = [_class_tag(lyr) for lyr in layers]
    return set() if None in tags else {t[0] for t in tags}


def layer_classes(layers: Iterable[Any]) -> tuple[str, ...] | None:
    """The class names (1..K) the chosen layers hold, None when they hold one structure.

    Layers painted with class codes carry the list; per-class layers (one class of one rater
    each, e.g. the MNI sample's) that span two or more classes give K = their largest index.
    """
    layers = list(layers)
    for lyr in layers:
        names = class_names_of(lyr)
        if names is not None:
            return names
    tags = [_class_tag(lyr) for lyr in layers]
    if not tags or None in tags or len({t[0] for t in tags}) < 2:
        return None
    k = max(t[0] for t in tags)
    found = dict(tags)
    return tuple(found.get(c, f"class {c}") for c in range(1, k + 1))


def _rater_key(layer: Any) -> str:
    from napari_softseg._raters import rater_id

    return rater_id(layer) if RATER_KEY in (layer.metadata or {}) else str(layer.name).split(_SEPARATOR)[0]


def _per_class_raters(layers: Sequence[Any], n_classes: int) -> list[RaterInput]:
    """Per-class layers grouped by rater, each rater's classes as one code map
    (:func:`softseg.class_levels.codes_from_class_level_maps`, which refuses overlapping classes)."""
    from softseg.class_levels import codes_from_class_level_maps

    groups: dict[str, dict[int, Any]] = {}
    for lyr in layers:
        index, name = _class_tag(lyr)
        if not 1 <= index <= n_classes:
            raise InputError(f"layer {lyr.name!r} holds class {index} ({name}) but the fusion has {n_classes} classes")
        rater = groups.setdefault(_rater_key(lyr), {})
        if index in rater:
            raise InputError(f"layers {rater[index].name!r} and {lyr.name!r} hold the same class of one rater; choose one")
        rater[index] = lyr
    out = []
    names = layer_classes(layers) or tuple(f"class {c}" for c in range(1, n_classes + 1))
    for key, by_class in groups.items():
        missing = [names[c - 1] for c in range(1, n_classes + 1) if c not in by_class]
        if missing:
            raise InputError(f"rater {key!r} has no layer for {', '.join(missing)}; select each rater's layer of every class")
        ordered = [by_class[c] for c in range(1, n_classes + 1)]
        scales = {None if s is None else tuple(s.values) for s in map(layer_scale, ordered)}
        if len(scales) > 1:
            raise InputError(f"rater {key!r}: the class layers use different confidence scales; use one scale per rater")
        scale = layer_scale(ordered[0])
        n_levels = scale.n_levels if scale is not None else 1
        codes = codes_from_class_level_maps([np.asarray(lyr.data) for lyr in ordered], n_levels=n_levels,
                                            names=[f"layer {lyr.name!r}" for lyr in ordered])
        common = {str(lyr.name).split(_SEPARATOR)[0] for lyr in ordered}
        out.append(RaterInput(
            name=common.pop() if len(common) == 1 else f"rater {key}",
            data=codes,
            scale=scale,
            classes=names,
            uid=layer_uid(ordered[0]),
            uids=tuple(layer_uid(lyr) for lyr in ordered),
            source=(ordered[0].metadata or {}).get(SOURCE_KEY),
        ))
    if len(out) < 2:
        raise InputError(f"the chosen class layers belong to {len(out)} rater; fusion needs at least two raters")
    return out
