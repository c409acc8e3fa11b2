"""The "Threshold" dock widget: binarise soft predictions interactively.

A thin view over :mod:`softseg.compare` (binarisation, readouts, sweeps) and
:mod:`softseg.metrics`. One slider (0…1, step 0.01) drives every selected prediction layer, or
each layer sits at its own optimal threshold (from ``layer.metadata["softseg_prediction"]``);
a range mode with two handles shows the uncertain band ``lo <= p < hi``. The binarised result is
an overlay Labels layer per prediction whose array is rewritten **in place** on every slider move
(no new layers, no reallocation), so the overlay follows the handle while dragging.

This is a ``QWidget`` rather than a magicgui ``Container`` because it embeds superqt sliders and a
matplotlib canvas; it only collects parameters, calls the engine and updates layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleRangeSlider, QLabeledDoubleSlider

from napari_softseg._metadata import PREDICTION_KEY, prediction_threshold
from softseg import compare, metrics
from softseg.confidence import METADATA_KEY as CONFIDENCE_KEY
from softseg.confidence import ConfidenceScale, label_to_soft
from softseg.errors import InputError

if TYPE_CHECKING:
    import napari

__all__ = [
    "OVERLAY_COLORS",
    "ThresholdWidget",
]

#: Overlay colours, one per selected prediction (cycled).
OVERLAY_COLORS = ("#00e5ff", "#ffd400", "#ff3df2", "#4dff4d", "#ff8c1a", "#8c8cff")
_NONE = "(none)"
_CURVE_THRESHOLDS = np.round(np.arange(0.01, 0.995, 0.01), 2)


def _optimum(layer: Any) -> float | None:
    """The layer's model's optimal threshold (its model card), None for a layer that is not a
    model's prediction (no silent 0.5: such a layer follows the slider, and the widget says so)."""
    try:
        return prediction_threshold(layer)
    except InputError:
        return None


@dataclass(eq=False)
class _Entry:
    """One selected prediction layer and its overlay."""

    layer: Any
    data: np.ndarray
    overlay: Any
    buffer: np.ndarray  # the overlay's own uint8 array, rewritten in place
    soft_volume_ml: float
    optimum: float | None  # the model's optimal threshold; None: not a model's prediction
    spacing: tuple[float, ...]
    box: tuple[slice, ...] | None = None
    curves: dict[str, Any] = field(default_factory=dict)


