"""The "Predict" dock widget: soft predictions of one or more model files on image layers.

A thin view over :mod:`napari_softseg._prediction` (shared with the Train widget's "Predict on
current image"): it shows each model file's card (one line, the full card as tooltip), lets the
user pick the image layers (one per model channel) and a device (:func:`softseg.device.available_devices`),
and runs :func:`~napari_softseg._prediction.start_prediction` with progress and cancel. Each
result is an Image layer ``"<image> · <candidate>"`` carrying the model card under
``layer.metadata["softseg_prediction"]`` (:func:`napari_softseg._metadata.prediction_card`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, Select
from psygnal import Signal

from napari_softseg._metadata import PREDICTION_KEY
from napari_softseg._prediction import (
    PREDICTION_COLORS,
    check_channels,
    describe_model,
    model_tooltip,
    prediction_colormap,
    start_prediction,
)
from softseg.errors import InputError
from softseg.modelfile import read_card

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "PREDICTION_COLORS",
    "PREDICTION_KEY",
    "PredictWidget",
    "check_channels",
    "describe_model",
    "prediction_colormap",
    "start_prediction",
]


class PredictWidget(Container):
    """Dock widget "Predict" (see the module docstring).

    Signals
    -------
    finished(list)
        Emitted in the main thread with the added layers when a run ended.
    """

    finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from softseg.device import available_devices

        self._viewer = viewer
        self.models = FileEdit(mode="rm", filter="*.safetensors", label="Model files",
                               tooltip="one or more softseg model files; several give several "
                               "layers to compare")
        self.model_info = Label(value="no model chosen", label="")
        self.model_info.native.setWordWrap(True)
        self._no_widen(self.model_info)
        self.images = Select(choices=self._image_choices, label="Image channels",
                             tooltip="image layer(s) matching the model's input channels, in order")
        self.images.native.setMaximumHeight(80)
        devices = available_devices()
        self.device = ComboBox(choices=devices, value=devices[0], label="Device")
        self.run_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=100, label="Progress")
        self.status = Label(value="idle", label="Status")
        self.status.native.setWordWrap(True)
        self._no_widen(self.status)
        self.extend([self.models, self.model_info, self.images, self.device, self.run_button,
                     self.cancel_button, self.progress, self.status])
        self.models.changed.connect(self._on_models)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.worker: Any = None
        self.last_layers: list[Any] = []
        self.last_error: str | None = None
        self.reset_choices()

    @staticmethod
    def _no_widen(label: Label) -> None:
        """Long text wraps inside the dock instead of widening it."""
        from qtpy.QtWidgets import QSizePolicy

        label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        label.native.setMinimumWidth(120)

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(lyr.name, lyr) for lyr in self._viewer.layers
                if isinstance(lyr, Image) and lyr.ndim == 3 and not lyr.rgb
                and PREDICTION_KEY not in lyr.metadata]

    def model_paths(self) -> list[Path]:
        value = self.models.value
        if value is None:
            return []
        if isinstance(value, (str, Path)):
            value = [value]
        return [Path(v) for v in value if str(v).strip() and str(v) != "."]

    def _on_models(self, *_: Any) -> None:
        lines, cards = [], []
        for path in self.model_paths():
            try:
                card = read_card(path)
            except (InputError, OSError) as exc:
                lines.append(f"{path.name}: ✗ {exc}")
                continue
            lines.append(f"{path.name}: {describe_model(card)}")
            cards.append(model_tooltip(card, path))
        self.model_info.value = "\n".join(lines) if lines else "no model chosen"
        self.model_info.tooltip = "\n\n".join(cards)

    def run(self, *_: Any) -> None:
        if self.worker is not None:
            return
        self.last_layers, self.last_error = [], None
        self.progress.value = 0
        self.status.value = "predicting…"
        worker = start_prediction(
            self._viewer, self.model_paths(), list(self.images.value),
            device=str(self.device.value), on_progress=self._on_progress, on_done=self._on_done,
        )
        if worker is None:
            return
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True

    def cancel(self, *_: Any) -> None:
        if self.worker is not None:
            self.worker.cancel_event.set()
            self.status.value = "cancelling…"

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.value = int(round(100 * fraction))
        self.status.value = message

    def _on_done(self, layers: list[Any], error: str | None) -> None:
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.last_layers, self.last_error = layers, error
        if error is None:
            self.progress.value = 100
            self.status.value = f"added {', '.join(lyr.name for lyr in layers)}"
        else:
            self.status.value = f"{'cancelled' if error == 'cancelled' else 'failed: ' + error}"
        self.finished.emit(layers)
