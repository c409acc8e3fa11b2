"""Training data: the dataset folder, subject validation, preprocessing, splits and 2D slices.

Dataset folder (DESIGN.md)::

    DATASET/dataset.json                 optional: channels, classes, groups
    DATASET/<subject>/image.nii.gz       one contrast ...
    DATASET/<subject>/image_<c>.nii.gz   ... or several, channels sorted by contrast name
    DATASET/<subject>/rater-<id>.nii.gz  binary, confidence-level or soft label map
    DATASET/<subject>/rater-<id>.json    optional sidecar with the confidence scale of levels

Preprocessing follows the SoftSeg protocol (Table 1 of the paper):

1. **Orientation.** Every volume is reoriented (pure transpose + flip, exact and invertible) to
   the display order of :mod:`softseg.geometry`: axis 0 superior (the axial slice axis), axis 1
   posterior, axis 2 left. 2D slices are ``array[k]`` of shape (rows, cols) = (P, L), exactly
   what the napari viewer shows. Prediction maps back with :meth:`DisplayGeometry.from_display`.
2. **Resampling** to the target spacing with :func:`scipy.ndimage.zoom` in ``grid_mode`` (the
   field of view is kept exactly; the output size is the native extent divided by the target
   spacing, rounded): spline order 2 for images, linear (order 1) for labels, which is what makes
   label borders fractional (soft ground truth). An axis whose target is ``None`` is not resampled.
3. **Per-contrast z-score** over the whole resampled volume (each channel of each subject: mean
   0, standard deviation 1; a constant channel is only centred).
4. **Centre crop / pad** of every slice to the crop size; images are padded with their channel's
   minimum (background), labels with 0.

Rater fusion (a choice per run, :data:`FUSIONS`) is done at native resolution, before resampling:
``staple`` (STAPLE probability binarised at 0.5, as in the label-fusion paper), ``average``
(soft mean of raters), ``majority`` (majority vote) or ``random`` (all raters kept; one rater per
subject is drawn at each epoch with :func:`softseg.fusion.sample_rater`; validation uses the
rater average).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from softseg.candidates import FUSIONS  # the fusion choices of a run; re-exported here
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, display_geometry
from softseg.io import NIFTI_SUFFIXES, Volume, load_volume

__all__ = [
    "FUSIONS",
    "DatasetInfo",
    "Preprocessing",
    "SliceSet",
    "Split",
    "Subject",
    "SubjectData",
    "build_slices",
    "center_crop_or_pad",
    "fuse_raters",
    "load_subject",
    "median_spacing",
    "preprocess_image",
    "preprocess_label",
    "rater_to_soft",
    "resample",
    "resampled_shape",
    "resolve_spacing",
    "scan_dataset",
    "split_subjects",
    "zscore",
]


_IMAGE_RE = re.compile(r"^image(?:_(?P<contrast>.+))?$")
_RATER_RE = re.compile(r"^rater-(?P<id>.+)$")


def _nifti_stem(path: Path) -> str | None:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


# ----------------------------------------------------------------------------- layout
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


# ----------------------------------------------------------------------------- loading
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


# ----------------------------------------------------------------------------- fusion
def fuse_raters(
    raters: np.ndarray,
    method: str,
    *,
    n_classes: int | None = None,
    class_maps: bool = False,
) -> np.ndarray:
    """Fuse a subject's raters for training (at native resolution): the training target.

    Parameters
    ----------
    raters : ndarray, shape (R, ...), float32 in [0, 1]
        Multi-class: integer label maps (R, ...) with ``n_classes``, or class probabilities
        (R, K+1, ...) with ``class_maps=True``.
    method : {'staple', 'average', 'majority', 'random'}
        A training fusion of :data:`softseg.fusion.METHODS`, computed by
        :func:`softseg.fusion.training_target` (which calls :func:`softseg.fusion.fuse`, the
        engine ``softseg fuse`` and the Fuse widget use): ``staple`` = the STAPLE consensus
        (probability >= 0.5, soft STAPLE for soft raters), ``average`` = soft mean,
        ``majority`` = majority vote (soft raters cut at 0.5 first), ``random`` = all raters
        (one is drawn per epoch later).
    n_classes, class_maps : see :func:`softseg.fusion.training_target`

    Returns
    -------
    ndarray, float32 in [0, 1]
        ``(1, ...)`` or ``(R, ...)`` for ``random``; multi-class ``(1, K+1, ...)`` /
        ``(R, K+1, ...)``.
    """
    from softseg.fusion import training_target

    return training_target(raters, method, n_classes=n_classes, class_maps=class_maps)


# ----------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing of a model, stored in its model file.

    Attributes
    ----------
    spacing : tuple of 3 (float or None)
        Target voxel size (mm) along display axes (S, H, W) = (slice, rows, cols); ``None`` keeps
        the native spacing of that axis.
    crop : tuple of 2 int
        Training slice size (rows, cols). Prediction runs on whole slices.
    channels : tuple of str
        Input channel names, in order.
    normalization : str
        ``"zscore"``: per-volume, per-channel z-score.
    orientation : str
        Axis codes of the arrays the network sees (``"SPL"``: slices along superior, rows
        posterior, cols left), see :mod:`softseg.geometry`.
    """

    spacing: tuple[float | None, float | None, float | None]
    crop: tuple[int, int]
    channels: tuple[str, ...]
    normalization: str = "zscore"
    orientation: str = "SPL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "spacing": list(self.spacing),
            "crop": list(self.crop),
            "channels": list(self.channels),
            "normalization": self.normalization,
            "orientation": self.orientation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        known = {"spacing", "crop", "channels", "normalization", "orientation"}
        extra = set(data) - known
        if extra:
            raise InputError(f"unknown preprocessing keys {sorted(extra)}; valid: {sorted(known)}")
        spacing = tuple(None if s is None else float(s) for s in data["spacing"])
        if len(spacing) != 3:
            raise InputError(f"preprocessing spacing must have 3 entries (S, H, W); got {list(spacing)}")
        return cls(
            spacing=spacing,  # type: ignore[arg-type]
            crop=tuple(int(c) for c in data["crop"]),  # type: ignore[arg-type]
            channels=tuple(str(c) for c in data["channels"]),
            normalization=str(data.get("normalization", "zscore")),
            orientation=str(data.get("orientation", "SPL")),
        )


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float | None]
) -> tuple[int, ...]:
    """Grid size after resampling: native extent / target spacing, rounded (at least 1)."""
    out = []
    for n, s, t in zip(shape, spacing, target):
        out.append(int(n) if t is None else max(1, int(round(n * float(s) / float(t)))))
    return tuple(out)


