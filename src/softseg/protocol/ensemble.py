"""Rater ensembles in the protocol: ``NAME:ensemble`` trains one model per rater and averages them.

The label-fusion paper (Lemay et al., MELBA 2022, section 4 "Comparison with loss ensembles")
compares SoftSeg with the QUBIQ 2020 winner's *loss ensemble* (Ma 2020), which it calls
**Conv-STAPLE-QUBIQ**: one conventional 2D U-Net per rater, each trained on that rater's labels
alone; at inference the test input goes through every model and the outputs are averaged.
``conventional:ensemble`` is that baseline; the fusion slot of the candidate spec says how the
raters become targets (here: none is fused, each trains its own model), so any candidate can be
ensembled the same way (``softseg:ensemble``, the paper's suggested "ensemble of SoftSeg models").

What a unit of an ensemble candidate does (:mod:`softseg.protocol.units`):

* **members** — one :class:`~softseg.protocol.units.TrainingPlan` per rater id of the dataset
  (sorted, :attr:`softseg.data.DatasetInfo.rater_ids`), model file
  ``models/<candidate>-r<k>-rater-<id>.safetensors``. A member trains the candidate's recipe on
  :func:`rater_view` of the dataset (every subject keeps only that rater's files), with the
  unit's seed, hence the unit's split (paired with the other candidates) and the same
  initialisation for every member: the members differ by their rater's labels only. Its model
  card records ``raters = (id,)`` and fusion ``average`` (the mean of one rater is the rater).
* **prediction** — :func:`mean_prediction` (:func:`softseg.uncertainty.mean_prediction`, the
  same function ``softseg predict -m A -m B`` uses): the voxel-wise mean of the members'
  probability maps (K classes: of their class maps, which still sum to 1).
* **threshold** — :func:`ensemble_thresholds`: the protocol's rule for every candidate (the
  threshold among 0.05 … 0.95 that maximises the mean Dice on the training + validation
  subjects), applied to the averaged map against every member's own reference (each rater
  binarised at 0.5; K classes: each rater's most probable class), i.e. the mean Dice over
  (subject, rater) pairs. It is searched on whole volumes at native resolution (a single model's
  trainer searches its preprocessed slices).

Refused in one line before any training: a dataset with fewer than two raters, a subject that
lacks one of the raters (the members must share the unit's split), two rater ids that give the
same file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from softseg.errors import InputError
# the one ensemble mean (also softseg predict -m A -m B), re-exported here for the protocol
from softseg.uncertainty import mean_prediction

__all__ = [
    "DESCRIPTION",
    "ENSEMBLE",
    "MEMBER_FUSION",
    "ensemble_raters",
    "ensemble_thresholds",
    "mean_prediction",
    "member_model",
    "rater_view",
]

#: The fusion slot of a candidate spec that makes it a rater ensemble (``conventional:ensemble``).
ENSEMBLE = "ensemble"

#: The training fusion of a member (its one rater: the average of one map is the map).
MEMBER_FUSION = "average"

#: One line for ``softseg candidates`` / ``softseg compare --help`` / the report.
DESCRIPTION = ("one model per rater, each trained on that rater's labels alone; predictions "
               "averaged (label-fusion paper's Conv-STAPLE-QUBIQ loss ensemble, Ma 2020); "
               "softseg compare --train only")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def ensemble_raters(info: Any, spec: str) -> tuple[str, ...]:
    """The rater ids an ensemble candidate trains one member on (sorted).

    Parameters
    ----------
    info : softseg.data.DatasetInfo
    spec : str
        The candidate spec (``conventional:ensemble``), for the messages.

    Returns
    -------
    tuple of str
        Every rater id of the dataset, at least two.

    Raises
    ------
    InputError
        Fewer than two raters; a subject without one of them; two ids with the same file name.
    """
    raters = tuple(info.rater_ids)
    if len(raters) < 2:
        raise InputError(
            f"{spec} needs >= 2 raters (one model per rater); the dataset has {len(raters)}"
            + (f" ({', '.join(raters)})" if raters else "")
            + "; train a single model instead (e.g. " + spec.partition(":")[0] + ")")
    for subject in info.subjects:
        missing = [r for r in raters if r not in subject.rater_ids]
        if missing:
            raise InputError(
                f"{spec} trains one model per rater on the unit's split, so every subject needs "
                f"every rater; subject {subject.name!r} has no rater {', '.join(missing)} "
                f"(dataset raters: {', '.join(raters)}); add the files or use a fusion "
                "(e.g. " + spec.partition(":")[0] + ":staple)")
    names: dict[str, str] = {}
    for r in raters:
        other = names.setdefault(_safe(r), r)
        if other != r:
            raise InputError(f"{spec}: raters {other!r} and {r!r} would share the model file "
                             f"name ...-rater-{_safe(r)}; rename one rater's files")
    return raters


def member_model(folder: str, stem: str, rater: str) -> str:
    """Model file of the member of ``rater``, relative to the protocol folder."""
    return f"{folder}/{stem}-rater-{_safe(rater)}.safetensors"


def rater_view(info: Any, rater: str) -> Any:
    """The dataset as one rater labelled it: every subject keeps only ``rater``'s files.

    Parameters
    ----------
    info : softseg.data.DatasetInfo
    rater : str
        A rater id of every subject (:func:`ensemble_raters` checks it).

    Returns
    -------
    softseg.data.DatasetInfo
        Same root, subjects (in the same order, so the same splits), channels and classes; each
        subject's ``raters`` / ``rater_ids`` / ``rater_kinds`` reduced to that one rater (its
        K per-class files for a K-class dataset).

    Raises
    ------
    InputError
        A subject without that rater.
    """
    subjects = []
    for s in info.subjects:
        if rater not in s.rater_ids:
            raise InputError(f"subject {s.name!r} has no rater {rater!r} (its raters: "
                             f"{', '.join(s.rater_ids) or 'none'})")
        i = s.rater_ids.index(rater)
        subjects.append(replace(s, raters=tuple(s.rater_files[i]), rater_ids=(rater,),
                                rater_kinds=(s.kinds[i],) if s.rater_kinds else ()))
    return replace(info, subjects=tuple(subjects))


def ensemble_thresholds(
    predictions: Sequence[np.ndarray],
    raters: Sequence[np.ndarray],
    *,
    n_classes: int = 1,
) -> tuple[float, ...]:
    """The averaged map's optimal threshold(s): mean Dice over (subject, rater) pairs.

    Parameters
    ----------
    predictions : sequence of ndarray
        Per training/validation subject, the ensemble's prediction (:func:`mean_prediction`):
        ``(S, H, W)``, or ``(K+1, S, H, W)`` with ``n_classes = K >= 2``.
    raters : sequence of ndarray
        Per subject, its raters (:attr:`softseg.data.SubjectData.raters`): ``(R, S, H, W)`` soft
        maps, or ``(R, K+1, S, H, W)`` class maps.
    n_classes : int
        K.

    Returns
    -------
    tuple of float
        One threshold per class from :func:`softseg.metrics.optimal_threshold` (0.05 … 0.95, the
        lowest among ties), the reference of each pair being one rater binarised at 0.5
        (:data:`softseg.candidates.HARD_THRESHOLD`), or for K classes the indicator of that
        class in the rater's most probable class (:func:`softseg.metrics.class_argmax`).

    Raises
    ------
    InputError
        As :func:`softseg.metrics.optimal_threshold` (no subject, shapes that differ).
    """
    from softseg.candidates import HARD_THRESHOLD
    from softseg.metrics import class_argmax, optimal_threshold

    if len(predictions) != len(raters) or not predictions:
        raise InputError(f"ensemble threshold: got {len(predictions)} predictions and "
                         f"{len(raters)} rater stacks; give one per subject")
    if n_classes == 1:
        probs, truths = [], []
        for pred, stack in zip(predictions, raters):
            for r in np.asarray(stack):
                probs.append(np.asarray(pred))
                truths.append((r >= HARD_THRESHOLD).astype(np.float32))
        return (float(optimal_threshold(probs, truths)),)
    labels = [[class_argmax(np.asarray(r, dtype=np.float32))[0] for r in np.asarray(stack)]
              for stack in raters]
    out = []
    for c in range(1, n_classes + 1):
        probs, truths = [], []
        for pred, subject_labels in zip(predictions, labels):
            for lab in subject_labels:
                probs.append(np.asarray(pred)[c])
                truths.append((lab == c).astype(np.float32))
        out.append(float(optimal_threshold(probs, truths)))
    return tuple(out)
