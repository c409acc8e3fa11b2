"""Autosave and recovery of painted rater layers: versioned snapshots that are never overwritten.

While a rater paints, snapshots of the level map are written, debounced, to a recovery folder
next to the image. Every snapshot is a **new file**; nothing the autosave wrote is ever
replaced::

    <image folder>/.softseg-recovery/<image stem>/<rater key>/
        20250502T140312.123Z_3f2a9c01d4e5.nii.gz   one snapshot: the level map in the image's
                                                    own orientation, affine and header; its
                                                    metadata also rides inside the file (a NIfTI
                                                    "comment" extension)
        20250502T140312.123Z_3f2a9c01d4e5.json     the same metadata, readable: rater id, session,
                                                    time, confidence scale, SHA-1, painted voxels
        20250502T140312.123Z_3f2a9c01d4e5.decision.json   the rater's decision on it, once made
                                                    ("restored", "kept" or "discarded")
        exported-<sha1>.json                        an export of exactly that content

``<rater key>`` is :func:`rater_key`: a readable slug of the rater id plus a hash of the exact id,
so ``dr.smith`` and ``dr smith`` never share a folder. A *session* is one rater layer's lifetime
in one viewer (a random id chosen by the caller); the newest snapshot of a session is its work.

**Pending work** (:func:`list_recoveries`): the newest snapshot of every session that holds
painted voxels, was not exported with that exact content, and on which the rater has not yet
decided. A pending snapshot is offered for restoring; it is never deleted by pruning.

**Versions**: :func:`prune_snapshots` (run by the writer after each save) keeps, per rater, the
:data:`KEEP` newest snapshots, the newest snapshot of every pending session, and the newest
snapshot of the :data:`KEEP` most recently decided sessions; so a wrong choice ("discard") can
still be undone from disk with :func:`list_snapshots` / :func:`load_snapshot` (or by opening the
file in the viewer: it is an ordinary rater file).

**Crash safety**: each file is written atomically (:func:`softseg.io.atomic_path`: temporary file,
``fsync``, rename), the image before its JSON. A writer killed between the two leaves a complete
image whose metadata is read from the image itself, so the snapshot is still listed.

When the folder next to the image cannot be written (read-only share, a file in the way) the
snapshots go to a fallback under the user's cache, ``~/.cache/softseg/recovery/<image stem>-<hash
of its folder>/`` (``$XDG_CACHE_HOME`` is honoured; ``$SOFTSEG_RECOVERY_DIR`` overrides the root),
with the same layout, and :class:`AutosaveWriter` reports the switch once.

Snapshots written by earlier releases (``<image stem>/<rater>.nii.gz`` + ``<rater>.json``, one
file per rater) are still listed and restorable; they are never modified or pruned.

The viewer side (``napari_softseg.widgets.annotate``) copies ``layer.data`` on the main thread
(a few ms) and hands the copy to :class:`AutosaveWriter`, whose own thread hashes, compresses and
writes it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import Volume, load_volume, save_volume, write_json
from softseg.schema import Schema, load_json, loads_json, parse

__all__ = [
    "DECISIONS",
    "FOLDER_NAME",
    "KEEP",
    "AutosaveWriter",
    "Recovery",
    "RecoveryTarget",
    "SnapshotJob",
    "choose_recovery_folder",
    "content_hash",
    "default_fallback_root",
    "discard_recovery",
    "fallback_folder",
    "list_recoveries",
    "list_snapshots",
    "load_snapshot",
    "mark_recovery",
    "new_session_id",
    "primary_folder",
    "prune_snapshots",
    "rater_file_stem",
    "rater_key",
    "record_export",
    "write_snapshot",
]

#: Name of the hidden recovery folder created next to the image.
FOLDER_NAME = ".softseg-recovery"
#: Snapshots kept per rater at least (besides every pending one), see :func:`prune_snapshots`.
KEEP = 5
#: What a rater can decide about a pending snapshot.
DECISIONS = ("restored", "kept", "discarded")
Decision = Literal["restored", "kept", "discarded"]

_FORMAT = "softseg-autosave/2"
_LEGACY_FORMAT = "softseg-autosave/1"
_EXTENSION_CODE = 6  # NIfTI "comment" extension
_EXTENSION_TAG = b"softseg-autosave "
_STALE_TEMP_S = 600.0
_SNAPSHOT_NAME = re.compile(
    r"^(?P<stamp>\d{8}T\d{6}\.\d{3}Z)_(?P<session>[0-9a-z]{4,32})\.nii\.gz$"
)
_DECISION_SUFFIX = ".decision.json"


# ---------------------------------------------------------------------------------------- naming
def _image_stem(image: str | os.PathLike) -> str:
    name = Path(image).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def rater_file_stem(rater: str) -> str:
    """A readable file stem for a rater id: letters, digits, ``-`` and ``_`` only.

    Readable but **not** injective (``dr.smith`` and ``dr smith`` both give ``dr_smith``): used
    for file names a person chooses from (the export's default name), never to keep two
    raters' work apart (that is :func:`rater_key`).

    Raises
    ------
    InputError
        Empty rater id, or one with no usable character.
    """
    text = str(rater).strip()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if not stem:
        raise InputError(f"rater id {rater!r} is empty; type a name such as your initials")
    return stem


def rater_key(rater: str) -> str:
    """The folder name of a rater's snapshots: a readable slug plus 10 hex digits of a hash.

    ``rater_key("dr.smith") == "dr_smith-<sha256("dr.smith")[:10]>"``: the hash is taken of the
    exact id, so ids that differ only in punctuation, spaces or case get different folders (also
    on case-insensitive file systems, the hash being lower-case hex). The slug keeps up to 40
    characters of ``[A-Za-z0-9_-]`` so a person can find the folder.

    Raises
    ------
    InputError
        Empty (or blank) rater id.
    """
    text = str(rater)
    if not text.strip():
        raise InputError(f"rater id {rater!r} is empty; type a name such as your initials")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_")[:40] or "rater"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def new_session_id() -> str:
    """A random id for one autosave session (one rater layer's lifetime), 12 hex digits."""
    return uuid.uuid4().hex[:12]


def default_fallback_root() -> Path:
    """Root of the fallback recovery folders: ``$SOFTSEG_RECOVERY_DIR`` or ``<cache>/softseg/recovery``."""
    env = os.environ.get("SOFTSEG_RECOVERY_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "softseg" / "recovery"


def primary_folder(image: str | os.PathLike) -> Path:
    """``<image folder>/.softseg-recovery/<image stem>``."""
    image = Path(image).expanduser().absolute()
    return image.parent / FOLDER_NAME / _image_stem(image)


def fallback_folder(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """The fallback folder of an image: ``<root>/<stem>-<10 hex of its absolute folder>``.

    Parameters
    ----------
    image : path-like or None
        The image file; None for an image that has no file (sample data, a numpy array).
    name : str, optional
        Used instead of the file stem (required when *image* is None), e.g. the layer name.
    root : path-like, optional
        Defaults to :func:`default_fallback_root`.
    """
    root = default_fallback_root() if root is None else Path(root)
    if image is None:
        if not name:
            raise InputError("an image without a file needs a name for its recovery folder")
        return root / f"{rater_file_stem(name)}-unsaved"
    image = Path(image).expanduser().absolute()
    digest = hashlib.sha1(str(image.parent).encode("utf-8")).hexdigest()[:10]
    return root / f"{rater_file_stem(name or _image_stem(image))}-{digest}"


@dataclass(frozen=True)
class RecoveryTarget:
    """Where snapshots of one image go.

    Attributes
    ----------
    folder : Path
        The image's recovery folder actually used (created, and a probe file written and
        removed); each rater gets a subfolder :func:`rater_key`.
    is_fallback : bool
        True when the folder next to the image could not be used.
    problem : str or None
        Why the folder next to the image was not used (one line), when it was not.
    """

    folder: Path
    is_fallback: bool = False
    problem: str | None = None


def _probe(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}-{threading.get_ident()}"
    with open(probe, "wb") as fh:
        fh.write(b"ok")
    probe.unlink()


def choose_recovery_folder(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    fallback_root: str | os.PathLike | None = None,
) -> RecoveryTarget:
    """The recovery folder of an image: next to it when writable, else the fallback.

    The folder is created. Raises :class:`InputError` only when the fallback is unusable too.
    """
    problem = None
    if image is not None:
        folder = primary_folder(image)
        try:
            _probe(folder)
            return RecoveryTarget(folder=folder)
        except OSError as exc:
            problem = f"cannot write {folder} ({exc.strerror or type(exc).__name__})"
    else:
        problem = "the image has no file on disk"
    folder = fallback_folder(image, name=name, root=fallback_root)
    try:
        _probe(folder)
    except OSError as exc:
        raise InputError(
            f"cannot write autosave snapshots: {problem}, and the fallback {folder} fails too "
            f"({exc.strerror or type(exc).__name__}); set the environment variable "
            "SOFTSEG_RECOVERY_DIR to a writable folder"
        ) from None
    return RecoveryTarget(folder=folder, is_fallback=True, problem=problem)


# ------------------------------------------------------------------------------------- metadata
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


# ------------------------------------------------------------------------------------- snapshots
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
        The level map in napari order (a copy of ``layer.data``).
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


# ---------------------------------------------------------------------------------------- writer
@dataclass(frozen=True, eq=False)
class SnapshotJob:
    """One snapshot handed to :class:`AutosaveWriter` (the array is already a private copy).

    ``session`` identifies the rater layer (:func:`new_session_id`); ``color`` its display colour.
    """

    rater: str
    levels: np.ndarray
    geometry: DisplayGeometry | None = None
    scale: ConfidenceScale | None = None
    source_image: str | None = None
    session: str = field(default_factory=new_session_id)
    color: tuple[float, float, float] | None = None


class AutosaveWriter:
    """Writes snapshots in its own thread, newest first, skipping unchanged content.

    ``submit`` never blocks: a job of a session waiting to be written is replaced by a newer one
    of the same session (only the latest state matters). Content identical to the session's last
    written snapshot is not written again, nor is an empty map before the session painted
    anything (a never-painted layer leaves no snapshot). When the target folder fails, the
    writer switches to the fallback folder once and calls ``on_fallback(message)``.

    Parameters
    ----------
    target : RecoveryTarget
        From :func:`choose_recovery_folder`.
    fallback : Path, optional
        Folder to switch to when writing to ``target.folder`` fails.
    on_saved : callable(path: Path, job: SnapshotJob), optional
    on_error : callable(message: str), optional
    on_fallback : callable(message: str), optional
        Called from the writer thread; the caller marshals to its GUI thread.
    keep : int
        Versions kept per rater (:func:`prune_snapshots`).
    name : str
        Thread name (``softseg-autosave`` by default).
    """

    def __init__(
        self,
        target: RecoveryTarget,
        *,
        fallback: Path | None = None,
        on_saved: Callable[[Path, SnapshotJob], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_fallback: Callable[[str], None] | None = None,
        keep: int = KEEP,
        name: str = "softseg-autosave",
    ) -> None:
        self.target = target
        self._fallback = fallback
        self._on_saved = on_saved
        self._on_error = on_error
        self._on_fallback = on_fallback
        self._keep = keep
        self._pending: dict[str, SnapshotJob] = {}
        self._written: dict[str, str] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def folder(self) -> Path:
        """Where snapshots currently go."""
        return self.target.folder

    @property
    def thread(self) -> threading.Thread:
        """The writer thread (alive until :meth:`close`)."""
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, job: SnapshotJob) -> None:
        """Queue a snapshot (replacing a not-yet-written one of the same session)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("autosave writer is closed")
            self._pending[job.session] = job
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted is written; True when idle before *timeout*."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                key = next(iter(self._pending))
                job = self._pending.pop(key)
                self._busy = True
            try:
                self._write(job)
            except Exception as exc:  # never let the thread die with work queued behind it
                self._report(self._on_error, f"autosave failed: {exc}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, job: SnapshotJob) -> None:
        digest = content_hash(job.levels)
        last = self._written.get(job.session)
        if last == digest:
            return
        if last is None and not np.any(job.levels):
            return  # nothing painted yet: no snapshot, nothing to offer later
        kwargs = dict(
            session=job.session,
            geometry=job.geometry,
            scale=job.scale,
            source_image=job.source_image,
            color=job.color,
            digest=digest,
            keep=self._keep,
        )
        try:
            path = write_snapshot(self.target.folder, job.rater, job.levels, **kwargs)
        except (OSError, InputError) as exc:
            fallback = self._fallback
            if self.target.is_fallback or fallback is None:
                self._report(self._on_error, f"autosave failed: {exc}")
                return
            problem = f"cannot write {self.target.folder} ({getattr(exc, 'strerror', None) or exc})"
            self.target = RecoveryTarget(folder=fallback, is_fallback=True, problem=problem)
            self._report(self._on_fallback, f"{problem}; autosaving to {fallback} instead")
            try:
                path = write_snapshot(fallback, job.rater, job.levels, **kwargs)
            except (OSError, InputError) as exc2:
                self._report(self._on_error, f"autosave failed: {exc2}")
                return
        self._written[job.session] = digest
        if self._on_saved is not None:
            try:
                self._on_saved(path, job)
            except Exception:  # a GUI callback must not kill the writer thread
                pass

    @staticmethod
    def _report(callback: Callable[[str], None] | None, message: str) -> None:
        if callback is not None:
            try:
                callback(message)
            except Exception:
                pass
