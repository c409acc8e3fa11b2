"""Write in-memory volumes (the napari layers a user picked) as a training dataset folder.

The Train widget trains from open layers by writing them to a temporary folder in the dataset
layout of DESIGN.md and running ``softseg train`` on it in a child process. This module does the
writing; it knows nothing about napari (arrays in, files out):

```
FOLDER/dataset.json                        {"channels": [...], "targets": [...], "source": ...}
FOLDER/<subject>/image.nii.gz              one input channel, or
FOLDER/<subject>/image_<k>-<name>.nii.gz   several channels (the index keeps the user's order,
                                           since the loader sorts channel files by name)
FOLDER/<subject>/rater-<name>.nii.gz       one file per target (raters, or one fused/soft map)
FOLDER/<subject>/rater-<name>_label-<key>.nii.gz
                                           K >= 2 classes: one file per target and class (the
                                           multi-class contract of DESIGN decision 11, what
                                           softseg.data.scan_dataset reads; dataset.json then
                                           lists the "classes")
```

Arrays come in napari display order and are written back in their native file orientation,
affine and header through :func:`softseg.geometry.save_display_array`, so the model file records
the true training spacing.

A single volume can be cut into ``n_subjects`` slabs along the axial (display axis 0) direction,
each written as its own subject with the matching affine. Training uses 2D axial slices, so this
changes nothing about what the network sees; it only lets the trainer's subject-wise
train/validation split have a validation subject when the user has one image open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from softseg.dataset_json import class_file_path, class_key
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, save_display_array
from softseg.io import write_json

__all__ = ["safe_name", "slab_geometry", "write_layers_dataset"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str) -> str:
    """A file-name-safe version of a layer name (``"T1 · rater 2"`` -> ``"T1-rater-2"``)."""
    out = _UNSAFE.sub("-", str(name)).strip("-.")
    return out or "layer"


def slab_geometry(geometry: DisplayGeometry, start: int, stop: int) -> DisplayGeometry:
    """Geometry of display slices ``start:stop`` along display axis 0 of *geometry*.

    Parameters
    ----------
    geometry : DisplayGeometry
    start, stop : int
        ``0 <= start < stop <= geometry.display_shape[0]``.

    Returns
    -------
    DisplayGeometry
        Same orientation and spacing; ``file_shape`` shortened along the file axis that maps to
        display axis 0, affine origin moved to the slab's first voxel.
    """
    n = geometry.display_shape[0]
    if not 0 <= start < stop <= n:
        raise InputError(f"slab {start}:{stop} is outside the {n} axial slices")
    file_axis = next(i for i, (axis, _f) in enumerate(geometry.transform) if int(axis) == 0)
    flipped = geometry.transform[file_axis][1] < 0
    first = (n - stop) if flipped else start  # first file index of the slab along file_axis
    shift = np.eye(4)
    shift[file_axis, 3] = first
    shape = list(geometry.file_shape)
    shape[file_axis] = stop - start
    header = geometry.header.copy()
    header.set_data_shape(shape)
    affine = geometry.affine @ shift
    if header.get_sform(coded=True)[1]:
        header.set_sform(affine)
    if header.get_qform(coded=True)[1]:
        header.set_qform(affine)
    return DisplayGeometry.from_affine(affine, tuple(shape), header=header)


def _as_3d(name: str, array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"layer {name!r}: expected a 3D volume, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise InputError(
            f"layer {name!r} has shape {array.shape} but the image has {shape}; "
            "pick layers of the same volume"
        )
    return array


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def _class_entries(classes: Sequence[str]) -> tuple[list[str | dict[str, str]], list[str]]:
    """``dataset.json`` entries and file keys of K class names (a short key where the name's own
    key, :func:`~softseg.dataset_json.class_key`, holds characters a file name may not)."""
    names = [str(c).strip() for c in classes]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise InputError(f"class names must be unique and not empty; got {list(classes)}")
    entries: list[str | dict[str, str]] = []
    keys: list[str] = []
    for name in names:
        key = class_key(name)
        if _KEY_UNSAFE.search(key) or not key[:1].isalnum():
            key = _KEY_UNSAFE.sub("-", key).strip("-.") or "class"
            entries.append({"name": name, "key": key})
        else:
            entries.append(name)
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise InputError(f"class names {names} give the same file name; rename the classes")
    return entries, keys


def _check_class_target(name: str, maps: np.ndarray, k: int, shape: tuple[int, ...],
                        sidecar: Mapping[str, object] | None) -> None:
    """Refuse one rater's per-class maps ``(K, S, P, L)`` that the data loader would refuse."""
    from softseg.confidence import as_rater_values
    from softseg.fusion import class_probabilities
    from softseg.sidecar import parse_rater_sidecar

    if maps.ndim != 4 or maps.shape[0] != k or maps.shape[1:] != shape:
        raise InputError(
            f"target {name!r}: expected {k} class maps of shape {shape} (K, S, P, L), got shape "
            f"{maps.shape}"
        )
    if maps.dtype != bool and not np.issubdtype(maps.dtype, np.number):
        raise InputError(f"target {name!r} is not numeric")
    if not maps.any():
        raise InputError(f"target {name!r} is empty (no class painted)")
    scale = None
    if sidecar:
        scale = parse_rater_sidecar(dict(sidecar), source=f"target {name!r}").scale
    values = [as_rater_values(maps[c], scale=scale, name=f"target {name!r} class {c + 1}")[0]
              for c in range(k)]
    class_probabilities(values, name=f"target {name!r}")  # [0, 1], classes summing to <= 1