class ThresholdWidget(QWidget):
    """Dock widget: threshold soft prediction layers with live overlay, readouts and plot."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._entries: dict[str, _Entry] = {}
        self._curve_worker = None
        self.curves_ready = False
        self.last_readouts: dict[str, dict[str, float]] = {}
        # A worker may finish after the dock widget was closed: its result is then dropped.
        self._life = {"alive": True}
        self.destroyed.connect(lambda *_, life=self._life: life.update(alive=False))

        self.layer_list = QListWidget()
        self.layer_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.layer_list.setMaximumHeight(110)
        self.reference_combo = QComboBox()
        self.style_combo = QComboBox()
        self.style_combo.addItems(["filled", "contour"])
        self.own_optimum = QCheckBox("each at its own optimal threshold")
        self.range_mode = QCheckBox("range mode: show only lo ≤ p < hi")

        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0.0, 1.0)
        self.slider.setSingleStep(0.01)
        self.slider.setDecimals(2)
        self.slider.setValue(0.5)
        self.range_slider = QLabeledDoubleRangeSlider(Qt.Orientation.Horizontal)
        self.range_slider.setRange(0.0, 1.0)
        self.range_slider.setSingleStep(0.01)
        self.range_slider.setDecimals(2)
        self.range_slider.setValue((0.25, 0.75))
        self.range_slider.setVisible(False)

        self.readout_label = QLabel("Select a soft prediction layer.")
        self.readout_label.setTextFormat(Qt.TextFormat.RichText)
        self.readout_label.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #ff8080")

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.6), dpi=90, layout="tight")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(210)
        self._ax = self.figure.add_subplot(1, 1, 1)
        self._ax2 = self._ax.twinx()
        self._cursors: list[Any] = []
        # Blitting: the curves are drawn once into a cached background; a slider move only
        # redraws the cursor lines on top of it (a full matplotlib draw takes ~100 ms).
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_canvas_draw)

        self.apply_button = QPushButton("Apply (new Labels layer)")
        self.save_check = QCheckBox("also save NIfTI to folder:")
        self.save_folder = QLineEdit()
        self.save_folder.setPlaceholderText("folder for <layer>_thr<t>.nii.gz")

        form = QFormLayout()
        form.addRow("Predictions", self.layer_list)
        form.addRow("Reference", self.reference_combo)
        form.addRow("Overlay", self.style_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.own_optimum)
        layout.addWidget(self.range_mode)
        layout.addWidget(self.slider)
        layout.addWidget(self.range_slider)
        layout.addWidget(self.readout_label)
        layout.addWidget(self.canvas)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_check)
        save_row.addWidget(self.save_folder)
        layout.addLayout(save_row)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        # Readouts (metrics over the whole volume) are coalesced: the overlay follows every
        # slider value immediately, the numbers follow once the handle rests for a moment.
        self._readout_timer = QTimer(self)
        self._readout_timer.setSingleShot(True)
        self._readout_timer.setInterval(120)
        self._readout_timer.timeout.connect(self.update_readouts)

        self.slider.valueChanged.connect(self._on_threshold)
        self.range_slider.valueChanged.connect(self._on_threshold)
        self.range_mode.toggled.connect(self._on_mode)
        self.own_optimum.toggled.connect(self._on_own_optimum)
        self.style_combo.currentTextChanged.connect(self._on_style)
        self.layer_list.itemSelectionChanged.connect(self._on_selection)
        self.reference_combo.currentTextChanged.connect(self._on_reference)
        self.apply_button.clicked.connect(self.apply)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._refresh_layer_choices()

    # ------------------------------------------------------------------ layer choices
    def _candidate_layers(self) -> list[Any]:
        from napari.layers import Image

        overlays = {id(e.overlay) for e in self._entries.values()}
        return [ly for ly in self.viewer.layers
                if isinstance(ly, Image) and id(ly) not in overlays and ly.ndim >= 2]

    def _refresh_layer_choices(self, event=None) -> None:
        from napari.layers import Image, Labels

        selected = set(self.selected_names())
        self.layer_list.blockSignals(True)
        self.layer_list.clear()
        for ly in self._candidate_layers():
            item = QListWidgetItem(ly.name)
            self.layer_list.addItem(item)
            item.setSelected(ly.name in selected)
        self.layer_list.blockSignals(False)
        current = self.reference_combo.currentText()
        overlays = {id(e.overlay) for e in self._entries.values()}
        names = [_NONE] + [ly.name for ly in self.viewer.layers
                           if isinstance(ly, (Image, Labels)) and id(ly) not in overlays]
        self.reference_combo.blockSignals(True)
        self.reference_combo.clear()
        self.reference_combo.addItems(names)
        self.reference_combo.setCurrentText(current if current in names else _NONE)
        self.reference_combo.blockSignals(False)

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        for name, entry in list(self._entries.items()):
            if entry.layer is layer:
                self._drop(name)
            elif entry.overlay is layer:
                self._entries.pop(name, None)
        self._refresh_layer_choices()

    def selected_names(self) -> list[str]:
        """Names of the prediction layers selected in the list (list order)."""
        return [self.layer_list.item(i).text() for i in range(self.layer_list.count())
                if self.layer_list.item(i).isSelected()]

    def select_layers(self, names: list[str]) -> None:
        """Select these prediction layers (as a click in the list would)."""
        self.layer_list.blockSignals(True)
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            item.setSelected(item.text() in names)
        self.layer_list.blockSignals(False)
        self._on_selection()

    # ------------------------------------------------------------------ selection
    def _on_selection(self) -> None:
        names = self.selected_names()
        self.status.setText("")
        for name in list(self._entries):
            if name not in names:
                self._drop(name)
        first_new = not self._entries
        refused = []
        for name in names:
            if name in self._entries:
                continue
            try:
                self._entries[name] = self._make_entry(self.viewer.layers[name])
            except InputError as exc:
                refused.append(name)
                self.status.setText(str(exc))
        if refused:
            self.layer_list.blockSignals(True)
            for i in range(self.layer_list.count()):
                if self.layer_list.item(i).text() in refused:
                    self.layer_list.item(i).setSelected(False)
            self.layer_list.blockSignals(False)
        if self._entries and first_new:
            first = next(iter(self._entries.values()))
            if first.optimum is not None:
                self.slider.blockSignals(True)
                self.slider.setValue(first.optimum)
                self.slider.blockSignals(False)
        self._on_style(self.style_combo.currentText())
        self._on_threshold()
        self._start_curves()

    def _make_entry(self, layer: Any) -> _Entry:
        data = compare.check_prediction(np.asarray(layer.data), name=layer.name)
        color = OVERLAY_COLORS[len(self._entries) % len(OVERLAY_COLORS)]
        overlay = self.viewer.add_labels(
            np.zeros(data.shape, dtype=np.uint8),
            name=f"{layer.name} [threshold]",
            scale=layer.scale,
            translate=layer.translate,
            opacity=0.7,
            colormap={0: "transparent", 1: color, None: "transparent"},
            metadata={"softseg_overlay_of": layer.name},
        )
        overlay.editable = False
        buffer = overlay.data  # napari keeps the uint8 array: rewrite it in place
        spacing = tuple(float(s) for s in layer.scale[-data.ndim:])
        soft = metrics.volume(data, spacing=spacing) / 1000.0
        layer.events.data.connect(self._on_source_data)
        self._refresh_layer_choices()
        return _Entry(layer=layer, data=data, overlay=overlay, buffer=buffer,
                      soft_volume_ml=soft, optimum=_optimum(layer), spacing=spacing)

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        entry.layer.events.data.disconnect(self._on_source_data)
        if entry.overlay in self.viewer.layers:
            self.viewer.layers.remove(entry.overlay)

    def _on_source_data(self, event) -> None:
        """A selected prediction layer got new data: rebuild its overlay and numbers."""
        for name, entry in list(self._entries.items()):
            if entry.layer is not event.source:
                continue
            self._drop(name)
            try:
                self._entries[name] = self._make_entry(entry.layer)
            except InputError as exc:
                self.status.setText(str(exc))
                self.select_layers([n for n in self.selected_names() if n != name])
                return
        self._on_reference()
        self._on_style(self.style_combo.currentText())
        self._on_threshold()

    # ------------------------------------------------------------------ reference
    def reference_data(self) -> np.ndarray | None:
        name = self.reference_combo.currentText()
        if not name or name == _NONE or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        meta = (layer.metadata or {}).get(CONFIDENCE_KEY)
        if data.dtype.kind in "iu" and isinstance(meta, dict):
            # a painted rater: levels -> soft values through its own scale, as the Compare
            # widget does (otherwise every painted level, even "low", would count as foreground)
            data = label_to_soft(data, scale=ConfidenceScale.from_dict(meta),
                                 name=f"layer {name!r}")
        return data

    def _on_reference(self, _text: str = "") -> None:
        self.status.setText("")
        ref = self.reference_data()
        if ref is not None:
            for name, e in self._entries.items():
                if ref.shape != e.data.shape:
                    self.status.setText(
                        f"reference {self.reference_combo.currentText()!r} has shape {ref.shape} "
                        f"but {name!r} has shape {e.data.shape}; choose a reference on the same "
                        "grid")
                    self.reference_combo.blockSignals(True)
                    self.reference_combo.setCurrentText(_NONE)
                    self.reference_combo.blockSignals(False)
                    ref = None
                    break
        for e in self._entries.values():
            e.box = metrics.support_box(e.data, ref) if ref is not None else None
        self.update_readouts()
        self._start_curves()

    # ------------------------------------------------------------------ thresholding
    def current_thresholds(self) -> dict[str, tuple[float, float | None]]:
        """Per selected layer: ``(threshold, None)`` or, in range mode, ``(lo, hi)``."""
        if self.range_mode.isChecked():
            lo, hi = (float(v) for v in self.range_slider.value())
            return {name: (lo, hi) for name in self._entries}
        value = float(self.slider.value())
        own = self.own_optimum.isChecked()
        return {name: (e.optimum if own and e.optimum is not None else value, None)
                for name, e in self._entries.items()}

    def _on_threshold(self, *_args) -> None:
        for name, (lo, hi) in self.current_thresholds().items():
            e = self._entries[name]
            out = e.buffer.view(np.bool_)
            if hi is None:
                metrics.binarize(e.data, lo, out=out, checked=True)
            else:
                metrics.band(e.data, lo, hi, out=out, checked=True)
            # no thumbnail while dragging: it is refreshed with the readouts, once at rest
            e.overlay.refresh(thumbnail=False)
        self._move_cursors()
        self._readout_timer.start()

    def _on_mode(self, on: bool) -> None:
        self.range_slider.setVisible(on)
        self.slider.setVisible(not on)
        self.own_optimum.setEnabled(not on)
        self._on_threshold()

    def _on_own_optimum(self, on: bool) -> None:
        missing = [name for name, e in self._entries.items() if e.optimum is None]
        self.slider.setEnabled(not on or bool(missing))
        if on and missing:
            self.status.setText(
                f"{', '.join(map(repr, missing))}: not a model's prediction, so no optimal "
                "threshold; it follows the slider")
        self._on_threshold()

    def _on_style(self, style: str) -> None:
        for e in self._entries.values():
            e.overlay.contour = 1 if style == "contour" else 0

    # ------------------------------------------------------------------ readouts
    def update_readouts(self) -> None:
        """Recompute the volumes (and Dice/precision/recall with a reference) now."""
        ref = self.reference_data()
        rows = []
        self.last_readouts = {}
        for e in self._entries.values():
            e.overlay.refresh(data_displayed=False, highlight=False, extent=False)
        for name, (lo, hi) in self.current_thresholds().items():
            e = self._entries[name]
            use_box = e.box if (ref is not None and lo > 0) else None
            r = metrics.threshold_readouts(e.buffer, soft_volume_ml=e.soft_volume_ml,
                                           reference=ref, spacing=e.spacing, box=use_box)
            self.last_readouts[name] = r
            where = f"{lo:.2f} ≤ p &lt; {hi:.2f}" if hi is not None else f"p ≥ {lo:.2f}"
            text = (f"<b>{name}</b> ({where}): binarised {r['binary_volume_ml']:.3f} mL, "
                    f"soft Σp {r['soft_volume_ml']:.3f} mL")
            if "dice" in r:
                text += (f"<br>&nbsp;Dice {_pct(r['dice'])}, precision {_pct(r['precision'])}, "
                         f"recall {_pct(r['recall'])}")
            rows.append(text)
        self.readout_label.setText("<br>".join(rows) or "Select a soft prediction layer.")

    # ------------------------------------------------------------------ plot
    def _start_curves(self) -> None:
        from napari.qt.threading import create_worker

        self.curves_ready = False
        if self._curve_worker is not None:
            self._curve_worker.quit()
        if not self._entries:
            self._draw_plot()
            self.curves_ready = True
            return
        ref = self.reference_data()
        jobs = {name: (e.data, e.spacing) for name, e in self._entries.items()}

        def work():
            return {name: metrics.threshold_curves(data, reference=ref, spacing=spacing,
                                                   thresholds=_CURVE_THRESHOLDS)
                    for name, (data, spacing) in jobs.items()}

        worker = create_worker(work)
        worker.returned.connect(self._on_curves)
        worker.errored.connect(self._on_curves_error)
        self._curve_worker = worker
        worker.start()

    def _on_curves(self, curves: dict[str, dict[str, Any]]) -> None:
        if not self._life["alive"]:
            return
        for name, c in curves.items():
            if name in self._entries:
                self._entries[name].curves = c
        self._draw_plot()
        self.curves_ready = True

    def _on_curves_error(self, exc: Exception) -> None:
        if self._life["alive"]:
            self.status.setText(f"curves failed: {exc}")

    def _draw_plot(self) -> None:
        ax, ax2 = self._ax, self._ax2
        ax.clear()
        ax2.clear()
        for i, (name, e) in enumerate(self._entries.items()):
            c = e.curves
            if not c:
                continue
            color = OVERLAY_COLORS[i % len(OVERLAY_COLORS)]
            if c.get("dice") is not None:
                ax.plot(c["thresholds"], np.asarray(c["dice"]) * 100, color=color, lw=1.8,
                        label=f"{name} Dice")
            ax2.plot(c["thresholds"], c["volume_ml"], color=color, lw=1.2, ls="--",
                     label=f"{name} volume")
        ax.set_xlim(0, 1)
        ax.set_xlabel("threshold", fontsize=8)
        ax.set_ylabel("Dice [%] (solid)", fontsize=8)
        ax2.yaxis.tick_right()  # clear() puts the twin's axis back on the left
        ax2.yaxis.set_label_position("right")
        ax2.set_ylabel("volume [mL] (dashed)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax2.tick_params(labelsize=7)
        self._cursors = []
        self._background = None
        self.canvas.draw_idle()  # full draw; _on_canvas_draw caches it and adds the cursors

    def _on_canvas_draw(self, event=None) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._blit_cursors()

    def _move_cursors(self) -> None:
        if self._background is None:
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self._background)
        self._blit_cursors()

    def _blit_cursors(self) -> None:
        values = sorted({v for pair in self.current_thresholds().values() for v in pair
                         if v is not None})
        for line in self._cursors:
            line.remove()
        self._cursors = [self._ax.axvline(v, color="k", lw=1, animated=True) for v in values]
        for line in self._cursors:
            self._ax.draw_artist(line)
        # update(), not blit(): blit repaints synchronously, inside the slider's signal
        self.canvas.update()

    # ------------------------------------------------------------------ apply
    def apply(self) -> list[Any]:
        """Add the current binarised result of every selected layer as a Labels layer (and save
        NIfTI files when asked). Returns the new layers."""
        from softseg.geometry import DisplayGeometry, save_display_array

        self.status.setText("")
        new_layers = []
        folder = self.save_folder.text().strip()
        for name, (lo, hi) in self.current_thresholds().items():
            e = self._entries[name]
            mask = e.buffer.copy()
            tag = f"thr{lo:.2f}" if hi is None else f"band{lo:.2f}-{hi:.2f}"
            meta = {k: v for k, v in (e.layer.metadata or {}).items() if k != PREDICTION_KEY}
            meta["softseg_threshold"] = {"source": name, "low": lo, "high": hi}
            layer = self.viewer.add_labels(mask, name=f"{name} {tag}", scale=e.layer.scale,
                                           translate=e.layer.translate, metadata=meta)
            new_layers.append(layer)
            if self.save_check.isChecked():
                geometry = DisplayGeometry.from_metadata(e.layer.metadata)
                if geometry is None:
                    self.status.setText(
                        f"{name!r} has no NIfTI geometry to save with; open the image with the "
                        "napari-softseg reader or predict it with the Predict widget")
                    continue
                if not folder:
                    self.status.setText("choose a folder to save the NIfTI files in")
                    continue
                path = Path(folder) / f"{_safe(name)}_{tag}.nii.gz"
                try:
                    save_display_array(path, mask, geometry, overwrite=False,
                                       sidecar={"softseg_threshold": meta["softseg_threshold"]})
                except (InputError, OSError) as exc:
                    self.status.setText(str(exc))
                else:
                    layer.metadata["source_path"] = str(path)
        return new_layers


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_") or "layer"
