"""Navigation a rater expects from ITK-SNAP or 3D Slicer.

* :class:`OrientationLetters` — the anatomical letters (A/P, R/L, S/I) at the four edges of the
  canvas, following napari's displayed axes (transpose, roll) and its 2D camera orientation.
* :func:`bind_slice_keys` — Up/Down step one slice, PageUp/PageDown :data:`PAGE_STEP` slices.
* :class:`SliceNavigator` — the slices a rater annotated, as a clickable bar under the level
  picker with *previous* / *next annotated slice* buttons (keys ``N`` / ``Shift-N``).

Slice kinds (issue 17): :data:`SLICE_KINDS` maps a kind to its bar colour — slices the rater
**painted**, slices a fill **interpolated**, slices holding a model's **pre-annotation** nobody
changed. The navigator asks a ``kinds_of(layer, axis) -> {slice: kind}`` function (the widget
knows which slices it filled and what the model made); without one, every slice holding paint is
"painted" (:data:`SLICE_SOURCES`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QRect, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from softseg.geometry import DISPLAY_AXCODES

from napari_softseg.widgets._common import canvas_widget

__all__ = [
    "NAVIGATION_KEYS",
    "PAGE_STEP",
    "SLICE_KINDS",
    "SLICE_SOURCES",
    "OrientationLetters",
    "SliceBar",
    "SliceNavigator",
    "bind_slice_keys",
    "default_brush_size",
    "orientation_letters",
    "painted_slices",
    "slice_axis",
    "step_slice",
    "unbind_slice_keys",
]

#: Slices PageUp / PageDown move.
PAGE_STEP = 5
_OPPOSITE = {"S": "I", "I": "S", "A": "P", "P": "A", "L": "R", "R": "L"}


# ----------------------------------------------------------------------------- orientation
def orientation_letters(
    displayed: tuple[int, int],
    *,
    axcodes: tuple[str, ...] = DISPLAY_AXCODES,
    flip_vertical: bool = False,
    flip_horizontal: bool = False,
) -> dict[str, str]:
    """Letters at the canvas edges for the displayed (row, column) axes.

    Parameters
    ----------
    displayed : (row axis, column axis)
        napari's ``viewer.dims.displayed`` in 2D.
    axcodes : tuple of str
        Anatomical direction of increasing index along each axis (``softseg.geometry``: S, P, L).
    flip_vertical, flip_horizontal : bool
        The 2D camera shows rows upwards / columns leftwards (napari ``camera.orientation2d``).

    Returns
    -------
    dict with keys ``"top"``, ``"bottom"``, ``"left"``, ``"right"``
        e.g. ``{"top": "A", "bottom": "P", "left": "R", "right": "L"}`` for an axial slice.
    """
    row, col = displayed
    down, right = axcodes[row], axcodes[col]
    letters = {"top": _OPPOSITE[down], "bottom": down, "left": _OPPOSITE[right], "right": right}
    if flip_vertical:
        letters["top"], letters["bottom"] = letters["bottom"], letters["top"]
    if flip_horizontal:
        letters["left"], letters["right"] = letters["right"], letters["left"]
    return letters


class OrientationLetters(QObject):
    """Anatomical letters over napari's canvas (hidden in 3D and for non-3D data).

    Parameters
    ----------
    viewer : napari viewer (or its Plugins-menu proxy)
    anchor : QWidget
        A widget docked in the viewer's window (the canvas is found from it once it is shown).
    """

    def __init__(self, viewer: Any, anchor: QWidget) -> None:
        super().__init__(anchor)
        self.viewer = viewer
        self._anchor = anchor
        self._canvas_ref: Any = None  # weak: the canvas holds napari's QtViewer
        self.labels: dict[str, QLabel] = {}
        self._enabled = True
        viewer.dims.events.order.connect(self.update)
        viewer.dims.events.ndisplay.connect(self.update)
        viewer.dims.events.ndim.connect(self.update)
        viewer.camera.events.orientation.connect(self.update)
        self._retry = QTimer(self)
        self._retry.setInterval(200)
        self._retry.timeout.connect(self._find_canvas)
        self._retry.start()

    def _find_canvas(self) -> None:
        canvas = canvas_widget(self._anchor)
        if canvas is None:
            return
        self._retry.stop()
        self._canvas_ref = weakref.ref(canvas)
        for edge in ("top", "bottom", "left", "right"):
            lab = QLabel(canvas)
            lab.setObjectName(f"softsegOrientation_{edge}")
            lab.setStyleSheet(
                "QLabel { color: #ffd75e; background: rgba(0, 0, 0, 90); font-weight: bold; "
                "font-size: 15px; padding: 1px 4px; border-radius: 3px; }"
            )
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self.labels[edge] = lab
        canvas.installEventFilter(self)
        self.update()

    @property
    def canvas(self) -> QWidget | None:
        """napari's canvas widget once found (None before, or after it was deleted)."""
        return self._canvas_ref() if self._canvas_ref is not None else None

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if obj is self.canvas and event.type() == QEvent.Type.Resize:
            self._place()
        return False

    def letters(self) -> dict[str, str] | None:
        """The letters shown now, or None when none are shown (3D view, not a 3D volume)."""
        dims = self.viewer.dims
        if not self._enabled or dims.ndisplay != 2 or dims.ndim != 3:
            return None
        orient = tuple(str(v) for v in self.viewer.camera.orientation2d)
        return orientation_letters(
            tuple(int(a) for a in dims.displayed[-2:]),
            flip_vertical=orient[0] == "up",
            flip_horizontal=orient[1] == "left",
        )

    def set_enabled(self, on: bool) -> None:
        self._enabled = bool(on)
        self.update()

    def update(self, event: Any = None) -> None:
        letters = self.letters()
        for edge, lab in self.labels.items():
            if letters is None:
                lab.hide()
                continue
            lab.setText(letters[edge])
            lab.adjustSize()
            lab.show()
            lab.raise_()
        self._place()

    def _place(self) -> None:
        canvas = self.canvas
        if canvas is None:
            return
        w, h = canvas.width(), canvas.height()
        for edge, lab in self.labels.items():
            lw, lh = lab.width(), lab.height()
            x, y = {
                "top": ((w - lw) // 2, 6),
                "bottom": ((w - lw) // 2, h - lh - 6),
                "left": (6, (h - lh) // 2),
                "right": (w - lw - 6, (h - lh) // 2),
            }[edge]
            lab.move(x, y)

    def close(self) -> None:
        """Disconnect from the viewer and remove the letters (the dock is going away)."""
        for emitter in (
            self.viewer.dims.events.order,
            self.viewer.dims.events.ndisplay,
            self.viewer.dims.events.ndim,
            self.viewer.camera.events.orientation,
        ):
            try:
                emitter.disconnect(self.update)
            except (TypeError, ValueError, RuntimeError):
                pass
        labels, self.labels = self.labels, {}
        try:
            self._retry.stop()
            canvas = self.canvas
            if canvas is not None:
                canvas.removeEventFilter(self)
            for lab in labels.values():
                lab.deleteLater()
        except RuntimeError:  # Qt deleted them with the window
            pass


# ------------------------------------------------------------------------------- slice keys
def slice_axis(viewer: Any) -> int | None:
    """The axis the slice slider moves (the last used one that is not displayed), None in 3D."""
    dims = viewer.dims
    hidden = [int(a) for a in dims.not_displayed]
    if not hidden:
        return None
    last = int(dims.last_used)
    return last if last in hidden else hidden[-1]


def step_slice(viewer: Any, steps: int) -> int | None:
    """Move the slice slider by *steps* (clamped to the volume); returns the new slice."""
    axis = slice_axis(viewer)
    if axis is None:
        return None
    n = int(viewer.dims.nsteps[axis])
    new = int(np.clip(int(viewer.dims.current_step[axis]) + int(steps), 0, max(0, n - 1)))
    viewer.dims.set_current_step(axis, new)
    return new


_SLICE_KEYS = {"Up": 1, "Down": -1, "PageUp": PAGE_STEP, "PageDown": -PAGE_STEP}
#: Next / previous annotated slice (viewer keys; napari uses neither).
NAVIGATION_KEYS = ("N", "Shift-N")


def bind_slice_keys(viewer: Any, navigator: SliceNavigator | None = None) -> None:
    """Up/Down: next/previous slice; PageUp/PageDown: :data:`PAGE_STEP` slices (this viewer
    only); with a *navigator*, ``N`` / ``Shift-N``: next / previous annotated slice."""
    for key, steps in _SLICE_KEYS.items():

        def move(v: Any, steps: int = steps) -> None:
            step_slice(v, steps)

        move.__doc__ = f"Move {abs(steps)} slice{'s' if abs(steps) > 1 else ''} {'up' if steps > 0 else 'down'}"
        viewer.bind_key(key, move, overwrite=True)
    if navigator is not None:
        ref = weakref.ref(navigator)

        def next_annotated(v: Any) -> None:
            nav = ref()
            if nav is not None:
                nav.next_annotated()

        def previous_annotated(v: Any) -> None:
            nav = ref()
            if nav is not None:
                nav.previous_annotated()

        next_annotated.__doc__ = "Go to the next annotated slice"
        previous_annotated.__doc__ = "Go to the previous annotated slice"
        viewer.bind_key(NAVIGATION_KEYS[0], next_annotated, overwrite=True)
        viewer.bind_key(NAVIGATION_KEYS[1], previous_annotated, overwrite=True)


def unbind_slice_keys(viewer: Any) -> None:
    for key in (*_SLICE_KEYS, *NAVIGATION_KEYS):
        try:
            viewer.bind_key(key, None)
        except (KeyError, ValueError, TypeError):
            pass


def default_brush_size(shape: tuple[int, ...], displayed: tuple[int, int] = (1, 2)) -> int:
    """A brush about 2% of the slice's larger side (at least 1 voxel): 5 on 233 x 189, 10 on 512 x 512."""
    side = max(int(shape[a]) for a in displayed)
    return max(1, int(round(0.02 * side)))


# --------------------------------------------------------------------------- annotated slices
def painted_slices(layer: Any, axis: int) -> np.ndarray:
    """Indices along *axis* of the slices where the layer holds a non-zero value (sorted)."""
    data = np.asarray(layer.data)
    if data.ndim != 3:
        return np.zeros(0, dtype=np.int64)
    other = tuple(a for a in range(data.ndim) if a != axis)
    return np.flatnonzero(np.any(data != 0, axis=other))


#: Slice kind -> colour of its tick on the bar (later kinds drawn on top).
SLICE_KINDS: dict[str, str] = {
    "painted": "#ffb000",  # the rater painted (or corrected) this slice
    "preannotated": "#8c8c8c",  # holds a model's pre-annotation nobody changed
    "interpolated": "#5ab4ff",  # filled between painted slices
}
#: Slice kind -> function (layer, axis) -> sorted slice indices of that kind.
SLICE_SOURCES: dict[str, Callable[[Any, int], np.ndarray]] = {"painted": painted_slices}


class SliceBar(QWidget):
    """A horizontal strip: one tick per annotated slice (coloured by kind), the current slice
    marked; clicking a position emits ``picked(slice)``."""

    picked = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.current = 0
        self.kinds: dict[int, str] = {}
        self.setMinimumHeight(16)
        self.setMaximumHeight(18)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Annotated slices of the rater layer (click to go there)")
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_state(self, n: int, kinds: dict[int, str], current: int) -> None:
        self.n, self.kinds, self.current = int(n), dict(kinds), int(current)
        self.update()

    def _x(self, i: int) -> int:
        w = max(1, self.width() - 2)
        return 1 + int(round((i + 0.5) * w / max(1, self.n)))

    def slice_at(self, x: float) -> int:
        w = max(1, self.width() - 2)
        return int(np.clip(int((x - 1) * self.n / w), 0, max(0, self.n - 1)))

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(40, 40, 45))
        if self.n > 0:
            tick = max(2, (self.width() - 2) // max(1, self.n))
            for i, kind in sorted(
                self.kinds.items(), key=lambda kv: list(SLICE_KINDS).index(kv[1])
            ):
                p.fillRect(
                    QRect(self._x(i) - tick // 2, 2, tick, self.height() - 4),
                    QColor(SLICE_KINDS[kind]),
                )
            p.setPen(QPen(QColor("white"), 2))
            x = self._x(self.current)
            p.drawLine(x, 0, x, self.height())
        p.end()

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if self.n > 0:
            pos = event.position().x() if hasattr(event, "position") else event.x()
            self.picked.emit(self.slice_at(pos))


class SliceNavigator(QWidget):
    """Annotated-slice bar with *previous* / *next annotated slice* and a one-line summary.

    ``set_layer(layer)`` follows one rater layer (None: nothing shown). The list is recomputed
    ``delay_ms`` after the layer's last change (a cheap ``any`` over the volume).
    ``kinds_of(layer, axis) -> {slice: kind}`` says which slices are annotated and how
    (default: every slice holding paint is "painted").
    """

    def __init__(
        self,
        viewer: Any,
        *,
        delay_ms: int = 250,
        kinds_of: Callable[[Any, int], dict[int, str]] | None = None,
    ) -> None:
        super().__init__()
        self.viewer = viewer
        self.kinds_of = kinds_of
        self._layer: Any = None
        self.kinds: dict[int, str] = {}
        self.bar = SliceBar()
        self.previous_btn = QPushButton("◀ previous")
        self.next_btn = QPushButton("next ▶")
        self.previous_btn.setToolTip("Go to the previous slice this rater annotated")
        self.next_btn.setToolTip("Go to the next slice this rater annotated")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.previous_btn)
        row.addWidget(self.summary, stretch=1)
        row.addWidget(self.next_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.bar)
        layout.addLayout(row)
        self.previous_btn.clicked.connect(lambda *_: self.previous_annotated())
        self.next_btn.clicked.connect(lambda *_: self.next_annotated())
        self.bar.picked.connect(self._go)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(delay_ms))
        self._timer.timeout.connect(self.refresh)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.order.connect(self._schedule)
        viewer.dims.events.ndisplay.connect(self._schedule)
        self.refresh()

    # ---------------------------------------------------------------- following a layer
    def set_layer(self, layer: Any) -> None:
        old = self._layer
        if old is not None:
            for name in ("paint", "set_data", "data"):
                try:
                    getattr(old.events, name).disconnect(self._schedule)
                except (TypeError, ValueError, RuntimeError):
                    pass
        self._layer = layer
        if layer is not None:
            for name in ("paint", "set_data", "data"):
                getattr(layer.events, name).connect(self._schedule)
        self.refresh()

    def _schedule(self, event: Any = None) -> None:
        self._timer.start()

    def _on_step(self, event: Any = None) -> None:
        axis = slice_axis(self.viewer)
        if axis is not None and self.bar.n:
            self.bar.set_state(self.bar.n, self.kinds, int(self.viewer.dims.current_step[axis]))
            self._update_summary()

    def refresh(self) -> None:
        """Recompute the annotated slices of the followed layer now."""
        self._timer.stop()
        layer, axis = self._layer, slice_axis(self.viewer)
        if layer is None or axis is None or np.ndim(layer.data) != 3:
            self.kinds = {}
            self.bar.set_state(0, {}, 0)
            self._update_summary()
            return
        if self.kinds_of is not None:
            kinds = {int(i): k for i, k in self.kinds_of(layer, axis).items()}
        else:
            kinds = {}
            for kind, source in SLICE_SOURCES.items():
                for i in source(layer, axis):
                    kinds[int(i)] = kind
        self.kinds = kinds
        self.bar.set_state(
            int(np.shape(layer.data)[axis]), kinds, int(self.viewer.dims.current_step[axis])
        )
        self._update_summary()

    def _update_summary(self) -> None:
        has = bool(self.kinds)
        self.previous_btn.setEnabled(has)
        self.next_btn.setEnabled(has)
        if self._layer is None or slice_axis(self.viewer) is None:
            self.summary.setText("")
            return
        axis = slice_axis(self.viewer)
        label = self.viewer.dims.axis_labels[axis]
        current = int(self.viewer.dims.current_step[axis])
        n = len(self.kinds)
        if not n:
            self.summary.setText(f"{label} slice {current}: no slice annotated yet")
            return
        idx = sorted(self.kinds)
        counts = {k: sum(1 for v in self.kinds.values() if v == k) for k in SLICE_KINDS}
        detail = ", ".join(f"{counts[k]} {k}" for k in SLICE_KINDS if counts[k] and k != "painted")
        here = self.kinds.get(current)
        self.summary.setText(
            f"{label} slice {current} · {n} annotated ({idx[0]}–{idx[-1]})"
            + (f": {detail}" if detail else "")
            + (f" · this one{'' if here == 'painted' else ' ' + here}" if here else "")
        )

    # ---------------------------------------------------------------- moving
    def annotated(self) -> list[int]:
        """The annotated slices of the followed layer, sorted."""
        if self._timer.isActive():
            self.refresh()
        return sorted(self.kinds)

    def _go(self, index: int) -> None:
        axis = slice_axis(self.viewer)
        if axis is not None:
            self.viewer.dims.set_current_step(axis, int(index))

    def next_annotated(self) -> int | None:
        """Go to the first annotated slice after the current one (wrapping around)."""
        return self._jump(+1)

    def previous_annotated(self) -> int | None:
        """Go to the last annotated slice before the current one (wrapping around)."""
        return self._jump(-1)

    def _jump(self, direction: int) -> int | None:
        idx = self.annotated()
        axis = slice_axis(self.viewer)
        if not idx or axis is None:
            return None
        current = int(self.viewer.dims.current_step[axis])
        if direction > 0:
            after = [i for i in idx if i > current]
            target = after[0] if after else idx[0]
        else:
            before = [i for i in idx if i < current]
            target = before[-1] if before else idx[-1]
        self._go(target)
        return target

    def close_navigator(self) -> None:
        """Disconnect from the viewer and the followed layer (the dock is going away)."""
        old, self._layer = self._layer, None
        if old is not None:
            for name in ("paint", "set_data", "data"):
                try:
                    getattr(old.events, name).disconnect(self._schedule)
                except (TypeError, ValueError, RuntimeError):
                    pass
        for emitter, cb in (
            (self.viewer.dims.events.current_step, self._on_step),
            (self.viewer.dims.events.order, self._schedule),
            (self.viewer.dims.events.ndisplay, self._schedule),
        ):
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        try:
            self._timer.stop()
        except RuntimeError:  # Qt deleted it with the window
            pass
