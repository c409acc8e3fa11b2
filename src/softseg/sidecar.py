"""The JSON sidecar of a rater file (``x.nii.gz`` -> ``x.json``): one typed schema, every shape.

A rater's label map travels with a small JSON document: who painted it, its confidence scale
(levels -> soft values), how it opens in the viewer, the class it holds in a multi-class project.
:func:`read_rater_sidecar` is the one reader (the napari reader, the trainer, ``softseg fuse``
and the widgets read through it) and reads every shape the product ever wrote:

=============== ===============================================================================
written by      keys
=============== ===============================================================================
export          ``rater``, ``kind`` ("labels"/"soft"), ``softseg_confidence``, ``source_image``,
                ``exported_at``, ``software`` (Soft annotation widget's *Export*; the napari
                writer writes ``kind``, ``rater``, ``softseg_confidence`` plus what was read)
autosave        ``format`` ("softseg-autosave/1" or "/2"), ``rater``, ``confidence_scale``
                (object or null), ``saved_at``, ``saved_at_unix``, ``source_image``, ``shape``,
                ``dtype``, ``order``, ``sha1``, ``session``, ``nonzero``, ``color``
fuse            ``{"softseg_fusion": {...}}`` (``softseg fuse``) or ``kind``, ``fusion``,
                ``saved_at``, ``software`` (the Fuse widget's *Save*)
predict         ``model``, ``candidate``, ``candidate_title``, ``threshold``, ``binarized``,
                ``kind`` ("probability"/"mask", read as "soft"/"labels"), ``sources``,
                ``softseg_version``
threshold       ``{"softseg_threshold": {...}}`` (Threshold widget's saved mask)
scale           a bare scale: ``{"softseg_confidence": {...}}``, ``{"levels": [...]}`` or
                ``{"values": [...], "names": [...]}``
sample-data     ``rater``, ``kind`` (``description`` for the lesion map; ``class`` for the
                per-class raters of the MNI anatomy sample) (``softseg phantom``, sample data)
=============== ===============================================================================

Known keys are validated for type (pydantic, :mod:`softseg.schema`): a wrong type is a one-line
:class:`~softseg.errors.InputError` naming the sidecar file and the key. Unknown keys are kept
in :attr:`RaterSidecar.extra` and written back, never an error: sidecars are shared with other
tools (a BIDS sidecar beside a rater file carries its own keys).

:meth:`RaterSidecar.to_json` writes the canonical (export) shape, adding ``class`` (multi-class
rater files, ``rater-<id>_label-<class>.nii.gz``) and ``preannotated_by`` (the model that made a
pre-annotation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from softseg.confidence import METADATA_KEY, ConfidenceScale, LabelKind, as_rater_values
from softseg.errors import InputError
from softseg.schema import Schema, load_json, parse

__all__ = [
    "KINDS",
    "RaterSidecar",
    "parse_rater_sidecar",
    "rater_values",
    "read_rater_sidecar",
    "sidecar_path",
    "write_rater_sidecar",
]

#: How a file opens in the viewer (``kind``): a label map, a soft map or an image.
KINDS = ("labels", "soft", "image")
#: Older spellings of ``kind`` (``softseg predict`` before this schema).
_KIND_ALIASES = {"mask": "labels", "probability": "soft"}
#: Autosave's key of the scale (the export key is ``softseg.confidence.METADATA_KEY``).
_AUTOSAVE_SCALE_KEY = "confidence_scale"

Kind = Literal["labels", "soft", "image"]
WrittenBy = Literal[
    "export", "autosave", "fuse", "predict", "threshold", "scale", "sample-data", "other"
]


class _SidecarKeys(Schema):
    """Every key a softseg sidecar was ever written with, typed (all optional)."""

    # export / writer / phantom
    rater: str | int | None = None
    kind: Literal["labels", "soft", "image", "mask", "probability"] | None = None
    softseg_confidence: dict[str, Any] | None = None
    source_image: str | None = None
    exported_at: str | None = None
    software: str | None = None
    description: str | None = None
    # new in this schema
    class_: str | int | None = None
    preannotated_by: str | None = None
    # autosave (formats 1 and 2)
    format: str | int | None = None
    confidence_scale: dict[str, Any] | None = None
    saved_at: str | None = None
    saved_at_unix: float | None = None
    shape: list[int] | None = None
    dtype: str | None = None
    order: str | None = None
    sha1: str | None = None
    session: str | None = None
    nonzero: int | None = None
    color: list[float] | None = None
    # a bare scale
    levels: list[dict[str, Any]] | None = None
    values: list[float] | None = None
    names: list[str] | None = None
    # fusion
    softseg_fusion: dict[str, Any] | None = None
    fusion: dict[str, Any] | None = None
    # prediction
    model: str | None = None
    candidate: str | None = None
    candidate_title: str | None = None
    threshold: float | None = None
    binarized: bool | None = None
    sources: list[str] | None = None
    softseg_version: str | None = None
    # threshold widget
    softseg_threshold: dict[str, Any] | None = None


def _json_key(name: str) -> str:
    return "class" if name == "class_" else name


_KNOWN = {_json_key(n): n for n in _SidecarKeys.model_fields}


@dataclass(frozen=True)
class RaterSidecar:
    """What a rater file's JSON sidecar says (every field optional).

    Attributes
    ----------
    rater : str or None
        Rater id.
    kind : {"labels", "soft", "image"} or None
        How the file opens in the viewer (a label map, a soft map, an image).
    scale : ConfidenceScale or None
        Level -> soft mapping of a painted level map.
    class_name : str or None
        Multi-class projects: the class this per-class rater file holds (JSON key ``class``).
    preannotated_by : str or None
        The model that made this map (a pre-annotation a rater corrects).
    software : str or None
        What wrote it ("napari-softseg 0.4.0", or the softseg version of a prediction).
    source_image : str or None
        The image the map was painted on.
    fusion : dict or None
        Provenance of a fused map (method, raters, region, statistics).
    prediction : dict or None
        Provenance of a prediction (model, candidate, threshold, sources, binarized).
    extra : dict
        Every other key as read (kept when the sidecar is written again).
    written_by : str
        Which shape it was read from (see the module table); ``"export"`` for new ones.
    """

    rater: str | None = None
    kind: Kind | None = None
    scale: ConfidenceScale | None = None
    class_name: str | None = None
    preannotated_by: str | None = None
    software: str | None = None
    source_image: str | None = None
    fusion: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    written_by: WrittenBy = "export"

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise InputError(f"sidecar kind must be one of {list(KINDS)}; got {self.kind!r}")
        if self.scale is not None and not isinstance(self.scale, ConfidenceScale):
            raise InputError(f"sidecar scale must be a ConfidenceScale; got {type(self.scale).__name__}")

    def with_(self, **changes: Any) -> RaterSidecar:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The canonical (export) shape, JSON-able; ``None`` fields are left out.

        Keys: ``rater``, ``kind``, ``softseg_confidence``, ``class``, ``preannotated_by``,
        ``source_image``, ``software``, ``fusion``, ``prediction``, then :attr:`extra`.
        """
        out: dict[str, Any] = {}
        pairs = (
            ("rater", self.rater),
            ("kind", self.kind),
            (METADATA_KEY, None if self.scale is None else self.scale.as_dict()),
            ("class", self.class_name),
            ("preannotated_by", self.preannotated_by),
            ("source_image", self.source_image),
            ("software", self.software),
            ("fusion", self.fusion),
            ("prediction", self.prediction),
        )
        for key, value in pairs:
            if value is not None:
                out[key] = value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a NIfTI file: ``x.nii.gz`` -> ``x.json`` (see :func:`softseg.io.sidecar_path`)."""
    from softseg.io import sidecar_path as _path

    return _path(path)


def _scale(data: Mapping[str, Any], key: str, source: str) -> ConfidenceScale:
    try:
        return ConfidenceScale.from_dict(data)
    except InputError as exc:
        raise InputError(f"{source}: {key}: {exc}") from None


def parse_rater_sidecar(data: Any, *, source: str) -> RaterSidecar:
    """Validate an already-parsed sidecar document (see the module notes for the shapes).

    Parameters
    ----------
    data : Any
        The JSON value (must be an object).
    source : str
        The sidecar's file name, used in every message.

    Raises
    ------
    InputError
        Not a JSON object; a known key with a wrong type (``x.json: rater: ...``); an invalid
        confidence scale.
    """
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: a sidecar must be a JSON object ({{\"rater\": ...}}); got "
            f"{type(data).__name__ if data is not None else 'null'}"
        )
    known = {_KNOWN[k]: v for k, v in data.items() if k in _KNOWN}
    extra = {k: v for k, v in data.items() if k not in _KNOWN}
    doc = parse(_SidecarKeys, known, source=source)
    present = set(data)

    scale = None
    if doc.softseg_confidence is not None:
        scale = _scale(doc.softseg_confidence, METADATA_KEY, source)
    elif doc.confidence_scale is not None:
        scale = _scale(doc.confidence_scale, _AUTOSAVE_SCALE_KEY, source)
    elif doc.levels is not None or doc.values is not None:
        bare = {k: data[k] for k in ("levels", "values", "names") if k in data}
        scale = _scale(bare, "levels" if doc.levels is not None else "values", source)

    kind = _KIND_ALIASES.get(doc.kind, doc.kind) if doc.kind is not None else None
    prediction = None
    if doc.model is not None or doc.candidate is not None:
        prediction = {
            k: data[k]
            for k in ("model", "candidate", "candidate_title", "threshold", "binarized", "sources")
            if k in data
        }
    fusion = doc.softseg_fusion if doc.softseg_fusion is not None else doc.fusion
    # what is not a field of RaterSidecar stays readable (and is written back) in `extra`
    carried = (
        "exported_at", "description", "saved_at", "saved_at_unix", "format", "shape", "dtype",
        "order", "sha1", "session", "nonzero", "color", "softseg_threshold",
    )
    for key in carried:
        if key in data:
            extra[key] = data[key]

    if isinstance(doc.format, str) and doc.format.startswith("softseg-autosave"):
        written_by: WrittenBy = "autosave"
    elif fusion is not None:
        written_by = "fuse"
    elif prediction is not None:
        written_by = "predict"
    elif doc.softseg_threshold is not None:
        written_by = "threshold"
    elif present and present <= {"levels", "values", "names", METADATA_KEY}:
        written_by = "scale"
    elif present and present <= {"rater", "kind", "description", "class"}:
        written_by = "sample-data"
    elif present & {"exported_at", "software", METADATA_KEY, "rater", "kind"}:
        written_by = "export"
    else:
        written_by = "other"
    software = doc.software
    if software is None and doc.softseg_version is not None:
        software = f"softseg {doc.softseg_version}"
    return RaterSidecar(
        rater=None if doc.rater is None else str(doc.rater),
        kind=kind,
        scale=scale,
        class_name=None if doc.class_ is None else str(doc.class_),
        preannotated_by=doc.preannotated_by,
        software=software,
        source_image=doc.source_image,
        fusion=fusion,
        prediction=prediction,
        extra=extra,
        written_by=written_by,
    )


def read_rater_sidecar(nifti_path: str | os.PathLike) -> RaterSidecar | None:
    """The sidecar of a NIfTI file (``x.nii.gz`` -> ``x.json``), or None when there is none.

    Parameters
    ----------
    nifti_path : path-like
        The rater (or fused, or predicted) NIfTI file.

    Returns
    -------
    RaterSidecar or None

    Raises
    ------
    InputError
        One line naming the sidecar: not a regular file, too large, not UTF-8, not JSON, too
        deep, not an object, a known key of the wrong type, an invalid confidence scale.
    """
    side = sidecar_path(nifti_path)
    if not side.exists() and not side.is_symlink():
        return None
    data = load_json(side, what="JSON sidecar")
    return parse_rater_sidecar(data, source=str(side))


def rater_values(volume: Any, *, name: str | None = None) -> tuple[np.ndarray, LabelKind]:
    """A rater file's values in [0, 1] and its kind, through its own sidecar's confidence scale.

    THE way a rater file is read as values (``softseg fuse``, ``softseg evaluate --raters``,
    training's :func:`softseg.data.rater_to_soft`): the sidecar of ``volume.path`` through
    :func:`read_rater_sidecar` (every shape softseg ever wrote), the voxels through the one
    conversion :func:`softseg.confidence.as_rater_values`. A map painted with level 1 only
    looks binary: its sidecar's scale decides.

    Parameters
    ----------
    volume : softseg.io.Volume
        The rater map as loaded (``load_volume(path, label=True)``); ``volume.path`` locates its
        sidecar (none when the path is None).
    name : str, optional
        Names the map in messages (default: the file's path).

    Returns
    -------
    values : ndarray, same shape
        uint8 0/1 for a binary map; float32 in [0, 1] for a soft map (values within 1e-6 of
        [0, 1] clipped) or for painted levels (through the scale).
    kind : {"binary", "levels", "soft"}

    Raises
    ------
    InputError
        A bad sidecar (named), values outside [0, 1] beyond rounding, levels without a scale.
    """
    path = getattr(volume, "path", None)
    side = read_rater_sidecar(path) if path is not None else None
    label = name if name is not None else str(path) if path is not None else "rater map"
    return as_rater_values(volume.array, scale=side.scale if side is not None else None, name=label)


def write_rater_sidecar(
    nifti_path: str | os.PathLike, sidecar: RaterSidecar, *, overwrite: bool = False
) -> Path:
    """Write :meth:`RaterSidecar.to_json` beside a NIfTI file, atomically; returns its path.

    Outputs that write an image and its sidecar together pass ``sidecar.to_json()`` to
    :func:`softseg.io.save_volume` instead (one output set).
    """
    from softseg.io import write_json

    if not isinstance(sidecar, RaterSidecar):
        raise InputError(f"write_rater_sidecar: expected a RaterSidecar; got {type(sidecar).__name__}")
    return write_json(sidecar_path(nifti_path), sidecar.to_json(), overwrite=overwrite)
