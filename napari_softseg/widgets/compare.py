"""The "Compare candidates" dock widget: soft predictions side by side.

Choose the image, a reference (binary or soft), optionally the rater layers (their average is the
reference of the Brier score and of the entropy plot) and two or more soft prediction layers.
"Compare" runs :func:`softseg.compare.compare_predictions` in a thread worker on snapshots of the
layers' arrays, then fills a sortable metrics table and the papers' figures (one tab each).
"Grid view" shows one viewbox per candidate (image, soft prediction, binarised contour) with
napari's grid mode, which links dims and camera across viewboxes.

A ``QWidget`` (not a magicgui ``Container``) because it embeds a table, tabs of matplotlib
canvases and a superqt slider; no metric is computed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from napari_softseg._metadata import prediction_threshold
from softseg import compare, metrics
from softseg.errors import InputError

from .threshold import OVERLAY_COLORS

if TYPE_CHECKING:
    import napari

__all__ = ["CompareWidget"]

_NONE = "(none)"
_GRID_KEY = "softseg_compare_grid"
_VALUE_ROLE = Qt.ItemDataRole.UserRole


@dataclass(frozen=True)
class _BadInput:
    """What the worker returns when the input was refused (shown, not raised)."""

    message: str


class _NumericItem(QTableWidgetItem):
    """A table cell that sorts by its stored value (NaN last), not by its text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(_VALUE_ROLE), other.data(_VALUE_ROLE)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if math.isnan(a):
                return False
            if math.isnan(b):
                return True
            return a < b
        return super().__lt__(other)