def resample(
    array: np.ndarray,
    shape: Sequence[int],
    *,
    order: int,
) -> np.ndarray:
    """Resample the last three axes of *array* onto a grid of *shape* covering the same extent.

    Uses :func:`scipy.ndimage.zoom` with ``grid_mode=True`` (voxel edges aligned, so the field
    of view is kept exactly and resampling back to the original shape is the inverse mapping)
    and ``mode='nearest'`` at the borders.

    Parameters
    ----------
    array : ndarray, shape (..., A, B, C)
    shape : 3 ints
    order : int
        Spline order: 2 for images, 1 (linear) for labels and predictions.

    Returns
    -------
    ndarray, shape (..., *shape), float32
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape[-3:]) == shape:
        return array.astype(np.float32, copy=False)
    lead = array.shape[:-3]
    flat = array.reshape((-1,) + array.shape[-3:])
    out = np.empty((flat.shape[0],) + shape, dtype=np.float32)
    zoom = [o / n for o, n in zip(shape, flat.shape[1:])]
    opts = {"output": np.float32, "order": order, "mode": "nearest", "grid_mode": True, "prefilter": order > 1}
    for i in range(flat.shape[0]):
        vol = flat[i].astype(np.float32, copy=False)
        if shape[0] == flat.shape[1]:
            # slices kept (the usual 2D case): zoom each slice in-plane. Identical to the 3D zoom
            # (an interpolating spline sampled at its own knots along axis 0) with 3x / 2x fewer taps.
            for k in range(shape[0]):
                out[i, k] = ndimage.zoom(vol[k], zoom[1:], **opts)
        else:
            out[i] = ndimage.zoom(vol, zoom, **opts)
    return out.reshape(lead + shape)


def zscore(images: np.ndarray) -> np.ndarray:
    """Per-channel z-score of a (C, ...) array (a constant channel is only centred)."""
    images = np.asarray(images, dtype=np.float32)
    out = np.empty_like(images)
    for c in range(images.shape[0]):
        ch = images[c]
        mean = float(ch.mean(dtype=np.float64))
        std = float(ch.std(dtype=np.float64))
        out[c] = (ch - mean) / (std if std > 1e-8 else 1.0)
    return out


def center_crop_or_pad(array: np.ndarray, size: Sequence[int], *, value: float | np.ndarray = 0.0) -> np.ndarray:
    """Centre-crop or pad the last two axes to *size*.

    Parameters
    ----------
    array : ndarray, shape (..., H, W)
    size : (rows, cols)
    value : float or ndarray broadcastable to ``array.shape[:-2] + (1, 1)``
        Padding value.

    Returns
    -------
    ndarray, shape (..., rows, cols)
        Crop start is ``(n - size) // 2``; padding before is ``(size - n) // 2``.
    """
    rows, cols = (int(s) for s in size)
    h, w = array.shape[-2:]
    out = np.empty(array.shape[:-2] + (rows, cols), dtype=array.dtype)
    out[...] = value
    sy, sx = max(0, (h - rows) // 2), max(0, (w - cols) // 2)
    dy, dx = max(0, (rows - h) // 2), max(0, (cols - w) // 2)
    ny, nx = min(h, rows), min(w, cols)
    out[..., dy : dy + ny, dx : dx + nx] = array[..., sy : sy + ny, sx : sx + nx]
    return out


def _target_shape(shape: Sequence[int], spacing: Sequence[float], prep: Preprocessing) -> tuple[int, ...]:
    return resampled_shape(shape[-3:], spacing, prep.spacing)


def preprocess_image(images: np.ndarray, spacing: Sequence[float], prep: Preprocessing, *, crop: bool = True) -> np.ndarray:
    """Resample (spline order 2), z-score per channel and (optionally) centre crop/pad.

    Parameters
    ----------
    images : ndarray, shape (C, S, H, W), display order
    spacing : 3 floats, mm along (S, H, W)
    prep : Preprocessing
    crop : bool
        Crop/pad slices to ``prep.crop`` (training); prediction keeps whole slices.

    Returns
    -------
    ndarray, shape (C, S', H', W') float32
    """
    if images.shape[0] != len(prep.channels):
        raise InputError(
            f"image has {images.shape[0]} channel(s) but the model expects {len(prep.channels)} "
            f"({', '.join(prep.channels)})"
        )
    out = zscore(resample(images, _target_shape(images.shape, spacing, prep), order=2))
    if crop:
        low = out.reshape(out.shape[0], -1).min(axis=1).reshape(-1, 1, 1, 1)
        out = center_crop_or_pad(out, prep.crop, value=low)
    return out


def preprocess_label(labels: np.ndarray, spacing: Sequence[float], prep: Preprocessing) -> np.ndarray:
    """Resample (linear) and centre crop/pad label maps (R, S, H, W); values stay in [0, 1]."""
    out = resample(labels, _target_shape(labels.shape, spacing, prep), order=1)
    np.clip(out, 0.0, 1.0, out=out)
    return center_crop_or_pad(out, prep.crop, value=0.0)


# ----------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """Subject names of the training, validation and test sets."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_subjects(
    names: Sequence[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    groups: Mapping[str, str | None] | None = None,
    test_group: str | None = None,
    seed: int = 0,
) -> Split:
    """Reproducible train/validation/test split of subject names.

    Parameters
    ----------
    names : sequence of str
    val_fraction, test_fraction : float in [0, 1)
        Fractions of subjects (rounded, at least one validation subject when ``val_fraction``
        > 0, at least one training subject always).
    groups : mapping subject -> group, optional
        Needed for ``test_group``.
    test_group : str, optional
        Leave-one-group-out: every subject of this group is a test subject (``test_fraction``
        is then ignored); the validation set is drawn from the other subjects.
    seed : int
        The permutation is ``numpy.random.default_rng(seed).permutation`` of the sorted names,
        so the split depends only on the seed and the set of names.

    Returns
    -------
    Split
    """
    names = sorted(str(n) for n in names)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise InputError(f"split fractions must lie in [0, 1); got val={val_fraction}, test={test_fraction}")
    rng = np.random.default_rng(seed)
    if test_group is not None:
        groups = dict(groups or {})
        known = sorted({g for g in groups.values() if g is not None})
        test = [n for n in names if groups.get(n) == test_group]
        if not test:
            raise InputError(
                f"no subject in group {test_group!r}; groups in dataset.json: {', '.join(known) or 'none'}"
            )
        rest = [n for n in names if n not in test]
    else:
        perm = [names[i] for i in rng.permutation(len(names))]
        n_test = int(round(test_fraction * len(names)))
        test, rest = perm[:n_test], perm[n_test:]
    rest = [rest[i] for i in rng.permutation(len(rest))] if test_group is not None else rest
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if len(rest) - n_val < 1:
        raise InputError(
            f"{len(names)} subject(s) are too few for this split (test {len(test)}, validation {n_val}); "
            "add subjects or lower the validation/test fractions"
        )
    val, train = rest[:n_val], rest[n_val:]
    return Split(train=tuple(sorted(train)), val=tuple(sorted(val)), test=tuple(sorted(test)))


# ----------------------------------------------------------------------------- slices
@dataclass(frozen=True, eq=False)
class SliceSet:
    """Preprocessed 2D slices of several subjects, in memory.

    Attributes
    ----------
    images : ndarray, shape (N, C, H, W), float32
    labels : tuple of ndarray, one per subject, shape (R_s, S_s, H, W), float32 in [0, 1]
        The fused label (R_s = 1) or all raters (``random`` fusion).
    subject_slices : tuple of (start, stop)
        Slice range of each subject in ``images``.
    subjects : tuple of str
    """

    images: np.ndarray
    labels: tuple[np.ndarray, ...]
    subject_slices: tuple[tuple[int, int], ...]
    subjects: tuple[str, ...]
    raters_per_subject: tuple[int, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def label_array(self, choice: Sequence[int] | None = None) -> np.ndarray:
        """(N, 1, H, W) float32 labels: rater ``choice[s]`` of subject ``s``, or the mean of
        each subject's label stack when *choice* is None (the fused label itself when R_s = 1)."""
        parts = []
        for s, lab in enumerate(self.labels):
            if choice is None:
                parts.append(lab.mean(axis=0) if lab.shape[0] > 1 else lab[0])
            else:
                parts.append(lab[int(choice[s])])
        return np.concatenate(parts, axis=0)[:, None].astype(np.float32, copy=False)


def build_slices(
    subjects: Sequence[SubjectData], prep: Preprocessing, *, fusion: str
) -> SliceSet:
    """Preprocess subjects into a :class:`SliceSet` of axial slices.

    Parameters
    ----------
    subjects : sequence of SubjectData
    prep : Preprocessing
        Its spacing must be resolved (no ``None`` except axes kept native).
    fusion : {'staple', 'average', 'majority', 'random'}
    """
    if not subjects:
        raise InputError("no subjects to build slices from")
    images, labels, ranges = [], [], []
    start = 0
    for sub in subjects:
        img = preprocess_image(sub.images, sub.spacing, prep)  # (C, S, H, W)
        lab = preprocess_label(fuse_raters(sub.raters, fusion), sub.spacing, prep)  # (R, S, H, W)
        if lab.shape[1] != img.shape[1]:
            raise InputError(f"subject {sub.name!r}: label and image slice counts differ after resampling")
        images.append(np.moveaxis(img, 1, 0))  # (S, C, H, W)
        labels.append(np.ascontiguousarray(lab))
        ranges.append((start, start + img.shape[1]))
        start += img.shape[1]
    return SliceSet(
        images=np.ascontiguousarray(np.concatenate(images, axis=0)),
        labels=tuple(labels),
        subject_slices=tuple(ranges),
        subjects=tuple(s.name for s in subjects),
        raters_per_subject=tuple(int(lab.shape[0]) for lab in labels),
    )


def median_spacing(subjects: Sequence[SubjectData]) -> tuple[float, float, float]:
    """Median voxel size (S, H, W) of the subjects (the default training spacing in-plane)."""
    arr = np.array([s.spacing for s in subjects], dtype=np.float64)
    return tuple(float(v) for v in np.median(arr, axis=0))  # type: ignore[return-value]


def resolve_spacing(
    spacing: Sequence[float | None] | None, subjects: Sequence[SubjectData]
) -> tuple[float | None, float | None, float | None]:
    """Target spacing (S, H, W) of a run: given values, or the median in-plane spacing of the
    training subjects with the slice axis kept native."""
    med = median_spacing(subjects)
    if spacing is None:
        return (None, med[1], med[2])
    spacing = tuple(spacing)
    if len(spacing) != 3:
        raise InputError(f"spacing must have 3 entries (S, H, W); got {list(spacing)}")
    for s in spacing:
        if s is not None and (not math.isfinite(float(s)) or float(s) <= 0):
            raise InputError(f"spacing values must be positive mm; got {list(spacing)}")
    return tuple(None if s is None else float(s) for s in spacing)  # type: ignore[return-value]
