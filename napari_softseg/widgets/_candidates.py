"""Predictions and references in the viewer, as the Threshold and Compare candidates docks see
them. Qt-free; napari is imported lazily.

Candidates
    A *candidate* is what a dock compares or thresholds: one single-class soft prediction layer,
    or one K-class prediction (``CONTRACTS.md``, "K-class predictions in napari": K soft Image
    layers with role ``prediction``, one per class, with ``CLASS_KEY = {"index", "name",
    "classes"}``, and an argmax Labels layer with role ``prediction_labels``, all sharing one
    ``GROUP_KEY``). Layers are identified by :func:`~napari_softseg._metadata.layer_uid` and
    roles, never by Python identity (DESIGN.md decision 9); the docks' own outputs
    (:data:`OUTPUT_ROLES`) are never offered back to them.

Names and colours
    :func:`candidate_name` is the model card's candidate (``"softseg"``) or, for a soft map that
    is not a model's prediction, the layer's name; its colour is
    :func:`softseg.palette.candidate_color` (one colour per candidate in every view).
    :func:`short_labels` names candidates without repeating what they share (``"softseg"``,
    not ``"image · softseg"``).

References
    :func:`reference_choices` lists what a dock may measure against: single-class maps (binary,
    soft, or painted levels through the rater's confidence scale), and for K classes an integer
    label map, a layer painted with class codes (:mod:`softseg.class_levels`), or a complete
    group of per-class maps (``truth · grey matter``, ``truth · white matter`` ...).
    :func:`default_reference` prefers a truth or fused layer, never the MR image.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg import palette
from softseg.errors import InputError

from napari_softseg._metadata import (
    CLASS_KEY,
    CONFIDENCE_KEY,
    GROUP_KEY,
    PREDICTION_KEY,
    find_layer,
    layer_uid,
    prediction_card,
    prediction_threshold,
    role,
)

__all__ = [
    "NOT_PREDICTIONS",
    "OUTPUT_ROLES",
    "Candidate",
    "ReferenceChoice",
    "candidate_name",
    "candidates",
    "class_color",
    "class_info",
    "default_reference",
    "read_reference",
    "reference_choices",
    "short_labels",
    "threshold_of",
]

#: Layers the Threshold and Compare docks add; never offered to them as inputs.
OUTPUT_ROLES = ("threshold_overlay", "threshold_result", "compare_view")
#: Roles that are never a soft prediction to threshold or compare.
NOT_PREDICTIONS = (*OUTPUT_ROLES, "image", "rater", "disagreement", "uncertainty",
                   "prediction_labels")
_SEPARATOR = " · "
_TRUTH_WORDS = re.compile(r"\b(truth|reference|ground[ _-]?truth|gt|manual|mask)\b", re.I)


# ------------------------------------------------------------------------------------ classes
def class_info(layer: Any) -> tuple[int, str, tuple[str, ...] | None] | None:
    """``(index 1..K, class name, all class names or None)`` of a per-class layer, else None."""
    info = (getattr(layer, "metadata", None) or {}).get(CLASS_KEY)
    if not isinstance(info, Mapping) or "index" not in info:
        return None
    names = info.get("classes")
    return int(info["index"]), str(info.get("name", f"class {info['index']}")), (
        tuple(str(n) for n in names) if names else None)


def _class_list(layer: Any) -> tuple[str, ...] | None:
    """The class names of a layer that holds several classes (label map / class codes)."""
    info = (getattr(layer, "metadata", None) or {}).get(CLASS_KEY)
    if isinstance(info, (list, tuple)) and info:
        return tuple(str(n) for n in info)
    return None


def class_color(layer: Any, index: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of class ``index`` of a K-class prediction: the colour its argmax layer
    (or, without one, the class's own soft layer) shows, so an overlay matches what the
    prediction looks like; a hue of the rater palette when neither says."""
    from napari_softseg._raters import PALETTE

    try:
        if hasattr(layer, "colormap") and hasattr(layer.colormap, "map"):
            if _is_labels(layer):
                rgba = np.asarray(layer.colormap.map(np.array([index])))[0]
            else:
                rgba = np.asarray(layer.colormap.map(np.array([1.0])))[0]
            if rgba[3] > 0:
                return tuple(float(c) for c in rgba[:3])  # type: ignore[return-value]
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    return PALETTE[(index - 1) % len(PALETTE)]


