"""Rater files of the Soft annotation dock: export names, writing a layer, reading files.

No Qt here and no napari objects beyond reading ``layer.data`` / ``layer.metadata``: the dock
asks before replacing (:func:`napari_softseg.widgets._common.confirm_overwrite`) and turns the
results into layers and messages.

Multi-class rater layers (class codes ``(class - 1) * L + level``, :mod:`softseg.class_levels`)
are written as the multi-class contract's per-class files (DESIGN decision 11)::

    rater-<id>_label-<class key>.nii.gz   + .json   one per class, all or none (OutputSet)

each the class's level map (:func:`~softseg.class_levels.class_level_maps`, uint8) or soft map
(:func:`~softseg.class_levels.class_soft_maps`, float32), with a sidecar holding the rater, the
scale, the class (``class``) and the whole class list (``classes``, so the files open back in
order). :func:`read_rater_files` opens such files back into one code map
(:func:`~softseg.class_levels.codes_from_class_level_maps`), and an integer label map
``rater-<id>.nii.gz`` beside a ``dataset.json`` that lists K >= 2 classes as a code map with
one level per class.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softseg import __version__
from softseg.class_levels import class_level_maps, class_soft_maps, codes_from_class_level_maps
from softseg.confidence import ConfidenceScale, detect_label_kind
from softseg.dataset_json import ClassList, class_file_path, class_key, read_dataset_json
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry, display_geometry, save_display_array
from softseg.io import load_volume, nifti_image, sidecar_path
from softseg.outputs import OutputSet
from softseg.sidecar import RaterSidecar, read_rater_sidecar

from napari_softseg._metadata import SOURCE_KEY
from napari_softseg._raters import geometry_of, layer_classes, layer_scale, rater_id

__all__ = [
    "LEVELS_SUFFIX",
    "RaterFile",
    "class_export_paths",
    "export_path_for",
    "read_rater_file",
    "read_rater_files",
    "write_rater_file",
]

_CLASS_FILE = re.compile(r"^(?P<stem>.+)_label-(?P<key>[^_]+?)(?P<suffix>\.nii(?:\.gz)?)$", re.I)

#: Added to the file stem of an export that holds integer levels (``rater-x_levels.nii.gz``).
LEVELS_SUFFIX = "_levels"


def _nifti_stem(name: str) -> tuple[str, str]:
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ".nii.gz"


def export_path_for(path: str | Path, *, levels: bool) -> Path:
    """*path* renamed for what it holds: ``x.nii.gz`` (soft map) <-> ``x_levels.nii.gz`` (levels)."""
    path = Path(path)
    stem, ext = _nifti_stem(path.name)
    if stem.endswith(LEVELS_SUFFIX):
        stem = stem[: -len(LEVELS_SUFFIX)]
    return path.with_name(f"{stem}{LEVELS_SUFFIX if levels else ''}{ext}")


def class_export_paths(path: str | Path, classes: Sequence[str]) -> list[Path]:
    """Per-class files of an export name: ``x.nii.gz`` (or ``x_levels.nii.gz``) ->
    ``x_label-<class key>.nii.gz`` for each class (:func:`softseg.dataset_json.class_key`)."""
    base = export_path_for(path, levels=False)
    return [class_file_path(base, class_key(c)) for c in classes]


def _sidecar(
    layer: Any, *, as_levels: bool, scale: ConfidenceScale, source_image: str | None,
    class_name: str | None = None, classes: Sequence[str] | None = None,
    preannotation: Mapping[str, Any] | None = None,
) -> RaterSidecar:
    source = layer.metadata.get(SOURCE_KEY) or source_image
    extra: dict[str, Any] = {
        "exported_at": _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds")
    }
    if classes:
        extra["classes"] = list(classes)
    if preannotation is not None:
        extra["preannotation"] = dict(preannotation)
    return RaterSidecar(
        rater=rater_id(layer),
        kind="labels" if as_levels else "soft",
        scale=scale,
        class_name=class_name,
        preannotated_by=None if preannotation is None else str(preannotation.get("model")),
        source_image=None if source is None else str(source),
        software=f"napari-softseg {__version__}",
        extra=extra,
    )


def write_rater_file(
    layer: Any,
    path: str | Path,
    *,
    as_levels: bool,
    overwrite: bool = False,
    source_image: str | None = None,
    preannotation: Mapping[str, Any] | None = None,
) -> Path:
    """Write a rater layer in its image's geometry with a JSON sidecar (:mod:`softseg.sidecar`).

    A multi-class layer goes to per-class files instead: :func:`write_class_files`.

    Parameters
    ----------
    layer : napari Labels layer
        Confidence levels with their scale in the metadata (binary when it has none).
    path : path-like
        ``.nii.gz`` / ``.nii``.
    as_levels : bool
        The integer levels (uint8); otherwise the float32 soft map through the scale.
    overwrite : bool
        Replace an existing file or sidecar (only after the rater confirmed).
    source_image : str, optional
        Recorded in the sidecar when the layer has no ``source_path``.
    preannotation : mapping, optional
        A pre-annotated layer's record (:func:`softseg.preannotate.preannotation_record`):
        written as ``preannotated_by`` (its model) and ``preannotation``.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        The file or its sidecar exists and *overwrite* is false (nothing is written); levels
        above the layer's scale.
    """
    path = Path(path)
    if not overwrite:
        taken = [p for p in (path, sidecar_path(path)) if p.exists()]
        if taken:
            raise InputError(
                f"{taken[0].name} exists already in {taken[0].parent}; choose another file name, "
                "or confirm replacing it"
            )
    levels = np.asarray(layer.data)
    scale = layer_scale(layer) or ConfidenceScale.binary()
    out = levels.astype(np.uint8) if as_levels else scale.to_soft(levels)
    sidecar = _sidecar(
        layer, as_levels=as_levels, scale=scale, source_image=source_image, preannotation=preannotation
    )
    written = save_display_array(
        path, out, geometry_of(layer), overwrite=True, sidecar=sidecar.to_json()
    )
    return Path(written)


def write_class_files(
    layer: Any,
    path: str | Path,
    *,
    as_levels: bool,
    overwrite: bool = False,
    source_image: str | None = None,
    preannotation: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write a multi-class rater layer as one file per class (all of them or none).

    Parameters
    ----------
    layer : napari Labels layer
        Class codes with the class names (CLASS_KEY) and scale (L levels) in its metadata.
    path : path-like
        The export name; the files are :func:`class_export_paths` of it.
    as_levels : bool
        Each class's level map (uint8, 0..L) — :func:`~softseg.class_levels.class_level_maps`;
        otherwise its soft map (float32) — :func:`~softseg.class_levels.class_soft_maps`.
    overwrite, source_image, preannotation
        As in :func:`write_rater_file`.

    Returns
    -------
    list of Path
        One file per class, in class order.

    Raises
    ------
    InputError
        A file or sidecar exists and *overwrite* is false (nothing is written), codes above
        ``K * L``, a class name without a file-name key.
    """
    classes = layer_classes(layer)
    if not classes:
        raise InputError(f"layer {layer.name!r} holds one structure; export it as one file")
    scale = layer_scale(layer) or ConfidenceScale.binary()
    codes = np.asarray(layer.data)
    name = f"layer {layer.name!r}"
    if as_levels:
        maps = class_level_maps(codes, n_classes=len(classes), n_levels=scale.n_levels, name=name)
    else:
        maps = class_soft_maps(codes, scale=scale, n_classes=len(classes), name=name)
    geometry = geometry_of(layer)
    paths = class_export_paths(path, classes)
    targets = [t for p in paths for t in (p, sidecar_path(p))]
    outs = OutputSet(targets, overwrite=overwrite)  # refuses existing files before any work
    with outs:
        for p, cls, data in zip(paths, classes, maps):
            side = _sidecar(
                layer, as_levels=as_levels, scale=scale, source_image=source_image,
                class_name=cls, classes=classes, preannotation=preannotation,
            )
            file_array = geometry.from_display(data)
            outs.save_image(p, nifti_image(p, file_array, like=geometry.volume(file_array)))
            outs.write_json(sidecar_path(p), side.to_json())
    return paths


