"""nnU-Net v2 / Medical Segmentation Decathlon datasets -> softseg dataset folders.

An nnU-Net v2 raw dataset (``nnUNet_raw/DatasetNNN_Name``, see nnU-Net's
``documentation/dataset_format.md``)::

    dataset.json           channel_names {"0": "T2", "1": "ADC"}, labels {"background": 0, "PZ": 1, ...},
                           numTraining, file_ending ".nii.gz"
    imagesTr/<case>_0000.nii.gz, <case>_0001.nii.gz ...   one file per channel (4-digit index)
    labelsTr/<case>.nii.gz                                 integer label map
    imagesTs/...                                           test images (no labels: not imported)

The Medical Segmentation Decathlon's own ``dataset.json`` (``modality`` and ``labels`` keyed by
index, a ``training`` list) is read too; its single-modality images (no ``_0000`` suffix) are
linked as they are, its 4D multi-modality images are refused (split them with
``nnUNetv2_convert_MSD_dataset`` first: softseg reads 3D volumes). nnU-Net v2's explicit
``"dataset"`` key (file lists per case) is followed as nnU-Net does.

The softseg dataset gets, per case, ``image_<channel>.nii.gz`` links (``image.nii.gz`` for one
channel) and the label map as one rater, ``rater-<id>.nii.gz``, an **integer label map** with
``dataset.json`` ``"labels"`` (name -> value, nnU-Net style) and ``"classes"`` (names ordered by
value, background excluded): the multi-class contract of ``docs/training.md``. Channel names
are nnU-Net's, made safe for file names (``T2 FLAIR`` -> ``T2-FLAIR``); softseg orders channels
by name.

Checked before anything is written, each a one-line error naming the file: no ``dataset.json``,
region-based or ``ignore`` labels (not supported), labels not consecutive from 0, a case missing a
channel or its label, a label without an image, files of a case on different grids, label
values that ``dataset.json`` does not declare.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.geometry import check_same_grid
from softseg.interchange.plan import (
    ImportPlan, Link, Unmatched, checked_dataset_json, class_entries, read_json_object,
)
from softseg.io import check_nifti

__all__ = ["NNUNET_ENDINGS", "parse_labels", "plan_nnunet_import", "read_nnunet_json"]

#: File endings softseg reads (nnU-Net also knows .nrrd, .mha, .png, .tif ...).
NNUNET_ENDINGS = (".nii.gz", ".nii")
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})$")


def read_nnunet_json(root: Path) -> dict[str, Any]:
    """The nnU-Net/MSD ``dataset.json`` of *root* (read safely; one-line errors)."""
    return read_json_object(
        root / "dataset.json", what="nnU-Net dataset.json",
        missing="an nnU-Net dataset folder (DatasetNNN_Name) holds dataset.json, imagesTr/ and labelsTr/",
        expected="with channel_names and labels",
    )


def parse_labels(data: Mapping[str, Any], *, source: str) -> dict[str, int]:
    """``dataset.json`` labels as ``name -> value`` (nnU-Net v2), sorted by value.

    Reads v2 (``{"background": 0, "GM": 1}``) and MSD/v1 (``{"0": "background", "1": "GM"}``).

    Raises
    ------
    InputError
        Missing labels, region-based labels (lists of values), an ``ignore`` label, values that
        are not whole numbers, no background 0, values not consecutive (nnU-Net requires 0, 1, 2...).
    """
    labels = data.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{source}: 'labels' missing or empty; expected e.g. {{\"background\": 0, \"tumour\": 1}}")
    if all(str(k).isdigit() for k in labels) and all(isinstance(v, str) for v in labels.values()):
        labels = {str(v): int(k) for k, v in labels.items()}  # MSD / nnU-Net v1: index -> name
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise InputError(
                f"{source}: label {name!r} is a region ({list(value)}); region-based labels are not "
                "supported by softseg (give one value per class)"
            )
        if str(name).lower() == "ignore":
            raise InputError(f"{source}: the 'ignore' label (partial annotation) is not supported by softseg")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or value < 0:
            raise InputError(f"{source}: label {name!r} has value {value!r}; values are whole numbers >= 0")
        out[str(name)] = int(value)
    values = sorted(out.values())
    if len(set(values)) != len(values):
        raise InputError(f"{source}: two labels share a value ({out})")
    if values[0] != 0:
        raise InputError(f"{source}: no background label 0 ({out})")
    if values != list(range(len(values))):
        raise InputError(f"{source}: label values {values} are not consecutive (nnU-Net needs 0, 1, 2, ...)")
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _channel_names(data: Mapping[str, Any], *, source: str) -> list[str]:
    names = data.get("channel_names", data.get("modality"))
    if not isinstance(names, Mapping) or not names:
        raise InputError(f"{source}: 'channel_names' (or MSD 'modality') missing; expected e.g. {{\"0\": \"T2\"}}")
    try:
        keys = sorted(int(k) for k in names)
    except (TypeError, ValueError):
        raise InputError(f"{source}: channel_names keys must be channel indices \"0\", \"1\", ...") from None
    if keys != list(range(len(keys))):
        raise InputError(f"{source}: channel indices {keys} are not 0..{len(keys) - 1}")
    return [str(names[str(k)]) for k in keys]


def _safe_names(names: list[str]) -> list[str]:
    safe = [re.sub(r"[^A-Za-z0-9.-]+", "-", n).strip("-") or f"channel{i}" for i, n in enumerate(names)]
    if len(set(safe)) != len(safe):
        safe = [f"{i}-{s}" for i, s in enumerate(safe)]
    return safe


def _ending(name: str, ending: str) -> str | None:
    return name[: -len(ending)] if name.endswith(ending) else None


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _cases_from_folders(root: Path, ending: str, n_channels: int, data: Mapping[str, Any],
                        unmatched: list[Unmatched]) -> dict[str, list[Path]]:
    images: dict[str, dict[int, Path]] = defaultdict(dict)
    msd = {}
    for entry in data.get("training", []) or []:  # MSD: [{"image": "./imagesTr/x.nii.gz", "label": ...}]
        if isinstance(entry, Mapping) and isinstance(entry.get("image"), str):
            msd[Path(entry["image"]).name] = entry
    for f in _files(root / "imagesTr"):
        stem = _ending(f.name, ending)
        m = _CHANNEL_RE.match(stem) if stem is not None else None
        if stem is None:
            unmatched.append(Unmatched(f, f"not a {ending} file"))
        elif m:
            images[m.group("case")][int(m.group("index"))] = f
        elif f.name in msd:  # MSD: one file per case, all modalities in it
            if n_channels != 1:
                raise InputError(
                    f"{f}: a Decathlon image holding {n_channels} modalities (4D); softseg reads 3D "
                    "volumes: convert the task with nnUNetv2_convert_MSD_dataset first"
                )
            images[stem][0] = f
        else:
            unmatched.append(Unmatched(f, "not named <case>_<XXXX>" + ending))
    cases: dict[str, list[Path]] = {}
    for case, chans in sorted(images.items()):
        for i in range(n_channels):
            if i not in chans:
                raise InputError(
                    f"{root / 'imagesTr' / f'{case}_{i:04d}{ending}'}: missing; case {case!r} needs "
                    f"{n_channels} channel file(s) _0000..._{n_channels - 1:04d}"
                )
        extra = sorted(set(chans) - set(range(n_channels)))
        for i in extra:
            raise InputError(
                f"{chans[i]}: channel {i:04d} but dataset.json declares {n_channels} channel(s) "
                "(channel_names); fix dataset.json or remove the file"
            )
        cases[case] = [chans[i] for i in range(n_channels)]
    return cases


def _cases_from_dataset_key(root: Path, data: Mapping[str, Any], n_channels: int) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    entries = data["dataset"]
    if not isinstance(entries, Mapping):
        raise InputError(f"{root / 'dataset.json'}: 'dataset' must map case -> {{images, label}}")
    cases, labels = {}, {}

    def where(p: Any) -> Path:
        return Path(p) if os.path.isabs(str(p)) else root / str(p)

    for case, entry in sorted(entries.items()):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("images"), list) or "label" not in entry:
            raise InputError(f"{root / 'dataset.json'}: dataset.{case}: expected {{\"images\": [...], \"label\": ...}}")
        if len(entry["images"]) != n_channels:
            raise InputError(
                f"{root / 'dataset.json'}: dataset.{case}: {len(entry['images'])} image(s) but "
                f"{n_channels} channel(s) declared"
            )
        cases[str(case)] = [where(p) for p in entry["images"]]
        labels[str(case)] = where(entry["label"])
    return cases, labels


def _label_values(path: Path) -> np.ndarray:
    from softseg.io import load_volume

    values = np.unique(load_volume(path, label=True, what="nnU-Net label map").array)
    if values.dtype.kind == "f" and np.any(values != np.round(values)):
        raise InputError(f"{path}: an nnU-Net label map must hold whole numbers; found {values[:5].tolist()}...")
    return values


def plan_nnunet_import(source: str | os.PathLike, *, rater: str = "1", check_values: bool = True) -> ImportPlan:
    """Plan the import of an nnU-Net v2 / MSD dataset (nothing is written; see the module docstring).

    Parameters
    ----------
    source : path-like
        The dataset folder (``DatasetNNN_Name`` or ``TaskNN_Name``) with ``dataset.json``.
    rater : str
        Rater id of the label maps (``rater-<id>.nii.gz``); letters, digits and ``-``.
    check_values : bool
        Read every label map and check its values against ``dataset.json`` (default; the
        images themselves are only opened for their headers).

    Returns
    -------
    ImportPlan

    Raises
    ------
    InputError
        See the module docstring.
    """
    root = Path(os.path.abspath(source))
    if not root.is_dir():
        raise InputError(f"{root}: no such nnU-Net dataset folder")
    if not re.fullmatch(r"[A-Za-z0-9-]+", rater):
        raise InputError(f"--rater {rater!r}: use letters, digits and '-' only")
    data = read_nnunet_json(root)
    source_json = str(root / "dataset.json")
    labels = parse_labels(data, source=source_json)
    names = _channel_names(data, source=source_json)
    ending = str(data.get("file_ending", ".nii.gz"))
    if ending not in NNUNET_ENDINGS:
        raise InputError(f"{source_json}: file_ending {ending!r}; softseg reads NIfTI ({', '.join(NNUNET_ENDINGS)})")
    unmatched: list[Unmatched] = []
    if "dataset" in data:
        cases, label_files = _cases_from_dataset_key(root, data, len(names))
    else:
        cases = _cases_from_folders(root, ending, len(names), data, unmatched)
        label_files = {}
        for f in _files(root / "labelsTr"):
            stem = _ending(f.name, ending)
            if stem is None:
                unmatched.append(Unmatched(f, f"not a {ending} file"))
            elif stem not in cases:
                raise InputError(
                    f"{f}: a label without an image (no imagesTr/{stem}_0000{ending}); add the image "
                    "or remove the label"
                )
            else:
                label_files[stem] = f
    if not cases:
        raise InputError(f"{root / 'imagesTr'}: no training images (<case>_0000{ending})")
    for case in cases:
        if case not in label_files:
            raise InputError(f"{root / 'labelsTr' / (case + ending)}: missing; every training case needs its label map")
    for folder in ("imagesTs", "labelsTs"):
        for f in _files(root / folder):
            unmatched.append(Unmatched(f, f"{folder}: test data without training labels; not imported"))
    safe = _safe_names(names)
    allowed = set(labels.values())
    links: list[Link] = []
    for case in sorted(cases):
        files = cases[case]
        for f in files + [label_files[case]]:
            if not f.exists():
                raise InputError(f"{f}: missing (listed in dataset.json or a dangling link)")
        ref = check_nifti(files[0])
        for f in files[1:] + [label_files[case]]:
            check_same_grid(ref, check_nifti(f, what="label" if f == label_files[case] else "image"), hint="the files of a case must share one voxel grid")
        if check_values:
            values = _label_values(label_files[case])
            bad = sorted(set(int(v) for v in values) - allowed)
            if bad:
                raise InputError(
                    f"{label_files[case]}: label value(s) {bad} are not in dataset.json labels "
                    f"{labels}; add them to dataset.json or fix the label map"
                )
        ext = ".nii.gz" if files[0].name.endswith(".nii.gz") else ".nii"
        for name, f in zip(safe, files):
            target = f"image{ext}" if len(files) == 1 else f"image_{name}{ext}"
            links.append(Link(source=f, target=f"{case}/{target}", role="image"))
        lext = ".nii.gz" if label_files[case].name.endswith(".nii.gz") else ".nii"
        links.append(Link(source=label_files[case], target=f"{case}/rater-{rater}{lext}", role="label"))
    classes = [name for name, value in labels.items() if value != 0]
    dataset_json = {"channels": sorted(safe), "classes": class_entries(classes), "labels": labels,
                    "source": {"format": "nnunet", "path": str(root), "record": "softseg_import.json"}}
    checked_dataset_json(dataset_json, source=f"dataset.json for {root}")
    record = {"channel_names": {s: n for s, n in zip(safe, names)}, "nnunet_channel_order": safe}
    return ImportPlan(
        kind="nnunet",
        source=root,
        links=tuple(sorted(links, key=lambda k: k.target)),
        dataset_json=dataset_json,
        unmatched=tuple(sorted(unmatched, key=lambda u: str(u.path))),
        record=record,
    )