# --------------------------------------------------------------------------------- candidates
def _is_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def candidate_name(layer: Any) -> str:
    """The candidate a prediction layer shows: its model card's ``candidate.name``, else the
    ``candidate`` the layer's prediction metadata names, else the layer's name."""
    try:
        card = prediction_card(layer)
    except InputError:
        card = None
    if card is not None:
        return card.candidate.name
    info = (getattr(layer, "metadata", None) or {}).get(PREDICTION_KEY)
    if isinstance(info, Mapping) and info.get("candidate"):
        return str(info["candidate"])
    return str(layer.name)


@dataclass(frozen=True)
class Candidate:
    """One thing to threshold or compare (see the module docstring).

    Attributes
    ----------
    key : str
        The layer's uid, or ``"group:<GROUP_KEY>"`` for a K-class prediction.
    title : str
        Shown in the lists: the layer's name, or ``"<image> · <candidate> (K classes)"``.
    name : str
        The candidate (:func:`candidate_name`): its colour's key.
    uids : tuple of str
        The soft layers, in class order 1..K (one for a single-class prediction).
    classes : tuple of str or None
        K-class: the class names 1..K.
    labels_uid : str or None
        K-class: the argmax layer, when there is one.
    """

    key: str
    title: str
    name: str
    uids: tuple[str, ...]
    classes: tuple[str, ...] | None = None
    labels_uid: str | None = None

    @property
    def multiclass(self) -> bool:
        return self.classes is not None

    @property
    def color(self) -> str:
        """``"#RRGGBB"``: :func:`softseg.palette.candidate_color` of :attr:`name`."""
        return palette.candidate_color(self.name)

    @property
    def rgb(self) -> tuple[float, float, float]:
        """:attr:`color` as RGB in [0, 1]."""
        return palette.candidate_rgb(self.name)

    def layers(self, viewer_layers: Iterable[Any]) -> list[Any]:
        """The soft layers (class order) still in the viewer; raises InputError when one went."""
        found = [find_layer(viewer_layers, uid) for uid in self.uids]
        if any(layer is None for layer in found):
            raise InputError(f"a layer of {self.title!r} was removed; choose the prediction again")
        return found


def _group_title(layers: Sequence[Any], classes: Sequence[str]) -> str:
    name = str(layers[0].name)
    suffix = _SEPARATOR + str(class_info(layers[0])[1])
    base = name[: -len(suffix)] if name.endswith(suffix) else name
    return f"{base} ({len(classes)} classes)"


