"""softseg dataset -> nnU-Net v2 raw dataset with fused labels (``softseg export nnunet``).

So a lab can train an nnU-Net baseline on exactly the data and split of a SoftSeg model and
compare both with ``softseg compare``. ``DST`` must be named ``DatasetNNN_Name`` (nnU-Net finds
datasets by that name under ``$nnUNet_raw``)::

    DST/dataset.json             channel_names (softseg channel order), labels {"background": 0,
                                 <class 1>: 1, ..., <class K>: K}, numTraining, file_ending
    DST/imagesTr/<subject>_0000.nii.gz ...   links to the subject's channel images (copies with copy=True)
    DST/labelsTr/<subject>.nii.gz            the raters fused with the run's fusion method, uint8
    DST/imagesTs/, labelsTs/                 the model's test subjects (nnU-Net never trains on them)
    DST/splits_final.json                    with a model: [{"train": [...], "val": [...]}] (fold 0)
    DST/softseg_export.json                  provenance: source dataset, fusion, model, split

nnU-Net reads ``splits_final.json`` from its *preprocessed* folder: copy it to
``$nnUNet_preprocessed/DatasetNNN_Name/`` after ``nnUNetv2_plan_and_preprocess`` and train fold 0
(``nnUNetv2_train NNN 2d 0``); ``docs/interchange.md`` has the commands.

Fusion is the training path's: :func:`softseg.fusion.training_target` (the fusion engine
:func:`softseg.fusion.fuse`, default region of interest, exactly what ``softseg train`` fits) on
the subject's raters at native resolution. nnU-Net needs integer labels, so a soft target
(``average``) is cut at 0.5 (``>= 0.5`` is foreground); STAPLE's target already is its consensus
(probability >= 0.5). ``random`` has no fused label and is refused.

K classes (a dataset.json with K >= 2 classes, DESIGN decision 11): each rater's work is read as
class maps (:func:`softseg.data.load_rater`: per-class files or an integer label map), fused with
``training_target(..., n_classes=K, class_maps=True)`` (multi-label STAPLE / label vote / class
average, what a K-class ``softseg train`` fits) and written as the argmax label map (0 =
background, k = class k; ties to the lower index, as :func:`softseg.metrics.class_argmax`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.geometry import check_same_grid
from softseg.interchange.plan import check_destination, place_file, write_json_file
from softseg.io import check_nifti
from softseg.outputs import output_folder

__all__ = ["EXPORT_RECORD", "ExportReport", "export_fusions", "export_nnunet", "model_split"]

#: Provenance file written into DST (marks a folder written by this command for --overwrite).
EXPORT_RECORD = "softseg_export.json"
_NAME_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_.-]+$")
#: Soft fused maps are cut here for nnU-Net's integer labels (>= is foreground).
LABEL_CUT = 0.5


def export_fusions() -> tuple[str, ...]:
    """Fusions that give one label map per case: the training fusions of
    :data:`softseg.fusion.METHODS` except ``random``."""
    from softseg.fusion import training_fusions

    return tuple(f for f in training_fusions() if f != "random")


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_nnunet` wrote.

    Attributes
    ----------
    path : Path
        The nnU-Net dataset folder.
    train, val, test : tuple of str
        Subjects of the model's split (``train`` holds every subject without a model).
    unsplit : tuple of str
        Subjects of the dataset that the model's split does not name (put in imagesTr, not in
        ``splits_final.json``).
    fusion : str
    labels : dict
        ``dataset.json`` labels.
    """

    path: Path
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    unsplit: tuple[str, ...]
    fusion: str
    labels: dict[str, int]


def model_split(model: str | os.PathLike) -> tuple[dict[str, list[str]], str | None]:
    """The train/val/test subjects and the fusion method recorded in a model file's card.

    Returns
    -------
    split : dict with keys train, val, test (lists of subject names)
    fusion : str or None
    """
    from softseg.modelfile import read_card

    card = read_card(model)
    if not card.split.train:
        raise InputError(f"{model}: the model card records no training subjects; it cannot give a split")
    split = {k: [str(s) for s in getattr(card.split, k)] for k in ("train", "val", "test")}
    return split, card.fusion


def _fused_label(subject: Any, fusion: str) -> tuple[np.ndarray, Any]:
    """The subject's raters fused, as a uint8 label map in the files' own axis order."""
    from softseg.data import load_rater, rater_to_soft
    from softseg.fusion import training_target
    from softseg.io import load_volume
    from softseg.metrics import class_argmax

    ref = check_nifti(subject.images[0])
    k = subject.n_classes
    if k > 1:  # every rater file on the image grid (headers only), then the class maps
        for p in subject.raters:
            check_same_grid(ref, check_nifti(p, label=True), hint="a rater must lie on its subject's image grid")
        loaded = [load_rater(subject, i) for i in range(len(subject.rater_ids))]
        maps = np.stack([values for values, _vol in loaded])  # (R, K+1, X, Y, Z)
        target = training_target(maps, fusion, n_classes=k, class_maps=True)[0]
        return class_argmax(np.asarray(target, dtype=np.float32))[0].astype(np.uint8), loaded[0][1]
    vols = [load_volume(p, label=True) for p in subject.raters]
    for vol in vols:
        check_same_grid(ref, vol, hint="a rater must lie on its subject's image grid")
    raters = np.stack([rater_to_soft(v) for v in vols])
    fused = training_target(raters, fusion)[0]
    return (fused >= LABEL_CUT).astype(np.uint8), vols[0]


