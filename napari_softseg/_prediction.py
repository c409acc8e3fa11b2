"""Prediction of image layers with model files, shared by the Predict and Train widgets.

Engine plumbing only (no dock widget): it reads each model's card (:func:`softseg.modelfile.read_card`,
no torch), checks that the picked image layers match the model's input channels, snapshots the
layer data in the main thread, and runs :func:`softseg.predict.predict_volume` in a dedicated
low-priority thread behind a napari worker, with progress and cancel. The image is handed to the
engine in its native file orientation, so resampling to the training spacing uses the true voxel
size; the soft prediction comes back in native geometry and is shown with ``to_display``.

Prediction layers (role ``"prediction"``, :mod:`napari_softseg._metadata`)
--------------------------------------------------------------------------
* A single-class model gives one Image layer ``"<image> · <candidate>"``.
* A K-class model gives, as CONTRACTS.md "K-class predictions in napari" says, one soft Image
  layer per class ``"<image> · <candidate> · <class>"`` (``CLASS_KEY = {"index", "name",
  "classes"}``) and one Labels layer ``"<image> · <candidate> · labels"`` with the argmax (role
  ``"prediction_labels"``, ``CLASS_KEY`` = the class names); all share one ``GROUP_KEY`` id.

Every layer carries ``PREDICTION_KEY`` = :func:`prediction_metadata` (the model card as JSON, read
back typed with :func:`napari_softseg._metadata.prediction_card`), the image's scale, translate
and geometry. A single-class map is drawn in its candidate's colour
(:func:`softseg.palette.candidate_color`, the same in every widget), class maps in their class
colours (:func:`napari_softseg._raters.class_hues`); each colormap is **transparent where p is
small** (alpha 0 up to :data:`TRANSPARENT_BELOW`, then rising to 1 at p = 1), contrast 0..1, so
the anatomy stays visible.

With ``uncertainty=(method, n)`` (MC dropout or test-time augmentation,
:func:`softseg.uncertainty.predict_with_uncertainty`, the function ``softseg predict --mc-dropout
/ --tta`` calls) the prediction layers show the mean of the ``n`` passes, plus role
``"uncertainty"`` layers ``"<image> · <candidate> · entropy"`` (predictive entropy in nats, one per
run, K classes included) and ``"… · variance"`` (per class for K classes, hidden), carrying
:data:`~napari_softseg._metadata.UNCERTAINTY_KEY`; Threshold and Compare never offer them.

With ``uncertainty=("ensemble", n)`` and ``n`` model files, the models are one **ensemble**
(:func:`softseg.uncertainty.predict_ensemble`, what ``softseg predict -m A -m B`` runs): one set
of layers named by :func:`softseg.uncertainty.ensemble_card` (``"<image> ·
conventional:ensemble"``; its card has the mean of the members' thresholds) showing the members'
mean, plus the same entropy and variance layers (between-member variance), with
``PREDICTION_KEY["model"]`` = :func:`model_key` of the members and ``["models"]`` their paths
(fine-tuning a member does not refresh an ensemble's layers).

**Predicting again updates the layers in place** (no ``"… [1]"`` copies): a layer whose metadata
names the same model file and the same image layers (their uids) gets the new data.
:func:`refresh_predictions` re-predicts the layers of one model with another (fine-tuning, issue
17): the layers are updated in place and :data:`prediction_events` ``.refreshed(old, new)`` tells
any open Predict dock (the docks do not import each other).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from napari_softseg._metadata import (
    CLASS_KEY,
    GROUP_KEY,
    KIND_KEY,
    PREDICTION_KEY,
    SOURCE_KEY,
    UNCERTAINTY_KEY,
    find_layer,
    layer_uid,
    role,
    set_role,
)
from softseg.card import ModelCard, render_card
from softseg.errors import InputError
from softseg.modelfile import read_card
from softseg.uncertainty import ENSEMBLE, check_members, ensemble_card

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "IMAGE_ROLES",
    "TRANSPARENT_BELOW",
    "check_channels",
    "describe_model",
    "is_input_image",
    "model_key",
    "model_tooltip",
    "prediction_colormap",
    "prediction_events",
    "prediction_layers",
    "prediction_metadata",
    "refresh_predictions",
    "start_prediction",
]

#: Probabilities below this are fully transparent in a prediction layer's colormap.
TRANSPARENT_BELOW = 0.05
#: Roles of layers that are images a model can read (``None``: a layer nobody gave a role).
IMAGE_ROLES = (None, "image")


def is_input_image(layer: Any) -> bool:
    """Whether ``layer`` is an image a model can read (a training channel, an image to
    predict): a 3D, non-RGB Image layer whose role is ``"image"`` or none and whose kind is not
    ``"soft"`` — never a prediction, a fused map, an overlay or another widget's output."""
    from napari.layers import Image

    return (isinstance(layer, Image) and np.ndim(layer.data) == 3 and not getattr(layer, "rgb", False)
            and role(layer) in IMAGE_ROLES and layer.metadata.get(KIND_KEY) != "soft")


