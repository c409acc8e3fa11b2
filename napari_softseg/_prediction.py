"""Prediction of image layers with model files, shared by the Predict and Train widgets.

Engine plumbing only (no dock widget): it reads each model's card (:func:`softseg.modelfile.read_card`,
no torch), checks that the picked image layers match the model's input channels, snapshots the
layer data in the main thread, and runs :func:`softseg.predict.predict_volume` in a dedicated
low-priority thread behind a napari ``thread_worker``, with progress and cancel. The image is
handed to the engine in its native file orientation, so resampling to the training spacing uses
the true voxel size; the soft prediction comes back in native geometry and is shown with
``to_display``.

Each result is an Image layer ``"<image> · <candidate>"`` with the image's scale, translate and
geometry metadata, a transparent-to-colour colormap, contrast limits 0..1 and
``layer.metadata[PREDICTION_KEY]`` = :func:`prediction_metadata` (the model card as JSON, read
back typed with :func:`napari_softseg._metadata.prediction_card` /
:func:`~napari_softseg._metadata.prediction_threshold`).
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

from napari_softseg._metadata import KIND_KEY, PREDICTION_KEY, SOURCE_KEY
from softseg.card import ModelCard, render_card
from softseg.errors import InputError
from softseg.modelfile import read_card

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "PREDICTION_COLORS",
    "check_channels",
    "describe_model",
    "prediction_colormap",
    "model_tooltip",
    "prediction_metadata",
    "start_prediction",
]

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


def describe_model(card: ModelCard) -> str:
    """One line about a model: candidate, trained on, channels, threshold(s), validation Dice
    (the full card is :func:`softseg.card.render_card`, shown as the tooltip)."""
    c = card.candidate
    trained_on = Path(card.dataset).name if card.dataset else "?"
    if card.split.train:
        trained_on += f" ({len(card.split.train)} train subjects)"
    thresholds = ", ".join(f"{t:.2f}" for t in card.thresholds)
    return (
        f"{c.title or '?'} ({c.name}) · trained on {trained_on} · {len(card.channels)} channel(s) · "
        f"threshold {thresholds} · val Dice {_fmt(card.validation.val_dice)}"
    )


def check_channels(card: ModelCard, layers: Sequence[Any], *, model: str = "model") -> None:
    """Raise InputError unless *layers* are as many 3D images of one shape as the model's channels."""
    channels = list(card.channels)
    if len(layers) != len(channels):
        raise InputError(
            f"{model} expects {len(channels)} input channel(s) {channels}; {len(layers)} image "
            f"layer(s) selected - select {len(channels)} image layer(s) in this order"
        )
    shapes = {tuple(np.shape(lyr.data)) for lyr in layers}
    if len(shapes) != 1:
        raise InputError(f"the selected image layers have different shapes {sorted(shapes)}; "
                         "select the contrasts of one volume")


def prediction_metadata(card: ModelCard, *, model: str | Path, image: str) -> dict[str, Any]:
    """What a prediction layer carries under :data:`PREDICTION_KEY` (JSON-able).

    ``card`` is the model card (read back typed by
    :func:`napari_softseg._metadata.prediction_card`); ``threshold``, ``candidate`` and
    ``title`` repeat it for readers of files saved by earlier releases.
    """
    return {
        "card": card.model_dump(mode="json"),
        "model": str(Path(model).resolve()),
        "image": image,
        "classes": list(card.classes),
        "thresholds": list(card.thresholds),
        "threshold": float(card.thresholds[0]),
        "candidate": card.candidate.name,
        "title": card.candidate.title or card.candidate.name,
    }


def model_tooltip(card: ModelCard, path: str | Path) -> str:
    """The full card as text (:func:`softseg.card.render_card`)."""
    return render_card(card, path=str(path))


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

    from napari_softseg._layers import layer_geometry, notify_error

    try:
        if not model_paths:
            raise InputError("choose one or more model files (.safetensors)")
        if not image_layers:
            raise InputError("choose the image layer(s) to segment")
        for path in model_paths:
            check_channels(read_card(path), image_layers, model=Path(path).name)
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
    extra_meta = {SOURCE_KEY: ref.metadata.get(SOURCE_KEY)}
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

    def add_result(index: int, display_pred: np.ndarray, card: ModelCard) -> None:
        layer = viewer.add_image(
            display_pred,
            name=f"{image_name} · {card.candidate.name}",
            scale=scale,
            translate=translate,
            colormap=prediction_colormap(next(_color_cycle)),
            contrast_limits=(0.0, 1.0),
            blending="translucent",
            metadata={
                **geometry.as_metadata(),
                **extra_meta,
                KIND_KEY: "soft",
                PREDICTION_KEY: prediction_metadata(card, model=model_paths[index], image=image_name),
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
            out.put(("result", index, display, loaded.card))
    except BaseException as exc:  # handed to the worker, which re-raises it in its thread
        out.put(("error", exc))
    finally:
        out.put(("end",))


def _predict_models(paths, display_images, geometry, device, cancel):
    """Worker generator: runs :func:`_compute` in a dedicated low-priority thread and yields
    its ``("progress", i, fraction, message)`` and ``("result", i, display_array, card)``
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
