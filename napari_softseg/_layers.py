"""Volumes <-> napari layers: geometry in metadata, layer kinds, saving a layer as NIfTI.

Every layer made by this plugin from a NIfTI volume carries in ``layer.metadata``:

``"softseg_geometry"``  :meth:`softseg.geometry.DisplayGeometry.as_metadata` (original affine,
                         header bytes, orientation transform), so it can be written back exactly;
``"source_path"``       the file it was read from (``None`` for generated data);
``"softseg_kind"``      ``"image"``, ``"soft"`` (a map in [0, 1]) or ``"labels"``;
``"softseg_rater"``     the rater id of a rater label map (when known);
``"softseg_confidence"`` the confidence scale of a level map (when known, see
                         :mod:`softseg.confidence`).

Importing this module does not import napari or Qt (the reader and sample-data hooks only build
layer-data tuples); :func:`add_volume_layer` and the notification helper import napari lazily.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, save_display_array
from softseg.sidecar import RaterSidecar, parse_rater_sidecar
from softseg.io import NIFTI_SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "AXIS_LABELS",
    "CONFIDENCE_KEY",
    "KINDS",
    "KIND_KEY",
    "MAX_LABEL_VALUES",
    "RATER_KEY",
    "SIDECAR_KEY",
    "SOURCE_KEY",
    "add_volume_layer",
    "geometry_from_layer_scale",
    "geometry_of",
    "layer_geometry",
    "guess_kind",
    "label_sidecar",
    "layer_data_tuple",
    "notify_error",
    "save_layer_as_nifti",
    "volume_name",
]

SOURCE_KEY = "source_path"
KIND_KEY = "softseg_kind"
RATER_KEY = "softseg_rater"
CONFIDENCE_KEY = "softseg_confidence"  # same key as softseg.confidence.METADATA_KEY
SIDECAR_KEY = "softseg_sidecar"
#: napari axis labels of every volume the plugin opens: the slice slider of the default view is
#: labelled "axial I→S"; transposing shows "coronal A→P" or "sagittal R→L" slices. They follow
#: softseg.geometry.DISPLAY_AXCODES (increasing index towards S, P, L).
AXIS_LABELS = ("axial I→S", "coronal A→P", "sagittal R→L")
#: Physical unit of the layers' scale and translate.
UNITS = ("mm", "mm", "mm")
#: Integer volumes with at most this many distinct values open as Labels.
MAX_LABEL_VALUES = 32

#: kind -> (napari layer type, default layer keyword arguments). A plain dict (STYLE.md 6).
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "image": ("image", {"colormap": "gray", "blending": "translucent"}),
    "soft": (
        "image",
        {
            "colormap": "magma",
            "contrast_limits": (0.0, 1.0),
            "blending": "additive",
            "opacity": 0.7,
        },
    ),
    "labels": ("labels", {"opacity": 0.6}),
}

_LABEL_NAME = re.compile(
    r"(^|[-_.])(rater|label|labels|seg|aseg|mask|lesions?|manual|gt)([-_.0-9]|$)", re.I
)
_SOFT_NAME = re.compile(
    r"(^|[-_.])(soft|prob|probability|proba|fused|average|staple|truth)([-_.]|$)", re.I
)


def volume_name(path: str | os.PathLike) -> str:
    """Layer name of a NIfTI file: its name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _distinct_integer_values(array: np.ndarray, limit: int) -> int:
    """Number of distinct values of an integer array, or ``limit + 1`` if it has more."""
    lo, hi = int(array.min()), int(array.max())
    if hi - lo < 1 << 20:
        counts = np.bincount((array.ravel() - lo).astype(np.int64, copy=False), minlength=1)
        return int(np.count_nonzero(counts))
    return min(int(np.unique(array).size), limit + 1)


def guess_kind(
    array: np.ndarray,
    *,
    name: str = "",
    sidecar: RaterSidecar | Mapping[str, Any] | None = None,
) -> str:
    """Which kind of layer a volume should open as: ``"image"``, ``"soft"`` or ``"labels"``.

    Rules, in order:

    1. a sidecar's ``kind`` (``"labels"``, ``"soft"``, ``"image"``; the old prediction words
       ``"mask"`` / ``"probability"`` read as labels / soft) decides; a sidecar with a rater id
       or a confidence scale means labels (integer data) or soft (float data);
    2. integer data with at most :data:`MAX_LABEL_VALUES` distinct values, or whose name looks
       like a label (``rater-*``, ``label``, ``seg``, ``mask``, ``lesion``) -> ``"labels"``;
    3. float data in [0, 1] whose name looks like a soft map (``soft``, ``prob``, ``truth``,
       ``fused``, ...) or a label (``rater-*``, ``label``, ``seg``, ``mask``) -> ``"soft"``;
    4. everything else -> ``"image"``.

    Parameters
    ----------
    array : ndarray
        The voxel values (any order).
    name : str
        File name or layer name, used for the name hints.
    sidecar : RaterSidecar or mapping, optional
        The file's JSON sidecar (:func:`softseg.sidecar.read_rater_sidecar`); a mapping is
        parsed with :func:`softseg.sidecar.parse_rater_sidecar`.

    Raises
    ------
    InputError
        A sidecar mapping that is not a valid sidecar (the message names *name*).
    """
    if sidecar is not None and not isinstance(sidecar, RaterSidecar):
        sidecar = parse_rater_sidecar(dict(sidecar), source=f"{name or 'file'} sidecar")
    if sidecar is not None:
        if sidecar.kind is not None:
            return str(sidecar.kind)
        if sidecar.rater is not None or sidecar.scale is not None:
            return "labels" if array.dtype.kind in "iub" else "soft"
    if array.dtype.kind in "iub":
        if array.dtype.kind == "b" or _LABEL_NAME.search(name):
            return "labels"  # e.g. an atlas "aseg" / "labels" with many label values
        few = _distinct_integer_values(array, MAX_LABEL_VALUES) <= MAX_LABEL_VALUES
        return "labels" if few else "image"
    if array.dtype.kind == "f" and (_SOFT_NAME.search(name) or _LABEL_NAME.search(name)):
        if not np.isfinite(array).all():
            return "soft"  # a label with NaN/Inf: the reader refuses it with a clear message
        if float(array.min()) >= 0.0 and float(array.max()) <= 1.0:
            return "soft"
    return "image"


