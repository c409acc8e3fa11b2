"""Model files: safetensors weights + the model card (:mod:`softseg.card`) in the header metadata.

A model file is a plain ``.safetensors`` file (weights as named tensors) whose header metadata
holds one entry ``"softseg"``: the card as JSON (DESIGN.md decision 4). The file is opened once
per read, with the safetensors library's own reader (``safetensors.safe_open``): its metadata
becomes a typed, frozen :class:`~softseg.card.ModelCard` (:func:`read_card`), and
:func:`load_model` takes the weights from the same open file.

Nothing is ever unpickled. A PyTorch pickle (``.pt``/``.pth``: raw pickle or zip archive) is
named as such; a foreign safetensors file (no softseg card), a card of an unknown format
version, a card with a value of the wrong type or out of range, weights whose shapes do not fit
the stated architecture (checked **before** the network is built, so a small file claiming a huge
network allocates nothing) and weights holding NaN/Inf are refused, each with a one-line
:class:`~softseg.errors.InputError` naming the file.

Files are written atomically (a temporary file renamed over the target) with the mode a plain
``open()`` would give (``0o666 & ~umask``, 0644 under umask 022).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softseg.card import FORMAT_VERSION, ModelCard, card_from_document
from softseg.errors import InputError
from softseg.schema import loads_json

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "LoadedModel",
    "load_model",
    "open_tensors",
    "read_card",
    "save_model",
    "write_tensors",
]

#: Key of the card in the safetensors header metadata.
METADATA_KEY = "softseg"
_PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")


def _why_unreadable(path: Path, exc: BaseException, what: str) -> InputError:
    """The one-line reason why safetensors refused ``path``: a pickle is named as such."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        return InputError(f"{path}: cannot read the {what} ({err.strerror})")
    pickled = head[:1] == b"\x80" and head[1:2] in _PICKLE_PROTOCOLS
    if pickled or head[:4] == b"PK\x03\x04":  # torch.save: raw pickle or zip archive
        return InputError(
            f"{path}: this looks like a PyTorch pickle; softseg only loads .safetensors model "
            "files (written by softseg train) and never unpickles"
        )
    detail = " ".join(str(exc).split())[:120]
    return InputError(
        f"{path}: not a safetensors {what} ({detail}); softseg loads .safetensors files written by softseg train"
    )


