"""Import plans: what an import would link where, and writing it as one all-or-nothing step.

An importer (:func:`softseg.interchange.bids.plan_bids_import`,
:func:`softseg.interchange.nnunet.plan_nnunet_import`) reads a foreign dataset and returns an
:class:`ImportPlan` without writing anything: the files to link, the ``dataset.json`` to write,
and every file it did **not** use with the reason (a dry run prints exactly this).
:func:`execute_plan` then builds the softseg dataset folder (layout: ``docs/training.md``)::

    DST/dataset.json                  channels, classes (and nnU-Net "labels", BIDS "groups")
    DST/softseg_import.json           where every file came from (provenance of the import)
    DST/<subject>/image.nii.gz        symbolic links to the source images (copies with copy=True)
    DST/<subject>/image_<c>.nii.gz    ... one per channel when there are several
    DST/<subject>/rater-<id>.nii.gz   links to the label files (rater-<id>_label-<class>... for
                                      several classes)

Images and labels are never rewritten: a link points at the source file (its absolute, resolved
path, so a chain of links is followed once), a copy is a byte-for-byte copy. The folder is built
in a hidden temporary folder next to ``DST`` and renamed into place at the end, so a failure
leaves nothing behind; ``overwrite=True`` replaces a folder written by an earlier import only
after the new one is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softseg.errors import InputError

__all__ = [
    "IMPORT_RECORD",
    "ImportPlan",
    "Link",
    "Unmatched",
    "check_destination",
    "execute_plan",
    "format_plan",
]

#: The provenance file every import writes at the top of DST (also marks DST as an import, which
#: is what ``overwrite`` may replace).
IMPORT_RECORD = "softseg_import.json"


@dataclass(frozen=True)
class Link:
    """One file of the new dataset.

    Attributes
    ----------
    source : Path
        Absolute path of the file in the source dataset.
    target : str
        Path relative to DST, ``"<subject>/image_T2w.nii.gz"`` or ``"<subject>/rater-1.nii.gz"``.
    role : {"image", "label"}
    """

    source: Path
    target: str
    role: str


@dataclass(frozen=True)
class Unmatched:
    """A file of the source dataset that the import does not use, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    """Everything an import would write, computed without writing anything.

    Attributes
    ----------
    kind : {"bids", "nnunet"}
    source : Path
        The source dataset folder (absolute).
    links : tuple of Link
        Sorted by target.
    dataset_json : dict
        Written as ``DST/dataset.json``.
    unmatched : tuple of Unmatched
        Files the import found but does not use (sorted by path).
    record : dict
        Extra provenance written into ``DST/softseg_import.json`` (e.g. where each rater id
        comes from).
    """

    kind: str
    source: Path
    links: tuple[Link, ...]
    dataset_json: dict[str, Any]
    unmatched: tuple[Unmatched, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted({link.target.split("/", 1)[0] for link in self.links}))

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.dataset_json.get("channels", ()))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c if isinstance(c, str) else c["name"] for c in self.dataset_json.get("classes", ()))

    @property
    def raters(self) -> tuple[str, ...]:
        ids = set()
        for link in self.links:
            if link.role == "label":
                name = link.target.split("/", 1)[1]
                ids.add(name[len("rater-") :].split(".nii", 1)[0].split("_label-", 1)[0])
        return tuple(sorted(ids))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``--json`` prints and ``softseg_import.json`` holds)."""
        return {
            "kind": self.kind,
            "source": str(self.source),
            "subjects": list(self.subjects),
            "channels": list(self.channels),
            "classes": list(self.classes),
            "raters": list(self.raters),
            "files": [{"target": k.target, "source": str(k.source), "role": k.role} for k in self.links],
            "unmatched": [{"path": str(u.path), "reason": u.reason} for u in self.unmatched],
            **self.record,
        }


def class_entries(names: list[str]) -> list[Any]:
    """``dataset.json`` ``classes`` entries: the name, or ``{"name", "key"}`` when the name does
    not make a file-name key by itself (:func:`softseg.dataset_json.class_key`)."""
    from softseg.dataset_json import class_key

    out: list[Any] = []
    for i, name in enumerate(names):
        key = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-.") or f"class{i + 1}"
        out.append(name if key == class_key(name) else {"name": name, "key": key})
    return out


def checked_dataset_json(data: Mapping[str, Any], *, source: str) -> Any:
    """Validate what an import will write as ``dataset.json`` with the product's one schema
    (:class:`softseg.dataset_json.DatasetJson`); returns the parsed document.

    Raises
    ------
    InputError
        One line naming *source* and the key (before anything is written).
    """
    from softseg.dataset_json import DatasetJson
    from softseg.schema import parse

    return parse(DatasetJson, dict(data), source=source)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def format_plan(plan: ImportPlan, *, dst: str | os.PathLike | None = None, dry_run: bool = False) -> str:
    """Human-readable mapping: one line per linked file, then every unmatched file with its reason.

    Source paths are shown relative to the source folder.
    """
    head = f"{plan.kind} {plan.source}" + (f" -> {dst}" if dst is not None else "")
    lines = [head + ("  (dry run: nothing written)" if dry_run else "")]
    lines.append(
        f"{len(plan.subjects)} subject(s); channels: {', '.join(plan.channels) or '-'}; "
        f"classes: {', '.join(plan.classes) or '-'}; raters: {', '.join(plan.raters) or '-'}"
    )
    width = max((len(k.target) for k in plan.links), default=0)
    for link in plan.links:
        lines.append(f"  {link.target:<{width}}  <- {_relative(link.source, plan.source)}")
    if plan.unmatched:
        lines.append(f"not imported ({len(plan.unmatched)} file(s)):")
        for u in plan.unmatched:
            lines.append(f"  {_relative(u.path, plan.source)}: {u.reason}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- destination
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_destination(
    dst: str | os.PathLike, *, sources: tuple[Path, ...] = (), overwrite: bool = False,
    marker: str = IMPORT_RECORD, what: str = "an import",
) -> Path:
    """Check, before anything is read or written, that *dst* may be (re)created.

    Parameters
    ----------
    dst : path-like
        The folder to create.
    sources : tuple of Path
        Folders the data come from: *dst* may be neither inside one (the output would become part
        of its own input) nor contain one (``overwrite`` would delete the source).
    overwrite : bool
        Replace an existing *dst*; only a folder that holds *marker* (written by an earlier
        run of the same command) is replaced, never other work. An empty folder is always
        accepted (it was made for the output).
    marker : str
        File name that marks a folder written by this command.
    what : str
        Used in the message (``"an import"``, ``"softseg export nnunet"``).

    Returns
    -------
    Path
        *dst* as an absolute path.

    Raises
    ------
    InputError
        One line naming the folder: inside (or around) a source, exists without ``overwrite``,
        exists but was not written by *what*, not a folder, parent folder missing.
    """
    dst = Path(os.path.abspath(dst))
    real = Path(os.path.realpath(dst))
    for src in sources:
        src_real = Path(os.path.realpath(src))
        if _inside(real, src_real):
            raise InputError(
                f"{dst}: the destination is inside the source {src}; choose a folder outside it "
                "(the output would become part of its own input)"
            )
        if _inside(src_real, real):
            raise InputError(f"{dst}: the destination contains the source {src}; choose another folder")
    if dst.exists() or dst.is_symlink():
        if not dst.is_dir() or dst.is_symlink():
            raise InputError(f"{dst}: exists and is not a folder; choose a new folder name")
        empty = not any(dst.iterdir())
        if not overwrite and not empty:
            raise InputError(f"{dst}: already exists; pass --overwrite to replace it, or choose a new folder")
        if not empty and not (dst / marker).is_file():
            raise InputError(
                f"{dst}: exists and was not written by {what} (no {marker}); it is not replaced "
                "even with --overwrite: remove it yourself or choose a new folder"
            )
    if not dst.parent.is_dir():
        raise InputError(f"{dst}: parent folder {dst.parent} does not exist; create it first")
    if not os.access(dst.parent, os.W_OK | os.X_OK):
        raise InputError(f"{dst}: parent folder {dst.parent} is not writable; choose another place")
    return dst


def place_file(source: Path, target: Path, *, copy: bool) -> None:
    """Symlink *target* to *source* (absolute, resolved), or copy its bytes with ``copy``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    real = Path(os.path.realpath(source))
    if copy:
        shutil.copyfile(real, target)
    else:
        os.symlink(real, target)


