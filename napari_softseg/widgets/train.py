"""The "Train" dock widget: train a SoftSeg candidate from open layers or a dataset folder.

A thin view (DESIGN.md decision 3): it collects parameters into the engine's own configuration
(:class:`softseg.config.TrainConfig`, defaults from its ``"paper"`` preset), writes the picked
layers to a temporary dataset folder (:func:`softseg.layers_dataset.write_layers_dataset`) and the
configuration to a JSON file, runs ``softseg train DATASET --config FILE ... --json-progress`` in
a child process supervised by a napari ``thread_worker`` (:mod:`napari_softseg._supervisor`) and
shows the child's progress events: a progress bar with ETA (also in napari's activity dock), live
training/validation curves, the best validation metric. Cancel asks the child to stop and save a
checkpoint, and kills it after a timeout. Closing the widget or the viewer stops the child. When
a model is written, "Predict on current image" runs it (:mod:`napari_softseg._prediction`).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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

from napari_softseg._layers import CONFIDENCE_KEY, layer_geometry
from napari_softseg._supervisor import (
    DEFAULT_STOP_TIMEOUT_S,
    Outcome,
    TrainingProcess,
    supervise,
    train_argv,
)
from softseg import events as ev
from softseg.config import PRESETS, TrainConfig
from softseg.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["TrainRun", "TrainWidget"]

_SOURCE_LAYERS = "Open layers"
_SOURCE_FOLDER = "Dataset folder"
#: Axial slabs written as subjects when training from one open volume (the trainer's
#: subject-wise split then keeps 1 of 5 for validation; see softseg.layers_dataset).
LAYER_SUBJECTS = 5
_REDRAW_INTERVAL_MS = 400
_UI_INTERVAL_MS = 200
_INITIAL_LIMITS = (2.0, 0.0, 1.0)  # curve axes: epochs shown, loss range
#: The configuration the controls start from.
_DEFAULTS = PRESETS["paper"]


@dataclass(frozen=True)
class TrainRun:
    """One run the widget starts: the engine's configuration and where the model goes."""

    config: TrainConfig
    out: Path
    resume: bool = False
    overwrite: bool = False


def _candidates() -> dict[str, Any]:
    from softseg.candidates import CANDIDATES

    return CANDIDATES


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


