"""Resumable training checkpoints: one safetensors file beside the model file.

``m.safetensors`` -> ``m.checkpoint.safetensors`` (:func:`checkpoint_path`). A checkpoint holds
tensors (weights, best weights, optimizer tensors, random generator states) and one JSON document
in the header metadata (key ``"softseg_checkpoint"``: progress counters, early-stopping state,
optimizer/scheduler/scaler settings, numpy generator state, the configuration, the split).
Nothing is pickled. Files are written atomically (:func:`softseg.modelfile.write_tensors`) so a
kill leaves the previous checkpoint or the new one, never a mix.

The trainer (:class:`softseg.training.Trainer`) decides *what* goes in
(``Trainer.save_checkpoint`` / ``Trainer.load_checkpoint``); this module owns the file format.
"""

from __future__ import annotations

import json
import math
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softseg.errors import InputError
from softseg.modelfile import open_tensors, write_tensors
from softseg.schema import loads_json

__all__ = ["CHECKPOINT_VERSION", "check_resume_config", "checkpoint_path", "read_checkpoint", "write_checkpoint"]

#: Version of the checkpoint document.
CHECKPOINT_VERSION = 1
_KEY = "softseg_checkpoint"
#: Settings that may change when a run is resumed: the maximum number of epochs (the cosine
#: schedule then anneals towards the new maximum) and the device.
RESUMABLE_CHANGES = (("optim", "epochs"), ("device",))


def checkpoint_path(out: str | os.PathLike) -> Path:
    """The resumable checkpoint of a model file: ``m.safetensors`` -> ``m.checkpoint.safetensors``."""
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return out.with_name(stem + ".checkpoint.safetensors")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, types.MappingProxyType):
        return dict(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable in a checkpoint: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """NaN/Inf floats (a diverged validation loss in the history) become null: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_checkpoint(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically (replacing the previous one).

    Parameters
    ----------
    path : path-like
    tensors : mapping of str to torch.Tensor
        Copied to CPU.
    doc : mapping
        JSON-able state (numpy scalars, tuples and tensors are converted, NaN/Inf become null);
        ``version`` is added.
    """
    plain = json.loads(json.dumps(dict(doc), default=_json_default))
    text = json.dumps({"version": CHECKPOINT_VERSION, **_finite(plain)}, allow_nan=False)
    return write_tensors(path, tensors, {"format": "pt", _KEY: text}, overwrite=True, durable=True)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and document of a checkpoint written by :func:`write_checkpoint`.

    Raises
    ------
    InputError
        Not a safetensors file, not a softseg checkpoint, or another checkpoint version.
    """
    path = Path(path)
    with open_tensors(path, what="training checkpoint") as fh:
        text = (fh.metadata() or {}).get(_KEY)
        if text is None:
            raise InputError(f"{path}: not a softseg training checkpoint")
        doc = loads_json(text, source=f"{path}: checkpoint")
        if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
            version = doc.get("version") if isinstance(doc, dict) else None
            raise InputError(f"{path}: checkpoint version {version!r} is not supported; start over with --overwrite")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return tensors, doc


def check_resume_config(saved: Mapping[str, Any], now: Mapping[str, Any], *, path: Path) -> None:
    """Refuse to resume with settings other than the checkpoint's (except :data:`RESUMABLE_CHANGES`).

    Parameters
    ----------
    saved, now : mapping
        ``TrainConfig.as_dict()`` of the checkpoint and of the new run. A candidate renamed
        since (:data:`softseg.candidates.RENAMED`) may be given by its new name.

    Raises
    ------
    InputError
        One line listing each setting that differs.
    """
    from softseg.candidates import RENAMED

    diffs = []
    for section, value in saved.items():
        if section == "candidate" and value in RENAMED and RENAMED[value][0] == now.get(section):
            continue  # the same recipe under its new name (checkpoint_recipe restores it)
        if isinstance(value, Mapping):
            for key, v in value.items():
                if (section, key) in RESUMABLE_CHANGES:
                    continue
                if (now.get(section) or {}).get(key) != v:
                    diffs.append(f"{section}.{key}: {v!r} -> {(now.get(section) or {}).get(key)!r}")
        elif (section,) not in RESUMABLE_CHANGES and now.get(section) != value:
            diffs.append(f"{section}: {value!r} -> {now.get(section)!r}")
    if diffs:
        raise InputError(
            f"{path}: --resume with different settings ({'; '.join(diffs)}); "
            "use the original settings or start over with --overwrite"
        )
