"""The Compare dock's table: which metrics it shows (the registry's display levels, the user's
choice), and a cell that sorts by its value."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem

from softseg.metrics import METRICS

__all__ = ["DEFAULT_COLUMNS", "VALUE_ROLE", "NumericItem", "column_groups", "shown_columns"]

VALUE_ROLE = Qt.ItemDataRole.UserRole


def _headline() -> list[str]:
    """The registry's headline metrics (level 1), scores first, the threshold (a setting) last."""
    keys = [k for k, s in METRICS.items() if s.level == 1]
    return [k for k in keys if METRICS[k].group != "setting"] + [
        k for k in keys if METRICS[k].group == "setting"]


#: What the table shows first: Dice, precision, recall, RVD, AVD, LTPR, LFDR, MSE, ECE, Brier,
#: threshold (the registry's level 1).
DEFAULT_COLUMNS: tuple[str, ...] = tuple(_headline())


def column_groups() -> dict[str, list[str]]:
    """Every metric of the registry by family (for the column chooser), in registry order."""
    groups: dict[str, list[str]] = {}
    for key, spec in METRICS.items():
        groups.setdefault(spec.group or "other", []).append(key)
    return groups


def shown_columns(chosen: Sequence[str],
                  rows: Mapping[str, Iterable[Mapping[str, float]]]) -> list[str]:
    """The chosen metrics that have a value for some candidate (NaN everywhere: not shown;
    +-inf is a value), in the order of :data:`DEFAULT_COLUMNS` then the registry; a table whose
    rows hold only other keys (the multi-class summary: ECE, accuracy) shows those."""
    present = {k for rs in rows.values() for r in rs for k, v in r.items()
               if isinstance(v, (int, float)) and not math.isnan(float(v))}
    order = list(DEFAULT_COLUMNS) + [k for k in METRICS if k not in DEFAULT_COLUMNS]
    cols = [k for k in order if k in chosen and k in present]
    if not cols:
        cols = [k for k in order if k in present]
    return cols


class NumericItem(QTableWidgetItem):
    """A table cell that sorts by its stored value (NaN last), not by its text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(VALUE_ROLE), other.data(VALUE_ROLE)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if math.isnan(a):
                return False
            if math.isnan(b):
                return True
            return a < b
        return super().__lt__(other)