def _rater_id_from_file(path: Path, sidecar: RaterSidecar | None) -> str:
    if sidecar is not None and sidecar.rater:
        return str(sidecar.rater)
    stem, _ = _nifti_stem(path.name)
    for prefix in ("rater-", "rater_"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            stem = stem[len(prefix) :]
    return stem


@dataclass(frozen=True, eq=False)
class RaterFile:
    """A rater file read for display.

    Attributes
    ----------
    path : Path
    data : ndarray
        napari (display) order; the file's dtype.
    geometry : DisplayGeometry
    kind : {"binary", "levels", "soft"}
    rater : str
        From the sidecar, else the file name without ``rater-``.
    scale : ConfidenceScale or None
        From the sidecar; for binary and level maps without one, the guess (one level, or equal
        steps up to the highest level) and ``scale_guessed`` is True.
    scale_guessed : bool
    classes : tuple of str or None
        Class names of a multi-class map (``data`` holds class codes), None for one structure.
    sidecar : RaterSidecar or None
        What the file's sidecar said (pre-annotation, class ...).
    paths : tuple of Path
        Every file the map was read from (the per-class files of one rater).
    """

    path: Path
    data: np.ndarray
    geometry: DisplayGeometry
    kind: str
    rater: str
    scale: ConfidenceScale | None
    scale_guessed: bool = False
    classes: tuple[str, ...] | None = None
    sidecar: RaterSidecar | None = None
    paths: tuple[Path, ...] = field(default=())


def read_rater_file(
    path: str | Path, *, shape: tuple[int, ...] | None = None, image_name: str = "the image"
) -> RaterFile:
    """Read a rater file (binary, levels or soft) with its sidecar, checked for display.

    Parameters
    ----------
    path : path-like
    shape : tuple, optional
        The image's display shape the file must have.
    image_name : str
        Names the image in the message when the shapes differ.

    Raises
    ------
    InputError
        Unreadable file or sidecar, not a rater map, a shape other than *shape* (both named),
        a level above the sidecar's scale.
    """
    path = Path(path)
    vol = load_volume(path, label=True)
    sidecar = read_rater_sidecar(path)
    kind = detect_label_kind(vol.array, name=path.name)
    geom = display_geometry(vol)
    data = geom.to_display(vol.array)
    if shape is not None and tuple(shape) != tuple(data.shape):
        raise InputError(
            f"{path.name}: shape {tuple(data.shape)} differs from {image_name} shape {tuple(shape)}; "
            "open the rater file that belongs to this image"
        )
    scale = sidecar.scale if sidecar is not None else None
    guessed = False
    classes = _code_classes(path, sidecar, kind)
    if kind != "soft":
        top = int(np.max(data))
        if classes is not None:
            scale = scale or ConfidenceScale.binary()
            if top > len(classes) * scale.n_levels:
                raise InputError(
                    f"{path.name}: holds value {top} but {len(classes)} classes x {scale.n_levels} "
                    f"level(s) allow 0..{len(classes) * scale.n_levels}; fix the file or its class list"
                )
        elif scale is None:
            scale = ConfidenceScale.binary() if kind == "binary" else ConfidenceScale.linear(top)
            guessed = kind == "levels"
        elif top > scale.n_levels:
            raise InputError(
                f"{path.name}: holds level {top} but its sidecar scale has {scale.n_levels} levels"
            )
    return RaterFile(
        path=path,
        data=data,
        geometry=geom,
        kind=kind,
        rater=_rater_id_from_file(path, sidecar),
        scale=scale,
        scale_guessed=guessed,
        classes=classes,
        sidecar=sidecar,
        paths=(path,),
    )


def _dataset_classes(path: Path) -> ClassList | None:
    """The classes of the dataset.json beside a rater file (its folder or the folder above)."""
    for folder in (path.parent, path.parent.parent):
        meta = read_dataset_json(folder)
        if meta is not None and meta.class_names:
            return ClassList(meta.class_names, meta.class_keys or (), str(folder / "dataset.json"))
    return None


def _code_classes(path: Path, sidecar: RaterSidecar | None, kind: str) -> tuple[str, ...] | None:
    """Class names when the file holds class codes (one file for all classes), else None.

    A sidecar listing ``classes`` without a ``class`` of its own (an autosave snapshot of a
    multi-class layer), or an integer label map ``rater-<id>.nii.gz`` (no ``_label-``) beside
    a dataset.json with two or more classes and no confidence scale in its sidecar.
    """
    if kind == "soft":
        return None
    listed = sidecar.extra.get("classes") if sidecar is not None else None
    if sidecar is not None and sidecar.class_name is None and isinstance(listed, list) and len(listed) >= 2:
        return tuple(str(c) for c in listed)
    if _CLASS_FILE.match(path.name) or (sidecar is not None and (sidecar.class_name or sidecar.scale)):
        return None
    found = _dataset_classes(path)
    if found is not None and found.k >= 2:
        return found.names
    return None


def read_rater_files(
    paths: Sequence[str | Path], *, shape: tuple[int, ...] | None = None, image_name: str = "the image"
) -> list[RaterFile]:
    """Read rater files; the per-class files of one rater become one multi-class map.

    Files named ``<stem>_label-<class>.nii.gz`` whose sidecars name their class are grouped by
    ``<stem>``; the class order comes from their sidecars' ``classes`` list, else from the
    dataset.json beside them, else the order given. Every other file is read alone
    (:func:`read_rater_file`).

    Returns
    -------
    list of RaterFile
        In the order of the first file of each group.

    Raises
    ------
    InputError
        As :func:`read_rater_file`; per-class files of one rater with different scales or
        shapes, a class twice, a voxel painted for two classes, soft per-class files.
    """
    singles: list[tuple[int, RaterFile]] = []
    groups: dict[str, list[RaterFile]] = {}
    order: dict[str, int] = {}
    for i, p in enumerate(paths):
        got = read_rater_file(p, shape=shape, image_name=image_name)
        m = _CLASS_FILE.match(got.path.name)
        side = got.sidecar
        if m is not None and got.classes is None and (side is not None and side.class_name or _dataset_classes(got.path)):
            key = str(got.path.parent / m.group("stem"))
            groups.setdefault(key, []).append(got)
            order.setdefault(key, i)
        else:
            singles.append((i, got))
    merged = [(order[k], _merge_classes(files)) for k, files in groups.items()]
    return [f for _i, f in sorted(singles + merged, key=lambda t: t[0])]


def _merge_classes(files: list[RaterFile]) -> RaterFile:
    """One code map from one rater's per-class files."""
    first = files[0]
    for f in files:
        if f.kind == "soft":
            raise InputError(
                f"{f.path.name}: a soft per-class map cannot be painted on; open level or binary "
                "per-class files (Export as levels)"
            )
        if f.scale != first.scale and not (f.kind == "binary" and first.kind == "binary"):
            raise InputError(
                f"{f.path.name}: its confidence scale differs from {first.path.name}'s; the classes "
                "of one rater layer share one scale"
            )
    listed = (first.sidecar.extra.get("classes") if first.sidecar is not None else None) or None
    dataset = _dataset_classes(first.path)
    names: list[str] = []
    index: dict[int, RaterFile] = {}
    if isinstance(listed, list) and listed:
        names = [str(c) for c in listed]
    elif dataset is not None:
        names = list(dataset.names)
    fixed = bool(names)
    for f in files:
        token = _CLASS_FILE.match(f.path.name).group("key")  # type: ignore[union-attr]
        cls = f.sidecar.class_name if f.sidecar is not None and f.sidecar.class_name else None
        if fixed:
            keys = [class_key(n) for n in names]
            if cls in names:
                k = names.index(cls) + 1
            elif token in keys:
                k = keys.index(token) + 1
            elif dataset is not None:
                k = dataset.index(token, f.path)
            else:
                raise InputError(
                    f"{f.path.name}: class {cls or token!r} is not in the class list {names} of "
                    f"{first.path.name}; open files of one rater and one project"
                )
        else:
            names.append(cls or token)
            k = len(names)
        if k in index:
            raise InputError(f"{f.path.name}: class {names[k - 1]!r} given twice ({index[k].path.name})")
        index[k] = f
    scale = first.scale or ConfidenceScale.binary()
    maps = [index[k].data if k in index else np.zeros_like(first.data) for k in range(1, len(names) + 1)]
    codes = codes_from_class_level_maps(
        maps, n_levels=scale.n_levels,
        names=[index[k].path.name if k in index else f"class {names[k - 1]!r}" for k in range(1, len(names) + 1)],
    )
    m = _CLASS_FILE.match(first.path.name)
    return RaterFile(
        path=first.path,
        data=codes,
        geometry=first.geometry,
        kind="levels",
        rater=_rater_id_from_file(first.path.with_name(m.group("stem") + m.group("suffix")), first.sidecar),  # type: ignore[union-attr]
        scale=scale,
        scale_guessed=False,
        classes=tuple(names),
        sidecar=first.sidecar,
        paths=tuple(f.path for f in files),
    )