def open_tensors(path: str | os.PathLike, *, what: str = "model file", framework: str = "pt") -> Any:
    """Open a safetensors file with the safetensors library (a context manager over the file).

    Only the safetensors structure is checked here (the library's own parser; pickles are named
    as such when it refuses a file). Use ``fh.metadata()``, ``fh.keys()``,
    ``fh.get_slice(k).get_shape()`` and ``fh.get_tensor(k)``. ``framework="numpy"`` reads the
    metadata without importing torch (``"pt"`` returns torch tensors).

    Raises
    ------
    InputError
        Not a regular file, a pickle, or not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    from softseg.io import check_regular_file

    p = check_regular_file(path, what=what)
    try:
        return safe_open(str(p), framework=framework, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise _why_unreadable(p, exc, what) from None


def _card_of(fh: Any, path: Path) -> ModelCard:
    meta = fh.metadata() or {}
    text = meta.get(METADATA_KEY)
    if text is None and "softseg_checkpoint" in meta:  # softseg.training.checkpoint's key
        raise InputError(
            f"{path}: a training checkpoint, not a model file; finish the training with "
            "softseg train --resume (the model file is written beside it)")
    if text is None:
        raise InputError(
            f"{path}: a safetensors file without softseg metadata (not written by softseg train); "
            "softseg needs its own model files"
        )
    source = f"{path}: model card"
    return card_from_document(loads_json(text, source=source), source=source)


def read_card(path: str | os.PathLike) -> ModelCard:
    """The model card of a model file, without loading the weights (no torch import).

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file written by :func:`save_model` (format version 1 or 2).

    Returns
    -------
    ModelCard

    Raises
    ------
    InputError
        See the module docstring.
    """
    path = Path(path)
    with open_tensors(path, framework="numpy") as fh:  # numpy: no torch import
        return _card_of(fh, path)


def write_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    overwrite: bool = False,
    durable: bool = True,
) -> Path:
    """Write tensors + string metadata as a safetensors file, atomically, with the umask mode.

    The bytes come from ``safetensors.torch.save`` and are written by Python into the temporary
    file of :func:`softseg.io.atomic_path` (safetensors' own ``save_file`` would recreate that
    file with mode 0600).

    Parameters
    ----------
    path : path-like
    tensors : mapping of str to torch.Tensor
        Copied to CPU, contiguous.
    metadata : mapping of str to str
    overwrite : bool
        Replace an existing file.
    durable : bool
        fsync before the rename (model files and checkpoints: yes).
    """
    from safetensors.torch import save

    from softseg.io import atomic_path

    path = Path(path)
    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    with atomic_path(path, overwrite=overwrite, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def save_model(
    path: str | os.PathLike,
    model: torch.nn.Module,
    card: ModelCard,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model file: the network's weights and its card.

    Parameters
    ----------
    path : path-like
        Destination; must end in ``.safetensors``.
    model : UNet2D
        Its ``state_dict`` is saved; its ``config`` must equal ``card.architecture.config``.
    card : ModelCard
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        Wrong suffix, existing file without ``overwrite``, unwritable folder.
    ValueError
        The card's architecture does not describe ``model``.
    """
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise InputError(f"{path}: model files must end in .safetensors")
    if not isinstance(card, ModelCard):
        raise TypeError(f"save_model: card must be a softseg.card.ModelCard; got {type(card).__name__}")
    stated = card.architecture.config.model_dump()
    if type(model).__name__ != card.architecture.name or dict(model.config) != stated:
        raise ValueError(
            f"save_model: the card describes {card.architecture.name} {stated} but the model is "
            f"{type(model).__name__} {dict(model.config)}"
        )
    return write_tensors(path, model.state_dict(), {"format": "pt", METADATA_KEY: card.to_json()},
                         overwrite=overwrite, durable=True)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model read from a model file.

    Attributes
    ----------
    model : torch.nn.Module
        The network (returns logits), in eval mode, on CPU.
    card : ModelCard
    path : Path or None
    """

    model: Any
    card: ModelCard
    path: Path | None = None

    @property
    def threshold(self) -> float:
        """Optimal threshold of a single-class model (:attr:`ModelCard.threshold`)."""
        return self.card.threshold

    @property
    def candidate_name(self) -> str:
        return self.card.candidate.name

    @property
    def channels(self) -> tuple[str, ...]:
        return self.card.channels

    @property
    def preprocessing(self) -> Any:
        """The :class:`softseg.data.Preprocessing` of the card."""
        return self.card.preprocessing_steps()

    @property
    def activation(self) -> Any:
        """The final activation stored in the card (not today's registry entry of the candidate)."""
        return self.card.candidate.activation.function()


def _architectures() -> dict[str, Any]:
    from softseg.models import UNet2D

    return {"UNet2D": UNet2D}


def _shape_mismatch(expected: Mapping[str, tuple[int, ...]], stored: Mapping[str, tuple[int, ...]]) -> str | None:
    missing = [k for k in expected if k not in stored]
    extra = [k for k in stored if k not in expected]
    if missing:
        return f"missing tensor {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    if extra:
        return f"unexpected tensor {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
    for k, shape in expected.items():
        if tuple(stored[k]) != tuple(shape):
            return f"{k}: stored {list(stored[k])}, architecture needs {list(shape)}"
    return None


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read a model file: its card and weights, from one open of the file (never unpickled).

    The tensor shapes stated in the file are compared with the architecture built on torch's
    ``meta`` device (no memory) before the real network is built; the weights are then read and
    refused if any is NaN or infinite.

    Returns
    -------
    LoadedModel
        The network in eval mode on CPU, and the card.

    Raises
    ------
    InputError
        See the module docstring.
    """
    import torch
    from safetensors import SafetensorError

    path = Path(path)
    with open_tensors(path) as fh:
        card = _card_of(fh, path)
        arch = card.architecture
        cls = _architectures()[arch.name]
        config = arch.config.model_dump()
        with torch.device("meta"):
            skeleton = cls.from_config(config)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        del skeleton
        try:
            stored = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable weights ({' '.join(str(exc).split())}); the file is damaged") from None
        problem = _shape_mismatch(expected, stored)
        if problem is not None:
            raise InputError(f"{path}: weights do not fit the stored architecture ({problem})")
        try:
            state = {k: fh.get_tensor(k) for k in expected}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: unreadable weights ({' '.join(str(exc).split())}); the file is damaged") from None
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InputError(f"{path}: weight {k} holds NaN or infinite values; the model is broken (retrain it)")
    model = cls.from_config(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - shapes were checked above
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: weights do not fit the stored architecture ({first})") from None
    model.eval()
    return LoadedModel(model=model, card=card, path=path)