class _Curves:
    """Training/validation curves on an embedded matplotlib canvas.

    Kept cheap for the event loop: events only append numbers; a timer redraws at most every
    ``_REDRAW_INTERVAL_MS``, and then only the lines are re-rendered onto a cached background
    (blitting, a few ms). The full figure (axes, ticks, legend: ~100 ms) is drawn only when the
    axis limits must grow or shrink, which happens a logarithmic number of times (limits double).
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtCore import QTimer

        self.figure = Figure(figsize=(3.6, 2.4), dpi=90)
        self.figure.subplots_adjust(left=0.16, right=0.86, bottom=0.18, top=0.96)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
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
        (self._train_line,) = self.ax.plot([], [], color="#9ecae1", lw=0.8, label="train (step)",
                                           **style)
        (self._epoch_line,) = self.ax.plot([], [], color="#1f77b4", lw=1.6, marker="o", ms=3,
                                           label="train (epoch)", **style)
        (self._val_line,) = self.ax.plot([], [], color="#ff7f0e", lw=1.6, marker="o", ms=3,
                                         label="validation", **style)
        (self._dice_line,) = self.ax_dice.plot([], [], color="#2ca02c", lw=1.2, ls="--",
                                               marker="s", ms=3, label="val Dice", **style)
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.set_ylabel("loss", fontsize=8)
        self.ax_dice.set_ylabel("Dice", color="#2ca02c", fontsize=8)
        self.ax_dice.set_ylim(0, 1)
        lines = [self._train_line, self._epoch_line, self._val_line, self._dice_line]
        self.ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="upper right")
        for ax in (self.ax, self.ax_dice):
            ax.tick_params(labelsize=7)
        self._limits = _INITIAL_LIMITS  # xmax, ymin, ymax
        self._apply_limits()
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_full_draw)
        self._dirty = False
        self._timer = QTimer(self.canvas)  # dies with the canvas
        self._timer.setInterval(_REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()
        self.draws = 0  # full figure draws
        self.blits = 0  # line-only updates

    @property
    def n_points(self) -> int:
        return len(self.train_y) + len(self.val_y)

    def clear(self) -> None:
        for values in (self.train_x, self.train_y, self.epoch_x, self.epoch_y, self.val_x,
                       self.val_y, self.dice_y):
            values.clear()
        self.max_epochs = None
        # No draw here (this runs in the Train click handler): the next timer tick blits the
        # empty lines, or redraws the axes if a previous run had moved the limits.
        self._dirty = True

    def add(self, event: ev.Event) -> None:
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

    # -- drawing -------------------------------------------------------------------------------
    def _wanted_limits(self) -> tuple[float, float, float]:
        if not (self.train_x or self.val_x):
            return _INITIAL_LIMITS
        xmax, ymin, ymax = self._limits
        xs = self.train_x + self.val_x
        if xs:
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
        # After every full draw (ours, a resize, a screenshot): cache the background without
        # the animated lines, then put the lines on top.
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_lines()
        self.draws += 1

    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
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

    def flush(self) -> None:
        """Draw pending points now (end of a run, screenshots)."""
        self._dirty = True
        self._redraw()


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt_eta(seconds: float | None) -> str:
    return f"ETA {ev.format_seconds(seconds)}" if _finite(seconds) else "ETA …"


class TrainWidget(Container):
    """Dock widget "Train" (see the module docstring).

    Signals
    -------
    finished(Outcome)
        Emitted in the main thread when a run ended (completed, cancelled, failed).
    """

    finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        cands = _candidates()
        self.source = RadioButtons(choices=[_SOURCE_LAYERS, _SOURCE_FOLDER], value=_SOURCE_LAYERS,
                                   orientation="horizontal", label="Data")
        self.images = Select(choices=self._image_choices, label="Image channels",
                             tooltip="One or more image layers of the same volume (input contrasts),"
                             " in channel order")
        self.targets = Select(choices=self._target_choices, label="Target",
                              tooltip="Rater label layers (fused per the fusion choice), or one fused"
                              " layer or soft label")
        for select in (self.images, self.targets):
            select.native.setMaximumHeight(64)
        self.dataset = FileEdit(mode="d", label="Dataset folder", visible=False,
                                tooltip="DATASET/<subject>/image*.nii.gz + rater-<id>.nii.gz")
        self.candidate = ComboBox(
            choices=[(f"{c.title} ({name})", name) for name, c in cands.items()],
            value="softseg" if "softseg" in cands else next(iter(cands)),
            label="Candidate",
        )
        self.candidate_info = Label(label="")
        self.candidate_info.native.setWordWrap(True)
        from softseg.candidates import FUSION_DESCRIPTIONS, FUSIONS
        from softseg.device import available_devices

        d = _DEFAULTS
        self.fusion = ComboBox(choices=list(FUSIONS), value=d.data.fusion, label="Fusion",
                               tooltip="\n".join(f"{k}: {FUSION_DESCRIPTIONS[k]}" for k in FUSIONS))
        self.epochs = SpinBox(value=d.optim.epochs, min=1, max=10_000, label="Epochs")
        self.patience = SpinBox(value=d.optim.patience, min=1, max=10_000,
                                label="Patience", tooltip="early stopping patience (epochs)")
        self.batch_size = SpinBox(value=d.optim.batch_size, min=1, max=1024, label="Batch size")
        self.lr = FloatSpinBox(value=d.optim.lr, min=1e-6, max=1.0, step=1e-4,
                               label="Learning rate")
        self.lr.native.setDecimals(6)
        self.crop = SpinBox(value=d.data.crop[0], min=16, max=1024, step=16, label="Crop")
        self.depth = SpinBox(value=d.model.depth, min=1, max=6, label="U-Net depth")
        devices = available_devices()
        self.device = ComboBox(choices=devices, value=devices[0], label="Device")
        self.output = FileEdit(mode="w", filter="*.safetensors", label="Model file",
                               value=str(Path.home() / "softseg-model.safetensors"))
        self.resume = CheckBox(value=False, text="Resume from the checkpoint of this model file")
        self.overwrite = CheckBox(value=False, text="Overwrite an existing model file")
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="Progress")
        self.status = Label(value="idle", label="Status")
        self.best = Label(value="–", label="Best")
        for label in (self.status, self.best):  # long messages wrap instead of widening the dock
            label.native.setWordWrap(True)
        # Always laid out, enabled once a model is written: showing a hidden button would move
        # the curves canvas, and a moved canvas is a full (slow) matplotlib redraw.
        self.predict_button = PushButton(text="Predict on current image", enabled=False,
                                         tooltip="available when a training run has written "
                                         "its model file")
        self.extend([
            self.source, self.images, self.targets, self.dataset, self.candidate,
            self.candidate_info, self.fusion, self.epochs, self.patience, self.batch_size,
            self.lr, self.crop, self.depth, self.device, self.output, self.resume,
            self.overwrite, self.train_button, self.cancel_button, self.progress, self.status,
            self.best,
        ])
        self.curves = _Curves()
        self.native.layout().addWidget(self.curves.canvas)
        self.append(self.predict_button)

        self.source.changed.connect(self._on_source)
        self.candidate.changed.connect(self._on_candidate)
        self.train_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.predict_button.changed.connect(self.predict_current)
        self._on_candidate()

        self.process: TrainingProcess | None = None
        self.worker: Any = None
        self.outcome: Outcome | None = None
        self.model_path: Path | None = None
        self._pbar: Any = None
        self._tmpdir: Path | None = None
        self._started_at = 0.0
        self._image_layer_names: list[str] = []
        self.predict_worker: Any = None
        self._pending: dict[str, Any] = {}
        from qtpy.QtCore import QTimer

        self._ui_timer = QTimer(self.native)  # dies with the widget
        self._ui_timer.setInterval(_UI_INTERVAL_MS)
        self._ui_timer.timeout.connect(self._apply_pending)
        self._ui_timer.start()
        # Stop the child when this widget goes away. The closure holds the process holder,
        # not the (deleted) widget.
        holder = self._holder = {"process": None, "closed": False}
        # Closing the viewer deletes its dock widgets, so this covers both (an atexit hook in
        # _supervisor covers an interpreter that exits without deleting them).
        self.native.destroyed.connect(lambda *_: _stop_holder(holder))
        self.reset_choices()

    # ---------------------------------------------------------------- choices and display
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(lyr.name, lyr) for lyr in self._viewer.layers
                if isinstance(lyr, Image) and lyr.ndim == 3 and not lyr.rgb]

    def _target_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image, Labels

        return [(lyr.name, lyr) for lyr in self._viewer.layers
                if isinstance(lyr, (Image, Labels)) and lyr.ndim == 3]

    def _on_source(self, *_: Any) -> None:
        from_layers = self.source.value == _SOURCE_LAYERS
        self.images.visible = from_layers
        self.targets.visible = from_layers
        self.dataset.visible = not from_layers

    def _on_candidate(self, *_: Any) -> None:
        cand = _candidates()[self.candidate.value]
        self.candidate_info.value = cand.description
        self.candidate_info.tooltip = (
            f"ground truth: {'soft' if cand.soft_gt else 'binarised at 0.5'}; activation: "
            f"{cand.activation}; loss: {cand.loss}"
        )

    # ---------------------------------------------------------------- parameters
    def config(self) -> TrainConfig:
        """The engine configuration of the widget's values (validated by its schema)."""
        over = {
            "candidate": str(self.candidate.value),
            "device": str(self.device.value),
            "data": {"fusion": str(self.fusion.value), "crop": [int(self.crop.value)] * 2},
            "model": {"depth": int(self.depth.value)},
            "optim": {"epochs": int(self.epochs.value), "patience": int(self.patience.value),
                      "batch_size": int(self.batch_size.value), "lr": float(self.lr.value)},
        }
        return _DEFAULTS.updated(over, source="training settings")

    def run_request(self) -> TrainRun:
        """The run to start: configuration, model file, resume/overwrite."""
        out = Path(str(self.output.value or "")).expanduser()
        if not str(self.output.value or "").strip() or out.is_dir():
            raise InputError("choose an output model file (…/model.safetensors)")
        if out.suffix != ".safetensors":
            out = out.with_name(out.name + ".safetensors")
        if out.exists() and not (self.overwrite.value or self.resume.value):
            raise InputError(f"{out} exists; choose another model file or tick 'Overwrite'")
        return TrainRun(config=self.config(), out=out, resume=bool(self.resume.value),
                        overwrite=bool(self.overwrite.value))

    @property
    def running(self) -> bool:
        return self.worker is not None

    # ---------------------------------------------------------------- run
    def start(self, *_: Any) -> None:
        """Validate, snapshot the layers and start the supervised child (main thread)."""
        if self.running:
            return
        try:
            cfg = self.run_request()
            job = self._prepare_data(cfg)
        except (InputError, OSError) as exc:
            _notify_error(f"Train: {exc}")
            self.status.value = f"not started: {exc}"
            return
        self.outcome = None
        self.model_path = None
        self.predict_button.enabled = False
        self.curves.clear()
        self.best.value = "–"
        self._pending = {}
        self.progress.max = 1
        self.progress.value = 0
        self.status.value = "writing the training data…" if job["layers"] else "starting…"
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        self._pbar = progress(total=0, desc=f"Training {cfg.config.candidate}")
        self._started_at = time.perf_counter()
        worker = thread_worker(_run_training, start_thread=False)(job, cfg)
        worker.yielded.connect(self._on_item)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        worker.aborted.connect(lambda: self.process is not None and self.process.stop())
        self.worker = worker
        self.train_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()

    def _prepare_data(self, cfg: TrainRun) -> dict[str, Any]:
        """Snapshot what the worker needs (main thread; layer data is copied)."""
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        if self.source.value == _SOURCE_FOLDER:
            folder = Path(str(self.dataset.value or "")).expanduser()
            if not str(self.dataset.value or "").strip() or not folder.is_dir():
                raise InputError("choose the dataset folder (DATASET/<subject>/image.nii.gz …)")
            self._image_layer_names = []
            return {"layers": None, "folder": folder}
        images = list(self.images.value)
        targets = [t for t in self.targets.value if t not in images]
        if not images:
            raise InputError("choose one or more image layers as input channels")
        if not targets:
            raise InputError(
                f"candidate {cfg.config.candidate!r} trains from labels: choose rater layers, a fused "
                "layer or a soft label as target"
            )
        geometry = layer_geometry(images[0])
        channels = {lyr.name: np.array(lyr.data, copy=True) for lyr in images}
        tgts: dict[str, np.ndarray] = {}
        sidecars: dict[str, dict[str, Any]] = {}
        for lyr in targets:
            tgts[lyr.name] = np.array(lyr.data, copy=True)
            scale = lyr.metadata.get(CONFIDENCE_KEY)
            if scale is not None:
                sidecars[lyr.name] = {
                    CONFIDENCE_KEY: scale.as_dict() if hasattr(scale, "as_dict") else dict(scale)
                }
        self._image_layer_names = [lyr.name for lyr in images]
        return {
            "layers": {
                "channels": channels,
                "targets": tgts,
                "sidecars": sidecars,
                "geometry": geometry,
                "source": {
                    "images": [lyr.name for lyr in images],
                    "targets": [lyr.name for lyr in targets],
                    "files": [str(lyr.metadata.get("source_path", "")) for lyr in images + targets],
                },
            },
            "folder": None,
        }

    def cancel(self, *_: Any) -> None:
        """Ask the child to stop at its next step and save; kill it after the timeout."""
        if self.process is not None and self.process.running:
            self.status.value = "stopping: saving a checkpoint…"
            self.cancel_button.enabled = False
            self.process.stop(timeout=DEFAULT_STOP_TIMEOUT_S)

    # ---------------------------------------------------------------- handlers (main thread)
    @property
    def closed(self) -> bool:
        """The widget (or the viewer) was closed; the child has been asked to stop."""
        return bool(self._holder["closed"])

    def _on_item(self, item: Any) -> None:
        if isinstance(item, TrainingProcess):
            self.process = item
            self._holder["process"] = item
            if self.closed:  # closed while the dataset was being written
                item.stop(timeout=10.0)
                return
            self.status.value = "starting the training process…"
            return
        if isinstance(item, tuple) and item and item[0] == "dataset":
            self._tmpdir = item[1]
            return
        if self.closed:
            return
        event = item
        self.curves.add(event)
        # Only remember what to show: _apply_pending puts it on screen at most every
        # _UI_INTERVAL_MS (several events arrive together at the end of an epoch, and every
        # label change costs a relayout of the dock).
        pending = self._pending
        if isinstance(event, ev.StepEvent):
            total = max(event.epochs * event.steps, 1)
            done = (event.epoch - 1) * event.steps + event.step
            pending["progress"] = (min(done, total), total)
            pending["pbar_desc"] = (f"Training epoch {event.epoch}/{event.epochs} · "
                                    f"{_fmt_eta(event.eta_s)}")
            pending["status"] = (f"epoch {event.epoch}/{event.epochs}, step {event.step}/"
                                 f"{event.steps}, loss {event.loss:.4f} · {_fmt_eta(event.eta_s)}")
        elif isinstance(event, ev.EpochEvent):
            val = f", val loss {event.val_loss:.4f}" if _finite(event.val_loss) else ""
            pending["status"] = (f"epoch {event.epoch}/{event.epochs} done: loss {event.loss:.4f}"
                                 f"{val} · {_fmt_eta(event.eta_s)}")
        elif isinstance(event, ev.BestEvent):
            dice = f", Dice {event.val_dice:.3f}" if _finite(event.val_dice) else ""
            pending["best"] = f"epoch {event.epoch}: val loss {event.val_loss:.4f}{dice}"
        elif isinstance(event, ev.CheckpointEvent) and event.reason == "cancel":
            pending["status"] = f"checkpoint saved at epoch {event.epoch}"
        elif isinstance(event, ev.ErrorEvent):
            pending["status"] = f"error: {event.message}"

    def _apply_pending(self) -> None:
        """Show the latest progress, status and best metric (main thread, timer)."""
        pending, self._pending = self._pending, {}
        if not pending or self.closed:
            return
        if "status" in pending:
            self.status.value = pending["status"]
        if "best" in pending:
            self.best.value = pending["best"]
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
                self._pbar.set_description(pending["pbar_desc"])

    def _on_returned(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if self.closed:
            return
        self._apply_pending()
        self.curves.flush()
        done = outcome.done
        elapsed = time.perf_counter() - self._started_at
        if outcome.ok and done is not None and done.path:
            self.model_path = Path(done.path)
            thr = f", threshold {done.threshold:.2f}" if _finite(done.threshold) else ""
            if done.reason == "cancelled":
                self.status.value = f"cancelled at epoch {done.epoch}; checkpoint {done.checkpoint}"
            else:
                self.status.value = (f"done ({done.reason}) in {elapsed:.0f} s: "
                                     f"{self.model_path.name}{thr}")
                self.progress.value = self.progress.max
            # No success toast: its animation costs the event loop more than the status line.
            self.predict_button.enabled = True
        elif outcome.cancelled and outcome.error is None and not outcome.killed:
            ckpt = outcome.checkpoint or (done.checkpoint if done else None)
            self.status.value = f"cancelled; checkpoint kept: {ckpt}" if ckpt else "cancelled"
        else:
            line = outcome.error_line or f"exit status {outcome.returncode}"
            ckpt = f" (last checkpoint kept: {outcome.checkpoint})" if outcome.checkpoint else ""
            self.status.value = f"failed: {line}"
            _notify_error(f"Training failed: {line}{ckpt}")

    def _on_errored(self, exc: BaseException) -> None:
        # Writing the dataset or starting the child failed (bad layers, no interpreter ...).
        self.outcome = None
        if self.closed:
            return
        self.status.value = f"failed: {exc}"
        _notify_error(f"Training failed: {' '.join(str(exc).split())}")

    def _on_finished(self) -> None:
        self.worker = None
        if not self.closed:
            self.train_button.enabled = True
            self.cancel_button.enabled = False
            self.curves.flush()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self.process is not None:
            self.process.wait()  # reaped: no zombie
        self._holder["process"] = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self.finished.emit(self.outcome)

    # ---------------------------------------------------------------- after training
    def predict_current(self, *_: Any) -> None:
        """Run the trained model on the training image layers (or the selected image)."""
        from napari.layers import Image

        from napari_softseg._prediction import start_prediction

        if self.model_path is None:
            return
        layers = [self._viewer.layers[n] for n in self._image_layer_names
                  if n in self._viewer.layers]
        if not layers:
            active = self._viewer.layers.selection.active
            layers = [active] if isinstance(active, Image) else []
        if not layers:
            _notify_error("Predict: select the image layer to segment")
            return
        self.predict_worker = start_prediction(
            self._viewer, [self.model_path], layers, device=str(self.device.value)
        )

    def close_training(self, *, timeout: float = 10.0) -> None:
        """Stop a running child and wait until it is gone (e.g. before closing the viewer)."""
        if self.process is not None and self.process.running:
            self.process.stop(timeout=timeout, block=True)


def _stop_holder(holder: dict[str, Any]) -> None:
    holder["closed"] = True  # the Qt widgets are gone: handlers only clean up from now on
    proc = holder.get("process")
    if proc is not None and proc.running:
        proc.stop(timeout=10.0, block=True)


def _run_training(job: dict[str, Any], run: TrainRun):
    """Worker generator: write the layers' dataset and the configuration file, start and
    supervise ``softseg train --config``."""
    from softseg.layers_dataset import safe_name, write_layers_dataset

    tmp = Path(tempfile.mkdtemp(prefix="softseg-train-"))
    yield ("dataset", tmp)
    if job["layers"] is not None:
        lay = job["layers"]
        name = safe_name(lay["source"]["images"][0])  # shown as "trained on" in Predict
        folder = write_layers_dataset(
            tmp / name, lay["channels"], lay["targets"], lay["geometry"],
            n_subjects=min(LAYER_SUBJECTS, lay["geometry"].display_shape[0]),
            sidecars=lay["sidecars"], source=lay["source"],
        )
    else:
        folder = job["folder"]
    config = run.config.to_json_file(tmp / "train-config.json")
    argv = train_argv(folder, config=config, out=run.out, resume=run.resume, overwrite=run.overwrite)
    process = TrainingProcess(argv, cwd=run.out.parent)
    process.start()
    yield process
    outcome = yield from supervise(process)
    return outcome
