"""Saving applied thresholds as NIfTI files: readable names, the prediction's own geometry,
never replacing a file without the user's *Replace* (``_common.confirm_overwrite``), all files
of one save or none (:class:`softseg.outputs.OutputSet`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softseg import __version__
from softseg.errors import InputError

__all__ = ["Saved", "file_stem", "result_paths", "write_results"]

_SEPARATOR = " · "


def _part(text: str) -> str:
    """One name part for a file: spaces as ``-``, only letters, digits, ``-``, ``.``."""
    words = "-".join(str(text).split())
    return re.sub(r"[^\w.\-]+", "-", words).strip("-.") or "layer"


def file_stem(layer_name: str, threshold: dict[str, Any]) -> str:
    """``image_softseg_threshold-0.40`` for layer ``"image · softseg"`` at 0.40;
    ``..._band-0.25-0.75`` for a band, ``..._argmax`` for a K-class argmax view."""
    parts = [_part(p) for p in str(layer_name).split(_SEPARATOR) if p.strip()]
    if threshold.get("argmax"):
        tag = "argmax"
    elif threshold.get("high") is not None:
        tag = f"band-{threshold['low']:.2f}-{threshold['high']:.2f}"
    else:
        tag = f"threshold-{threshold['low']:.2f}"
    return "_".join([*parts, tag])


@dataclass(frozen=True)
class Saved:
    """One result to write: the mask in display order and what it is."""

    layer_name: str
    mask: np.ndarray
    geometry: Any  # softseg.geometry.DisplayGeometry
    threshold: dict[str, Any]


def result_paths(folder: str | Path, results: Sequence[Saved]) -> list[Path]:
    """Every file a save writes: ``<stem>.nii.gz`` and its ``<stem>.json`` per result."""
    from softseg.io import sidecar_path

    folder = Path(folder)
    paths: list[Path] = []
    for r in results:
        image = folder / f"{file_stem(r.layer_name, r.threshold)}.nii.gz"
        paths += [image, sidecar_path(image)]
    return paths


def write_results(folder: str | Path, results: Sequence[Saved], *, overwrite: bool) -> list[Path]:
    """Write every result (image + sidecar) or none; returns the images' paths.

    Raises
    ------
    InputError
        A file exists and ``overwrite`` is False, the folder cannot be written, or the
        sizes do not fit the geometry (nothing is written then).
    """
    from softseg.io import nifti_image, sidecar_path
    from softseg.outputs import OutputSet

    if not results:
        raise InputError("nothing to save: press Apply first")
    paths = result_paths(folder, results)
    outs = OutputSet(paths, overwrite=overwrite)
    images = []
    with outs:
        for r, image in zip(results, paths[::2]):
            file_array = r.geometry.from_display(np.asarray(r.mask).astype(np.uint8))
            outs.save_image(image, nifti_image(image, file_array,
                                               like=r.geometry.volume(file_array)))
            outs.write_json(sidecar_path(image), {
                "softseg_threshold": dict(r.threshold, source=r.layer_name),
                "software": {"softseg": __version__},
            })
            images.append(image)
    return images
