"""Rater files of the Soft annotation dock: export names, writing a layer, reading a file.

No Qt here and no napari objects beyond reading ``layer.data`` / ``layer.metadata``: the dock
asks before replacing (:func:`napari_softseg.widgets._common.confirm_overwrite`) and turns the
results into layers and messages.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softseg import __version__
from softseg.confidence import ConfidenceScale, detect_label_kind
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, display_geometry, save_display_array
from softseg.io import load_volume, sidecar_path
from softseg.sidecar import RaterSidecar, read_rater_sidecar

from napari_softseg._metadata import SOURCE_KEY
from napari_softseg._raters import geometry_of, layer_scale, rater_id

__all__ = ["LEVELS_SUFFIX", "RaterFile", "export_path_for", "read_rater_file", "write_rater_file"]

#: Added to the file stem of an export that holds integer levels (``rater-x_levels.nii.gz``).
LEVELS_SUFFIX = "_levels"


def _nifti_stem(name: str) -> tuple[str, str]:
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ".nii.gz"


def export_path_for(path: str | Path, *, levels: bool) -> Path:
    """*path* renamed for what it holds: ``x.nii.gz`` (soft map) <-> ``x_levels.nii.gz`` (levels)."""
    path = Path(path)
    stem, ext = _nifti_stem(path.name)
    if stem.endswith(LEVELS_SUFFIX):
        stem = stem[: -len(LEVELS_SUFFIX)]
    return path.with_name(f"{stem}{LEVELS_SUFFIX if levels else ''}{ext}")


def write_rater_file(
    layer: Any,
    path: str | Path,
    *,
    as_levels: bool,
    overwrite: bool = False,
    source_image: str | None = None,
) -> Path:
    """Write a rater layer in its image's geometry with a JSON sidecar (:mod:`softseg.sidecar`).

    Parameters
    ----------
    layer : napari Labels layer
        Confidence levels with their scale in the metadata (binary when it has none).
    path : path-like
        ``.nii.gz`` / ``.nii``.
    as_levels : bool
        The integer levels (uint8); otherwise the float32 soft map through the scale.
    overwrite : bool
        Replace an existing file or sidecar (only after the rater confirmed).
    source_image : str, optional
        Recorded in the sidecar when the layer has no ``source_path``.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        The file or its sidecar exists and *overwrite* is false (nothing is written); levels
        above the layer's scale.
    """
    path = Path(path)
    if not overwrite:
        taken = [p for p in (path, sidecar_path(path)) if p.exists()]
        if taken:
            raise InputError(
                f"{taken[0].name} exists already in {taken[0].parent}; choose another file name, "
                "or confirm replacing it"
            )
    levels = np.asarray(layer.data)
    scale = layer_scale(layer) or ConfidenceScale.binary()
    out = levels.astype(np.uint8) if as_levels else scale.to_soft(levels)
    source = layer.metadata.get(SOURCE_KEY) or source_image
    sidecar = RaterSidecar(
        rater=rater_id(layer),
        kind="labels" if as_levels else "soft",
        scale=scale,
        source_image=None if source is None else str(source),
        software=f"napari-softseg {__version__}",
        extra={"exported_at": _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds")},
    )
    written = save_display_array(
        path, out, geometry_of(layer), overwrite=True, sidecar=sidecar.to_json()
    )
    return Path(written)


def _rater_id_from_file(path: Path, sidecar: RaterSidecar | None) -> str:
    if sidecar is not None and sidecar.rater:
        return str(sidecar.rater)
    stem, _ = _nifti_stem(path.name)
    for prefix in ("rater-", "rater_"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            stem = stem[len(prefix) :]
    return stem


@dataclass(frozen=True, eq=False)
class RaterFile:
    """A rater file read for display.

    Attributes
    ----------
    path : Path
    data : ndarray
        napari (display) order; the file's dtype.
    geometry : DisplayGeometry
    kind : {"binary", "levels", "soft"}
    rater : str
        From the sidecar, else the file name without ``rater-``.
    scale : ConfidenceScale or None
        From the sidecar; for binary and level maps without one, the guess (one level, or equal
        steps up to the highest level) and ``scale_guessed`` is True.
    scale_guessed : bool
    """

    path: Path
    data: np.ndarray
    geometry: DisplayGeometry
    kind: str
    rater: str
    scale: ConfidenceScale | None
    scale_guessed: bool = False


def read_rater_file(
    path: str | Path, *, shape: tuple[int, ...] | None = None, image_name: str = "the image"
) -> RaterFile:
    """Read a rater file (binary, levels or soft) with its sidecar, checked for display.

    Parameters
    ----------
    path : path-like
    shape : tuple, optional
        The image's display shape the file must have.
    image_name : str
        Names the image in the message when the shapes differ.

    Raises
    ------
    InputError
        Unreadable file or sidecar, not a rater map, a shape other than *shape* (both named),
        a level above the sidecar's scale.
    """
    path = Path(path)
    vol = load_volume(path, label=True)
    sidecar = read_rater_sidecar(path)
    kind = detect_label_kind(vol.array, name=path.name)
    geom = display_geometry(vol)
    data = geom.to_display(vol.array)
    if shape is not None and tuple(shape) != tuple(data.shape):
        raise InputError(
            f"{path.name}: shape {tuple(data.shape)} differs from {image_name} shape {tuple(shape)}; "
            "open the rater file that belongs to this image"
        )
    scale = sidecar.scale if sidecar is not None else None
    guessed = False
    if kind != "soft":
        top = int(np.max(data))
        if scale is None:
            scale = ConfidenceScale.binary() if kind == "binary" else ConfidenceScale.linear(top)
            guessed = kind == "levels"
        elif top > scale.n_levels:
            raise InputError(
                f"{path.name}: holds level {top} but its sidecar scale has {scale.n_levels} levels"
            )
    return RaterFile(
        path=path,
        data=data,
        geometry=geom,
        kind=kind,
        rater=_rater_id_from_file(path, sidecar),
        scale=scale,
        scale_guessed=guessed,
    )
