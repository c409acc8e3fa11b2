"""The *Compare candidates* dock (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QAction
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
    QMenu,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from softseg import compare
from softseg.errors import InputError
from softseg.metrics import METRICS

from napari_softseg._metadata import layer_uid, role
from napari_softseg._raters import is_rater_layer
from napari_softseg.widgets._candidates import (
    OUTPUT_ROLES,
    Candidate,
    candidates,
    reference_choices,
    short_labels,
)
from napari_softseg.widgets._common import collapsible, confirm_overwrite, notify, scroll_area
from napari_softseg.widgets._gl_context import Connections, install_removal_guard
from napari_softseg.widgets._references import ReferenceCombo
from napari_softseg.widgets._plots import ThemedCanvas
from napari_softseg.widgets._docking import dock_as_tab

from ._grid import GridView
from ._inputs import BadInput, Job, collect, layers_of, run_job
from ._table import DEFAULT_COLUMNS, VALUE_ROLE, NumericItem, column_groups, shown_columns

__all__ = ["SOURCE", "CompareWidget"]

#: Notification source and dock title.
SOURCE = "Compare candidates"
_KEY = Qt.ItemDataRole.UserRole
_ALL_CLASSES = "all classes (multi-class ECE, accuracy)"
#: Report files ``compare.write_report`` writes (asked about before replacing).
_REPORT_FILES = ("index.html", "summary.csv", "samples.csv", "metrics.json")


class CompareWidget(QWidget):
    """Dock widget: metrics table, figures and grid view for two or more soft predictions.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (or the Plugins menu's proxy of it).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # joins the other SoftSeg docks as a tab
        self.viewer = napari_viewer
        self.comparison: compare.Comparison | None = None
        self.job: Job | None = None
        self.thresholds_used: dict[str, Any] = {}
        self.columns: list[str] = list(DEFAULT_COLUMNS)
        self._choices: dict[str, Candidate] = {}
        self._worker = None
        self._pending = False
        self._canvases: dict[str, ThemedCanvas] = {}
        self.last_error = ""
        self._events = Connections(self)
        self._life = self._events.alive
        self._guard = install_removal_guard(self.viewer, self)
        self.grid = GridView(self.viewer, self._guard)

        # ---- inputs
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image shown under each candidate in the grid view")
        self.reference_combo = ReferenceCombo()
        self.prediction_list = QListWidget()
        self.prediction_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.prediction_list.setMaximumHeight(96)
        self.rater_list = QListWidget()
        self.rater_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.rater_list.setMaximumHeight(72)
        self.rater_list.setToolTip("Optional: their average is the reference of the Brier score "
                                   "and of the entropy plot (single-class predictions)")
        self.own_optimum = QCheckBox("each at its model's optimal threshold")
        self.argmax_check = QCheckBox("argmax: each voxel its most probable class")
        self.argmax_check.setToolTip("K classes: binarise as the label-fusion paper does "
                                     "(untick: each model's per-class thresholds, or one)")
        self.argmax_check.setChecked(True)
        self.argmax_check.setVisible(False)
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0.0, 1.0)
        self.slider.setSingleStep(0.01)
        self.slider.setDecimals(2)
        self.slider.setValue(0.5)
        self.compare_button = QPushButton("Compare")
        self.report_button = QPushButton("Save report…")
        self.report_button.setEnabled(False)
        self.report_button.setToolTip("The HTML report, CSV tables and figures that the command "
                                      "line comparison writes")
        self.grid_check = QCheckBox("grid view: one view per candidate")
        # ---- results
        self.class_combo = QComboBox()
        self.class_combo.setVisible(False)
        self.columns_button = QToolButton()
        self.columns_button.setText("Columns")
        self.columns_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.columns_button.setToolTip("Choose the metrics the table shows")
        self._column_actions: dict[str, QAction] = {}
        self._build_columns_menu()
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(120)
        self.tabs = QTabWidget()
        self.tabs.setMinimumHeight(260)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._build_layout()

        self._rerun = QTimer(self)
        self._rerun.setSingleShot(True)
        self._rerun.setInterval(200)
        self._rerun.timeout.connect(self._rerun_if_compared)

        self.compare_button.clicked.connect(self.run)
        self.report_button.clicked.connect(self._report_clicked)
        self.grid_check.toggled.connect(self.set_grid)
        self.slider.valueChanged.connect(self._on_threshold)
        self.own_optimum.toggled.connect(self._on_threshold)
        self.argmax_check.toggled.connect(self._on_threshold)
        self.class_combo.currentIndexChanged.connect(self._show_result)
        self.prediction_list.itemSelectionChanged.connect(self._on_predictions)
        layers = self.viewer.layers
        self._events.connect(layers.events.inserted, self.refresh_choices)
        self._events.connect(layers.events.removed, self._on_removed)
        if hasattr(layers.events, "renamed"):
            self._events.connect(layers.events.renamed, self.refresh_choices)
        self.refresh_choices()

    # ------------------------------------------------------------------------ plumbing
    def _build_layout(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        form = QFormLayout()
        form.addRow("Predictions (≥ 2)", self.prediction_list)
        form.addRow("Reference", self.reference_combo)
        layout.addLayout(form)
        for w in (self.own_optimum, self.argmax_check, self.slider):
            layout.addWidget(w)
        row = QHBoxLayout()
        row.addWidget(self.compare_button)
        row.addWidget(self.report_button)
        layout.addLayout(row)
        options = QWidget()
        options_form = QFormLayout(options)
        options_form.setContentsMargins(0, 0, 0, 0)
        options_form.addRow("Raters", self.rater_list)
        options_form.addRow("Image", self.image_combo)
        options_form.addRow(self.grid_check)
        self.options_section = collapsible("Raters and grid view", options)
        layout.addWidget(self.options_section)
        layout.addWidget(self.status)
        bar = QHBoxLayout()
        bar.addWidget(self.class_combo, 1)
        bar.addStretch(0)
        bar.addWidget(self.columns_button)
        layout.addLayout(bar)
        layout.addWidget(self.table)
        layout.addWidget(self.tabs)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll_area(body, min_height=160))

    def _build_columns_menu(self) -> None:
        menu = QMenu(self.columns_button)
        menu.addAction("Headline metrics").triggered.connect(
            lambda: self.set_columns(DEFAULT_COLUMNS))
        menu.addAction("All metrics").triggered.connect(lambda: self.set_columns(list(METRICS)))
        for group, keys in column_groups().items():
            menu.addSection(group)
            for key in keys:
                action = QAction(METRICS[key].header, menu)
                action.setCheckable(True)
                action.setChecked(key in self.columns)
                action.setToolTip(METRICS[key].description)
                action.toggled.connect(lambda on, k=key: self._toggle_column(k, on))
                menu.addAction(action)
                self._column_actions[key] = action
        self.columns_button.setMenu(menu)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setText(f"<span style='color:#ff8080'>{text}</span>" if error else text)

    # ------------------------------------------------------------------------ choices
    def refresh_choices(self, event: Any = None) -> None:
        """Rebuild the lists from the viewer's layers (keeping what is chosen)."""
        from napari.layers import Image

        layers = list(self.viewer.layers)
        chosen = set(self._selected_keys())
        self._choices = {c.key: c for c in candidates(layers)}
        self._fill_list(self.prediction_list, [(c.key, c.title) for c in self._choices.values()],
                        chosen)
        raters = [(layer_uid(ly), str(ly.name)) for ly in layers
                  if is_rater_layer(ly) and role(ly) not in OUTPUT_ROLES]
        self._fill_list(self.rater_list, raters, set(self._selected_raters()))
        images = [ly for ly in layers if isinstance(ly, Image) and role(ly) not in OUTPUT_ROLES
                  and ly.ndim >= 2]
        images.sort(key=lambda ly: role(ly) != "image")  # MR images first
        current = self.image_combo.currentData(_KEY)
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for ly in images:
            self.image_combo.addItem(str(ly.name), layer_uid(ly))
        index = self.image_combo.findData(current, _KEY)
        self.image_combo.setCurrentIndex(index if index >= 0 else 0)
        self.image_combo.blockSignals(False)
        self._refresh_references()

    def _fill_list(self, lst: QListWidget, items: Sequence[tuple[str, str]], chosen: set) -> None:
        lst.blockSignals(True)
        lst.clear()
        for key, title in items:
            item = QListWidgetItem(title)
            item.setData(_KEY, key)
            lst.addItem(item)
            item.setSelected(key in chosen)
        lst.blockSignals(False)

    def _chosen(self) -> list[Candidate]:
        return [self._choices[k] for k in self._selected_keys() if k in self._choices]

    def _selected_keys(self) -> list[str]:
        lst = self.prediction_list
        return [lst.item(i).data(_KEY) for i in range(lst.count()) if lst.item(i).isSelected()]

    def _selected_raters(self) -> list[str]:
        lst = self.rater_list
        return [lst.item(i).data(_KEY) for i in range(lst.count()) if lst.item(i).isSelected()]

    def _classes(self) -> tuple[str, ...] | None:
        kinds = [c.classes for c in self._chosen()]
        return kinds[0] if kinds and all(k == kinds[0] for k in kinds) else None

    def _refresh_references(self) -> None:
        chosen = self._chosen()
        classes = self._classes()
        exclude = [uid for c in chosen for uid in c.uids]
        self.reference_combo.set_choices(
            reference_choices(self.viewer.layers, classes=classes, exclude=exclude))
        multi = classes is not None
        self.argmax_check.setVisible(multi)
        self.rater_list.setEnabled(not multi)
        self.slider.setEnabled(self._mode() == "common")

    def _on_predictions(self) -> None:
        self._refresh_references()

    def choose(self, *, reference: str, predictions: Sequence[str], raters: Sequence[str] = (),
               image: str | None = None) -> None:
        """Set the choices by their titles (as clicks in the dock would)."""
        for lst, names in ((self.prediction_list, predictions), (self.rater_list, raters)):
            lst.blockSignals(True)
            for i in range(lst.count()):
                lst.item(i).setSelected(lst.item(i).text() in names)
            lst.blockSignals(False)
        self._refresh_references()
        index = self.reference_combo.findText(reference)
        if index < 0:
            combo = self.reference_combo
            offered = [combo.itemText(i) for i in range(combo.count())]
            raise InputError(f"no reference called {reference!r}; offered: {offered}")
        self.reference_combo.setCurrentIndex(index)
        if image is not None:
            self.image_combo.setCurrentIndex(self.image_combo.findText(image))

    # ------------------------------------------------------------------------ inputs
    def _mode(self) -> str:
        if self._classes() is not None and self.argmax_check.isChecked():
            return "argmax"
        return "optimal" if self.own_optimum.isChecked() else "common"

    def collect(self) -> Job:
        """Snapshot the chosen layers' arrays and check them (InputError on bad input)."""
        raters = layers_of(self.viewer.layers, self._selected_raters())
        return collect(self.viewer.layers, self._chosen(),
                       self.reference_combo.choice(), mode=self._mode(),
                       common=float(self.slider.value()),
                       raters=raters if self._classes() is None else ())

    # ------------------------------------------------------------------------ run
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
        self._say("computing…")
        self.compare_button.setEnabled(False)
        worker = create_worker(run_job, job)
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
        if self._life["alive"]:
            self._say(str(exc), error=True)
            notify(str(exc), severity="warning", source=SOURCE)

    def _on_result(self, result: compare.Comparison | BadInput, job: Job) -> None:
        if not self._life["alive"]:
            return
        if isinstance(result, BadInput):
            self._on_error(InputError(result.message))
            return
        self.comparison, self.job = result, job
        self.thresholds_used = {} if job.thresholds is None else (
            dict(job.thresholds) if isinstance(job.thresholds, dict)
            else {label: job.thresholds for label in job.predictions})
        self.class_combo.blockSignals(True)
        current = self.class_combo.currentText()
        self.class_combo.clear()
        if result.per_class:
            self.class_combo.addItems([_ALL_CLASSES, *result.per_class])
            index = self.class_combo.findText(current)
            self.class_combo.setCurrentIndex(index if index >= 0 else 1)
        self.class_combo.setVisible(bool(result.per_class))
        self.class_combo.blockSignals(False)
        self._show_result()
        self.report_button.setEnabled(True)
        self._say(f"{len(result.rows)} candidates against {result.reference_name!r}")
        if self.grid.on:
            self.grid.update(self._grid_thresholds())

    def _rerun_if_compared(self) -> None:
        if self.comparison is not None:
            self.run()

    def _on_threshold(self, *_args: Any) -> None:
        self.slider.setEnabled(self._mode() == "common")
        if self.grid.on:
            self.grid.update(self._grid_thresholds())
        self._rerun.start()

    # ------------------------------------------------------------------------ table
    def shown(self) -> compare.Comparison | None:
        """The comparison the table shows: the whole one, or the chosen class's."""
        if self.comparison is None:
            return None
        cname = self.class_combo.currentText()
        return self.comparison.per_class.get(cname, self.comparison)

    def set_columns(self, keys: Sequence[str]) -> None:
        """Show these metrics (registry keys) in the table."""
        unknown = [k for k in keys if k not in METRICS]
        if unknown:
            raise InputError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
        self.columns = list(keys)
        for key, action in self._column_actions.items():
            action.blockSignals(True)
            action.setChecked(key in self.columns)
            action.blockSignals(False)
        self._fill_table()

    def _toggle_column(self, key: str, on: bool) -> None:
        cols = [k for k in self.columns if k != key] + ([key] if on else [])
        self.set_columns(cols)

    def table_columns(self) -> list[str]:
        """The metric keys the table shows now, in column order."""
        result = self.shown()
        if result is None:
            return []
        summary = result is self.comparison and bool(self.comparison.per_class)
        return shown_columns(list(METRICS) if summary else self.columns, result.rows)

    def _fill_table(self) -> None:
        result = self.shown()
        self.table.setSortingEnabled(False)
        self.table.clear()
        if result is None:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        cols = self.table_columns()
        self.table.setColumnCount(len(cols) + 1)
        self.table.setRowCount(len(result.rows))
        self.table.setHorizontalHeaderLabels(["candidate"] + [METRICS[m].header for m in cols])
        for c, m in enumerate(cols, start=1):
            self.table.horizontalHeaderItem(c).setToolTip(METRICS[m].description)
        colors = self.job.colors if self.job is not None else {}
        for r, (cand, rows) in enumerate(result.rows.items()):
            name = QTableWidgetItem(f"■ {cand}")
            name.setData(_KEY, cand)
            if cand in colors:
                from qtpy.QtGui import QColor

                name.setForeground(QColor(colors[cand]))
            self.table.setItem(r, 0, name)
            for c, m in enumerate(cols, start=1):
                value = float(rows[0].get(m, math.nan))
                item = NumericItem(compare.format_value(m, value))
                item.setData(VALUE_ROLE, value)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()

    def table_values(self) -> dict[str, dict[str, float]]:
        """What the table shows: candidate -> metric -> stored value (sort order independent)."""
        cols = self.table_columns()
        out = {}
        for r in range(self.table.rowCount()):
            cand = self.table.item(r, 0).data(_KEY)
            out[cand] = {m: self.table.item(r, c).data(VALUE_ROLE)
                         for c, m in enumerate(cols, start=1)}
        return out

    def _show_result(self, *_args: Any) -> None:
        self._fill_table()
        self._draw_figures()

    # ------------------------------------------------------------------------ figures
    def _draw_figures(self) -> None:
        current = self.tabs.currentIndex()
        self.tabs.clear()
        self._canvases = {}
        result = self.shown()
        if result is None or not result.curves:
            if result is not None:
                self.tabs.addTab(QLabel("Choose a class above to see its plots."), "Plots")
            return
        cursor = float(self.slider.value()) if self._mode() == "common" else None
        colors = self.job.colors if self.job is not None else {}
        for name in compare.available_figures(result.curves):
            canvas = ThemedCanvas(self.viewer, figsize=(4.2, 3.2))
            compare.draw_figure(canvas.figure.add_subplot(1, 1, 1), name, result.curves,
                                cursor=cursor, colors=colors)
            canvas.restyle()
            self.tabs.addTab(canvas, compare.FIGURES[name][0])
            self._canvases[name] = canvas
        if 0 <= current < self.tabs.count():
            self.tabs.setCurrentIndex(current)

    # ------------------------------------------------------------------------ report
    def save_report(self, folder: str | Path) -> Path | None:
        """Write the engine's report (``index.html``, CSV tables, ``metrics.json``, figures) of
        the last comparison into ``folder``; asks before replacing any file. Returns the index
        page, or None when nothing was written."""
        if self.comparison is None:
            self._say("nothing to save yet: press Compare first", error=True)
            return None
        folder = Path(folder)
        files = [folder / f for f in _REPORT_FILES]  # and every per-class table there now
        files += sorted(folder.glob("summary_*.csv")) + sorted(folder.glob("samples_*.csv"))
        if (folder / "figures").exists():
            files.append(folder / "figures")
        if not confirm_overwrite(files, parent=self, title="Replace the report?"):
            self._say("Not saved: the existing report was kept. Choose another folder to keep "
                      "both.")
            return None
        meta = {"reference": self.comparison.reference_name,
                "thresholds": self.thresholds_used or "argmax"}
        try:
            index = compare.write_report(folder, self.comparison, meta=meta, overwrite=True,
                                         title="Candidate comparison (napari)")
        except (InputError, OSError) as exc:
            self._say(str(exc), error=True)
            return None
        notify(f"Saved the comparison report in {folder}", source=SOURCE)
        return index

    def _report_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the comparison report in")
        if folder:
            self.save_report(folder)

    # ------------------------------------------------------------------------ grid view
    def _grid_thresholds(self) -> dict[str, float | None]:
        chosen = self._chosen()
        labels = short_labels(chosen)
        mode = self._mode()
        out: dict[str, float | None] = {}
        for cand in chosen:
            if cand.classes is not None or mode == "argmax":
                out[labels[cand.key]] = None
            elif mode == "optimal":
                from napari_softseg.widgets._candidates import threshold_of

                layer = cand.layers(self.viewer.layers)[0]
                out[labels[cand.key]] = threshold_of(layer)
            else:
                out[labels[cand.key]] = float(self.slider.value())
        return out

    def set_grid(self, on: bool) -> None:
        """Show one view per candidate (image + soft prediction + contour), or go back."""
        from napari_softseg._metadata import find_layer

        self.grid.clear()
        if not on:
            return
        try:
            chosen = self._chosen()
            if len(chosen) < 2:
                raise InputError("choose at least two predictions for the grid view")
            image = find_layer(self.viewer.layers, self.image_combo.currentData(_KEY))
            if image is None:
                raise InputError("choose the image to show under the predictions")
            self.grid.show(image, chosen, short_labels(chosen), self._grid_thresholds())
        except InputError as exc:
            self.grid.clear()
            self._say(str(exc), error=True)
            self.grid_check.blockSignals(True)
            self.grid_check.setChecked(False)
            self.grid_check.blockSignals(False)

    # ------------------------------------------------------------------------ removal
    def _on_removed(self, event: Any = None) -> None:
        """Forget a removed layer at once; a removed candidate or image ends the grid view."""
        removed = getattr(event, "value", None)
        uid = layer_uid(removed) if removed is not None else None
        if uid is not None and self.grid.on and uid in self.grid.depends_on:
            self._close_grid(f"{removed.name!r} was removed: the grid view closed")
        elif uid is not None and uid in self.grid.uids:
            self.grid.uids.remove(uid)
            if not self.grid.uids:  # every view deleted (select all + delete removes views in
                # any order, maybe before the image they show): leave the grid as well
                self._close_grid("the grid view's layers were removed: the grid view closed")
        self.refresh_choices()

    def _close_grid(self, message: str) -> None:
        self.grid.clear()
        self.grid_check.blockSignals(True)
        self.grid_check.setChecked(False)
        self.grid_check.blockSignals(False)
        self._say(message)
