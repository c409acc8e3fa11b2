"""The Threshold dock's plot: Dice (solid, left axis) and binarised volume (dashed, right axis)
against the threshold, one colour per curve, a legend, napari's theme, and cursor lines that
follow the sliders by blitting (the curves are drawn once into a cached background; a slider
move redraws only the cursors: a full matplotlib draw takes ~100 ms)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_softseg.widgets._plots import ThemedCanvas

__all__ = ["Curve", "CurvePlot"]


@dataclass(frozen=True)
class Curve:
    """One prediction's (or class's) sweep: what :func:`softseg.metrics.threshold_curves`
    returns, with its legend label and colour."""

    label: str
    color: Any  # matplotlib colour
    thresholds: np.ndarray
    volume_ml: np.ndarray
    dice: np.ndarray | None


class CurvePlot(ThemedCanvas):
    """Dice/volume vs threshold with blitted cursors (see the module docstring)."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(viewer, figsize=(3.6, 2.6), dpi=90)
        self.setMinimumHeight(190)
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.ax2 = self.ax.twinx()
        self.cursors: list[Any] = []
        self._cursor_values: tuple[float, ...] = ()
        self._background = None
        self.mpl_connect("draw_event", self._on_draw)
        self.draw_curves([])

    def draw_curves(self, curves: Sequence[Curve]) -> None:
        """Redraw every curve (a full draw; the cursors follow on the cached background)."""
        ax, ax2 = self.ax, self.ax2
        ax.clear()
        ax2.clear()
        for c in curves:
            if c.dice is not None:
                ax.plot(c.thresholds, np.asarray(c.dice) * 100, color=c.color, lw=1.8,
                        label=f"{c.label}: Dice")
            ax2.plot(c.thresholds, c.volume_ml, color=c.color, lw=1.2, ls="--",
                     label=f"{c.label}: volume")
        ax.set_xlim(0, 1)
        ax.set_xlabel("threshold", fontsize=8)
        ax.set_ylabel("Dice [%] (solid)", fontsize=8)
        ax2.yaxis.tick_right()  # clear() puts the twin's axis back on the left
        ax2.yaxis.set_label_position("right")
        ax2.set_ylabel("volume [mL] (dashed)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax2.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        if handles[0] or handles2[0]:
            ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=6,
                      loc="best", framealpha=0.8)
        self.restyle()
        self.cursors = []
        self._background = None
        self.draw_idle()  # full draw; _on_draw caches it and adds the cursors

    def curve_colors(self) -> dict[str, Any]:
        """``{legend label: RGBA}`` of the drawn lines (what a user sees)."""
        from matplotlib.colors import to_rgba

        return {line.get_label(): to_rgba(line.get_color())
                for ax in (self.ax, self.ax2) for line in ax.get_lines()
                if not line.get_label().startswith("_")}

    def move_cursors(self, values: Iterable[float]) -> None:
        """Vertical lines at ``values`` (sorted, unique), blitted on the cached curves."""
        self._cursor_values = tuple(sorted(set(float(v) for v in values)))
        if self._background is None:
            self.draw_idle()
            return
        self.restore_region(self._background)
        self._blit_cursors()

    def _on_draw(self, event: Any = None) -> None:
        self._background = self.copy_from_bbox(self.figure.bbox)
        self._blit_cursors()

    def _blit_cursors(self) -> None:
        for line in self.cursors:
            line.remove()
        self.cursors = [self.ax.axvline(v, color=self.colors.text, lw=1, animated=True)
                        for v in self._cursor_values]
        for line in self.cursors:
            self.ax.draw_artist(line)
        # update(), not blit(): blit repaints synchronously, inside the slider's signal
        self.update()
