"""Early stopping on a validation metric, in one place (SoftSeg paper, Table 1: patience 50
epochs, epsilon 0.001 on the validation loss)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Track the best epoch of a monitored validation metric (lower is better).

    An epoch *improves* when its value is lower than the best so far by more than ``min_delta``
    (the first finite value always improves); after ``patience`` epochs in a row without an
    improvement, :attr:`should_stop` is true. A NaN/Inf value never improves.

    Parameters
    ----------
    patience : int >= 1
        Epochs without improvement before stopping.
    min_delta : float >= 0
        Smallest decrease that counts as an improvement.
    monitor : str
        Key of the metrics mapping passed to :meth:`update` (default ``"val_loss"``).

    Attributes
    ----------
    best : dict
        ``{"epoch": int or None, <metric>: float or None, ...}``: the metrics of the best epoch.
    bad_epochs : int
        Epochs since the last improvement.
    """

    def __init__(self, patience: int, min_delta: float, *, monitor: str = "val_loss") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1; got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0; got {min_delta!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.monitor = monitor
        self.best: dict[str, Any] = {"epoch": None, monitor: None}
        self.bad_epochs = 0

    def update(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record an epoch's validation metrics; returns True when it is a new best."""
        value = float(metrics[self.monitor])
        best = self.best.get(self.monitor)
        improved = math.isfinite(value) and (best is None or value < best - self.min_delta)
        if improved:
            self.best = {"epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """``patience`` epochs in a row without improvement."""
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = dict(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
