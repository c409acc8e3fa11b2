"""Autosave of rater layers in the viewer: one debounced session per layer, tracked by layer uid.

:class:`RaterAutosave` listens to one rater layer's ``paint`` (strokes, fills, polygons),
``set_data`` (undo/redo) and ``data`` (array replaced) events; ``delay_ms`` after the last one,
or at most ``max_delay_s`` after the first unsaved one, it copies ``layer.data`` on the main
thread (the only main-thread cost, timed in ``snapshot_ms``) and hands the copy to its own
:class:`softseg.autosave.AutosaveWriter` thread, which writes a new snapshot file.

:class:`AutosaveController` owns the sessions of a widget, keyed by
:func:`napari_softseg._metadata.layer_uid` — never by Python identity, because the viewer a
plugin widget gets from the Plugins menu hands out a new proxy object for a layer at every access.
So there is exactly one session (one writer thread) per rater layer, and it is closed (pending
work written, thread stopped) when the layer leaves the viewer.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from softseg.autosave import (
    AutosaveWriter,
    SnapshotJob,
    choose_recovery_folder,
    fallback_folder,
    new_session_id,
)
from softseg.errors import InputError

from napari_softseg._metadata import PREANNOTATION_KEY, layer_uid
from napari_softseg._raters import geometry_of, hue_of, layer_classes, layer_scale, rater_id

__all__ = [
    "AUTOSAVE_DELAY_MS",
    "AUTOSAVE_MAX_DELAY_S",
    "AutosaveController",
    "FlushOnClose",
    "RaterAutosave",
]

AUTOSAVE_DELAY_MS = 1500
AUTOSAVE_MAX_DELAY_S = 5.0
_EVENTS = ("paint", "set_data", "data")


class RaterAutosave(QObject):
    """Debounced autosave of one rater layer (one session, one writer thread).

    Parameters
    ----------
    layer : napari Labels layer
    image_path : Path or None
        The image the layer annotates (its recovery folder); None for an image without a file.
    image_name : str
        The image layer's name (names the fallback folder of an image without a file).
    delay_ms, max_delay_s : debounce delays.
    on_message : callable(kind, text), optional
        ``kind`` is ``"fallback"``, ``"error"`` or ``"info"``; called in the main thread.
    parent : QObject, optional
        Qt parent (the dock widget): Qt, not Python's garbage collector, decides when the timer dies.
    reference_of : callable() -> (ndarray, int) or None, optional
        For a pre-annotated layer: the model's map and the voxels counted as changed before
        (restored work); the writer thread counts the rater's changes against it.

    Signals
    -------
    saved(path)
    recorded(uid, record)
        The pre-annotation record written with a snapshot (main thread: the widget keeps the
        layer metadata's ``rater_changed_voxels`` up to date with it).

    Raises
    ------
    InputError
        No recovery folder can be written (next to the image nor in the fallback).
    """

    saved = Signal(str)
    failed = Signal(str)
    fell_back = Signal(str)
    recorded = Signal(str, object)

    def __init__(
        self,
        layer: Any,
        *,
        image_path: Path | None,
        image_name: str,
        delay_ms: int = AUTOSAVE_DELAY_MS,
        max_delay_s: float = AUTOSAVE_MAX_DELAY_S,
        on_message: Callable[[str, str], None] | None = None,
        parent: QObject | None = None,
        reference_of: Callable[[], tuple[np.ndarray, int] | None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.layer = layer
        self._reference_of = reference_of
        self.uid = layer_uid(layer)
        self.session = new_session_id()
        self.image_path = image_path
        self.image_name = image_name
        target = choose_recovery_folder(image_path, name=image_name)
        fallback = None if target.is_fallback else fallback_folder(image_path, name=image_name)
        self.writer = AutosaveWriter(
            target,
            fallback=fallback,
            on_saved=self._written,
            on_error=self.failed.emit,
            on_fallback=self.fell_back.emit,
            name=f"softseg-autosave-{self.uid[:8]}",
        )
        self.target = target
        if on_message is not None:
            self.fell_back.connect(lambda msg: on_message("fallback", msg))
            self.failed.connect(lambda msg: on_message("error", msg))
        self.snapshot_ms: list[float] = []
        self._dirty_since: float | None = None
        self._max_delay_s = float(max_delay_s)
        self._closed = False
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(delay_ms))
        self.timer.timeout.connect(self.snapshot_now)
        for name in _EVENTS:
            getattr(layer.events, name).connect(self._changed)

    def _written(self, path: Path, job: SnapshotJob) -> None:
        """Writer thread: a snapshot was written (signals cross to the main thread)."""
        self.saved.emit(str(path))
        record = job.record()
        if record is not None:
            self.recorded.emit(self.uid, record)

    @property
    def folder(self) -> Path:
        """The image's recovery folder snapshots go to now (the fallback after a switch)."""
        return self.writer.folder

    @property
    def closed(self) -> bool:
        return self._closed

    def _changed(self, event: Any = None) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if self._dirty_since is None:
            self._dirty_since = now
        if now - self._dirty_since >= self._max_delay_s:
            self.snapshot_now()  # painting without pause: do not postpone forever
        else:
            self.timer.start()

    def mark_dirty(self) -> None:
        """Schedule a snapshot as if the layer had changed (e.g. a new confidence scale)."""
        self._changed()

    def snapshot_now(self) -> None:
        """Copy the layer's data (main thread) and queue it for writing (writer thread)."""
        self.timer.stop()
        self._dirty_since = None
        layer = self.layer
        t0 = time.perf_counter()
        levels = np.array(layer.data, copy=True)
        self.snapshot_ms.append((time.perf_counter() - t0) * 1000.0)
        try:
            geometry = geometry_of(layer)
        except InputError:
            geometry = None
        record = layer.metadata.get(PREANNOTATION_KEY)
        reference = self._reference_of() if self._reference_of is not None else None
        self.writer.submit(
            SnapshotJob(
                rater=rater_id(layer),
                levels=levels,
                geometry=geometry,
                scale=layer_scale(layer),
                source_image=None if self.image_path is None else str(self.image_path),
                session=self.session,
                color=hue_of(layer),
                classes=layer_classes(layer),
                preannotated_by=None if not isinstance(record, dict) else str(record.get("model")),
                preannotation=dict(record) if isinstance(record, dict) else None,
                reference=None if reference is None else reference[0],
                changed_before=0 if reference is None else int(reference[1]),
            )
        )

    def flush(self, timeout: float = 30.0) -> bool:
        """Write pending work now and wait for the writer."""
        if not self._closed and (self.timer.isActive() or self._dirty_since is not None):
            self.snapshot_now()
        return self.writer.flush(timeout)

    def close(self) -> None:
        """Stop listening, write what is pending, stop the writer thread."""
        if self._closed:
            return
        for name in _EVENTS:
            try:
                getattr(self.layer.events, name).disconnect(self._changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self.flush()
        self._closed = True
        self.timer.stop()
        self.writer.close()


class AutosaveController(QObject):
    """The autosave sessions of one widget, keyed by layer uid (see the module docstring).

    Parameters
    ----------
    viewer : napari viewer (or the Plugins-menu proxy of one)
    parent : QObject
    on_saved : callable(uid, path), optional
    on_closed : callable(uid), optional
        After a session of a removed layer was closed (its work is on disk).
    on_message : callable(kind, text), optional
    reference_of : callable(uid) -> (ndarray, int) or None, optional
        A pre-annotated layer's model map and earlier change count (see :class:`RaterAutosave`).
    on_record : callable(uid, record), optional
        A pre-annotation record was written with a snapshot (main thread).
    """

    def __init__(
        self,
        viewer: Any,
        *,
        parent: QObject | None = None,
        on_saved: Callable[[str, str], None] | None = None,
        on_closed: Callable[[str], None] | None = None,
        on_message: Callable[[str, str], None] | None = None,
        delay_ms: int = AUTOSAVE_DELAY_MS,
        reference_of: Callable[[str], tuple[np.ndarray, int] | None] | None = None,
        on_record: Callable[[str, dict], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._reference_of = reference_of
        self._on_record = on_record
        self.sessions: dict[str, RaterAutosave] = {}
        self._on_saved = on_saved
        self._on_closed = on_closed
        self._on_message = on_message
        self.delay_ms = int(delay_ms)
        viewer.layers.events.removed.connect(self._on_removed)

    def for_layer(self, layer: Any) -> RaterAutosave | None:
        """The session of a layer (None when it has none)."""
        return self.sessions.get(layer_uid(layer))

    def attach(self, layer: Any, *, image_path: Path | None, image_name: str) -> RaterAutosave:
        """The layer's session, started when it has none (at most one per layer uid).

        Raises
        ------
        InputError
            No recovery folder can be written.
        """
        uid = layer_uid(layer)
        session = self.sessions.get(uid)
        if session is not None:
            return session
        session = RaterAutosave(
            layer,
            image_path=image_path,
            image_name=image_name,
            delay_ms=self.delay_ms,
            on_message=self._on_message,
            parent=self,
            reference_of=None if self._reference_of is None else (lambda uid=uid: self._reference_of(uid)),
        )
        if self._on_record is not None:
            session.recorded.connect(self._on_record)
        if self._on_saved is not None:
            session.saved.connect(lambda path, uid=uid: self._on_saved(uid, path))
        self.sessions[uid] = session
        return session

    def detach(self, uid: str) -> None:
        """Close the session of a layer uid (its pending work is written first)."""
        session = self.sessions.pop(uid, None)
        if session is not None:
            session.close()
            if self._on_closed is not None:
                self._on_closed(uid)

    def _on_removed(self, event: Any) -> None:
        self.detach(layer_uid(event.value))
        self.sweep()

    def sweep(self) -> None:
        """Close sessions whose layer is no longer in the viewer."""
        present = {layer_uid(lyr) for lyr in self.viewer.layers}
        for uid in [u for u in self.sessions if u not in present]:
            self.detach(uid)

    def live_sessions(self) -> set[str]:
        """Session ids of the open rater layers (their work is not offered for recovery)."""
        return {s.session for s in self.sessions.values()}

    def flush(self, timeout: float = 30.0) -> bool:
        """Write every session's pending work now and wait for the writers."""
        return all(s.flush(timeout) for s in list(self.sessions.values()))

    def close_all(self) -> None:
        """Close every session (the widget is going away)."""
        for uid in list(self.sessions):
            session = self.sessions.pop(uid)
            session.close()
        try:
            self.viewer.layers.events.removed.disconnect(self._on_removed)
        except (TypeError, ValueError, RuntimeError):
            pass


class FlushOnClose(QObject):
    """Writes every pending snapshot when the viewer's window closes or the application quits.

    The debounce would otherwise lose up to ``delay_ms`` of strokes painted just before closing
    napari. The window is found from *anchor* (a docked widget) once it is docked.
    """

    def __init__(self, controller: AutosaveController, anchor: Any) -> None:
        super().__init__(anchor)
        self.controller = controller
        self._anchor = anchor
        self._window: Any = None  # weak: the main window holds napari's QtViewer
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._flush)
        self._retry = QTimer(self)
        self._retry.setInterval(200)
        self._retry.timeout.connect(self._find_window)
        self._retry.start()

    def _find_window(self) -> None:
        window = self._anchor.window()
        if window is None or window is self._anchor or not hasattr(window, "centralWidget"):
            return
        self._retry.stop()
        self._window = weakref.ref(window)
        window.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt name)
        from qtpy.QtCore import QEvent

        if self._window is not None and obj is self._window() and event.type() == QEvent.Type.Close:
            self._flush()
        return False

    def _flush(self) -> None:
        try:
            self.controller.flush()
        except RuntimeError:  # Qt objects already gone: nothing left to write from
            pass
