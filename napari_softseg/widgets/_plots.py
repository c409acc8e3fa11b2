"""matplotlib plots in a dock that follow napari's theme (issue 11 #9: no white plot in a dark
window), shared by the Threshold and Compare candidates docks.

:func:`plot_colors` reads the viewer's theme (``napari.utils.theme.get_theme``: dark, light or
the system's); :func:`style_axes` paints a figure and its axes with it after the curves are
drawn (background, panel, text, ticks, spines, grid, legend), and turns the lines the engine's
figures draw in plain black (cursors, identity lines) into the theme's text colour, so they stay
visible on a dark panel. :class:`ThemedCanvas` is a ``FigureCanvasQTAgg`` that restyles and
redraws itself when the viewer's theme changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

__all__ = ["PlotColors", "ThemedCanvas", "plot_colors", "style_axes"]

_BLACK = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class PlotColors:
    """Colours of a plot in napari's theme (``"#rrggbb"``)."""

    background: str  # the figure, as the dock around it
    panel: str  # inside the axes
    text: str  # labels, ticks, titles, legend text, black lines
    edge: str  # spines
    grid: str
    dark: bool


def plot_colors(viewer: Any) -> PlotColors:
    """The plot colours of ``viewer``'s current theme (the viewer or its Plugins-menu proxy)."""
    from napari.utils.theme import get_theme

    name = str(getattr(viewer, "theme", "dark") or "dark")
    try:
        theme = get_theme(name)
    except (ValueError, KeyError):
        theme = get_theme("dark")

    def hexa(value: Any) -> str:
        return value.as_hex() if hasattr(value, "as_hex") else str(value)

    return PlotColors(
        background=hexa(theme.background),
        panel=hexa(theme.foreground),
        text=hexa(theme.text),
        edge=hexa(theme.secondary),
        grid=hexa(theme.primary),
        dark=str(getattr(theme, "type", "dark")) == "dark",
    )


def style_axes(figure: Figure, colors: PlotColors) -> None:
    """Paint ``figure`` and all its axes with ``colors`` (after the curves were drawn)."""
    figure.set_facecolor(colors.background)
    for ax in figure.axes:
        ax.set_facecolor(colors.panel)
        for spine in ax.spines.values():
            spine.set_color(colors.edge)
        ax.tick_params(colors=colors.text, which="both")
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            label.set_color(colors.text)
        for line in ax.get_xgridlines() + ax.get_ygridlines():
            line.set_color(colors.grid)
        for line in ax.get_lines():
            if to_rgba(line.get_color()) == _BLACK:
                line.set_color(colors.text)
        legend = ax.get_legend()
        if legend is not None:
            legend.get_frame().set_facecolor(colors.panel)
            legend.get_frame().set_edgecolor(colors.edge)
            for text in legend.get_texts():
                text.set_color(colors.text)


class ThemedCanvas(FigureCanvasQTAgg):
    """A matplotlib canvas in napari's theme, restyled when the viewer's theme changes.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (or its Plugins-menu proxy) whose theme the plot follows.
    figsize : (float, float)
        Inches at ``dpi``.
    """

    def __init__(self, viewer: Any, *, figsize: tuple[float, float] = (3.6, 2.6),
                 dpi: int = 90) -> None:
        super().__init__(Figure(figsize=figsize, dpi=dpi, layout="tight"))
        self._viewer = viewer
        self.colors = plot_colors(viewer)
        self.figure.set_facecolor(self.colors.background)
        viewer.events.theme.connect(self._on_theme)  # napari keeps a weak reference

    def restyle(self) -> None:
        """Apply the current theme to everything drawn so far (call after drawing)."""
        style_axes(self.figure, self.colors)

    def _on_theme(self, event: Any = None) -> None:
        self.colors = plot_colors(self._viewer)
        self.restyle()
        try:
            self.draw_idle()
        except RuntimeError:  # the dock was closed (its Qt object deleted)
            self._viewer.events.theme.disconnect(self._on_theme)
