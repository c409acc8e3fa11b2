"""The dock's rater layers: making one, and what each gets attached (keys, guard, tracker, autosave).

A rater layer is a napari Labels layer with the role ``rater``, the rater id, the confidence
scale, a colour (:data:`~napari_softseg._metadata.HUE_KEY`) and, for a multi-class project, the
class names (:data:`~napari_softseg._metadata.CLASS_KEY`; its values are class codes). Each
rater layer the dock sees gets, once per :func:`~napari_softseg._metadata.layer_uid`:

* colours (class colours for a multi-class layer) and the features table napari's status bar
  reads (class, confidence, soft value);
* the level keys ``0..9``, the class keys (:mod:`._classes`) and the fill key
  (:data:`._interpolation.FILL_KEY`);
* a :class:`._levels.LevelGuard`, a :class:`._interpolation.SliceTracker` and its autosave
  session (:mod:`._autosave`);
* for a pre-annotated layer, the model's map the rater's changes are counted against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from softseg.confidence import MAX_LEVELS, ConfidenceScale
from softseg.confidence import METADATA_KEY as SCALE_KEY
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.preannotate import changed_voxels

from napari_softseg._layers import add_volume_layer
from napari_softseg._metadata import CLASS_KEY, HUE_KEY, PREANNOTATION_KEY, RATER_KEY, find_layer, layer_uid, set_role
from napari_softseg._raters import (
    PALETTE,
    code_colormap,
    code_features,
    hue_of,
    layer_classes,
    level_colormap,
    level_features,
    next_free_hue,
)
from napari_softseg.widgets.annotate._autosave import RaterAutosave
from napari_softseg.widgets.annotate._classes import bind_class_keys, select_code, unbind_class_keys
from napari_softseg.widgets.annotate._export import source_of
from napari_softseg.widgets.annotate._interpolation import FILL_KEY, SliceTracker
from napari_softseg.widgets.annotate._levels import LevelGuard, bind_level_keys, set_level
from napari_softseg.widgets.annotate._navigation import default_brush_size, painted_slices

__all__ = ["RaterLayers", "style_rater_layer"]


def style_rater_layer(layer: Any, scale: ConfidenceScale) -> None:
    """Store *scale* on the layer and colour it: class colours by level for a multi-class layer
    (:func:`~napari_softseg._raters.code_colormap`), the rater's hue by level otherwise."""
    layer.metadata[SCALE_KEY] = scale.as_dict()
    classes = layer_classes(layer)
    if classes:
        layer.colormap = code_colormap(scale, classes)
        layer.features = code_features(scale, classes)
    else:
        layer.colormap = level_colormap(scale, hue_of(layer))
        layer.features = level_features(scale)


