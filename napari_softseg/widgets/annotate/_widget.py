"""The *Soft annotation* dock: rater layers, classes, confidence levels, fill, export, recovery.

The widget is a thin view that wires its parts together. Levels -> soft values is
:mod:`softseg.confidence`, class codes :mod:`softseg.class_levels`, snapshots
:mod:`softseg.autosave` (driven by :mod:`._autosave`), filling between slices
:mod:`softseg.interpolate` (driven by :mod:`._interpolation`), pre-annotation
:mod:`softseg.preannotate` (:mod:`._preannotate`). The class picker is :mod:`._classes`, the
level bar and its guard :mod:`._levels`, navigation :mod:`._navigation`, export/open
:mod:`._export`, recovery :mod:`._recovery`. Layers are tracked by
:func:`napari_softseg._metadata.layer_uid`, never by Python identity (the Plugins menu hands
the widget proxies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton
from napari.layers import Image, Labels, Layer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from softseg.autosave import Recovery
from softseg.confidence import ConfidenceScale
from softseg.confidence import METADATA_KEY as SCALE_KEY
from softseg.errors import InputError

from napari_softseg._metadata import KIND_KEY, RATER_KEY, find_layer, layer_uid
from napari_softseg._raters import (
    PALETTE,
    class_hues,
    geometry_of,
    hue_of,
    is_level_layer,
    layer_classes,
    layer_scale,
    rater_id,
)
from napari_softseg.widgets._common import PaintModeRemovalGuard, collapsible, notify, scroll_area
from napari_softseg.widgets.annotate._autosave import AutosaveController, FlushOnClose, RaterAutosave
from napari_softseg.widgets.annotate._classes import (
    ClassBar,
    current_class,
    current_level,
    parse_classes,
    rescaled,
    select_code,
    top_code,
)
from napari_softseg.widgets.annotate._export import RaterFilesPanel
from napari_softseg.widgets.annotate._files import export_path_for
from napari_softseg.widgets.annotate._interpolation import FILL_KEY, Interpolator
from napari_softseg.widgets.annotate._levels import LevelBar, set_level
from napari_softseg.widgets.annotate._navigation import (
    OrientationLetters,
    SliceNavigator,
    bind_slice_keys,
    unbind_slice_keys,
)
from napari_softseg.widgets.annotate._preannotate import PreannotatePanel, start_preannotated_layer
from napari_softseg.widgets.annotate._rater_layers import RaterLayers, style_rater_layer
from napari_softseg.widgets.annotate._recovery import RecoveryBanner, RecoveryController
from napari_softseg.widgets.annotate._scale_editor import ScaleEditor
from napari_softseg.widgets._docking import dock_as_tab

__all__ = ["SOURCE", "AnnotateWidget", "export_path_for"]

#: Name shown as the source of this widget's notifications.
SOURCE = "Soft annotation"


class AnnotateWidget(Container):
    """ "Soft annotation": rater layers, classes, confidence levels, fill between slices,
    pre-annotation, navigation, export/open, autosave, recovery.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (napari passes a proxy of it when the widget is opened from the Plugins menu).
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self._closed = False
        self._offered: set[str] = set()
        self._last_image_uid: str | None = None
        self.raters = RaterLayers(self)

        # ---- recovery banner (top), rater layer row
        self.recovery = RecoveryController(self, source=SOURCE)
        self._banner = RecoveryBanner(
            lambda: self._guard(self.restore), lambda: self._guard(self.recovery.discard_clicked)
        )
        self._image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self._rater_id = LineEdit(label="Rater id", value="")
        self._rater_id.native.setPlaceholderText("required: your initials, e.g. AB")
        self._rater_id.tooltip = "Names your layer and your files; type it before adding a layer."
        self._classes = LineEdit(label="Classes", value="")
        self._classes.native.setPlaceholderText("optional: grey matter, white matter, csf")
        self._classes.tooltip = (
            "Several structures in one layer: their names, separated by commas (empty: one "
            "structure). Taken from the open multi-class rater layers of the image when empty."
        )
        self._add = PushButton(text="Add rater layer")
        self._layer = ComboBox(label="Rater layer", choices=self._rater_choices, nullable=True)
        top = Container(widgets=[self._image, self._rater_id, self._classes, self._add, self._layer], labels=True)
        top.margins = (0, 0, 0, 0)

        # ---- classes, levels, fill, slices
        self._levels_title = Label(value="Confidence level (keys 1..K; 0 or E erase)")
        self._class_bar = ClassBar(self.select_class)
        self._level_bar = LevelBar(self.select_level)
        self._fill = PushButton(text=f"Fill between slices ({FILL_KEY})")
        self._fill.tooltip = (
            "Fill the unpainted slices between painted ones along the slice slider (shape-based "
            "interpolation per level and class); painted slices never change; Ctrl+Z undoes it"
        )
        self._slices = SliceNavigator(self.viewer, kinds_of=self.raters.slice_kinds)

        # ---- folded sections: scale, pre-annotation, files
        self._scale = ScaleEditor()
        self._preset, self._n_levels = self._scale.preset, self._scale.n_levels
        self._table, self._apply = self._scale.table, self._scale.apply
        self.preannotate = PreannotatePanel(
            self.viewer, start_layer=lambda *a, **k: start_preannotated_layer(self, *a, **k),
            scale_of=self.scale_from_editor,
            image_of=lambda: self.image_layer, on_message=lambda t, s: self._message(t, severity=s),
        )
        self.files = RaterFilesPanel(self)
        self._export_kind, self._export_path = self.files.kind, self.files.path
        self._export, self._open = self.files.export, self.files.open

        self._status = Label(value="Type your rater id and press Add rater layer")
        self._status.native.setWordWrap(True)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        for w in (self._banner.widget, top.native, self._levels_title.native, self._class_bar,
                  self._level_bar, self._fill.native, self._slices):
            layout.addWidget(w)
        self._scale_section = collapsible("Confidence scale", self._scale.container.native)
        self._pre_section = collapsible("Pre-annotate from a model", self.preannotate.container.native)
        self._io_section = collapsible("Export / open rater files", self.files.container.native, expanded=True)
        for w in (self._scale_section, self._pre_section, self._io_section, self._status.native):
            layout.addWidget(w)
        layout.addStretch(1)
        self._body_parts = (top,)  # keep the magicgui containers alive
        super().__init__(widgets=[], labels=False)
        dock_as_tab(self.native)  # joins the other SoftSeg docks as a tab
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(scroll_area(body))

        # ---- engine-side helpers
        self.autosave = AutosaveController(
            self.viewer, on_saved=self._on_saved, on_closed=self._on_session_closed,
            on_message=self._on_autosave_message, reference_of=self.raters.references.get,
            on_record=self.raters.on_record,
        )
        self.interpolator = Interpolator(
            self.viewer, self.native, tracker_of=lambda lyr: self.raters.trackers[layer_uid(lyr)],
            on_message=self._say, on_done=self._on_filled,
        )
        self._flush_on_close = FlushOnClose(self.autosave, self.native)
        self._removal_guard = PaintModeRemovalGuard(self.viewer, self.native)
        self.orientation_letters = OrientationLetters(self.viewer, self.native)
        bind_slice_keys(self.viewer, self._slices)
        # closing the dock (or the viewer) writes what is pending, stops the writer threads and
        # disconnects from the viewer
        self.native.destroyed.connect(lambda *_: self.close_autosave())

        self._add.changed.connect(lambda: self._guard(self.add_rater_layer))
        self._fill.changed.connect(lambda: self.interpolate())
        self._layer.changed.connect(self._on_layer_choice)
        self._image.changed.connect(self._on_image_choice)
        self._apply.changed.connect(lambda: self._guard(self.apply_scale))
        self._rater_id.changed.connect(self._on_rater_text)

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

    def _say(self, text: str, severity: str) -> None:
        """``severity`` "status": the status line only; else also a notification."""
        if severity == "status":
            self._set_status(text)
        else:
            self._message(text, severity=severity)

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
        if key not in self._offered:  # say each folder problem once
            self._offered.add(key)
            self._message(text, severity="warning")

    # ------------------------------------------------------------------ choices (uids)
    def _image_choices(self, _w: Any = None) -> list[tuple[str, str]]:
        return [
            (lyr.name, layer_uid(lyr)) for lyr in self.viewer.layers
            if isinstance(lyr, Image) and lyr.metadata.get(KIND_KEY) != "soft" and np.ndim(lyr.data) == 3
        ]

    def _rater_choices(self, _w: Any = None) -> list[tuple[str, str]]:
        return [(lyr.name, layer_uid(lyr)) for lyr in self.viewer.layers
                if isinstance(lyr, Labels) and RATER_KEY in lyr.metadata]

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
        self.preannotate.refresh()
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
                self.raters.attach(lyr)
        self._suggest_classes()
        added = getattr(event, "value", None)
        if isinstance(added, Image) and self.image_layer is not None and layer_uid(self.image_layer) == layer_uid(added):
            self._on_image_choice(self._image.value)

    def _on_removed(self, event: Any = None) -> None:
        if self._closed:
            return
        removed = getattr(event, "value", None)
        if removed is not None:
            self.raters.forget(layer_uid(removed))
        self._refresh_choices()
        if self.rater_layer is None:
            self._slices.set_layer(None)
            self._show_bars(None)

    def _on_active_layer(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and RATER_KEY in active.metadata and self._layer.value != layer_uid(active):
            self._layer.value = layer_uid(active)

    def _on_image_choice(self, value: Any = None) -> None:
        self.files.suggest()
        self._update_add_button()
        # offer recovery when an image is opened or picked (not on every list refresh)
        if value is not None and value != self._last_image_uid:
            self._last_image_uid = value
            self.check_recoveries(self.image_layer)

    def _on_rater_text(self, *_: Any) -> None:
        self._update_add_button()
        self.files.suggest()

    def _update_add_button(self) -> None:
        typed, image = bool(str(self._rater_id.value).strip()), self.image_layer is not None
        self._add.enabled = typed and image
        self._add.tooltip = ("Add a Labels layer for this rater on the image" if typed and image
                             else "Open an image first" if not image else "Type your rater id first")

    def _suggest_classes(self) -> None:
        """An empty *Classes* box takes the classes of an open multi-class rater layer."""
        if str(self._classes.value).strip():
            return
        for lyr in self.viewer.layers:
            names = layer_classes(lyr) if isinstance(lyr, Labels) else None
            if names:
                self._classes.value = ", ".join(names)
                return

    # ------------------------------------------------------------------ rater layers
    def _check_new_rater(self, rater_id: str | None, image: Any) -> tuple[str, Any]:
        image = image or self.image_layer
        if image is None:
            raise InputError("open an image first (File > Open, or the SoftSeg sample), then add a rater layer")
        rater = str(rater_id if rater_id is not None else self._rater_id.value).strip()
        if not rater:
            raise InputError("type your rater id (e.g. your initials) before adding a rater layer")
        if any(isinstance(lyr, Labels) and lyr.metadata.get(RATER_KEY) == rater for lyr in self.viewer.layers):
            raise InputError(f"a layer for rater {rater!r} exists already; pick it under 'Rater layer' or type another id")
        return rater, image

    def add_rater_layer(
        self, rater_id: str | None = None, *, image: Image | None = None,
        classes: Sequence[str] | None = None, on_pending: str = "ask",
    ) -> Labels | None:
        """A new Labels layer for *rater_id* with the image's shape and geometry.

        *classes* (default: the *Classes* box) makes a multi-class layer painted with class
        codes; ``()`` or one name: one structure. When the rater has pending (never exported)
        work on this image, the rater chooses first: ``on_pending="ask"`` shows the question;
        ``"Restore"``, ``"Keep both"`` or ``"Discard"`` answer it from code.

        Returns
        -------
        Labels or None
            The rater's layer (the restored one for *Restore*); None when the rater cancelled.

        Raises
        ------
        InputError
            No image, an empty rater id, a layer for that rater already exists, bad class names.
        """
        rater, image = self._check_new_rater(rater_id, image)
        names = parse_classes(self._classes.value) if classes is None else (tuple(classes) if len(classes) > 1 else None)
        if names is not None and classes is not None:
            names = parse_classes(", ".join(names))
        scale = self.scale_from_editor()
        go_on, restored = self.recovery.settle_pending(rater, image, on_pending)
        if not go_on:
            return restored
        dtype = np.uint8 if (len(names) if names else 1) * scale.n_levels <= 255 else np.uint16
        layer = self.raters.add(
            np.zeros(np.shape(image.data), dtype=dtype), rater=rater, scale=scale,
            geometry=geometry_of(image), image=image, classes=names,
        )
        keys = f"classes Alt-1..Alt-{len(names)} (C / Shift-C), " if names else ""
        self._set_status(f"{rater}: paint with {keys}levels 1..{scale.n_levels}; every stroke is autosaved")
        return layer

    def _on_saved(self, uid: str, path: str) -> None:
        layer = find_layer(self.viewer.layers, uid)
        name = layer.name if layer is not None else "rater layer"
        self._set_status(f"Autosaved {name} at {time.strftime('%H:%M:%S')} to {Path(path).parent.parent}")

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

    # ------------------------------------------------------------------ classes and levels
    def _on_layer_choice(self, uid: Any = None) -> None:
        layer = self.rater_layer
        self._slices.set_layer(layer)
        if layer is None:
            self._show_bars(None)
            return
        self._rater_id.value = rater_id(layer)
        if layer_scale(layer) is None:
            # a label map from elsewhere (e.g. a binary rater file): nothing changes until the
            # rater applies a scale, which makes it a rater layer (colours, keys, autosave)
            self._show_bars(None)
            self._set_status(f"{layer.name} has no confidence scale: choose one under Confidence scale and press Apply")
            self._scale_section.expand(animate=False)
            return
        self.raters.attach(layer)
        self._scale.load(layer_scale(layer))
        self._show_bars(layer)
        self.files.suggest()

    def _show_bars(self, layer: Any) -> None:
        classes = layer_classes(layer) if layer is not None else None
        scale = layer_scale(layer) if layer is not None else None
        self._class_bar.rebuild(classes)
        hue = class_hues(classes)[current_class(layer) - 1] if classes else (hue_of(layer) if layer else PALETTE[0])
        self._level_bar.rebuild(scale, hue)
        self._shown_class = current_class(layer) if classes else None
        n = scale.n_levels if scale is not None else 1
        self._levels_title.value = (
            f"Class (Alt-1..Alt-{len(classes)}, C / Shift-C) and confidence level (keys 1..{n}; 0 or E erase)"
            if classes else f"Confidence level (keys 1..{n}; 0 or E erase)")
        if layer is not None:
            self._sync_bar(layer_uid(layer))

    def _sync_bar(self, uid: str) -> None:
        layer = self.rater_layer
        if layer is None or layer_uid(layer) != uid:
            return
        if layer_classes(layer):
            if current_class(layer) != getattr(self, "_shown_class", None):
                self._show_bars(layer)  # the level bar takes the class's colour
                return
            self._class_bar.show_class(current_class(layer))
        self._level_bar.show_level(0 if str(layer.mode) == "erase" else current_level(layer))

    def select_level(self, level: int) -> None:
        """Pick a confidence level (0 = eraser) on the current rater layer, like keys 0..L
        (on a multi-class layer, of the class being painted)."""
        layer = self.rater_layer
        if layer is None:
            self._message("add or pick a rater layer first")
            return
        set_level(layer, int(level), on_message=self._message)
        self.viewer.layers.selection.active = layer
        self._sync_bar(layer_uid(layer))

    def select_class(self, class_index: int) -> None:
        """Paint class *class_index* (1..K) on the current multi-class layer, keeping the level
        (like ``Alt-<k>``)."""
        layer = self.rater_layer
        if layer is None:
            self._message("add or pick a rater layer first")
            return
        self._guard(lambda: select_code(layer, class_index=int(class_index)))
        self.viewer.layers.selection.active = layer
        self._sync_bar(layer_uid(layer))

    # ------------------------------------------------------------------ scale editor
    def scale_from_editor(self) -> ConfidenceScale:
        """The scale typed in the editor's table (InputError when it is not valid)."""
        return self._scale.scale()

    def set_scale(self, scale: ConfidenceScale, *, layer: Labels | None = None) -> None:
        """Show *scale* in the editor and apply it to the rater layer."""
        self._scale.load(scale)
        self.apply_scale(layer=layer)

    def apply_scale(self, *, layer: Labels | None = None) -> ConfidenceScale:
        """Store the editor's scale on the rater layer (colours, status values, level keys).

        A multi-class layer whose number of levels changes keeps each voxel's class and level
        (its codes are rewritten for the new number of levels).

        Raises
        ------
        InputError
            Invalid scale, or the layer has voxels at a level the new scale does not have.
        """
        scale = self.scale_from_editor()
        layer = layer or self.rater_layer
        if layer is None:
            raise InputError("add or pick a rater layer first; the scale is stored with the layer")
        recoded = rescaled(layer, scale)
        layer.metadata[SCALE_KEY] = scale.as_dict()
        if recoded is not None:
            layer.data = recoded
        session = self.raters.attach(layer)
        style_rater_layer(layer, scale)
        if int(layer.selected_label) > top_code(layer):
            select_code(layer, level=scale.n_levels)
        current = self.rater_layer
        if current is not None and layer_uid(current) == layer_uid(layer):
            self._show_bars(layer)
        if session is not None:
            session.mark_dirty()
        return scale

    # ------------------------------------------------------------------ fill between slices
    def interpolate(self, layer: Labels | None = None) -> Any:
        """Fill the current rater layer's unpainted slices between painted ones, along the slice
        slider's axis, in a worker; applied as one undo step (see :mod:`._interpolation`).

        Returns the worker, or None when refused (one line in the status says why).
        """
        layer = layer or self.rater_layer
        if layer is not None and layer_uid(layer) not in self.raters.trackers:
            self.raters.attach(layer)
        self._fill.enabled = False
        worker = self.interpolator.start(layer)
        if worker is None:
            self._fill.enabled = True
        return worker

    def _on_filled(self, layer: Any, result: Any) -> None:
        if self._closed:
            return
        self._fill.enabled = True
        self._slices.refresh()

    # ------------------------------------------------------------------ export / open / recovery
    def export_rater(self, path: str | Path | None = None, *, layer: Labels | None = None,
                     as_levels: bool | None = None, overwrite: bool = False) -> Path | list[Path]:
        """Write a rater layer as NIfTI with the image's geometry and a JSON sidecar; a
        multi-class layer as one file per class (a list). See :meth:`RaterFilesPanel.export_rater`."""
        return self.files.export_rater(path, layer=layer, as_levels=as_levels, overwrite=overwrite)

    def open_rater_files(self, paths: Sequence[str | Path], *, image: Image | None = None) -> list[Layer]:
        """Open rater files as layers (per-class files of one rater as one multi-class layer).
        See :meth:`RaterFilesPanel.open_rater_files`."""
        return self.files.open_rater_files(paths, image=image)

    def open_rater_file(self, path: str | Path, *, image: Image | None = None) -> Layer:
        """Open one rater file (see :meth:`open_rater_files`)."""
        return self.open_rater_files([path], image=image)[0]

    def check_recoveries(self, image: Image | None = None, *, notify_user: bool = True) -> list[Recovery]:
        """Pending work of *image*'s raters; shows or hides the banner. See :meth:`RecoveryController.check`."""
        return self.recovery.check(image, notify_user=notify_user)

    def restore(self, recoveries: Sequence[Recovery] | None = None, *, image: Image | None = None,
                as_copies: bool = False) -> list[Labels]:
        """Bring pending work back as rater layers. See :meth:`RecoveryController.restore`."""
        return self.recovery.restore(recoveries, image=image, as_copies=as_copies)

    def discard(self, recoveries: Sequence[Recovery] | None = None, *, image: Image | None = None) -> None:
        """Set pending work aside (no question asked; the *Discard…* button asks first)."""
        self.recovery.discard(recoveries, image=image)

    # ------------------------------------------------------------------ teardown
    def close_autosave(self) -> None:
        """Write pending snapshots, stop the writers and the widget's viewer connections."""
        if self._closed:
            return
        self._closed = True
        self.autosave.close_all()
        self.interpolator.close()
        self.raters.close()
        for close in (self._slices.close_navigator, self.orientation_letters.close):
            try:
                close()
            except RuntimeError:  # Qt already deleted the dock's widgets
                pass
        unbind_slice_keys(self.viewer)
        self._removal_guard.close()
        layers = self.viewer.layers
        for emitter, cb in ((layers.events.inserted, self._on_inserted), (layers.events.removed, self._on_removed),
                            (layers.selection.events.active, self._on_active_layer)):
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
