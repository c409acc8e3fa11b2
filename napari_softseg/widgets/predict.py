"""The "Predict" dock widget: soft predictions of one or more model files on image layers.

A thin view: it reads each model file's metadata (cheap, no torch), checks that the picked image
layers match the model's input channels, snapshots the layer data, and runs
:func:`softseg.predict.predict_volume` in a napari ``thread_worker`` with progress and cancel.
The image is handed to the engine in its native file orientation (``DisplayGeometry.from_display``
with the original affine), so resampling to the training spacing uses the true voxel size; the
soft prediction comes back in native geometry and is shown with ``to_display``.

Each result is an Image layer ``"<image> · <candidate>"`` with the image's scale, translate and
geometry metadata, a transparent-to-colour colormap, contrast limits 0..1 and::

    layer.metadata["softseg_prediction"] = {
        "threshold": float,   # the model's optimal binarisation threshold
        "candidate": str,     # candidate name, e.g. "softseg"
        "title": str,         # paper name, e.g. "Soft-ReLU-Wing"
        "model": str,         # model file path
        "image": str,         # image layer name(s)
        "validation": {...},  # the model's validation metrics
        "provenance": {...},  # dataset, raters, fusion, seed, versions (from the model file)
    }

which the threshold widget reads.
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, Select
from psygnal import Signal

from softseg.errors import InputError
from softseg.modelfile import read_metadata

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "PREDICTION_KEY",
    "PREDICTION_COLORS",
    "PredictWidget",
    "check_channels",
    "describe_model",
    "prediction_colormap",
    "start_prediction",
]

#: Layer metadata key of a prediction's threshold and provenance (read by the threshold widget).
PREDICTION_KEY = "softseg_prediction"
#: Colours given to successive prediction layers (transparent at 0, this colour at 1).
PREDICTION_COLORS = {
    "red": (1.0, 0.15, 0.1),
    "cyan": (0.0, 0.85, 1.0),
    "yellow": (1.0, 0.9, 0.0),
    "magenta": (1.0, 0.2, 0.9),
    "green": (0.2, 1.0, 0.3),
    "orange": (1.0, 0.55, 0.0),
}
_color_cycle = itertools.cycle(PREDICTION_COLORS)


def prediction_colormap(color: str) -> Any:
    """A napari colormap from fully transparent (0) to *color* (1)."""
    from napari.utils.colormaps import Colormap

    if color not in PREDICTION_COLORS:
        raise InputError(f"unknown colour {color!r}; expected one of {sorted(PREDICTION_COLORS)}")
    r, g, b = PREDICTION_COLORS[color]
    return Colormap(colors=[[r, g, b, 0.0], [r, g, b, 1.0]], name=f"softseg-{color}",
                    display_name=f"transparent → {color}")


def _fmt(x: Any, spec: str = ".3f") -> str:
    return format(float(x), spec) if isinstance(x, (int, float)) and np.isfinite(x) else "–"


def describe_model(meta: dict[str, Any]) -> str:
    """One line about a model file's metadata: candidate, trained on, threshold, val Dice."""
    cand = meta.get("candidate", {})
    prov = meta.get("provenance", {}) or {}
    val = meta.get("validation", {}) or {}
    channels = meta.get("preprocessing", {}).get("channels", [])
    dataset = prov.get("dataset")
    trained_on = Path(str(dataset)).name if dataset else "?"
    subjects = prov.get("subjects")
    if isinstance(subjects, dict) and isinstance(subjects.get("train"), (list, tuple)):
        trained_on += f" ({len(subjects['train'])} train subjects)"
    return (
        f"{cand.get('title', '?')} ({cand.get('name', '?')}) · trained on {trained_on} · "
        f"{len(channels)} channel(s) · threshold {_fmt(meta.get('threshold'), '.2f')} · "
        f"val Dice {_fmt(val.get('val_dice'))}"
    )


