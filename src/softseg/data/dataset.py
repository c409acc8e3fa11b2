"""The dataset folder: scanning, validating and loading subjects.

Dataset folder (DESIGN.md)::

    DATASET/dataset.json                 optional: channels, classes, groups
    DATASET/<subject>/image.nii.gz       one contrast ...
    DATASET/<subject>/image_<c>.nii.gz   ... or several, channels sorted by contrast name
    DATASET/<subject>/rater-<id>.nii.gz  binary, confidence-level or soft label map
    DATASET/<subject>/rater-<id>.json    optional sidecar with the confidence scale of levels

**Orientation.** Every volume is reoriented (pure transpose + flip, exact and invertible) to the
display order of :mod:`softseg.geometry`: axis 0 superior (the axial slice axis), axis 1
posterior, axis 2 left. 2D slices are ``array[k]`` of shape (rows, cols) = (P, L), exactly what
the napari viewer shows. Prediction maps back with :meth:`DisplayGeometry.from_display`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, display_geometry
from softseg.io import NIFTI_SUFFIXES, Volume, load_volume

__all__ = [
    "DatasetInfo",
    "Subject",
    "SubjectData",
    "load_subject",
    "rater_to_soft",
    "scan_dataset",
]

_IMAGE_RE = re.compile(r"^image(?:_(?P<contrast>.+))?$")
_RATER_RE = re.compile(r"^rater-(?P<id>.+)$")


def _nifti_stem(path: Path) -> str | None:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class Subject:
    """One subject folder: its image channels and rater files.

    Attributes
    ----------
    name : str
        Folder name.
    images : tuple of Path
        One file per channel, in channel order (sorted by contrast name).
    raters : tuple of Path
        Rater label files, sorted by rater id.
    rater_ids : tuple of str
    group : str or None
        Group from ``dataset.json`` (e.g. acquisition centre) for group-wise splits.
    """

    name: str
    images: tuple[Path, ...]
    raters: tuple[Path, ...]
    rater_ids: tuple[str, ...]
    group: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """A scanned and validated dataset folder.

    Attributes
    ----------
    root : Path
    subjects : tuple of Subject
        Sorted by name.
    channels : tuple of str
        Channel (contrast) names; ``("image",)`` for single-contrast ``image.nii.gz`` files
        unless ``dataset.json`` names the channel.
    classes : tuple of str
        Foreground class names (one class is supported for training).
    """

    root: Path
    subjects: tuple[Subject, ...]
    channels: tuple[str, ...]
    classes: tuple[str, ...] = ("foreground",)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.subjects)

    @property
    def rater_ids(self) -> tuple[str, ...]:
        """All rater ids that occur in the dataset, sorted."""
        return tuple(sorted({r for s in self.subjects for r in s.rater_ids}))

    def subject(self, name: str) -> Subject:
        for s in self.subjects:
            if s.name == name:
                return s
        raise InputError(f"no subject {name!r} in {self.root}; subjects: {', '.join(self.names)}")


def _read_dataset_json(root: Path) -> Any:
    """``root/dataset.json`` parsed and validated (:class:`softseg.dataset_json.DatasetJson`), or None."""
    from softseg.dataset_json import read_dataset_json

    return read_dataset_json(root)


def _groups_from_json(meta: Any, path: Path) -> dict[str, str]:
    """Subject -> group from a parsed dataset.json (either form of ``groups``, already normalised)."""
    return dict(meta.groups or {}) if meta is not None else {}


def scan_dataset(folder: str | os.PathLike) -> DatasetInfo:
    """Find and check the subjects of a dataset folder (without reading the images).

    Parameters
    ----------
    folder : path-like
        The dataset root (see the module docstring for the layout).

    Returns
    -------
    DatasetInfo

    Raises
    ------
    InputError
        Missing or empty folder, a subject without image or rater files (named), subjects with
        different channels, an invalid ``dataset.json`` (:mod:`softseg.dataset_json`: wrong
        types, unknown keys, not UTF-8, too deep — one line naming the key), more than one class.
    """
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the dataset folder (DATASET/<subject>/image.nii.gz)")
    meta = _read_dataset_json(root)
    groups = _groups_from_json(meta, root / "dataset.json")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(
            f"{root}: empty dataset (no subject folders); expected {root}/<subject>/image.nii.gz "
            "and rater-<id>.nii.gz"
        )
    subjects = []
    contrasts_ref: tuple[str, ...] | None = None
    for sub in folders:
        images: dict[str, Path] = {}
        raters: dict[str, Path] = {}
        for f in sorted(sub.iterdir()):
            stem = _nifti_stem(f)
            if stem is None or not f.is_file():
                continue
            m = _IMAGE_RE.match(stem)
            if m:
                images[m.group("contrast") or ""] = f
                continue
            m = _RATER_RE.match(stem)
            if m:
                raters[m.group("id")] = f
        if not images:
            raise InputError(f"subject {sub.name!r} has no image (expected {sub}/image.nii.gz or image_<contrast>.nii.gz)")
        if "" in images and len(images) > 1:
            raise InputError(
                f"subject {sub.name!r} mixes image.nii.gz with image_<contrast> files; use one naming scheme"
            )
        if not raters:
            raise InputError(f"subject {sub.name!r} has no rater label (expected {sub}/rater-<id>.nii.gz)")
        contrasts = tuple(sorted(images))
        if contrasts_ref is None:
            contrasts_ref = contrasts
        elif contrasts != contrasts_ref:
            raise InputError(
                f"subject {sub.name!r} has channels {list(contrasts)} but {subjects[0].name!r} has "
                f"{list(contrasts_ref)}; every subject needs the same image_<contrast> files"
            )
        rater_ids = tuple(sorted(raters))
        subjects.append(
            Subject(
                name=sub.name,
                images=tuple(images[c] for c in contrasts),
                raters=tuple(raters[r] for r in rater_ids),
                rater_ids=rater_ids,
                group=groups.get(sub.name),
            )
        )
    assert contrasts_ref is not None
    channels: tuple[str, ...]
    named = meta.channels if meta is not None else None
    if contrasts_ref == ("",):
        channels = (named[0],) if named is not None and len(named) == 1 else ("image",)
    else:
        channels = contrasts_ref
    classes = (meta.class_names if meta is not None else None) or ("foreground",)
    if len(classes) != 1:
        raise InputError(
            f"{root / 'dataset.json'}: {len(classes)} foreground classes {list(classes)}; "
            "training supports one foreground class (one rater file per class and rater)"
        )
    return DatasetInfo(root=root, subjects=tuple(subjects), channels=channels, classes=classes)


@dataclass(frozen=True, eq=False)
class SubjectData:
    """A subject's arrays in display order (axis 0 = axial slices, see the module docstring).

    Attributes
    ----------
    name : str
    images : ndarray, shape (C, S, H, W), float32
        Raw intensities.
    raters : ndarray, shape (R, S, H, W), float32
        Soft rater maps in [0, 1] (binary maps as 0/1, levels mapped through their scale).
    spacing : tuple of 3 float
        Voxel size (mm) along (S, H, W).
    geometry : DisplayGeometry
        Of the first image (all files of the subject share it).
    """

    name: str
    images: np.ndarray
    raters: np.ndarray
    spacing: tuple[float, float, float]
    geometry: DisplayGeometry


def _same_geometry(ref: Volume, other: Volume, subject: str) -> None:
    """Refuse files of one subject that are not on one voxel grid (:func:`softseg.geometry.check_same_grid`)."""
    from softseg.geometry import check_same_grid

    try:
        check_same_grid(ref, other)
    except InputError as exc:
        raise InputError(f"subject {subject!r}: {exc}") from None


def rater_to_soft(volume: Volume) -> np.ndarray:
    """A rater's label map as soft values in [0, 1], float32.

    Binary maps give 0/1, soft maps (floats within 1e-6 of [0, 1]) are kept (clipped), and
    confidence-level maps go through the scale of the rater's JSON sidecar:
    :func:`softseg.sidecar.rater_values` (every sidecar shape softseg ever wrote, the one
    conversion; what ``softseg fuse`` and ``softseg evaluate`` read too). Levels without a scale
    are refused; every message names the file's full path.
    """
    from softseg.sidecar import rater_values

    name = str(volume.path) if volume.path is not None else "rater"
    return rater_values(volume, name=name)[0].astype(np.float32, copy=False)


def load_subject(subject: Subject) -> SubjectData:
    """Read and check a subject's images and raters, reoriented to display order.

    Raises
    ------
    InputError
        Every refusal of :func:`softseg.io.load_volume` (named by full path), NaN/Inf in an
        image, shapes or affines that disagree inside the subject (both files named), bad label
        values.
    """
    vols = [load_volume(p, what="image") for p in subject.images]
    for v in vols:
        if v.array.dtype.kind == "f" and not np.isfinite(v.array).all():
            n_bad = int(v.array.size - np.count_nonzero(np.isfinite(v.array)))
            raise InputError(f"{v.path}: image contains {n_bad} NaN/Inf voxels; fix or mask them first")
    ref = vols[0]
    for v in vols[1:]:
        _same_geometry(ref, v, subject.name)
    raters = []
    for p in subject.raters:
        v = load_volume(p, label=True, what="rater label map")
        _same_geometry(ref, v, subject.name)
        raters.append(rater_to_soft(v))
    geom = display_geometry(ref)
    images = geom.to_display(np.stack([np.asarray(v.array, dtype=np.float32) for v in vols]))
    rater_arr = geom.to_display(np.stack(raters).astype(np.float32, copy=False))
    return SubjectData(
        name=subject.name,
        images=images,
        raters=rater_arr,
        spacing=tuple(float(s) for s in geom.scale),  # type: ignore[arg-type]
        geometry=geom,
    )

