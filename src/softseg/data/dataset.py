"""The dataset folder: scanning, validating and loading subjects (one class or K classes).

Dataset folder (DESIGN.md; the multi-class contract of DESIGN decision 11 is written up in
``docs/training.md``)::

    DATASET/dataset.json                          optional: channels, classes, labels, groups
    DATASET/<subject>/image.nii.gz                one contrast ...
    DATASET/<subject>/image_<c>.nii.gz            ... or several, channels sorted by contrast name
    DATASET/<subject>/rater-<id>.nii.gz           one class: binary, confidence-level or soft map;
                                                  K classes: an integer label map 0..K
    DATASET/<subject>/rater-<id>_label-<class>.nii.gz   K classes: one binary, confidence-level or
                                                  soft map per class (<class> = the class's key,
                                                  its name with spaces as '-', or its index 1..K)
    DATASET/<subject>/rater-<id>[...].json        optional sidecar (confidence scale, class,
                                                  pre-annotation record)

The classes are ``dataset.json``'s ``"classes"`` (index 1..K, 0 = background) or its nnU-Net
``"labels"`` (``{"background": 0, "GM": 1, ...}``: label value k is class k); without either the
dataset has one class, ``"foreground"``.

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
    "RATER_KINDS",
    "DatasetInfo",
    "Subject",
    "SubjectData",
    "load_rater",
    "load_subject",
    "rater_to_soft",
    "scan_dataset",
]

_IMAGE_RE = re.compile(r"^image(?:_(?P<contrast>.+))?$")
_RATER_RE = re.compile(r"^rater-(?P<id>.+?)(?:_label-(?P<cls>.+))?$")

#: How a rater's work is stored: ``"map"`` one file (single-class dataset), ``"labels"`` one
#: integer label map 0..K, ``"classes"`` one file per class (K files, class order).
RATER_KINDS = ("map", "labels", "classes")

#: The class of a dataset without ``"classes"`` / ``"labels"`` in its dataset.json.
DEFAULT_CLASS = "foreground"


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
        Every rater file, rater by rater (sorted by rater id); a rater with per-class files
        contributes its K files in class order (:attr:`rater_files` groups them).
    rater_ids : tuple of str
        One per rater.
    group : str or None
        Group from ``dataset.json`` (e.g. acquisition centre) for group-wise splits.
    rater_kinds : tuple of str
        Per rater, one of :data:`RATER_KINDS`; empty = every rater ``"map"`` (single class).
    classes : tuple of str
        The dataset's foreground class names 1..K when K >= 2; empty for one class.
    """

    name: str
    images: tuple[Path, ...]
    raters: tuple[Path, ...]
    rater_ids: tuple[str, ...]
    group: str | None = None
    rater_kinds: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        """K, the dataset's number of foreground classes."""
        return max(1, len(self.classes))

    @property
    def kinds(self) -> tuple[str, ...]:
        """Per rater, its kind (:data:`RATER_KINDS`)."""
        return self.rater_kinds or ("map",) * len(self.rater_ids)

    @property
    def rater_files(self) -> tuple[tuple[Path, ...], ...]:
        """Per rater, its files: one, or K per-class files in class order."""
        out, start = [], 0
        for kind in self.kinds:
            n = self.n_classes if kind == "classes" else 1
            out.append(tuple(self.raters[start : start + n]))
            start += n
        return tuple(out)


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
        Foreground class names, index 1..K (``("foreground",)`` without dataset.json classes).
    class_keys : tuple of str
        Their file keys (``rater-<id>_label-<key>.nii.gz``); empty = :func:`class_key` of the
        names.
    """

    root: Path
    subjects: tuple[Subject, ...]
    channels: tuple[str, ...]
    classes: tuple[str, ...] = (DEFAULT_CLASS,)
    class_keys: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.subjects)

    @property
    def n_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.classes)

    @property
    def keys(self) -> tuple[str, ...]:
        """The class file keys (dataset.json's short keys, else the names with spaces as '-')."""
        from softseg.dataset_json import class_key

        return self.class_keys or tuple(class_key(c) for c in self.classes)

    @property
    def rater_ids(self) -> tuple[str, ...]:
        """All rater ids that occur in the dataset, sorted."""
        return tuple(sorted({r for s in self.subjects for r in s.rater_ids}))

    def check_classes(self, classes: tuple[str, ...] | list[str], *, source: str) -> None:
        """Refuse a model (or anything else with a class list) whose classes are not this
        dataset's, in the same order.

        Parameters
        ----------
        classes : sequence of str
            The other class list (index 1..K), e.g. a model card's ``classes``.
        source : str
            What holds it (a model file), first in the message.

        Raises
        ------
        InputError
            ``"m.safetensors: the model predicts the classes (a, b) but DATASET has (c); ..."``.
        """
        if tuple(classes) != tuple(self.classes):
            raise InputError(
                f"{source}: the model predicts the classes ({', '.join(classes)}) but {self.root} has "
                f"({', '.join(self.classes)}); use a model of this dataset's classes (same names, same "
                "order) or a dataset of the model's"
            )

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


def _class_list(meta: Any, root: Path) -> Any:
    """The dataset's classes as a :class:`softseg.dataset_json.ClassList`."""
    from softseg.dataset_json import ClassList, class_key

    names = meta.class_names if meta is not None else None
    if names:
        return ClassList(tuple(names), tuple(meta.class_keys), str(root / "dataset.json"))
    return ClassList((DEFAULT_CLASS,), (class_key(DEFAULT_CLASS),),
                     f"{root} (no classes in a dataset.json: one class, {DEFAULT_CLASS!r})")


def _check_preannotation(path: Path, allow: bool) -> None:
    """Refuse a model's pre-annotation that no rater corrected (issue 17; API-annotate2 rule)."""
    from softseg.preannotate import is_uncorrected
    from softseg.sidecar import read_rater_sidecar

    side = read_rater_sidecar(path)
    if side is None or allow:
        return
    record = side.extra.get("preannotation")
    if is_uncorrected(side.preannotated_by, record):
        model = side.preannotated_by or (record or {}).get("model") or "a model"
        raise InputError(
            f"{path}: pre-annotated by {model} and not corrected by the rater; correct it (or "
            "remove the file), or pass --allow-preannotated to train on a model's own output"
        )


def _subject_raters(sub: Path, found: dict[str, dict[int | None, Path]], classes: Any) -> tuple[list[Path], list[str], list[str]]:
    """Group a subject's rater files by rater: (files, ids, kinds)."""
    k = classes.k
    files: list[Path] = []
    ids: list[str] = []
    kinds: list[str] = []
    for rid in sorted(found):
        per = found[rid]
        if None in per and len(per) > 1:
            other = next(p for c, p in per.items() if c is not None)
            raise InputError(
                f"subject {sub.name!r}: rater {rid!r} has both {per[None].name} and {other.name}; "
                "keep one integer label map or the per-class files, not both"
            )
        if None in per:
            files.append(per[None])
            kinds.append("map" if k == 1 else "labels")
        elif k == 1:
            files.append(per[1])
            kinds.append("map")
        else:
            missing = [classes.keys[c - 1] for c in range(1, k + 1) if c not in per]
            if missing:
                names = ", ".join(f"rater-{rid}_label-{m}.nii.gz" for m in missing)
                raise InputError(
                    f"subject {sub.name!r}: rater {rid!r} has per-class files but not {names}; "
                    "every rater needs one file per class of dataset.json (an empty map where "
                    "the class is absent)"
                )
            files.extend(per[c] for c in range(1, k + 1))
            kinds.append("classes")
        ids.append(rid)
    return files, ids, kinds


def scan_dataset(folder: str | os.PathLike, *, allow_preannotated: bool = False) -> DatasetInfo:
    """Find and check the subjects of a dataset folder (without reading the images).

    Parameters
    ----------
    folder : path-like
        The dataset root (see the module docstring for the layout).
    allow_preannotated : bool, keyword-only
        Accept rater files that a model pre-annotated and no rater corrected (sidecar
        ``preannotated_by`` with ``preannotation.rater_changed_voxels`` 0 or missing,
        :func:`softseg.preannotate.is_uncorrected`); refused by default (issue 17).

    Returns
    -------
    DatasetInfo

    Raises
    ------
    InputError
        Missing or empty folder, a subject without image or rater files (named), subjects with
        different channels, an invalid ``dataset.json`` (:mod:`softseg.dataset_json`: wrong
        types, unknown keys, not UTF-8, too deep — one line naming the key), a per-class rater
        file of a class that dataset.json does not list, a rater missing a class's file or
        holding both a label map and per-class files, two files of one rater and class, an
        invalid rater sidecar, an uncorrected pre-annotation (unless allowed).
    """
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the dataset folder (DATASET/<subject>/image.nii.gz)")
    meta = _read_dataset_json(root)
    groups = _groups_from_json(meta, root / "dataset.json")
    classes = _class_list(meta, root)
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
        found: dict[str, dict[int | None, Path]] = {}
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
                cls = None if m.group("cls") is None else classes.index(m.group("cls"), f)
                per = found.setdefault(m.group("id"), {})
                if cls is not None and cls in per:
                    raise InputError(
                        f"subject {sub.name!r}: {per[cls].name} and {f.name} both hold class "
                        f"{classes.names[cls - 1]!r} of rater {m.group('id')!r}; keep one"
                    )
                per[cls] = f
        if not images:
            raise InputError(f"subject {sub.name!r} has no image (expected {sub}/image.nii.gz or image_<contrast>.nii.gz)")
        if "" in images and len(images) > 1:
            raise InputError(
                f"subject {sub.name!r} mixes image.nii.gz with image_<contrast> files; use one naming scheme"
            )
        if not found:
            raise InputError(f"subject {sub.name!r} has no rater label (expected {sub}/rater-<id>.nii.gz)")
        contrasts = tuple(sorted(images))
        if contrasts_ref is None:
            contrasts_ref = contrasts
        elif contrasts != contrasts_ref:
            raise InputError(
                f"subject {sub.name!r} has channels {list(contrasts)} but {subjects[0].name!r} has "
                f"{list(contrasts_ref)}; every subject needs the same image_<contrast> files"
            )
        files, rater_ids, kinds = _subject_raters(sub, found, classes)
        for f in files:
            _check_preannotation(f, allow_preannotated)
        subjects.append(
            Subject(
                name=sub.name,
                images=tuple(images[c] for c in contrasts),
                raters=tuple(files),
                rater_ids=tuple(rater_ids),
                group=groups.get(sub.name),
                rater_kinds=tuple(kinds) if classes.k > 1 else (),
                classes=tuple(classes.names) if classes.k > 1 else (),
            )
        )
    assert contrasts_ref is not None
    channels: tuple[str, ...]
    named = meta.channels if meta is not None else None
    if contrasts_ref == ("",):
        channels = (named[0],) if named is not None and len(named) == 1 else ("image",)
    else:
        channels = contrasts_ref
    return DatasetInfo(root=root, subjects=tuple(subjects), channels=channels,
                       classes=tuple(classes.names), class_keys=tuple(classes.keys))


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True, eq=False)
class SubjectData:
    """A subject's arrays in display order (axis 0 = axial slices, see the module docstring).

    Attributes
    ----------
    name : str
    images : ndarray, shape (C, S, H, W), float32
        Raw intensities.
    raters : ndarray, float32
        One class: ``(R, S, H, W)`` soft rater maps in [0, 1] (binary maps as 0/1, levels
        mapped through their scale). K classes: ``(R, K+1, S, H, W)`` class probabilities,
        background first, summing to 1 at every voxel (per-class files through
        :func:`softseg.fusion.class_probabilities`; label maps one-hot).
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

    @property
    def n_classes(self) -> int:
        """K: 1 for ``(R, S, H, W)`` raters, else ``raters.shape[1] - 1``."""
        return 1 if self.raters.ndim == self.images.ndim else int(self.raters.shape[1]) - 1


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


def _one_hot_labels(volume: Volume, k: int, classes: Any) -> np.ndarray:
    """An integer label map 0..K as (K+1, X, Y, Z) float32 one-hot."""
    arr = np.asarray(volume.array)
    path = volume.path if volume.path is not None else "label map"
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            bad = float(arr[~whole].flat[0])
            raise InputError(
                f"{path}: an integer label map (0 = background, 1..{k}) holds {bad:g}; soft or "
                "confidence maps of a multi-class dataset go in per-class files "
                "rater-<id>_label-<class>.nii.gz"
            )
    elif arr.dtype.kind not in "iub":
        raise InputError(f"{path}: a label map must hold whole numbers; got dtype {arr.dtype}")
    if arr.size and float(arr.min()) < 0:
        raise InputError(f"{path}: holds negative label values ({float(arr.min()):g}); label values are 0..{k}")
    labels = arr.astype(np.int64, copy=False) if arr.dtype.kind == "f" else arr
    classes.check_label_values(labels, path)
    out = np.empty((k + 1, *arr.shape), dtype=np.float32)
    for c in range(k + 1):
        np.equal(labels, c, out=out[c], casting="unsafe")
    return out


def load_rater(subject: Subject, index: int, *, reference: Volume | None = None) -> tuple[np.ndarray, Volume]:
    """One rater's work as values in [0, 1], in the files' own axis order.

    Parameters
    ----------
    subject : Subject
    index : int
        The rater's position in ``subject.rater_ids``.
    reference : Volume, optional
        Every file must lie on its voxel grid (the subject's first image).

    Returns
    -------
    values : ndarray, float32
        One class: ``(X, Y, Z)`` (:func:`rater_to_soft`). K classes: ``(K+1, X, Y, Z)`` class
        probabilities, background first (per-class maps through
        :func:`softseg.fusion.class_probabilities`, a label map one-hot).
    volume : Volume
        The rater's first file (geometry, header).

    Raises
    ------
    InputError
        Every refusal of :func:`softseg.io.load_volume`, a file off the reference grid, levels
        without a scale, a label map holding values outside 0..K or fractions, per-class maps
        summing above 1 (beyond 1e-5) at a voxel.
    """
    from softseg.dataset_json import ClassList

    k = subject.n_classes
    kind = subject.kinds[index]
    files = subject.rater_files[index]
    names = subject.classes or tuple(str(c) for c in range(1, k + 1))
    classes = ClassList(names, names, "the dataset's classes")
    vols = []
    for p in files:
        v = load_volume(p, label=True, what="rater label map")
        if reference is not None:
            _same_geometry(reference, v, subject.name)
        vols.append(v)
    if kind == "map":
        return rater_to_soft(vols[0]), vols[0]
    if kind == "labels":
        return _one_hot_labels(vols[0], k, classes), vols[0]
    from softseg.fusion import class_probabilities

    name = f"subject {subject.name!r}: rater {subject.rater_ids[index]!r} ({', '.join(p.name for p in files)})"
    return class_probabilities([rater_to_soft(v) for v in vols], name=name), vols[0]


def load_subject(subject: Subject) -> SubjectData:
    """Read and check a subject's images and raters, reoriented to display order.

    Parameters
    ----------
    subject : Subject

    Raises
    ------
    InputError
        Every refusal of :func:`softseg.io.load_volume` (named by full path), NaN/Inf in an
        image, shapes or affines that disagree inside the subject (both files named), bad label
        values (:func:`load_rater`).
    """
    vols = [load_volume(p, what="image") for p in subject.images]
    for v in vols:
        if v.array.dtype.kind == "f" and not np.isfinite(v.array).all():
            n_bad = int(v.array.size - np.count_nonzero(np.isfinite(v.array)))
            raise InputError(f"{v.path}: image contains {n_bad} NaN/Inf voxels; fix or mask them first")
    ref = vols[0]
    for v in vols[1:]:
        _same_geometry(ref, v, subject.name)
    raters = [load_rater(subject, i, reference=ref)[0] for i in range(len(subject.rater_ids))]
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
