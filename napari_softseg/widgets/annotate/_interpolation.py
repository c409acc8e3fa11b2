"""Fill between slices in the viewer: the slices a rater painted, the fill in a worker, one undo.

The engine is :mod:`softseg.interpolate` (shape-based interpolation, nested levels, classes kept
apart); this module decides *which* slices the rater painted and applies the result without
freezing the viewer:

* :class:`SliceTracker` follows one rater layer's ``paint`` events (strokes, fills, polygons,
  erasing) along the slice axis shown at that moment. A slice counts as **painted** when it
  holds paint that no fill of this widget made, or when the rater's last edit there was an
  erase (an *empty painted slice*: "nothing here", a structure interpolated towards it ends).
  Slices a fill made stay **interpolated** while they hold exactly what the fill wrote; a
  stroke there, an undo or a redo makes them painted (or empty) again.
* :class:`Interpolator` snapshots the layer (main thread), runs
  :func:`~softseg.interpolate.interpolate_levels` /
  :func:`~softseg.interpolate.interpolate_class_levels` in a napari ``thread_worker`` and
  applies ``changed`` / ``values`` through napari's ``data_setitem`` inside **one**
  ``block_history`` (one undo step), in chunks of a few tens of milliseconds each, so the main
  thread is never blocked long. While the chunks are applied (well under a second) the canvas
  ignores mouse presses and keys, so no stroke can slip into the fill's undo step.
* Bad input (no rater layer, a 3D view, fewer than two painted slices, levels above the scale)
  is one line in the widget; nothing is changed.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer

from softseg.errors import InputError
from softseg.interpolate import SliceInterpolation, interpolate_class_levels, interpolate_levels

from napari_softseg._metadata import layer_uid
from napari_softseg._raters import layer_classes, layer_scale
from napari_softseg.widgets._common import canvas_widget
from napari_softseg.widgets.annotate._navigation import slice_axis

__all__ = [
    "FILL_KEY",
    "FillRecord",
    "Interpolator",
    "SliceTracker",
    "TrackerState",
    "painted_for_fill",
    "run_fill",
]

#: Shortcut of *Fill between slices* on a rater layer (napari's Labels layer does not use it).
FILL_KEY = "Shift-I"
#: Main-thread time aimed at per applied chunk (ms).
CHUNK_TARGET_MS = 20.0
_FIRST_CHUNK = 40_000
_MAX_FILLS = 8


# --------------------------------------------------------------------------- slice bookkeeping
@dataclass(eq=False)
class FillRecord:
    """One fill this widget applied: the voxels it wrote, by slice along ``axis``.

    ``flat`` holds the raveled indices of the changed voxels, ``values`` what was written,
    ``slices`` the interpolated slices still considered interpolated (a rater's stroke on one
    removes it).
    """

    axis: int
    shape: tuple[int, ...]
    slices: set[int]
    flat: np.ndarray
    values: np.ndarray

    def live(self, data: np.ndarray) -> set[int]:
        """The slices that still hold exactly what the fill wrote there."""
        if not self.slices:
            return set()
        if tuple(np.shape(data)) != self.shape:
            return set()
        if self.flat.size == 0:
            return set(self.slices)
        ok = np.asarray(data).reshape(-1)[self.flat] == self.values
        if ok.all():
            return set(self.slices)
        axis_index = np.unravel_index(self.flat[~ok], self.shape)[self.axis]
        broken = set(int(i) for i in np.unique(axis_index))
        return {s for s in self.slices if s not in broken}


@dataclass(frozen=True, eq=False)
class TrackerState:
    """A copy of a tracker's bookkeeping, for a worker (nothing in it changes afterwards)."""

    erased: dict[int, frozenset[int]]
    fills: tuple[FillRecord, ...]


def _interpolated(fills: Iterable[FillRecord], data: np.ndarray, axis: int) -> set[int]:
    out: set[int] = set()
    for rec in fills:
        if rec.axis == axis:
            out |= rec.live(data)
    return out