def write_layers_dataset(
    folder: str | os.PathLike,
    channels: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    geometry: DisplayGeometry,
    *,
    subject: str = "layers",
    n_subjects: int = 1,
    sidecars: Mapping[str, Mapping[str, object]] | None = None,
    source: Mapping[str, object] | None = None,
    overwrite: bool = False,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write image channels and target maps of one volume as a dataset folder.

    Parameters
    ----------
    folder : path-like
        Dataset folder to create (may exist and be empty).
    channels : mapping of str to ndarray, shape (S, P, L)
        Input contrasts in napari display order, in the model's channel order.
    targets : mapping of str to ndarray, shape (S, P, L), or (K, S, P, L) with K classes
        Rater maps (binary, confidence levels or soft in [0, 1]) or a single fused/soft map.
        Floating-point targets must lie in [0, 1]. With ``K >= 2`` classes, each target is one
        rater's per-class maps (``[c - 1]`` = class ``c``: binary, levels through the rater's
        sidecar scale, or soft), e.g. :func:`softseg.class_levels.class_level_maps` of a painted
        code layer; the classes of a voxel must sum to at most 1 (after the scale).
    geometry : DisplayGeometry
        Geometry shared by all arrays (e.g. of the first image layer).
    subject : str
        Subject id (prefix when ``n_subjects > 1``).
    n_subjects : int
        Cut the volume into this many axial slabs, each its own subject (see module doc).
    sidecars : mapping of str to mapping, optional
        JSON sidecar per target name, e.g. ``{"rater 1": {"softseg_confidence": scale.as_dict()}}``
        for a map of painted confidence levels (the data loader maps levels through it).
    source : mapping, optional
        Provenance stored in ``dataset.json`` (layer names, source files).
    overwrite : bool
        Replace existing files.
    classes : sequence of str, optional
        Class names, index 1..K, written as ``dataset.json`` ``"classes"``. One name: the
        structure's name (e.g. the parent model's when the layers fine-tune it); default none
        (one class, ``"foreground"``). ``K >= 2`` names: every target is ``(K, S, P, L)`` and is
        written as one file per class, ``rater-<name>_label-<key>.nii.gz``
        (:func:`softseg.dataset_json.class_file_path`, key
        :func:`softseg.dataset_json.class_key`; a short key in ``dataset.json`` when a name
        holds characters a file name may not), each with the target's sidecar.

    Returns
    -------
    Path
        The dataset folder.

    Raises
    ------
    InputError
        No channel or target; a shape other than the image's; NaN/Inf images; targets outside
        [0, 1], negative, empty; K-class targets not ``(K, S, P, L)``, summing above 1 over the
        classes, levels without a scale in their sidecar; duplicate class names or file names.
        Raised before anything is written.
    """
    if not channels:
        raise InputError("choose at least one image layer as input channel")
    if not targets:
        raise InputError(
            "choose a target: rater layers, a fused layer or a soft label (this candidate "
            "trains from labels)"
        )
    shape = tuple(geometry.display_shape)
    if classes is not None and len(classes) == 0:
        raise InputError("classes must name at least one class")
    n_classes = len(classes) if classes is not None else 1
    entries: list[str | dict[str, str]] = [str(c) for c in classes] if classes else []
    keys: list[str] = []
    if n_classes >= 2:
        entries, keys = _class_entries(classes)  # type: ignore[arg-type]
    chans = {name: _as_3d(name, arr, shape) for name, arr in channels.items()}
    if n_classes >= 2:
        for name, arr in targets.items():
            _check_class_target(name, np.asarray(arr), n_classes, shape, (sidecars or {}).get(name))
        tgts = {name: np.asarray(arr) for name, arr in targets.items()}
    else:
        tgts = {name: _as_3d(name, arr, shape) for name, arr in targets.items()}
    for name, arr in chans.items():
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise InputError(f"image layer {name!r} has NaN/Inf or non-numeric values")
    for name, arr in tgts.items() if n_classes == 1 else ():
        if arr.dtype == bool:
            continue
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"target layer {name!r} is not numeric")
        if np.issubdtype(arr.dtype, np.floating):
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if not np.isfinite(arr).all() or lo < 0.0 or hi > 1.0:
                raise InputError(
                    f"target layer {name!r} has values in [{lo:g}, {hi:g}]; a soft label must "
                    "lie in [0, 1]"
                )
        elif arr.min() < 0:
            raise InputError(f"target layer {name!r} has negative labels")
        if not arr.any():
            raise InputError(f"target layer {name!r} is empty (nothing painted)")
    n_subjects = int(n_subjects)
    if n_subjects < 1:
        raise InputError(f"n_subjects must be >= 1, got {n_subjects}")
    if n_subjects > shape[0]:
        raise InputError(f"cannot cut {shape[0]} axial slices into {n_subjects} subjects")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(chans) == 1:
        chan_files = ["image.nii.gz"]
    else:
        chan_files = [f"image_{k}-{safe_name(n)}.nii.gz" for k, n in enumerate(chans)]
    tgt_files = [f"rater-{safe_name(n)}.nii.gz" for n in tgts]
    if len(set(tgt_files)) != len(tgt_files):
        raise InputError(f"target layer names collide as file names: {list(tgts)}; rename them")

    bounds = np.linspace(0, shape[0], n_subjects + 1).round().astype(int)
    subjects = []
    for k in range(n_subjects):
        start, stop = int(bounds[k]), int(bounds[k + 1])
        sub = subject if n_subjects == 1 else f"{subject}-{k + 1:02d}"
        geo = geometry if n_subjects == 1 else slab_geometry(geometry, start, stop)
        sub_dir = folder / sub
        sub_dir.mkdir(exist_ok=True)
        for fname, arr in zip(chan_files, chans.values()):
            save_display_array(sub_dir / fname, np.asarray(arr[start:stop], dtype=np.float32),
                               geo, overwrite=overwrite)
        for fname, (tname, arr) in zip(tgt_files, tgts.items()):
            side = (sidecars or {}).get(tname)
            files = ([(sub_dir / fname, arr[start:stop])] if n_classes == 1 else
                     [(class_file_path(sub_dir / fname, key), arr[c, start:stop])
                      for c, key in enumerate(keys)])
            for path, part in files:
                if part.dtype == bool:
                    part = part.astype(np.uint8)
                save_display_array(path, part, geo, overwrite=overwrite,
                                   sidecar=None if side is None else dict(side))
        subjects.append({"subject": sub, "axial_slices": [start, stop]})
    write_json(
        folder / "dataset.json",
        {
            "channels": list(chans),
            "targets": list(tgts),
            "subjects": subjects,
            "source": dict(source or {}),
            **({"classes": entries} if entries else {}),
        },
        overwrite=True,
    )
    return folder
