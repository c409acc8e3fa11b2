"""The snapshot store of one rater: new files only, metadata inside them, decisions, pruning.

``<recovery folder>/<rater key>/<UTC time>_<session>.nii.gz`` (+ ``.json``, ``.decision.json``,
``exported-<sha1>.json``); see :mod:`softseg.autosave` for the layout and the rules.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from softseg.autosave.folders import new_session_id, rater_key
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import Volume, load_volume, save_volume, write_json
from softseg.schema import Schema, load_json, loads_json, parse

__all__ = [
    "DECISIONS",
    "KEEP",
    "Recovery",
    "SnapshotMeta",
    "content_hash",
    "discard_recovery",
    "load_snapshot",
    "mark_recovery",
    "prune_snapshots",
    "record_export",
    "write_snapshot",
]

#: Snapshots kept per rater at least (besides every pending one), see :func:`prune_snapshots`.
KEEP = 5
#: What a rater can decide about a pending snapshot.
DECISIONS = ("restored", "kept", "discarded")
Decision = Literal["restored", "kept", "discarded"]

_FORMAT = "softseg-autosave/2"
_EXTENSION_CODE = 6  # NIfTI "comment" extension
_EXTENSION_TAG = b"softseg-autosave "
_STALE_TEMP_S = 600.0
_SNAPSHOT_NAME = re.compile(
    r"^(?P<stamp>\d{8}T\d{6}\.\d{3}Z)_(?P<session>[0-9a-z]{4,32})\.nii\.gz$"
)
_DECISION_SUFFIX = ".decision.json"


class SnapshotMeta(Schema):
    """What is recorded with every snapshot (JSON beside it, and inside the NIfTI file)."""

    format: Literal["softseg-autosave/2"]
    rater: str
    session: str
    saved_at: str
    saved_at_unix: float
    source_image: str | None = None
    shape: tuple[int, int, int]
    dtype: str
    order: Literal["file", "display"]
    sha1: str
    nonzero: int
    confidence_scale: dict[str, Any] | None = None
    color: tuple[float, float, float] | None = None
    #: Class names (1..K) of a multi-class layer painted with class codes (softseg.class_levels).
    classes: tuple[str, ...] | None = None
    #: The model that made a pre-annotated layer, and softseg.preannotate.preannotation_record.
    preannotated_by: str | None = None
    preannotation: dict[str, Any] | None = None


class _DecisionRecord(Schema):
    decision: Literal["restored", "kept", "discarded"]
    decided_at: str
    decided_at_unix: float


def content_hash(levels: np.ndarray) -> str:
    """SHA-1 of an array's shape, dtype and bytes (identifies a snapshot's content)."""
    arr = np.ascontiguousarray(levels)
    h = hashlib.sha1()
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


def _stamp(t: float) -> str:
    d = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return d.strftime("%Y%m%dT%H%M%S") + f".{d.microsecond // 1000:03d}Z"


def _remove_stale_temps(folder: Path) -> None:
    """Temporary files of writes that were killed (``.<name>.<random>.tmp...``), older than 10 min."""
    limit = time.time() - _STALE_TEMP_S
    for tmp in folder.glob(".*"):
        try:
            if ".tmp" in tmp.name and tmp.is_file() and tmp.stat().st_mtime < limit:
                tmp.unlink()
        except OSError:
            pass


def write_snapshot(
    folder: str | os.PathLike,
    rater: str,
    levels: np.ndarray,
    *,
    session: str | None = None,
    geometry: DisplayGeometry | None = None,
    scale: ConfidenceScale | None = None,
    source_image: str | os.PathLike | None = None,
    color: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    preannotated_by: str | None = None,
    preannotation: dict[str, Any] | None = None,
    digest: str | None = None,
    now: float | None = None,
    keep: int | None = KEEP,
) -> Path:
    """Write one snapshot of a rater's level map as a new file (never replacing one).

    Parameters
    ----------
    folder : path-like
        The image's recovery folder (:attr:`RecoveryTarget.folder`); the snapshot goes to its
        subfolder :func:`rater_key` ``(rater)``, created if missing.
    rater : str
        Rater id (exact; see :func:`rater_key`).
    levels : ndarray, shape (S, P, L), integer
        The level map in napari order (a copy of ``layer.data``); for a multi-class layer the
        painted class codes ``(class - 1) * L + level`` as they are (:mod:`softseg.class_levels`).
    session : str, optional
        The autosave session (:func:`new_session_id`), 4-32 lower-case letters or digits: the
        snapshots of one rater layer share it, and only a session's newest snapshot is offered.
        A new session when not given (a one-off snapshot).
    geometry : DisplayGeometry, optional
        The image's geometry: the snapshot is then a normal rater file in the image's own
        orientation, affine and header. Without it the array is stored as is (display order)
        with an identity affine.
    scale : ConfidenceScale, optional
        Stored so a restore gets the same level -> soft mapping.
    source_image : path-like, optional
    color : sequence of 3 float in [0, 1], optional
        The layer's display colour, so a restored layer keeps it.
    classes : sequence of str, optional
        Class names 1..K of a multi-class layer (its values are class codes).
    preannotated_by : str, optional
        The model that made a pre-annotated layer (:mod:`softseg.preannotate`).
    preannotation : dict, optional
        Its :func:`softseg.preannotate.preannotation_record` (``rater_changed_voxels`` ...).
    digest : str, optional
        :func:`content_hash` of *levels*, when already known.
    now : float, optional
        Time stamp (seconds since the epoch) to record; the current time by default.
    keep : int or None
        Prune the rater's older versions afterwards (:func:`prune_snapshots`); None: do not.

    Returns
    -------
    Path
        The written ``<time>_<session>.nii.gz``.

    Raises
    ------
    InputError
        Bad rater id, session or array; ``OSError`` from the file system is passed on (the
        previous snapshots are untouched either way).
    """
    session = new_session_id() if session is None else session
    if not re.fullmatch(r"[0-9a-z]{4,32}", str(session)):
        raise InputError(
            f"autosave session id {session!r} must be 4-32 lower-case letters or digits"
        )
    levels = np.asarray(levels)
    if levels.ndim != 3:
        raise InputError(f"expected a 3D level map to autosave; got shape {levels.shape}")
    if levels.dtype.kind not in "iub":
        raise InputError(f"expected an integer level map to autosave; got dtype {levels.dtype}")
    rater_folder = Path(folder) / rater_key(rater)
    rater_folder.mkdir(parents=True, exist_ok=True)
    t = time.time() if now is None else float(now)
    digest = digest or content_hash(levels)
    meta = SnapshotMeta(
        format=_FORMAT,
        rater=str(rater),
        session=str(session),
        saved_at=_iso(t),
        saved_at_unix=t,
        source_image=None if source_image is None else str(source_image),
        shape=tuple(int(s) for s in levels.shape),
        dtype=levels.dtype.str,
        order="file" if geometry is not None else "display",
        sha1=digest,
        nonzero=int(np.count_nonzero(levels)),
        confidence_scale=None if scale is None else scale.as_dict(),
        color=None if color is None else tuple(float(c) for c in list(color)[:3]),
        classes=None if not classes else tuple(str(c) for c in classes),
        preannotated_by=None if preannotated_by is None else str(preannotated_by),
        preannotation=None if preannotation is None else dict(preannotation),
    )
    record = meta.model_dump(mode="json")
    if geometry is not None:
        file_array = geometry.from_display(levels)
        affine, header = geometry.affine.copy(), geometry.header.copy()
    else:
        file_array, affine, header = levels, np.eye(4), nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
    header.extensions.append(
        nib.nifti1.Nifti1Extension(
            _EXTENSION_CODE, _EXTENSION_TAG + json.dumps(record).encode("utf-8")
        )
    )
    like = Volume(array=file_array, affine=affine, header=header)
    # a new name every time: if another writer took this millisecond, take the next one
    for step in range(1000):
        path = rater_folder / f"{_stamp(t + step / 1000.0)}_{session}.nii.gz"
        if not path.exists():
            break
    save_volume(path, file_array, like=like, overwrite=False, durable=True)
    write_json(
        path.with_name(path.name[: -len(".nii.gz")] + ".json"), record, overwrite=True, durable=True
    )
    if keep is not None:
        prune_snapshots(rater_folder, keep=keep)
    _remove_stale_temps(rater_folder)
    return path


def record_export(
    folder: str | os.PathLike,
    rater: str,
    levels: np.ndarray,
    export_path: str | os.PathLike,
    *,
    now: float | None = None,
) -> Path:
    """Note that a rater's work was exported, so a snapshot of that exact content is not offered.

    Writes ``<folder>/<rater key>/exported-<sha1>.json``. Later strokes (other content) are
    offered again.
    """
    rater_folder = Path(folder) / rater_key(rater)
    rater_folder.mkdir(parents=True, exist_ok=True)
    t = time.time() if now is None else float(now)
    digest = content_hash(np.asarray(levels))
    record = {
        "rater": str(rater),
        "exported_to": str(export_path),
        "exported_at": _iso(t),
        "exported_at_unix": t,
        "sha1": digest,
    }
    return write_json(rater_folder / f"exported-{digest}.json", record, overwrite=True)


@dataclass(frozen=True)
class Recovery:
    """One snapshot on disk (pending work when returned by :func:`list_recoveries`).

    Attributes
    ----------
    rater : str
        The exact rater id.
    path : Path
        The snapshot (``.nii.gz``), an ordinary rater level file.
    saved_at : float
        Seconds since the epoch.
    scale : ConfidenceScale or None
    source_image : str or None
    order : {"file", "display"}
        Axis order of the stored array (``"file"`` when the image's geometry was known).
    is_fallback : bool
        Found in the fallback folder rather than next to the image.
    session : str
        The autosave session that wrote it (``"legacy"`` for the first format).
    nonzero : int or None
        Painted voxels (None when unknown, first format).
    decision : {"restored", "kept", "discarded"} or None
        The rater's decision on it.
    exported : bool
        An export of exactly this content was recorded.
    is_latest : bool
        The newest snapshot of its session.
    color : tuple of 3 float or None
        The layer's display colour when it was saved.
    classes : tuple of str or None
        Class names 1..K of a multi-class layer (the snapshot holds class codes).
    preannotated_by : str or None
        The model that made a pre-annotated layer.
    preannotation : dict or None
        :func:`softseg.preannotate.preannotation_record` as of this snapshot.
    """

    rater: str
    path: Path
    saved_at: float
    scale: ConfidenceScale | None = None
    source_image: str | None = None
    order: str = "file"
    is_fallback: bool = False
    sha1: str | None = field(default=None, repr=False)
    session: str = "legacy"
    nonzero: int | None = None
    decision: str | None = None
    exported: bool = False
    is_latest: bool = True
    color: tuple[float, float, float] | None = None
    classes: tuple[str, ...] | None = None
    preannotated_by: str | None = None
    preannotation: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def saved_at_text(self) -> str:
        """Local time of the snapshot, ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))

    @property
    def is_pending(self) -> bool:
        """Work nobody decided on: the session's newest, painted, not exported, not decided."""
        return (
            self.is_latest
            and self.decision is None
            and not self.exported
            and (self.nonzero or 0) > 0
        )


