"""The *Soft annotation* dock: rater layers, confidence levels, navigation, export, recovery.

The widget is a thin view. Levels -> soft values is :mod:`softseg.confidence`; snapshots and
recovery are :mod:`softseg.autosave` (driven by :mod:`._autosave`); the level bar and the guard
against labels off the scale are :mod:`._levels`; orientation letters, slice keys and the
annotated-slice bar are :mod:`._navigation`; the recovery banner and its questions are
:mod:`._recovery`. Layers are tracked by :func:`napari_softseg._metadata.layer_uid`, never by
Python identity (the Plugins menu hands the widget proxies).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
)
from napari.layers import Image, Labels, Layer
from qtpy.QtWidgets import QFileDialog, QVBoxLayout, QWidget

from softseg.autosave import (
    Recovery,
    discard_recovery,
    list_recoveries,
    mark_recovery,
    rater_file_stem,
    record_export,
)
from softseg.confidence import MAX_LEVELS, ConfidenceScale
from softseg.confidence import METADATA_KEY as SCALE_KEY
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import sidecar_path

from napari_softseg._layers import add_volume_layer
from napari_softseg._metadata import (
    HUE_KEY,
    KIND_KEY,
    RATER_KEY,
    SOURCE_KEY,
    find_layer,
    layer_uid,
    set_role,
)
from napari_softseg._raters import (
    PALETTE,
    geometry_of,
    hue_of,
    is_level_layer,
    layer_scale,
    level_colormap,
    level_features,
    next_free_hue,
    rater_id,
    soft_colormap,
)
from napari_softseg.widgets._common import (
    PaintModeRemovalGuard,
    collapsible,
    confirm_overwrite,
    notify,
    scroll_area,
)
from napari_softseg.widgets.annotate._files import (
    export_path_for,
    read_rater_file,
    write_rater_file,
)
from napari_softseg.widgets.annotate._scale_editor import ScaleEditor
from napari_softseg.widgets.annotate._autosave import (
    AutosaveController,
    FlushOnClose,
    RaterAutosave,
)
from napari_softseg.widgets.annotate._levels import LevelBar, LevelGuard, bind_level_keys, set_level
from napari_softseg.widgets.annotate._navigation import (
    OrientationLetters,
    SliceNavigator,
    bind_slice_keys,
    default_brush_size,
    unbind_slice_keys,
)
from napari_softseg.widgets.annotate._recovery import (
    DISCARD,
    KEEP_BOTH,
    RESTORE,
    RecoveryBanner,
    ask_pending,
    confirm_discard,
    describe,
    plan_restore,
)

__all__ = ["SOURCE", "AnnotateWidget", "export_path_for"]

#: Name shown as the source of this widget's notifications.
SOURCE = "Soft annotation"
EXPORT_SOFT = "soft map (float32)"
EXPORT_LEVELS = "levels (integer)"


def _source_of(layer: Any) -> Path | None:
    if layer is None:
        return None
    src = layer.metadata.get(SOURCE_KEY) or getattr(layer.source, "path", None)
    return Path(src) if src else None


class AnnotateWidget(Container):
    """ "Soft annotation": rater layers, confidence levels, navigation, export/open, autosave, recovery.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (napari passes a proxy of it when the widget is opened from the Plugins menu).
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self._syncing = False
        self._closed = False
        self._offered: set[str] = set()
        self._last_image_uid: str | None = None
        self._guards: dict[str, LevelGuard] = {}
        self._synced: dict[
            str, tuple[Any, Callable[..., None]]
        ] = {}  # uid -> (layer, level-bar sync)

        # ---- recovery banner (top), rater layer row
        self._banner = RecoveryBanner(
            lambda: self._guard(self.restore), lambda: self._guard(self._discard_clicked)
        )
        self._image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self._rater_id = LineEdit(label="Rater id", value="")
        self._rater_id.native.setPlaceholderText("required: your initials, e.g. AB")
        self._rater_id.tooltip = "Names your layer and your files; type it before adding a layer."
        self._add = PushButton(text="Add rater layer")
        self._layer = ComboBox(label="Rater layer", choices=self._rater_choices, nullable=True)
        top = Container(widgets=[self._image, self._rater_id, self._add, self._layer], labels=True)
        top.margins = (0, 0, 0, 0)

        # ---- levels and slices
        self._levels_title = Label(value="Confidence level (keys 1..K; 0 or E erase)")
        self._level_bar = LevelBar(self.select_level)
        self._slices = SliceNavigator(self.viewer)

        # ---- confidence scale (folded)
        self._scale = ScaleEditor()
        # the editor's widgets, as attributes of the dock (tests and scripts use them)
        self._preset, self._n_levels = self._scale.preset, self._scale.n_levels
        self._table, self._apply = self._scale.table, self._scale.apply

        # ---- export / open (folded)
        self._export_kind = ComboBox(label="Export as", choices=[EXPORT_SOFT, EXPORT_LEVELS])
        self._export_path = FileEdit(label="File", mode="w", filter="NIfTI (*.nii.gz *.nii)")
        self._export = PushButton(text="Export rater…")
        self._open = PushButton(text="Open rater file…")
        io_box = Container(widgets=[self._export_kind, self._export_path], labels=True)
        io_box.margins = (0, 0, 0, 0)
        io_all = Container(widgets=[io_box, self._export, self._open], labels=False)
        io_all.margins = (0, 0, 0, 0)

        self._status = Label(value="Type your rater id and press Add rater layer")
        self._status.native.setWordWrap(True)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self._banner.widget)
        layout.addWidget(top.native)
        layout.addWidget(self._levels_title.native)
        layout.addWidget(self._level_bar)
        layout.addWidget(self._slices)
        self._scale_section = collapsible("Confidence scale", self._scale.container.native)
        self._io_section = collapsible("Export / open rater files", io_all.native, expanded=True)
        layout.addWidget(self._scale_section)
        layout.addWidget(self._io_section)
        layout.addWidget(self._status.native)
        layout.addStretch(1)
        self._body_parts = (top, io_all)  # keep the magicgui containers alive
        super().__init__(widgets=[], labels=False)
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(scroll_area(body))

        # ---- engine-side helpers
        self.autosave = AutosaveController(
            self.viewer,
            on_saved=self._on_saved,
            on_closed=self._on_session_closed,
            on_message=self._on_autosave_message,
        )
        self._flush_on_close = FlushOnClose(self.autosave, self.native)
        self._removal_guard = PaintModeRemovalGuard(self.viewer, self.native)
        self.orientation_letters = OrientationLetters(self.viewer, self.native)
        bind_slice_keys(self.viewer)
        # closing the dock (or the viewer) writes what is pending, stops the writer threads and
        # disconnects from the viewer
        self.native.destroyed.connect(lambda *_: self.close_autosave())

        self._add.changed.connect(lambda: self._guard(self._add_clicked))
        self._layer.changed.connect(self._on_layer_choice)
        self._image.changed.connect(self._on_image_choice)
        self._apply.changed.connect(lambda: self._guard(self.apply_scale))
        self._export.changed.connect(lambda: self._guard(self._export_clicked))
        self._open.changed.connect(lambda: self._guard(self._open_clicked))
        self._rater_id.changed.connect(self._on_rater_text)
        self._export_kind.changed.connect(self._on_export_kind)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)
        layers.selection.events.active.connect(self._on_active_layer)
        self._on_inserted()
        self._on_rater_text()

    # ------------------------------------------------------------------ messages
    def _message(self, text: str, *, severity: str = "info") -> None:
        """One line in the widget's status and a notification from "Soft annotation"."""
        self._set_status(text)
        notify(text, severity=severity, source=SOURCE)

    def _set_status(self, text: str) -> None:
        try:
            self._status.value = text
        except RuntimeError:  # the dock was closed
            pass

    def _guard(self, func: Callable[[], Any]) -> Any:
        try:
            return func()
        except InputError as exc:
            self._message(str(exc), severity="error")
            return None

    def _on_autosave_message(self, kind: str, text: str) -> None:
        key = f"{kind}:{text}"
        if key in self._offered:
            return  # say each folder problem once
        self._offered.add(key)
        self._message(text, severity="warning")

    # ------------------------------------------------------------------ choices (uids)
    def _image_choices(self, _w: Any = None) -> list[tuple[str, str]]:
        return [
            (lyr.name, layer_uid(lyr))
            for lyr in self.viewer.layers
            if isinstance(lyr, Image)
            and lyr.metadata.get(KIND_KEY) != "soft"
            and np.ndim(lyr.data) == 3
        ]

    def _rater_choices(self, _w: Any = None) -> list[tuple[str, str]]:
        return [
            (lyr.name, layer_uid(lyr))
            for lyr in self.viewer.layers
            if isinstance(lyr, Labels) and RATER_KEY in lyr.metadata
        ]

    @property
    def image_layer(self) -> Image | None:
        """The image the rater layers belong to (None when none is picked or it was removed)."""
        return find_layer(self.viewer.layers, self._image.value)

    @property
    def rater_layer(self) -> Labels | None:
        """The rater layer being edited."""
        return find_layer(self.viewer.layers, self._layer.value)

    def _refresh_choices(self) -> None:
        self._image.reset_choices()
        self._layer.reset_choices()
        if self._image.value is None:
            images = [c for c in self._image.choices if c is not None]
            if images:
                self._image.value = images[0]

    def _on_inserted(self, event: Any = None) -> None:
        if self._closed:
            return
        self._refresh_choices()
        for lyr in list(self.viewer.layers):
            if is_level_layer(lyr):
                self._attach(lyr)
        added = getattr(event, "value", None)
        if added is not None and isinstance(added, Image) and self.image_layer is not None:
            if layer_uid(self.image_layer) == layer_uid(added):
                self._on_image_choice(self._image.value)

    def _on_removed(self, event: Any = None) -> None:
        if self._closed:
            return
        removed = getattr(event, "value", None)
        if removed is not None:
            uid = layer_uid(removed)
            self._forget(uid)
        self._refresh_choices()
        if self.rater_layer is None:
            self._slices.set_layer(None)
            self._level_bar.rebuild(None, PALETTE[0])

    def _forget(self, uid: str) -> None:
        """Disconnect from a rater layer (removed, or the widget closes)."""
        guard = self._guards.pop(uid, None)
        if guard is not None:
            guard.close()
        layer, sync = self._synced.pop(uid, (None, None))
        if layer is not None:
            for emitter in (layer.events.selected_label, layer.events.mode):
                try:
                    emitter.disconnect(sync)
                except (TypeError, ValueError, RuntimeError):
                    pass

    def _on_active_layer(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and isinstance(active, Labels) and RATER_KEY in active.metadata:
            uid = layer_uid(active)
            if self._layer.value != uid:
                self._layer.value = uid

    def _on_image_choice(self, value: Any = None) -> None:
        self._suggest_export_path()
        self._update_add_button()
        # offer recovery when an image is opened or picked (not on every list refresh)
        if value is not None and value != self._last_image_uid:
            self._last_image_uid = value
            self.check_recoveries(self.image_layer)

    def _on_rater_text(self, *_: Any) -> None:
        self._update_add_button()
        self._suggest_export_path()

    def _update_add_button(self) -> None:
        typed = bool(str(self._rater_id.value).strip())
        image = self.image_layer is not None
        self._add.enabled = typed and image
        self._add.tooltip = (
            "Add a Labels layer for this rater on the image"
            if typed and image
            else "Open an image first"
            if not image
            else "Type your rater id first"
        )

    # ------------------------------------------------------------------ rater layers
    def _add_clicked(self) -> None:
        self.add_rater_layer()

    def add_rater_layer(
        self, rater_id: str | None = None, *, image: Image | None = None, on_pending: str = "ask"
    ) -> Labels | None:
        """A new Labels layer for *rater_id* with the image's shape and geometry.

        When the rater has pending (never exported) work on this image, the rater chooses first:
        ``on_pending="ask"`` shows the question; ``"Restore"``, ``"Keep both"`` or ``"Discard"``
        answer it from code.

        Returns
        -------
        Labels or None
            The rater's layer (the restored one for *Restore*); None when the rater cancelled.

        Raises
        ------
        InputError
            No image, an empty rater id, or a layer for that rater already exists.
        """
        image = image or self.image_layer
        if image is None:
            raise InputError(
                "open an image first (File > Open, or the SoftSeg sample), then add a rater layer"
            )
        rater = str(rater_id if rater_id is not None else self._rater_id.value).strip()
        if not rater:
            raise InputError("type your rater id (e.g. your initials) before adding a rater layer")
        if any(
            isinstance(lyr, Labels) and lyr.metadata.get(RATER_KEY) == rater
            for lyr in self.viewer.layers
        ):
            raise InputError(
                f"a layer for rater {rater!r} exists already; pick it under 'Rater layer' or type another id"
            )
        scale = self.scale_from_editor()
        pending = [r for r in self._list_pending(image) if r.rater == rater]
        if pending:
            choice = ask_pending(self.native, rater, pending) if on_pending == "ask" else on_pending
            if choice not in (RESTORE, KEEP_BOTH, DISCARD):
                self._set_status(f"Nothing added: {rater}'s unsaved work is still offered above")
                return None
            if choice == RESTORE:
                return self.restore(pending, image=image)[0]
            if choice == KEEP_BOTH:
                self.restore(pending, image=image, as_copies=True)
            if choice == DISCARD:
                if on_pending == "ask" and not confirm_discard(
                    self.native, pending, str(pending[0].path.parent)
                ):
                    self._set_status(
                        f"Nothing added: {rater}'s unsaved work is still offered above"
                    )
                    return None
                self.discard(pending)
        layer = self._add_levels_layer(
            np.zeros(np.shape(image.data), dtype=np.uint8),
            rater=rater,
            scale=scale,
            geometry=geometry_of(image),
            image=image,
        )
        self._set_status(
            f"{rater}: paint with the level keys 1..{scale.n_levels}; every stroke is autosaved"
        )
        return layer

    def _add_levels_layer(
        self,
        levels: np.ndarray,
        *,
        rater: str,
        scale: ConfidenceScale,
        geometry: DisplayGeometry,
        image: Layer | None,
        hue: int | None = None,
    ) -> Labels:
        hue = next_free_hue(self.viewer.layers) if hue is None else hue
        metadata = set_role({RATER_KEY: rater, SCALE_KEY: scale.as_dict(), HUE_KEY: hue}, "rater")
        layer = add_volume_layer(
            self.viewer,
            levels,
            geometry,
            kind="labels",
            name=rater,
            source_path=_source_of(image),
            metadata=metadata,
            opacity=0.85,
        )
        self._attach(layer)
        displayed = (
            tuple(int(a) for a in self.viewer.dims.displayed[-2:])
            if self.viewer.dims.ndim == 3
            else (1, 2)
        )
        layer.brush_size = default_brush_size(tuple(np.shape(levels)), displayed)
        layer.selected_label = min(scale.n_levels, 2) if scale.n_levels >= 2 else 1
        layer.mode = "paint"
        self._layer.reset_choices()
        self._layer.value = layer_uid(layer)
        self.viewer.layers.selection.active = layer
        return layer

    def _attach(self, layer: Labels) -> RaterAutosave | None:
        """Make a Labels layer a rater layer: scale, colours, level keys, guard, autosave (once per uid)."""
        uid = layer_uid(layer)
        if uid in self._synced:
            return self.autosave.for_layer(layer)
        scale = layer_scale(layer)
        if scale is None:  # e.g. a binary rater map opened without a sidecar
            top = int(np.max(layer.data)) if np.size(layer.data) else 0
            scale = (
                ConfidenceScale.binary()
                if top <= 1
                else ConfidenceScale.linear(min(top, MAX_LEVELS))
            )
        layer.metadata.setdefault(RATER_KEY, layer.name)
        others = [lyr for lyr in self.viewer.layers if layer_uid(lyr) != uid]
        hue = layer.metadata.get(HUE_KEY)
        # keep the layer's hue unless another open rater has it (the reader guesses from the id)
        if not isinstance(hue, int) or next_free_hue(others, prefer=hue) != hue % len(PALETTE):
            layer.metadata[HUE_KEY] = next_free_hue(others)
        layer.metadata.setdefault("softseg_role", "rater")
        self._style(layer, scale)
        bind_level_keys(layer, self._key_level)
        self._guards[uid] = LevelGuard(layer, lambda text: self._message(text, severity="warning"))

        def sync(*_args: Any, uid: str = uid) -> None:
            self._sync_bar(uid)

        layer.events.selected_label.connect(sync)
        layer.events.mode.connect(sync)
        self._synced[uid] = (layer, sync)
        # snapshots are filed under the image they annotate (the rater file itself otherwise)
        image = self.image_layer
        if image is not None and tuple(np.shape(image.data)) == tuple(np.shape(layer.data)):
            src, image_name = _source_of(image), image.name
        else:
            src, image_name = _source_of(layer), layer.name
        try:
            session = self.autosave.attach(layer, image_path=src, image_name=image_name)
        except InputError as exc:
            self._message(f"autosave is off for {layer.name!r}: {exc}", severity="warning")
            return None
        if session.target.is_fallback:
            why = (
                "has no file on disk"
                if src is None
                else f"cannot be written next to it ({session.target.problem})"
            )
            self._on_autosave_message(
                "fallback", f"{image_name} {why}: autosaving to {session.folder}"
            )
        self._set_status(f"Autosave: {session.folder}")
        return session

    @staticmethod
    def _style(layer: Labels, scale: ConfidenceScale) -> None:
        layer.metadata[SCALE_KEY] = scale.as_dict()
        layer.colormap = level_colormap(scale, hue_of(layer))
        layer.features = level_features(scale)

    def _key_level(self, layer: Any, level: int) -> None:
        if self._closed:
            set_level(layer, level)
            return
        set_level(layer, level, on_message=self._message)
        self._sync_bar(layer_uid(layer))

    def _on_saved(self, uid: str, path: str) -> None:
        layer = find_layer(self.viewer.layers, uid)
        name = layer.name if layer is not None else "rater layer"
        self._set_status(
            f"Autosaved {name} at {time.strftime('%H:%M:%S')} to {Path(path).parent.parent}"
        )

    def _on_session_closed(self, uid: str) -> None:
        # the removed layer's work is on disk now: if it was never exported, offer it
        if not self._closed:
            self.check_recoveries(notify_user=False)

    def autosave_for(self, layer: Labels) -> RaterAutosave | None:
        """The autosave session of a rater layer (None when it has none)."""
        return self.autosave.for_layer(layer)

    def flush_autosave(self, timeout: float = 30.0) -> bool:
        """Write every rater's pending work now and wait for the writers."""
        return self.autosave.flush(timeout)

    # ------------------------------------------------------------------ levels
    def _on_layer_choice(self, uid: Any = None) -> None:
        layer = self.rater_layer
        self._slices.set_layer(layer)
        if layer is None:
            self._level_bar.rebuild(None, PALETTE[0])
            return
        self._rater_id.value = rater_id(layer)
        if layer_scale(layer) is None:
            # a label map from elsewhere (e.g. a binary rater file): nothing changes until the
            # rater applies a scale, which makes it a rater layer (colours, keys, autosave)
            self._level_bar.rebuild(None, PALETTE[0])
            self._set_status(
                f"{layer.name} has no confidence scale: choose one under Confidence scale and press Apply"
            )
            self._scale_section.expand(animate=False)
            return
        self._attach(layer)
        scale = layer_scale(layer)
        self._level_bar.rebuild(scale, hue_of(layer))
        if scale is not None:
            self._load_editor(scale)
        self._sync_bar(layer_uid(layer))
        self._suggest_export_path()

    def _sync_bar(self, uid: str) -> None:
        layer = self.rater_layer
        if layer is None or layer_uid(layer) != uid:
            return
        self._level_bar.show_level(0 if str(layer.mode) == "erase" else int(layer.selected_label))

    def select_level(self, level: int) -> None:
        """Pick a confidence level (0 = eraser) on the current rater layer, like keys 0..K."""
        layer = self.rater_layer
        if layer is None:
            self._message("add or pick a rater layer first")
            return
        set_level(layer, int(level), on_message=self._message)
        self.viewer.layers.selection.active = layer
        self._sync_bar(layer_uid(layer))

    # ------------------------------------------------------------------ scale editor
    def _load_editor(self, scale: ConfidenceScale) -> None:
        self._scale.load(scale)

    def scale_from_editor(self) -> ConfidenceScale:
        """The scale typed in the editor's table (InputError when it is not valid)."""
        return self._scale.scale()

    def set_scale(self, scale: ConfidenceScale, *, layer: Labels | None = None) -> None:
        """Show *scale* in the editor and apply it to the rater layer."""
        self._load_editor(scale)
        self.apply_scale(layer=layer)

    def apply_scale(self, *, layer: Labels | None = None) -> ConfidenceScale:
        """Store the editor's scale on the rater layer (colours, status values, level keys).

        Raises
        ------
        InputError
            Invalid scale, or the layer has voxels at a level the new scale does not have.
        """
        scale = self.scale_from_editor()
        layer = layer or self.rater_layer
        if layer is None:
            raise InputError("add or pick a rater layer first; the scale is stored with the layer")
        top = int(np.max(layer.data)) if np.size(layer.data) else 0
        if top > scale.n_levels:
            raise InputError(
                f"layer {layer.name!r} has voxels at level {top} but the new scale has {scale.n_levels} "
                "levels; erase those voxels first or keep more levels"
            )
        layer.metadata[SCALE_KEY] = scale.as_dict()
        session = self._attach(layer)
        self._style(layer, scale)
        if layer.selected_label > scale.n_levels:
            layer.selected_label = scale.n_levels
        current = self.rater_layer
        if current is not None and layer_uid(current) == layer_uid(layer):
            self._level_bar.rebuild(scale, hue_of(layer))
            self._sync_bar(layer_uid(layer))
        if session is not None:
            session.mark_dirty()
        return scale

    # ------------------------------------------------------------------ export / open
    def _default_export_path(self) -> Path | None:
        layer, image = self.rater_layer, self.image_layer
        src = _source_of(layer) or _source_of(image)
        if src is None:
            return None
        rater = rater_id(layer) if layer is not None else str(self._rater_id.value).strip()
        try:
            stem = rater_file_stem(rater)
        except InputError:
            return None
        return export_path_for(
            src.parent / f"rater-{stem}.nii.gz", levels=self._export_kind.value == EXPORT_LEVELS
        )

    def _suggest_export_path(self, *_: Any) -> None:
        path = self._default_export_path()
        if path is not None:
            self._export_path.value = path

    def _on_export_kind(self, kind: Any = None) -> None:
        """The file name follows the content: ``rater-x.nii.gz`` <-> ``rater-x_levels.nii.gz``."""
        current = self._export_path.value
        if current is None or str(current) in ("", "."):
            self._suggest_export_path()
            return
        self._export_path.value = export_path_for(current, levels=kind == EXPORT_LEVELS)

    def export_rater(
        self,
        path: str | Path | None = None,
        *,
        layer: Labels | None = None,
        as_levels: bool | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write a rater layer as a NIfTI file with the image's geometry and a JSON sidecar.

        Parameters
        ----------
        path : path-like, optional
            Defaults to the file box (``rater-<id>.nii.gz`` next to the image).
        layer : Labels, optional
            Defaults to the current rater layer.
        as_levels : bool, optional
            Integer levels instead of the float32 soft map; defaults to the "Export as" choice.
        overwrite : bool
            Replace an existing file (the *Export* button asks the rater first).

        Returns
        -------
        Path

        Raises
        ------
        InputError
            No layer or file name, the file (or its sidecar) exists and *overwrite* is false, or
            the layer holds levels its scale does not have.
        """
        layer = layer or self.rater_layer
        if layer is None:
            raise InputError("pick a rater layer to export")
        if path is None:
            path = self._export_path.value
        if path is None or str(path) in ("", "."):
            raise InputError("choose an output file (.nii.gz) for the export")
        path = Path(path)
        as_levels = (
            (self._export_kind.value == EXPORT_LEVELS) if as_levels is None else bool(as_levels)
        )
        image = self.image_layer
        levels = np.array(layer.data, copy=True)
        rater = rater_id(layer)
        written = write_rater_file(
            layer,
            path,
            as_levels=as_levels,
            overwrite=overwrite,
            source_image=image.name if image is not None else None,
        )
        session = self.autosave.for_layer(layer)
        if session is not None:
            try:
                record_export(session.folder, rater, levels, written)
            except OSError as exc:
                self._message(
                    f"exported, but could not note it in {session.folder}: {exc}",
                    severity="warning",
                )
        self._message(
            f"Saved {rater} as {'levels' if as_levels else 'soft map'}: {Path(written).name} in {Path(written).parent}"
        )
        return Path(written)

    def _export_clicked(self) -> Path | None:
        path = self._export_path.value
        if path is None or str(path) in ("", "."):
            name, _ = QFileDialog.getSaveFileName(
                self.native, "Export rater", "", "NIfTI (*.nii.gz *.nii)"
            )
            if not name:
                return None
            path = name
        path = Path(path)
        if not confirm_overwrite(
            [path, sidecar_path(path)], parent=self.native, title="Replace the exported rater file?"
        ):
            self._set_status(f"Not exported: {path.name} was kept as it is")
            return None
        return self.export_rater(path, overwrite=True)

    def _open_clicked(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(
            self.native, "Open rater files", "", "NIfTI (*.nii.gz *.nii)"
        )
        for name in names:
            self._guard(lambda n=name: self.open_rater_file(n))

    def open_rater_file(self, path: str | Path, *, image: Image | None = None) -> Layer:
        """Open a rater file: binary and level maps as rater layers, soft maps as soft layers.

        The confidence scale and rater id come from the JSON sidecar when there is one; a level
        map without a sidecar gets equal steps (``ConfidenceScale.linear``) and a warning. Each
        file gets a colour no open rater layer uses.

        Raises
        ------
        InputError
            Unreadable file, not a rater map, or a shape that differs from the image's.
        """
        image = image or self.image_layer
        got = read_rater_file(
            path,
            shape=None if image is None else tuple(np.shape(image.data)),
            image_name="the image" if image is None else f"image {image.name!r}",
        )
        path, data, geom, rater, scale, kind = (
            got.path,
            got.data,
            got.geometry,
            got.rater,
            got.scale,
            got.kind,
        )
        hue = next_free_hue(self.viewer.layers)
        if kind == "soft":
            metadata: dict[str, Any] = {RATER_KEY: rater, HUE_KEY: hue}
            if scale is not None:
                metadata[SCALE_KEY] = scale.as_dict()
            return add_volume_layer(
                self.viewer,
                data.astype(np.float32, copy=False),
                geom,
                kind="soft",
                name=f"{rater} (soft)",
                source_path=path,
                metadata=metadata,
                colormap=soft_colormap(PALETTE[hue], f"softseg-{rater}"),
                blending="translucent",
                opacity=0.85,
            )
        if got.scale_guessed:
            self._message(
                f"{path.name}: no JSON sidecar with a confidence scale; assuming {scale.n_levels} "
                f"equal steps {', '.join(f'{v:.2g}' for v in scale.values)}",
                severity="warning",
            )
        if any(
            isinstance(lyr, Labels) and lyr.metadata.get(RATER_KEY) == rater
            for lyr in self.viewer.layers
        ):
            rater = f"{rater} ({path.name})"
        layer = self._add_levels_layer(
            data.astype(np.uint8), rater=rater, scale=scale, geometry=geom, image=image, hue=hue
        )
        if image is None:
            layer.metadata[SOURCE_KEY] = str(path)
        return layer

    # ------------------------------------------------------------------ recovery
    def _recovery_place(self, image: Any) -> tuple[Path | None, str]:
        return _source_of(image), image.name

    def _list_pending(self, image: Any) -> list[Recovery]:
        src, name = self._recovery_place(image)
        return list_recoveries(src, name=name, exclude_sessions=self.autosave.live_sessions())

    def check_recoveries(
        self, image: Image | None = None, *, notify_user: bool = True
    ) -> list[Recovery]:
        """Pending work of *image*'s raters (newest first); shows the banner (and once per image a
        notification with a *Restore* button) when there is any, hides it otherwise."""
        image = image or self.image_layer
        if image is None:
            self._banner.hide()
            return []
        found = self._list_pending(image)
        if not found:
            self._banner.hide()
            return []
        self._banner.show(image.name, found)
        key = f"offer:{_source_of(image) or image.name}"
        if notify_user and key not in self._offered:
            self._offered.add(key)
            what = "; ".join(describe(r) for r in found)
            uid, me = layer_uid(image), weakref.ref(self)  # napari keeps notifications forever

            def restore_from_notification(*_args: Any) -> None:
                widget = me()
                if widget is not None and not widget._closed:
                    widget._guard(
                        lambda: widget.restore(image=find_layer(widget.viewer.layers, uid))
                    )

            notify(
                f"Unsaved rater work found for {image.name}: {what}",
                severity="warning",
                source=SOURCE,
                actions=[(RESTORE, restore_from_notification)],
            )
        return found

    def restore(
        self,
        recoveries: Sequence[Recovery] | None = None,
        *,
        image: Image | None = None,
        as_copies: bool = False,
    ) -> list[Labels]:
        """Bring pending work back as rater layers, each in its rater's colour when that is free.

        A rater without an open layer gets it back as their layer; otherwise (or with
        ``as_copies``, "keep both") the work comes back beside it as ``"<rater> (recovered HH:MM)"``.
        An existing layer's data is never replaced. The restored layers autosave at once, then the
        snapshots are marked restored (or kept), so the work is never unaccounted for.

        Raises
        ------
        InputError
            No image, or a snapshot of another image.
        """
        image = image or self.image_layer
        if image is None:
            raise InputError("pick the image whose work should be restored")
        recs = list(recoveries) if recoveries is not None else self._list_pending(image)
        geom = geometry_of(image)
        out: list[Labels] = []
        for rec in sorted(recs, key=lambda r: r.saved_at, reverse=True):
            taken = {
                str(lyr.metadata.get(RATER_KEY))
                for lyr in self.viewer.layers
                if isinstance(lyr, Labels)
            }
            plan = plan_restore(
                rec,
                geometry=geom,
                shape=tuple(np.shape(image.data)),
                taken=taken,
                as_copy=as_copies,
                image_name=f"image {image.name!r}",
            )
            layer = self._add_levels_layer(
                plan.levels,
                rater=plan.rater,
                scale=plan.scale,
                geometry=geom,
                image=image,
                hue=next_free_hue(self.viewer.layers, prefer=plan.hue),
            )
            session = self.autosave.for_layer(layer)
            if session is not None:  # the work now lives in the new layer's session
                session.snapshot_now()
                session.flush()
            mark_recovery(rec, "kept" if plan.as_copy else "restored")
            out.append(layer)
        self.check_recoveries(image, notify_user=False)
        if out:
            self._message(f"Restored {', '.join(lyr.name for lyr in out)}")
        return out

    def discard(
        self, recoveries: Sequence[Recovery] | None = None, *, image: Image | None = None
    ) -> None:
        """Set pending work aside (no question asked; the *Discard…* button asks first)."""
        image = image or self.image_layer
        recs = (
            list(recoveries)
            if recoveries is not None
            else (self._list_pending(image) if image is not None else [])
        )
        for rec in recs:
            discard_recovery(rec)
        if recs:
            self._message(
                f"Set aside {', '.join(r.rater for r in recs)}'s unsaved work; it stays on disk for a while in "
                f"{recs[0].path.parent.parent}"
            )
        self.check_recoveries(image, notify_user=False)

    def _discard_clicked(self) -> None:
        image = self.image_layer
        recs = self._list_pending(image) if image is not None else []
        if recs and confirm_discard(self.native, recs, str(recs[0].path.parent.parent)):
            self.discard(recs, image=image)

    # ------------------------------------------------------------------ teardown
    def close_autosave(self) -> None:
        """Write pending snapshots, stop the writers and the widget's viewer connections."""
        if self._closed:
            return
        self._closed = True
        self.autosave.close_all()
        for uid in list(self._synced) + list(self._guards):
            self._forget(uid)
        for close in (self._slices.close_navigator, self.orientation_letters.close):
            try:
                close()
            except RuntimeError:  # Qt already deleted the dock's widgets
                pass
        unbind_slice_keys(self.viewer)
        self._removal_guard.close()
        layers = self.viewer.layers
        for emitter, cb in (
            (layers.events.inserted, self._on_inserted),
            (layers.events.removed, self._on_removed),
            (layers.selection.events.active, self._on_active_layer),
        ):
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
