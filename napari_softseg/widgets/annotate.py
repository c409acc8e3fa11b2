"""The "Soft annotation" dock widget: confidence painting, one Labels layer per rater.

A rater layer is an ordinary napari Labels layer whose integer values are confidence levels
(0 = background, 1..K = low .. high). Its metadata carries:

``"softseg_rater"``        the rater id,
``"softseg_confidence"``   the confidence scale (:meth:`softseg.confidence.ConfidenceScale.as_dict`),
``"softseg_geometry"``     the image's geometry (copied from the image layer), so exports land in
                           the image's own orientation and affine,
``"source_path"``          the image file (the autosave folder sits next to it).

napari's own tools (brush, fill, polygon, undo/redo, 2D/3D) keep working; this widget only adds
a level picker with the keys 1..K (0 selects the eraser, as does napari's E), a colormap whose
colour strength grows with confidence, the soft value under the cursor in the status bar (the
layer's ``features`` table), export/open of rater files, and debounced autosave
(:mod:`softseg.autosave`) of every stroke, fill, undo and redo.

No math lives here: levels -> soft values is :class:`softseg.confidence.ConfidenceScale`, the
files are :mod:`softseg.geometry` / :mod:`softseg.io`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox, Table
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import Colormap, DirectLabelColormap
from napari.utils.notifications import (
    Notification,
    NotificationSeverity,
    notification_manager,
    show_error,
    show_info,
    show_warning,
)
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QButtonGroup, QFileDialog, QHBoxLayout, QPushButton, QSizePolicy, QWidget

from softseg import __version__
from softseg.autosave import (
    AutosaveWriter,
    Recovery,
    SnapshotJob,
    choose_recovery_folder,
    fallback_folder,
    list_recoveries,
    load_snapshot,
    new_session_id,
    record_export,
)
from softseg.confidence import (
    MAX_LEVELS,
    METADATA_KEY as SCALE_KEY,
    PRESETS,
    ConfidenceScale,
    detect_label_kind,
    scale_from_sidecar,
)
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, display_geometry, save_display_array
from softseg.io import load_volume, read_sidecar

from napari_softseg._layers import KIND_KEY, RATER_KEY, SOURCE_KEY, add_volume_layer, geometry_from_layer_scale
from napari_softseg._layers import geometry_of as _stored_geometry

__all__ = [
    "KIND_KEY",
    "PALETTE",
    "RATER_KEY",
    "AnnotateWidget",
    "RaterAutosave",
    "geometry_of",
    "is_rater_layer",
    "layer_scale",
    "level_colormap",
    "level_features",
    "rater_soft",
    "soft_colormap",
]

#: One hue per rater (RGB in [0, 1]); strong, distinct on a grey MR image.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.00, 0.45, 0.00),  # orange
    (0.10, 0.60, 1.00),  # azure
    (0.90, 0.15, 0.65),  # magenta
    (0.25, 0.85, 0.25),  # green
    (1.00, 0.85, 0.00),  # yellow
    (0.60, 0.35, 1.00),  # violet
    (0.00, 0.85, 0.85),  # cyan
    (1.00, 0.25, 0.25),  # red
)
_CUSTOM = "custom"
_EXPORT_SOFT = "soft map (float32)"
_EXPORT_LEVELS = "levels (integer)"
_AUTOSAVE_DELAY_MS = 1500
_AUTOSAVE_MAX_DELAY_S = 5.0
_WARNED_FOLDERS: set[str] = set()


# ---------------------------------------------------------------------------------------- helpers
def geometry_of(layer: Layer) -> DisplayGeometry:
    """The layer's image geometry: from ``metadata["softseg_geometry"]``, else built from its scale.

    A layer that did not come from the napari-softseg reader is taken to be stored in display
    order (axis 0 superior, 1 posterior, 2 left) with its ``scale``/``translate`` in mm.
    """
    geom = _stored_geometry(layer)
    if geom is not None:
        return geom
    shape = tuple(int(s) for s in np.shape(layer.data))
    if len(shape) != 3:
        raise InputError(f"layer {layer.name!r} has shape {shape}; expected a 3D volume")
    return geometry_from_layer_scale(shape, scale=layer.scale, translate=layer.translate)


def layer_scale(layer: Layer) -> ConfidenceScale | None:
    """The confidence scale stored on a layer, or None."""
    data = layer.metadata.get(SCALE_KEY)
    return ConfidenceScale.from_dict(data) if data else None


def is_rater_layer(layer: Layer) -> bool:
    """A Labels layer (levels or binary), or an Image layer marked as a soft rater map."""
    if isinstance(layer, Labels):
        return np.ndim(layer.data) == 3
    if isinstance(layer, Image):
        return layer.metadata.get(KIND_KEY) == "soft" and np.ndim(layer.data) == 3
    return False


def rater_soft(layer: Layer) -> np.ndarray:
    """A rater layer as a float32 soft map in [0, 1] (napari order), levels mapped by its scale.

    Raises
    ------
    InputError
        Levels above the layer's scale, or soft values outside [0, 1].
    """
    data = np.asarray(layer.data)
    if isinstance(layer, Labels):
        scale = layer_scale(layer)
        if scale is None:
            kind = detect_label_kind(data)
            if kind != "binary":
                raise InputError(
                    f"layer {layer.name!r} holds levels up to {int(data.max())} but has no confidence "
                    "scale; add it from the Soft annotation widget or open it with its JSON sidecar"
                )
            return (data > 0).astype(np.float32)
        try:
            return scale.to_soft(data)
        except InputError as exc:
            raise InputError(f"layer {layer.name!r}: {exc}") from None
    soft = data.astype(np.float32, copy=False)
    if soft.size and (not np.isfinite(soft).all() or soft.min() < 0 or soft.max() > 1):
        raise InputError(f"layer {layer.name!r} is not a soft map: values must be finite and in [0, 1]")
    return soft


def _level_rgba(hue: Sequence[float], value: float) -> np.ndarray:
    """Colour strength grows with confidence: paler and more transparent for low values."""
    hue = np.asarray(hue, dtype=np.float64)
    sat = 0.35 + 0.65 * value
    rgb = (1.0 - sat) * np.ones(3) + sat * hue
    alpha = 0.35 + 0.65 * value
    return np.array([*rgb, alpha], dtype=np.float32)


def level_colormap(scale: ConfidenceScale, hue: Sequence[float]) -> DirectLabelColormap:
    """One colour per level of *scale* in the rater's *hue*; background and unknown transparent."""
    colors: dict[int | None, np.ndarray] = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    for k, v in enumerate(scale.values, start=1):
        colors[k] = _level_rgba(hue, v)
    return DirectLabelColormap(color_dict=colors)


