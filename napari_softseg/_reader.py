"""napari reader for NIfTI volumes (``*.nii``, ``*.nii.gz``).

A volume opens reoriented so that the slice slider runs along the axial axis (see
:mod:`softseg.geometry`) and is labelled with it (``axis_labels`` "axial I→S", "coronal A→P",
"sagittal R→L", units mm), with the voxel size as layer scale and the original affine/header in
``layer.metadata``. Images get the role ``"image"``, rater label maps the role ``"rater"``
(:mod:`napari_softseg._metadata`). Integer volumes with few values open as Labels, soft maps as a coloured
Image, everything else as a grey Image (:func:`napari_softseg._layers.guess_kind`; a JSON sidecar
``{"kind": ...}`` overrides).

Bad input (truncated or corrupt file, 4D volume, ...) shows a one-line napari notification and
opens nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from softseg.confidence import MAX_LEVELS, ConfidenceScale
from softseg.errors import InputError
from softseg.io import is_nifti_path, load_volume
from softseg.sidecar import read_rater_sidecar

from napari_softseg._layers import (
    CONFIDENCE_KEY,
    RATER_KEY,
    SIDECAR_KEY,
    guess_kind,
    layer_data_tuple,
    notify_error,
    volume_name,
)
from napari_softseg._metadata import HUE_KEY, set_role
from napari_softseg._raters import PALETTE, hue_for_rater_id, level_color_dict

__all__ = ["get_reader", "read_nifti", "read_volume_layers"]

_RATER_FILE = re.compile(r"^rater-(.+)$")
#: What the reader returns when it accepted a file but opens no layer (npe2's "null layer").
_NOTHING = [(None,)]


def get_reader(path: str | Sequence[str]) -> Callable[..., list] | None:
    """npe2 ``get_reader``: our reader for NIfTI paths, None for anything else."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_nifti_path(p) for p in paths):
        return None
    return read_nifti


def read_volume_layers(path: str | os.PathLike) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer-data tuples of one NIfTI file (raises :class:`InputError` on bad input).

    The JSON sidecar is read through the one sidecar schema
    (:func:`softseg.sidecar.read_rater_sidecar`): its ``kind``, rater id and confidence scale
    decide how the file opens; the whole sidecar rides in ``metadata["softseg_sidecar"]`` so a
    save writes it back.
    """
    name = volume_name(path)
    sidecar = read_rater_sidecar(path)
    volume = load_volume(path)
    from softseg.geometry import display_geometry

    geometry = display_geometry(volume)
    kind = guess_kind(volume.array, name=name, sidecar=sidecar)
    if kind in ("labels", "soft") and volume.array.dtype.kind == "f":
        n_bad = int(volume.array.size - np.count_nonzero(np.isfinite(volume.array)))
        if n_bad:
            raise InputError(
                f"{path}: label contains {n_bad} NaN/Inf voxels; labels must be finite values in "
                "[0, 1] or integer levels"
            )
    metadata: dict[str, Any] = {}
    if sidecar is not None:
        metadata[SIDECAR_KEY] = sidecar.to_json()
        if sidecar.rater is not None:
            metadata[RATER_KEY] = sidecar.rater
        if sidecar.scale is not None:
            metadata[CONFIDENCE_KEY] = sidecar.scale.as_dict()
    rater = _RATER_FILE.match(name)
    if rater and RATER_KEY not in metadata and kind == "labels":
        metadata[RATER_KEY] = rater.group(1)
    if kind == "image":
        set_role(metadata, "image")
    elif kind == "labels" and RATER_KEY in metadata:
        set_role(metadata, "rater")
    style: dict[str, Any] = {}
    if kind == "labels" and RATER_KEY in metadata and volume.array.dtype.kind in "iub":
        # each rater in their own hue, colour strength growing with the level (its scale, or
        # equal steps up to the highest level in the file)
        top = int(np.max(volume.array)) if volume.array.size else 0
        if sidecar is not None and sidecar.scale is not None:
            scale = sidecar.scale
        else:
            scale = ConfidenceScale.linear(min(max(top, 1), MAX_LEVELS))
        if top <= scale.n_levels:
            hue = hue_for_rater_id(metadata[RATER_KEY])
            metadata[HUE_KEY] = hue
            style["colormap"] = level_color_dict(scale, PALETTE[hue])
    return [
        layer_data_tuple(
            geometry.to_display(volume.array),
            geometry,
            kind=kind,
            name=name,
            source_path=os.path.abspath(os.fspath(path)),
            metadata=metadata,
            **style,
        )
    ]


def read_nifti(path: str | Sequence[str], *, stack: bool = False) -> list:
    """npe2 reader function: one layer per file; a notification (no traceback) on bad input."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list = []
    for p in paths:
        try:
            layers.extend(read_volume_layers(p))
        except InputError as exc:
            notify_error(str(exc))
    return layers or _NOTHING