def check_channels(meta: dict[str, Any], layers: Sequence[Any], *, model: str = "model") -> None:
    """Raise InputError unless *layers* are as many 3D images of one shape as the model's channels."""
    channels = list(meta.get("preprocessing", {}).get("channels", []))
    if len(layers) != len(channels):
        raise InputError(
            f"{model} expects {len(channels)} input channel(s) {channels}; {len(layers)} image "
            f"layer(s) selected - select {len(channels)} image layer(s) in this order"
        )
    shapes = {tuple(np.shape(lyr.data)) for lyr in layers}
    if len(shapes) != 1:
        raise InputError(f"the selected image layers have different shapes {sorted(shapes)}; "
                         "select the contrasts of one volume")


def start_prediction(
    viewer: napari.viewer.Viewer,
    model_paths: Sequence[str | Path],
    image_layers: Sequence[Any],
    *,
    device: str = "cpu",
    on_progress: Any = None,
    on_done: Any = None,
    start: bool = True,
) -> Any:
    """Check inputs, snapshot the images and run the models in a thread worker.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    model_paths : sequence of path
        softseg model files (``.safetensors``).
    image_layers : sequence of napari Image layers
        The model's input channels, in the model's channel order.
    device : str
        ``"cpu"``, ``"cuda:0"``, ``"mps"``.
    on_progress : callable(done_fraction: float, message: str), optional
        Called in the main thread.
    on_done : callable(list of layers, error message or None), optional
        Called in the main thread when the worker ended (also after cancel or failure); the
        message is ``"cancelled"`` after a cancel.
    start : bool
        Start the worker (``False``: the caller starts it, e.g. after connecting signals).

    Returns
    -------
    worker
        The started napari worker; ``worker.cancel_event.set()`` cancels (at the next batch).
        Input errors are shown as a notification and ``None`` is returned.
    """
    from napari.qt.threading import thread_worker
    from napari.utils import progress as napari_progress

    from napari_softseg._layers import notify_error
    from napari_softseg.widgets.train import layer_geometry

    try:
        if not model_paths:
            raise InputError("choose one or more model files (.safetensors)")
        if not image_layers:
            raise InputError("choose the image layer(s) to segment")
        metas = []
        for path in model_paths:
            meta = read_metadata(path)
            check_channels(meta, image_layers, model=Path(path).name)
            metas.append(meta)
        geometry = layer_geometry(image_layers[0])
        # Snapshot (plain copies) in the main thread: the user may edit layers while this runs.
        # The reorientation to file order happens in the worker.
        snapshots = [np.array(lyr.data, copy=True) for lyr in image_layers]
    except (InputError, OSError) as exc:
        notify_error(f"Predict: {exc}")
        if on_done is not None:
            on_done([], str(exc))
        return None

    image_name = " + ".join(lyr.name for lyr in image_layers)
    ref = image_layers[0]
    scale, translate = tuple(ref.scale), tuple(ref.translate)
    extra_meta = {"source_path": ref.metadata.get("source_path")}
    cancel = threading.Event()
    pbar = napari_progress(total=100 * len(model_paths), desc=f"Predicting {image_name}")
    added: list[Any] = []
    errors: list[str] = []

    ended: list[bool] = []

    def on_progress_item(index: int, fraction: float, message: str) -> None:
        if ended:  # delivered late (napari's activity dock processes events re-entrantly)
            return
        done = int(round(100 * (index + min(max(fraction, 0.0), 1.0))))
        if on_progress is not None:
            on_progress(done / (100 * len(model_paths)), message)
        # Last: updating napari's activity dock may process further events re-entrantly.
        pbar.update(max(done - pbar.n, 0))
        if message:
            pbar.set_description(message)

    def on_item(item: tuple[Any, ...]) -> None:
        if item[0] == "progress":
            on_progress_item(*item[1:])
        else:
            add_result(*item[1:])

    def add_result(index: int, display_pred: np.ndarray, meta: dict[str, Any]) -> None:
        cand = meta["candidate"]
        layer = viewer.add_image(
            display_pred,
            name=f"{image_name} · {cand['name']}",
            scale=scale,
            translate=translate,
            colormap=prediction_colormap(next(_color_cycle)),
            contrast_limits=(0.0, 1.0),
            blending="translucent",
            metadata={
                **geometry.as_metadata(),
                **extra_meta,
                "softseg_kind": "soft",
                PREDICTION_KEY: {
                    "threshold": float(meta["threshold"]),
                    "candidate": str(cand["name"]),
                    "title": str(cand.get("title", cand["name"])),
                    "model": str(Path(model_paths[index]).resolve()),
                    "image": image_name,
                    "channels": list(meta["preprocessing"]["channels"]),
                    "validation": meta.get("validation", {}),
                    "provenance": meta.get("provenance", {}),
                },
            },
        )
        added.append(layer)

    def failed(exc: BaseException) -> None:
        text = " ".join(str(exc).split()) or type(exc).__name__
        errors.append(text)
        notify_error(f"Predict failed: {text}")

    def finished() -> None:
        ended.append(True)
        pbar.close()
        if on_done is not None:
            on_done(list(added), errors[0] if errors else ("cancelled" if cancel.is_set() else None))

    worker = thread_worker(_predict_models, start_thread=False)(
        [str(p) for p in model_paths], snapshots, geometry, device, cancel
    )
    worker.yielded.connect(on_item)
    worker.errored.connect(failed)
    worker.finished.connect(finished)
    worker.cancel_event = cancel
    if start:
        worker.start()
    return worker