def _scale_of(data: Any) -> ConfidenceScale | None:
    if not isinstance(data, dict):
        return None
    try:
        return ConfidenceScale.from_dict(data)
    except InputError:
        return None


def _meta_from_image(path: Path) -> SnapshotMeta | None:
    """The metadata stored inside a snapshot's own NIfTI header (None when absent or broken)."""
    try:
        header = nib.load(path).header
    except Exception:  # a truncated or foreign file: not a snapshot we can list
        return None
    for ext in getattr(header, "extensions", ()):
        content = ext.get_content()
        if (
            ext.get_code() == _EXTENSION_CODE
            and isinstance(content, bytes)
            and content.startswith(_EXTENSION_TAG)
        ):
            try:
                return parse(
                    SnapshotMeta,
                    loads_json(content[len(_EXTENSION_TAG) :], source=str(path)),
                    source=str(path),
                )
            except InputError:
                return None
    return None


def _read_meta(path: Path) -> SnapshotMeta | None:
    side = path.with_name(path.name[: -len(".nii.gz")] + ".json")
    if side.is_file():
        try:
            return parse(SnapshotMeta, load_json(side, what="autosave record"), source=str(side))
        except InputError:
            pass  # half-written or edited by hand: the image carries the same record
    return _meta_from_image(path)