def candidates(layers: Iterable[Any]) -> list[Candidate]:
    """Every candidate among ``layers`` (``viewer.layers``), in layer order.

    Single-class: 2D+ floating-point Image layers whose role is not one of
    :data:`NOT_PREDICTIONS`, that are not part of a K-class group and not one class of a
    reference set (a ``CLASS_KEY`` layer without the ``prediction`` role, e.g. the MNI
    sample's ``truth · <class>``). K-class: one candidate per ``GROUP_KEY`` of role
    ``prediction`` layers with ``CLASS_KEY``; its classes come from ``CLASS_KEY["classes"]``
    (else the model card), each class's layer is found by its index.
    """
    layers = list(layers)
    out: list[Candidate] = []
    groups: dict[str, list[Any]] = {}
    labels: dict[str, str] = {}
    order: list[str] = []
    for layer in layers:
        meta = getattr(layer, "metadata", None) or {}
        group = meta.get(GROUP_KEY)
        if group is not None and role(layer) == "prediction_labels":
            labels[str(group)] = layer_uid(layer)
            continue
        if group is not None and class_info(layer) is not None and _is_image(layer):
            key = str(group)
            if key not in groups:
                groups[key] = []
                order.append(key)
                out.append(Candidate(key=f"group:{key}", title="", name="", uids=()))
            groups[key].append(layer)
            continue
        if not _is_image(layer) or role(layer) in NOT_PREDICTIONS or np.ndim(layer.data) < 2:
            continue
        if getattr(layer, "rgb", False) or np.dtype(getattr(layer.data, "dtype", "f4")).kind != "f":
            continue  # colour pictures and integer images or masks are no probability maps
        if class_info(layer) is not None and role(layer) != "prediction":
            continue  # one class of a reference set (truth · <class>): offered as a reference
        out.append(Candidate(key=layer_uid(layer), title=str(layer.name),
                             name=candidate_name(layer), uids=(layer_uid(layer),)))
    result = []
    for cand in out:
        if not cand.key.startswith("group:"):
            result.append(cand)
            continue
        key = cand.key[len("group:"):]
        members = sorted(groups[key], key=lambda ly: class_info(ly)[0])
        classes = class_info(members[0])[2]
        if classes is None:
            card = _card(members[0])
            classes = tuple(card.classes) if card is not None else tuple(
                class_info(m)[1] for m in members)
        by_index = {class_info(m)[0]: m for m in members}
        if sorted(by_index) != list(range(1, len(classes) + 1)):
            continue  # an incomplete group (a class layer was removed): not offered
        ordered = [by_index[k] for k in range(1, len(classes) + 1)]
        result.append(Candidate(
            key=cand.key, title=_group_title(ordered, classes), name=candidate_name(ordered[0]),
            uids=tuple(layer_uid(m) for m in ordered), classes=tuple(classes),
            labels_uid=labels.get(key)))
    return result


def _card(layer: Any) -> Any:
    try:
        return prediction_card(layer)
    except InputError:
        return None


def threshold_of(layer: Any) -> float | None:
    """The model's optimal threshold for this soft layer (its class's, for a K-class layer's
    ``CLASS_KEY["index"]`` k = 1..K: ``card.thresholds[k - 1]``), None when the layer is not a
    model's prediction (no silent 0.5)."""
    info = class_info(layer)
    try:
        return prediction_threshold(layer, class_index=0 if info is None else info[0] - 1)
    except (InputError, IndexError):
        return None


def short_labels(cands: Sequence[Candidate]) -> dict[str, str]:
    """``{candidate key: label}``: the candidate names when they are unique among ``cands``,
    else the titles without the leading parts they all share (``"image · "``)."""
    names = [c.name for c in cands]
    if len(set(names)) == len(names):
        return {c.key: c.name for c in cands}
    parts = [c.title.split(_SEPARATOR) for c in cands]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    labels = [_SEPARATOR.join(p[common:]) for p in parts]
    if len(set(labels)) != len(labels):
        labels = [c.title for c in cands]
    return {c.key: lab for c, lab in zip(cands, labels)}


# --------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ReferenceChoice:
    """One entry of a Reference list.

    ``kind``: ``"map"`` (one layer, single-class: binary, soft or painted levels), ``"labels"``
    (one Labels layer holding class indices 0..K), ``"codes"`` (one rater layer painted with
    class codes), ``"classes"`` (one layer per class, in class order).
    """

    key: str
    title: str
    kind: str
    uids: tuple[str, ...]
    classes: tuple[str, ...] | None = None
    score: float = 0.0  # how likely the user means it (default_reference)


def _score(layers: Sequence[Any]) -> float:
    first = layers[0]
    name = str(first.name)
    r = role(first)
    if _TRUTH_WORDS.search(name):
        return 3.0
    if r in ("fused", "staple_probability"):
        return 2.0
    if r == "rater" or CONFIDENCE_KEY in (first.metadata or {}):
        return 0.5
    if _is_labels(first):
        return 1.0
    return 0.1  # an image without a role: offered, never the default


