"""What the Train dock says about a finished model: where its data is, and a too-good Dice.

A validation Dice of 1.000 (issue 11 #11) is what a tiny or trivially easy validation set
gives, not evidence of a perfect model: with one image cut into a few slabs, the validation slab
may hold a handful of slices. :func:`validation_note` flags a best validation Dice at or above
:data:`SUSPICIOUS_DICE` and says on how much data it was measured (slices, when the training
folder records them, else subjects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SUSPICIOUS_DICE", "data_note", "validation_note", "validation_size"]

#: A best validation Dice at or above this is flagged (it shows as 1.000 with three decimals
#: from 0.9995; real segmentations of the papers' structures reach 0.6-0.95).
SUSPICIOUS_DICE = 0.995


def validation_size(card: Any) -> tuple[int, int | None]:
    """``(subjects, slices)`` of the model's validation split; ``slices`` is ``None`` when the
    training folder does not record them (a run from open layers records each slab's slices
    in its ``dataset.json``)."""
    names = tuple(card.split.val)
    slices: int | None = None
    if card.dataset and names:
        from softseg.errors import InputError
        from softseg.schema import load_json

        try:
            doc = load_json(Path(card.dataset) / "dataset.json", what="dataset description")
        except (InputError, OSError):
            doc = None
        subjects = doc.get("subjects") if isinstance(doc, dict) else None
        if isinstance(subjects, list):
            spans = {s.get("subject"): s.get("axial_slices") for s in subjects if isinstance(s, dict)}
            try:
                slices = sum(int(spans[n][1]) - int(spans[n][0]) for n in names)
            except (KeyError, TypeError, ValueError, IndexError):
                slices = None
    return len(names), slices


def validation_note(card: Any) -> str | None:
    """A warning when the best validation Dice is suspiciously high, else ``None``."""
    dice = card.validation.val_dice
    if dice is None or dice < SUSPICIOUS_DICE:
        return None
    subjects, slices = validation_size(card)
    where = (f"{slices} slice{'s' if slices != 1 else ''}" if slices is not None
             else f"{subjects} subject{'s' if subjects != 1 else ''}")
    return (f"validation Dice {dice:.3f} measured on only {where}: too little or too easy to judge "
            "the model; add images or raise 'Validation fraction'")


def data_note(card: Any, *, from_layers: bool) -> str:
    """Where the model's training data is, in one line (the card's ``dataset``)."""
    if not card.dataset:
        return "the model file does not record its training data"
    path = Path(card.dataset)
    if not path.exists():
        return f"trained on {path.name} (a temporary folder, since removed)"
    if from_layers:
        return f"training data (the open layers) kept in {path.parent.name}/{path.name}"
    return f"trained on {path}"
