"""Pre-annotation: a model's soft prediction turned into a rater's painted confidence levels.

A rater who starts from a model's prediction corrects it instead of painting from scratch (the
MONAI Label habit; issue 17). The prediction becomes the painted values of a rater layer through
the layer's :class:`~softseg.confidence.ConfidenceScale`:

* **one class**: each voxel gets the **nearest level** of its probability,
  :meth:`ConfidenceScale.to_levels` (ties go to the lower level; a probability nearer to 0 than
  to the lowest level's value is background). With the default scale (1/3, 2/3, 1) the level
  boundaries are 1/6, 1/2 and 5/6.
* **K classes** (a K-class model's per-class probabilities, background = 1 - their sum): each
  voxel gets the **argmax class** (background included; ties to the lower index, background
  first) at the nearest level of **that class's probability**, painted as the class code
  ``(class - 1) * L + level`` of :mod:`softseg.class_levels`; a voxel whose winning class
  rounds to level 0 stays background.

Why our own code: the mapping is this product's rule for turning a model's output into painted
confidence (DESIGN decisions 2 and 11), not a general-purpose operation.

What the rater changed afterwards is counted by :func:`changed_voxels` against the model's map,
so fusion and training can tell a corrected pre-annotation from a model's map nobody looked at
(``preannotated_by`` in the sidecar, :class:`softseg.sidecar.RaterSidecar`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from softseg.checks import PROBABILITY_TOLERANCE, as_probability
from softseg.class_levels import max_code
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError

__all__ = [
    "RULE",
    "changed_voxels",
    "is_uncorrected",
    "prediction_to_codes",
    "preannotation_record",
]

#: Name of the mapping recorded with every pre-annotation.
RULE = "nearest level"


def prediction_to_codes(
    probabilities: Any,
    *,
    scale: ConfidenceScale,
    n_classes: int | None = None,
    name: str = "prediction",
) -> np.ndarray:
    """Painted values of a pre-annotation: levels (one class) or class codes (K classes).

    Parameters
    ----------
    probabilities : ndarray
        One class: ``(*spatial)`` probabilities in [0, 1]. K classes: ``(K, *spatial)``, the
        foreground classes 1..K (background = 1 - their sum); values within
        :data:`~softseg.checks.PROBABILITY_TOLERANCE` of [0, 1] are clipped
        (:func:`~softseg.checks.as_probability`).
    scale : ConfidenceScale
        The rater layer's scale (``L`` levels).
    n_classes : int, optional
        ``K``. None or 1: *probabilities* is one class's map. K >= 2: its first axis must be K.
    name : str
        Names the prediction in error messages.

    Returns
    -------
    ndarray, shape ``spatial``, uint8 (uint16 when ``K * L > 255``)
        0 = background; one class: levels 1..L; K classes: codes ``(c - 1) * L + level``.

    Raises
    ------
    InputError
        Values outside [0, 1] or not finite; a first axis other than K; classes summing to more
        than 1 (beyond rounding) at some voxel.
    """
    if not isinstance(scale, ConfidenceScale):
        raise InputError(f"{name}: the scale must be a ConfidenceScale; got {type(scale).__name__}")
    k = 1 if n_classes is None else int(n_classes)
    if k < 1 or (n_classes is not None and k != n_classes):
        raise InputError(f"{name}: n_classes must be a whole number >= 1; got {n_classes!r}")
    p = as_probability(np.asarray(probabilities), name=name)
    levels_n = scale.n_levels
    if k == 1:
        return scale.to_levels(p)
    if p.ndim < 2 or p.shape[0] != k:
        raise InputError(
            f"{name}: expected {k} class maps of shape (K, *spatial); got shape {p.shape}"
        )
    p = p.astype(np.float32, copy=False)
    total = p.sum(axis=0, dtype=np.float64)
    top = float(total.max()) if total.size else 0.0
    if top > 1.0 + max(PROBABILITY_TOLERANCE, 1e-5):
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(total)), total.shape))
        raise InputError(
            f"{name}: the {k} class probabilities sum to {top!r} at voxel {where}; a K-class "
            "prediction's classes must sum to at most 1 (background = the rest)"
        )
    background = np.clip(1.0 - total, 0.0, 1.0).astype(np.float32)
    stacked = np.concatenate([background[None], p], axis=0)
    winner = np.argmax(stacked, axis=0)  # 0 = background, ties to the lower index
    best = np.take_along_axis(stacked, winner[None], axis=0)[0]
    levels = scale.to_levels(np.clip(best, 0.0, 1.0))
    dtype = np.uint8 if max_code(k, levels_n) <= 255 else np.uint16
    painted = (winner > 0) & (levels > 0)
    codes = np.zeros(winner.shape, dtype=dtype)
    codes[painted] = ((winner[painted] - 1) * levels_n + levels[painted]).astype(dtype)
    return codes


def changed_voxels(painted: Any, reference: Any, *, before: int = 0) -> int:
    """Voxels whose painted value differs from the model's map (plus *before*).

    Parameters
    ----------
    painted, reference : ndarray, same shape
        The rater's map now and what the model made (or what a restored session started from).
    before : int, >= 0
        Voxels counted as changed in earlier sessions (restored work).

    Returns
    -------
    int

    Raises
    ------
    InputError
        Shapes differ.
    """
    a, b = np.asarray(painted), np.asarray(reference)
    if a.shape != b.shape:
        raise InputError(f"painted map has shape {a.shape}, the pre-annotation {b.shape}; they must match")
    return int(before) + int(np.count_nonzero(a != b))


def preannotation_record(
    *, model: str, source: str, model_voxels: int, rater_changed_voxels: int
) -> dict[str, Any]:
    """What a pre-annotated rater map records (layer metadata, snapshot, sidecar ``preannotation``).

    ``{"model": ..., "source": "layer" | "file", "rule": RULE, "model_voxels": N,
    "rater_changed_voxels": M}`` (JSON-able).
    """
    if source not in ("layer", "file"):
        raise InputError(f"pre-annotation source must be 'layer' or 'file'; got {source!r}")
    return {
        "model": str(model),
        "source": source,
        "rule": RULE,
        "model_voxels": int(model_voxels),
        "rater_changed_voxels": int(rater_changed_voxels),
    }


def is_uncorrected(preannotated_by: str | None, record: Mapping[str, Any] | None) -> bool:
    """True for a model's map that no rater corrected.

    This is the test training applies before accepting a pre-annotated rater map.

    Parameters
    ----------
    preannotated_by : str or None
        The sidecar's ``preannotated_by`` (None: the map was painted by a person).
    record : mapping or None
        The ``preannotation`` record (:func:`preannotation_record`); a pre-annotated map without
        one, or without a whole-number ``rater_changed_voxels`` count, counts as uncorrected.
    """
    if not preannotated_by and not isinstance(record, Mapping):
        return False
    if not isinstance(record, Mapping):
        return True
    changed = record.get("rater_changed_voxels")
    return not isinstance(changed, int) or isinstance(changed, bool) or changed <= 0
