"""Rater layers: what they are, their confidence scale, their soft values and their colours.

A *rater layer* is a napari Labels layer whose integer values are confidence levels (0 =
background, 1..K = low .. high) with a :class:`~softseg.confidence.ConfidenceScale` in its
metadata, or an Image layer holding a soft rater map in [0, 1] (``softseg_kind == "soft"``).
These helpers are shared by every widget that reads raters (Soft annotation, Fuse, Train); no
widget imports another widget for them. napari is imported lazily, only by the colour helpers.

Colours: every rater gets one hue of :data:`PALETTE`, stored as a palette index in the layer
metadata (:data:`~napari_softseg._metadata.HUE_KEY`); :func:`next_free_hue` picks the first hue
no open rater layer uses, so raters opened from disk get distinct colours, and a restored rater
gets its old hue back when it is free.

Multi-class rater layers (one layer per rater painted with class codes ``(class - 1) * L +
level``, :mod:`softseg.class_levels`; the class names under
:data:`~napari_softseg._metadata.CLASS_KEY`) are drawn in **class** colours, as ITK-SNAP and
3D Slicer draw label maps: :func:`class_hues` (the tissues' conventional colours, others from
the palette), strength by level as for one class (:func:`code_color_dict`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from softseg.confidence import METADATA_KEY as SCALE_KEY
from softseg.confidence import ConfidenceScale, label_to_soft
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry

from napari_softseg._layers import geometry_from_layer_scale
from napari_softseg._layers import geometry_of as _stored_geometry
from napari_softseg._metadata import CLASS_KEY, HUE_KEY, KIND_KEY, RATER_KEY

__all__ = [
    "CLASS_HUES",
    "PALETTE",
    "class_hues",
    "code_color_dict",
    "code_colormap",
    "code_features",
    "layer_classes",
    "geometry_of",
    "hue_for_rater_id",
    "hue_index_of_color",
    "hue_of",
    "is_rater_layer",
    "is_level_layer",
    "layer_scale",
    "level_color_dict",
    "level_colormap",
    "level_features",
    "level_rgba",
    "next_free_hue",
    "rater_id",
    "rater_soft",
    "soft_colormap",
]

#: One hue per rater (RGB in [0, 1]); strong, distinct on a grey MR image.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.00, 0.45, 0.00),  # orange
    (0.10, 0.60, 1.00),  # azure
    (0.90, 0.15, 0.65),  # magenta
    (0.25, 0.85, 0.25),  # green
    (1.00, 0.85, 0.00),  # yellow
    (0.60, 0.35, 1.00),  # violet
    (0.00, 0.85, 0.85),  # cyan
    (1.00, 0.25, 0.25),  # red
)


#: Colours of well-known classes (RGB in [0, 1]): the MNI sample's tissues (grey matter orange,
#: white matter blue, CSF yellow, as the sample's soft truth layers) and lesions (red).
CLASS_HUES: dict[str, tuple[float, float, float]] = {
    "grey matter": (1.00, 0.62, 0.18),
    "white matter": (0.24, 0.62, 0.95),
    "csf": (0.96, 0.90, 0.26),
    "lesion": (1.00, 0.18, 0.39),
}


# ------------------------------------------------------------------------------------ kinds
def _is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _is_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def is_rater_layer(layer: Any) -> bool:
    """A 3D Labels layer (levels or binary), or a 3D Image layer marked as a soft rater map."""
    if _is_labels(layer):
        return np.ndim(layer.data) == 3
    if _is_image(layer):
        return layer.metadata.get(KIND_KEY) == "soft" and np.ndim(layer.data) == 3
    return False


def is_level_layer(layer: Any) -> bool:
    """A Labels layer of a known rater with a confidence scale (what the annotate widget edits)."""
    return _is_labels(layer) and RATER_KEY in layer.metadata and SCALE_KEY in layer.metadata


def rater_id(layer: Any) -> str:
    """The layer's rater id (``softseg_rater``), else its name."""
    return str(layer.metadata.get(RATER_KEY) or layer.name)


