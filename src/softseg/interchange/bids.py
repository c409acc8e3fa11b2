"""BIDS datasets -> softseg dataset folders (``softseg import bids``).

The raw dataset and every derivatives pipeline folder are indexed with **pybids**
(:class:`bids.BIDSLayout`, ``validate=False`` so that nothing is dropped silently: every NIfTI
file either becomes part of the import or is listed as not imported, with the reason).

What is read
------------
* **Subjects**: every ``sub-<label>`` (``[ses-<label>]``) of the raw dataset; with sessions the
  softseg subject is ``sub-<label>_ses-<label>``.
* **Channels**: the raw images of one datatype (``anat`` by default). A channel is the file name
  without the ``sub-``/``ses-`` entities and the extension: ``T2w``, ``T1w``, ``acq-sag_T2w``.
  Every subject needs every channel (else one line names the subject and the missing channel);
  ``contrasts`` narrows them (a contrast matches a channel or its suffix). All channels of a
  subject must lie on one voxel grid (checked from the headers).
* **Labels** come from the derivatives pipeline folders (``derivatives/<pipeline>/``). A file is
  a label when it has a ``label-`` entity, an ivadomed-style ``<what>-<origin>`` part
  (``seg-manual``, ``gmseg-manual``, ``lesion-manual-rater1``) or a ``mask``, ``dseg``,
  ``probseg`` or ``seg`` suffix. Its raw image is found by name: ivadomed-style and spine-generic
  labels start with the raw image's name (``sub-01_T2w`` + ``_seg-manual``); BIDS-standard labels
  without a contrast (``sub-01_desc-rater1_mask``) belong to the raw images with the same
  entities. A label whose raw image does not exist is an error (one line naming the file).

Raters and classes
------------------
* The **class** of a label is its ``label-`` value (``label-SC`` -> ``SC``), else the ivadomed
  key (``gmseg-manual`` -> ``gmseg``), else its suffix (``mask``).
* The **rater** is the pipeline folder, the ``desc-`` and ``rater-`` values and the ivadomed
  origin (``manual-rater1``) together: every distinct combination is one rater. The rater id is
  made of the parts that differ between raters (``derivatives/labels`` and
  ``derivatives/labels-rater2`` -> raters ``labels`` and ``labels-rater2``; ``desc-rater1`` and
  ``desc-rater2`` in one folder -> ``rater1`` and ``rater2``); ``softseg_import.json`` records
  where each id comes from.
* One class: ``<subject>/rater-<id>.nii.gz``; several: ``rater-<id>_label-<class>.nii.gz`` and
  ``dataset.json`` ``"classes"`` (sorted), the multi-class layout of ``docs/training.md``.

``derivatives``, ``labels``, ``descs``, ``contrasts`` and ``subjects`` narrow the selection;
a value that matches nothing is an error that lists what exists. Subjects without any selected
label are not imported and listed.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softseg.errors import InputError
from softseg.geometry import check_same_grid
from softseg.interchange.plan import (
    ImportPlan, Link, Unmatched, checked_dataset_json, class_entries, read_json_object,
)
from softseg.io import check_nifti

__all__ = ["LABEL_SUFFIXES", "parse_bids_name", "plan_bids_import"]

#: Suffixes of BIDS derivative files that hold segmentations.
LABEL_SUFFIXES = ("mask", "dseg", "probseg", "seg")
#: Entities that identify the acquisition (shared by a raw image and its derivatives).
_RAW_ENTITIES = (
    "sub", "ses", "task", "acq", "ce", "trc", "stain", "rec", "dir", "run", "mod", "echo",
    "flip", "inv", "mt", "part", "chunk",
)
#: Every other BIDS entity key a derivative may carry (not an ivadomed-style label part).
_OTHER_ENTITIES = (
    "space", "res", "den", "label", "desc", "hemi", "from", "to", "mode", "model", "subset",
    "atlas", "roi", "split", "recording", "cohort", "sample", "tracksys", "nuc", "voi", "rater",
)
_KNOWN = frozenset(_RAW_ENTITIES + _OTHER_ENTITIES)
def _split_ext(name: str) -> tuple[str, str] | None:
    from softseg.io import NIFTI_SUFFIXES

    low = name.lower()
    for ext in NIFTI_SUFFIXES:
        if low.endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return None


@dataclass(frozen=True)
class BidsName:
    """A BIDS file name split by the filename grammar (``key-value`` parts joined by ``_``).

    Attributes
    ----------
    stem : str
        Name without extension.
    extension : str
        ``".nii.gz"`` or ``".nii"``.
    entities : dict
        ``key -> value`` of the ``key-value`` parts (first occurrence; the value is everything
        after the first ``-``, so ivadomed's ``lesion-manual-rater1`` gives
        ``{"lesion": "manual-rater1"}``).
    suffix : str or None
        The last part when it has no ``-`` (``T2w``, ``mask``).
    bare : tuple of str
        Parts without ``-`` before the last one (ivadomed labels name their contrast there).
    """

    stem: str
    extension: str
    entities: dict[str, str]
    suffix: str | None
    bare: tuple[str, ...]


def parse_bids_name(name: str) -> BidsName | None:
    """Split a NIfTI file name by the BIDS filename grammar; None for a non-NIfTI name."""
    split = _split_ext(name)
    if split is None:
        return None
    stem, ext = split
    parts = stem.split("_")
    entities: dict[str, str] = {}
    bare = []
    suffix = None
    for i, part in enumerate(parts):
        if "-" in part:
            key, value = part.split("-", 1)
            entities.setdefault(key, value)
        elif i == len(parts) - 1:
            suffix = part
        else:
            bare.append(part)
    return BidsName(stem=stem, extension=ext, entities=entities, suffix=suffix, bare=tuple(bare))


@dataclass(frozen=True)
class _Raw:
    path: Path
    name: BidsName
    subject: str  # softseg subject: sub-X[_ses-Y]
    channel: str  # file name without sub/ses and extension


@dataclass(frozen=True)
class _Label:
    path: Path
    name: BidsName
    pipeline: str
    subject: str
    cls: str
    desc: str
    rater: str
    origin: str
    contrast: str | None  # channel of the raw image it was drawn on (None: any of the subject)

    @property
    def rater_key(self) -> tuple[str, str, str, str]:
        return (self.pipeline, self.desc, self.rater, self.origin)


def _subject_id(entities: dict[str, str]) -> str:
    sub = f"sub-{entities['sub']}"
    return f"{sub}_ses-{entities['ses']}" if entities.get("ses") else sub


def _channel_of(name: BidsName) -> str:
    parts = [p for p in name.stem.split("_") if not (p.startswith("sub-") or p.startswith("ses-"))]
    return "_".join(parts)


def _layout(root: Path, *, derivatives: bool) -> Any:
    try:
        import bids  # pybids
    except ImportError:
        raise InputError(
            "softseg import bids needs pybids: pip install 'napari-softseg[bids]' (or pip install pybids)"
        ) from None
    config = ["bids", "derivatives"] if derivatives else ["bids"]
    try:
        return bids.BIDSLayout(os.fspath(root), validate=False, config=config, derivatives=False)
    except Exception as exc:  # pybids raises its own error types for unreadable trees
        raise InputError(f"{root}: pybids cannot index this folder ({' '.join(str(exc).split())})") from None


def _nifti_files(layout: Any) -> list[Any]:
    return list(layout.get(extension=[".nii", ".nii.gz"], return_type="object"))


def _check_description(root: Path) -> None:
    read_json_object(
        root / "dataset_description.json", what="BIDS dataset description",
        missing="a BIDS dataset has a dataset_description.json at its top (give the dataset's top "
        "folder, or add the file with Name and BIDSVersion)", expected="with Name and BIDSVersion",
    )


def _read_groups(root: Path, column: str) -> dict[str, str]:
    path = root / "participants.tsv"
    if not path.is_file():
        raise InputError(f"{path}: missing; --group-by reads the column {column!r} from participants.tsv")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    columns = list(rows[0].keys()) if rows else []
    if "participant_id" not in columns or column not in columns:
        raise InputError(
            f"{path}: needs the columns participant_id and {column!r}; it has {', '.join(columns) or 'none'}"
        )
    return {str(r["participant_id"]).strip(): str(r[column]).strip() for r in rows if r.get(column) not in (None, "", "n/a")}


def _selected(values: Sequence[str] | None) -> set[str] | None:
    return None if values is None else {str(v) for v in values}


def _unknown_error(option: str, wanted: set[str], found: set[str], what: str) -> None:
    missing = sorted(wanted - found)
    if missing:
        raise InputError(
            f"{option} {', '.join(missing)} matches nothing; {what} found: {', '.join(sorted(found)) or 'none'}"
        )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "x"


def _rater_ids(keys: set[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], str]:
    """Rater id of each key: the parts that differ between raters, joined by '-'."""
    ordered = sorted(keys)
    varying = [i for i in range(4) if len({k[i] for k in ordered}) > 1]
    ids: dict[tuple[str, str, str, str], str] = {}
    for key in ordered:
        parts = [key[i] for i in varying if key[i]]
        ids[key] = _safe("-".join(parts) if parts else key[0])
    if len(set(ids.values())) != len(ids):  # e.g. 'a_b' and 'a-b' sanitised alike
        ids = {key: f"{rid}-{n + 1}" for n, (key, rid) in enumerate(ids.items())}
    return ids


def plan_bids_import(
    source: str | os.PathLike,
    *,
    derivatives: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    descs: Sequence[str] | None = None,
    contrasts: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    datatype: str = "anat",
    group_by: str | None = None,
) -> ImportPlan:
    """Plan the import of a BIDS dataset (nothing is written; see the module docstring).

    Parameters
    ----------
    source : path-like
        Top folder of the BIDS dataset (holds ``dataset_description.json``).
    derivatives : sequence of str, optional
        Pipeline folder names under ``derivatives/`` to take labels from (default: all).
    labels : sequence of str, optional
        Classes to import (``label-`` values, ivadomed keys such as ``seg``/``gmseg``, or suffixes).
    descs : sequence of str, optional
        Keep only labels whose ``desc-``, ``rater-`` value or ivadomed origin is one of these.
    contrasts : sequence of str, optional
        Channels to import (a channel such as ``acq-sag_T2w`` or a suffix such as ``T2w``).
    subjects : sequence of str, optional
        Subject labels (``01`` or ``sub-01``).
    datatype : str
        BIDS datatype folder of the images (default ``anat``).
    group_by : str, optional
        Column of ``participants.tsv`` (e.g. ``institution_id``) written as ``dataset.json``
        ``"groups"`` for group-wise splits (``softseg train --test-group``).

    Returns
    -------
    ImportPlan

    Raises
    ------
    InputError
        No ``dataset_description.json``; no ``derivatives`` folder or no labels; a label whose
        raw image does not exist; a subject missing a channel; files of a subject on different
        grids; two files for one subject, rater and class; an option value that matches nothing.
    """
    root = Path(os.path.abspath(source))
    if not root.is_dir():
        raise InputError(f"{root}: no such BIDS folder")
    _check_description(root)
    deriv_root = root / "derivatives"
    pipelines = sorted(p.name for p in deriv_root.iterdir() if p.is_dir() and not p.name.startswith(".")) if deriv_root.is_dir() else []
    if not pipelines:
        raise InputError(
            f"{deriv_root}: no derivatives pipeline folder; softseg import bids takes the labels from "
            "derivatives/<pipeline>/sub-*/ (e.g. derivatives/labels/sub-01/anat/sub-01_T2w_seg-manual.nii.gz)"
        )
    want_pipes = _selected(derivatives)
    if want_pipes is not None:
        _unknown_error("--derivatives", want_pipes, set(pipelines), "pipeline folders")
        pipelines = [p for p in pipelines if p in want_pipes]
    want_subjects = None if subjects is None else {s if s.startswith("sub-") else f"sub-{s}" for s in subjects}
    unmatched: list[Unmatched] = []

    # ---- raw images
    raws: dict[str, dict[str, _Raw]] = defaultdict(dict)  # subject -> channel -> raw
    all_raw: dict[str, list[_Raw]] = defaultdict(list)  # subject -> every raw image of the datatype
    seen_subjects: set[str] = set()
    for f in _nifti_files(_layout(root, derivatives=False)):
        path = Path(f.path)
        name = parse_bids_name(path.name)
        ents = f.get_entities()
        if name is None or "sub" not in name.entities:
            unmatched.append(Unmatched(path, "not a BIDS subject file"))
            continue
        if ents.get("datatype") != datatype:
            unmatched.append(Unmatched(path, f"datatype {ents.get('datatype') or 'none'!s} (images are read from {datatype}/)"))
            continue
        raw = _Raw(path=path, name=name, subject=_subject_id(name.entities), channel=_channel_of(name))
        seen_subjects.add(f"sub-{name.entities['sub']}")
        if want_subjects is not None and f"sub-{name.entities['sub']}" not in want_subjects:
            unmatched.append(Unmatched(path, "subject not selected (--subject)"))
            continue
        all_raw[raw.subject].append(raw)
    if want_subjects is not None:
        _unknown_error("--subject", want_subjects, seen_subjects, "subjects")
    if not all_raw:
        raise InputError(f"{root}: no {datatype} images (sub-*/{datatype}/*.nii.gz); is this a BIDS dataset?")
    found_channels = {r.channel for rs in all_raw.values() for r in rs}
    want_contrasts = _selected(contrasts)
    if want_contrasts is not None:
        _unknown_error("--contrast", want_contrasts, found_channels | {r.name.suffix or "" for rs in all_raw.values() for r in rs}, "contrasts")
    for subject, rs in all_raw.items():
        for r in rs:
            if want_contrasts is None or r.channel in want_contrasts or r.name.suffix in want_contrasts:
                raws[subject][r.channel] = r
            else:
                unmatched.append(Unmatched(r.path, "contrast not selected (--contrast)"))

    # ---- labels
    found_labels: list[_Label] = []
    for pipe in pipelines:
        for f in _nifti_files(_layout(deriv_root / pipe, derivatives=True)):
            path = Path(f.path)
            name = parse_bids_name(path.name)
            if name is None or "sub" not in name.entities:
                unmatched.append(Unmatched(path, "not a BIDS subject file"))
                continue
            if f.get_entities().get("datatype") != datatype:
                unmatched.append(Unmatched(path, f"datatype {f.get_entities().get('datatype') or 'none'} (labels are read from {datatype}/)"))
                continue
            label = _label_of(path, name, pipe, all_raw.get(_subject_id(name.entities), []), unmatched,
                              want_subjects, datatype)
            if label is not None:
                found_labels.append(label)
    if not found_labels:
        raise InputError(
            f"{deriv_root}: no label files in {', '.join(pipelines)} (names with label-, <what>-manual, "
            "or a mask/dseg/probseg/seg suffix)"
        )
    want_labels, want_descs = _selected(labels), _selected(descs)
    if want_labels is not None:
        _unknown_error("--label", want_labels, {lab.cls for lab in found_labels}, "classes")
    if want_descs is not None:
        _unknown_error("--desc", want_descs, {v for lab in found_labels for v in (lab.desc, lab.rater, lab.origin) if v}, "desc/rater values")
    chosen: list[_Label] = []
    for lab in found_labels:
        if want_labels is not None and lab.cls not in want_labels:
            unmatched.append(Unmatched(lab.path, f"class {lab.cls!r} not selected (--label)"))
        elif want_descs is not None and not ({lab.desc, lab.rater, lab.origin} & want_descs):
            unmatched.append(Unmatched(lab.path, "desc/rater not selected (--desc)"))
        elif lab.contrast is not None and lab.contrast not in raws.get(lab.subject, {}):
            unmatched.append(Unmatched(lab.path, f"drawn on {lab.contrast}, which is not a selected channel"))
        else:
            chosen.append(lab)

    # ---- assemble subjects
    # ids from every label of the chosen pipelines, so --label/--desc never rename a rater
    rater_ids = _rater_ids({lab.rater_key for lab in found_labels})
    classes = sorted({lab.cls for lab in chosen})
    entries = class_entries(classes)
    keys = dict(zip(classes, checked_dataset_json({"classes": entries}, source="classes").class_keys))
    per_subject: dict[str, list[_Label]] = defaultdict(list)
    for lab in chosen:
        per_subject[lab.subject].append(lab)
    channels = sorted({c for s, chans in raws.items() if per_subject.get(s) for c in chans})
    links: list[Link] = []
    groups_src = _read_groups(root, group_by) if group_by else {}
    groups: dict[str, str] = {}
    for subject in sorted(raws):
        labs = per_subject.get(subject, [])
        if not labs:
            for r in raws[subject].values():
                unmatched.append(Unmatched(r.path, "subject has no selected label; not imported"))
            continue
        missing = [c for c in channels if c not in raws[subject]]
        if missing:
            everywhere = sorted(set(channels).intersection(*[set(v) for s, v in raws.items() if per_subject.get(s)]))
            raise InputError(
                f"{subject}: no {missing[0]} image ({root / subject.replace('_ses-', '/ses-')}/{datatype}/); "
                f"channels present in every labelled subject: {', '.join(everywhere) or 'none'}; choose "
                "channels with --contrast or subjects with --subject"
            )
        ref = None
        for ch in channels:
            r = raws[subject][ch]
            grid = check_nifti(r.path)
            if ref is None:
                ref = grid
            else:
                check_same_grid(ref, grid, hint="the channels of a subject must share one voxel grid: choose one contrast with --contrast or resample the images")
            target = f"image{r.name.extension}" if len(channels) == 1 else f"image_{ch}{r.name.extension}"
            links.append(Link(source=r.path, target=f"{subject}/{target}", role="image"))
        seen: dict[tuple[str, str], Path] = {}
        for lab in sorted(labs, key=lambda x: str(x.path)):
            rid = rater_ids[lab.rater_key]
            if (rid, lab.cls) in seen:
                raise InputError(
                    f"{lab.path}: a second label of rater {rid!r}, class {lab.cls!r} for {subject} (the "
                    f"first is {seen[(rid, lab.cls)].name}); narrow with --label, --desc or --derivatives"
                )
            seen[(rid, lab.cls)] = lab.path
            assert ref is not None
            check_same_grid(ref, check_nifti(lab.path, what="label"), hint="a label must lie on its image's voxel grid")
            stem = f"rater-{rid}" if len(classes) == 1 else f"rater-{rid}_label-{keys[lab.cls]}"
            links.append(Link(source=lab.path, target=f"{subject}/{stem}{lab.name.extension}", role="label"))
        if group_by:
            group = groups_src.get(subject.split("_ses-")[0])
            if group is not None:
                groups[subject] = group
    if not links:
        raise InputError(f"{root}: no subject has both images and selected labels")
    dataset_json: dict[str, Any] = {"channels": channels, "classes": entries}
    if group_by:
        dataset_json["groups"] = groups
    dataset_json["source"] = {"format": "bids", "path": str(root), "record": "softseg_import.json"}
    checked_dataset_json(dataset_json, source=f"dataset.json for {root}")
    record = {
        "rater_sources": {
            rid: {"pipeline": k[0], "desc": k[1] or None, "rater": k[2] or None, "origin": k[3] or None}
            for k, rid in sorted(rater_ids.items(), key=lambda kv: kv[1]) if k in {lab.rater_key for lab in chosen}
        },
        "datatype": datatype,
    }
    return ImportPlan(
        kind="bids",
        source=root,
        links=tuple(sorted(links, key=lambda k: k.target)),
        dataset_json=dataset_json,
        unmatched=tuple(sorted(unmatched, key=lambda u: str(u.path))),
        record=record,
    )


def _label_of(
    path: Path,
    name: BidsName,
    pipeline: str,
    subject_raws: list[_Raw],
    unmatched: list[Unmatched],
    want_subjects: set[str] | None,
    datatype: str,
) -> _Label | None:
    """Classify one derivative file: a label (with its raw image), or unmatched (None)."""
    subject = _subject_id(name.entities)
    # the raw image whose name starts this file's name (ivadomed / spine-generic style)
    source = max(
        (r for r in subject_raws if name.stem.startswith(r.name.stem + "_")),
        key=lambda r: len(r.name.stem), default=None,
    )
    rest = BidsName(name.stem, name.extension, {}, None, ())
    if source is not None:
        rest = parse_bids_name(name.stem[len(source.name.stem) + 1 :] + name.extension) or rest
    else:
        rest = BidsName(name.stem, name.extension, {k: v for k, v in name.entities.items() if k not in _RAW_ENTITIES}, name.suffix, name.bare)
    ivadomed = [(k, v) for k, v in rest.entities.items() if k not in _KNOWN]
    is_label = "label" in rest.entities or bool(ivadomed) or (rest.suffix or "").lower() in LABEL_SUFFIXES
    if not is_label:
        unmatched.append(Unmatched(path, "not a label file (no label- entity, <what>-manual part or mask/dseg/probseg/seg suffix)"))
        return None
    if want_subjects is not None and f"sub-{name.entities['sub']}" not in want_subjects:
        unmatched.append(Unmatched(path, "subject not selected (--subject)"))
        return None
    contrast = None
    if source is not None:
        contrast = source.channel
    else:
        raw_ents = {k: v for k, v in name.entities.items() if k in _RAW_ENTITIES}
        matches = [r for r in subject_raws if {k: v for k, v in r.name.entities.items() if k in _RAW_ENTITIES} == raw_ents]
        if name.bare or not matches:
            folder = f"sub-{name.entities['sub']}" + (f"/ses-{name.entities['ses']}" if name.entities.get("ses") else "")
            prefix = "_".join(name.stem.split("_")[: 1 + bool(name.entities.get("ses")) + len(name.bare[:1])])
            raise InputError(
                f"{path}: derivative has no matching raw image (expected {folder}/{datatype}/{prefix}*.nii.gz "
                "in the raw dataset); fix its name or add the raw image"
            )
        if len({r.channel for r in matches}) == 1:
            contrast = matches[0].channel
    if ivadomed and "label" not in rest.entities:
        cls, origin = ivadomed[0]
    else:
        cls = rest.entities.get("label") or rest.suffix or "foreground"
        origin = ivadomed[0][1] if ivadomed else ""
    return _Label(
        path=path, name=name, pipeline=pipeline, subject=subject, cls=cls,
        desc=rest.entities.get("desc", ""), rater=rest.entities.get("rater", ""), origin=origin,
        contrast=contrast,
    )
