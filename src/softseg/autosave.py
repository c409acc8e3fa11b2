"""Autosave and recovery of painted rater layers (engine side, no Qt).

While a rater paints, snapshots of the level map are written, debounced, to a recovery folder
next to the image::

    <image folder>/.softseg-recovery/<image stem>/<rater>.nii.gz   level map, the image's geometry
    <image folder>/.softseg-recovery/<image stem>/<rater>.json     rater, confidence scale, time, hash
    <image folder>/.softseg-recovery/<image stem>/<rater>.export.json   last export (written on export)

When that folder cannot be written (read-only share, a file in the way) the snapshots go to a
fallback under the user's cache, ``~/.cache/softseg/recovery/<image stem>-<hash of its folder>/``
(``$XDG_CACHE_HOME`` is honoured; ``$SOFTSEG_RECOVERY_DIR`` overrides the root), and
:class:`AutosaveWriter` reports the switch once.

Every file is written atomically (:func:`softseg.io.atomic_path`): a writer killed in the middle of
a save leaves at most a hidden temporary file, never a broken ``<rater>.nii.gz``, so the previous
snapshot stays restorable. :func:`list_recoveries` returns the snapshots whose content differs from
the rater's last export, newest first; :func:`load_snapshot` reads one back in napari order.

The viewer side (``napari_softseg.widgets.annotate``) copies ``layer.data`` on the main thread
(a few ms) and hands the copy to :class:`AutosaveWriter`, whose own thread does the compression
and the disk I/O.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, save_display_array
from softseg.io import load_volume, save_volume, write_json

__all__ = [
    "FOLDER_NAME",
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
    "load_snapshot",
    "primary_folder",
    "rater_file_stem",
    "record_export",
    "write_snapshot",
]

#: Name of the hidden recovery folder created next to the image.
FOLDER_NAME = ".softseg-recovery"
_FORMAT = "softseg-autosave/1"
_STALE_TEMP_S = 600.0


# ---------------------------------------------------------------------------------------- naming
def _image_stem(image: str | os.PathLike) -> str:
    name = Path(image).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def rater_file_stem(rater: str) -> str:
    """The file stem used for a rater id: letters, digits, ``-`` and ``_`` only.

    Raises
    ------
    InputError
        Empty rater id, or one with no usable character.
    """
    text = str(rater).strip()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if not stem:
        raise InputError(f"rater id {rater!r} is empty; type a name such as 'rater1' or your initials")
    return stem


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
    image: str | os.PathLike | None, *, name: str | None = None, root: str | os.PathLike | None = None
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
        The folder actually used (created, and a probe file written and removed).
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
            f"({exc.strerror or type(exc).__name__}); set SOFTSEG_RECOVERY_DIR to a writable folder"
        ) from None
    return RecoveryTarget(folder=folder, is_fallback=True, problem=problem)


# ------------------------------------------------------------------------------------- snapshots
def content_hash(levels: np.ndarray) -> str:
    """SHA-1 of an array's shape, dtype and bytes (identifies a snapshot's content)."""
    arr = np.ascontiguousarray(levels)
    h = hashlib.sha1()
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _now_iso(now: float | None = None) -> str:
    t = time.time() if now is None else now
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


def _remove_stale_temps(folder: Path, stem: str) -> None:
    limit = time.time() - _STALE_TEMP_S
    for tmp in folder.glob(f".{stem}.*"):
        try:
            if ".tmp" in tmp.name and tmp.stat().st_mtime < limit:
                tmp.unlink()
        except OSError:
            pass


def write_snapshot(
    folder: str | os.PathLike,
    rater: str,
    levels: np.ndarray,
    *,
    geometry: DisplayGeometry | None = None,
    scale: ConfidenceScale | None = None,
    source_image: str | os.PathLike | None = None,
    digest: str | None = None,
    now: float | None = None,
) -> Path:
    """Write one snapshot of a rater's level map, atomically (NIfTI first, then its JSON).

    Parameters
    ----------
    folder : path-like
        The recovery folder (:func:`choose_recovery_folder`); created if missing.
    rater : str
        Rater id; the files are ``<rater>.nii.gz`` and ``<rater>.json``.
    levels : ndarray, shape (S, P, L), integer
        The level map in napari order (a copy of ``layer.data``).
    geometry : DisplayGeometry, optional
        The image's geometry: the snapshot is then a normal rater file in the image's own
        orientation. Without it the array is stored as is with an identity affine.
    scale : ConfidenceScale, optional
        Stored in the JSON so a restore gets the same level -> soft mapping.
    source_image : path-like, optional
    digest : str, optional
        :func:`content_hash` of *levels*, when already known.
    now : float, optional
        Time stamp (seconds since the epoch) to record; the current time by default.

    Returns
    -------
    Path
        The written ``<rater>.nii.gz``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = rater_file_stem(rater)
    levels = np.asarray(levels)
    if levels.ndim != 3:
        raise InputError(f"expected a 3D level map to autosave; got shape {levels.shape}")
    path = folder / f"{stem}.nii.gz"
    digest = digest or content_hash(levels)
    t = time.time() if now is None else float(now)
    meta = {
        "format": _FORMAT,
        "rater": str(rater),
        "saved_at": _now_iso(t),
        "saved_at_unix": t,
        "source_image": None if source_image is None else str(source_image),
        "shape": list(levels.shape),
        "dtype": levels.dtype.str,
        "order": "file" if geometry is not None else "display",
        "sha1": digest,
        "confidence_scale": None if scale is None else scale.as_dict(),
    }
    if geometry is not None:
        save_display_array(path, levels, geometry, overwrite=True, durable=True)
    else:
        save_volume(path, levels, affine=np.eye(4), overwrite=True, durable=True)
    write_json(folder / f"{stem}.json", meta, overwrite=True, durable=True)
    _remove_stale_temps(folder, stem)
    return path