def layer_classes(layer: Any) -> tuple[str, ...] | None:
    """Class names (1..K) of a rater layer painted with class codes, None for a one-class layer.

    The list under :data:`~napari_softseg._metadata.CLASS_KEY`; a per-class layer of earlier
    releases (``{"index": k, "name": ...}``) holds one class's levels and gives None.
    """
    names = (getattr(layer, "metadata", None) or {}).get(CLASS_KEY)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def layer_scale(layer: Any) -> ConfidenceScale | None:
    """The confidence scale stored on a layer, or None."""
    data = layer.metadata.get(SCALE_KEY)
    return ConfidenceScale.from_dict(data) if data else None


def geometry_of(layer: Any) -> DisplayGeometry:
    """The layer's image geometry: from ``metadata["softseg_geometry"]``, else built from its scale.

    A layer that did not come from the napari-softseg reader is taken to be stored in display
    order (axis 0 superior, 1 posterior, 2 left) with its ``scale``/``translate`` in mm.

    Raises
    ------
    InputError
        The layer is not 3D.
    """
    geom = _stored_geometry(layer)
    if geom is not None:
        return geom
    shape = tuple(int(s) for s in np.shape(layer.data))
    if len(shape) != 3:
        raise InputError(f"layer {layer.name!r} has shape {shape}; expected a 3D volume")
    return geometry_from_layer_scale(shape, scale=layer.scale, translate=layer.translate)


def rater_soft(layer: Any) -> np.ndarray:
    """A rater layer as a float32 soft map in [0, 1] (napari order), levels mapped by its scale.

    The one conversion, :func:`softseg.confidence.label_to_soft`, with the layer's scale
    (Labels layers) and the layer's name in every message.

    Returns
    -------
    ndarray, shape of ``layer.data``, float32, values in [0, 1]

    Raises
    ------
    InputError
        Levels above the layer's scale, a level map (> 1) without a scale, or soft values
        outside [0, 1] beyond rounding; the message names the layer.
    """
    scale = layer_scale(layer) if _is_labels(layer) else None
    return label_to_soft(np.asarray(layer.data), scale=scale, name=f"layer {layer.name!r}")


# ----------------------------------------------------------------------------------- colours
def level_rgba(hue: Sequence[float], value: float) -> np.ndarray:
    """RGBA of a confidence value in a rater's hue: paler and more transparent for low values."""
    hue = np.asarray(hue, dtype=np.float64)
    sat = 0.35 + 0.65 * value
    rgb = (1.0 - sat) * np.ones(3) + sat * hue
    alpha = 0.35 + 0.65 * value
    return np.array([*rgb, alpha], dtype=np.float32)


def level_color_dict(scale: ConfidenceScale, hue: Sequence[float]) -> dict[int | None, np.ndarray]:
    """``{level: RGBA}`` of *scale* in *hue* (0 and unknown values transparent), no napari needed.

    napari's Labels layer takes it as ``colormap=`` (a ``DirectLabelColormap``).
    """
    colors: dict[int | None, np.ndarray] = {
        None: np.zeros(4, np.float32),
        0: np.zeros(4, np.float32),
    }
    for k, v in enumerate(scale.values, start=1):
        colors[k] = level_rgba(hue, v)
    return colors


