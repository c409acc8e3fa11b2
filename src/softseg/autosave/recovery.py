"""What an image's raters left on disk: every snapshot, and the pending work to offer.

Looks next to the image and in its fallback folder (:mod:`softseg.autosave.folders`), reads each
rater's store (:mod:`softseg.autosave.store`) and the first format's one-file-per-rater
snapshots, which are offered but never modified.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from softseg.autosave.folders import fallback_folder, primary_folder, rater_key
from softseg.autosave.store import Recovery, _decision_of, _scale_of, _snapshots_in_rater_folder
from softseg.errors import InputError
from softseg.schema import Schema, load_json, parse

__all__ = ["list_recoveries", "list_snapshots"]


class _LegacyMeta(Schema):
    """The JSON written by the first autosave format (one snapshot per rater, overwritten)."""

    format: Literal["softseg-autosave/1"] = "softseg-autosave/1"
    rater: str
    saved_at: str | None = None
    saved_at_unix: float | None = None
    source_image: str | None = None
    shape: tuple[int, int, int] | None = None
    dtype: str | None = None
    order: Literal["file", "display"] = "file"
    sha1: str | None = None
    confidence_scale: dict[str, Any] | None = None


def _legacy_snapshots(folder: Path, *, is_fallback: bool) -> list[Recovery]:
    """Snapshots of the first format: ``<folder>/<stem>.nii.gz`` + ``<stem>.json``."""
    out = []
    for nii in folder.glob("*.nii.gz"):
        if nii.name.startswith("."):
            continue
        stem = nii.name[: -len(".nii.gz")]
        try:
            mtime = nii.stat().st_mtime
        except OSError:
            continue
        meta: _LegacyMeta | None = None
        side = folder / f"{stem}.json"
        if side.is_file():
            try:
                data = load_json(side, what="autosave record")
                meta = parse(_LegacyMeta, data, source=str(side))
            except InputError:
                meta = None
        saved_at = mtime
        if (
            meta is not None
            and meta.saved_at_unix is not None
            and abs(meta.saved_at_unix - mtime) <= 5.0
        ):
            saved_at = float(meta.saved_at_unix)
        elif meta is not None:
            meta = _LegacyMeta(
                rater=meta.rater,
                order=meta.order,
                confidence_scale=meta.confidence_scale,
                source_image=meta.source_image,
            )  # JSON of an older snapshot: no hash
        exported = False
        export_file = folder / f"{stem}.export.json"
        if export_file.is_file():
            try:
                export = load_json(export_file, what="export record")
            except InputError:
                export = None
            if isinstance(export, dict):
                same = meta is not None and meta.sha1 and meta.sha1 == export.get("sha1")
                when = export.get("exported_at_unix")
                exported = bool(same) or (
                    isinstance(when, (int, float)) and saved_at <= float(when)
                )
        out.append(
            Recovery(
                rater=meta.rater if meta is not None else stem,
                path=nii,
                saved_at=saved_at,
                scale=_scale_of(meta.confidence_scale) if meta is not None else None,
                source_image=meta.source_image if meta is not None else None,
                order=meta.order if meta is not None else "file",
                is_fallback=is_fallback,
                sha1=meta.sha1 if meta is not None else None,
                session="legacy",
                nonzero=1,  # unknown without reading the voxels; it was autosaved, so offer it
                decision=_decision_of(nii),
                exported=exported,
            )
        )
    return out


def _image_folders(
    image: str | os.PathLike | None, name: str | None, fallback_root: str | os.PathLike | None
) -> list[tuple[Path, bool]]:
    folders = []
    if image is not None:
        folders.append((primary_folder(image), False))
    folders.append((fallback_folder(image, name=name, root=fallback_root), True))
    return folders


def list_snapshots(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    fallback_root: str | os.PathLike | None = None,
    rater: str | None = None,
) -> list[Recovery]:
    """Every snapshot of an image's raters on disk (pending, decided, superseded), newest first.

    Parameters
    ----------
    image : path-like or None
        The image file (None for an image without a file; then *name* is required).
    name : str, optional
        The image layer's name (fallback folder of an image without a file).
    fallback_root : path-like, optional
        Root of the fallback folders (:func:`default_fallback_root`).
    rater : str, optional
        Only this rater's snapshots.

    Returns
    -------
    list of Recovery
        Looked up next to the image and in the fallback folder; snapshots of the first format
        (one per rater) have ``session == "legacy"``.
    """
    found: list[Recovery] = []
    for folder, is_fallback in _image_folders(image, name, fallback_root):
        if not folder.is_dir():
            continue
        sub = (
            [folder / rater_key(rater)]
            if rater is not None
            else [p for p in folder.iterdir() if p.is_dir()]
        )
        for rater_folder in sub:
            if rater_folder.is_dir():
                found += _snapshots_in_rater_folder(rater_folder, is_fallback=is_fallback)
        found += [
            r
            for r in _legacy_snapshots(folder, is_fallback=is_fallback)
            if rater is None or r.rater == rater
        ]
    return sorted(found, key=lambda r: (r.saved_at, r.path.name), reverse=True)


def list_recoveries(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    fallback_root: str | os.PathLike | None = None,
    rater: str | None = None,
    exclude_sessions: Iterable[str] = (),
) -> list[Recovery]:
    """Pending work of an image's raters: snapshots to offer for restoring, newest first.

    A snapshot is pending when it is the newest of its session, holds painted voxels, was not
    exported with that exact content (:func:`record_export`) and the rater has not decided on it
    (:func:`mark_recovery`). Several sessions of one rater can each have pending work.

    Parameters
    ----------
    image, name, fallback_root, rater
        As in :func:`list_snapshots`.
    exclude_sessions : iterable of str
        Sessions still running in this viewer (their layer is open): not offered.

    Returns
    -------
    list of Recovery
    """
    skip = set(exclude_sessions)
    return [
        r
        for r in list_snapshots(image, name=name, fallback_root=fallback_root, rater=rater)
        if r.is_pending and r.session not in skip
    ]


