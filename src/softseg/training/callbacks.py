"""Trainer callbacks: consumers of the progress events that write logs.

A callback receives every event the trainer yields (on the main rank), after the trainer's own
bookkeeping for it, through ``on_event(trainer, event)``, and ``close(trainer)`` once when the run
ends (completed, cancelled or failed). Two are built in:

:class:`HistoryCSV`
    ``<model>.history.csv`` (:func:`history_path`), written by every run: one row per epoch with
    the columns :data:`HISTORY_COLUMNS`, the very numbers of the ``epoch`` progress events.
    Rewritten atomically from the trainer's history after each epoch, so a resumed run's file
    holds every epoch once.
:class:`TensorBoardScalars`
    ``softseg train --tensorboard DIR``: scalars through ``torch.utils.tensorboard``
    (``loss/step`` per optimisation step; ``loss/train``, ``loss/val``, ``dice/val``,
    ``soft_dice/val``, ``lr`` per epoch).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from softseg import events as ev

__all__ = ["HISTORY_COLUMNS", "Callback", "HistoryCSV", "TensorBoardScalars", "history_path", "write_history_csv"]

#: Columns of ``<model>.history.csv`` (fields of :class:`softseg.events.EpochEvent`).
HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "val_dice", "val_soft_dice", "lr", "elapsed_s")


def history_path(out: str | os.PathLike) -> Path:
    """The training history of a model file: ``m.safetensors`` -> ``m.history.csv``."""
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return out.with_name(stem + ".history.csv")


def history_row(event: ev.EpochEvent) -> dict[str, Any]:
    """The history row of an ``epoch`` event: :data:`HISTORY_COLUMNS` taken from it."""
    return {k: getattr(event, k) for k in HISTORY_COLUMNS}


def write_history_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write history rows as CSV (header :data:`HISTORY_COLUMNS`), atomically.

    Floats are written with ``repr`` (they read back exactly); missing and NaN/Inf values as
    empty cells (as the JSON progress events write them: null).
    """
    from softseg.io import atomic_path

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(k)) for k in HISTORY_COLUMNS])
    path = Path(path)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value)


class Callback:
    """Base class: override :meth:`on_event` and/or :meth:`close` (both no-ops here)."""

    def on_event(self, trainer: Any, event: ev.Event) -> None:
        """Called with every event the trainer yields."""

    def close(self, trainer: Any) -> None:
        """Called once when the run ends."""


class HistoryCSV(Callback):
    """Rewrite ``path`` from ``trainer.history`` after every ``epoch`` event."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_event(self, trainer: Any, event: ev.Event) -> None:
        if isinstance(event, ev.EpochEvent):
            write_history_csv(self.path, trainer.history)


class TensorBoardScalars(Callback):
    """TensorBoard scalars in ``log_dir`` (created on the first event)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def _w(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def on_event(self, trainer: Any, event: ev.Event) -> None:
        if isinstance(event, ev.StepEvent):
            step = (event.epoch - 1) * event.steps + event.step
            self._w().add_scalar("loss/step", event.loss, step)
        elif isinstance(event, ev.EpochEvent):
            w = self._w()
            for tag, value in (("loss/train", event.loss), ("loss/val", event.val_loss),
                               ("dice/val", event.val_dice), ("soft_dice/val", event.val_soft_dice),
                               ("lr", event.lr)):
                w.add_scalar(tag, value, event.epoch)
            w.flush()

    def close(self, trainer: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
