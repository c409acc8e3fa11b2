"""The *Threshold* dock: binarise soft predictions interactively (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleRangeSlider, QLabeledDoubleSlider

from softseg import compare, metrics
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.metrics.calibration import class_labels

from napari_softseg._metadata import OWNER_KEY, find_layer, layer_uid, role
from napari_softseg.widgets._candidates import (
    Candidate,
    ReferenceChoice,
    candidates,
    class_color,
    class_info,
    read_reference,
    reference_choices,
    threshold_of,
)
from napari_softseg.widgets._common import collapsible, confirm_overwrite, notify, scroll_area
from napari_softseg.widgets._gl_context import Connections, install_removal_guard
from napari_softseg.widgets._references import ReferenceCombo
from napari_softseg.widgets._docking import dock_as_tab
from ._layers import (
    THRESHOLD_KEY,
    Entry,
    add_overlay,
    put_result,
    result_of,
)
from ._plot import Curve, CurvePlot
from ._save import Saved, result_paths, write_results

__all__ = ["SOURCE", "ThresholdWidget"]

#: Notification source and dock title.
SOURCE = "Threshold"
_KEY = Qt.ItemDataRole.UserRole
_CURVE_THRESHOLDS = np.round(np.arange(0.01, 0.995, 0.01), 2)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _slider(value: float) -> QLabeledDoubleSlider:
    s = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    s.setRange(0.0, 1.0)
    s.setSingleStep(0.01)
    s.setDecimals(2)
    s.setValue(value)
    return s


class ThresholdWidget(QWidget):
    """Dock widget: threshold soft predictions with live overlays, readouts and a plot.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (or the Plugins menu's proxy of it).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # joins the other SoftSeg docks as a tab
        self.viewer = napari_viewer
        self._entries: dict[str, Entry] = {}  # soft layer uid -> entry (class order)
        self._selection: list[Candidate] = []
        self._choices: dict[str, Candidate] = {}
        self._ref_arrays: dict[str, np.ndarray] = {}  # entry uid -> its reference (validated)
        self._ref_watch: list[tuple[Any, Callable]] = []
        self._events = Connections(self)
        self._life = self._events.alive
        self._argmax: np.ndarray | None = None
        self._curve_worker = None
        self.curves_ready = False
        self.last_readouts: dict[str, dict[str, float]] = {}

        # ---- inputs
        self.layer_list = QListWidget()
        self.layer_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.layer_list.setMaximumHeight(96)
        self.layer_list.setToolTip("Soft predictions (a K-class prediction is one entry)")
        self.reference_combo = ReferenceCombo()
        # ---- thresholds
        self.own_optimum = QCheckBox("each at its model's optimal threshold")
        self.range_mode = QCheckBox("band: show only lo ≤ p < hi")
        self.slider = _slider(0.5)
        self.range_slider = QLabeledDoubleRangeSlider(Qt.Orientation.Horizontal)
        self.range_slider.setRange(0.0, 1.0)
        self.range_slider.setSingleStep(0.01)
        self.range_slider.setDecimals(2)
        self.range_slider.setValue((0.25, 0.75))
        self.range_slider.setVisible(False)
        self.argmax_check = QCheckBox("argmax: each voxel its most probable class")
        self.class_box = QWidget()
        self._class_form = QFormLayout(self.class_box)
        self._class_form.setContentsMargins(0, 0, 0, 0)
        self.class_sliders: dict[str, QLabeledDoubleSlider] = {}  # class name -> slider
        self.class_box.setVisible(False)
        self.argmax_check.setVisible(False)
        # ---- results
        self.readout_label = QLabel("Select a soft prediction.")
        self.readout_label.setTextFormat(Qt.TextFormat.RichText)
        self.readout_label.setWordWrap(True)
        self.plot = CurvePlot(self.viewer)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #ff8080")
        for label in (self.readout_label, self.status):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # ---- folded sections
        self.style_combo = QComboBox()
        self.style_combo.addItems(["filled", "contour"])
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip(
            "Keep the current binarised map as a layer (one per prediction, updated when "
            "applied again)")
        self.save_button = QPushButton("Save applied maps…")
        self.save_button.setToolTip("Write the applied maps as NIfTI files in the "
                                    "prediction's geometry (asks before replacing a file)")
        self._build_layout()

        self._readout_timer = QTimer(self)
        self._readout_timer.setSingleShot(True)
        self._readout_timer.setInterval(120)
        self._readout_timer.timeout.connect(self.update_readouts)

        self.slider.valueChanged.connect(self._on_threshold)
        self.range_slider.valueChanged.connect(self._on_threshold)
        self.range_mode.toggled.connect(self._on_mode)
        self.argmax_check.toggled.connect(self._on_mode)
        self.own_optimum.toggled.connect(self._on_own_optimum)
        self.style_combo.currentTextChanged.connect(self._on_style)
        self.layer_list.itemSelectionChanged.connect(self._on_selection)
        self.reference_combo.chosen.connect(self._on_reference)
        self.apply_button.clicked.connect(self.apply)
        self.save_button.clicked.connect(self._save_clicked)
        layers = self.viewer.layers
        self._events.connect(layers.events.inserted, self._refresh_choices)
        self._events.connect(layers.events.removed, self._on_removed)
        if hasattr(layers.events, "renamed"):
            self._events.connect(layers.events.renamed, self._refresh_choices)
        self._guard = install_removal_guard(self.viewer, self)
        self._refresh_choices()

    # ------------------------------------------------------------------------ plumbing
    def _build_layout(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        form = QFormLayout()
        form.addRow("Predictions", self.layer_list)
        form.addRow("Reference", self.reference_combo)
        layout.addLayout(form)
        for w in (self.own_optimum, self.range_mode, self.slider, self.range_slider,
                  self.argmax_check, self.class_box, self.readout_label, self.plot):
            layout.addWidget(w)
        style = QWidget()
        style_form = QFormLayout(style)
        style_form.setContentsMargins(0, 0, 0, 0)
        style_form.addRow("Overlay", self.style_combo)
        self.display_section = collapsible("Display", style)
        layout.addWidget(self.display_section)
        buttons = QWidget()
        row = QHBoxLayout(buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.apply_button)
        row.addWidget(self.save_button)
        self.apply_section = collapsible("Apply and save", buttons, expanded=True)
        layout.addWidget(self.apply_section)
        layout.addWidget(self.status)
        layout.addStretch(1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll_area(body, min_height=160))

    def _say(self, text: str) -> None:
        self.status.setText(text)

    # ------------------------------------------------------------------------ choices
    def _refresh_choices(self, event: Any = None) -> None:
        """Rebuild the prediction list and the reference list from the viewer's layers."""
        chosen = {c.key for c in self._selection}
        self._choices = {c.key: c for c in candidates(self.viewer.layers)}
        self.layer_list.blockSignals(True)
        self.layer_list.clear()
        for key, cand in self._choices.items():
            item = QListWidgetItem(cand.title)
            item.setData(_KEY, key)
            self.layer_list.addItem(item)
            item.setSelected(key in chosen)
        self.layer_list.blockSignals(False)
        self._refresh_references()

    def _refresh_references(self, *, notify: bool = True) -> None:
        """Offer the references that fit the selection (``notify``: a changed reference is
        read at once; False when the caller reads it next anyway)."""
        group = self._group()
        exclude = [uid for c in self._selection for uid in c.uids]
        self.reference_combo.blockSignals(not notify)
        try:
            self.reference_combo.set_choices(reference_choices(
                self.viewer.layers, classes=None if group is None else group.classes,
                exclude=exclude))
        finally:
            self.reference_combo.blockSignals(False)

    def selected_names(self) -> list[str]:
        """Titles of the selected predictions, in list order."""
        return [self.layer_list.item(i).text() for i in range(self.layer_list.count())
                if self.layer_list.item(i).isSelected()]

    def select_layers(self, names: Sequence[str]) -> None:
        """Select these predictions by title (as clicks in the list would)."""
        self.layer_list.blockSignals(True)
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            item.setSelected(item.text() in names)
        self.layer_list.blockSignals(False)
        self._on_selection()

    def _group(self) -> Candidate | None:
        """The selected K-class prediction (at most one, and then alone)."""
        multi = [c for c in self._selection if c.multiclass]
        return multi[0] if multi else None

    # ------------------------------------------------------------------------ selection
    def _on_selection(self) -> None:
        keys = [self.layer_list.item(i).data(_KEY) for i in range(self.layer_list.count())
                if self.layer_list.item(i).isSelected()]
        before = {c.key for c in self._selection}
        wanted = [self._choices[k] for k in keys if k in self._choices]
        new = [c for c in wanted if c.key not in before]
        if any(c.multiclass for c in new):  # a K-class prediction is thresholded alone
            wanted = [next(c for c in new if c.multiclass)]
        elif any(c.multiclass for c in wanted) and len(wanted) > 1:
            wanted = [c for c in wanted if not c.multiclass]
        group_before = self._group()
        self._say("")
        for cand in [c for c in self._selection if c.key not in {w.key for w in wanted}]:
            self._drop(cand)
        first_new = not self._entries
        refused = []
        for cand in wanted:
            if cand.key in {c.key for c in self._selection}:
                continue
            try:
                self._add(cand)
            except InputError as exc:
                refused.append(cand.key)
                self._say(str(exc))
        self._sync_list()
        group = self._group()
        if (group is None) != (group_before is None) or (
                group is not None and group_before is not None and group.key != group_before.key):
            self._build_class_sliders()
            self._refresh_references(notify=False)
        if group is None and self._entries and first_new:
            first = next(iter(self._entries.values()))
            if first.optimum is not None:
                self.slider.blockSignals(True)
                self.slider.setValue(first.optimum)
                self.slider.blockSignals(False)
        self._update_mode_widgets()
        self._on_reference()

    def _sync_list(self) -> None:
        keys = {c.key for c in self._selection}
        self.layer_list.blockSignals(True)
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            item.setSelected(item.data(_KEY) in keys)
        self.layer_list.blockSignals(False)

    def _add(self, cand: Candidate) -> None:
        """Check the candidate's layers and give each its overlay (all or none)."""
        layers = cand.layers(self.viewer.layers)
        datas = [compare.check_prediction(np.asarray(ly.data), name=ly.name) for ly in layers]
        made: list[Entry] = []
        for layer, data in zip(layers, datas):
            info = class_info(layer)
            if info is None:
                color, label = cand.rgb, cand.name
            else:
                labels = find_layer(self.viewer.layers, cand.labels_uid)
                color = class_color(labels if labels is not None else layer, info[0])
                label = f"{cand.name} · {info[1]}"
            overlay = add_overlay(self.viewer, layer, name=f"{layer.name} · threshold",
                                  color=color, contour=self.style_combo.currentText() == "contour")
            spacing = tuple(float(s) for s in layer.scale[-data.ndim:])
            entry = Entry(uid=layer_uid(layer), name=str(layer.name), label=label, color=color,
                          data=data, spacing=spacing,
                          soft_volume_ml=metrics.volume(data, spacing=spacing) / 1000.0,
                          optimum=threshold_of(layer), overlay_uid=layer_uid(overlay),
                          buffer=overlay.data, class_index=None if info is None else info[0])
            entry.on_data = self._data_callback(entry.uid)
            layer.events.data.connect(entry.on_data)
            made.append(entry)
        for entry in made:
            self._entries[entry.uid] = entry
        self._selection.append(cand)
        self._argmax = None

    def _data_callback(self, uid: str) -> Callable:
        def on_data(event: Any = None) -> None:
            self._on_source_data(uid)

        return on_data

    def _drop(self, cand: Candidate, *, removed: bool = False) -> None:
        """Forget a candidate: disconnect, remove its overlays (after napari's batch removal
        when one is running), keep its applied results."""
        self._selection = [c for c in self._selection if c.key != cand.key]
        for uid in cand.uids:
            entry = self._entries.pop(uid, None)
            if entry is None:
                continue
            layer = find_layer(self.viewer.layers, uid)
            if layer is not None and entry.on_data is not None:
                layer.events.data.disconnect(entry.on_data)
            self._remove_overlay(entry.overlay_uid)
        self._argmax = None

    def _remove_overlay(self, uid: str) -> None:
        self._guard.remove_layers([uid])  # inside napari's batch: hidden now, removed at its end

    def _on_source_data(self, uid: str) -> None:
        """A selected soft layer got new data: rebuild its candidate's overlays and numbers."""
        cand = next((c for c in self._selection if uid in c.uids), None)
        if cand is None:
            return
        self._drop(cand)
        try:
            self._add(cand)
        except InputError as exc:
            self._say(str(exc))
        self._sync_list()
        self._on_reference()

    # ------------------------------------------------------------------------ removal
    def _on_removed(self, event: Any = None) -> None:
        """Forget a removed layer at once, before napari draws again (issue 11 #3, #4)."""
        removed = getattr(event, "value", None)
        uid = layer_uid(removed) if removed is not None else None
        if uid is not None:
            for cand in list(self._selection):
                overlays = {self._entries[u].overlay_uid for u in cand.uids if u in self._entries}
                if uid in cand.uids or uid in overlays:
                    for u in cand.uids:  # the removed soft layer fires no more events
                        if u == uid and u in self._entries:
                            self._entries[u].on_data = None
                    self._drop(cand, removed=True)
                    self._say(f"{cand.title!r}: a layer was removed; its threshold view closed")
            current = self.reference_combo.choice()
            if current is not None and uid in current.uids:
                self._say(f"the reference {current.title!r} was removed")
        self._refresh_choices()
        self._sync_list()
        self._update_mode_widgets()
        if uid is not None and role(removed) not in ("threshold_overlay", "threshold_result"):
            self._on_reference()

    # ------------------------------------------------------------------------ reference
    def reference_data(self) -> np.ndarray | None:
        """The chosen reference as read for a single-class prediction (None: no reference)."""
        choice = self.reference_combo.choice()
        return None if choice is None else read_reference(choice, self.viewer.layers)

    def _watch_reference(self, choice: ReferenceChoice | None) -> None:
        """Follow the reference layers' data (a repainted truth updates the numbers)."""
        for emitter, callback in self._ref_watch:
            self._events.disconnect(emitter, callback)
        self._ref_watch.clear()
        if choice is None:
            return
        for uid in choice.uids:
            layer = find_layer(self.viewer.layers, uid)
            if layer is not None:
                self._events.connect(layer.events.data, self._on_reference)
                self._ref_watch.append((layer.events.data, self._on_reference))

    def _on_reference(self, *_args: Any) -> None:
        """Read and check the reference for every entry, then readouts and curves."""
        choice = self.reference_combo.choice()
        self._watch_reference(choice)
        self._ref_arrays = {}
        try:
            if choice is not None and self._entries:
                self._ref_arrays = self._references(choice)
        except InputError as exc:
            self._say(str(exc))
            self.reference_combo.drop()
            self._watch_reference(None)
            self._ref_arrays = {}
        for e in self._entries.values():
            ref = self._ref_arrays.get(e.uid)
            e.box = metrics.support_box(e.data, ref) if ref is not None else None
        self._on_threshold()
        self.update_readouts()
        self._start_curves()

    def _references(self, choice: ReferenceChoice) -> dict[str, np.ndarray]:
        ref = read_reference(choice, self.viewer.layers)
        group = self._group()
        out: dict[str, np.ndarray] = {}
        shape = next(iter(self._entries.values())).data.shape
        spatial = ref.shape[1:] if choice.kind == "classes" else ref.shape
        if spatial != shape:
            raise InputError(
                f"reference {choice.title!r} has shape {spatial} but the prediction has shape "
                f"{shape}; choose a reference on the same grid")
        if group is None:
            return {uid: ref for uid in self._entries}
        if choice.kind in ("labels", "codes"):
            labels = class_labels(ref, len(group.classes) + 1, f"reference {choice.title!r}")
        for uid, e in self._entries.items():
            k = int(e.class_index or 1)
            out[uid] = labels == k if choice.kind in ("labels", "codes") else ref[k - 1]
        return out

    # ------------------------------------------------------------------------ thresholds
    def current_thresholds(self) -> dict[str, tuple[float | None, float | None]]:
        """Per soft layer name: ``(t, None)``, ``(lo, hi)`` in band mode, ``(None, None)`` in
        the argmax view of a K-class prediction."""
        group = self._group()
        if group is not None:
            if self.argmax_check.isChecked():
                return {e.name: (None, None) for e in self._entries.values()}
            return {e.name: (float(self.class_sliders[group.classes[e.class_index - 1]].value()),
                             None) for e in self._entries.values()}
        if self.range_mode.isChecked():
            lo, hi = (float(v) for v in self.range_slider.value())
            return {e.name: (lo, hi) for e in self._entries.values()}
        value = float(self.slider.value())
        own = self.own_optimum.isChecked()
        return {e.name: (e.optimum if own and e.optimum is not None else value, None)
                for e in self._entries.values()}

    def _argmax_labels(self) -> np.ndarray:
        """Argmax class of every voxel of the selected K-class prediction (background = 0)."""
        if self._argmax is None:
            group = self._group()
            stack = np.stack([self._entries[uid].data for uid in group.uids])
            probs = metrics.class_probabilities(stack, classes=group.classes)
            self._argmax = metrics.class_argmax(probs)[0]
        return self._argmax

    def _on_threshold(self, *_args: Any) -> None:
        """Rewrite every overlay in place (the overlay follows the handle while dragging)."""
        thresholds = self.current_thresholds()
        argmax = None
        for e in self._entries.values():
            lo, hi = thresholds[e.name]
            out = e.buffer.view(np.bool_)
            if lo is None:
                argmax = self._argmax_labels() if argmax is None else argmax
                np.equal(argmax, e.class_index, out=out)
            elif hi is None:
                metrics.binarize(e.data, lo, out=out, checked=True)
            else:
                metrics.band(e.data, lo, hi, out=out, checked=True)
            overlay = find_layer(self.viewer.layers, e.overlay_uid)
            if overlay is not None:  # no thumbnail while dragging: refreshed with the readouts
                overlay.refresh(thumbnail=False)
        self.plot.move_cursors(v for pair in thresholds.values() for v in pair if v is not None)
        self._readout_timer.start()

    def _build_class_sliders(self) -> None:
        while self._class_form.rowCount():
            self._class_form.removeRow(0)
        self.class_sliders = {}
        group = self._group()
        if group is None:
            return
        missing = []
        for uid, cname in zip(group.uids, group.classes):
            entry = self._entries[uid]
            slider = _slider(entry.optimum if entry.optimum is not None else 0.5)
            if entry.optimum is None:
                missing.append(cname)
            slider.valueChanged.connect(self._on_threshold)
            r, g, b = (int(255 * c) for c in entry.color)
            label = QLabel(cname)
            label.setStyleSheet(f"color: rgb({r}, {g}, {b}); font-weight: bold")
            self._class_form.addRow(label, slider)
            self.class_sliders[cname] = slider
        if missing:
            self._say(f"{group.title!r} is not a model's prediction: no optimal threshold for "
                      f"{', '.join(missing)}; their sliders start at 0.50")

    def _update_mode_widgets(self) -> None:
        group = self._group()
        multi = group is not None
        band = self.range_mode.isChecked()
        for w in (self.own_optimum, self.range_mode):
            w.setVisible(not multi)
        self.slider.setVisible(not multi and not band)
        self.range_slider.setVisible(not multi and band)
        self.own_optimum.setEnabled(not band)
        self.argmax_check.setVisible(multi)
        self.class_box.setVisible(multi)
        self.class_box.setEnabled(not self.argmax_check.isChecked())
        if not multi:
            missing = [e.name for e in self._entries.values() if e.optimum is None]
            self.slider.setEnabled(not self.own_optimum.isChecked() or bool(missing))

    def _on_mode(self, *_args: Any) -> None:
        self._update_mode_widgets()
        self._on_threshold()

    def _on_own_optimum(self, on: bool) -> None:
        missing = [e.name for e in self._entries.values() if e.optimum is None]
        if on and missing:
            self._say(f"{', '.join(map(repr, missing))}: not a model's prediction, so no optimal "
                      "threshold; it follows the slider")
        self._update_mode_widgets()
        self._on_threshold()

    def _on_style(self, style: str) -> None:
        for e in self._entries.values():
            overlay = find_layer(self.viewer.layers, e.overlay_uid)
            if overlay is not None:
                overlay.contour = 1 if style == "contour" else 0

    # ------------------------------------------------------------------------ readouts
    def update_readouts(self) -> None:
        """Recompute the volumes (and Dice/precision/recall with a reference) now."""
        rows = []
        self.last_readouts = {}
        layers = {layer_uid(ly): ly for ly in self.viewer.layers}
        for name, (lo, hi) in self.current_thresholds().items():
            e = next(x for x in self._entries.values() if x.name == name)
            overlay = layers.get(e.overlay_uid)
            if overlay is not None:
                overlay.refresh(data_displayed=False, highlight=False, extent=False)
            ref = self._ref_arrays.get(e.uid)
            use_box = e.box if (ref is not None and (lo is None or lo > 0)) else None
            r = metrics.threshold_readouts(e.buffer.view(np.bool_), soft_volume_ml=e.soft_volume_ml,
                                           reference=ref, spacing=e.spacing, box=use_box)
            self.last_readouts[name] = r
            if lo is None:
                where = "argmax"
            elif hi is None:
                where = f"p ≥ {lo:.2f}"
            else:
                where = f"{lo:.2f} ≤ p &lt; {hi:.2f}"
            r8, g8, b8 = (int(255 * c) for c in e.color)
            text = (f"<b style='color: rgb({r8},{g8},{b8})'>■</b> <b>{e.label}</b> ({where}): "
                    f"binarised {r['binary_volume_ml']:.3f} mL, "
                    f"soft Σp {r['soft_volume_ml']:.3f} mL")
            if "dice" in r:
                text += (f"<br>&nbsp;Dice {_pct(r['dice'])}, precision {_pct(r['precision'])}, "
                         f"recall {_pct(r['recall'])}")
            rows.append(text)
        self.readout_label.setText("<br>".join(rows) or "Select a soft prediction.")

    # ------------------------------------------------------------------------ plot
    def _start_curves(self) -> None:
        from napari.qt.threading import create_worker

        self.curves_ready = False
        if self._curve_worker is not None:
            self._curve_worker.quit()
        if not self._entries:
            self._draw_plot()
            self.curves_ready = True
            return
        jobs = {uid: (e.data, self._ref_arrays.get(uid), e.spacing)
                for uid, e in self._entries.items()}

        def work() -> dict[str, dict[str, Any]]:
            return {uid: metrics.threshold_curves(data, reference=ref, spacing=spacing,
                                                  thresholds=_CURVE_THRESHOLDS)
                    for uid, (data, ref, spacing) in jobs.items()}

        worker = create_worker(work)
        worker.returned.connect(self._on_curves)
        worker.errored.connect(self._on_curves_error)
        self._curve_worker = worker
        worker.start()

    def _on_curves(self, curves: dict[str, dict[str, Any]]) -> None:
        if not self._life["alive"]:
            return
        for uid, c in curves.items():
            if uid in self._entries:
                self._entries[uid].curves = c
        self._draw_plot()
        self.curves_ready = True

    def _on_curves_error(self, exc: Exception) -> None:
        if self._life["alive"]:
            self._say(f"the curves could not be computed: {exc}")

    def _draw_plot(self) -> None:
        self.plot.draw_curves([
            Curve(e.label, e.color, e.curves["thresholds"], e.curves["volume_ml"],
                  e.curves.get("dice")) for e in self._entries.values() if e.curves])
        thresholds = self.current_thresholds()
        self.plot.move_cursors(v for pair in thresholds.values() for v in pair if v is not None)

    # ------------------------------------------------------------------------ apply / save
    def apply(self) -> list[Any]:
        """Keep the current binarised map of every selected soft layer in its one result layer
        (added the first time, updated afterwards). Returns the result layers."""
        self._say("")
        results = []
        for name, (lo, hi) in self.current_thresholds().items():
            e = next(x for x in self._entries.values() if x.name == name)
            layer = find_layer(self.viewer.layers, e.uid)
            if layer is None:
                continue
            if lo is None:
                what, tag = {"low": None, "high": None, "argmax": True}, "argmax"
            elif hi is None:
                what, tag = {"low": lo, "high": None, "argmax": False}, f"threshold {lo:.2f}"
            else:
                what = {"low": lo, "high": hi, "argmax": False}
                tag = f"band {lo:.2f}–{hi:.2f}"
            results.append(put_result(self.viewer, layer, e.buffer.copy(),
                                      name=f"{layer.name} · {tag}", color=e.color,
                                      threshold=dict(what, source=layer.name)))
        return results

    def _applied(self) -> list[Saved]:
        saved = []
        for e in self._entries.values():
            result = result_of(self.viewer, e.uid)
            if result is None:
                continue
            geometry = DisplayGeometry.from_metadata(result.metadata)
            if geometry is None:
                raise InputError(
                    f"{e.name!r} has no NIfTI geometry to save with: open the image with the "
                    "SoftSeg reader, or predict it with the Predict widget")
            saved.append(Saved(layer_name=e.name, mask=np.asarray(result.data),
                               geometry=geometry,
                               threshold=dict((result.metadata or {}).get(THRESHOLD_KEY) or {})))
        return saved

    def save_results(self, folder: str | Path) -> list[Path]:
        """Write the applied maps of the selected predictions into ``folder`` (``<image>_<
        candidate>_threshold-0.40.nii.gz`` and its JSON); asks before replacing any file.
        Returns the written images ([] when nothing was written)."""
        try:
            results = self._applied()
            if not results:
                raise InputError("nothing to save: press Apply first")
            paths = result_paths(folder, results)
            if not confirm_overwrite(paths, parent=self):
                self._say("Not saved: the existing files were kept. Choose another folder to "
                          "keep both.")
                return []
            written = write_results(folder, results, overwrite=True)
        except (InputError, OSError) as exc:
            self._say(str(exc))
            return []
        notify(f"Saved {len(written)} thresholded map(s) in {Path(folder)}", source=SOURCE)
        return written

    def _save_clicked(self) -> None:
        start = ""
        for e in self._entries.values():
            layer = find_layer(self.viewer.layers, e.uid)
            src = (layer.metadata or {}).get("source_path") if layer is not None else None
            if src:
                start = str(Path(src).parent)
                break
        folder = QFileDialog.getExistingDirectory(self, "Save the applied maps in", start)
        if folder:
            self.save_results(folder)

    # ------------------------------------------------------------------------ for tests
    def overlay_layer(self, name: str) -> Any:
        """The live overlay of the soft layer called ``name`` (None when there is none)."""
        e = next((x for x in self._entries.values() if x.name == name), None)
        return None if e is None else find_layer(self.viewer.layers, e.overlay_uid)

    def entry(self, name: str) -> Entry:
        """The entry of the soft layer called ``name``."""
        return next(x for x in self._entries.values() if x.name == name)

    def owner_of(self, layer: Any) -> str | None:
        """The uid of the soft layer a threshold overlay/result belongs to."""
        return (layer.metadata or {}).get(OWNER_KEY)
