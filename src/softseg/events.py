"""Typed progress events of the trainer (the schema the CLI and the napari widget read).

The trainer (:func:`softseg.training.train`) yields these events; ``softseg train --json-progress``
prints one JSON object per event per line on stdout (flushed after each line), so a supervisor
process (the napari "Train" widget) can parse them with :func:`from_json`.

Schema (version :data:`SCHEMA_VERSION`)
---------------------------------------
Every event is a flat JSON object with a ``"type"`` key and the fields below. Epochs and steps are
**1-based** (``epoch=1`` is the first epoch). Times are seconds. ``null`` means "not known yet".
Consumers must ignore keys they do not know and events whose ``type`` they do not know (new fields
may be added; existing names never change).

========== =====================================================================================
type       fields
========== =====================================================================================
step       ``epoch``, ``epochs`` (maximum), ``step``, ``steps`` (per epoch), ``loss`` (this
           batch's training loss), ``eta_s`` (remaining time estimate, whole run at the maximum
           number of epochs; ``null`` before the first step is timed)
val        ``epoch``, ``val_loss``, ``val_dice`` (Dice at 0.5), ``val_soft_dice`` (soft Dice),
           emitted after each validation pass
lr         ``epoch``, ``lr`` (learning rate for the next epoch, after the scheduler step)
epoch      end-of-epoch summary: ``epoch``, ``epochs``, ``loss`` (mean training loss),
           ``val_loss``, ``val_dice``, ``val_soft_dice``, ``lr``, ``elapsed_s``, ``eta_s``
best       ``epoch``, ``val_loss``, ``val_dice``: a new best model (lowest validation loss by
           more than the early-stopping ``min_delta``) was kept
checkpoint ``epoch`` (last completed epoch), ``path``, ``reason`` (``"epoch"``, ``"cancel"``,
           ``"final"``): a resumable checkpoint was written (atomically)
done       ``epoch`` (last completed epoch), ``epochs``, ``reason`` (``"completed"`` = maximum
           epochs reached, ``"early_stopping"``, ``"cancelled"``), ``best_epoch``,
           ``best_val_loss``, ``threshold`` (optimal binarisation threshold, ``null`` when
           cancelled), ``path`` (the model file, ``null`` when cancelled), ``checkpoint`` (the
           resumable checkpoint path), ``elapsed_s``
error      ``epoch``, ``kind`` (``"nan"``, ``"oom"``, ``"input"``, ``"internal"``), ``message``
           (one line, says what to do), ``checkpoint`` (last good checkpoint path or ``null``)
========== =====================================================================================

Example line::

    {"type": "step", "epoch": 1, "epochs": 200, "step": 3, "steps": 12, "loss": 0.41, "eta_s": 95.2}
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Union

__all__ = [
    "SCHEMA_VERSION",
    "BestEvent",
    "CheckpointEvent",
    "DoneEvent",
    "EVENT_TYPES",
    "EpochEvent",
    "ErrorEvent",
    "Event",
    "LrEvent",
    "StepEvent",
    "ValEvent",
    "from_dict",
    "format_seconds",
    "from_json",
    "to_dict",
    "to_json",
]

#: Version of the event schema above (bumped only if a field's meaning changes).
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StepEvent:
    """One optimisation step finished."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    eta_s: float | None = None
    type: str = "step"


@dataclass(frozen=True)
class ValEvent:
    """Validation of one epoch finished."""

    epoch: int
    val_loss: float
    val_dice: float
    val_soft_dice: float
    type: str = "val"


@dataclass(frozen=True)
class LrEvent:
    """Learning rate after the scheduler step of an epoch."""

    epoch: int
    lr: float
    type: str = "lr"


@dataclass(frozen=True)
class EpochEvent:
    """End-of-epoch summary."""

    epoch: int
    epochs: int
    loss: float
    val_loss: float
    val_dice: float
    val_soft_dice: float
    lr: float
    elapsed_s: float
    eta_s: float | None = None
    type: str = "epoch"


@dataclass(frozen=True)
class BestEvent:
    """A new best model was kept."""

    epoch: int
    val_loss: float
    val_dice: float
    type: str = "best"


@dataclass(frozen=True)
class CheckpointEvent:
    """A resumable checkpoint was written."""

    epoch: int
    path: str
    reason: str = "epoch"
    type: str = "checkpoint"


@dataclass(frozen=True)
class DoneEvent:
    """The run ended (completed, stopped early or cancelled)."""

    epoch: int
    epochs: int
    reason: str
    best_epoch: int | None
    best_val_loss: float | None
    threshold: float | None
    path: str | None
    checkpoint: str | None
    elapsed_s: float
    type: str = "done"


@dataclass(frozen=True)
class ErrorEvent:
    """The run failed; ``message`` is one line saying what to do."""

    epoch: int
    kind: str
    message: str
    checkpoint: str | None = None
    type: str = "error"


Event = Union[
    StepEvent, ValEvent, LrEvent, EpochEvent, BestEvent, CheckpointEvent, DoneEvent, ErrorEvent
]

#: ``"type"`` value -> event class (a plain dict, STYLE.md 6).
EVENT_TYPES: dict[str, type] = {
    "step": StepEvent,
    "val": ValEvent,
    "lr": LrEvent,
    "epoch": EpochEvent,
    "best": BestEvent,
    "checkpoint": CheckpointEvent,
    "done": DoneEvent,
    "error": ErrorEvent,
}


def _clean(value: Any) -> Any:
    # JSON has no NaN/Inf: write them as null so every line is strict JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_dict(event: Event) -> dict[str, Any]:
    """The event as a flat JSON-able dict, ``"type"`` first."""
    data = asdict(event)
    out: dict[str, Any] = {"type": data.pop("type")}
    out.update({k: _clean(v) for k, v in data.items()})
    return out


def to_json(event: Event) -> str:
    """One line of strict JSON (no NaN), without a trailing newline."""
    return json.dumps(to_dict(event), allow_nan=False, separators=(", ", ": "))


def from_dict(data: dict[str, Any]) -> Event | None:
    """Parse an event dict; ``None`` for an unknown ``type`` (consumers skip those).

    Unknown keys are ignored so newer producers stay readable. A known type with a missing
    required field raises ``ValueError`` naming it.
    """
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad {kind!r} event {data!r}: {exc}") from None


def from_json(line: str) -> Event | None:
    """Parse one line written by :func:`to_json`; ``None`` for blank lines, non-JSON lines
    (e.g. a library's stray print) and unknown event types."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    return from_dict(data)


def format_seconds(seconds: float | None) -> str:
    """A duration (``eta_s``, ``elapsed_s``) for people: ``"45s"``, ``"3m07s"``, ``"2h05m"``;
    ``"?"`` when unknown (None, NaN, Inf)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