def read_json_object(path: Path, *, what: str, missing: str, expected: str) -> dict[str, Any]:
    """A JSON object a foreign dataset must have (read with :func:`softseg.schema.load_json`).

    Raises
    ------
    InputError
        ``"<path>: missing; <missing>"`` or ``"<path>: expected a JSON object <expected>"``,
        or any of :func:`~softseg.schema.load_json`'s one-line errors.
    """
    from softseg.schema import load_json

    if not path.is_file():
        raise InputError(f"{path}: missing; {missing}")
    data = load_json(path, what=what)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {expected}")
    return data


def write_json_file(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def execute_plan(
    plan: ImportPlan, dst: str | os.PathLike, *, copy: bool = False, overwrite: bool = False
) -> Path:
    """Write the dataset folder of *plan* at *dst*, all or nothing.

    Parameters
    ----------
    plan : ImportPlan
    dst : path-like
        The new dataset folder (must not exist, or be an earlier import with ``overwrite``).
    copy : bool
        Copy the files' bytes instead of linking them.
    overwrite : bool
        Replace an earlier import at *dst*.

    Returns
    -------
    Path
        *dst*, absolute.

    Raises
    ------
    InputError
        See :func:`check_destination`; a source file that disappeared or has no content
        (a dangling link, e.g. a git-annex file that was never fetched).
    """
    dst = check_destination(dst, sources=(plan.source,), overwrite=overwrite)
    for link in plan.links:
        if not link.source.exists():
            raise InputError(
                f"{link.source}: missing or a dangling link (git-annex/DataLad: fetch it with "
                "`datalad get`); nothing was written"
            )
    record = {"softseg_import": plan.as_dict(), "copied": bool(copy)}
    from softseg.outputs import output_folder

    with output_folder(dst, overwrite=overwrite) as stage:
        for link in plan.links:
            place_file(link.source, stage / link.target, copy=copy)
        write_json_file(stage / "dataset.json", plan.dataset_json)
        write_json_file(stage / IMPORT_RECORD, record)
    return dst
