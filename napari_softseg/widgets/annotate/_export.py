"""*Export / open rater files* of the Soft annotation dock.

Export writes the current rater layer next to its image (the name follows the content:
``rater-<id>.nii.gz`` soft map, ``rater-<id>_levels.nii.gz`` levels; a multi-class layer one
file per class, ``rater-<id>_label-<class>.nii.gz``), never replacing a file without the
rater's confirmation (:func:`~napari_softseg.widgets._common.confirm_overwrite`). Open reads
rater files back as rater layers (per-class files of one rater into one multi-class layer).
The file work itself is :mod:`._files`; this panel holds the widgets and talks to the dock.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from qtpy.QtWidgets import QFileDialog

from softseg.autosave import rater_file_stem, record_export
from softseg.errors import InputError
from softseg.io import sidecar_path

from napari_softseg._metadata import HUE_KEY, RATER_KEY, SOURCE_KEY
from napari_softseg._raters import PALETTE, layer_classes, next_free_hue, rater_id, soft_colormap
from napari_softseg.widgets._common import confirm_overwrite
from napari_softseg.widgets.annotate._files import (
    class_export_paths,
    export_path_for,
    read_rater_files,
    write_class_files,
    write_rater_file,
)

__all__ = ["EXPORT_LEVELS", "EXPORT_SOFT", "RaterFilesPanel", "source_of"]

EXPORT_SOFT = "soft map (float32)"
EXPORT_LEVELS = "levels (integer)"


def source_of(layer: Any) -> Path | None:
    """The file a layer came from (its ``source_path``, or napari's source), None when none."""
    if layer is None:
        return None
    src = layer.metadata.get(SOURCE_KEY) or getattr(layer.source, "path", None)
    return Path(src) if src else None


class RaterFilesPanel:
    """Export kind, file box, *Export rater…* and *Open rater file…* (see the module docstring).

    Parameters
    ----------
    dock : AnnotateWidget
        The dock: its current layers, rater id, autosave, messages and layer factory.
    """

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.kind = ComboBox(label="Export as", choices=[EXPORT_SOFT, EXPORT_LEVELS])
        self.path = FileEdit(label="File", mode="w", filter="NIfTI (*.nii.gz *.nii)")
        self.path.tooltip = (
            "Export name; a multi-class layer writes one file per class, "
            "<name>_label-<class>.nii.gz"
        )
        self.export = PushButton(text="Export rater…")
        self.open = PushButton(text="Open rater file…")
        form = Container(widgets=[self.kind, self.path], labels=True)
        form.margins = (0, 0, 0, 0)
        self.container = Container(widgets=[form, self.export, self.open], labels=False)
        self.container.margins = (0, 0, 0, 0)
        self._parts = (form,)
        self.last_export: list[Path] = []
        self.export.changed.connect(lambda: dock._guard(self._export_clicked))
        self.open.changed.connect(lambda: dock._guard(self._open_clicked))
        self.kind.changed.connect(self._on_kind)

    # ---------------------------------------------------------------- names
    def default_path(self) -> Path | None:
        dock = self.dock
        layer, image = dock.rater_layer, dock.image_layer
        src = source_of(layer) or source_of(image)
        if src is None:
            return None
        rater = rater_id(layer) if layer is not None else str(dock._rater_id.value).strip()
        try:
            stem = rater_file_stem(rater)
        except InputError:
            return None
        return export_path_for(src.parent / f"rater-{stem}.nii.gz", levels=self.kind.value == EXPORT_LEVELS)

    def suggest(self, *_: Any) -> None:
        path = self.default_path()
        if path is not None:
            self.path.value = path

    def _on_kind(self, kind: Any = None) -> None:
        """The file name follows the content: ``rater-x.nii.gz`` <-> ``rater-x_levels.nii.gz``."""
        current = self.path.value
        if current is None or str(current) in ("", "."):
            self.suggest()
            return
        self.path.value = export_path_for(current, levels=kind == EXPORT_LEVELS)

    @staticmethod
    def targets(layer: Any, path: Path) -> list[Path]:
        """Every file an export of *layer* to *path* writes (images and sidecars)."""
        classes = layer_classes(layer) if layer is not None else None
        images = class_export_paths(path, classes) if classes else [path]
        return [t for p in images for t in (p, sidecar_path(p))]

    # ---------------------------------------------------------------- export
    def export_rater(
        self,
        path: str | Path | None = None,
        *,
        layer: Any = None,
        as_levels: bool | None = None,
        overwrite: bool = False,
    ) -> Path | list[Path]:
        """Write a rater layer as NIfTI with the image's geometry and a JSON sidecar.

        A multi-class layer writes one file per class, ``<name>_label-<class>.nii.gz`` (the
        multi-class contract), all of them or none, and returns their list.

        Parameters
        ----------
        path : path-like, optional
            Defaults to the file box (``rater-<id>.nii.gz`` next to the image).
        layer : Labels, optional
            Defaults to the dock's current rater layer.
        as_levels : bool, optional
            Integer levels instead of the float32 soft map; defaults to the "Export as" choice.
        overwrite : bool
            Replace existing files (the *Export* button asks the rater first).

        Returns
        -------
        Path, or list of Path (one per class)

        Raises
        ------
        InputError
            No layer or file name, a file (or sidecar) exists and *overwrite* is false, or the
            layer holds values its scale does not have.
        """
        dock = self.dock
        layer = layer or dock.rater_layer
        if layer is None:
            raise InputError("pick a rater layer to export")
        if path is None:
            path = self.path.value
        if path is None or str(path) in ("", "."):
            raise InputError("choose an output file (.nii.gz) for the export")
        path = Path(path)
        as_levels = (self.kind.value == EXPORT_LEVELS) if as_levels is None else bool(as_levels)
        image = dock.image_layer
        levels = np.array(layer.data, copy=True)
        rater = rater_id(layer)
        preannotation = dock.raters.preannotation_record(layer)
        kwargs = dict(
            as_levels=as_levels,
            overwrite=overwrite,
            source_image=image.name if image is not None else None,
            preannotation=preannotation,
        )
        if layer_classes(layer):
            written: list[Path] = write_class_files(layer, path, **kwargs)
        else:
            written = [write_rater_file(layer, path, **kwargs)]
        self.last_export = list(written)
        session = dock.autosave.for_layer(layer)
        if session is not None:
            try:
                record_export(session.folder, rater, levels, written[0])
            except OSError as exc:
                dock._message(
                    f"exported, but could not note it in {session.folder}: {exc}", severity="warning"
                )
        what = "levels" if as_levels else "soft map"
        names = ", ".join(p.name for p in written)
        dock._message(f"Saved {rater} as {what}: {names} in {written[0].parent}")
        return written if layer_classes(layer) else written[0]

    def _export_clicked(self) -> Any:
        path = self.path.value
        if path is None or str(path) in ("", "."):
            name, _ = QFileDialog.getSaveFileName(self.dock.native, "Export rater", "", "NIfTI (*.nii.gz *.nii)")
            if not name:
                return None
            path = name
        path = Path(path)
        layer = self.dock.rater_layer
        if not confirm_overwrite(
            self.targets(layer, path), parent=self.dock.native, title="Replace the exported rater file?"
        ):
            self.dock._set_status(f"Not exported: {path.name} was kept as it is")
            return None
        return self.export_rater(path, overwrite=True)

    # ---------------------------------------------------------------- open
    def _open_clicked(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(
            self.dock.native, "Open rater files", "", "NIfTI (*.nii.gz *.nii)"
        )
        if names:
            self.dock._guard(lambda: self.open_rater_files(names))

    def open_rater_files(self, paths: Sequence[str | Path], *, image: Any = None) -> list[Any]:
        """Open rater files: binary, level and class-code maps as rater layers (the per-class
        files of one rater as one multi-class layer, :func:`._files.read_rater_files`), soft
        maps as soft Image layers. Scale, rater id, classes and pre-annotation come from the
        sidecars; a level map without one gets equal steps and a warning; each file gets a
        colour no open rater layer uses.

        Raises
        ------
        InputError
            Unreadable file, not a rater map, a shape other than the image's, per-class files
            that overlap or use different scales.
        """
        from napari_softseg._layers import add_volume_layer
        from softseg.confidence import METADATA_KEY as SCALE_KEY

        dock = self.dock
        image = image or dock.image_layer
        files = read_rater_files(
            paths,
            shape=None if image is None else tuple(np.shape(image.data)),
            image_name="the image" if image is None else f"image {image.name!r}",
        )
        out = []
        for got in files:
            hue = next_free_hue(dock.viewer.layers)
            rater = got.rater
            if got.kind == "soft":
                metadata: dict[str, Any] = {RATER_KEY: rater, HUE_KEY: hue}
                if got.scale is not None:
                    metadata[SCALE_KEY] = got.scale.as_dict()
                out.append(
                    add_volume_layer(
                        dock.viewer, got.data.astype(np.float32, copy=False), got.geometry,
                        kind="soft", name=f"{rater} (soft)", source_path=got.path, metadata=metadata,
                        colormap=soft_colormap(PALETTE[hue], f"softseg-{rater}"),
                        blending="translucent", opacity=0.85,
                    )
                )
                continue
            if got.scale_guessed:
                dock._message(
                    f"{got.path.name}: no JSON sidecar with a confidence scale; assuming "
                    f"{got.scale.n_levels} equal steps {', '.join(f'{v:.2g}' for v in got.scale.values)}",
                    severity="warning",
                )
            if any(lyr.metadata.get(RATER_KEY) == rater for lyr in dock.viewer.layers):
                rater = f"{rater} ({got.path.name})"
            side = got.sidecar
            pre = side.extra.get("preannotation") if side is not None else None
            dtype = np.uint8 if int(np.max(got.data, initial=0)) <= 255 else np.uint16
            layer = dock.raters.add(
                got.data.astype(dtype), rater=rater, scale=got.scale, geometry=got.geometry,
                image=image, hue=hue, classes=got.classes,
                preannotation=pre if isinstance(pre, dict) and side.preannotated_by else None,
            )
            if image is None:
                layer.metadata[SOURCE_KEY] = str(got.path)
            out.append(layer)
        if out:
            dock._set_status(f"Opened {', '.join(lyr.name for lyr in out)}")
        return out
