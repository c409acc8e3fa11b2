"""The Train dock widget (see the package docstring)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
)
from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout

from napari_softseg._metadata import find_layer
from napari_softseg._supervisor import (
    DEFAULT_STOP_TIMEOUT_S,
    Outcome,
    Prestarter,
    TrainingProcess,
    device_probe,
)
from napari_softseg.widgets._common import ask, collapsible, confirm_overwrite, notify, scroll_area
from napari_softseg.widgets._dock_parts import (
    button_row,
    device_choices,
    dock_body,
    labelled,
    show_devices,
)
from napari_softseg.widgets._gl_context import Connections, install_removal_guard
from napari_softseg.widgets.train._close_guard import CloseGuard
from napari_softseg.widgets.train._ensemble import (
    ENSEMBLE_TEXT,
    FINETUNE_REFUSAL,
    EnsembleRun,
    ensemble_run,
    run_ensemble,
)
from napari_softseg.widgets.train._finetune import check_parent, finetune_config, parent_file
from napari_softseg.widgets.train._history import checkpoint_of, history_csv_of, read_history
from napari_softseg.widgets.train._inputs import image_choices, snapshot, target_choices
from napari_softseg.widgets.train._report import data_note, validation_note
from napari_softseg.widgets.train._run import (
    TrainRun,
    run_training,
    training_config_file,
    training_data_folder,
)
from napari_softseg.widgets.train._wording import gui_message
from napari_softseg.widgets._docking import dock_as_tab
from softseg import events as ev
from softseg.config import PRESETS, TrainConfig, merge
from softseg.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SOURCE", "TrainWidget", "default_preset"]

#: Notification source (the dock's name in the Plugins menu).
SOURCE = "Train"
_SOURCE_LAYERS = "Open layers"
_SOURCE_FOLDER = "Dataset folder"
_UI_INTERVAL_MS = 200
#: Delay before the waiting training interpreter is started, once targets or a dataset folder
#: are chosen (a run is coming) and after each run (the dock has drawn by then).
PRESTART_DELAY_MS = 1500
_WARN_STYLE = "color: #f4b63f;"
_ERROR_STYLE = "color: #ff8080;"


def default_preset(devices: list[str] | None) -> str:
    """The preset a dock starts with on a machine with ``devices`` (best first): the paper's
    recipe where a CUDA GPU is available, the short CPU run otherwise (also while unknown)."""
    return "paper" if devices and any(d.startswith("cuda") for d in devices) else "quick"


def _preset_label(name: str) -> str:
    cfg = PRESETS[name]
    o, m = cfg.optim, cfg.model
    what = {"quick": "short run for a CPU", "paper": "the SoftSeg paper's recipe (GPU)"}.get(name, name)
    return f"{name}: {what} · {o.epochs} epochs, width {m.width}"


def _finite(x: Any) -> bool:
    import math

    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt_eta(seconds: float | None) -> str:
    return f"ETA {ev.format_seconds(seconds)}" if _finite(seconds) else "ETA …"


class TrainWidget(Container):
    """Dock widget "Train" (see the package docstring).

    Signals
    -------
    finished(Outcome or None)
        Emitted in the main thread when a run ended (completed, cancelled, failed).
    """

    finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from softseg.candidates import CANDIDATES, FUSION_DESCRIPTIONS, FUSIONS

        self._viewer = viewer
        self._probe = device_probe()
        self._preset_auto = True  # the preset follows the device until the user picks one
        self._setting_preset = False

        # ---- data
        self.source = RadioButtons(choices=[_SOURCE_LAYERS, _SOURCE_FOLDER], value=_SOURCE_LAYERS,
                                   orientation="horizontal", label="Data")
        self.images = Select(choices=self._image_choices, label="Image channels",
                             tooltip="One or more image layers of the same volume (input "
                             "contrasts), in channel order")
        self.targets = Select(choices=self._target_choices, label="Target",
                              tooltip="Rater label layers (fused per the fusion choice), or one "
                              "fused layer or soft label")
        for select in (self.images, self.targets):
            select.native.setMaximumHeight(64)
        self.dataset = FileEdit(mode="d", label="Dataset folder", visible=False,
                                tooltip="DATASET/<subject>/image*.nii.gz + rater-<id>.nii.gz")
        # ---- recipe
        self.preset = ComboBox(choices=[(_preset_label(n), n) for n in PRESETS],
                               value=default_preset(self._probe.devices), label="Preset",
                               tooltip="Starting values of every setting (softseg.config.PRESETS); "
                               "the settings below can then be changed")
        self.candidate = ComboBox(
            choices=[(f"{c.title} ({name})", name) for name, c in CANDIDATES.items()],
            value="softseg" if "softseg" in CANDIDATES else next(iter(CANDIDATES)),
            label="Candidate",
        )
        self.candidate_info = Label(label="")
        self.fusion = ComboBox(choices=list(FUSIONS), label="Fusion",
                               tooltip="\n".join(f"{k}: {FUSION_DESCRIPTIONS[k]}" for k in FUSIONS))
        self.ensemble = CheckBox(
            value=False, text=ENSEMBLE_TEXT,
            tooltip="Train one model per chosen rater, one after another, each on that rater's "
                    "labels alone (no fusion); their predictions are averaged (the label-fusion "
                    "paper's ensemble baseline). Files: <model file>-rater-<id>.safetensors")
        self.output = FileEdit(mode="w", filter="*.safetensors", label="Model file",
                               value=str(Path.home() / "softseg-model.safetensors"))
        # ---- advanced settings (folded)
        self.epochs = SpinBox(min=1, max=100_000, label="Epochs")
        self.patience = SpinBox(min=1, max=100_000, label="Patience",
                                tooltip="early stopping: epochs without improvement")
        self.batch_size = SpinBox(min=1, max=4096, label="Batch size")
        self.lr = FloatSpinBox(min=1e-6, max=10.0, step=1e-4, label="Learning rate")
        self.lr.native.setDecimals(6)
        self.crop = SpinBox(min=8, max=4096, step=16, label="Crop",
                            tooltip="training slices are centre-cropped/padded to this size")
        self.oversampling = FloatSpinBox(
            min=0.0, max=1.0, step=0.05, label="Foreground oversampling",
            tooltip="share of training samples drawn from slices that hold the structure "
                    "(nnU-Net: 0.33; 0 = every slice once per epoch). Raise it for small lesions, "
                    "which leave most slices empty")
        self.depth = SpinBox(min=1, max=6, label="U-Net depth")
        self.unet_width = SpinBox(min=1, max=512, label="U-Net width", tooltip="filters of the first level")
        self.val_fraction = FloatSpinBox(min=0.0, max=0.95, step=0.05, label="Validation fraction",
                                         tooltip="share of subjects (slabs of an open volume) "
                                         "kept for validation")
        self.test_fraction = FloatSpinBox(min=0.0, max=0.95, step=0.05, label="Test fraction",
                                          tooltip="share of subjects held out for testing")
        self.device = ComboBox(choices=device_choices(self._probe.devices), value="auto", label="Device")
        self.resume = CheckBox(value=False, text="Resume from this model file's checkpoint")
        # ---- run
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="Progress")
        self.status = Label(value="idle", label="Status")
        self.best = Label(value="–", label="Best")
        self.note = Label(value="", label="")
        # Always laid out, enabled once a model is written (a moved canvas is a slow redraw).
        self.predict_button = PushButton(text="Predict on the training image", enabled=False,
                                         tooltip="available when a training run has written "
                                         "its model file")
        # ---- history, fine-tuning
        self.history_file = FileEdit(mode="r", filter="*.safetensors *.history.csv",
                                     label="History of")
        self.history_button = PushButton(text="Open history")
        self.parent_model = FileEdit(mode="r", filter="*.safetensors", label="Start from")
        self.finetune_button = PushButton(text="Fine-tune on the corrected raters",
                                          tooltip="Train the chosen model further on the Target "
                                          "layers above (same candidate and preprocessing); "
                                          "the Model file above receives the result")
        for label in (self.status, self.best, self.note, self.candidate_info):
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.native.setMinimumWidth(60)
        self._build_layout()

        self.source.changed.connect(self._on_source)
        self.preset.changed.connect(self._on_preset)
        self.candidate.changed.connect(self._on_candidate)
        self.ensemble.changed.connect(self._on_ensemble)
        self.train_button.changed.connect(lambda: self.start())
        self.cancel_button.changed.connect(lambda: self.cancel())
        self.predict_button.changed.connect(lambda: self.predict_current())
        self.history_button.changed.connect(lambda: self.open_history())
        self.finetune_button.changed.connect(lambda: self.start(finetune=True))
        self._apply_preset(self.preset.value)
        self._on_candidate()

        self.process: TrainingProcess | None = None
        self.worker: Any = None
        self.outcome: Outcome | None = None
        self.model_path: Path | None = None
        self.curves: Any = None
        self.last_run: TrainRun | None = None
        #: The rater ensemble of the last run (None: one model), its member being trained
        #: ``(k, R, rater)`` and the member model files finished or kept so far.
        self.last_ensemble: EnsembleRun | None = None
        self.member: tuple[int, int, str] | None = None
        self.member_paths: list[Path] = []
        self.predict_worker: Any = None
        #: perf_counter times of the last run: click, data written, process started, first
        #: event, first step, first shown (what benchmarks/train_start.py reports).
        self.timings: dict[str, float] = {}
        self._phase = ""
        self._pbar: Any = None
        self._pending: dict[str, Any] = {}
        self._close_guard: CloseGuard | None = None
        self._prestarter = Prestarter()
        self._ui_timer = QTimer(self.native)  # dies with the widget
        self._ui_timer.setInterval(_UI_INTERVAL_MS)
        self._ui_timer.timeout.connect(self._tick)
        self._ui_timer.start()
        for choice in (self.targets, self.dataset):  # a run is coming: prepare its interpreter
            choice.changed.connect(self._prestart_soon)
        # Stop the children when this widget goes away. The closure holds the holder, not the
        # (deleted) widget. Closing the viewer deletes its docks, so this covers both.
        holder = self._holder = {"process": None, "closed": False, "prestarter": self._prestarter}
        self.native.destroyed.connect(lambda *_: _stop_holder(holder))
        # layer events, undone when the dock's Qt object goes; the shared removal guard makes
        # napari's canvas context current before a removal (widgets/_gl_context.py)
        self._events = Connections(self.native)
        self._events.connect(viewer.layers.events.inserted, self._on_layers_changed)
        self._events.connect(viewer.layers.events.removed, self._on_layers_changed)
        self._guard = install_removal_guard(viewer, self.native)
        from napari_softseg.widgets.train._curves import prewarm

        QTimer.singleShot(PRESTART_DELAY_MS // 2, prewarm)  # after the dock has drawn

    # ---------------------------------------------------------------- layout
    def _build_layout(self) -> None:
        data = labelled(self.source, self.images, self.targets, self.dataset)
        recipe = labelled(self.preset, self.candidate, self.candidate_info, self.fusion,
                          self.ensemble, self.output)
        advanced = labelled(self.epochs, self.patience, self.batch_size, self.lr, self.crop,
                            self.oversampling, self.depth, self.unet_width, self.val_fraction, self.test_fraction,
                            self.device, self.resume)
        state = labelled(self.progress, self.status, self.best, self.note)
        history = labelled(self.history_file)
        finetune = labelled(self.parent_model)
        buttons = button_row(self.train_button, self.cancel_button)
        body, layout = dock_body()
        for w in (data.native, recipe.native):
            layout.addWidget(w)
        self.advanced_section = collapsible("Settings: epochs, network, split, device",
                                            advanced.native)
        layout.addWidget(self.advanced_section)
        layout.addWidget(buttons)
        layout.addWidget(state.native)
        self._curves_layout = QVBoxLayout()
        self._curves_layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._curves_layout)
        layout.addWidget(self.predict_button.native)
        self.history_section = collapsible("Training history", history.native,
                                           self.history_button.native)
        self.finetune_section = collapsible("Fine-tune a model (model in the loop)",
                                            finetune.native, self.finetune_button.native)
        layout.addWidget(self.history_section)
        layout.addWidget(self.finetune_section)
        layout.addStretch(1)
        self._parts = (data, recipe, advanced, state, history, finetune)  # keep them alive
        super().__init__(widgets=[], labels=False)
        dock_as_tab(self.native)  # joins the other SoftSeg docks as a tab
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(scroll_area(body))

    # ---------------------------------------------------------------- messages
    def _say(self, text: str, *, error: bool = False, note: bool = False) -> None:
        """A status line in the dock (errors also as a notification from "Train")."""
        try:
            self.status.value = text
            self.status.native.setStyleSheet(_ERROR_STYLE if error else "")
        except RuntimeError:  # the dock was closed
            return
        if error:
            notify(text, severity="error", source=SOURCE)
        elif note:
            notify(text, severity="info", source=SOURCE)

    # ---------------------------------------------------------------- choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        return image_choices(self._viewer.layers)

    def _target_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        return target_choices(self._viewer.layers)

    def offered_images(self) -> list[str]:
        """Names of the layers offered as image channels."""
        return [name for name, _ in self._image_choices()]

    def offered_targets(self) -> list[str]:
        """Names of the layers offered as targets."""
        return [name for name, _ in self._target_choices()]

    def set_layers(self, images: list[Any], targets: list[Any]) -> None:
        """Choose these layers as image channels and targets (scripts, tests)."""
        from napari_softseg._metadata import layer_uid

        self.images.reset_choices()
        self.targets.reset_choices()
        self.images.value = [layer_uid(lyr) for lyr in images]
        self.targets.value = [layer_uid(lyr) for lyr in targets]

    def _on_layers_changed(self, _event: Any = None) -> None:
        """Offer the current layers; a removed one is forgotten at once (before napari draws)."""
        if self.closed:
            return
        self.images.reset_choices()
        self.targets.reset_choices()

    # ---------------------------------------------------------------- presets and candidates
    def _on_source(self, *_: Any) -> None:
        from_layers = self.source.value == _SOURCE_LAYERS
        self.images.visible = from_layers
        self.targets.visible = from_layers
        self.dataset.visible = not from_layers

    def _on_preset(self, *_: Any) -> None:
        if not self._setting_preset:
            self._preset_auto = False
        self._apply_preset(self.preset.value)

    def _apply_preset(self, name: str) -> None:
        """Show preset ``name``'s values in every setting."""
        cfg = PRESETS[name]
        self.candidate.value = cfg.candidate
        self.fusion.value = cfg.data.fusion
        self.epochs.value = cfg.optim.epochs
        self.patience.value = cfg.optim.patience
        self.batch_size.value = cfg.optim.batch_size
        self.lr.value = cfg.optim.lr
        self.crop.value = cfg.data.crop[0]
        self.oversampling.value = cfg.data.foreground_oversampling
        self.depth.value = cfg.model.depth
        self.unet_width.value = cfg.model.width
        self.val_fraction.value = cfg.data.val_fraction
        self.test_fraction.value = cfg.data.test_fraction
        self.device.value = cfg.device if cfg.device in self.device.choices else "auto"

    def _on_candidate(self, *_: Any) -> None:
        from softseg.candidates import CANDIDATES

        cand = CANDIDATES[self.candidate.value]
        self.candidate_info.value = cand.description
        self.candidate_info.tooltip = (
            f"ground truth: {'soft' if cand.soft_gt else 'binarised at 0.5'}; activation: "
            f"{cand.activation}; loss: {cand.loss}"
        )

    def _on_ensemble(self, *_: Any) -> None:
        # each member trains on one rater: no fusion to choose
        self.fusion.enabled = not self.ensemble.value

    def _on_devices(self) -> None:
        """The device probe answered: offer the devices, and the preset that fits them."""
        show_devices(self.device, self._probe.devices)
        if self._preset_auto and not self.running:
            wanted = default_preset(self._probe.devices)
            if wanted != self.preset.value:
                self._setting_preset = True
                try:
                    self.preset.value = wanted
                finally:
                    self._setting_preset = False

    # ---------------------------------------------------------------- parameters
    def _optim_overrides(self) -> dict[str, Any]:
        """Device, split and optimiser settings of the dock (also what fine-tuning changes)."""
        return {
            "device": str(self.device.value),
            "data": {"val_fraction": round(float(self.val_fraction.value), 6),
                     "test_fraction": round(float(self.test_fraction.value), 6)},
            "optim": {"epochs": int(self.epochs.value), "patience": int(self.patience.value),
                      "batch_size": int(self.batch_size.value), "lr": float(self.lr.value)},
        }

    def config(self) -> TrainConfig:
        """The engine configuration of the dock's values (validated by its schema): the preset
        with every setting shown in the dock."""
        over = merge(self._optim_overrides(), {
            "candidate": str(self.candidate.value),
            "data": {"fusion": str(self.fusion.value), "crop": [int(self.crop.value)] * 2,
                     "foreground_oversampling": round(float(self.oversampling.value), 6)},
            "model": {"depth": int(self.depth.value), "width": int(self.unet_width.value)},
        })
        return PRESETS[self.preset.value].updated(over, source="training settings")

    def _model_file(self) -> Path:
        text = str(self.output.value or "").strip()
        out = Path(text).expanduser()
        if not text or text == "." or out.is_dir():
            raise InputError("choose a model file to write (…/model.safetensors) under 'Model file'")
        if out.suffix != ".safetensors":
            out = out.with_name(out.name + ".safetensors")
        return out.resolve()

    def _written_files(self, out: Path, *, from_layers: bool) -> list[Path]:
        files = [out, history_csv_of(out), checkpoint_of(out), training_config_file(out)]
        return files + ([training_data_folder(out)] if from_layers else [])

    def run_request(self, *, finetune: bool = False) -> TrainRun | EnsembleRun | None:
        """The run to start (main thread): settings, model file, data snapshot; with *One model
        per rater*, the members (:func:`~._ensemble.ensemble_run`). ``None`` when the user kept
        existing files. Raises InputError for bad choices."""
        ensemble = bool(self.ensemble.value)
        if ensemble and finetune:
            raise InputError(FINETUNE_REFUSAL)
        out = self._model_file()
        resume = bool(self.resume.value) and not finetune
        from_layers = self.source.value == _SOURCE_LAYERS
        init = parent_file(self.parent_model.value) if finetune else None
        if init is not None and init == out:
            raise InputError(f"choose another 'Model file' than the model being fine-tuned ({out.name})")
        config = (finetune_config(init, self._optim_overrides()) if init is not None
                  else self.config())
        overwrite = False
        if not resume and not ensemble:  # an ensemble asks about its members' files below
            files = self._written_files(out, from_layers=from_layers)
            if not confirm_overwrite(files, parent=self.native, title="Replace the model file?"):
                return None
            overwrite = any(p.exists() for p in files)
        layers = folder = None
        if from_layers:
            layers = snapshot(self._viewer.layers, list(self.images.value or []),
                              list(self.targets.value or []), candidate=config.candidate)
        else:
            text = str(self.dataset.value or "").strip()
            folder = Path(text).expanduser()
            if not text or text == "." or not folder.is_dir():
                raise InputError("choose the dataset folder (DATASET/<subject>/image.nii.gz …)")
        allow = False
        if layers is not None and layers.preannotated:
            answer = ask(self.native, "Train on pre-annotations?",
                         f"{', '.join(layers.preannotated)}: made by a model and not corrected by "
                         "a rater.", ["Cancel", "Train on them"],
                         informative="A model's own output teaches it nothing new; correct the "
                         "layer first, or train on it as it is.", default="Cancel")
            if answer != "Train on them":
                return None
            allow = True
        if init is not None and layers is not None:
            check_parent(init, channels=len(layers.channels),
                         classes=getattr(layers, "classes", None))
        run = TrainRun(config=config, out=out, resume=resume, overwrite=overwrite, init=init,
                       allow_preannotated=allow, layers=layers, folder=folder)
        return self._ensemble_request(run) if ensemble else run

    def _ensemble_request(self, base: TrainRun) -> EnsembleRun | None:
        """The members of ``base``, after asking before replacing any member's files."""
        from dataclasses import replace

        ens = ensemble_run(base)
        fresh = {i for i, (m, kept) in enumerate(zip(ens.members, ens.kept))
                 if not kept and not m.resume}
        files = [f for i in sorted(fresh)
                 for f in self._written_files(ens.members[i].out, from_layers=True)]
        if not confirm_overwrite(files, parent=self.native, title="Replace the members' model files?"):
            return None
        if any(p.exists() for p in files):
            ens = replace(ens, members=tuple(replace(m, overwrite=True) if i in fresh else m
                                             for i, m in enumerate(ens.members)))
        return ens

    @property
    def running(self) -> bool:
        return self.worker is not None

    # ---------------------------------------------------------------- run
    def start(self, *, finetune: bool = False) -> None:
        """Validate, snapshot the layers and start the supervised child (main thread)."""
        if self.running or self.closed:
            return
        self.timings = {"click": time.perf_counter()}
        try:
            run = self.run_request(finetune=finetune)
        except (InputError, OSError) as exc:
            self._say(f"not started: {gui_message(str(exc))}", error=True)
            return
        if run is None:
            self._say("not started: the existing model file was kept")
            return
        from napari.qt.threading import GeneratorWorker
        from napari.utils import progress

        ens = run if isinstance(run, EnsembleRun) else None
        run = ens.members[0] if ens is not None else run
        self.last_ensemble = ens
        self.member = None
        self.member_paths = []
        self.last_run = run
        self.outcome = None
        self.model_path = None
        self.process = None
        self.predict_button.enabled = False
        self.best.value = "–"
        self.note.value = ""
        self.note.native.setStyleSheet("")
        self._pending = {}
        self.progress.max = 1
        self.progress.value = 0
        self._phase = "writing the training data" if run.layers is not None else "preparing"
        self._say(f"{self._phase}…")
        # Not napari's thread_worker: it would register the run with napari's own close dialog,
        # which names the function; CloseGuard asks in words instead.
        if ens is None:
            worker = GeneratorWorker(run_training, run, prestarter=self._prestarter)
        else:  # the members one after another; Cancel between two members ends the sequence
            holder = self._holder
            worker = GeneratorWorker(run_ensemble, ens, prestarter=self._prestarter,
                                     stop=lambda: bool(holder.get("cancelled")))
        worker.yielded.connect(self._on_item)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.train_button.enabled = False
        self.finetune_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()
        what = run.config.candidate + (" · rater ensemble" if ens is not None else "")
        self._pbar = progress(total=0, desc=f"Training {what}")
        self._ensure_curves().clear()
        window = self.native.window()
        if window is not self.native and self._close_guard is None:
            self._close_guard = CloseGuard(self, window)

    def _ensure_curves(self) -> Any:
        if self.curves is None:
            from napari_softseg.widgets.train._curves import TrainingCurves

            self.curves = TrainingCurves(self._viewer)
            self._curves_layout.addWidget(self.curves.canvas)
        return self.curves

    def cancel(self) -> None:
        """Ask the child to stop at its next step and save; kill it after the timeout."""
        if self.last_ensemble is not None and self.worker is not None:
            self._holder["cancelled"] = True  # no further member starts
        if self.process is not None and self.process.running:
            self._say("stopping: saving a checkpoint…")
            self.cancel_button.enabled = False
            self.process.stop(timeout=DEFAULT_STOP_TIMEOUT_S)
        elif self.worker is not None:  # still writing the data: the child is stopped on arrival
            self._holder["cancelled"] = True
            self.cancel_button.enabled = False
            self._say("stopping…")

    # ---------------------------------------------------------------- handlers (main thread)
    @property
    def closed(self) -> bool:
        """The dock (or the viewer) was closed; the child has been asked to stop."""
        return bool(self._holder["closed"]) or not self._events.alive["alive"]

    def _on_item(self, item: Any) -> None:
        now = time.perf_counter()
        if isinstance(item, TrainingProcess):
            self.process = item
            self._holder["process"] = item
            if self.closed or self._holder.get("cancelled"):
                item.stop(timeout=10.0)
                return
            self.timings["process_started"] = now
            self._phase = self._member_prefix() + (
                "loading the data and building the network (torch is loaded)" if item.prestarted
                else "starting Python and loading torch, then the data and the network")
            if self.member is not None:  # later members: no waiting line after the first step
                self._pending["status"] = f"{self._phase}…"
            return
        if isinstance(item, tuple) and item and item[0] == "stage":
            if item[1] == "data written":
                self.timings.setdefault("data_written", item[2])
                self._phase = self._member_prefix() + "starting the training process"
                if self.member is not None:
                    self._pending["status"] = f"{self._phase}…"
            return
        if isinstance(item, tuple) and item and item[0] in ("member", "member done"):
            self._on_member(item)
            return
        if self.closed:
            return
        event = item
        self.timings.setdefault("first_event", now)
        if self.curves is not None:
            self.curves.add(event)
        # Only remember what to show: _apply_pending puts it on screen at most every
        # _UI_INTERVAL_MS (several events arrive together at the end of an epoch).
        pending = self._pending
        if isinstance(event, ev.StepEvent):
            self.timings.setdefault("first_step", now)
            total = max(event.epochs * event.steps, 1)
            done = (event.epoch - 1) * event.steps + event.step
            pending["progress"] = (min(done, total), total)
            pending["pbar_desc"] = f"Training epoch {event.epoch}/{event.epochs} · {_fmt_eta(event.eta_s)}"
            pending["status"] = (f"epoch {event.epoch}/{event.epochs}, step {event.step}/"
                                 f"{event.steps}, loss {event.loss:.4f} · {_fmt_eta(event.eta_s)}")
        elif isinstance(event, ev.EpochEvent):
            val = f", validation loss {event.val_loss:.4f}" if _finite(event.val_loss) else ""
            pending["status"] = (f"epoch {event.epoch}/{event.epochs} done: loss {event.loss:.4f}"
                                 f"{val} · {_fmt_eta(event.eta_s)}")
        elif isinstance(event, ev.BestEvent):
            dice = f", Dice {event.val_dice:.3f}" if _finite(event.val_dice) else ""
            pending["best"] = f"epoch {event.epoch}: validation loss {event.val_loss:.4f}{dice}"
        elif isinstance(event, ev.CheckpointEvent) and event.reason == "cancel":
            pending["status"] = f"checkpoint saved at epoch {event.epoch}"
        elif isinstance(event, ev.ErrorEvent):
            pending["status"] = f"error: {gui_message(event.message)}"
        elif type(event).__name__ == "StageEvent":  # the trainer's own stages, when it sends them
            self._phase = str(getattr(event, "message", "") or self._phase)
            pending["status"] = f"{self._phase}…"

    def _tick(self) -> None:
        """UI timer: pending progress, the device probe's answer, the waiting line."""
        if self.closed:
            return
        if self._probe.done and not getattr(self, "_devices_shown", False):
            self._devices_shown = True
            self._on_devices()
        if self.running and "first_step" not in self.timings and not self._pending \
                and "click" in self.timings and self.outcome is None:
            waited = time.perf_counter() - self.timings["click"]
            self.status.value = f"{self._phase}… {waited:.0f} s"
        self._apply_pending()

    def _apply_pending(self) -> None:
        """Show the latest progress, status and best metric (main thread, timer)."""
        pending, self._pending = self._pending, {}
        if not pending or self.closed:
            return
        self.timings.setdefault("first_shown", time.perf_counter())
        if "status" in pending:
            text = pending["status"]
            self._say(text if text.startswith("rater ") else self._member_prefix() + text)
        if "best" in pending:
            self.best.value = self._member_prefix() + pending["best"]
        if "progress" in pending:
            done, total = pending["progress"]
            if self.progress.max != total:
                self.progress.max = total
            self.progress.value = done
            # Last: napari's activity dock may process events (re-entrantly) while updating.
            if self._pbar is not None:
                if self._pbar.total != total:
                    self._pbar.total = total
                self._pbar.update(done - self._pbar.n)
                self._pbar.set_description(self._member_prefix() + pending["pbar_desc"])

    # ---------------------------------------------------------------- rater ensemble
    def _member_prefix(self) -> str:
        """``"rater k of R (id) · "`` while a rater ensemble trains its member k, else ``""``."""
        if self.member is None:
            return ""
        k, n, rater = self.member
        return f"rater {k} of {n} ({rater}) · "

    def _on_member(self, item: tuple[Any, ...]) -> None:
        """A member starts (``("member", k, R, rater, path, kept)``) or ended."""
        if item[0] == "member done":
            outcome = item[2]
            if outcome.ok and outcome.done is not None and outcome.done.path:
                self.member_paths.append(Path(outcome.done.path))
            return
        _, k, n, rater, path, kept = item
        self.member = (k, n, rater)
        if kept:
            self.member_paths.append(Path(path))
            self._pending["status"] = f"rater {k} of {n} ({rater}): {Path(path).name} kept"
            return
        self._phase = self._member_prefix() + ("writing the training data"
                                               if self.last_run and self.last_run.layers is not None
                                               else "linking the rater's files")
        self._pending["status"] = f"{self._phase}…"
        self._pending["progress"] = (0, 1)
        self._pending["pbar_desc"] = "starting"
        if self.curves is not None and k > 1:
            self.curves.flush()
            self.curves.clear()  # each member draws its own curves

    def _ensemble_returned(self, outcome: Outcome | None, elapsed: float) -> None:
        """The sequence ended: all members (offered to prediction), stopped, or failed."""
        ens = self.last_ensemble
        assert ens is not None
        n = len(ens.members)
        names = ", ".join(p.name for p in self.member_paths) or "none"
        k = self.member[0] if self.member is not None else 0
        if len(self.member_paths) == n:
            self.model_path = self.member_paths[-1]
            self._say(f"done in {ev.format_seconds(elapsed)}: {n} models, one per rater ({names}); "
                      "'Predict on the training image' predicts their mean")
            self.progress.value = self.progress.max
            self.predict_button.enabled = True
            self._report_members()
            return
        stopped = outcome is None or outcome.ok or (
            outcome.cancelled and outcome.error is None and not outcome.killed)
        if not stopped:
            assert outcome is not None
            line = gui_message(outcome.error_line or f"exit status {outcome.returncode}")
            self._say(f"training failed at rater {k} of {n}: {line}; models kept: {names}",
                      error=True)
            return
        ckpt = None
        if outcome is not None and not outcome.ok:
            ckpt = outcome.checkpoint or (outcome.done.checkpoint if outcome.done else None)
        where = f"after rater {k} of {n}" if outcome is not None and outcome.ok else f"at rater {k} of {n}"
        tail = f"; checkpoint kept: {Path(ckpt).name}" if ckpt else ""
        self._say(f"stopped {where}; models kept: {names}{tail} ('Resume' continues)")

    def _report_members(self) -> None:
        """After all members were written: each member's rater, and a too-good validation Dice."""
        from softseg.modelfile import read_card

        lines, warnings = [], []
        for path in self.member_paths:
            try:
                card = read_card(path)
            except (InputError, OSError):
                continue
            who = ", ".join(r if r.startswith("rater") else f"rater {r}" for r in card.raters)
            lines.append(f"{path.name}: trained on {who or 'one rater'}'s labels alone")
            warning = validation_note(card)
            if warning:
                warnings.append(f"⚠ {path.name}: {warning}")
        self.note.value = "\n".join(warnings + lines)
        self.note.native.setStyleSheet(_WARN_STYLE if warnings else "")

    def _on_returned(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if self.closed:
            return
        self._apply_pending()
        if self.curves is not None:
            self.curves.flush()
        elapsed = time.perf_counter() - self.timings.get("click", time.perf_counter())
        if self.last_ensemble is not None:
            self._ensemble_returned(outcome, elapsed)
            return
        done = outcome.done
        if outcome.ok and done is not None and done.path:
            self.model_path = Path(done.path)
            thr = f", threshold {done.threshold:.2f}" if _finite(done.threshold) else ""
            self._say(f"done ({done.reason.replace('_', ' ')}) in {ev.format_seconds(elapsed)}: "
                      f"{self.model_path.name}{thr}")
            self.progress.value = self.progress.max
            self.predict_button.enabled = True
            self._report_model()
        elif outcome.cancelled and outcome.error is None and not outcome.killed:
            ckpt = outcome.checkpoint or (done.checkpoint if done else None)
            self._say(f"stopped; checkpoint kept: {Path(ckpt).name} ('Resume' continues)" if ckpt
                      else "stopped")
        else:
            line = gui_message(outcome.error_line or f"exit status {outcome.returncode}")
            ckpt = f" (last checkpoint kept: {Path(outcome.checkpoint).name})" if outcome.checkpoint else ""
            self._say(f"training failed: {line}{ckpt}", error=True)

    def _report_model(self) -> None:
        """After a model was written: where its data is; a too-good validation Dice."""
        from softseg.modelfile import read_card

        try:
            card = read_card(self.model_path)
        except (InputError, OSError):
            return
        run = self.last_run
        lines = [data_note(card, from_layers=run is not None and run.layers is not None)]
        warning = validation_note(card)
        if warning:
            lines.insert(0, f"⚠ {warning}")
            notify(warning, severity="warning", source=SOURCE)
        self.note.value = "\n".join(lines)
        self.note.native.setStyleSheet(_WARN_STYLE if warning else "")
        if run is not None and run.init is not None:
            self._refresh_predictions(run.init, self.model_path)

    def _refresh_predictions(self, parent: Path, model: Path) -> None:
        from napari_softseg._prediction import refresh_predictions

        self.predict_worker = refresh_predictions(self._viewer, parent, model,
                                                  device=str(self.device.value))

    def _on_errored(self, exc: BaseException) -> None:
        # Writing the dataset or starting the child failed (bad layers, no interpreter ...).
        self.outcome = None
        if self.closed:
            return
        self._say(f"training failed: {gui_message(str(exc))}", error=True)

    def _on_finished(self) -> None:
        self.worker = None
        if self._close_guard is not None:
            self._close_guard.remove()
            self._close_guard = None
        if not self.closed:
            self.train_button.enabled = True
            self.finetune_button.enabled = True
            self.cancel_button.enabled = False
            if self.curves is not None:
                self.curves.flush()
            self._prestart_soon()  # ready for the next run
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self.process is not None:
            self.process.wait()  # reaped: no zombie
        self._holder["process"] = None
        self._holder.pop("cancelled", None)
        self.finished.emit(self.outcome)

    def _prestart_soon(self, *_: Any) -> None:
        if not self.closed and not self._prestarter.waiting:
            QTimer.singleShot(PRESTART_DELAY_MS, self._prestart)

    def _prestart(self) -> None:
        if not self.closed and not self.running:
            self._prestarter.start()

    # ---------------------------------------------------------------- history
    def open_history(self, path: Any = None) -> Any:
        """Draw the history of a model file or ``.history.csv`` (default: *History of*, else the
        last model). Returns the :class:`~._history.History`, or ``None`` after a message."""
        text = str(path if path is not None else (self.history_file.value or "")).strip()
        if (not text or text == ".") and self.model_path is not None:
            text = str(self.model_path)
        try:
            if not text or text == ".":
                raise InputError("choose a model file (or its .history.csv) under 'History of'")
            history = read_history(text)
        except InputError as exc:
            self._say(str(exc), error=True)
            return None
        if self.running:
            self._say("a training run is drawing its curves; open the history when it ends")
            return None
        self._ensure_curves().show_history(history.rows, max_epochs=history.max_epochs)
        self._say(f"history of {history.title}")
        return history

    # ---------------------------------------------------------------- after training
    def predict_current(self) -> Any:
        """Run the trained model on the training image layers (or the selected image)."""
        from napari.layers import Image

        from napari_softseg._prediction import start_prediction

        if self.model_path is None:
            return None
        uids = self.last_run.layers.image_uids if self.last_run and self.last_run.layers else []
        layers = [lyr for lyr in (find_layer(self._viewer.layers, u) for u in uids) if lyr is not None]
        if not layers:
            active = self._viewer.layers.selection.active
            layers = [active] if isinstance(active, Image) else []
        if not layers:
            self._say("select the image layer to segment", error=True)
            return None
        paths, uncertainty = [self.model_path], None
        if self.last_ensemble is not None and len(self.member_paths) >= 2:
            # the members as one ensemble: the Predict dock's "ensemble (mean of the models)"
            paths, uncertainty = list(self.member_paths), ("ensemble", len(self.member_paths))
        self.predict_worker = start_prediction(
            self._viewer, paths, layers, device=str(self.device.value), uncertainty=uncertainty
        )
        return self.predict_worker

    def close_training(self, *, timeout: float = 10.0) -> None:
        """Stop a running child and wait until it is gone (e.g. before closing the viewer)."""
        if self.process is not None and self.process.running:
            self.process.stop(timeout=timeout, block=True)


def _stop_holder(holder: dict[str, Any]) -> None:
    holder["closed"] = True  # the Qt widgets are gone: handlers only clean up from now on
    pre = holder.get("prestarter")
    if pre is not None:
        pre.close()
    proc = holder.get("process")
    if proc is not None and proc.running:
        proc.stop(timeout=10.0, block=True)