class CompareWidget(QWidget):
    """Dock widget: metrics table, figures and grid view for two or more soft predictions."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.comparison: compare.Comparison | None = None
        self.thresholds_used: dict[str, float] = {}
        self._worker = None
        self._pending = False
        self._grid_layers: list[Any] = []
        self._grid_overlays: list[tuple[str, Any, np.ndarray]] = []  # (name, Labels, soft data)
        self._hidden: list[Any] = []
        self._canvases: dict[str, Any] = {}
        self.last_error = ""
        # A worker may finish after the dock widget was closed: its result is then dropped.
        self._life = {"alive": True}
        self.destroyed.connect(lambda *_, life=self._life: life.update(alive=False))

        self.image_combo = QComboBox()
        self.reference_combo = QComboBox()
        self.rater_list = QListWidget()
        self.rater_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.rater_list.setMaximumHeight(80)
        self.prediction_list = QListWidget()
        self.prediction_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.prediction_list.setMaximumHeight(100)
        self.own_optimum = QCheckBox("each at its own optimal threshold")
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0.0, 1.0)
        self.slider.setSingleStep(0.01)
        self.slider.setDecimals(2)
        self.slider.setValue(0.5)
        self.compare_button = QPushButton("Compare")
        self.grid_check = QCheckBox("grid view (one viewbox per candidate)")
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(140)
        self.tabs = QTabWidget()
        self.tabs.setMinimumHeight(300)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Reference", self.reference_combo)
        form.addRow("Raters (optional)", self.rater_list)
        form.addRow("Predictions (≥ 2)", self.prediction_list)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.own_optimum)
        layout.addWidget(self.slider)
        row = QHBoxLayout()
        row.addWidget(self.compare_button)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        layout.addWidget(self.grid_check)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(self.tabs)

        self._rerun = QTimer(self)
        self._rerun.setSingleShot(True)
        self._rerun.setInterval(200)
        self._rerun.timeout.connect(self._rerun_if_compared)

        self.compare_button.clicked.connect(self.run)
        self.export_button.clicked.connect(self._export_dialog)
        self.grid_check.toggled.connect(self.set_grid)
        self.slider.valueChanged.connect(self._on_threshold)
        self.own_optimum.toggled.connect(self._on_threshold)
        self.viewer.layers.events.inserted.connect(self.refresh_choices)
        self.viewer.layers.events.removed.connect(self.refresh_choices)
        self.refresh_choices()

    # ------------------------------------------------------------------ choices
    def refresh_choices(self, event=None) -> None:
        from napari.layers import Image, Labels

        grid = {id(ly) for ly in self._grid_layers}
        layers = [ly for ly in self.viewer.layers if id(ly) not in grid]
        images = [ly.name for ly in layers if isinstance(ly, Image)]
        labels_or_images = [ly.name for ly in layers if isinstance(ly, (Image, Labels))]
        for combo, names in ((self.image_combo, images),
                             (self.reference_combo, labels_or_images)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        for lst, names in ((self.rater_list, labels_or_images), (self.prediction_list, images)):
            chosen = {lst.item(i).text() for i in range(lst.count()) if lst.item(i).isSelected()}
            lst.blockSignals(True)
            lst.clear()
            for name in names:
                item = QListWidgetItem(name)
                lst.addItem(item)
                item.setSelected(name in chosen)
            lst.blockSignals(False)

    def choose(self, *, image: str, reference: str, predictions: list[str],
               raters: list[str] = ()) -> None:
        """Set the choices programmatically (as clicks in the widget would)."""
        self.image_combo.setCurrentText(image)
        self.reference_combo.setCurrentText(reference)
        for lst, names in ((self.prediction_list, predictions), (self.rater_list, raters)):
            for i in range(lst.count()):
                lst.item(i).setSelected(lst.item(i).text() in names)

    def _selected(self, lst: QListWidget) -> list[str]:
        return [lst.item(i).text() for i in range(lst.count()) if lst.item(i).isSelected()]

    # ------------------------------------------------------------------ inputs
    def thresholds(self, names: list[str]) -> dict[str, float]:
        if self.own_optimum.isChecked():
            # the model card's threshold; a layer that is not a model's prediction is refused
            # with a reason (InputError), never given a silent 0.5
            return {n: prediction_threshold(self.viewer.layers[n]) for n in names}
        return {n: float(self.slider.value()) for n in names}

    def collect(self) -> dict[str, Any]:
        """Snapshot the chosen layers' arrays and check them (InputError on bad input)."""
        preds = self._selected(self.prediction_list)
        if len(preds) < 2:
            raise InputError(
                f"choose at least two prediction layers to compare; {len(preds)} chosen")
        ref_name = self.reference_combo.currentText()
        if not ref_name or ref_name not in self.viewer.layers:
            raise InputError("choose a reference layer (fused raters, STAPLE, a truth)")
        reference = np.asarray(self.viewer.layers[ref_name].data)
        predictions = {}
        for name in preds:
            if name == ref_name:
                raise InputError(f"{name!r} is both the reference and a prediction; pick another")
            data = np.asarray(self.viewer.layers[name].data)
            if data.shape != reference.shape:
                raise InputError(
                    f"prediction {name!r} has shape {data.shape} but reference {ref_name!r} has "
                    f"shape {reference.shape}; all layers must have the same shape")
            if data.dtype.kind != "f":  # cheap check here; the value range in the worker
                compare.check_prediction(data, name=name)
            predictions[name] = data
        from softseg.confidence import METADATA_KEY, ConfidenceScale

        raters = []
        for n in self._selected(self.rater_list):
            layer = self.viewer.layers[n]
            a = np.asarray(layer.data)
            if a.shape != reference.shape:
                raise InputError(f"rater {n!r} has shape {a.shape} but reference "
                                 f"{ref_name!r} has shape {reference.shape}")
            meta = (layer.metadata or {}).get(METADATA_KEY)
            scale = ConfidenceScale.from_dict(meta) if isinstance(meta, dict) else None
            raters.append((n, a, scale))
        layer = self.viewer.layers[preds[0]]
        spacing = tuple(float(s) for s in layer.scale[-reference.ndim:])
        return {"predictions": predictions, "reference": reference, "raters": raters,
                "spacing": spacing, "thresholds": self.thresholds(preds),
                "reference_name": ref_name}

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Start the comparison in a thread worker (results land in :meth:`_on_result`)."""
        from napari.qt.threading import create_worker

        if self._worker is not None:
            self._pending = True
            return
        self.last_error = ""
        try:
            job = self.collect()
        except InputError as exc:
            self._on_error(exc)
            return
        self.status.setText("computing…")
        self.compare_button.setEnabled(False)

        def work():
            from softseg.confidence import label_to_soft

            raters = None
            if job["raters"]:
                soft = []
                for n, a, scale in job["raters"]:
                    # binary, soft, or confidence levels through the rater's own scale
                    soft.append(label_to_soft(a, scale=scale, name=f"rater layer {n!r}"))
                raters = np.stack(soft)
            return compare.compare_predictions(
                job["predictions"], job["reference"], thresholds=job["thresholds"],
                raters=raters, spacing=job["spacing"], reference_name=job["reference_name"])

        def guarded():
            try:
                return work()
            except InputError as exc:  # bad input is an answer for the user, not a crash
                return _BadInput(str(exc))  # (a returned exception would be re-raised)

        worker = create_worker(guarded)
        worker.returned.connect(lambda result: self._on_result(result, job))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        if not self._life["alive"]:
            return
        self.compare_button.setEnabled(True)
        if self._pending:
            self._pending = False
            self.run()

    def _on_error(self, exc: Exception) -> None:
        self.last_error = str(exc)
        if not self._life["alive"]:
            return
        self.status.setText(f"<span style='color:#ff8080'>{exc}</span>")

    def _on_result(self, result: compare.Comparison | _BadInput, job: dict[str, Any]) -> None:
        if not self._life["alive"]:
            return
        if isinstance(result, _BadInput):
            self._on_error(InputError(result.message))
            return
        self.comparison = result
        self.thresholds_used = dict(job["thresholds"])
        self._fill_table(result)
        self._draw_figures(result)
        self.export_button.setEnabled(True)
        self.status.setText(f"{len(result.rows)} candidates against {result.reference_name!r}")
        if self.grid_check.isChecked():
            self._update_overlays()

    def _rerun_if_compared(self) -> None:
        if self.comparison is not None:
            self.run()

    def _on_threshold(self, *_args) -> None:
        self.slider.setEnabled(not self.own_optimum.isChecked())
        self._update_overlays()
        self._rerun.start()

    # ------------------------------------------------------------------ table
    def table_columns(self, result: compare.Comparison) -> list[str]:
        """The registry's comparison-table metrics (level <= 2) that have a value (+-inf is a
        value: a structure predicted on a healthy subject)."""
        return [m for m, spec in compare.METRICS.items() if spec.level <= 2
                and any(not math.isnan(rows[0].get(m, math.nan)) for rows in result.rows.values())]

    def _fill_table(self, result: compare.Comparison) -> None:
        cols = self.table_columns(result)
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(cols) + 1)
        self.table.setRowCount(len(result.rows))
        self.table.setHorizontalHeaderLabels(
            ["candidate"] + [compare.METRICS[m].header for m in cols])
        for r, (cand, rows) in enumerate(result.rows.items()):
            self.table.setItem(r, 0, QTableWidgetItem(cand))
            for c, m in enumerate(cols, start=1):
                value = float(rows[0][m])
                item = _NumericItem(compare.format_value(m, value))
                item.setData(_VALUE_ROLE, value)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()

    def table_values(self) -> dict[str, dict[str, float]]:
        """What the table shows: candidate -> metric -> stored value (sort order independent)."""
        if self.comparison is None:
            return {}
        cols = self.table_columns(self.comparison)
        out = {}
        for r in range(self.table.rowCount()):
            cand = self.table.item(r, 0).text()
            out[cand] = {m: self.table.item(r, c).data(_VALUE_ROLE)
                         for c, m in enumerate(cols, start=1)}
        return out

    def export_csv(self, path: str | Path) -> Path:
        """Write the table (unscaled values, one row per candidate) to a CSV file (atomic)."""
        if self.comparison is None:
            raise InputError("nothing to export yet: press Compare first")
        path = Path(path)
        cols = self.table_columns(self.comparison)
        rows = [[c] + [self.comparison.rows[c][0][m] for m in cols] for c in self.comparison.rows]
        return compare.write_text(path, compare.csv_text(["candidate"] + cols, rows),
                                  overwrite=True)

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except (InputError, OSError) as exc:
                self.status.setText(str(exc))
            else:
                self.status.setText(f"saved {path}")

    # ------------------------------------------------------------------ figures
    def _draw_figures(self, result: compare.Comparison) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        current = self.tabs.currentIndex()
        self.tabs.clear()
        self._canvases = {}
        cursor = None if self.own_optimum.isChecked() else float(self.slider.value())
        for name in compare.available_figures(result.curves):
            fig = Figure(figsize=(4.2, 3.2), dpi=90, layout="tight")
            canvas = FigureCanvasQTAgg(fig)
            compare.draw_figure(fig.add_subplot(1, 1, 1), name, result.curves, cursor=cursor)
            self.tabs.addTab(canvas, compare.FIGURES[name][0])
            self._canvases[name] = canvas
        if 0 <= current < self.tabs.count():
            self.tabs.setCurrentIndex(current)

    # ------------------------------------------------------------------ grid view
    def set_grid(self, on: bool) -> None:
        """Show one viewbox per candidate (image + soft prediction + contour), or go back."""
        from napari.layers import Image, Labels

        self._clear_grid()
        if not on:
            self.viewer.grid.enabled = False
            return
        try:
            preds = self._selected(self.prediction_list)
            if len(preds) < 2:
                raise InputError("choose at least two prediction layers for the grid view")
            image = self.viewer.layers[self.image_combo.currentText()]
        except (InputError, KeyError) as exc:
            self.status.setText(str(exc))
            self.grid_check.blockSignals(True)
            self.grid_check.setChecked(False)
            self.grid_check.blockSignals(False)
            return
        self._hidden = [ly for ly in self.viewer.layers if ly.visible]
        for ly in self._hidden:
            ly.visible = False
        index = 0
        for k, name in enumerate(preds):
            pred = self.viewer.layers[name]
            color = OVERLAY_COLORS[k % len(OVERLAY_COLORS)]
            views = [
                Image(image.data, name=f"{image.name} · {name}", scale=image.scale,
                      translate=image.translate, colormap=image.colormap.name,
                      contrast_limits=image.contrast_limits, metadata={_GRID_KEY: name}),
                Image(pred.data, name=f"{name} (soft)", scale=pred.scale,
                      translate=pred.translate, colormap="inferno", blending="additive",
                      opacity=0.6, contrast_limits=(0.0, 1.0), metadata={_GRID_KEY: name}),
                Labels(np.zeros(pred.data.shape, dtype=np.uint8), name=f"{name} (binarised)",
                       scale=pred.scale, translate=pred.translate, opacity=0.9,
                       colormap={0: "transparent", 1: color, None: "transparent"},
                       metadata={_GRID_KEY: name}),
            ]
            views[2].contour = 1
            views[2].editable = False
            self._grid_overlays.append((name, views[2], np.asarray(pred.data)))
            for view in views:
                self._grid_layers.append(view)  # first: the inserted event refreshes the lists
                self.viewer.layers.insert(index, view)
                index += 1
        self.viewer.grid.stride = 3
        self.viewer.grid.enabled = True
        self._update_overlays()

    def _clear_grid(self) -> None:
        for ly in self._grid_layers:
            if ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self._grid_layers = []
        self._grid_overlays = []
        for ly in self._hidden:
            if ly in self.viewer.layers:
                ly.visible = True
        self._hidden = []

    def _update_overlays(self) -> None:
        if not self._grid_overlays:
            return
        try:
            thresholds = self.thresholds([name for name, _, _ in self._grid_overlays])
        except InputError as exc:
            self.status.setText(str(exc))
            return
        for name, overlay, data in self._grid_overlays:
            metrics.binarize(data, thresholds[name], out=overlay.data.view(np.bool_), checked=True)
            overlay.refresh()