#: Nice value of the thread that runs the network (Linux: per thread), so the viewer's main
#: thread wins the CPU when both want it.
COMPUTE_NICE = 10


def _lower_this_thread_priority(nice: int = COMPUTE_NICE) -> None:
    """Lower the calling (new, dedicated) thread's priority by *nice* where priorities are per
    thread (Linux); torch's OpenMP threads started from it inherit the value."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + nice, 19))
    except (OSError, AttributeError):
        pass


def _compute(paths, display_images, geometry, device, cancel, out: queue.Queue) -> None:
    """Body of the dedicated compute thread: load, predict, reorient; results into *out*."""
    from softseg.modelfile import load_model
    from softseg.predict import PredictionCancelled, predict_volume

    _lower_this_thread_priority()
    try:
        volumes = [geometry.volume(geometry.from_display(np.asarray(a, dtype=np.float32)))
                   for a in display_images]
        del display_images
        for index, path in enumerate(paths):
            if cancel.is_set():
                break
            out.put(("progress", index, 0.0, f"loading {Path(path).name}"))
            loaded = load_model(path)
            name = loaded.candidate_name

            def progress(done: int, total: int, _i: int = index, _n: str = name) -> None:
                out.put(("progress", _i, done / max(total, 1), f"{_n}: slices {done}/{total}"))

            try:
                native = predict_volume(loaded, volumes, device=device, progress=progress,
                                        cancel=cancel)
            except PredictionCancelled:
                break
            if cancel.is_set():
                break
            display = geometry.to_display(np.asarray(native, dtype=np.float32))
            out.put(("progress", index, 1.0, f"{name}: done"))
            out.put(("result", index, display, loaded.metadata))
    except BaseException as exc:  # handed to the worker, which re-raises it in its thread
        out.put(("error", exc))
    finally:
        out.put(("end",))


def _predict_models(paths, display_images, geometry, device, cancel):
    """Worker generator: runs :func:`_compute` in a dedicated low-priority thread and yields
    its ``("progress", i, fraction, message)`` and ``("result", i, display_array, metadata)``
    items to the main thread."""
    items: queue.Queue = queue.Queue()
    thread = threading.Thread(target=_compute, name="softseg-predict", daemon=True,
                              args=(paths, display_images, geometry, device, cancel, items))
    del display_images
    thread.start()
    ended = False
    try:
        while True:
            item = items.get()
            if item[0] == "end":
                ended = True
                break
            if item[0] == "error":
                ended = True
                raise item[1]
            yield item
    finally:
        if not ended:  # worker quit: stop the compute thread at its next batch
            cancel.set()
        thread.join()


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
        from napari_softseg.widgets.train import available_devices

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
        lines = []
        for path in self.model_paths():
            try:
                lines.append(f"{path.name}: {describe_model(read_metadata(path))}")
            except (InputError, OSError) as exc:
                lines.append(f"{path.name}: ✗ {exc}")
        self.model_info.value = "\n".join(lines) if lines else "no model chosen"

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
