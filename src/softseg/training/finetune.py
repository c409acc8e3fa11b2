"""Fine-tuning: start a training from an existing model file's weights (``softseg train --init``).

A model in the loop (issue 17, the MONAI Label habit): raters correct a model's pre-annotation,
the model is trained further on the corrected raters. The new run keeps everything that makes
the parent's weights meaningful and changes only the data and the optimisation:

* the **candidate** (activation, loss, ground-truth mode) and the **network** (depth, width,
  batch norm; dropout may differ, it has no weights) must be the parent's;
* the **classes** (names and order) and the **input channels** of the new dataset must be the
  parent's (its output and input layers are fitted to them);
* the **preprocessing spacing** is the parent's (the network learnt features at that voxel
  size); the crop, like every optimisation setting (epochs, learning rate, batch size,
  augmentation, fusion, split), is the new run's.

Anything else is refused before the data are read, with one line saying what differs. The new
model card records the parent (:class:`softseg.card.ParentCard`: path, SHA-256 of the file,
candidate, creation time), so a chain of fine-tunings can be traced back.

The optimizer, scheduler and early-stopping state start fresh (the parent's are not stored in a
model file); the weights are the parent's best weights, which is what its model file holds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softseg.errors import InputError

__all__ = ["Parent", "check_parent", "file_sha256", "load_parent"]


@dataclass(frozen=True, eq=False)
class Parent:
    """A model file to fine-tune: its card, its weights and its identity.

    Attributes
    ----------
    path : Path
        Absolute path of the model file.
    card : softseg.card.ModelCard
    state_dict : dict of str to torch.Tensor
        The weights (CPU), as :func:`softseg.modelfile.load_model` checked them.
    sha256 : str
        Hex digest of the file's bytes.
    """

    path: Path
    card: Any
    state_dict: dict[str, Any]
    sha256: str

    def record(self) -> Any:
        """The :class:`softseg.card.ParentCard` stored in the fine-tuned model's card."""
        from softseg.card import ParentCard

        return ParentCard(path=str(self.path), sha256=self.sha256, candidate=self.card.candidate.name,
                          created=self.card.training.created)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (hex digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_parent(path: str | os.PathLike) -> Parent:
    """Read a model file to start a training from.

    Raises
    ------
    InputError
        Every refusal of :func:`softseg.modelfile.load_model` (not a safetensors model file, a
        pickle, a bad card, weights that do not fit the architecture, NaN/Inf weights).
    """
    from softseg.io import check_regular_file
    from softseg.modelfile import load_model

    p = Path(os.path.abspath(path))
    check_regular_file(p, what="model file to fine-tune (--init)")
    loaded = load_model(p)
    state = {k: v.detach().cpu().clone() for k, v in loaded.model.state_dict().items()}
    return Parent(path=p, card=loaded.card, state_dict=state, sha256=file_sha256(p))


def check_parent(parent: Parent, *, config: Any, classes: tuple[str, ...], channels: tuple[str, ...],
                 dataset: str) -> None:
    """Refuse a fine-tuning whose data or settings do not fit the parent model.

    Parameters
    ----------
    parent : Parent
    config : softseg.config.TrainConfig
        The new run's configuration.
    classes, channels : tuple of str
        The new dataset's class names (index 1..K) and input channel names.
    dataset : str
        Named in the messages.

    Raises
    ------
    InputError
        One line naming the parent and what differs: the class list, the channels, the
        candidate, the network's depth, width or batch norm, an explicit spacing other than the
        parent's.
    """
    card, name = parent.card, parent.path.name
    if tuple(card.classes) != tuple(classes):
        raise InputError(
            f"--init {name}: the model predicts the classes ({', '.join(card.classes)}) but {dataset} "
            f"has ({', '.join(classes)}); fine-tuning keeps the class list (names and order): give a "
            "dataset with the model's classes, or train a new model"
        )
    if tuple(card.channels) != tuple(channels):
        raise InputError(
            f"--init {name}: the model takes the channels ({', '.join(card.channels)}) but {dataset} "
            f"has ({', '.join(channels)}); give images of the model's channels, or train a new model"
        )
    if card.candidate.name != config.candidate:
        raise InputError(
            f"--init {name}: the model was trained as candidate {card.candidate.name!r}, this run "
            f"asks for {config.candidate!r}; fine-tune with --candidate {card.candidate.name} or "
            "train a new model"
        )
    arch, model = card.architecture.config, config.model
    diffs = [f"{key} {getattr(arch, key)!r} -> {getattr(model, key)!r}"
             for key in ("depth", "width", "batch_norm") if getattr(arch, key) != getattr(model, key)]
    if diffs:
        raise InputError(
            f"--init {name}: the network differs from the model's ({'; '.join(diffs)}); "
            "fine-tuning keeps the network: drop those settings, or train a new model"
        )
    spacing = config.data.spacing
    parent_spacing = tuple(card.preprocessing.spacing)
    if spacing is not None and any(_differs(s, p) for s, p in zip(spacing, parent_spacing)):
        raise InputError(
            f"--init {name}: the model was trained at spacing {_mm(parent_spacing)}, this run asks for "
            f"{_mm(spacing)}; fine-tuning keeps the model's spacing: drop --spacing"
        )


def _differs(a: float | None, b: float | None) -> bool:
    return (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 1e-6)


def _mm(spacing: Any) -> str:
    return "(" + ", ".join("native" if s is None else f"{s:g}" for s in spacing) + ") mm (S, H, W)"