class _PredictionEvents:
    """Module-level events of the prediction plumbing (the docks listen; none imports another)."""

    #: ``refreshed(old_model, new_model)``: prediction layers of ``old_model`` now show
    #: ``new_model``'s prediction (both absolute paths as str).
    refreshed = Signal(str, str)


#: The one instance (see :class:`_PredictionEvents`).
prediction_events = _PredictionEvents()


def _rgb(color: str | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(color, str):
        text = color.lstrip("#")
        if len(text) != 6:
            raise InputError(f"colour {color!r} is not '#rrggbb'")
        return tuple(int(text[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    r, g, b = (float(c) for c in list(color)[:3])
    return r, g, b


def prediction_colormap(color: str | Sequence[float], *, name: str = "") -> Any:
    """A napari colormap: transparent up to :data:`TRANSPARENT_BELOW`, then *color* with alpha
    rising linearly to 1 at p = 1.

    Parameters
    ----------
    color : "#rrggbb" or (r, g, b) in [0, 1]
    name : str
        Shown as the colormap's display name (e.g. the candidate).
    """
    from napari.utils.colormaps import Colormap

    r, g, b = _rgb(color)
    hexa = "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))
    return Colormap(
        colors=[[r, g, b, 0.0], [r, g, b, 0.0], [r, g, b, 1.0]],
        controls=[0.0, TRANSPARENT_BELOW, 1.0],
        name=f"softseg-{hexa}",
        display_name=f"transparent → {name or hexa}",
    )


def _fmt(x: Any, spec: str = ".3f") -> str:
    return format(float(x), spec) if isinstance(x, (int, float)) and np.isfinite(x) else "–"


def describe_model(card: ModelCard) -> str:
    """One line about a model: candidate, classes, trained on, channels, threshold(s), validation
    Dice (the full card is :func:`softseg.card.render_card`)."""
    c = card.candidate
    trained_on = Path(card.dataset).name if card.dataset else "?"
    if card.split.train:
        trained_on += f" ({len(card.split.train)} train subjects)"
    thresholds = ", ".join(f"{t:.2f}" for t in card.thresholds)
    classes = f" · classes {', '.join(card.classes)}" if len(card.classes) > 1 else ""
    return (
        f"{c.title or '?'} ({c.name}){classes} · trained on {trained_on} · "
        f"{len(card.channels)} channel(s) · threshold {thresholds} · "
        f"val Dice {_fmt(card.validation.val_dice)}"
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


def prediction_metadata(card: ModelCard, *, model: str | Path, image: str,
                        image_uids: Sequence[str] = ()) -> dict[str, Any]:
    """What a prediction layer carries under :data:`PREDICTION_KEY` (JSON-able).

    ``card`` is the model card (read back typed by
    :func:`napari_softseg._metadata.prediction_card`); ``image_uids`` the image layers it was
    predicted from (to update it in place); ``threshold``, ``candidate`` and ``title`` repeat the
    card for readers of files saved by earlier releases.
    """
    return {
        "card": card.model_dump(mode="json"),
        "model": str(Path(model).resolve()),
        "image": image,
        "image_uids": list(image_uids),
        "classes": list(card.classes),
        "thresholds": list(card.thresholds),
        "threshold": float(card.thresholds[0]),
        "candidate": card.candidate.name,
        "title": card.candidate.title or card.candidate.name,
    }


def model_tooltip(card: ModelCard, path: str | Path) -> str:
    """The full card as text (:func:`softseg.card.render_card`, what ``softseg info`` prints)."""
    return render_card(card, path=str(path))


def model_key(model: str | Path | Sequence[str | Path]) -> str:
    """What ``PREDICTION_KEY["model"]`` holds: a model file's absolute path; for an ensemble (a
    sequence of files) the members' absolute paths joined by ``" + "`` (as ``softseg predict``'s
    sidecars write it)."""
    if isinstance(model, (str, Path)):
        return str(Path(model).resolve())
    return " + ".join(str(Path(m).resolve()) for m in model)


def prediction_layers(layers: Any, *, model: str | Path | Sequence[str | Path],
                      image_uids: Sequence[str],
                      roles: Sequence[str] = ("prediction", "prediction_labels")) -> list[Any]:
    """The prediction layers (soft maps and argmax; ``roles`` may add ``"uncertainty"``) of
    ``model`` (a file, or an ensemble's files) on these image layers."""
    want_model = model_key(model)
    found = []
    for lyr in layers:
        if role(lyr) not in roles:
            continue
        info = lyr.metadata.get(PREDICTION_KEY)
        if not isinstance(info, dict) or info.get("model") != want_model:
            continue
        if list(info.get("image_uids") or []) == list(image_uids):
            found.append(lyr)
    return found


def _slot(layer: Any) -> Any:
    """Which output of a run a layer shows: ``None`` (single class), class index, "labels"."""
    if role(layer) == "prediction_labels":
        return "labels"
    if role(layer) == "uncertainty":
        info = layer.metadata.get(UNCERTAINTY_KEY) or {}
        return (info.get("map"), info.get("index"))
    cls = layer.metadata.get(CLASS_KEY)
    return cls.get("index") if isinstance(cls, dict) else None


def start_prediction(
    viewer: napari.viewer.Viewer,
    model_paths: Sequence[str | Path],
    image_layers: Sequence[Any],
    *,
    device: str = "auto",
    on_progress: Any = None,
    on_done: Any = None,
    start: bool = True,
    replaces: str | Path | None = None,
    source: str = "Predict",
    uncertainty: tuple[str, int] | None = None,
) -> Any:
    """Check inputs, snapshot the images and run the models in a worker.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    model_paths : sequence of path
        softseg model files (``.safetensors``).
    image_layers : sequence of napari Image layers
        The model's input channels, in the model's channel order.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda:0"``, ``"mps"``.
    on_progress : callable(done_fraction: float, message: str), optional
        Called in the main thread.
    on_done : callable(list of layers, error message or None), optional
        Called in the main thread when the worker ended (also after cancel or failure); the
        message is ``"cancelled"`` after a cancel.
    start : bool
        Start the worker (``False``: the caller starts it, e.g. after connecting signals).
    replaces : path, optional
        With one model: update the layers of this other model on these images (fine-tuning)
        instead of the model's own.
    source : str
        The dock named as the source of notifications.
    uncertainty : (method, n), optional
        ``("ensemble", len(model_paths))``: the models are one ensemble (module docstring).
        ``("mc_dropout" | "tta", passes)``: predict with
        :func:`softseg.uncertainty.predict_with_uncertainty` (seed 0, as the CLI); the
        prediction is the mean of the passes, plus entropy and variance layers (see the module
        docstring). The engine's refusals (no dropout layers, n < 1) end the run with its
        one-line message.

    Returns
    -------
    worker
        The started napari worker; ``worker.cancel_event.set()`` cancels (at the next batch).
        Input errors are shown as a notification and ``None`` is returned.
    """
    from napari.qt.threading import GeneratorWorker
    from napari.utils import progress as napari_progress

    from napari_softseg._layers import layer_geometry
    from napari_softseg.widgets._common import notify

    def notify_error(text: str) -> None:
        notify(text, severity="error", source=source)

    try:
        if not model_paths:
            raise InputError("choose one or more model files (.safetensors)")
        if not image_layers:
            raise InputError("choose the image layer(s) to segment")
        if replaces is not None and len(model_paths) != 1:
            raise InputError("one model replaces another model's prediction at a time")
        cards = [read_card(path) for path in model_paths]
        for path, card in zip(model_paths, cards):
            check_channels(card, image_layers, model=Path(path).name)
        ensemble = uncertainty is not None and uncertainty[0] == ENSEMBLE
        if ensemble:
            check_members(cards, [Path(p).name for p in model_paths])
        geometry = layer_geometry(image_layers[0])
        # Snapshot (plain copies) in the main thread: the user may edit layers while this runs.
        # The reorientation to file order happens in the worker.
        snapshots = [np.array(lyr.data, copy=True) for lyr in image_layers]
    except (InputError, OSError) as exc:
        notify_error(str(exc))
        if on_done is not None:
            on_done([], str(exc))
        return None

    image_name = " + ".join(lyr.name for lyr in image_layers)
    image_uids = [layer_uid(lyr) for lyr in image_layers]
    ref = image_layers[0]
    scale, translate = tuple(ref.scale), tuple(ref.translate)
    # the image's axis names and units (napari warns about mixed units and ignores them then)
    axes = {"units": tuple(ref.units), "axis_labels": tuple(ref.axis_labels)}
    extra_meta = {SOURCE_KEY: ref.metadata.get(SOURCE_KEY)}
    cancel = threading.Event()
    pbar = napari_progress(total=100 * len(model_paths), desc=f"Predicting {image_name}")
    shown: list[str] = []  # uids of the layers added or updated
    errors: list[str] = []
    ended: list[bool] = []
    names_used: dict[str, int] = {}

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

    def base_name(card: ModelCard, index: int) -> str:
        name = f"{image_name} · {card.candidate.name}"
        # two models of one candidate in one run: the second is named by its file
        names_used[name] = names_used.get(name, 0) + 1
        if names_used[name] > 1:
            stem = Path(model_paths[index]).name.removesuffix(".safetensors")
            name = f"{image_name} · {card.candidate.name} ({stem})"
        return name

    def add_result(index: int, display: np.ndarray, labels: Any, card: ModelCard,
                   extra: dict[str, Any] | None = None) -> None:
        if any(find_layer(viewer.layers, u) is None for u in image_uids):
            text = f"{image_name} was removed while it was being predicted; nothing added"
            errors.append(text)
            notify_error(text)
            return
        model: Any = list(model_paths) if ensemble else Path(model_paths[index])
        meta_pred = prediction_metadata(card, model=model_paths[index], image=image_name,
                                        image_uids=image_uids)
        if ensemble:
            meta_pred.update(model=model_key(model), models=[model_key(m) for m in model])
        if extra is not None:
            meta_pred["uncertainty"] = dict(extra["info"])
        old = {_slot(lyr): lyr for lyr in prediction_layers(
            viewer.layers, model=replaces if replaces is not None else model, image_uids=image_uids,
            roles=("prediction", "prediction_labels", "uncertainty"))}
        name = base_name(card, index)
        common = {**extra_meta, PREDICTION_KEY: meta_pred}
        if len(card.classes) == 1:
            specs = [(None, display, name, _candidate_colormap(card), "prediction", {})]
        else:
            group = next((lyr.metadata.get(GROUP_KEY) for lyr in old.values()
                          if lyr.metadata.get(GROUP_KEY)), None) or str(uuid.uuid4())
            specs = [
                (k, display[k], f"{name} · {cname}", _class_colormap(card, k), "prediction",
                 {CLASS_KEY: {"index": k, "name": cname, "classes": list(card.classes)},
                  GROUP_KEY: group})
                for k, cname in enumerate(card.classes, start=1)
            ]
            specs.append(("labels", labels, f"{name} · labels", None, "prediction_labels",
                          {CLASS_KEY: list(card.classes), GROUP_KEY: group}))
        if extra is not None:
            specs += _uncertainty_specs(card, extra, name, group if len(card.classes) > 1 else None)
        for slot, data, lname, cmap, rl, meta in specs:
            metadata = set_role({**geometry.as_metadata(), **common, **meta}, rl)
            layer = old.get(slot)
            if layer is not None:  # predicting again: update in place
                layer.metadata = {**layer.metadata, **metadata}
                layer.data = data
                if cmap is not None:
                    layer.colormap = cmap
            elif rl == "uncertainty":
                metadata[KIND_KEY] = "image"
                layer = viewer.add_image(
                    data, name=lname, scale=scale, translate=translate, colormap=cmap,
                    contrast_limits=_uncertainty_limits(card, slot[0]), blending="additive",
                    metadata=metadata, visible=slot[0] == "entropy", **axes,
                )
            elif slot == "labels":
                metadata[KIND_KEY] = "labels"
                layer = viewer.add_labels(
                    data, name=lname, scale=scale, translate=translate, metadata=metadata,
                    colormap=_labels_colormap(card), opacity=0.5, visible=False, **axes,
                )
            else:
                metadata[KIND_KEY] = "soft"
                layer = viewer.add_image(
                    data, name=lname, scale=scale, translate=translate, colormap=cmap,
                    contrast_limits=(0.0, 1.0), blending="translucent", metadata=metadata,
                    visible=slot in (None, 1), **axes,
                )
            shown.append(layer_uid(layer))

    def failed(exc: BaseException) -> None:
        text = " ".join(str(exc).split()) or type(exc).__name__
        errors.append(text)
        notify_error(f"prediction failed: {text}")

    def finished() -> None:
        ended.append(True)
        pbar.close()
        if on_done is not None:
            layers = [lyr for lyr in (find_layer(viewer.layers, u) for u in shown) if lyr is not None]
            error = errors[0] if errors else ("cancelled" if cancel.is_set() else None)
            on_done(layers, error)

    worker = GeneratorWorker(_predict_models, [str(p) for p in model_paths], snapshots, geometry,
                             device, cancel, uncertainty)
    worker.yielded.connect(on_item)
    worker.errored.connect(failed)
    worker.finished.connect(finished)
    worker.cancel_event = cancel
    if start:
        worker.start()
    return worker


def refresh_predictions(viewer: Any, old_model: str | Path, new_model: str | Path, *,
                        device: str = "auto") -> list[Any]:
    """Predict again, with ``new_model``, every image that has a prediction of ``old_model``,
    updating those layers in place; then emit :data:`prediction_events` ``.refreshed``.

    Returns the started workers (one per predicted image; none when no layer shows
    ``old_model``).
    """
    old = str(Path(old_model).resolve())
    groups: dict[tuple[str, ...], None] = {}
    for lyr in viewer.layers:
        info = lyr.metadata.get(PREDICTION_KEY)
        if role(lyr) == "prediction" and isinstance(info, dict) and info.get("model") == old:
            groups[tuple(info.get("image_uids") or ())] = None
    workers = []
    for uids in groups:
        images = [find_layer(viewer.layers, u) for u in uids]
        if not uids or any(img is None for img in images):
            continue  # its image was closed: nothing to predict on

        def done(_layers: list[Any], error: str | None) -> None:
            if error is None:
                prediction_events.refreshed.emit(old, str(Path(new_model).resolve()))

        worker = start_prediction(viewer, [new_model], images, device=device, replaces=old,
                                  on_done=done)
        if worker is not None:
            workers.append(worker)
    return workers


#: Colormap of the uncertainty layers (black = certain, so additive blending keeps the anatomy).
UNCERTAINTY_COLORMAP = "inferno"


def _uncertainty_limits(card: ModelCard, which: str) -> tuple[float, float]:
    """Contrast limits of an uncertainty map: entropy 0..ln(classes incl. background), variance
    0..0.25 (the largest variance of values in [0, 1])."""
    if which == "entropy":
        return 0.0, float(np.log(max(len(card.classes) + 1, 2)))
    return 0.0, 0.25


def _uncertainty_specs(card: ModelCard, extra: dict[str, Any], name: str, group: str | None) -> list[Any]:
    """Layer specs ``(slot, data, name, colormap, role, metadata)`` of the entropy and variance
    maps of one run (``extra``: ``entropy`` (S, P, L), ``variance`` (S, P, L) or (K+1, S, P, L),
    ``info``: method, passes, seed)."""
    info = dict(extra["info"])
    grouped = {GROUP_KEY: group} if group is not None else {}
    ent = {**info, "map": "entropy", "unit": "nats", "index": None, "class": None}
    specs = [(("entropy", None), extra["entropy"], f"{name} · entropy", UNCERTAINTY_COLORMAP,
              "uncertainty", {UNCERTAINTY_KEY: ent, **grouped})]
    var = {**info, "map": "variance", "unit": "probability squared"}
    if len(card.classes) == 1:
        specs.append((("variance", None), extra["variance"], f"{name} · variance", UNCERTAINTY_COLORMAP,
                      "uncertainty", {UNCERTAINTY_KEY: {**var, "index": None, "class": None}}))
    else:
        for k, cname in enumerate(card.classes, start=1):
            specs.append((("variance", k), extra["variance"][k], f"{name} · {cname} · variance",
                          UNCERTAINTY_COLORMAP, "uncertainty",
                          {UNCERTAINTY_KEY: {**var, "index": k, "class": cname}, **grouped}))
    return specs


def _candidate_colormap(card: ModelCard) -> Any:
    from softseg.palette import candidate_color

    return prediction_colormap(candidate_color(card.candidate.name), name=card.candidate.name)


def _class_colormap(card: ModelCard, index: int) -> Any:
    from napari_softseg._raters import class_hues

    name = card.classes[index - 1]
    return prediction_colormap(class_hues(card.classes)[index - 1], name=name)


def _labels_colormap(card: ModelCard) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    from napari_softseg._raters import class_hues

    colors: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for k, hue in enumerate(class_hues(card.classes), start=1):
        colors[k] = (*hue, 1.0)
    return DirectLabelColormap(color_dict=colors)


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


def _compute_ensemble(paths, volumes, geometry, device, cancel, out: queue.Queue) -> None:
    """The ensemble of ``paths`` (:func:`softseg.uncertainty.predict_ensemble`, the CLI's
    function): one ``("result", 0, ...)`` item with the members' mean, entropy and variance."""
    from softseg.predict import PredictionCancelled, class_labels
    from softseg.uncertainty import predict_ensemble

    n = len(paths)
    card = ensemble_card([read_card(p) for p in paths])

    def progress(done: int, total: int) -> None:
        member = min(int(done * n // max(total, 1)), n - 1)
        out.put(("progress", member, done * n / max(total, 1) - member,
                 f"{card.candidate.name}: slices {done}/{total}"))

    try:
        maps = predict_ensemble(paths, volumes, device=device, progress=progress, cancel=cancel)
    except PredictionCancelled:
        return
    if cancel.is_set():
        return
    display = geometry.to_display(np.asarray(maps.mean, dtype=np.float32))
    labels = class_labels(display) if len(card.classes) > 1 else None
    extra = {"entropy": geometry.to_display(maps.entropy),
             "variance": geometry.to_display(maps.variance),
             "info": {"method": ENSEMBLE, "passes": n, "seed": None}}
    out.put(("progress", n - 1, 1.0, f"{card.candidate.name}: done"))
    out.put(("result", 0, display, labels, card, extra))


def _compute(paths, display_images, geometry, device, cancel, out: queue.Queue, uncertainty=None) -> None:
    """Body of the dedicated compute thread: load, predict, reorient; results into *out*."""
    from softseg.modelfile import load_model
    from softseg.predict import PredictionCancelled, predict_volume

    _lower_this_thread_priority()
    try:
        volumes = [geometry.volume(geometry.from_display(np.asarray(a, dtype=np.float32)))
                   for a in display_images]
        del display_images
        if uncertainty is not None and uncertainty[0] == ENSEMBLE:
            _compute_ensemble(paths, volumes, geometry, device, cancel, out)
            return
        for index, path in enumerate(paths):
            if cancel.is_set():
                break
            out.put(("progress", index, 0.0, f"loading {Path(path).name}"))
            loaded = load_model(path)
            name = loaded.card.candidate.name

            def progress(done: int, total: int, _i: int = index, _n: str = name) -> None:
                out.put(("progress", _i, done / max(total, 1), f"{_n}: slices {done}/{total}"))

            extra = None
            try:
                if uncertainty is None:
                    native = predict_volume(loaded, volumes, device=device, progress=progress,
                                            cancel=cancel)
                else:  # the CLI's function (softseg predict --mc-dropout / --tta), same numbers
                    from softseg.uncertainty import predict_with_uncertainty

                    method, n = uncertainty
                    maps = predict_with_uncertainty(loaded, volumes, method=method, n=n, seed=0,
                                                    device=device, progress=progress, cancel=cancel)
                    native = maps.mean
                    extra = {"entropy": geometry.to_display(maps.entropy),
                             "variance": geometry.to_display(maps.variance),
                             "info": {"method": method, "passes": int(n), "seed": 0}}
            except PredictionCancelled:
                break
            if cancel.is_set():
                break
            display = geometry.to_display(np.asarray(native, dtype=np.float32))
            labels = None
            if len(loaded.card.classes) > 1:  # (K+1, S, P, L), background first
                from softseg.predict import class_labels

                labels = class_labels(display)
            out.put(("progress", index, 1.0, f"{name}: done"))
            out.put(("result", index, display, labels, loaded.card, extra))
    except BaseException as exc:  # handed to the worker, which re-raises it in its thread
        out.put(("error", exc))
    finally:
        out.put(("end",))


def _predict_models(paths, display_images, geometry, device, cancel, uncertainty=None):
    """Worker generator: runs :func:`_compute` in a dedicated low-priority thread and yields
    its ``("progress", i, fraction, message)`` and ``("result", i, display, labels, card, extra)``
    items to the main thread."""
    items: queue.Queue = queue.Queue()
    thread = threading.Thread(target=_compute, name="softseg-predict", daemon=True,
                              args=(paths, display_images, geometry, device, cancel, items, uncertainty))
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
