"""Fine-tuning from the Train dock (issue 17 #3, model in the loop).

*Fine-tune on the corrected raters* trains an existing model file further on the current
targets (e.g. raters who corrected the model's pre-annotation): ``softseg train --init PARENT``
with the parent's own settings (candidate, network, preprocessing: its card's stored
configuration) and the dock's epochs, patience, batch size, learning rate, split and device.
A parent whose classes differ from the targets' is refused here with one line, before anything
is written (the trainer refuses it too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softseg.config import TrainConfig
from softseg.errors import InputError

__all__ = ["check_parent", "finetune_config", "parent_file"]


def parent_file(value: Any) -> Path:
    """The model to fine-tune (the *Start from* field), resolved; InputError when not chosen."""
    text = str(value or "").strip()
    path = Path(text).expanduser()
    if not text or text == "." or not path.is_file():
        raise InputError("choose the model to fine-tune under 'Start from'")
    return path.resolve()


def finetune_config(init: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The parent's stored configuration with the dock's ``overrides`` (device, split, optimiser)."""
    from softseg.modelfile import read_card

    base = read_card(init).training.config
    if base is None:
        raise InputError(f"{init.name} does not record its training settings; it cannot be "
                         "fine-tuned here")
    return base.updated(overrides, source="fine-tuning settings")


def check_parent(init: Path, *, channels: int, classes: tuple[str, ...] | None) -> None:
    """Refuse (one line) fine-tuning ``init`` on layers it cannot take.

    The chosen image layers become the parent's channels and the targets its structure (the run
    writes them under the parent's channel and class names), so only their numbers must agree.

    Parameters
    ----------
    init : Path
        The parent model file.
    channels : int
        How many image layers are chosen.
    classes : tuple of str or None
        The targets' class names (``None``: one structure).

    Raises
    ------
    InputError
        Another number of image channels, or other classes, than the parent's.
    """
    from softseg.modelfile import read_card

    card = read_card(init)
    if channels != len(card.channels):
        raise InputError(
            f"{init.name} takes {len(card.channels)} image channel(s) ({', '.join(card.channels)}) "
            f"but {channels} image layer(s) are chosen; choose them in the model's order"
        )
    k_data = len(classes) if classes else 1
    if k_data != len(card.classes) or (classes and tuple(classes) != tuple(card.classes)):
        have = ", ".join(classes) if classes else "one structure"
        raise InputError(
            f"{init.name} segments {len(card.classes)} class(es) ({', '.join(card.classes)}) but "
            f"the targets hold {have}; fine-tune it on targets with its classes"
        )
