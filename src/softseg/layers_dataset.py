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
    targets : mapping of str to ndarray, shape (S, P, L)
        Rater maps (binary, confidence levels or soft in [0, 1]) or a single fused/soft map.
        Floating-point targets must lie in [0, 1].
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
    classes : sequence of one str, optional
        The structure's class name in ``dataset.json`` (e.g. the parent model's when the layers
        fine-tune it); default none (one class, ``"foreground"``).

    Returns
    -------
    Path
        The dataset folder.
    """
    if not channels:
        raise InputError("choose at least one image layer as input channel")
    if not targets:
        raise InputError(
            "choose a target: rater layers, a fused layer or a soft label (this candidate "
            "trains from labels)"
        )
    shape = tuple(geometry.display_shape)
    chans = {name: _as_3d(name, arr, shape) for name, arr in channels.items()}
    tgts = {name: _as_3d(name, arr, shape) for name, arr in targets.items()}
    for name, arr in chans.items():
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise InputError(f"image layer {name!r} has NaN/Inf or non-numeric values")
    for name, arr in tgts.items():
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
    if classes is not None and len(classes) != 1:
        raise InputError(f"layers are written as one structure; got classes {list(classes)}")
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
            part = arr[start:stop]
            if part.dtype == bool:
                part = part.astype(np.uint8)
            side = (sidecars or {}).get(tname)
            save_display_array(sub_dir / fname, part, geo, overwrite=overwrite,
                               sidecar=None if side is None else dict(side))
        subjects.append({"subject": sub, "axial_slices": [start, stop]})
    write_json(
        folder / "dataset.json",
        {
            "channels": list(chans),
            "targets": list(tgts),
            "subjects": subjects,
            "source": dict(source or {}),
            **({"classes": [str(c) for c in classes]} if classes else {}),
        },
        overwrite=True,
    )
    return folder