def _holding(data: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(a for a in range(np.ndim(data)) if a != axis)
    return np.flatnonzero(np.any(np.asarray(data) != 0, axis=other))


def painted_for_fill(data: np.ndarray, axis: int, state: TrackerState) -> tuple[int, ...]:
    """The slices to pass to the engine as painted (see the module docstring)."""
    interpolated = _interpolated(state.fills, data, axis)
    painted = {int(i) for i in _holding(data, axis)} - interpolated
    painted |= set(state.erased.get(axis, ()))
    return tuple(sorted(painted))


class SliceTracker:
    """Painted / erased / interpolated slices of one rater layer (see the module docstring).

    Parameters
    ----------
    layer : napari Labels layer
    viewer : napari viewer (its slice axis at the time of each edit)
    """

    def __init__(self, layer: Any, viewer: Any) -> None:
        self.layer = layer
        self.viewer = viewer
        self.erased: dict[int, set[int]] = {}
        self.fills: list[FillRecord] = []
        self.version = 0
        self.applying = False
        self._dirty = False
        self._live: dict[int, set[int]] = {}
        layer.events.paint.connect(self._on_paint)
        layer.events.set_data.connect(self._on_set_data)
        layer.events.data.connect(self._on_set_data)

    # ---------------------------------------------------------------- events
    def _edit_axes(self, box: Sequence[slice]) -> list[tuple[int, range]]:
        """(axis, slices) an edit with bounding box *box* touched."""
        axis = slice_axis(self.viewer) if self.viewer.dims.ndisplay == 2 else None
        if axis is not None and axis < len(box):
            return [(axis, range(box[axis].start, box[axis].stop))]
        # 3D painting: the axes along which the edit stayed in one slice
        return [(a, range(s.start, s.stop)) for a, s in enumerate(box) if s.stop - s.start == 1]

    def _on_paint(self, event: Any = None) -> None:
        self.version += 1
        if self.applying:
            return
        for atom in getattr(event, "value", None) or []:
            box, value = _atom_box(atom, np.shape(self.layer.data))
            if box is None:
                continue
            erase = not np.any(np.asarray(value))
            for axis, slices in self._edit_axes(box):
                erased = self.erased.setdefault(axis, set())
                for s in slices:
                    (erased.add if erase else erased.discard)(int(s))
                for rec in self.fills:
                    if rec.axis == axis:
                        rec.slices.difference_update(int(s) for s in slices)
        self._live.clear()

    def _on_set_data(self, event: Any = None) -> None:
        self.version += 1
        if not self.applying:
            self._dirty = True
            self._live.clear()

    # ---------------------------------------------------------------- queries
    def state(self) -> TrackerState:
        """A frozen copy for a worker."""
        return TrackerState(
            erased={a: frozenset(s) for a, s in self.erased.items()},
            fills=tuple(
                FillRecord(r.axis, r.shape, set(r.slices), r.flat, r.values) for r in self.fills
            ),
        )

    def interpolated(self, axis: int) -> set[int]:
        """Slices along *axis* that still hold what a fill wrote (cached until the next edit)."""
        if axis not in self._live:
            self._live[axis] = _interpolated(self.fills, np.asarray(self.layer.data), axis)
        return set(self._live[axis])

    def record_fill(
        self, result: SliceInterpolation, shape: tuple[int, ...], flat: np.ndarray | None = None
    ) -> None:
        """Remember a fill the widget applied (the oldest of more than 8 are forgotten).

        *flat*: ``result.changed`` as raveled indices, when the worker computed them already.
        """
        axis = result.axis
        # the layer holds exactly what this fill wrote, and the fill wrote only its own slices:
        # the interpolated slices are the earlier fills' (checked now) plus this fill's
        before = self._live.get(axis)
        if before is None:
            before = _interpolated(self.fills, np.asarray(self.layer.data), axis)
        if flat is None:
            flat = _flat_changed(result, shape)
        self.fills.append(
            FillRecord(axis, tuple(shape), set(result.interpolated), flat, result.values)
        )
        del self.fills[:-_MAX_FILLS]
        for s in result.interpolated:  # filled slices are not "painted empty" any more
            self.erased.get(axis, set()).discard(int(s))
        self._live = {axis: set(before) | {int(s) for s in result.interpolated}}

    def close(self) -> None:
        for emitter, cb in (
            (self.layer.events.paint, self._on_paint),
            (self.layer.events.set_data, self._on_set_data),
            (self.layer.events.data, self._on_set_data),
        ):
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass


def _atom_box(atom: Any, shape: tuple[int, ...]) -> tuple[tuple[slice, ...] | None, Any]:
    """Bounding box (slices) and new value of a napari history atom."""
    key = getattr(atom, "slice_key", None)
    if key is not None:  # mask-based edit (brush, fill, polygon)
        box = tuple(
            slice(*k.indices(n)[:2]) if isinstance(k, slice) else slice(int(k), int(k) + 1)
            for k, n in zip(key, shape)
        )
        return box, atom.new_value
    try:
        indices, _old, new = atom
    except (TypeError, ValueError):
        return None, None
    idx = [np.asarray(i) for i in indices]
    if not idx or idx[0].size == 0:
        return None, None
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    return box, new


# --------------------------------------------------------------------------- the fill itself
def _flat_changed(result: SliceInterpolation, shape: tuple[int, ...]) -> np.ndarray:
    """The fill's changed voxels as raveled indices into *shape*."""
    return np.ravel_multi_index(result.changed, shape) if result.n_changed else np.zeros(0, np.intp)


def run_fill(
    data: np.ndarray,
    *,
    axis: int,
    state: TrackerState,
    classes: Sequence[str] | None,
    n_levels: int,
    spacing: Sequence[float],
    name: str,
) -> SliceInterpolation:
    """What the worker runs: painted slices from *state*, then the engine (no Qt, no layer)."""
    painted = painted_for_fill(data, axis, state)
    if classes:
        return interpolate_class_levels(
            data, n_classes=len(classes), n_levels=n_levels, axis=axis, painted=painted,
            spacing=spacing, name=name,
        )
    return interpolate_levels(
        data, axis=axis, painted=painted, spacing=spacing, n_levels=n_levels, name=name
    )


class _InputBlocker(QObject):
    """Swallows mouse presses and keys on the canvas while a fill is applied."""

    _BLOCKED = (
        QEvent.Type.MouseButtonPress,
        QEvent.Type.MouseButtonDblClick,
        QEvent.Type.KeyPress,
        QEvent.Type.Wheel,
    )

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        return event.type() in self._BLOCKED


class Interpolator(QObject):
    """*Fill between slices* for a widget (see the module docstring).

    Parameters
    ----------
    viewer : napari viewer
    anchor : QWidget
        A docked widget (to find the canvas).
    tracker_of : callable(layer) -> SliceTracker
    on_message : callable(text, severity)
        ``severity`` "status" (the dock's status line only: no notification pops up over the
        canvas while the rater works), "info", "warning" or "error".
    on_done : callable(layer, result or None), optional
        After a fill was applied (or refused / failed: None).
    """

    def __init__(
        self,
        viewer: Any,
        anchor: Any,
        *,
        tracker_of: Callable[[Any], SliceTracker],
        on_message: Callable[[str, str], None],
        on_done: Callable[[Any, SliceInterpolation | None], None] | None = None,
    ) -> None:
        super().__init__(anchor)
        self.viewer = viewer
        self._anchor = anchor
        self._tracker_of = tracker_of
        self._on_message = on_message
        self._on_done = on_done
        self.worker: Any = None
        self.busy = False
        self.last: SliceInterpolation | None = None
        #: main-thread milliseconds of each step of the last fill: ("snapshot", ms), ("chunk", ms) ...
        self.main_thread_ms: list[tuple[str, float]] = []
        self.timings: dict[str, float] = {}
        self._blocker = _InputBlocker(self)

    # ---------------------------------------------------------------- start
    def start(self, layer: Any) -> Any:
        """Fill *layer*'s unpainted slices between painted ones along the shown slice axis.

        Returns the started worker, or None when the input was refused (one line said why).
        """
        if self.busy:
            self._on_message("a fill is running; wait for it to finish", "warning")
            return None
        try:
            job = self._prepare(layer)
        except InputError as exc:
            self._on_message(str(exc), "error")
            if self._on_done is not None:
                self._on_done(layer, None)
            return None
        return self._launch(layer, job)

    def _prepare(self, layer: Any) -> dict[str, Any]:
        if layer is None:
            raise InputError("add or pick a rater layer first, then paint two or more slices to fill between")
        scale = layer_scale(layer)
        if scale is None:
            raise InputError(f"{layer.name}: no confidence scale; apply one under Confidence scale first")
        if np.ndim(layer.data) != 3:
            raise InputError(f"{layer.name}: filling between slices needs a 3D volume")
        axis = slice_axis(self.viewer)
        if axis is None or self.viewer.dims.ndisplay != 2:
            raise InputError("switch to the 2D view: slices are filled along the slice slider's axis")
        t0 = time.perf_counter()
        data = np.array(layer.data, copy=True)  # the worker gets its own copy
        tracker = self._tracker_of(layer)
        state = tracker.state()
        ms = (time.perf_counter() - t0) * 1000.0
        self.main_thread_ms = [("snapshot", ms)]
        return dict(
            data=data, axis=int(axis), state=state, classes=layer_classes(layer),
            n_levels=scale.n_levels, spacing=tuple(float(s) for s in layer.scale),
            name=f"layer {layer.name!r}", version=tracker.version,
        )

    def _launch(self, layer: Any, job: dict[str, Any]) -> Any:
        from napari.qt.threading import thread_worker

        uid, version = layer_uid(layer), job.pop("version")
        shape = tuple(np.shape(job["data"]))
        self.busy = True
        self.timings = {"started": time.perf_counter()}
        me = weakref.ref(self)

        @thread_worker(ignore_errors=True)
        def work() -> tuple[SliceInterpolation, float, np.ndarray]:
            t = time.perf_counter()
            res = run_fill(**job)
            flat = _flat_changed(res, shape)  # off the main thread, for the slice bookkeeping
            return res, time.perf_counter() - t, flat

        worker = work()
        worker.returned.connect(lambda out: me() and me()._on_result(uid, version, *out))
        worker.errored.connect(lambda exc: me() and me()._on_error(uid, exc))
        self.worker = worker
        worker.start()
        self._on_message(f"filling between the painted slices of {layer.name} …", "status")
        return worker

    # ---------------------------------------------------------------- results
    def _layer(self, uid: str) -> Any:
        from napari_softseg._metadata import find_layer

        return find_layer(self.viewer.layers, uid)

    def _on_error(self, uid: str, exc: BaseException) -> None:
        self.busy = False
        layer = self._layer(uid)
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, InputError):
            text = f"fill between slices failed: {text}"
        self._on_message(text, "error")
        if self._on_done is not None:
            self._on_done(layer, None)

    def _on_result(
        self, uid: str, version: int, result: SliceInterpolation, compute_s: float, flat: np.ndarray
    ) -> None:
        self.timings["compute_s"] = compute_s
        layer = self._layer(uid)
        if layer is None:
            self.busy = False
            self._on_message("the rater layer was removed while filling; nothing changed", "warning")
            return
        tracker = self._tracker_of(layer)
        if tracker.version != version:
            self.busy = False
            self._on_message(
                f"{layer.name} changed while filling; nothing changed — press Fill between slices again",
                "warning",
            )
            if self._on_done is not None:
                self._on_done(layer, None)
            return
        if not result.interpolated:
            self.busy = False
            self._on_message(
                f"{layer.name}: the painted slices {_slices(result.painted)} leave no gap to fill", "info"
            )
            if self._on_done is not None:
                self._on_done(layer, result)
            return
        self._apply(layer, tracker, result, flat)

    def _apply(self, layer: Any, tracker: SliceTracker, result: SliceInterpolation, flat: np.ndarray) -> None:
        """``data_setitem`` in chunks inside one ``block_history`` (one undo step)."""
        n = result.n_changed
        history = layer.block_history()
        history.__enter__()
        tracker.applying = True
        canvas = canvas_widget(self._anchor)
        if canvas is not None:
            canvas.installEventFilter(self._blocker)
        state = {"start": 0, "size": _FIRST_CHUNK}
        uid = layer_uid(layer)

        def finish(ok: bool) -> None:
            t0 = time.perf_counter()
            try:
                history.__exit__(None, None, None)  # commits the staged atoms as ONE undo step
            finally:
                tracker.applying = False
                if canvas is not None:
                    try:
                        canvas.removeEventFilter(self._blocker)
                    except RuntimeError:
                        pass
            self.timings["applied"] = time.perf_counter()
            if not ok:
                self.busy = False
                return
            shape = tuple(np.shape(layer.data))
            tracker.record_fill(result, shape, flat)
            self.main_thread_ms.append(("commit", (time.perf_counter() - t0) * 1000.0))
            self.last = result
            self._on_message(
                f"{layer.name}: filled {len(result.interpolated)} slices "
                f"({_slices(result.interpolated)}) between {len(result.painted)} painted slices, "
                f"{n} voxels; Ctrl+Z undoes the whole fill",
                "status",
            )
            # the overview (annotated-slice bar) follows in the next event-loop turn: committing
            # and redrawing are two short main-thread steps, not one long one; busy until both
            QTimer.singleShot(0, overview)

        def overview() -> None:
            t1 = time.perf_counter()
            try:
                if self._on_done is not None:
                    self._on_done(layer, result)
            finally:
                self.busy = False
                self.main_thread_ms.append(("overview", (time.perf_counter() - t1) * 1000.0))

        def step() -> None:
            if self._layer(uid) is None:
                finish(False)
                return
            t0 = time.perf_counter()
            a, b = state["start"], min(n, state["start"] + state["size"])
            idx = tuple(i[a:b] for i in result.changed)
            layer.data_setitem(idx, result.values[a:b], refresh=b >= n)
            ms = (time.perf_counter() - t0) * 1000.0
            self.main_thread_ms.append(("chunk", ms))
            state["start"] = b
            # aim at CHUNK_TARGET_MS per chunk
            rate = (b - a) / max(ms, 0.5)
            state["size"] = int(np.clip(rate * CHUNK_TARGET_MS, 5_000, 400_000))
            if b >= n:
                finish(True)
            else:
                QTimer.singleShot(0, step)

        if n == 0:
            finish(True)
        else:
            QTimer.singleShot(0, step)

    def close(self) -> None:
        worker = self.worker
        if worker is not None:
            try:
                worker.quit()
            except RuntimeError:
                pass


def _slices(items: Sequence[int]) -> str:
    """``3–7, 9`` for display."""
    items = sorted(int(i) for i in items)
    if not items:
        return "none"
    runs, start, prev = [], items[0], items[0]
    for i in items[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(f"{start}" if start == prev else f"{start}–{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(runs)
