"""The autosave writer thread: snapshots are hashed, compressed and written off the GUI thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softseg.autosave.folders import RecoveryTarget, new_session_id
from softseg.autosave.store import KEEP, content_hash, write_snapshot
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.preannotate import changed_voxels

__all__ = ["AutosaveWriter", "SnapshotJob"]


@dataclass(frozen=True, eq=False)
class SnapshotJob:
    """One snapshot handed to :class:`AutosaveWriter` (the array is already a private copy).

    ``session`` identifies the rater layer (:func:`new_session_id`); ``color`` its display colour;
    ``classes`` the class names of a layer painted with class codes. A pre-annotated layer
    (:mod:`softseg.preannotate`) gives ``preannotated_by``, its ``preannotation`` record and the
    model's map as ``reference`` (read-only; shared, not copied): the writer thread counts the
    voxels the rater changed (``changed_before`` + voxels differing from ``reference``) into the
    record's ``rater_changed_voxels``.
    """

    rater: str
    levels: np.ndarray
    geometry: DisplayGeometry | None = None
    scale: ConfidenceScale | None = None
    source_image: str | None = None
    session: str = field(default_factory=new_session_id)
    color: tuple[float, float, float] | None = None
    classes: tuple[str, ...] | None = None
    preannotated_by: str | None = None
    preannotation: dict[str, Any] | None = None
    reference: np.ndarray | None = None
    changed_before: int = 0

    def record(self) -> dict[str, Any] | None:
        """The pre-annotation record with the rater's changes counted (None: not one).

        Counted once (in the writer thread) and kept.
        """
        if self.preannotation is None:
            return None
        cached = self.__dict__.get("_record")
        if cached is None:
            cached = dict(self.preannotation)
            if self.reference is not None:
                cached["rater_changed_voxels"] = changed_voxels(
                    self.levels, self.reference, before=self.changed_before
                )
            object.__setattr__(self, "_record", cached)
        return dict(cached)


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
            classes=job.classes,
            preannotated_by=job.preannotated_by,
            preannotation=job.record(),
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