def record_export(
    folder: str | os.PathLike,
    rater: str,
    levels: np.ndarray,
    export_path: str | os.PathLike,
    *,
    now: float | None = None,
) -> Path:
    """Note that a rater's work was exported, so an identical snapshot is not offered for recovery."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = time.time() if now is None else float(now)
    record = {
        "format": _FORMAT,
        "rater": str(rater),
        "exported_to": str(export_path),
        "exported_at": _now_iso(t),
        "exported_at_unix": t,
        "sha1": content_hash(levels),
    }
    return write_json(folder / f"{rater_file_stem(rater)}.export.json", record, overwrite=True)


@dataclass(frozen=True)
class Recovery:
    """A snapshot that can be restored.

    Attributes
    ----------
    rater : str
    path : Path
        The ``<rater>.nii.gz`` snapshot.
    saved_at : float
        Seconds since the epoch.
    scale : ConfidenceScale or None
    source_image : str or None
    order : {"file", "display"}
        Axis order of the stored array (``"file"`` when the image's geometry was known).
    is_fallback : bool
        Found in the fallback folder rather than next to the image.
    """

    rater: str
    path: Path
    saved_at: float
    scale: ConfidenceScale | None = None
    source_image: str | None = None
    order: str = "file"
    is_fallback: bool = False
    sha1: str | None = field(default=None, repr=False)

    @property
    def saved_at_text(self) -> str:
        """Local time of the snapshot, ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recoveries_in(folder: Path, *, is_fallback: bool) -> list[Recovery]:
    out = []
    if not folder.is_dir():
        return out
    for nii in sorted(folder.glob("*.nii.gz")):
        if nii.name.startswith("."):
            continue  # temporary file of an interrupted write
        stem = nii.name[: -len(".nii.gz")]
        meta = _read_json(folder / f"{stem}.json") or {}
        export = _read_json(folder / f"{stem}.export.json")
        try:
            mtime = nii.stat().st_mtime
        except OSError:
            continue
        saved_at = float(meta.get("saved_at_unix", mtime))
        if abs(saved_at - mtime) > 5.0:
            # the JSON is from an older snapshot (writer stopped between the two files)
            saved_at, meta = mtime, {k: meta.get(k) for k in ("rater", "confidence_scale", "source_image", "order")}
        if export is not None:
            if meta.get("sha1") and meta.get("sha1") == export.get("sha1"):
                continue
            if saved_at <= float(export.get("exported_at_unix", 0.0)):
                continue
        scale = None
        if isinstance(meta.get("confidence_scale"), Mapping):
            try:
                scale = ConfidenceScale.from_dict(meta["confidence_scale"])
            except InputError:
                scale = None
        out.append(
            Recovery(
                rater=str(meta.get("rater") or stem),
                path=nii,
                saved_at=saved_at,
                scale=scale,
                source_image=meta.get("source_image"),
                order=str(meta.get("order") or "file"),
                is_fallback=is_fallback,
                sha1=meta.get("sha1"),
            )
        )
    return out


def list_recoveries(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    fallback_root: str | os.PathLike | None = None,
) -> list[Recovery]:
    """Snapshots of an image's raters that hold work not in their last export, newest first.

    Looks in the folder next to the image and in its fallback folder; for a rater found in both,
    the newer snapshot wins.
    """
    found: list[Recovery] = []
    if image is not None:
        found += _recoveries_in(primary_folder(image), is_fallback=False)
    found += _recoveries_in(fallback_folder(image, name=name, root=fallback_root), is_fallback=True)
    best: dict[str, Recovery] = {}
    for rec in found:
        key = rater_file_stem(rec.rater)
        if key not in best or rec.saved_at > best[key].saved_at:
            best[key] = rec
    return sorted(best.values(), key=lambda r: r.saved_at, reverse=True)


def load_snapshot(recovery: Recovery | str | os.PathLike, *, geometry: DisplayGeometry | None = None) -> np.ndarray:
    """A snapshot's level map in napari order.

    Parameters
    ----------
    recovery : Recovery or path-like
    geometry : DisplayGeometry, optional
        The image's geometry; needed for snapshots stored in file order.

    Returns
    -------
    ndarray, shape (S, P, L), the stored integer dtype
    """
    if not isinstance(recovery, Recovery):
        path = Path(recovery)
        stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
        meta = _read_json(path.with_name(f"{stem}.json")) or {}
        recovery = Recovery(rater=stem, path=path, saved_at=0.0, order=str(meta.get("order") or "file"))
    vol = load_volume(recovery.path, label=True)
    if recovery.order == "display" or geometry is None:
        if recovery.order == "file" and geometry is None:
            raise InputError(f"{recovery.path}: stored in file order; give the image's geometry to restore it")
        return vol.array
    if tuple(vol.shape) != tuple(geometry.file_shape):
        raise InputError(
            f"{recovery.path}: snapshot shape {vol.shape} does not match the image shape "
            f"{geometry.file_shape}; it belongs to another image"
        )
    return geometry.to_display(vol.array)


def discard_recovery(recovery: Recovery) -> None:
    """Delete a snapshot and its JSON (after a restore was declined or completed and exported)."""
    stem = recovery.path.name[: -len(".nii.gz")]
    for p in (recovery.path, recovery.path.with_name(f"{stem}.json")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------- writer
@dataclass(frozen=True, eq=False)
class SnapshotJob:
    """One snapshot handed to :class:`AutosaveWriter` (the array is already a private copy)."""

    rater: str
    levels: np.ndarray
    geometry: DisplayGeometry | None = None
    scale: ConfidenceScale | None = None
    source_image: str | None = None


class AutosaveWriter:
    """Writes snapshots in its own thread, newest first, skipping unchanged content.

    ``submit`` never blocks: a job waiting to be written is replaced by a newer one (only the
    latest state matters). Content identical to the last written snapshot of the same rater is
    not written again. When the target folder fails, the writer switches to the fallback folder
    once and calls ``on_fallback(message)``.

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
    """

    def __init__(
        self,
        target: RecoveryTarget,
        *,
        fallback: Path | None = None,
        on_saved: Callable[[Path, SnapshotJob], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self._fallback = fallback
        self._on_saved = on_saved
        self._on_error = on_error
        self._on_fallback = on_fallback
        self._pending: dict[str, SnapshotJob] = {}
        self._written: dict[str, str] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="softseg-autosave", daemon=True)
        self._thread.start()

    @property
    def folder(self) -> Path:
        """Where snapshots currently go."""
        return self.target.folder

    def submit(self, job: SnapshotJob) -> None:
        """Queue a snapshot (replacing a not-yet-written one of the same rater)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("autosave writer is closed")
            self._pending[rater_file_stem(job.rater)] = job
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
                self._write(key, job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, key: str, job: SnapshotJob) -> None:
        digest = content_hash(job.levels)
        if self._written.get(key) == digest:
            return
        kwargs = dict(geometry=job.geometry, scale=job.scale, source_image=job.source_image, digest=digest)
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
        self._written[key] = digest
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
