"""Start a rater layer from a model's prediction (issue 17 #2): the rater corrects, not repaints.

Sources, offered in the *Pre-annotate* section of *Soft annotation*:

* a **prediction layer** in the viewer — a model's soft prediction (role ``prediction``, the
  model card under :data:`~napari_softseg._metadata.PREDICTION_KEY`), or the per-class layers of
  one K-class prediction (one :data:`~napari_softseg._metadata.GROUP_KEY`, each with its class
  under :data:`~napari_softseg._metadata.CLASS_KEY`), offered as one entry;
* a **model file** (``.safetensors``): :func:`softseg.predict.predict_volume` runs on the image
  in a napari ``thread_worker`` (the image is copied on the main thread first).

The soft prediction becomes painted values through the rater layer's confidence scale with
:func:`softseg.preannotate.prediction_to_codes` (nearest level; K classes: the argmax class at
the level of its probability). The layer is marked in its metadata
(:data:`~napari_softseg._metadata.PREANNOTATION_KEY`), in every autosave snapshot and in the
exported sidecar (``preannotated_by`` and the ``preannotation`` record, whose
``rater_changed_voxels`` counts what the rater corrected), so fusion and training can tell a
corrected pre-annotation from a model's map nobody looked at.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton

from softseg.errors import InputError
from softseg.preannotate import prediction_to_codes

from napari_softseg._metadata import (
    CLASS_KEY,
    GROUP_KEY,
    KIND_KEY,
    PREDICTION_KEY,
    find_layer,
    layer_uid,
    role,
)

__all__ = [
    "MODEL_FILE",
    "PredictionSource",
    "PreannotatePanel",
    "prediction_sources",
    "start_preannotated_layer",
]

#: The choice that runs a model file instead of using a prediction layer.
MODEL_FILE = "model file…"


@dataclass(frozen=True)
class PredictionSource:
    """One prediction the rater can start from: one soft layer, or the K layers of one K-class run.

    ``uids`` in class order; ``classes`` the class names (None: one structure); ``model`` the
    model file the prediction came from (or the layer name when unknown).
    """

    name: str
    uids: tuple[str, ...]
    classes: tuple[str, ...] | None
    model: str


def _model_of(layer: Any) -> str:
    info = (getattr(layer, "metadata", None) or {}).get(PREDICTION_KEY)
    if isinstance(info, Mapping) and info.get("model"):
        return str(info["model"])
    return f"layer {layer.name!r}"


def _is_soft_3d(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and np.ndim(layer.data) == 3 and (
        role(layer) == "prediction" or PREDICTION_KEY in layer.metadata
        or layer.metadata.get(KIND_KEY) == "soft"
    )


def prediction_sources(layers: Sequence[Any]) -> list[PredictionSource]:
    """The predictions in *layers*: K-class runs grouped by GROUP_KEY, single layers alone.

    Soft rater maps (role ``rater``) and fusion outputs are not predictions; a soft layer
    without a role (e.g. a probability map opened from a file) is offered.
    """
    out: list[PredictionSource] = []
    groups: dict[str, list[tuple[int, str, Any]]] = {}
    for lyr in layers:
        if not _is_soft_3d(lyr) or role(lyr) not in (None, "prediction"):
            continue
        tag = lyr.metadata.get(CLASS_KEY)
        group = lyr.metadata.get(GROUP_KEY)
        if group and isinstance(tag, Mapping) and isinstance(tag.get("index"), int):
            groups.setdefault(str(group), []).append((int(tag["index"]), str(tag.get("name")), lyr))
            continue
        out.append(PredictionSource(lyr.name, (layer_uid(lyr),), None, _model_of(lyr)))
    for members in groups.values():
        members.sort(key=lambda m: m[0])
        first = members[0][2]
        names = tuple(m[1] for m in members)
        base = first.name.rsplit(" · ", 1)[0]
        out.append(
            PredictionSource(
                f"{base} ({len(members)} classes)",
                tuple(layer_uid(m[2]) for m in members),
                names if len(names) > 1 else None,
                _model_of(first),
            )
        )
    return out


class PreannotatePanel:
    """*Pre-annotate* section: source combo, model file box, *Start rater layer from prediction*.

    Parameters
    ----------
    viewer : napari viewer
    start_layer : callable(codes, *, classes, model, source) -> layer or None
        Makes the rater layer (the widget: rater id, image, scale, metadata, autosave).
    scale_of : callable() -> ConfidenceScale
        The scale the new layer gets (the editor's).
    image_of : callable() -> image layer or None
    on_message : callable(text, severity)
    """

    def __init__(
        self,
        viewer: Any,
        *,
        start_layer: Callable[..., Any],
        scale_of: Callable[[], Any],
        image_of: Callable[[], Any],
        on_message: Callable[[str, str], None],
    ) -> None:
        self.viewer = viewer
        self._start_layer = start_layer
        self._scale_of = scale_of
        self._image_of = image_of
        self._on_message = on_message
        self.source = ComboBox(label="From", choices=self._choices)
        self.source.tooltip = "A model's prediction layer, or a model file to run on the image"
        self.model_file = FileEdit(label="Model", mode="r", filter="softseg model (*.safetensors)")
        self.start = PushButton(text="Start rater layer from prediction")
        self.start.tooltip = (
            "A new rater layer (your rater id) holding the prediction as confidence levels "
            "(nearest level of the scale); correct it with the brush"
        )
        form = Container(widgets=[self.source, self.model_file], labels=True)
        form.margins = (0, 0, 0, 0)
        self.container = Container(widgets=[form, self.start], labels=False)
        self.container.margins = (0, 0, 0, 0)
        self._parts = (form,)
        self.worker: Any = None
        self.busy = False
        self.source.changed.connect(self._on_source)
        self.start.changed.connect(self._clicked)
        self._on_source()

    # ---------------------------------------------------------------- choices
    def _choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(s.name, s) for s in prediction_sources(list(self.viewer.layers))] + [
            (MODEL_FILE, MODEL_FILE)
        ]

    def refresh(self) -> None:
        self.source.reset_choices()
        self._on_source()

    def _on_source(self, *_: Any) -> None:
        self.model_file.visible = self.source.value == MODEL_FILE

    def _clicked(self) -> None:
        try:
            if self.source.value == MODEL_FILE:
                self.from_model_file(self.model_file.value)
            else:
                self.from_prediction(self.source.value)
        except InputError as exc:
            self._on_message(str(exc), "error")

    # ---------------------------------------------------------------- from a prediction layer
    def from_prediction(self, source: PredictionSource | None) -> Any:
        """A rater layer from prediction layer(s) in the viewer (main thread: the mapping is a
        lookup per voxel). Returns the new layer, or None when the rater cancelled.

        Raises
        ------
        InputError
            No prediction chosen, a layer removed, shapes differing from the image.
        """
        if not isinstance(source, PredictionSource):
            raise InputError("choose a prediction layer (or a model file) under From")
        layers = [find_layer(self.viewer.layers, uid) for uid in source.uids]
        if any(lyr is None for lyr in layers):
            raise InputError(f"the prediction {source.name!r} was removed; choose another one")
        image = self._image_of()
        _check_shape(image, [np.shape(lyr.data) for lyr in layers], source.name)
        probs = np.stack([np.asarray(lyr.data, dtype=np.float32) for lyr in layers]) if source.classes \
            else np.asarray(layers[0].data, dtype=np.float32)
        codes = prediction_to_codes(
            probs, scale=self._scale_of(), n_classes=len(source.classes) if source.classes else None,
            name=f"prediction {source.name!r}",
        )
        return self._start_layer(codes, classes=source.classes, model=source.model, source="layer")

    # ---------------------------------------------------------------- from a model file
    def from_model_file(self, path: Any, *, device: str = "cpu") -> Any:
        """Run a model file on the image in a worker; the rater layer appears when it is done.

        Returns the started worker.

        Raises
        ------
        InputError
            No image or model file, an unreadable card, a model whose input channels do not
            match the image (checked before anything runs; nothing changes).
        """
        from napari.qt.threading import thread_worker

        from softseg.modelfile import read_card

        from napari_softseg._layers import layer_geometry
        from napari_softseg._prediction import check_channels

        if self.busy:
            raise InputError("a prediction is running; wait for it to finish")
        image = self._image_of()
        if image is None:
            raise InputError("pick the image under Image first; the model runs on it")
        if path is None or str(path) in ("", "."):
            raise InputError("choose a model file (.safetensors) under Model")
        path = Path(path)
        card = read_card(path)
        check_channels(card, [image], model=path.name)
        geometry = layer_geometry(image)
        snapshot = np.array(image.data, dtype=np.float32, copy=True)  # main thread
        classes = tuple(card.classes) if len(card.classes) > 1 else None
        scale = self._scale_of()
        me = weakref.ref(self)

        @thread_worker(ignore_errors=True)
        def work() -> np.ndarray:
            return _predict(path, snapshot, geometry, device, len(card.classes))

        def done(probs: np.ndarray) -> None:
            panel = me()
            if panel is None:
                return
            panel.busy = False
            try:
                codes = prediction_to_codes(
                    probs, scale=scale, n_classes=len(classes) if classes else None,
                    name=f"prediction of {path.name}",
                )
                panel._start_layer(codes, classes=classes, model=str(path.resolve()), source="file")
            except InputError as exc:
                panel._on_message(str(exc), "error")

        def failed(exc: BaseException) -> None:
            panel = me()
            if panel is None:
                return
            panel.busy = False
            text = " ".join(str(exc).split()) or type(exc).__name__
            panel._on_message(text if isinstance(exc, InputError) else f"prediction failed: {text}", "error")

        worker = work()
        worker.returned.connect(done)
        worker.errored.connect(failed)
        self.worker = worker
        self.busy = True
        worker.start()
        self._on_message(f"running {path.name} on {image.name} …", "info")
        return worker


def _predict(path: Path, display_image: np.ndarray, geometry: Any, device: str, k: int) -> np.ndarray:
    """Worker body: the model's probabilities in display order, (*spatial) or (K, *spatial)."""
    from softseg.predict import predict_volume

    volume = geometry.volume(geometry.from_display(display_image))
    native = np.asarray(predict_volume(path, volume, device=device), dtype=np.float32)
    if native.ndim == 4:  # (K, X, Y, Z), or (K + 1, ...) with the background first
        if native.shape[0] == k + 1:
            native = native[1:]
        return np.stack([geometry.to_display(c) for c in native])
    return geometry.to_display(native)


def _check_shape(image: Any, shapes: Sequence[tuple[int, ...]], name: str) -> None:
    if image is None:
        raise InputError("pick the image under Image first; the rater layer belongs to it")
    want = tuple(np.shape(image.data))
    for shape in shapes:
        if tuple(shape) != want:
            raise InputError(
                f"prediction {name!r} has shape {tuple(shape)}, image {image.name!r} has {want}; "
                "choose the prediction of this image"
            )


def start_preannotated_layer(
    dock: Any, codes: np.ndarray, *, classes: Sequence[str] | None, model: str, source: str
) -> Any:
    """A new rater layer (the dock's rater id and image) holding a model's prediction as painted
    values, marked with :func:`softseg.preannotate.preannotation_record`.

    Raises
    ------
    InputError
        No image, no rater id, or a layer for that rater exists.
    """
    from softseg.preannotate import preannotation_record

    from napari_softseg._raters import geometry_of

    rater, image = dock._check_new_rater(None, None)
    record = preannotation_record(
        model=model, source=source, model_voxels=int(np.count_nonzero(codes)), rater_changed_voxels=0
    )
    layer = dock.raters.add(
        codes, rater=rater, scale=dock.scale_from_editor(), geometry=geometry_of(image), image=image,
        classes=classes, preannotation=record,
    )
    dock._message(
        f"{rater}: started from {Path(model).name}'s prediction ({record['model_voxels']} voxels); "
        "correct it with the brush — the voxels you change are counted"
    )
    return layer
