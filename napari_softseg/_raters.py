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
from napari_softseg._metadata import HUE_KEY, KIND_KEY, RATER_KEY

__all__ = [
    "PALETTE",
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