def _decision_of(path: Path) -> str | None:
    marker = path.with_name(path.name[: -len(".nii.gz")] + _DECISION_SUFFIX)
    if not marker.is_file():
        return None
    try:
        return parse(
            _DecisionRecord, load_json(marker, what="recovery decision"), source=str(marker)
        ).decision
    except InputError:
        return "discarded"  # a marker exists: the rater decided; never offer it again by accident


def _exported_hashes(rater_folder: Path) -> set[str]:
    return {p.name[len("exported-") : -len(".json")] for p in rater_folder.glob("exported-*.json")}


def _snapshots_in_rater_folder(rater_folder: Path, *, is_fallback: bool) -> list[Recovery]:
    exported = _exported_hashes(rater_folder)
    found = []
    for nii in rater_folder.glob("*.nii.gz"):
        m = _SNAPSHOT_NAME.match(nii.name)
        if m is None:
            continue  # temporary file of an interrupted write, or something else
        meta = _read_meta(nii)
        if meta is None:
            continue
        found.append(
            Recovery(
                rater=meta.rater,
                path=nii,
                saved_at=float(meta.saved_at_unix),
                scale=_scale_of(meta.confidence_scale),
                source_image=meta.source_image,
                order=meta.order,
                is_fallback=is_fallback,
                sha1=meta.sha1,
                session=meta.session,
                nonzero=int(meta.nonzero),
                decision=_decision_of(nii),
                exported=meta.sha1 in exported,
                color=meta.color,
                classes=meta.classes,
                preannotated_by=meta.preannotated_by,
                preannotation=meta.preannotation,
            )
        )
    latest: dict[str, Recovery] = {}
    for rec in found:
        best = latest.get(rec.session)
        if best is None or (rec.saved_at, rec.path.name) > (best.saved_at, best.path.name):
            latest[rec.session] = rec
    newest = {id(r) for r in latest.values()}
    return [r if id(r) in newest else _replace(r, is_latest=False) for r in found]