class RaterLayers:
    """Rater layers of one dock, by layer uid (see the module docstring).

    Parameters
    ----------
    dock : AnnotateWidget
        Its viewer, image, autosave controller, messages, and the callbacks of its bars.
    """

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.guards: dict[str, LevelGuard] = {}
        self.trackers: dict[str, SliceTracker] = {}
        #: uid -> (the model's map, voxels counted as changed before): pre-annotated layers
        self.references: dict[str, tuple[np.ndarray, int]] = {}
        self.synced: dict[str, tuple[Any, Callable[..., None]]] = {}

    # ---------------------------------------------------------------- making one
    def add(
        self, levels: np.ndarray, *, rater: str, scale: ConfidenceScale, geometry: DisplayGeometry,
        image: Any, hue: int | None = None, classes: Sequence[str] | None = None,
        preannotation: dict | None = None,
    ) -> Any:
        """A new rater layer holding *levels* (levels, or class codes when *classes* is given)."""
        dock = self.dock
        viewer = dock.viewer
        hue = next_free_hue(viewer.layers) if hue is None else hue
        metadata = set_role({RATER_KEY: rater, SCALE_KEY: scale.as_dict(), HUE_KEY: hue}, "rater")
        if classes:
            metadata[CLASS_KEY] = list(classes)
        if preannotation is not None:
            metadata[PREANNOTATION_KEY] = dict(preannotation)
        layer = add_volume_layer(
            viewer, levels, geometry, kind="labels", name=rater,
            source_path=source_of(image), metadata=metadata, opacity=0.85,
        )
        if preannotation is not None:  # the rater's changes are counted from the map as it is now
            self.references[layer_uid(layer)] = (
                np.array(levels, copy=True), int(preannotation.get("rater_changed_voxels") or 0))
        self.attach(layer)
        dims = viewer.dims
        displayed = tuple(int(a) for a in dims.displayed[-2:]) if dims.ndim == 3 else (1, 2)
        layer.brush_size = default_brush_size(tuple(np.shape(levels)), displayed)
        layer.selected_label = min(scale.n_levels, 2)
        layer.mode = "paint"
        dock._layer.reset_choices()
        dock._layer.value = layer_uid(layer)
        viewer.layers.selection.active = layer
        return layer

    # ---------------------------------------------------------------- attaching
    def attach(self, layer: Any) -> RaterAutosave | None:
        """Make a Labels layer a rater layer: scale, colours, keys, guard, tracker, autosave
        (once per uid). Returns its autosave session (None when autosave is off)."""
        dock = self.dock
        uid = layer_uid(layer)
        if uid in self.synced:
            return dock.autosave.for_layer(layer)
        scale = ConfidenceScale.from_dict(layer.metadata[SCALE_KEY]) if layer.metadata.get(SCALE_KEY) else None
        if scale is None:  # e.g. a binary rater map opened without a sidecar
            top = int(np.max(layer.data)) if np.size(layer.data) else 0
            scale = ConfidenceScale.binary() if top <= 1 else ConfidenceScale.linear(min(top, MAX_LEVELS))
        layer.metadata.setdefault(RATER_KEY, layer.name)
        others = [lyr for lyr in dock.viewer.layers if layer_uid(lyr) != uid]
        hue = layer.metadata.get(HUE_KEY)
        # keep the layer's hue unless another open rater has it (the reader guesses from the id)
        if not isinstance(hue, int) or next_free_hue(others, prefer=hue) != hue % len(PALETTE):
            layer.metadata[HUE_KEY] = next_free_hue(others)
        layer.metadata.setdefault("softseg_role", "rater")
        style_rater_layer(layer, scale)
        bind_level_keys(layer, self._key_level)
        bind_class_keys(layer, self._key_class)
        layer.bind_key(FILL_KEY, lambda lyr: dock.interpolate(lyr), overwrite=True)
        self.guards[uid] = LevelGuard(layer, lambda text: dock._message(text, severity="warning"))
        self.trackers[uid] = SliceTracker(layer, dock.viewer)

        def sync(*_args: Any, uid: str = uid) -> None:
            dock._sync_bar(uid)

        layer.events.selected_label.connect(sync)
        layer.events.mode.connect(sync)
        self.synced[uid] = (layer, sync)
        return self._autosave(layer)

    def _autosave(self, layer: Any) -> RaterAutosave | None:
        # snapshots are filed under the image they annotate (the rater file itself otherwise)
        dock = self.dock
        image = dock.image_layer
        if image is not None and tuple(np.shape(image.data)) == tuple(np.shape(layer.data)):
            src, image_name = source_of(image), image.name
        else:
            src, image_name = source_of(layer), layer.name
        try:
            session = dock.autosave.attach(layer, image_path=src, image_name=image_name)
        except InputError as exc:
            dock._message(f"autosave is off for {layer.name!r}: {exc}", severity="warning")
            return None
        if session.target.is_fallback:
            why = "has no file on disk" if src is None else f"cannot be written next to it ({session.target.problem})"
            dock._on_autosave_message("fallback", f"{image_name} {why}: autosaving to {session.folder}")
        dock._set_status(f"Autosave: {session.folder}")
        return session

    def _key_level(self, layer: Any, level: int) -> None:
        dock = self.dock
        set_level(layer, level, on_message=None if dock._closed else dock._message)
        if not dock._closed:
            dock._sync_bar(layer_uid(layer))

    def _key_class(self, layer: Any, k: int) -> None:
        dock = self.dock
        dock._guard(lambda: select_code(layer, class_index=k))
        if not dock._closed:
            dock._sync_bar(layer_uid(layer))

    def forget(self, uid: str) -> None:
        """Disconnect from a rater layer (removed, or the dock closes)."""
        for store in (self.guards, self.trackers):
            helper = store.pop(uid, None)
            if helper is not None:
                helper.close()
        self.references.pop(uid, None)
        layer, sync = self.synced.pop(uid, (None, None))
        if layer is not None:
            for emitter in (layer.events.selected_label, layer.events.mode):
                try:
                    emitter.disconnect(sync)
                except (TypeError, ValueError, RuntimeError):
                    pass

    def close(self) -> None:
        for uid in set(self.synced) | set(self.guards) | set(self.trackers):
            layer = self.synced.get(uid, (None, None))[0]
            if layer is not None:
                unbind_class_keys(layer)
            self.forget(uid)

    # ---------------------------------------------------------------- slices, pre-annotation
    def slice_kinds(self, layer: Any, axis: int) -> dict[int, str]:
        """Painted / pre-annotated / interpolated slices of a rater layer along *axis*."""
        kinds = {int(i): "painted" for i in painted_slices(layer, axis)}
        uid = layer_uid(layer)
        ref = self.references.get(uid)
        if ref is not None and np.shape(ref[0]) == np.shape(layer.data):
            other = tuple(a for a in range(3) if a != axis)
            changed = set(np.flatnonzero(np.any(np.asarray(layer.data) != ref[0], axis=other)).tolist())
            kinds.update({i: "preannotated" for i in kinds if i not in changed})
        tracker = self.trackers.get(uid)
        if tracker is not None:
            kinds.update({i: "interpolated" for i in tracker.interpolated(axis) if i in kinds})
        return kinds

    def preannotation_record(self, layer: Any) -> dict | None:
        """A pre-annotated layer's record with the rater's changes counted now (None: not one);
        the layer metadata is brought up to date."""
        record = layer.metadata.get(PREANNOTATION_KEY) if layer is not None else None
        if not isinstance(record, dict):
            return None
        out = dict(record)
        ref = self.references.get(layer_uid(layer))
        if ref is not None:
            out["rater_changed_voxels"] = changed_voxels(np.asarray(layer.data), ref[0], before=ref[1])
            layer.metadata[PREANNOTATION_KEY] = dict(out)
        return out

    def on_record(self, uid: str, record: dict) -> None:
        """An autosave snapshot counted the rater's changes: keep the metadata up to date."""
        layer = find_layer(self.dock.viewer.layers, uid)
        if layer is not None and isinstance(layer.metadata.get(PREANNOTATION_KEY), dict):
            layer.metadata[PREANNOTATION_KEY] = dict(record)