def level_features(scale: ConfidenceScale) -> dict[str, list]:
    """Features table shown by napari in the status bar: ``confidence: high, soft value: 1``."""
    return {
        "index": list(range(scale.n_levels + 1)),
        "confidence": ["background", *scale.names],
        "soft value": [float(v) for v in scale.lut],
    }


def soft_colormap(hue: Sequence[float], name: str) -> Colormap:
    """Transparent (0) to full colour (1), for soft maps drawn over the image."""
    r, g, b = (float(c) for c in hue)
    return Colormap(colors=[[r, g, b, 0.0], [r, g, b, 1.0]], name=name, display_name=name)


def _rater_hue(layer: Layer) -> tuple[float, float, float]:
    idx = layer.metadata.get("softseg_hue")
    if isinstance(idx, int):
        return PALETTE[idx % len(PALETTE)]
    return PALETTE[0]


def _set_level(layer: Labels, level: int) -> None:
    """Keyboard action on a rater layer: select a level (and the brush unless fill/polygon is on)."""
    scale = layer_scale(layer)
    n = scale.n_levels if scale is not None else 1
    if level == 0:
        layer.mode = "erase"
        return
    if level > n:
        show_info(f"{layer.name}: no level {level}; this scale has levels 1..{n} (0 or E erases)")
        return
    layer.selected_label = level
    if str(layer.mode) not in ("paint", "fill", "polygon"):
        layer.mode = "paint"


def _level_action(level: int) -> Callable[[Labels], None]:
    def select_level(layer: Labels) -> None:
        _set_level(layer, level)

    select_level.__doc__ = f"Select confidence level {level}" if level else "Eraser"
    return select_level


def _bind_level_keys(layer: Labels) -> None:
    """Keys 1..9 pick a level and 0 the eraser on this layer only (napari's E, P, F, ... stay)."""
    for k in range(0, MAX_LEVELS + 1):
        layer.bind_key(str(k), _level_action(k), overwrite=True)


def _style_rater_layer(layer: Labels, scale: ConfidenceScale) -> None:
    layer.metadata[SCALE_KEY] = scale.as_dict()
    layer.colormap = level_colormap(scale, _rater_hue(layer))
    layer.features = level_features(scale)


def _now_iso() -> str:
    return _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds")


def _source_of(layer: Layer | None) -> Path | None:
    if layer is None:
        return None
    src = layer.metadata.get(SOURCE_KEY) or getattr(layer.source, "path", None)
    return Path(src) if src else None