def export_nnunet(
    dataset: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    fusion: str | None = None,
    model: str | os.PathLike | None = None,
    copy: bool = False,
    overwrite: bool = False,
) -> ExportReport:
    """Write a softseg dataset as an nnU-Net v2 raw dataset (see the module docstring).

    Parameters
    ----------
    dataset : path-like
        A softseg dataset folder (``softseg.data.scan_dataset`` layout).
    dst : path-like
        The nnU-Net dataset folder to create, named ``DatasetNNN_Name`` (NNN: 3 digits).
    fusion : str, optional
        Rater fusion (``staple``, ``average``, ``majority``); default: the model's fusion when a
        model is given (``random`` becomes ``staple``), else ``staple``.
    model : path-like, optional
        A softseg model file whose recorded split becomes ``splits_final.json`` (fold 0) and
        whose test subjects go to ``imagesTs``/``labelsTs``.
    copy : bool
        Copy the images instead of linking them.
    overwrite : bool
        Replace an earlier export at *dst*.

    Returns
    -------
    ExportReport

    Raises
    ------
    InputError
        A bad destination name or place (inside the dataset, existing without ``overwrite``),
        an unknown fusion, a model whose split names subjects the dataset lacks, mixed
        ``.nii``/``.nii.gz`` images, raters off their image grid; nothing is written.
    """
    from softseg.data import scan_dataset

    root = Path(os.path.abspath(dataset))
    dst_path = Path(os.path.abspath(dst))
    if not _NAME_RE.match(dst_path.name):
        raise InputError(
            f"{dst_path}: nnU-Net finds datasets by name; call the folder DatasetNNN_Name "
            "(3 digits, e.g. Dataset501_SpinalCord; custom ids from 500)"
        )
    dst_path = check_destination(dst_path, sources=(root,), overwrite=overwrite, marker=EXPORT_RECORD,
                                 what="softseg export nnunet")
    split = None
    if model is not None:
        split, model_fusion = model_split(model)
        if fusion is None:
            fusion = model_fusion if model_fusion not in (None, "random") else "staple"
    fusion = fusion or "staple"
    choices = export_fusions()
    if fusion not in choices:
        raise InputError(f"--fusion {fusion!r}: choose one of {', '.join(choices)} (nnU-Net needs one label map per case)")
    info = scan_dataset(root)
    names = set(info.names)
    if split is not None:
        missing = sorted(s for k in ("train", "val", "test") for s in split[k] if s not in names)
        if missing:
            raise InputError(
                f"{model}: the model was trained on subjects that {root} lacks ({', '.join(missing[:5])}"
                f"{'...' if len(missing) > 5 else ''}); export the dataset the model was trained on"
            )
        test = set(split["test"])
        unsplit = tuple(sorted(names - set(split["train"]) - set(split["val"]) - test))
    else:
        split = {"train": sorted(names), "val": [], "test": []}
        test, unsplit = set(), ()
    endings = {".nii.gz" if p.name.lower().endswith(".nii.gz") else ".nii" for s in info.subjects for p in s.images}
    if len(endings) > 1:
        raise InputError(f"{root}: images mix .nii and .nii.gz; nnU-Net needs one file ending (compress the .nii files)")
    ending = endings.pop()
    labels = {"background": 0, **{str(c): k for k, c in enumerate(info.classes, start=1)}}
    with output_folder(dst_path, overwrite=overwrite) as stage:
        for sub in info.subjects:
            images_dir, labels_dir = ("imagesTs", "labelsTs") if sub.name in test else ("imagesTr", "labelsTr")
            for i, image in enumerate(sub.images):
                place_file(image, stage / images_dir / f"{sub.name}_{i:04d}{ending}", copy=copy)
            label, like = _fused_label(sub, fusion)
            _save_label(stage / labels_dir / f"{sub.name}{ending}", label, like)
        n_train = sum(1 for s in info.subjects if s.name not in test)
        write_json_file(stage / "dataset.json", {
            "channel_names": {str(i): c for i, c in enumerate(info.channels)},
            "labels": labels,
            "numTraining": n_train,
            "file_ending": ending,
            "name": dst_path.name.split("_", 1)[1],
            "description": f"exported by softseg export nnunet from {root} (fusion {fusion})",
        })
        if model is not None:
            write_json_file(stage / "splits_final.json", [{"train": sorted(split["train"]), "val": sorted(split["val"])}])  # type: ignore[arg-type]
        write_json_file(stage / EXPORT_RECORD, {
            "softseg_export": {
                "dataset": str(root), "fusion": fusion, "label_cut": LABEL_CUT,
                "model": None if model is None else str(Path(os.path.abspath(model))),
                "split": split, "unsplit": list(unsplit), "copied": bool(copy),
            }
        })
    return ExportReport(
        path=dst_path, train=tuple(sorted(split["train"])), val=tuple(sorted(split["val"])),
        test=tuple(sorted(test)), unsplit=unsplit, fusion=fusion, labels=labels,
    )


def _save_label(path: Path, label: np.ndarray, like: Any) -> None:
    from softseg.io import save_volume

    path.parent.mkdir(parents=True, exist_ok=True)
    save_volume(path, label, like=like)
