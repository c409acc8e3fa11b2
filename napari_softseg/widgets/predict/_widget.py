"""The Predict dock widget (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, Select,
                              SpinBox)
from psygnal import Signal
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QPlainTextEdit, QSizePolicy

from napari_softseg._metadata import find_layer, layer_uid
from napari_softseg._prediction import (
    describe_model,
    is_input_image,
    model_tooltip,
    prediction_events,
    start_prediction,
)
from napari_softseg._supervisor import device_probe
from napari_softseg.widgets._common import collapsible, notify, scroll_area
from napari_softseg.widgets._dock_parts import (
    button_row,
    device_choices,
    dock_body,
    labelled,
    show_devices,
)
from napari_softseg.widgets._gl_context import Connections, install_removal_guard
from napari_softseg.widgets._docking import dock_as_tab
from softseg.errors import InputError
from softseg.modelfile import read_card
from softseg.uncertainty import ENSEMBLE, ENSEMBLE_DESCRIPTION
from softseg.uncertainty import METHODS as UNCERTAINTY_METHODS

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SOURCE", "UNCERTAINTY_CHOICES", "PredictWidget"]

#: Notification source (the dock's name in the Plugins menu).
SOURCE = "Predict"
_UI_INTERVAL_MS = 250
_ERROR_STYLE = "color: #ff8080;"
#: (label, value) of the Uncertainty combo; values are softseg.uncertainty.METHODS keys and
#: softseg.uncertainty.ENSEMBLE (the chosen model files as one ensemble).
UNCERTAINTY_CHOICES = [("none", "none"), ("MC dropout", "mc_dropout"),
                       ("test-time augmentation", "tta"),
                       ("ensemble (mean of the models)", ENSEMBLE)]
_TIPS = {**UNCERTAINTY_METHODS, ENSEMBLE: ENSEMBLE_DESCRIPTION + "; needs 2 or more model files "
         "with the same classes and channels"}


class PredictWidget(Container):
    """Dock widget "Predict" (see the package docstring).

    Signals
    -------
    finished(list)
        Emitted in the main thread with the layers added or updated when a run ended.
    """

    finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self._probe = device_probe()
        self.models = FileEdit(mode="rm", filter="*.safetensors", label="Model files",
                               tooltip="one or more softseg model files; several give several "
                               "predictions to compare")
        self.model_info = Label(value="no model chosen", label="")
        self.card_text = QPlainTextEdit()
        self.card_text.setReadOnly(True)
        self.card_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.card_text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.card_text.setPlaceholderText("the chosen model's card (softseg info) appears here")
        self.card_text.setMinimumHeight(120)
        self.card_text.setMaximumHeight(260)
        self.images = Select(choices=self._image_choices, label="Image channels",
                             tooltip="image layer(s) matching the model's input channels, in order")
        self.images.native.setMaximumHeight(80)
        self.device = ComboBox(choices=device_choices(self._probe.devices), value="auto", label="Device")
        self.uncertainty = ComboBox(
            choices=UNCERTAINTY_CHOICES, value="none", label="Uncertainty",
            tooltip="predict N times and show the mean, plus per-voxel entropy (nats) and variance "
                    "layers: MC dropout (dropout kept on), test-time augmentation (flips and the "
                    "model's training affine family, mapped back), or an ensemble (the mean of "
                    "the chosen models, variance between them)")
        for i, (_label, value) in enumerate(UNCERTAINTY_CHOICES[1:], start=1):
            self.uncertainty.native.model().item(i).setToolTip(_TIPS[value])
        self.passes = SpinBox(value=10, min=1, max=200, label="Passes", enabled=False,
                              tooltip="number of passes N (the time is about N single predictions)")
        self.run_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=100, label="Progress")
        self.status = Label(value="idle", label="Status")
        for label in (self.model_info, self.status):
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.native.setMinimumWidth(60)
        self._build_layout()
        self.models.changed.connect(self._on_models)
        self.uncertainty.changed.connect(self._on_uncertainty)
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(lambda: self.cancel())
        self.worker: Any = None
        self.last_layers: list[Any] = []
        self.last_error: str | None = None
        self._last_images: list[str] = []  # uids of the images of the last run
        self._devices_shown = False
        self._events = Connections(self.native)
        self._events.connect(viewer.layers.events.inserted, self._on_layers_changed)
        self._events.connect(viewer.layers.events.removed, self._on_layers_changed)
        self._events.connect(prediction_events.refreshed, self._on_refreshed)
        self._guard = install_removal_guard(viewer, self.native)
        from qtpy.QtCore import QTimer

        self._timer = QTimer(self.native)
        self._timer.setInterval(_UI_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self.reset_choices()
        self._offer_ensemble(len(self.model_paths()))

    def _build_layout(self) -> None:
        top = labelled(self.models, self.model_info)
        inputs = labelled(self.images, self.device, self.uncertainty, self.passes)
        state = labelled(self.progress, self.status)
        buttons = button_row(self.run_button, self.cancel_button)
        body, layout = dock_body()
        layout.addWidget(top.native)
        self.card_section = collapsible("Model card", self.card_text, expanded=True)
        layout.addWidget(self.card_section)
        layout.addWidget(inputs.native)
        layout.addWidget(buttons)
        layout.addWidget(state.native)
        layout.addStretch(1)
        self._parts = (top, inputs, state)
        super().__init__(widgets=[], labels=False)
        dock_as_tab(self.native)  # joins the other SoftSeg docks as a tab
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(scroll_area(body))

    # ------------------------------------------------------------------ plumbing
    @property
    def closed(self) -> bool:
        return not self._events.alive["alive"]

    def _say(self, text: str, *, error: bool = False) -> None:
        try:
            self.status.value = text
            self.status.native.setStyleSheet(_ERROR_STYLE if error else "")
        except RuntimeError:
            return

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        return [(lyr.name, layer_uid(lyr)) for lyr in self._viewer.layers if is_input_image(lyr)]

    def offered_images(self) -> list[str]:
        """Names of the layers offered as images."""
        return [name for name, _ in self._image_choices()]

    def set_images(self, layers: list[Any]) -> None:
        """Choose these image layers (scripts, tests)."""
        self.images.reset_choices()
        self.images.value = [layer_uid(lyr) for lyr in layers]

    def selected_images(self) -> list[Any]:
        """The chosen image layers still in the viewer, in order."""
        found = (find_layer(self._viewer.layers, uid) for uid in (self.images.value or []))
        return [lyr for lyr in found if lyr is not None]

    def _on_layers_changed(self, _event: Any = None) -> None:
        """Offer the current layers; a removed one is forgotten at once (before napari draws)."""
        if self.closed:
            return
        self.images.reset_choices()
        self.last_layers = [lyr for lyr in self.last_layers
                            if find_layer(self._viewer.layers, layer_uid(lyr)) is not None]

    def _tick(self) -> None:
        if self.closed or self._devices_shown or not self._probe.done:
            return
        self._devices_shown = True
        show_devices(self.device, self._probe.devices)

    # ------------------------------------------------------------------ models
    def model_paths(self) -> list[Path]:
        value = self.models.value
        if value is None:
            return []
        if isinstance(value, (str, Path)):
            value = [value]
        return [Path(v) for v in value if str(v).strip() and str(v) != "."]

    def _on_models(self, *_: Any) -> None:
        lines, cards, no_dropout = [], [], []
        for path in self.model_paths():
            try:
                card = read_card(path)
            except (InputError, OSError) as exc:
                lines.append(f"{path.name}: ✗ {exc}")
                continue
            lines.append(f"{path.name}: {describe_model(card)}")
            if card.architecture.config.dropout == 0:
                no_dropout.append(path.name)
            cards.append(model_tooltip(card, path))
        self.model_info.value = "\n".join(lines) if lines else "no model chosen"
        self.card_text.setPlainText(("\n\n" + "─" * 40 + "\n\n").join(cards))
        self._offer_mc_dropout(no_dropout)
        self._offer_ensemble(len(self.model_paths()))

    def _offer_mc_dropout(self, no_dropout: list[str]) -> None:
        """Grey out "MC dropout" when a chosen model was built without dropout layers (its card's
        dropout is 0); the engine refuses such a run anyway (softseg.uncertainty)."""
        index = [v for _, v in UNCERTAINTY_CHOICES].index("mc_dropout")
        item = self.uncertainty.native.model().item(index)
        item.setEnabled(not no_dropout)
        if no_dropout:
            reason = (f"{', '.join(no_dropout)} has no dropout layers (dropout 0): every pass would "
                      "be the same; use test-time augmentation")
            item.setToolTip(reason)
            if self.uncertainty.value == "mc_dropout":
                self.uncertainty.value = "none"
                self._say(f"MC dropout is not offered: {reason}")
        else:
            item.setToolTip(UNCERTAINTY_METHODS["mc_dropout"])

    def _offer_ensemble(self, n_models: int) -> None:
        """Offer "ensemble" only with 2 or more model files (the members' classes and channels
        are checked when the run starts, with one line naming the two files that differ)."""
        index = [v for _, v in UNCERTAINTY_CHOICES].index(ENSEMBLE)
        item = self.uncertainty.native.model().item(index)
        item.setEnabled(n_models >= 2)
        if n_models >= 2:
            item.setToolTip(_TIPS[ENSEMBLE])
            return
        item.setToolTip(f"an ensemble averages 2 or more models; {n_models} model file(s) chosen")
        if self.uncertainty.value == ENSEMBLE:
            self.uncertainty.value = "none"
            self._say("ensemble is not offered: choose 2 or more model files")

    def ensemble_offered(self) -> bool:
        """Whether "ensemble (mean of the models)" can be chosen (2 or more model files)."""
        index = [v for _, v in UNCERTAINTY_CHOICES].index(ENSEMBLE)
        return bool(self.uncertainty.native.model().item(index).isEnabled())

    def mc_dropout_offered(self) -> bool:
        """Whether "MC dropout" can be chosen for the chosen models."""
        index = [v for _, v in UNCERTAINTY_CHOICES].index("mc_dropout")
        return bool(self.uncertainty.native.model().item(index).isEnabled())

    def _on_uncertainty(self, *_: Any) -> None:
        # an ensemble's "passes" are its models
        self.passes.enabled = self.uncertainty.value not in ("none", ENSEMBLE)

    def uncertainty_option(self) -> tuple[str, int] | None:
        """``(method, passes)`` chosen in the dock (``("ensemble", number of model files)``),
        ``None`` for a plain prediction."""
        method = self.uncertainty.value
        if method == ENSEMBLE:
            return ENSEMBLE, len(self.model_paths())
        return None if method == "none" else (str(method), int(self.passes.value))

    def card_texts(self) -> str:
        """The model card text shown in the dock (what ``softseg info`` prints per model)."""
        return self.card_text.toPlainText()

    def _on_refreshed(self, old: str, new: str) -> None:
        """A fine-tuned model replaced ``old``'s prediction: show the new model here too."""
        if self.closed:
            return
        paths = self.model_paths()
        if any(str(p.resolve()) == old for p in paths):
            self.models.value = tuple(Path(new) if str(p.resolve()) == old else p for p in paths)
            self._say(f"prediction updated with the fine-tuned model {Path(new).name}")
            notify(f"prediction updated with the fine-tuned model {Path(new).name}", source=SOURCE)

    # ------------------------------------------------------------------ run
    def run(self) -> Any:
        """Predict the chosen images with every chosen model (updates earlier predictions)."""
        if self.worker is not None:
            return None
        self.last_layers, self.last_error = [], None
        self.progress.value = 0
        self._say("predicting…")
        images = self.selected_images()
        if not images and self.images.value:
            self.last_error = "a chosen image layer was removed; choose again"
            self._say(self.last_error, error=True)
            return None
        worker = start_prediction(
            self._viewer, self.model_paths(), images, device=str(self.device.value),
            on_progress=self._on_progress, on_done=self._on_done, source=SOURCE,
            uncertainty=self.uncertainty_option(),
        )
        if worker is None:
            return None
        self._last_images = [layer_uid(lyr) for lyr in images]
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel_event.set()
            self._say("cancelling…")

    def _on_progress(self, fraction: float, message: str) -> None:
        if self.closed:
            return
        self.progress.value = int(round(100 * fraction))
        self._say(message)

    def _on_done(self, layers: list[Any], error: str | None) -> None:
        self.worker = None
        self.last_layers, self.last_error = layers, error
        if self.closed:
            return
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if error is None:
            self.progress.value = 100
            self._say(f"shown: {', '.join(lyr.name for lyr in layers)}")
        elif error == "cancelled":
            self._say("cancelled")
        else:
            self._say(f"failed: {error}", error=True)
        self.finished.emit(layers)