def _rater_id_from_file(path: Path, sidecar: dict | None) -> str:
    if sidecar and sidecar.get("rater"):
        return str(sidecar["rater"])
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    for prefix in ("rater-", "rater_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
    return name


# ---------------------------------------------------------------------------------------- autosave
class RaterAutosave(QObject):
    """Debounced autosave of one rater layer.

    Listens to the layer's ``paint`` (strokes, fills, polygons), ``set_data`` (undo/redo and
    other refreshes) and ``data`` (the array replaced) events. ``delay_ms`` after the last event,
    or at most ``max_delay_s`` after the first unsaved one, it copies ``layer.data`` on the main
    thread (the only main-thread cost; ``snapshot_ms`` keeps the timings) and hands the copy to an
    :class:`~softseg.autosave.AutosaveWriter` that compresses and writes it atomically in its own
    thread. Unchanged content is not rewritten.
    """

    saved = Signal(str)
    failed = Signal(str)
    fell_back = Signal(str)

    def __init__(
        self,
        layer: Labels,
        *,
        image_path: Path | None,
        image_name: str,
        delay_ms: int = _AUTOSAVE_DELAY_MS,
        max_delay_s: float = _AUTOSAVE_MAX_DELAY_S,
        parent: QObject | None = None,
    ) -> None:
        # Parented to the dock widget: Qt, not Python's garbage collector (which may run in any
        # thread), decides when this QObject and its timer are destroyed.
        super().__init__(parent)
        self.layer = layer
        self.image_path = image_path
        target = choose_recovery_folder(image_path, name=image_name)  # InputError if nowhere works
        fallback = None if target.is_fallback else fallback_folder(image_path, name=image_name)
        self.writer = AutosaveWriter(
            target,
            fallback=fallback,
            on_saved=lambda path, job: self.saved.emit(str(path)),
            on_error=self.failed.emit,
            on_fallback=self.fell_back.emit,
        )
        if target.is_fallback and image_path is None:
            _info_once(str(target.folder), f"{image_name} has no file on disk: autosaving to {target.folder}")
        elif target.is_fallback:
            _warn_once(str(target.folder), f"{target.problem}; autosaving to {target.folder} instead")
        self.fell_back.connect(lambda msg: _warn_once(msg, msg))
        self.failed.connect(lambda msg: _warn_once(msg, msg))
        self.session = new_session_id()
        self.snapshot_ms: list[float] = []
        self._dirty_since: float | None = None
        self._max_delay_s = float(max_delay_s)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(delay_ms))
        self.timer.timeout.connect(self.snapshot_now)
        for name in ("paint", "set_data", "data"):
            getattr(layer.events, name).connect(self._changed)

    @property
    def folder(self) -> Path:
        """Where the snapshots go now (the fallback after a switch)."""
        return self.writer.folder

    def _changed(self, event: Any = None) -> None:
        now = time.monotonic()
        if self._dirty_since is None:
            self._dirty_since = now
        if now - self._dirty_since >= self._max_delay_s:
            self.snapshot_now()  # painting without pause: do not postpone forever
        else:
            self.timer.start()

    def snapshot_now(self) -> None:
        """Copy the layer's data (main thread) and queue it for writing (writer thread)."""
        self.timer.stop()
        self._dirty_since = None
        layer = self.layer
        t0 = time.perf_counter()
        levels = np.array(layer.data, copy=True)
        self.snapshot_ms.append((time.perf_counter() - t0) * 1000.0)
        scale = layer_scale(layer)
        self.writer.submit(
            SnapshotJob(
                rater=str(layer.metadata.get(RATER_KEY) or layer.name),
                levels=levels,
                geometry=DisplayGeometry.from_metadata(layer.metadata),
                scale=scale,
                source_image=None if self.image_path is None else str(self.image_path),
                session=self.session,
            )
        )

    def flush(self, timeout: float = 30.0) -> bool:
        """Write pending work now and wait for the writer."""
        if self.timer.isActive() or self._dirty_since is not None:
            self.snapshot_now()
        return self.writer.flush(timeout)

    def close(self) -> None:
        """Stop listening; write what is pending."""
        for name in ("paint", "set_data", "data"):
            try:
                getattr(self.layer.events, name).disconnect(self._changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self.flush()
        self.writer.close()


def _warn_once(key: str, message: str) -> None:
    if key in _WARNED_FOLDERS:
        return
    _WARNED_FOLDERS.add(key)
    show_warning(message)


def _info_once(key: str, message: str) -> None:
    if key in _WARNED_FOLDERS:
        return
    _WARNED_FOLDERS.add(key)
    show_info(message)


# ---------------------------------------------------------------------------------------- level bar
class _LevelBar(QWidget):
    """Legend + picker: one coloured button per level (0 = eraser)."""

    def __init__(self, on_pick: Callable[[int], None]) -> None:
        super().__init__()
        self._on_pick = on_pick
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(3)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._group.idClicked.connect(self._on_pick)
        self.buttons: list[QPushButton] = []
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def rebuild(self, scale: ConfidenceScale | None, hue: Sequence[float]) -> None:
        for b in self.buttons:
            self._group.removeButton(b)
            self._layout.removeWidget(b)
            b.setParent(None)  # gone now, not at the next turn of the event loop
            b.deleteLater()
        self.buttons = []
        if scale is None:
            return
        items = [(0, "0 erase", None)] + [
            (k, f"{k} {name}\n{value:.2g}", _level_rgba(hue, value))
            for k, (name, value) in enumerate(zip(scale.names, scale.values), start=1)
        ]
        for k, text, rgba in items:
            btn = QPushButton(text)
            btn.setCheckable(True)
            btn.setToolTip(
                "eraser (keys 0 or E)" if k == 0 else f"level {k}: {text.split()[1]}, soft value {scale.values[k - 1]:.3g} (key {k})"
            )
            if rgba is not None:
                # the swatch is the level's colour composited over a mid-grey image
                a = float(rgba[3])
                rgb = [int(255 * (a * c + (1 - a) * 0.35)) for c in rgba[:3]]
                fg = "black" if sum(rgb) > 380 else "white"
                btn.setStyleSheet(
                    f"QPushButton {{ background-color: rgb({rgb[0]},{rgb[1]},{rgb[2]}); color: {fg}; padding: 3px; }}"
                    "QPushButton:checked { border: 3px solid white; }"
                )
            self._group.addButton(btn, k)
            self._layout.addWidget(btn)
            self.buttons.append(btn)

    def show_level(self, level: int) -> None:
        btn = self._group.button(level)
        if btn is not None:
            btn.setChecked(True)


# ---------------------------------------------------------------------------------------- widget
class AnnotateWidget(Container):
    """"Soft annotation": rater layers, confidence levels, export/open, autosave and recovery."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.autosaves: dict[int, RaterAutosave] = {}
        self._offered: set[str] = set()
        self._pending: list[Recovery] = []
        self._syncing = False
        self._last_image: Image | None = None
        self._writers: list[AutosaveWriter] = []

        self._image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self._rater_id = LineEdit(label="Rater id", value="rater1")
        self._add = PushButton(text="Add rater layer")
        self._layer = ComboBox(label="Rater layer", choices=self._rater_choices, nullable=True)
        top = Container(widgets=[self._image, self._rater_id, self._add, self._layer], labels=True)

        self._levels_title = Label(value="Confidence level (keys 1..K; 0 or E erase)")
        self._level_bar = _LevelBar(self.select_level)

        self._preset = ComboBox(label="Scale", choices=[*PRESETS, _CUSTOM], value=next(iter(PRESETS)))
        self._n_levels = SpinBox(label="Levels", min=1, max=MAX_LEVELS, value=3)
        self._editor_scale = ConfidenceScale.default()
        self._table = Table(value=self._table_value(self._editor_scale))
        self._table.tooltip = "One row per level (1 = lowest confidence). Edit names and soft values in (0, 1], then Apply."
        self._table.min_height = 110
        self._table.max_height = 200
        self._apply = PushButton(text="Apply scale to layer")
        scale_box = Container(widgets=[self._preset, self._n_levels], labels=True)

        self._export_kind = ComboBox(label="Export as", choices=[_EXPORT_SOFT, _EXPORT_LEVELS])
        self._export_path = FileEdit(label="File", mode="w", filter="NIfTI (*.nii.gz *.nii)")
        self._export = PushButton(text="Export rater")
        self._open = PushButton(text="Open rater file…")
        io_box = Container(widgets=[self._export_kind, self._export_path], labels=True)

        self._status = Label(value="Autosave: add a rater layer to start")
        self._restore_btn = PushButton(text="Restore unsaved work", visible=False)

        super().__init__(
            widgets=[
                top,
                self._levels_title,
                scale_box,
                self._table,
                self._apply,
                io_box,
                self._export,
                self._open,
                self._status,
                self._restore_btn,
            ],
            labels=False,
        )
        self.native.layout().insertWidget(2, self._level_bar)
        # closing the dock widget writes what is pending and stops the writer threads
        writers = self._writers
        self.native.destroyed.connect(lambda *_: [w.close() for w in writers])

        self._add.changed.connect(lambda: self._guard(self.add_rater_layer))
        self._layer.changed.connect(self._on_layer_choice)
        self._image.changed.connect(self._on_image_choice)
        self._preset.changed.connect(self._on_preset)
        self._n_levels.changed.connect(self._on_n_levels)
        self._apply.changed.connect(lambda: self._guard(self.apply_scale))
        self._export.changed.connect(lambda: self._guard(self._export_clicked))
        self._open.changed.connect(lambda: self._guard(self._open_clicked))
        self._restore_btn.changed.connect(lambda: self._guard(self.restore))
        self._rater_id.changed.connect(self._suggest_export_path)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layer_removed)
        layers.selection.events.active.connect(self._on_active_layer)
        self._on_layers_changed()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _w: Any = None) -> list[tuple[str, Layer]]:
        return [(lyr.name, lyr) for lyr in self.viewer.layers if isinstance(lyr, Image) and lyr.metadata.get(KIND_KEY) != "soft" and np.ndim(lyr.data) == 3]

    def _rater_choices(self, _w: Any = None) -> list[tuple[str, Layer]]:
        return [(lyr.name, lyr) for lyr in self.viewer.layers if isinstance(lyr, Labels) and RATER_KEY in lyr.metadata]

    def _on_layers_changed(self, event: Any = None) -> None:
        self._image.reset_choices()
        self._layer.reset_choices()
        images = [c for c in self._image.choices if c is not None]
        if self._image.value is None and images:
            self._image.value = images[0]
        for lyr in list(self.viewer.layers):
            # confidence-level rater layers (ours, or opened from a file with a scale sidecar)
            if (
                isinstance(lyr, Labels)
                and RATER_KEY in lyr.metadata
                and SCALE_KEY in lyr.metadata
                and id(lyr) not in self.autosaves
            ):
                self._attach(lyr)
        inserted = getattr(event, "type", None) == "inserted"
        if inserted and isinstance(event.value, Image) and event.value is not self._last_image:
            self._last_image = event.value
            self.check_recoveries(event.value)

    def _on_layer_removed(self, event: Any) -> None:
        session = self.autosaves.pop(id(event.value), None)
        if session is not None:
            session.close()

    def _on_active_layer(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and RATER_KEY in active.metadata and self._layer.value is not active:
            self._layer.value = active

    def _on_image_choice(self, value: Any = None) -> None:
        self._suggest_export_path()
        # offer recovery when the rater switches to another image (not on every list refresh)
        if isinstance(value, Image) and value is not self._last_image:
            self._last_image = value
            self.check_recoveries(value)

    def _guard(self, func: Callable[[], Any]) -> Any:
        try:
            return func()
        except InputError as exc:
            show_error(str(exc))
            return None

    # ------------------------------------------------------------------ rater layers
    @property
    def image_layer(self) -> Image | None:
        """The image the rater layers belong to."""
        return self._image.value

    @property
    def rater_layer(self) -> Labels | None:
        """The rater layer being edited."""
        return self._layer.value

    def add_rater_layer(self, rater_id: str | None = None, *, image: Image | None = None) -> Labels:
        """A new Labels layer for *rater_id* with the image's shape and geometry.

        Raises
        ------
        InputError
            No image, an empty rater id, or a layer for that rater already exists.
        """
        image = image or self.image_layer
        if image is None:
            raise InputError("open an image first (File > Open, or the SoftSeg sample), then add a rater layer")
        rater = (rater_id if rater_id is not None else self._rater_id.value).strip()
        if not rater:
            raise InputError("type a rater id (e.g. your initials) before adding a rater layer")
        if any(lyr.metadata.get(RATER_KEY) == rater for lyr in self.viewer.layers if isinstance(lyr, Labels)):
            raise InputError(f"a layer for rater {rater!r} exists already; pick it under 'Rater layer' or type another id")
        scale = self.scale_from_editor()
        geom = geometry_of(image)
        return self._add_levels_layer(
            np.zeros(np.shape(image.data), dtype=np.uint8), rater=rater, scale=scale, geometry=geom, image=image
        )

    def _add_levels_layer(
        self,
        levels: np.ndarray,
        *,
        rater: str,
        scale: ConfidenceScale,
        geometry: DisplayGeometry,
        image: Layer | None,
    ) -> Labels:
        hue_index = sum(1 for lyr in self.viewer.layers if is_rater_layer(lyr))
        metadata = {RATER_KEY: rater, SCALE_KEY: scale.as_dict(), "softseg_hue": hue_index}
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
        _style_rater_layer(layer, scale)
        layer.brush_size = 5
        layer.selected_label = min(scale.n_levels, 2) if scale.n_levels >= 2 else 1
        layer.mode = "paint"
        if id(layer) not in self.autosaves:
            self._attach(layer)
        self._layer.reset_choices()
        self._layer.value = layer
        self.viewer.layers.selection.active = layer
        return layer

    def _attach(self, layer: Labels) -> None:
        """Make a Labels layer a rater layer: scale, colours, level keys, autosave."""
        if id(layer) in self.autosaves:
            return
        scale = layer_scale(layer)
        if scale is None:  # e.g. a binary rater map opened without a sidecar
            top = int(np.max(layer.data)) if np.size(layer.data) else 0
            scale = ConfidenceScale.binary() if top <= 1 else ConfidenceScale.linear(min(top, MAX_LEVELS))
        layer.metadata.setdefault(RATER_KEY, layer.name)
        layer.metadata.setdefault("softseg_hue", sum(1 for lyr in self.viewer.layers if is_rater_layer(lyr)) - 1)
        _style_rater_layer(layer, scale)
        _bind_level_keys(layer)
        def sync(*_args: Any, lyr: Labels = layer) -> None:
            self._sync_bar(lyr)

        layer.events.selected_label.connect(sync)
        layer.events.mode.connect(sync)
        # snapshots are filed under the image they annotate (the rater file itself otherwise)
        image = self.image_layer
        if image is not None and tuple(np.shape(image.data)) == tuple(np.shape(layer.data)):
            src, image_name = _source_of(image), image.name
        else:
            src, image_name = _source_of(layer), layer.name
        try:
            session = RaterAutosave(layer, image_path=src, image_name=image_name, parent=self.native)
        except InputError as exc:
            show_warning(f"autosave is off for {layer.name!r}: {exc}")
            return
        session.saved.connect(functools.partial(self._on_saved, layer))
        self.autosaves[id(layer)] = session
        self._writers.append(session.writer)
        self._status.value = f"Autosave: {session.folder}"

    def _on_saved(self, layer: Labels, path: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        try:
            self._status.value = f"Autosaved {layer.name} at {stamp} to {Path(path).parent}"
            self._status.tooltip = path
        except RuntimeError:  # the dock widget was closed while the last snapshot was written
            pass

    def autosave_for(self, layer: Labels) -> RaterAutosave | None:
        """The autosave session of a rater layer."""
        return self.autosaves.get(id(layer))

    def flush_autosave(self, timeout: float = 30.0) -> bool:
        """Write every rater's pending work now and wait for the writers."""
        return all(s.flush(timeout) for s in self.autosaves.values())

    # ------------------------------------------------------------------ levels
    def _on_layer_choice(self, layer: Any = None) -> None:
        if layer is None:
            self._level_bar.rebuild(None, PALETTE[0])
            return
        if layer_scale(layer) is None:
            # a label map from elsewhere (e.g. a binary rater file): nothing changes until the
            # rater applies a scale, which makes it a rater layer (colours, keys, autosave)
            self._level_bar.rebuild(None, PALETTE[0])
            self._status.value = f"{layer.name} has no confidence scale: choose one and press Apply"
            self._rater_id.value = str(layer.metadata.get(RATER_KEY, layer.name))
            return
        self._attach(layer)
        scale = layer_scale(layer)
        self._level_bar.rebuild(scale, _rater_hue(layer))
        if scale is not None:
            self._load_editor(scale)
        self._sync_bar(layer)
        self._rater_id.value = str(layer.metadata.get(RATER_KEY, layer.name))
        self._suggest_export_path()

    def _sync_bar(self, layer: Labels) -> None:
        if layer is not self.rater_layer:
            return
        self._level_bar.show_level(0 if str(layer.mode) == "erase" else int(layer.selected_label))

    def select_level(self, level: int) -> None:
        """Pick a confidence level (0 = eraser) on the current rater layer, like keys 0..K."""
        layer = self.rater_layer
        if layer is None:
            show_info("add or pick a rater layer first")
            return
        _set_level(layer, int(level))
        self.viewer.layers.selection.active = layer
        self._sync_bar(layer)

    # ------------------------------------------------------------------ scale editor
    @staticmethod
    def _table_value(scale: ConfidenceScale) -> dict[str, Any]:
        return {
            "data": [[n, round(v, 4)] for n, v in zip(scale.names, scale.values)],
            "index": list(range(1, scale.n_levels + 1)),
            "columns": ["name", "soft value"],
        }

    def _load_editor(self, scale: ConfidenceScale) -> None:
        self._syncing = True
        try:
            preset = next((k for k, v in PRESETS.items() if v == scale), _CUSTOM)
            self._preset.value = preset
            self._n_levels.value = scale.n_levels
            self._table.value = self._table_value(scale)
            self._editor_scale = scale
        finally:
            self._syncing = False

    def _on_preset(self, name: str) -> None:
        if self._syncing or name == _CUSTOM:
            return
        self._load_editor(PRESETS[name])

    def _on_n_levels(self, n: int) -> None:
        if self._syncing:
            return
        self._load_editor(ConfidenceScale.linear(int(n)))
        self._preset.value = next((k for k, v in PRESETS.items() if v == ConfidenceScale.linear(int(n))), _CUSTOM)

    def scale_from_editor(self) -> ConfidenceScale:
        """The scale typed in the table (InputError when it is not valid)."""
        rows = self._table.data.to_list()
        names, values = [], []
        for i, row in enumerate(rows, start=1):
            name, value = (row + [None, None])[:2]
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                raise InputError(f"level {i}: soft value {value!r} is not a number; type a value in (0, 1]") from None
            names.append(str(name) if name not in (None, "") else f"level {i}")
        typed = ConfidenceScale(values=tuple(values), names=tuple(names))
        shown = self._editor_scale
        if typed.names == shown.names and np.allclose(typed.values, [round(v, 4) for v in shown.values], atol=0, rtol=0):
            return shown  # unchanged: keep the exact values (1/3, not 0.3333)
        return typed

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
        _style_rater_layer(layer, scale)
        self._attach(layer)
        if layer.selected_label > scale.n_levels:
            layer.selected_label = scale.n_levels
        if layer is self.rater_layer:
            self._level_bar.rebuild(scale, _rater_hue(layer))
            self._sync_bar(layer)
        session = self.autosaves.get(id(layer))
        if session is not None:
            session._changed()
        return scale

    # ------------------------------------------------------------------ export / open
    def _default_export_path(self) -> Path | None:
        layer, image = self.rater_layer, self.image_layer
        src = _source_of(layer) or _source_of(image)
        if src is None:
            return None
        rater = str(layer.metadata.get(RATER_KEY, layer.name)) if layer is not None else self._rater_id.value
        from softseg.autosave import rater_file_stem

        try:
            stem = rater_file_stem(rater)
        except InputError:
            return None
        suffix = "" if self._export_kind.value == _EXPORT_SOFT else "_levels"
        return src.parent / f"rater-{stem}{suffix}.nii.gz"

    def _suggest_export_path(self, *_: Any) -> None:
        path = self._default_export_path()
        if path is not None:
            self._export_path.value = path

    def export_rater(
        self,
        path: str | Path | None = None,
        *,
        layer: Labels | None = None,
        as_levels: bool | None = None,
        overwrite: bool = True,
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
            Replace an existing file.

        Returns
        -------
        Path
        """
        layer = layer or self.rater_layer
        if layer is None:
            raise InputError("pick a rater layer to export")
        if path is None:
            path = self._export_path.value
        if path is None or str(path) in ("", "."):
            raise InputError("choose an output file (.nii.gz) for the export")
        as_levels = (self._export_kind.value == _EXPORT_LEVELS) if as_levels is None else bool(as_levels)
        geometry = geometry_of(layer)
        levels = np.array(layer.data, copy=True)
        scale = layer_scale(layer) or ConfidenceScale.binary()
        out = levels.astype(np.uint8) if as_levels else scale.to_soft(levels)
        rater = str(layer.metadata.get(RATER_KEY, layer.name))
        sidecar = {
            "rater": rater,
            "kind": "labels" if as_levels else "soft",
            SCALE_KEY: scale.as_dict(),
            "source_image": layer.metadata.get(SOURCE_KEY) or (self.image_layer.name if self.image_layer else None),
            "exported_at": _now_iso(),
            "software": f"napari-softseg {__version__}",
        }
        written = save_display_array(path, out, geometry, overwrite=overwrite, sidecar=sidecar)
        session = self.autosaves.get(id(layer))
        if session is not None:
            try:
                record_export(session.folder, rater, levels, written)
            except OSError as exc:
                show_warning(f"exported, but could not note it in {session.folder}: {exc}")
        show_info(f"saved {rater} as {'levels' if as_levels else 'soft map'}: {written}")
        return Path(written)

    def _export_clicked(self) -> None:
        path = self._export_path.value
        if path is None or str(path) in ("", "."):
            name, _ = QFileDialog.getSaveFileName(self.native, "Export rater", "", "NIfTI (*.nii.gz *.nii)")
            if not name:
                return
            path = name
        self.export_rater(path)

    def _open_clicked(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self.native, "Open rater files", "", "NIfTI (*.nii.gz *.nii)")
        for name in names:
            self._guard(lambda n=name: self.open_rater_file(n))

    def open_rater_file(self, path: str | Path, *, image: Image | None = None) -> Layer:
        """Open a rater file: binary and level maps as rater layers, soft maps as soft layers.

        The confidence scale and rater id come from the JSON sidecar when there is one; a level
        map without a sidecar gets equal steps (``ConfidenceScale.linear``) and a warning.

        Raises
        ------
        InputError
            Unreadable file, not a rater map, or a shape that differs from the image's.
        """
        path = Path(path)
        vol = load_volume(path, label=True)
        sidecar = read_sidecar(path) or {}
        kind = detect_label_kind(vol.array)
        geom = display_geometry(vol)
        data = geom.to_display(vol.array)
        image = image or self.image_layer
        if image is not None and tuple(np.shape(image.data)) != tuple(data.shape):
            raise InputError(
                f"{path.name}: shape {tuple(data.shape)} differs from image {image.name!r} shape "
                f"{tuple(np.shape(image.data))}; open the rater file that belongs to this image"
            )
        rater = _rater_id_from_file(path, sidecar)
        scale = scale_from_sidecar(sidecar)
        if kind == "soft":
            hue_index = sum(1 for lyr in self.viewer.layers if is_rater_layer(lyr))
            metadata: dict[str, Any] = {RATER_KEY: rater, "softseg_hue": hue_index}
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
                colormap=soft_colormap(PALETTE[hue_index % len(PALETTE)], f"softseg-{rater}"),
                blending="translucent",
                opacity=0.85,
            )
        if scale is None:
            top = int(np.max(data))
            scale = ConfidenceScale.binary() if kind == "binary" else ConfidenceScale.linear(top)
            if kind == "levels":
                show_warning(f"{path.name}: no JSON sidecar with a confidence scale; assuming {top} equal steps {scale.values}")
        elif int(np.max(data)) > scale.n_levels:
            raise InputError(
                f"{path.name}: holds level {int(np.max(data))} but its sidecar scale has {scale.n_levels} levels"
            )
        if any(lyr.metadata.get(RATER_KEY) == rater for lyr in self.viewer.layers if isinstance(lyr, Labels)):
            rater = f"{rater} ({path.name})"
        layer = self._add_levels_layer(
            data.astype(np.uint8), rater=rater, scale=scale, geometry=geom, image=image if image is not None else None
        )
        if image is None:
            layer.metadata[SOURCE_KEY] = str(path)
        return layer

    # ------------------------------------------------------------------ recovery
    def check_recoveries(self, image: Image | None = None, *, notify: bool = True) -> list[Recovery]:
        """Snapshots of *image*'s raters newer than their last export; offers a restore when any."""
        image = image or self.image_layer
        if image is None:
            return []
        src = _source_of(image)
        found = list_recoveries(src, name=image.name)
        self._pending = found
        if found:
            what = ", ".join(f"{r.rater} ({r.saved_at_text})" for r in found)
            self._restore_btn.text = f"Restore unsaved work: {what}"
            self._restore_btn.visible = True
            key = str(src or image.name)
            if notify and key not in self._offered:
                self._offered.add(key)
                notification_manager.dispatch(
                    Notification(
                        f"Unsaved rater work found for {image.name}: {what}",
                        severity=NotificationSeverity.WARNING,
                        actions=[("Restore", lambda *a, img=image: self._guard(lambda: self.restore(image=img)))],
                    )
                )
        else:
            self._restore_btn.visible = False
        return found

    def restore(self, recoveries: Sequence[Recovery] | None = None, *, image: Image | None = None) -> list[Labels]:
        """Bring recovered snapshots back as rater layers (an existing layer of the rater is updated)."""
        image = image or self.image_layer
        if image is None:
            raise InputError("pick the image whose work should be restored")
        recs = list(recoveries) if recoveries is not None else (self._pending or self.check_recoveries(image, notify=False))
        geom = geometry_of(image)
        out = []
        for rec in recs:
            levels = load_snapshot(rec, geometry=geom if rec.order == "file" else None)
            if tuple(levels.shape) != tuple(np.shape(image.data)):
                raise InputError(
                    f"snapshot {rec.path} has shape {levels.shape}, image {image.name!r} has {np.shape(image.data)}"
                )
            scale = rec.scale or ConfidenceScale.linear(max(1, int(levels.max())))
            existing = next(
                (lyr for lyr in self.viewer.layers if isinstance(lyr, Labels) and lyr.metadata.get(RATER_KEY) == rec.rater),
                None,
            )
            if existing is not None:
                existing.data = levels.astype(existing.data.dtype)
                _style_rater_layer(existing, scale)
                out.append(existing)
            else:
                out.append(self._add_levels_layer(levels.astype(np.uint8), rater=rec.rater, scale=scale, geometry=geom, image=image))
        self._pending = []
        self._restore_btn.visible = False
        if out:
            show_info(f"restored {', '.join(lyr.name for lyr in out)}")
        return out

    # ------------------------------------------------------------------ teardown
    def close_autosave(self) -> None:
        """Write pending snapshots and stop the writers (the widget is being closed)."""
        for session in list(self.autosaves.values()):
            session.close()
        self.autosaves.clear()
