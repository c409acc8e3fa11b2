"""A finished (or stopped) run's training history, for the Train dock's *Open history…*.

Every ``softseg train`` run writes ``<model>.history.csv`` (one row per epoch, columns
``softseg.training.callbacks.HISTORY_COLUMNS``: epoch, loss, val_loss, val_dice, val_soft_dice,
lr, elapsed_s; empty cell = not known) after each epoch, and the model file's card holds the same
rows (:attr:`softseg.card.ModelCard.history`). The dock reads either: the model file's card (no
torch, :func:`softseg.modelfile.read_card`), or the CSV (a run that was stopped has no model file
yet, only its history). Both come back as :class:`softseg.card.HistoryRow` objects, validated by
the same schema. (``softseg.training.callbacks`` is not imported: its package imports torch.)
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softseg.errors import InputError

__all__ = ["History", "checkpoint_of", "history_csv_of", "read_history"]

_SUFFIX = ".safetensors"
_CSV_SUFFIX = ".history.csv"


def history_csv_of(model: str | os.PathLike) -> Path:
    """``m.safetensors`` -> ``m.history.csv`` (the file every run writes beside its model;
    ``softseg.training.callbacks.history_path``'s rule, which imports torch; a test keeps them
    equal)."""
    model = Path(model)
    stem = model.name[: -len(_SUFFIX)] if model.name.endswith(_SUFFIX) else model.stem
    return model.with_name(stem + _CSV_SUFFIX)


def checkpoint_of(model: str | os.PathLike) -> Path:
    """``m.safetensors`` -> ``m.checkpoint.safetensors``, the resumable checkpoint of a run
    (``softseg.training.checkpoint.checkpoint_path``'s rule; a test keeps them equal)."""
    model = Path(model)
    stem = model.name[: -len(_SUFFIX)] if model.name.endswith(_SUFFIX) else model.stem
    return model.with_name(stem + ".checkpoint.safetensors")


@dataclass(frozen=True)
class History:
    """Rows of a run's history and where they were read.

    Attributes
    ----------
    rows : tuple of softseg.card.HistoryRow
        One per completed epoch, in order.
    path : Path
        The file read (model file or CSV).
    max_epochs : int or None
        The run's maximum number of epochs, when the model card says it.
    title : str
        What the curves show, e.g. ``"model.safetensors (softseg, 10 epochs)"``.
    """

    rows: tuple[Any, ...]
    path: Path
    max_epochs: int | None
    title: str


def _cell(text: str, key: str, path: Path, line: int) -> float | int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text) if key == "epoch" else float(text)
    except ValueError:
        raise InputError(f"{path.name}, line {line}: {key} {text!r} is not a number") from None
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _read_csv(path: Path) -> tuple[Any, ...]:
    from softseg.card import HistoryRow
    from softseg.schema import parse

    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if "epoch" not in header or "loss" not in header:
                raise InputError(
                    f"{path.name} is not a training history (its first line must name the columns "
                    "epoch, loss, val_loss, ...)"
                )
            known = [k for k in header if k in HistoryRow.model_fields]
            rows = []
            for line, raw in enumerate(reader, start=2):
                values = {k: _cell(raw.get(k) or "", k, path, line) for k in known}
                rows.append(parse(HistoryRow, values, source=f"{path.name}, line {line}"))
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not a text file; choose a model file or its .history.csv") from None
    return tuple(rows)


def read_history(path: str | os.PathLike) -> History:
    """The history of a model file (its card's rows) or of a ``.history.csv`` file.

    Parameters
    ----------
    path : path-like
        ``m.safetensors`` (read from the card; ``m.history.csv`` when the card has no rows) or
        ``m.history.csv``.

    Raises
    ------
    InputError
        Not a model file or history, unreadable, no rows.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path} does not exist; choose a model file or its .history.csv")
    if path.name.endswith(_SUFFIX):
        from softseg.modelfile import read_card

        card = read_card(path)
        rows, max_epochs = tuple(card.history), card.training.max_epochs if card.training else None
        what = f"{card.candidate.name}, {len(rows)} epoch{'s' if len(rows) != 1 else ''}"
        if not rows and history_csv_of(path).is_file():
            rows = _read_csv(history_csv_of(path))
    else:
        rows, max_epochs = _read_csv(path), None
        what = f"{len(rows)} epoch{'s' if len(rows) != 1 else ''}"
    if not rows:
        raise InputError(f"{path.name} holds no completed epoch yet")
    return History(rows=rows, path=path, max_epochs=max_epochs, title=f"{path.name} ({what})")
