"""A unit's record (``units/<stem>.json``): what a finished unit leaves for the parent, and the
error record a failed job leaves (``units/<stem>.error.json``). Both are JSON read through
:mod:`softseg.schema`; the parent never reads a pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softseg.errors import InputError
from softseg.schema import Schema, load_json, parse

if TYPE_CHECKING:
    from softseg.protocol.units import UnitPlan

__all__ = ["UnitRecord", "error_record", "read_error", "read_record", "stale_units", "write_error"]


class UnitRecord(Schema):
    """A finished unit (``units/<stem>.json`` and its entry in ``run_state.json``).

    ``subjects``: per test subject, :func:`softseg.metrics.evaluate`'s table (K-class: the
    multi-class ``ece``/``accuracy``); ``curves``: the pooled plot data
    (:meth:`softseg.compare.Curves.as_dict`; None for K-class); ``classes``: K-class models,
    per class ``{"subjects": ..., "curves": ...}``; ``plan``: :meth:`UnitPlan.as_dict`;
    ``model``: the unit's (first) model file, ``models``: all of them; ``torch_threads``: the
    CPU threads the unit ran with (CPU results are bit-identical only for equal thread
    counts); ``members``: the number of models whose mean is the unit's
    prediction (1; a rater ensemble: one per rater, ``member_raters`` their rater ids, and
    ``thresholds`` the averaged map's own optimum, :mod:`softseg.protocol.ensemble`).
    Numbers are JSON-safe (:func:`softseg.compare.json_safe`: NaN as null, infinities as
    ``"inf"``/``"-inf"``).
    """

    candidate: str
    repeat: int
    model: str
    models: tuple[str, ...]
    threshold: float | None
    thresholds: tuple[float, ...]
    split: dict[str, tuple[str, ...]]
    test_group: str | None
    train_seconds: float
    subjects: dict[str, dict[str, Any]]
    curves: dict[str, Any] | None
    classes: dict[str, dict[str, Any]] = {}
    plan: dict[str, Any]
    torch_threads: int | None = None
    members: int = 1
    member_raters: tuple[str, ...] = ()


def read_record(path: str | os.PathLike, plan: UnitPlan | None = None) -> dict[str, Any] | None:
    """The record at ``path`` as a dict, or None when there is none or it is not for ``plan``.

    Raises
    ------
    InputError
        A record file that is not a unit record (damaged): its path and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = load_json(path, what="unit record")
    rec = parse(UnitRecord, data, source=str(path))
    if plan is not None:
        if rec.plan != _jsonish(plan.as_dict()):
            return None  # a record of other settings (an earlier run in this folder)
        if not all(p.exists() for p in plan.model_paths()):
            return None  # its model was deleted: the unit is to be trained again
        if stale_units(plan.folder, {plan.uid: data}):
            return None  # trained before its candidate's name got another recipe
    return data


def stale_units(folder: str | os.PathLike, units: dict[str, Any]) -> dict[str, str]:
    """Finished units whose models were not trained with the recipe their candidate's name has
    now (the registry renamed it or changed it since: :data:`softseg.candidates.RENAMED`,
    :data:`softseg.candidates.RECIPES_BEFORE_RENAMES`), read from each model's card.

    Parameters
    ----------
    folder : path
        The protocol folder the records' ``models`` are relative to.
    units : dict
        uid -> unit record (``run_state.json``'s ``units``).

    Returns
    -------
    dict
        uid -> why, for each stale unit (a missing or unreadable model counts as stale: the
        unit is to be trained again).
    """
    from softseg.candidates import trained_with_current_recipe
    from softseg.modelfile import read_card
    from softseg.protocol.reference import parse_candidate

    folder = Path(folder)
    stale = {}
    for uid, rec in units.items():
        name = parse_candidate(rec["candidate"])[0]
        for model in rec.get("models") or [rec["model"]]:
            try:
                card = read_card(folder / model)
            except (InputError, OSError) as exc:
                stale[uid] = f"its model {model} cannot be read ({exc})"
                break
            if not trained_with_current_recipe(card, name):
                stale[uid] = (f"{model} was trained with another recipe than {name!r} has in this "
                              "softseg version; it is trained again")
                break
    return stale


def _jsonish(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def error_record(plan: UnitPlan, exc: BaseException) -> dict[str, Any]:
    """What :func:`write_error` stores about a unit that raised ``exc``."""
    return {"unit": plan.uid, "type": type(exc).__name__,
            "message": " ".join(str(exc).split()) or type(exc).__name__,
            "traceback": traceback.format_exc(), "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_error(plan: UnitPlan, exc: BaseException) -> None:
    """Write ``units/<stem>.error.json`` (best effort: a full disk must not hide ``exc``)."""
    from softseg.io import write_json

    with contextlib.suppress(Exception):
        plan.error_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(plan.error_path, error_record(plan, exc), overwrite=True)


def read_error(plan: UnitPlan) -> dict[str, Any] | None:
    """The error record of the unit's last failed job, or None."""
    if not plan.error_path.is_file():
        return None
    try:
        data = load_json(plan.error_path, what="unit error record")
    except InputError:
        return None
    return data if isinstance(data, dict) else None