def reference_choices(layers: Iterable[Any], *, classes: Sequence[str] | None = None,
                      exclude: Iterable[str] = ()) -> list[ReferenceChoice]:
    """What a single-class (``classes=None``) or K-class prediction can be measured against.

    Never offered: the docks' outputs, MR images (role ``image``), K-class prediction layers,
    uncertainty maps (role ``uncertainty``),
    and the uids in ``exclude`` (the candidates being measured).
    """
    layers = list(layers)
    skip = set(exclude)
    usable = [ly for ly in layers if (_is_image(ly) or _is_labels(ly))
              and role(ly) not in (*OUTPUT_ROLES, "image", "prediction_labels", "uncertainty")
              and not (GROUP_KEY in (ly.metadata or {}) and role(ly) == "prediction")
              and layer_uid(ly) not in skip and np.ndim(ly.data) >= 2
              and not getattr(ly, "rgb", False)]
    out: list[ReferenceChoice] = []
    if classes is None:
        for ly in usable:
            out.append(ReferenceChoice(key=layer_uid(ly), title=str(ly.name), kind="map",
                                       uids=(layer_uid(ly),), score=_score([ly])))
        return out
    k = len(classes)
    groups: dict[str, dict[int, Any]] = {}
    for ly in usable:
        info = class_info(ly)
        if info is not None:
            index, cname, _ = info
            suffix = _SEPARATOR + cname
            base = str(ly.name)[: -len(suffix)] if str(ly.name).endswith(suffix) else str(ly.name)
            if 1 <= index <= k and classes[index - 1] == cname:
                groups.setdefault(base, {})[index] = ly
            continue
        if not _is_labels(ly):
            continue
        names = _class_list(ly)
        if names is not None and tuple(names) != tuple(classes):
            continue  # another project's classes
        scale = (ly.metadata or {}).get(CONFIDENCE_KEY)
        kind = "codes" if names is not None and scale else "labels"
        out.append(ReferenceChoice(key=layer_uid(ly), title=str(ly.name), kind=kind,
                                   uids=(layer_uid(ly),), classes=tuple(classes),
                                   score=_score([ly])))
    for base, members in groups.items():
        if sorted(members) != list(range(1, k + 1)):
            continue
        ordered = [members[i] for i in range(1, k + 1)]
        out.append(ReferenceChoice(
            key="classes:" + ",".join(layer_uid(m) for m in ordered),
            title=f"{base} ({k} classes)", kind="classes",
            uids=tuple(layer_uid(m) for m in ordered), classes=tuple(classes),
            score=_score(ordered) + 0.05))
    return out


def default_reference(choices: Sequence[ReferenceChoice]) -> str | None:
    """The key of the choice a user most likely means (a truth, then a fused map, then a label
    map, then a rater); None when only plain images remain (never the MR image)."""
    best = max(choices, key=lambda c: c.score, default=None)
    return best.key if best is not None and best.score >= 0.5 else None


def read_reference(choice: ReferenceChoice, viewer_layers: Iterable[Any]) -> np.ndarray:
    """The reference array of ``choice`` (a snapshot-free view where possible).

    Returns
    -------
    ndarray
        ``"map"``: values in [0, 1] (uint8 0/1, or float32 soft; painted levels through the
        layer's confidence scale). ``"labels"``: the class indices as stored. ``"codes"``: the
        class of each painted voxel (:func:`softseg.class_levels.label_map`). ``"classes"``:
        (K, *spatial) float32 soft class maps (each layer through its own scale).

    Raises
    ------
    InputError
        A layer of the choice was removed, or its values do not fit.
    """
    from softseg.class_levels import label_map
    from softseg.confidence import as_rater_values

    from napari_softseg._raters import layer_scale, rater_soft

    viewer_layers = list(viewer_layers)
    found = [find_layer(viewer_layers, uid) for uid in choice.uids]
    if any(ly is None for ly in found):
        raise InputError(f"the reference {choice.title!r} was removed; choose another")
    if choice.kind == "map":
        layer = found[0]
        values, _ = as_rater_values(np.asarray(layer.data), scale=layer_scale(layer),
                                    name=f"reference {layer.name!r}")
        return values
    if choice.kind == "labels":
        return np.asarray(found[0].data)
    if choice.kind == "codes":
        layer = found[0]
        scale = layer_scale(layer)
        return label_map(np.asarray(layer.data), n_classes=len(choice.classes or ()),
                         n_levels=len(scale.values), name=f"reference {layer.name!r}")
    return np.stack([rater_soft(ly) for ly in found])
