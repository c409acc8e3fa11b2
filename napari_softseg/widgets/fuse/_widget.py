"""The *Fuse raters* dock: choose raters, classes and a method, fuse in a worker, show, save."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
    Table,
)
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QComboBox, QSizePolicy, QStyledItemDelegate, QVBoxLayout, QWidget

from softseg import __version__
from softseg.errors import InputError
from softseg.fusion import SoftRatersError
from softseg.geometry import DisplayGeometry

from napari_softseg._metadata import find_layer, layer_uid
from napari_softseg._raters import geometry_of
from napari_softseg.widgets._common import PaintModeRemovalGuard, collapsible, confirm_overwrite, notify, scroll_area
from napari_softseg.widgets.fuse._inputs import class_tags, collect_raters, is_rater_candidate, layer_classes
from napari_softseg.widgets.fuse._outputs import output_layers, show_outputs
from napari_softseg.widgets.fuse._run import (
    METHODS,
    ROI_AROUND,
    ROI_MODES,
    ROI_WHOLE,
    FusionOutput,
    iter_fusion,
    method_choices,
)
from napari_softseg.widgets.fuse._save import (
    is_suggested_name,
    output_files,
    provenance,
    suggested_path,
    write_fusion,
)
from napari_softseg.widgets._docking import dock_as_tab

__all__ = ["SOURCE", "FuseWidget"]

#: Notification source and dock title.
SOURCE = "Fuse raters"
_MAX_CLASSES = 255


def _reference_text(out: FusionOutput) -> str:
    """What the rater table is measured against, in words (one definition for every method)."""
    region = " inside the region" if out.result.roi is not None else ""
    if out.result.method == "staple":
        return f"STAPLE's estimates{region}"
    if out.multiclass and out.result.method == "average":
        return f"the class fractions of the raters{region}"
    return f"soft counts against the fused map{region}"


def _fmt(value: float, digits: int = 4) -> str:
    """A table cell: fixed decimals (no "1.500e-03")."""
    return f"{float(value):.{digits}f}"


def _empty_table(table: Table) -> None:
    table.value = {"data": [], "index": [], "columns": []}


class FuseWidget(Container):
    """"Fuse raters": raters, classes, method, background fusion, result layers, tables, save.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (or the Plugins menu's proxy of it).
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.last_output: FusionOutput | None = None
        self.worker: Any = None
        self.click_to_layers_s: float | None = None
        self._slots: dict[str, str] = {}  # output slot -> layer uid
        self._geometry: DisplayGeometry | None = None
        self._running: tuple[str, ...] = ()  # uids of the raters the worker fuses
        self._stopped_by: str | None = None  # a rater removed while its fusion ran ("" = unnamed)
        self._dataset_classes: tuple[str, ...] | None = None
        self._t_click = 0.0
        self._closed = False

        # ---- inputs
        self._classes = SpinBox(label="Classes", min=1, max=_MAX_CLASSES, value=1)
        self._classes.tooltip = (
            "1: one structure (rater maps: binary, confidence levels or soft).\n"
            "K >= 2: label maps with classes 1..K (0 = background), or layers painted with classes "
            "(set from the layers)."
        )
        self._raters = Select(label="Raters", choices=self._rater_choices, allow_multiple=True)
        self._raters.tooltip = "Ctrl/Shift-click two or more rater layers"
        self._raters.max_height = 110
        self._dataset = PushButton(text="From dataset.json…")
        self._dataset.tooltip = "Read the class names of label maps from a dataset's dataset.json"
        self._class_names = Label(value="")
        self._method = ComboBox(label="Method", choices=method_choices(multiclass=False), value="average")
        self._method.tooltip = "Fusion method (the one engine softseg fuse and training use)"
        self._run = PushButton(text="Fuse")
        self._progress = ProgressBar(min=0, max=100, value=0, visible=False)
        self._message = Label(value="Select two or more raters, then press Fuse")
        self._switch = PushButton(text="Use soft STAPLE instead", visible=False)

        # ---- options (folded)
        self._roi = ComboBox(label="Region", choices=list(ROI_MODES), value=ROI_AROUND)
        self._roi.tooltip = (
            "STAPLE's prior is global: the amount of background changes its result. "
            "'around the raters' union' estimates inside the union's box grown by the margin; "
            "'whole volume' uses every voxel (as SimpleITK)."
        )
        self._margin = SpinBox(label="Margin (voxels)", min=0, max=200, value=10)
        self._confidence = CheckBox(text="Painted confidence", value=True)
        self._confidence.tooltip = (
            "Classes painted with confidence levels: the class average uses each level's value.\n"
            "STAPLE and majority vote need one class per voxel: untick to fuse each voxel's "
            "painted class, whatever its confidence."
        )
        self._per_class = CheckBox(text="Disagreement per class", value=False)
        self._per_class.tooltip = "Classes: also one layer per class with the entropy of that class's votes"

        # ---- results
        self._caption = Label(value="")
        self._table = Table(value={"data": [], "index": [], "columns": []})
        self._table.min_height = 80
        self._table.max_height = 170
        self._confusion_rater = ComboBox(label="Confusion of", choices=[])
        self._confusion_rater.tooltip = "The rater whose confusion matrix is shown below"
        self._confusion_caption = Label(value="")
        self._confusion = Table(value={"data": [], "index": [], "columns": []})
        self._confusion.min_height = 80
        self._confusion.max_height = 170
        self._dice_caption = Label(value="")
        self._dice = Table(value={"data": [], "index": [], "columns": []})
        self._dice.min_height = 80
        self._dice.max_height = 170

        # ---- save
        self._save_path = FileEdit(label="File", mode="w", filter="NIfTI (*.nii.gz *.nii)")
        self._save = PushButton(text="Save fused map…", enabled=False)

        for label in (self._message, self._caption, self._confusion_caption, self._dice_caption, self._class_names):
            label.native.setWordWrap(True)
            # as wide as the dock, wrapping there (Qt's own hint would keep the lines ~250 px long)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.native.setMinimumWidth(60)
        self._build_layout()

        self._run.changed.connect(lambda: self.run())
        self._switch.changed.connect(self._switch_clicked)
        self._save.changed.connect(lambda: self._guard(self.save))
        self._dataset.changed.connect(lambda: self._guard(self._dataset_clicked))
        self._classes.changed.connect(self._on_classes)
        self._raters.changed.connect(self._on_raters)
        self._confusion_rater.changed.connect(self._show_confusion)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)
        # a fused Labels layer may be corrected with the brush: removing it in paint mode must not
        # crash napari (the shared guard, see widgets/_common.py)
        self._removal_guard = PaintModeRemovalGuard(self.viewer, self.native)
        self.native.destroyed.connect(lambda *_: self.close_widget())
        self._on_classes()

    def _build_layout(self) -> None:
        inputs = Container(widgets=[self._raters, self._classes], labels=True)
        method = Container(widgets=[self._method], labels=True)
        options = Container(widgets=[self._roi, self._margin, self._confidence, self._per_class], labels=True)
        confusion = Container(widgets=[self._confusion_rater], labels=True)
        save = Container(widgets=[self._save_path], labels=True)
        parts = (inputs, method, options, confusion, save)
        for part in parts:
            part.margins = (0, 0, 0, 0)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        for widget in (inputs.native, self._class_names.native, method.native, self._run.native,
                       self._progress.native, self._message.native, self._switch.native):
            layout.addWidget(widget)
        self._options_section = collapsible("Options: region, classes", options.native, self._dataset.native)
        layout.addWidget(self._options_section)
        for widget in (self._caption, self._table, confusion, self._confusion_caption, self._confusion,
                       self._dice_caption, self._dice):
            layout.addWidget(widget.native)
        self._save_section = collapsible("Save", save.native, self._save.native, expanded=True)
        layout.addWidget(self._save_section)
        layout.addStretch(1)
        for table in (self._table, self._confusion, self._dice, self._raters):
            # as narrow as the dock: a wide table scrolls inside itself
            table.native.setSizePolicy(QSizePolicy.Policy.Ignored, table.native.sizePolicy().verticalPolicy())
            table.native.setMinimumWidth(60)
        for table in (self._table, self._confusion, self._dice):
            # cells as written (fixed decimals), not magicgui's "1.260e-02" for values below 0.1
            table.native.setItemDelegate(QStyledItemDelegate(table.native))
        for combo in (self._method, self._roi, self._confusion_rater):
            combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(8)
        self._parts = parts  # keep the magicgui containers alive
        super().__init__(widgets=[], labels=False)
        dock_as_tab(self.native)  # joins the other SoftSeg docks as a tab
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(scroll_area(body))
        self._confusion_box = confusion
        for widget in (confusion, self._confusion, self._confusion_caption):
            widget.visible = False

    # ------------------------------------------------------------------ messages
    def _say(self, text: str, *, error: bool = False) -> None:
        """A line in the dock; errors also as a notification from "Fuse raters"."""
        try:
            self._message.value = text
            self._message.native.setStyleSheet("color: #ff8080;" if error else "")
        except RuntimeError:  # the dock was closed
            return
        if error:
            notify(text, severity="error", source=SOURCE)

    def _guard(self, func: Callable[[], Any]) -> Any:
        try:
            return func()
        except InputError as exc:
            self._say(str(exc), error=True)
            return None

    # ------------------------------------------------------------------ layers (by uid)
    @property
    def multiclass(self) -> bool:
        """True when the widget fuses label maps of K >= 2 classes."""
        return int(self._classes.value) >= 2

    def _rater_choices(self, _w: Any = None) -> list[tuple[str, str]]:
        multi = self.multiclass
        return [(lyr.name, layer_uid(lyr)) for lyr in self.viewer.layers if is_rater_candidate(lyr, multiclass=multi)]

    def offered_raters(self) -> list[str]:
        """Names of the layers offered in the *Raters* list."""
        return [name for name, _uid in self._rater_choices()]

    def selected_layers(self) -> list[Any]:
        """The chosen rater layers still in the viewer, in list order."""
        found = (find_layer(self.viewer.layers, uid) for uid in (self._raters.value or []))
        return [lyr for lyr in found if lyr is not None]

    def set_raters(self, layers: Sequence[Any]) -> None:
        """Select these layers in the *Raters* list."""
        self._raters.reset_choices()
        self._raters.value = [layer_uid(lyr) for lyr in layers]

    def output_layers(self) -> dict[str, Any]:
        """``{slot: layer}`` of the last fusion's layers still in the viewer."""
        found = {slot: find_layer(self.viewer.layers, uid) for slot, uid in self._slots.items()}
        return {slot: lyr for slot, lyr in found.items() if lyr is not None}

    @property
    def result_layers(self) -> dict[str, Any]:
        """Alias of :meth:`output_layers` (``"fused"``, ``"disagreement"``, ...)."""
        return self.output_layers()

    def _refresh_choices(self) -> None:
        if not self._closed:
            self._raters.reset_choices()

    def _on_inserted(self, event: Any = None) -> None:
        self._refresh_choices()

    def _on_removed(self, event: Any = None) -> None:
        """Forget a removed layer at once (before napari draws again)."""
        if self._closed:
            return
        removed = getattr(event, "value", None)
        if removed is not None:
            uid = layer_uid(removed)
            self._slots = {slot: u for slot, u in self._slots.items() if u != uid}
            if uid in self._running and self._stopped_by is None:
                self._stopped_by = removed.name
                if self.worker is not None:
                    self.worker.quit()  # stops at the engine's next step; its result is dropped
        self._refresh_choices()

    def close_widget(self) -> None:
        """Disconnect from the viewer (the dock was closed)."""
        if self._closed:
            return
        self._closed = True
        layers = self.viewer.layers
        for emitter, callback in ((layers.events.inserted, self._on_inserted), (layers.events.removed, self._on_removed)):
            try:
                emitter.disconnect(callback)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._removal_guard.close()
        if self.worker is not None:
            try:
                self.worker.quit()
            except RuntimeError:
                pass

    # ------------------------------------------------------------------ classes
    def _on_raters(self, _value: Any = None) -> None:
        """Classes follow the chosen layers: painted with classes or per-class layers of several
        classes set K; per-class layers of one class are one structure."""
        layers = self.selected_layers()
        names = layer_classes(layers)
        if names is not None and int(self._classes.value) != len(names):
            self._classes.value = len(names)
        elif names is None and len(layers) > 1 and len(class_tags(layers)) == 1:
            self._classes.value = 1
        self._show_class_names()

    def _on_classes(self, _value: Any = None) -> None:
        multi = self.multiclass
        current = self._method.value
        self._method.choices = method_choices(multiclass=multi)
        if current in self._method.choices:
            self._method.value = current
        self._confidence.visible = self._per_class.visible = multi
        self._refresh_choices()
        self._show_class_names()

    def class_names(self) -> tuple[str, ...] | None:
        """Class names 1..K of the fusion (None for one structure): painted with the layers, else
        from a dataset.json with K classes, else "class 1" ... "class K"."""
        k = int(self._classes.value)
        if k < 2:
            return None
        names = layer_classes(self.selected_layers())
        if names is not None and len(names) == k:
            return names
        if self._dataset_classes is not None and len(self._dataset_classes) == k:
            return self._dataset_classes
        return tuple(f"class {c}" for c in range(1, k + 1))

    def _show_class_names(self) -> None:
        names = self.class_names()
        text = "one structure against background" if names is None else "classes: " + ", ".join(
            f"{c} {n}" for c, n in enumerate(names, start=1))
        self._class_names.value = text

    def load_dataset_json(self, path: str | Path) -> tuple[str, ...]:
        """Take the class names (and K) from a dataset.json; returns them.

        Raises
        ------
        InputError
            The file cannot be read or lists no classes (one line naming the file and key).
        """
        from softseg.dataset_json import DatasetJson
        from softseg.schema import load_json, parse

        meta = parse(DatasetJson, load_json(path, what="dataset.json"), source=str(path))
        names = meta.class_names
        if not names:
            raise InputError(f"{path}: lists no classes; it needs \"classes\": [\"grey matter\", ...] or nnU-Net \"labels\"")
        self._dataset_classes = tuple(names)
        self._classes.value = len(names)
        self._show_class_names()
        return self._dataset_classes

    def _dataset_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        start = next((str(Path(s).parent) for s in self._sources() if s), "")
        path, _ = QFileDialog.getOpenFileName(self.native, "Class names from dataset.json", start,
                                              "dataset description (*.json)")
        if path:
            names = self.load_dataset_json(path)
            self._say(f"{len(names)} classes from {Path(path).name}: {', '.join(names)}")

    def _sources(self) -> list[str]:
        return [lyr.metadata.get("source_path") or "" for lyr in self.selected_layers()]

    # ------------------------------------------------------------------ method
    @property
    def method(self) -> str:
        return str(self._method.value)

    @method.setter
    def method(self, value: str) -> None:
        if value not in METHODS:
            raise InputError(f"unknown fusion method {value!r}; choose one of {list(METHODS)}")
        if value not in self._method.choices:
            raise InputError(f"{value} fuses one structure; for classes choose one of {list(self._method.choices)}")
        self._method.value = value

    def _switch_clicked(self) -> None:
        self._switch.visible = False
        if self.multiclass:
            self._confidence.value = False
            self._say("each voxel's painted class will be fused (confidence ignored); press Fuse")
        else:
            self._method.value = "soft STAPLE"
            self._say("switched to soft STAPLE; press Fuse")

    # ------------------------------------------------------------------ run
    def run(self, layers: Sequence[Any] | None = None) -> Any:
        """Start the fusion in a background worker; returns the worker (None on bad input or
        while a fusion runs). The result layers and tables appear when it returns."""
        if self.busy:
            self._say("a fusion is running; wait for it to finish")
            return None
        self._t_click = time.perf_counter()
        self._switch.visible = False
        layers = list(layers) if layers is not None else self.selected_layers()
        k = int(self._classes.value) if self.multiclass else None
        try:
            raters = collect_raters(layers, n_classes=k)
            geometry = geometry_of(layers[0])
        except InputError as exc:
            self._say(str(exc), error=True)
            return None
        method, classes = self.method, self.class_names()
        roi_mode, margin, confidence = str(self._roi.value), int(self._margin.value), bool(self._confidence.value)
        self._geometry = geometry
        self._running = tuple(u for r in raters for u in r.uids)
        self._stopped_by = None
        self._say(f"fusing {len(raters)} raters with {method} …")
        self._progress.visible = True
        self._progress.value = 0
        self._run.enabled = False

        @thread_worker(ignore_errors=True)  # errors: _on_error, inline and as a notification
        def work():
            return (yield from iter_fusion(raters, method=method, roi_mode=roi_mode, margin=margin, n_classes=k,
                                           classes=classes, use_confidence=confidence))

        worker = work()
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    @property
    def busy(self) -> bool:
        """True while a fusion runs (from the click until its layers are shown)."""
        return not self._run.enabled

    def _on_finished(self) -> None:
        self._running = ()
        if self._closed:
            return
        self._run.enabled = True
        self._progress.visible = False
        if self._stopped_by is not None:
            who = f"rater layer {self._stopped_by!r}" if self._stopped_by else "a rater layer"
            self._say(f"fusion stopped: {who} was removed while it ran; nothing shown")

    def _on_progress(self, item: tuple[float, str]) -> None:
        if self._closed:
            return
        frac, text = item
        self._progress.value = int(round(100 * frac))
        self._message.value = text

    def _on_error(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._progress.visible = False
        if isinstance(exc, SoftRatersError) and (self.method == "STAPLE" or self.multiclass):
            self._switch.text = "Fuse the painted classes instead" if self.multiclass else "Use soft STAPLE instead"
            self._switch.visible = True
        if isinstance(exc, InputError):
            self._say(str(exc), error=True)
        else:
            self._say(f"fusion failed: {type(exc).__name__}: {exc}", error=True)

    def _on_result(self, out: FusionOutput) -> None:
        if self._closed:
            return
        present = {layer_uid(lyr) for lyr in self.viewer.layers}
        if self._stopped_by is not None or not present.issuperset(out.uids):  # a rater went away
            self._stopped_by = self._stopped_by or ""
            return
        self.last_output = out
        specs = output_layers(out, per_class_disagreement=bool(self._per_class.value), provenance=provenance(out))
        self._slots = show_outputs(self.viewer, specs, self._geometry, self._slots)
        self._fill_tables(out)
        self._progress.value = 100
        self._save.enabled = True
        current = self._save_path.value
        if is_suggested_name(current):
            path = suggested_path(out, current)
            if path is not None:
                self._save_path.value = path
        self.click_to_layers_s = time.perf_counter() - self._t_click
        self._say(f"{out.method} of {len(out.names)} raters in {self.click_to_layers_s:.2f} s")

    # ------------------------------------------------------------------ tables
    def _fill_tables(self, out: FusionOutput) -> None:
        names = list(out.names)
        region = "" if out.roi_mode == ROI_WHOLE else f", {out.extra.get('roi_voxels', 0)} voxels"
        multi = out.multiclass
        if multi:
            labels = list(out.class_labels)
            diag = [[_fmt(v) for v in np.diag(m)] for m in out.result.confusion]
            self._table.value = {"data": diag, "index": names, "columns": labels}
            self._caption.value = (
                f"Each rater's agreement per true class (diagonal of the confusion matrix; against "
                f"{_reference_text(out)}{region}):"
            )
            self._confusion_rater.choices = names
            self._confusion_rater.value = names[0]
            self._show_confusion()
        else:
            rows = [[_fmt(s), _fmt(q)] for s, q in zip(out.sensitivity, out.specificity)]
            self._table.value = {"data": rows, "index": names, "columns": ["sensitivity", "specificity"]}
            self._caption.value = f"Each rater's sensitivity / specificity ({_reference_text(out)}{region}):"
        for widget in (self._confusion_box, self._confusion, self._confusion_caption):
            widget.visible = multi
        dice = [[_fmt(d, 3) for d in row] for row in out.pairwise_dice]
        self._dice.value = {"data": dice, "index": names, "columns": names}
        what = "mean over the classes" if multi else "1 = identical"
        self._dice_caption.value = f"Pairwise Dice between raters ({what}):"
        for table in (self._table, self._dice, self._confusion):
            table.native.resizeColumnsToContents()

    def _show_confusion(self, _value: Any = None) -> None:
        out = self.last_output
        if out is None or not out.multiclass or self._confusion_rater.value not in out.names:
            _empty_table(self._confusion)
            return
        j = list(out.names).index(self._confusion_rater.value)
        labels = list(out.class_labels)
        matrix = [[_fmt(v) for v in row] for row in out.result.confusion[j]]
        self._confusion.value = {"data": matrix, "index": [f"true {n}" for n in labels], "columns": labels}
        self._confusion.native.resizeColumnsToContents()
        self._confusion_caption.value = (
            "Rows: true class (the fusion's estimate); columns: the class the rater painted; each row sums to 1."
        )

    def table_rows(self) -> dict[str, list]:
        """The rater table as shown: ``{rater: [sensitivity, specificity]}``, or per class
        (background first) for a multi-class fusion."""
        return {k: [float(v) for v in row] for k, row in zip(self._table.row_headers, self._table.data.to_list())}

    def dice_matrix(self) -> np.ndarray:
        """The pairwise Dice table as shown (3 decimals)."""
        return np.array(self._dice.data.to_list(), dtype=np.float64)

    def confusion_matrix(self, rater: str) -> np.ndarray:
        """The confusion matrix shown for ``rater`` (4 decimals; rows = true class)."""
        self._confusion_rater.value = rater
        return np.array(self._confusion.data.to_list(), dtype=np.float64)

    # ------------------------------------------------------------------ save
    def save(self, path: str | Path | None = None) -> list[Path] | None:
        """Write the last fusion (see :mod:`napari_softseg.widgets.fuse._save`).

        Asks before replacing any existing file; returns the files written, or None when the
        user kept the existing files.

        Raises
        ------
        InputError
            Nothing fused yet, no file name, not a NIfTI name.
        """
        from softseg.io import is_nifti_path

        out = self.last_output
        if out is None or self._geometry is None:
            raise InputError("nothing to save yet: press Fuse first")
        path = path if path is not None else self._save_path.value
        if path is None or str(path) in ("", "."):
            raise InputError("choose a file name (.nii.gz) to save the fused map")
        path = Path(path)
        if not is_nifti_path(path):
            raise InputError(f"{path.name}: a fused map is saved as NIfTI; end the file name in .nii.gz or .nii")
        if not confirm_overwrite(output_files(path, out), parent=self.native):
            self._say("kept the existing files; nothing was written")
            return None
        written = write_fusion(path, out, self._geometry, software=f"napari-softseg {__version__}", overwrite=True)
        names = ", ".join(p.name for p in written)
        self._say(f"saved {names} in {path.parent}")
        notify(f"saved the fused map ({out.method}) as {path.name}", source=SOURCE)
        return written
