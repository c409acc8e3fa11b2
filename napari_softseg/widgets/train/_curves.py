"""Training curves of the Train dock: loss per step and epoch, validation loss and Dice.

The canvas is a :class:`napari_softseg.widgets._plots.ThemedCanvas` (napari's theme, restyled
when it changes). It is built on first use (a run starts, a history is opened), never when the
dock opens: importing matplotlib and building a figure cost 1-3 s of main-thread time here.
:func:`prewarm` imports the modules in a background thread while the user fills in the form.

Kept cheap for the event loop: events only append numbers; a timer redraws at most every
``REDRAW_INTERVAL_MS``, and then only the lines are re-rendered onto a cached background
(blitting, a few ms). The full figure (axes, ticks, legend: ~100 ms) is drawn only when the axis
limits must grow or shrink, which happens a logarithmic number of times (limits double).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

from softseg import events as ev

__all__ = ["REDRAW_INTERVAL_MS", "TrainingCurves", "prewarm"]

REDRAW_INTERVAL_MS = 400
_INITIAL_LIMITS = (2.0, 0.0, 1.0)  # epochs shown, loss range
#: Line colours: training (light and dark blue), validation (orange), validation Dice (green);
#: the legend names them.
_COLORS = {"step": "#9ecae1", "epoch": "#1f77b4", "val": "#ff7f0e", "dice": "#2ca02c"}

_prewarm_lock = threading.Lock()
_prewarmed: list[threading.Thread] = []


def prewarm() -> None:
    """Import matplotlib's Qt canvas in a background thread (once per process), so the first
    curves cost the main thread only the figure itself."""
    with _prewarm_lock:
        if _prewarmed:
            return

        def work() -> None:
            try:
                import matplotlib.backends.backend_qtagg  # noqa: F401
                import matplotlib.figure  # noqa: F401
            except Exception:  # noqa: BLE001 - the canvas reports it when it is built
                pass

        thread = threading.Thread(target=work, name="softseg-matplotlib-import", daemon=True)
        _prewarmed.append(thread)
        thread.start()


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class TrainingCurves:
    """Curves on an embedded, themed matplotlib canvas (``.canvas`` is the Qt widget).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (or its Plugins-menu proxy) whose theme the plot follows.
    """

    def __init__(self, viewer: Any) -> None:
        from qtpy.QtCore import QTimer

        from napari_softseg.widgets._plots import ThemedCanvas

        self.canvas = ThemedCanvas(viewer, figsize=(3.4, 2.3), dpi=90)
        self.figure = self.canvas.figure
        self.figure.set_layout_engine("none")
        self.figure.subplots_adjust(left=0.17, right=0.85, bottom=0.19, top=0.95)
        self.canvas.setMinimumHeight(190)
        self.ax = self.figure.add_subplot(111)
        self.ax_dice = self.ax.twinx()
        self.train_x: list[float] = []
        self.train_y: list[float] = []
        self.epoch_x: list[float] = []
        self.epoch_y: list[float] = []
        self.val_x: list[float] = []
        self.val_y: list[float] = []
        self.dice_y: list[float] = []
        self.max_epochs: int | None = None
        style = {"animated": True}
        (self._train_line,) = self.ax.plot([], [], color=_COLORS["step"], lw=0.8,
                                           label="training loss (step)", **style)
        (self._epoch_line,) = self.ax.plot([], [], color=_COLORS["epoch"], lw=1.6, marker="o",
                                           ms=3, label="training loss (epoch)", **style)
        (self._val_line,) = self.ax.plot([], [], color=_COLORS["val"], lw=1.6, marker="o", ms=3,
                                         label="validation loss", **style)
        (self._dice_line,) = self.ax_dice.plot([], [], color=_COLORS["dice"], lw=1.2, ls="--",
                                               marker="s", ms=3, label="validation Dice", **style)
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.set_ylabel("loss", fontsize=8)
        self.ax_dice.set_ylabel("Dice", fontsize=8)
        self.ax_dice.set_ylim(0, 1.02)
        lines = [self._train_line, self._epoch_line, self._val_line, self._dice_line]
        self.ax.legend(lines, [ln.get_label() for ln in lines], fontsize=6.5, loc="upper right")
        for ax in (self.ax, self.ax_dice):
            ax.tick_params(labelsize=7)
        self.canvas.restyle()
        self.ax_dice.yaxis.label.set_color(_COLORS["dice"])
        self._limits = _INITIAL_LIMITS  # xmax, ymin, ymax
        self._apply_limits()
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_full_draw)
        self._dirty = True
        self._timer = QTimer(self.canvas)  # dies with the canvas
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()
        self.draws = 0  # full figure draws
        self.blits = 0  # line-only updates

    @property
    def n_points(self) -> int:
        return len(self.train_y) + len(self.val_y)

    def clear(self) -> None:
        """Forget every point (a new run or history); drawn at the next timer tick."""
        for values in (self.train_x, self.train_y, self.epoch_x, self.epoch_y, self.val_x,
                       self.val_y, self.dice_y):
            values.clear()
        self.max_epochs = None
        self._dirty = True

    def add(self, event: ev.Event) -> None:
        """Take the numbers of a progress event (step, epoch, val); others are ignored."""
        if isinstance(event, ev.StepEvent) and _finite(event.loss):
            self.max_epochs = event.epochs
            self.train_x.append(event.epoch - 1 + event.step / max(event.steps, 1))
            self.train_y.append(float(event.loss))
        elif isinstance(event, ev.EpochEvent):
            self.max_epochs = event.epochs
            if _finite(event.loss):
                self.epoch_x.append(float(event.epoch))
                self.epoch_y.append(float(event.loss))
        elif isinstance(event, ev.ValEvent):
            if _finite(event.val_loss):
                self.val_x.append(float(event.epoch))
                self.val_y.append(float(event.val_loss))
                self.dice_y.append(float(event.val_dice) if _finite(event.val_dice) else math.nan)
        else:
            return
        self._dirty = True

    def show_history(self, rows: Iterable[Any], *, max_epochs: int | None = None) -> None:
        """Draw a finished run's history (:class:`softseg.card.HistoryRow` objects: epoch,
        loss, val_loss, val_dice) in place of the current curves."""
        self.clear()
        for row in rows:
            if _finite(row.loss):
                self.epoch_x.append(float(row.epoch))
                self.epoch_y.append(float(row.loss))
            if _finite(row.val_loss):
                self.val_x.append(float(row.epoch))
                self.val_y.append(float(row.val_loss))
                self.dice_y.append(float(row.val_dice) if _finite(row.val_dice) else math.nan)
        last = max(self.epoch_x + self.val_x, default=0.0)
        self.max_epochs = max_epochs or (int(last) if last else None)
        self._limits = _INITIAL_LIMITS
        self.flush()

    # -- drawing -------------------------------------------------------------------------------
    def _wanted_limits(self) -> tuple[float, float, float]:
        xs = self.train_x + self.epoch_x + self.val_x
        if not xs:
            return _INITIAL_LIMITS
        xmax, ymin, ymax = self._limits
        while xmax < max(xs):
            xmax *= 2
        if self.max_epochs:
            xmax = min(xmax, max(float(self.max_epochs), max(xs)))
        ys = self.train_y + self.epoch_y + self.val_y
        if ys:
            lo, hi = min(ys), max(ys)
            if hi > ymax or hi < ymax / 4 or lo < ymin:
                ymax = hi * 1.3 if hi > 0 else 1.0
            if lo < ymin or (ymin < 0 and lo >= 0):
                ymin = min(0.0, lo * 1.3)
        return xmax, ymin, ymax

    def _apply_limits(self) -> None:
        xmax, ymin, ymax = self._limits
        self.ax.set_xlim(0, xmax * 1.02)
        self.ax.set_ylim(ymin, ymax if ymax > ymin else ymin + 1.0)

    def _set_data(self) -> None:
        self._train_line.set_data(self.train_x, self.train_y)
        self._epoch_line.set_data(self.epoch_x, self.epoch_y)
        self._val_line.set_data(self.val_x, self.val_y)
        self._dice_line.set_data(self.val_x, self.dice_y)

    def _draw_lines(self) -> None:
        for line in (self._train_line, self._epoch_line, self._val_line):
            self.ax.draw_artist(line)
        self.ax_dice.draw_artist(self._dice_line)

    def _on_full_draw(self, _event: Any) -> None:
        # After every full draw (ours, a resize, a theme change, a screenshot): cache the
        # background without the animated lines, then put the lines on top.
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_lines()
        self.draws += 1

    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        try:
            self._set_data()
            limits = self._wanted_limits()
            if limits != self._limits or self._background is None:
                self._limits = limits
                self._apply_limits()
                self.canvas.draw()  # full draw; _on_full_draw adds the lines
                self.canvas.blit(self.figure.bbox)
                return
            self.canvas.restore_region(self._background)
            self._draw_lines()
            self.canvas.blit(self.figure.bbox)
            self.blits += 1
        except RuntimeError:  # the dock was closed (its Qt object deleted)
            self._timer.stop()

    def flush(self) -> None:
        """Draw pending points now (end of a run, screenshots)."""
        self._dirty = True
        self._redraw()
