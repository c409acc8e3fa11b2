"""Saving a fusion: the files ``softseg fuse`` writes, named after their content.

Two classes: ``OUT`` (the fused map: STAPLE's probability or the average as float32, the hard
methods as uint8 0/1) and ``OUT.json``. K classes: ``OUT`` is the fused integer label map, and
for STAPLE and average ``<OUT stem>_label-<k>.nii.gz`` holds the float32 probability of class k
(:func:`softseg.dataset_json.class_file_path`), as ``softseg fuse --classes K`` writes them. The
sidecar (:class:`softseg.sidecar.RaterSidecar`, key ``fusion``) holds the engine's summary
(:meth:`softseg.fusion.FusionResult.summary`: method, region, STAPLE's prior and iterations,
sensitivity/specificity or confusion matrices, pairwise Dice) plus the widget's choices. Files
are written in the raters' own geometry and appear together or not at all
(:class:`softseg.outputs.OutputSet`). The widget asks before replacing any of them.

Suggested names follow the content: ``fused_<method>.nii.gz`` (``fused_staple``,
``fused_soft-staple``, ``fused_average``, ``fused_majority``, ...) in the raters' folder.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import is_nifti_path, nifti_image, sidecar_path

from napari_softseg.widgets.fuse._run import ROI_WHOLE, FusionOutput

__all__ = ["file_stem", "is_suggested_name", "output_files", "provenance", "suggested_path", "write_fusion"]

_SUGGESTED = re.compile(r"^fused_[a-z0-9-]+\.nii(\.gz)?$")


def file_stem(out: FusionOutput) -> str:
    """``fused_<method>``: the method key, ``soft-staple`` for soft STAPLE (readable, no spaces)."""
    tag = "soft-staple" if out.result.method == "staple" and out.result.soft and not out.multiclass else out.result.method
    return f"fused_{tag}"


def is_suggested_name(path: Any) -> bool:
    """True for an empty path or a name this module suggested (so it may follow the content)."""
    if path is None or str(path) in ("", "."):
        return True
    return bool(_SUGGESTED.match(Path(str(path)).name))


def suggested_path(out: FusionOutput, current: Any = None) -> Path | None:
    """Where to save ``out``: ``fused_<method>.nii.gz`` in the first rater's folder, else in the
    folder of ``current``; None when neither is known."""
    folder = next((Path(s).parent for s in out.sources if s), None)
    if folder is None and current is not None and str(current) not in ("", "."):
        folder = Path(str(current)).parent
    return None if folder is None else folder / f"{file_stem(out)}.nii.gz"


def output_files(path: str | Path, out: FusionOutput) -> list[Path]:
    """Every file a save of ``out`` to ``path`` writes: the map, its sidecar, the class maps."""
    from softseg.dataset_json import class_file_path

    path = Path(path)
    files = [path, sidecar_path(path)]
    if out.multiclass and out.result.probability is not None:
        files += [class_file_path(path, k) for k in range(1, int(out.result.n_classes) + 1)]
    return files


def provenance(out: FusionOutput) -> dict[str, Any]:
    """The engine's summary (as ``softseg fuse`` records it) plus the widget's choices."""
    info = out.result.summary(out.names)
    info["choice"] = out.choice
    info["region"] = out.roi_mode
    if out.roi_mode != ROI_WHOLE:
        info["margin_voxels"] = int(out.margin)
    info["inputs"] = [s or f"layer {n!r} (not saved)" for s, n in zip(out.sources, out.names)]
    if out.multiclass:
        info["classes"] = list(out.class_labels)
        info["class_input"] = "painted confidence (class maps)" if out.use_confidence else "painted class of each voxel"
    return info


def write_fusion(path: str | Path, out: FusionOutput, geometry: DisplayGeometry, *, software: str,
                 overwrite: bool) -> list[Path]:
    """Write ``out`` (see the module notes) to ``path``; returns the files written.

    Raises
    ------
    InputError
        ``path`` is not ``.nii``/``.nii.gz``, or a file exists and ``overwrite`` is False.
    """
    from softseg.compare import json_safe
    from softseg.outputs import OutputSet
    from softseg.sidecar import RaterSidecar

    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(f"{path.name}: a fused map is saved as NIfTI; end the file name in .nii.gz or .nii")
    files = output_files(path, out)
    info = provenance(out)
    if out.multiclass and len(files) > 2:
        info["class_maps"] = [str(p) for p in files[2:]]
    sidecar = RaterSidecar(
        kind="labels" if out.fused_kind == "labels" else "soft",
        fusion=info,
        software=software,
        extra={"saved_at": _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds")},
    ).to_json()
    res = out.result

    def volume(display: np.ndarray) -> tuple[np.ndarray, Any]:
        array = geometry.from_display(np.asarray(display))
        return array, geometry.volume(array)

    with OutputSet(files, overwrite=overwrite) as outputs:
        array, like = volume(res.fused)
        outputs.save_image(path, nifti_image(path, array, like=like))
        for k, target in enumerate(files[2:], start=1):
            array, like = volume(res.probability[k])
            outputs.save_image(target, nifti_image(target, array, like=like))
        outputs.write_json(files[1], json_safe(sidecar))
    return files