def level_colormap(scale: ConfidenceScale, hue: Sequence[float]) -> Any:
    """napari ``DirectLabelColormap``: one colour per level of *scale* in *hue*; others transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=level_color_dict(scale, hue))


def hue_for_rater_id(rater: str) -> int:
    """A palette index from a rater id alone (for a reader that cannot see the other layers).

    Whole-number ids (``rater-1``, ``rater-2`` ...) get consecutive hues; other ids a hash of
    the id. Widgets that see every layer use :func:`next_free_hue` instead.
    """
    text = str(rater).strip()
    if text.isdigit():
        return (int(text) - 1) % len(PALETTE)
    import hashlib

    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % len(PALETTE)


def level_features(scale: ConfidenceScale) -> dict[str, list]:
    """Features table shown by napari in the status bar: ``confidence: high, soft value: 1``."""
    return {
        "index": list(range(scale.n_levels + 1)),
        "confidence": ["background", *scale.names],
        "soft value": [float(v) for v in scale.lut],
    }


def class_hues(classes: Sequence[str]) -> list[tuple[float, float, float]]:
    """One colour per class (index 0 = class 1): :data:`CLASS_HUES` for the names it knows
    (case-insensitive), palette colours not taken yet for the others, in order."""
    known = {k.lower(): v for k, v in CLASS_HUES.items()}
    out: list[tuple[float, float, float] | None] = [known.get(str(c).strip().lower()) for c in classes]
    taken = [h for h in out if h is not None]
    free = [p for p in PALETTE if not any(np.allclose(p, t, atol=0.2) for t in taken)] or list(PALETTE)
    i = 0
    for j, hue in enumerate(out):
        if hue is None:
            out[j] = free[i % len(free)]
            i += 1
    return [tuple(float(c) for c in h) for h in out]  # type: ignore[union-attr]


def code_color_dict(scale: ConfidenceScale, classes: Sequence[str]) -> dict[int | None, np.ndarray]:
    """``{code: RGBA}`` of a layer painted with class codes ``(c - 1) * L + level``: class *c*'s
    colour (:func:`class_hues`) at the strength of the level's value (:func:`level_rgba`);
    0 and unknown values transparent."""
    colors: dict[int | None, np.ndarray] = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    n = scale.n_levels
    for c, hue in enumerate(class_hues(classes), start=1):
        for lv, value in enumerate(scale.values, start=1):
            colors[(c - 1) * n + lv] = level_rgba(hue, value)
    return colors


def code_colormap(scale: ConfidenceScale, classes: Sequence[str]) -> Any:
    """napari ``DirectLabelColormap`` over the ``K x L`` class codes (:func:`code_color_dict`)."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=code_color_dict(scale, classes))


def code_features(scale: ConfidenceScale, classes: Sequence[str]) -> dict[str, list]:
    """Features table of a class-code layer for napari's status bar:
    ``5; class: white matter, confidence: medium, soft value: 0.667``."""
    n = scale.n_levels
    names: list[str] = ["background"]
    levels: list[str] = ["background"]
    values: list[float] = [0.0]
    for c in classes:
        for lv_name, value in zip(scale.names, scale.values):
            names.append(str(c))
            levels.append(lv_name)
            values.append(float(value))
    return {
        "index": list(range(len(classes) * n + 1)),
        "class": names,
        "confidence": levels,
        "soft value": values,
    }


def soft_colormap(hue: Sequence[float], name: str) -> Any:
    """napari ``Colormap`` from transparent (0) to full colour (1), for soft maps over the image."""
    from napari.utils.colormaps import Colormap

    r, g, b = (float(c) for c in hue)
    return Colormap(colors=[[r, g, b, 0.0], [r, g, b, 1.0]], name=name, display_name=name)


def hue_of(layer: Any) -> tuple[float, float, float]:
    """The rater's colour (its palette entry; the first one when it has none)."""
    idx = layer.metadata.get(HUE_KEY)
    if isinstance(idx, int) and not isinstance(idx, bool):
        return PALETTE[idx % len(PALETTE)]
    return PALETTE[0]


def hue_index_of_color(color: Sequence[float] | None) -> int | None:
    """The palette index of an RGB colour (as stored in a snapshot), None when it is not one."""
    if color is None:
        return None
    for i, rgb in enumerate(PALETTE):
        if np.allclose(rgb, list(color)[:3], atol=1e-6):
            return i
    return None


def next_free_hue(layers: Iterable[Any], *, prefer: int | None = None) -> int:
    """A palette index no rater layer in *layers* uses (``prefer`` when free).

    With every hue taken, the least used one (the first of those).
    """
    used: dict[int, int] = {}
    for lyr in layers:
        if not is_rater_layer(lyr):
            continue
        idx = lyr.metadata.get(HUE_KEY)
        if isinstance(idx, int) and not isinstance(idx, bool):
            used[idx % len(PALETTE)] = used.get(idx % len(PALETTE), 0) + 1
    if prefer is not None and (prefer % len(PALETTE)) not in used:
        return prefer % len(PALETTE)
    for i in range(len(PALETTE)):
        if i not in used:
            return i
    return min(range(len(PALETTE)), key=lambda i: (used.get(i, 0), i))