def _replace(rec: Recovery, **changes: Any) -> Recovery:
    from dataclasses import replace

    return replace(rec, **changes)


def mark_recovery(recovery: Recovery, decision: Decision, *, now: float | None = None) -> Path:
    """Record the rater's decision on a pending snapshot, so it is not offered again.

    Parameters
    ----------
    recovery : Recovery
    decision : {"restored", "kept", "discarded"}
        ``"restored"``: brought back as the rater's layer; ``"kept"``: brought back beside a new
        layer ("keep both"); ``"discarded"``: the rater chose to drop it. The snapshot file
        itself is kept (see :func:`prune_snapshots`).

    Returns
    -------
    Path
        The decision record ``<snapshot>.decision.json``.
    """
    if decision not in DECISIONS:
        raise InputError(
            f"unknown recovery decision {decision!r}; choose one of {', '.join(DECISIONS)}"
        )
    t = time.time() if now is None else float(now)
    marker = recovery.path.with_name(recovery.path.name[: -len(".nii.gz")] + _DECISION_SUFFIX)
    record = _DecisionRecord(decision=decision, decided_at=_iso(t), decided_at_unix=t)
    return write_json(marker, record.model_dump(mode="json"), overwrite=True, durable=True)


def discard_recovery(recovery: Recovery) -> Path:
    """Mark a snapshot as discarded by the rater. Nothing is deleted: older versions and this one
    stay on disk until :func:`prune_snapshots` ages them out, so a wrong choice can be undone."""
    return mark_recovery(recovery, "discarded")


def prune_snapshots(rater_folder: str | os.PathLike, *, keep: int = KEEP) -> list[Path]:
    """Delete a rater's old snapshot versions, never pending work.

    Kept: the *keep* newest snapshots; the newest snapshot of every session nobody decided on
    (pending or still being painted); the newest snapshot of the *keep* most recently saved
    decided or exported sessions. Everything else in *rater_folder* (image, JSON, decision) is
    removed, oldest first.

    Parameters
    ----------
    rater_folder : path-like
        ``<recovery folder>/<rater key>``.
    keep : int
        At least 1.

    Returns
    -------
    list of Path
        The snapshot images removed.
    """
    keep = max(1, int(keep))
    folder = Path(rater_folder)
    if not folder.is_dir():
        return []
    snaps = sorted(
        _snapshots_in_rater_folder(folder, is_fallback=False),
        key=lambda r: (r.saved_at, r.path.name),
        reverse=True,
    )
    kept = {r.path for r in snaps[:keep]}
    finals = [r for r in snaps if r.is_latest]
    kept |= {r.path for r in finals if r.decision is None and not r.exported}
    kept |= {r.path for r in [r for r in finals if r.decision is not None or r.exported][:keep]}
    removed = []
    for rec in reversed(snaps):
        if rec.path in kept:
            continue
        base = rec.path.name[: -len(".nii.gz")]
        for p in (
            rec.path,
            rec.path.with_name(base + ".json"),
            rec.path.with_name(base + _DECISION_SUFFIX),
        ):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                break
        else:
            removed.append(rec.path)
    return removed


def load_snapshot(
    recovery: Recovery | str | os.PathLike, *, geometry: DisplayGeometry | None = None
) -> np.ndarray:
    """A snapshot's level map in napari order.

    Parameters
    ----------
    recovery : Recovery or path-like
    geometry : DisplayGeometry, optional
        The image's geometry; needed for snapshots stored in file order.

    Returns
    -------
    ndarray, shape (S, P, L), the stored integer dtype

    Raises
    ------
    InputError
        Unreadable file, a file-order snapshot without *geometry*, or a snapshot of another image.
    """
    if not isinstance(recovery, Recovery):
        path = Path(recovery)
        meta = _read_meta(path) if _SNAPSHOT_NAME.match(path.name) else None
        order = meta.order if meta is not None else "file"
        recovery = Recovery(
            rater=meta.rater if meta else path.name, path=path, saved_at=0.0, order=order
        )
    vol = load_volume(recovery.path, label=True)
    if recovery.order == "display" or geometry is None:
        if recovery.order == "file" and geometry is None:
            raise InputError(
                f"{recovery.path}: stored in file order; give the image's geometry to restore it"
            )
        return vol.array
    if tuple(vol.shape) != tuple(geometry.file_shape):
        raise InputError(
            f"{recovery.path}: snapshot shape {vol.shape} does not match the image shape "
            f"{geometry.file_shape}; it belongs to another image"
        )
    return geometry.to_display(vol.array)


