"""napari writers: Image and Labels layers to ``.nii`` / ``.nii.gz``.

The layer is written in its original file orientation, with the original affine and header
(``layer.metadata["softseg_geometry"]``), atomically. A label layer gets a JSON sidecar
(``x.nii.gz`` -> ``x.json``) with its rater id and confidence scale.

napari's *File > Save Layers* dialog asks before replacing an existing file, so these writers
replace existing files (as napari's own writers do). The Python function
:func:`napari_softseg._layers.save_layer_as_nifti` refuses unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from softseg.errors import InputError

from napari_softseg._layers import label_sidecar, notify_error, save_layer_as_nifti

__all__ = ["write_image", "write_labels"]


class _LayerView:
    """What the writers receive (data + layer attributes) shaped like a layer."""

    def __init__(self, data: Any, attributes: dict[str, Any], layer_type: str) -> None:
        self.data = np.asarray(data)
        self.metadata = dict(attributes.get("metadata") or {})
        self.scale = attributes.get("scale", (1.0,) * self.data.ndim)
        self.translate = attributes.get("translate", (0.0,) * self.data.ndim)
        self.name = attributes.get("name", "")
        self.layer_type = layer_type


def _write(path: str, data: Any, attributes: dict[str, Any], layer_type: str) -> list[str]:
    layer = _LayerView(data, attributes, layer_type)
    sidecar = label_sidecar(layer.metadata) if layer_type == "labels" else False
    try:
        written = save_layer_as_nifti(layer, path, overwrite=True, sidecar=sidecar)
    except (InputError, OSError) as exc:
        notify_error(str(exc) if isinstance(exc, InputError) else f"{path}: {exc}")
        return []
    return [os.fspath(written)]


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 writer for an Image layer (raw values; floats as float32, never rescaled)."""
    return _write(path, data, attributes, "image")


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 writer for a Labels layer (integer dtype kept; JSON sidecar with rater id/scale)."""
    return _write(path, data, attributes, "labels")