def _labels_array(array: np.ndarray, name: str) -> np.ndarray:
    """Integer data for a Labels layer (float files asked to open as labels must be whole)."""
    if array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    whole = np.isfinite(array).all() and (array == np.round(array)).all()
    if not whole or float(array.min()) < 0:
        raise InputError(
            f"{name}: asked to open as labels but the values are not whole non-negative numbers; "
            "remove the 'labels' hint or fix the file"
        )
    hi = float(array.max()) if array.size else 0.0
    dtype = np.uint8 if hi <= 255 else np.int32
    return array.astype(dtype)


def _contrast_limits(array: np.ndarray) -> tuple[float, float]:
    """Robust display range: 0.5 and 99.5 percentiles of a strided sample (fast on big volumes)."""
    flat = array.ravel()
    step = max(1, flat.size // 200_000)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return (lo, hi)


def layer_data_tuple(
    display_array: np.ndarray,
    geometry: DisplayGeometry,
    *,
    kind: str,
    name: str,
    source_path: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari ``LayerDataTuple`` for a display-ordered volume with its geometry.

    Parameters
    ----------
    display_array : ndarray, shape geometry.display_shape
    geometry : DisplayGeometry
    kind : {"image", "soft", "labels"}
    name : str
        Layer name.
    source_path : path-like, optional
        Stored as ``metadata["source_path"]``.
    metadata : mapping, optional
        Extra metadata entries (rater id, confidence scale, ...).
    **kwargs
        Further layer keyword arguments; they override the kind's defaults.

    Returns
    -------
    (data, layer_kwargs, layer_type)
    """
    if kind not in KINDS:
        raise InputError(f"unknown layer kind {kind!r}; expected one of {sorted(KINDS)}")
    display_array = np.asarray(display_array)
    if tuple(display_array.shape) != tuple(geometry.display_shape):
        raise InputError(
            f"{name}: array shape {display_array.shape} does not match the geometry's display "
            "shape "
            f"{geometry.display_shape}"
        )
    layer_type, defaults = KINDS[kind]
    if layer_type == "labels":
        display_array = _labels_array(display_array, name)
    meta: dict[str, Any] = dict(metadata or {})
    meta.update(geometry.as_metadata())
    meta[SOURCE_KEY] = None if source_path is None else str(source_path)
    meta[KIND_KEY] = kind
    layer_kwargs: dict[str, Any] = dict(defaults)
    layer_kwargs.update(axis_labels=AXIS_LABELS, units=UNITS)
    if kind == "image":
        layer_kwargs["contrast_limits"] = _contrast_limits(display_array)
    layer_kwargs.update(
        name=name, scale=geometry.scale, translate=geometry.translate, metadata=meta, **kwargs
    )
    return display_array, layer_kwargs, layer_type


def add_volume_layer(
    viewer: napari.Viewer,
    display_array: np.ndarray,
    geometry: DisplayGeometry,
    *,
    kind: str = "image",
    name: str,
    source_path: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> napari.layers.Layer:
    """Add a display-ordered volume to *viewer* with physical scale and its geometry.

    Same parameters as :func:`layer_data_tuple`; returns the new layer. A result of a widget
    (fused map, prediction) should pass the geometry of its input image so that it overlays the
    image and saves back in the image's file orientation.
    """
    data, layer_kwargs, layer_type = layer_data_tuple(
        display_array,
        geometry,
        kind=kind,
        name=name,
        source_path=source_path,
        metadata=metadata,
        **kwargs,
    )
    adders = {"image": viewer.add_image, "labels": viewer.add_labels}
    return adders[layer_type](data, **layer_kwargs)


def geometry_from_layer_scale(
    display_shape: tuple[int, ...],
    *,
    scale: Any = (1.0, 1.0, 1.0),
    translate: Any = (0.0, 0.0, 0.0),
) -> DisplayGeometry:
    """A geometry for a layer that has none (made by hand in napari): display order is file order.

    Display axes point superior, posterior, left, so the affine maps index ``(i, j, k)`` to
    RAS ``x = -(t2 + s2 k)``, ``y = -(t1 + s1 j)``, ``z = t0 + s0 i``.
    """
    s = [float(v) for v in np.asarray(scale, dtype=float)[-3:]]
    t = [float(v) for v in np.asarray(translate, dtype=float)[-3:]]
    affine = np.array(
        [
            [0.0, 0.0, -s[2], -t[2]],
            [0.0, -s[1], 0.0, -t[1]],
            [s[0], 0.0, 0.0, t[0]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return DisplayGeometry.from_affine(affine, tuple(int(n) for n in display_shape[-3:]))


def geometry_of(layer: Any) -> DisplayGeometry | None:
    """The :class:`DisplayGeometry` a layer carries in its metadata, or None."""
    metadata = getattr(layer, "metadata", None)
    return DisplayGeometry.from_metadata(metadata) if metadata is not None else None


def layer_geometry(layer: Any) -> DisplayGeometry:
    """The layer's native geometry (its metadata), or one built from its scale/translate for a
    layer made in napari; checked against the layer's shape (Train and Predict widgets)."""
    data_shape = tuple(np.shape(layer.data))
    geometry = geometry_of(layer)
    if geometry is None:
        if len(data_shape) != 3:
            raise InputError(f"layer {layer.name!r}: expected a 3D volume, got shape {data_shape}")
        geometry = geometry_from_layer_scale(data_shape, scale=layer.scale, translate=layer.translate)
    if tuple(geometry.display_shape) != data_shape:
        raise InputError(f"layer {layer.name!r} has shape {data_shape} but its geometry expects "
                         f"{geometry.display_shape}; was the layer resized?")
    return geometry


def label_sidecar(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What the JSON sidecar of a saved label layer carries: kind, rater id, confidence scale.

    The sidecar the file was read with (``softseg_sidecar``, every key kept) updated with the
    layer's rater id (``softseg_rater``) and confidence scale (``softseg_confidence``), in the
    one sidecar schema (:class:`softseg.sidecar.RaterSidecar`, its export shape).
    """
    original = metadata.get(SIDECAR_KEY)
    side = (
        parse_rater_sidecar(dict(original), source="layer sidecar")
        if isinstance(original, Mapping)
        else RaterSidecar()
    )
    rater = metadata.get(RATER_KEY, metadata.get("rater"))
    scale = metadata.get(CONFIDENCE_KEY)
    if scale is not None and not isinstance(scale, ConfidenceScale):
        scale = ConfidenceScale.from_dict(scale.as_dict() if hasattr(scale, "as_dict") else dict(scale))
    side = side.with_(
        kind="labels",
        rater=side.rater if rater is None else str(rater),
        scale=side.scale if scale is None else scale,
    )
    return side.to_json()


def save_layer_as_nifti(
    layer: Any,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    sidecar: Mapping[str, Any] | bool | None = None,
) -> Path:
    """Write a layer as NIfTI in its original file orientation, affine and header.

    Parameters
    ----------
    layer : napari Image or Labels layer (or anything with ``data``, ``metadata``, ``scale``,
        ``translate``)
        Its geometry comes from ``metadata["softseg_geometry"]``; a layer without one (made in
        napari) is written in display order with an affine built from its scale and translate.
    path : path-like
        ``.nii`` or ``.nii.gz``.
    overwrite : bool
        Replace an existing file (and sidecar).
    sidecar : mapping or bool, optional
        JSON written next to the image. ``None`` (default): label layers get
        :func:`label_sidecar`, other layers none. ``False``: never.

    Returns
    -------
    Path
    """
    data = np.asarray(layer.data)
    geometry = geometry_of(layer)
    if geometry is None:
        if data.ndim != 3:
            raise InputError(
                f"{path}: only 3D layers can be saved as NIfTI; layer has shape {data.shape}"
            )
        geometry = geometry_from_layer_scale(
            data.shape, scale=layer.scale, translate=layer.translate
        )
    if tuple(data.shape) != tuple(geometry.display_shape):
        raise InputError(
            f"{path}: layer {getattr(layer, 'name', '')!r} has shape {data.shape} but its geometry "
            f"expects {geometry.display_shape}; was the layer resized?"
        )
    is_labels = type(layer).__name__ == "Labels" or layer.metadata.get(KIND_KEY) == "labels"
    if sidecar is None:
        side = label_sidecar(layer.metadata) if is_labels else None
    elif sidecar is False:
        side = None
    elif sidecar is True:
        side = label_sidecar(layer.metadata)
    else:
        side = dict(sidecar)
    return save_display_array(path, data, geometry, overwrite=overwrite, sidecar=side)


def notify_error(message: str) -> None:
    """Show a one-line error in napari (a notification), or log it when napari is absent."""
    text = " ".join(str(message).split())
    try:
        from napari.utils.notifications import show_error
    except ImportError:  # pragma: no cover - the plugin is always used with napari
        import logging

        logging.getLogger("napari_softseg").error(text)
        return
    show_error(text)

