"""Model files: safetensors weights + softseg JSON metadata in the safetensors header.

A model file is a plain ``.safetensors`` file (weights as named tensors) whose header metadata
holds one entry ``"softseg"``: a JSON document with

``format_version``  integer, :data:`FORMAT_VERSION` (files from a newer softseg are refused)
``candidate``       name, title, soft_gt, activation, loss, loss_params
``architecture``    ``{"name": "UNet2D", "config": {...}}`` (``UNet2D.from_config``)
``preprocessing``   spacing (S, H, W mm; null = native), crop, channels, normalization, orientation
``threshold``       optimal binarisation threshold (Dice on training+validation images)
``validation``      best_epoch, val_loss, val_dice, val_soft_dice, threshold_sweep
``provenance``      dataset, subjects per split, raters, fusion, seed, epochs, config, versions

Nothing is ever unpickled: :func:`read_metadata` parses the header with :mod:`json` only (no
torch), and :func:`load_model` reads tensors with :mod:`safetensors`. A PyTorch pickle
(``.pt``/``.pth``), a foreign safetensors file (no softseg metadata) or an unknown format version
is refused with a one-line :class:`~softseg.errors.InputError`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softseg.errors import InputError
from softseg.io import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "REQUIRED_KEYS",
    "LoadedModel",
    "load_model",
    "read_metadata",
    "save_model",
]

#: Version of the metadata layout written by :func:`save_model`.
FORMAT_VERSION = 1
#: Key of the softseg JSON document in the safetensors header metadata.
METADATA_KEY = "softseg"
#: Top-level keys every softseg model file carries.
REQUIRED_KEYS = (
    "format_version",
    "candidate",
    "architecture",
    "preprocessing",
    "threshold",
    "validation",
    "provenance",
)
_MAX_HEADER = 100 * 1024 * 1024


def _read_header(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"{path}: no such model file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a .safetensors model file")
    with open(path, "rb") as fh:
        head = fh.read(9)
        # safetensors: an 8-byte little-endian header length, then the JSON header ("{").
        # Check that structure first: the length's first byte may be anything (0x80 or "PK"
        # included), so the pickle/zip signatures are only looked at when it does not match.
        n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
        if not (2 <= n <= _MAX_HEADER and head[8:9] == b"{"):
            pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
            if pickled or head[:4] == b"PK\x03\x04":  # torch.save: raw pickle or zip archive
                raise InputError(
                    f"{path}: this looks like a PyTorch pickle; softseg only loads .safetensors "
                    "model files (written by softseg train) and never unpickles"
                )
            if len(head) < 9:
                raise InputError(f"{path}: not a safetensors model file (too short)")
            raise InputError(
                f"{path}: not a safetensors model file; softseg loads .safetensors files written "
                "by softseg train"
            )
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not a safetensors model file (unreadable header)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a safetensors model file (unreadable header)")
    return header


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The softseg metadata of a model file, without loading the weights (no torch import).

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file written by :func:`save_model`.

    Returns
    -------
    dict
        The JSON document described in the module docstring.

    Raises
    ------
    InputError
        Not a safetensors file (a PyTorch pickle is named as such), no softseg metadata, an
        unknown format version or missing keys.
    """
    path = Path(path)
    header = _read_header(path)
    meta = header.get("__metadata__") or {}
    text = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
    if text is None:
        raise InputError(
            f"{path}: a safetensors file without softseg metadata (not written by softseg train); "
            "softseg needs its own model files"
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(f"{path}: corrupt softseg metadata (not JSON); re-export the model") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: corrupt softseg metadata (not a JSON object)")
    version = doc.get("format_version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise InputError(
            f"{path}: model file format version {version!r} is not supported by this softseg "
            f"(reads versions 1..{FORMAT_VERSION}); upgrade softseg"
        )
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise InputError(f"{path}: softseg metadata lacks {', '.join(missing)}; the file is incomplete")
    return doc


def save_model(
    path: str | os.PathLike,
    model: torch.nn.Module,
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model file atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.safetensors`` file.
    model : UNet2D
        Its ``state_dict`` is saved (tensors copied to CPU); ``model.config`` becomes
        ``architecture.config``.
    metadata : mapping
        All :data:`REQUIRED_KEYS` except ``format_version`` and ``architecture``, which are
        filled here.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise InputError(f"{path}: model files must end in .safetensors")
    doc = dict(metadata)
    doc["format_version"] = FORMAT_VERSION
    doc["architecture"] = {"name": type(model).__name__, "config": dict(model.config)}
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise ValueError(f"model metadata lacks {', '.join(missing)}")
    ordered = {k: doc[k] for k in REQUIRED_KEYS}
    ordered.update({k: v for k, v in doc.items() if k not in ordered})
    text = json.dumps(ordered, allow_nan=False)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path, overwrite=overwrite, durable=True) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: text})
    return path


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model read from a model file.

    Attributes
    ----------
    model : torch.nn.Module
        The network (returns logits), in eval mode, on CPU.
    metadata : dict
        The softseg metadata (see the module docstring).
    path : Path or None
    """

    model: Any
    metadata: dict[str, Any]
    path: Path | None = None

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def candidate_name(self) -> str:
        return str(self.metadata["candidate"]["name"])

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.metadata["preprocessing"]["channels"])

    @property
    def preprocessing(self) -> Any:
        from softseg.data import Preprocessing

        return Preprocessing.from_dict(self.metadata["preprocessing"])

    @property
    def candidate(self) -> Any:
        """The :class:`softseg.candidates.Candidate` the model was trained as."""
        from softseg.candidates import get_candidate

        return get_candidate(self.candidate_name)


def _architectures() -> dict[str, Any]:
    from softseg.models import UNet2D

    return {"UNet2D": UNet2D}


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read a model file: weights with :mod:`safetensors` (never unpickled) and the metadata.

    Raises
    ------
    InputError
        See :func:`read_metadata`; also an unknown architecture or weights that do not fit it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    arch = meta["architecture"]
    registry = _architectures()
    cls = registry.get(arch.get("name"))
    if cls is None:
        raise InputError(
            f"{path}: unknown architecture {arch.get('name')!r}; known: {', '.join(registry)}"
        )
    try:
        model = cls.from_config(dict(arch["config"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: bad architecture config ({exc})") from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable weights ({' '.join(str(exc).split())}); the file is damaged") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: weights do not fit the stored architecture ({first})") from None
    model.eval()
    return LoadedModel(model=model, metadata=meta, path=path)
