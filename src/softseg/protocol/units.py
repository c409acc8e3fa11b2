"""The protocol's unit of work: one (candidate, repeat) — train, evaluate, write a record.

A :class:`UnitPlan` says everything one unit needs (dataset, split, the training
configuration(s), the reference to evaluate against); :func:`run_unit` is what runs it, in the
calling process (serial executor) or as a submitit job (:mod:`softseg.protocol.jobs`). It

1. trains each of the unit's models unless its model file exists (an interrupted training
   continues from its checkpoint, ``<model>.checkpoint.safetensors``),
2. predicts the split's test subjects and evaluates them (:func:`softseg.compare.evaluate_subject`,
   or per class for a K-class model),
3. writes the unit's record ``OUT/units/<candidate>-r<k>.json`` atomically and returns it.

The record is the unit's entry of ``run_state.json``; the parent merges records and builds the
table, so every executor produces the same table from the same records. A unit whose record
exists (for the same plan) is done: :func:`run_unit` returns it at once. A lock on
``OUT/units/<candidate>-r<k>.lock`` makes a second process on the same unit (a job of an
interrupted run still running when the run is resumed) wait for the first and reuse its record.

A unit holds a *tuple* of trainings: one model for a plain candidate, one per rater for a rater
ensemble (``NAME:ensemble``, :mod:`softseg.protocol.ensemble`: each member trains on one rater's
view of the dataset). Members train one after another; a member whose model file exists is kept,
so a unit interrupted after some members resumes with the rest. :func:`unit_prediction` is the
mean of the unit's models' predictions, and a unit of several models is binarised at the
averaged map's own optimal threshold (:func:`softseg.protocol.ensemble.ensemble_thresholds`).
The record lists the models and says how many members (``members``) and which raters.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softseg import compare
from softseg.errors import InputError
from softseg.protocol.reference import ground_truth, predict_subject
from softseg.protocol.records import read_record

__all__ = [
    "JOBS",
    "MODELS",
    "UNITS",
    "TrainingPlan",
    "UnitEvaluation",
    "UnitPlan",
    "plan_units",
    "run_unit",
    "unit_prediction",
]

#: Sub-folders of a protocol folder: model files, unit records, submitit's job folders.
MODELS, UNITS, JOBS = "models", "units", "jobs"

#: ``on_stage(stage, epoch, epochs)``: "train" after each epoch, then "evaluate".
StageCallback = Callable[[str, int, int], None]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


@dataclass(frozen=True)
class TrainingPlan:
    """One model a unit trains.

    Attributes
    ----------
    model : str
        Model file, relative to the protocol folder (``models/<candidate>-r<k>.safetensors``;
        an ensemble member ``models/<candidate>-r<k>-rater-<id>.safetensors``).
    config : softseg.config.TrainConfig
    rater : str or None
        An ensemble member: the one rater it trains on
        (:func:`softseg.protocol.ensemble.rater_view`); None trains on every rater (the
        configuration's fusion).
    """

    model: str
    config: Any
    rater: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "config": self.config.as_dict()}
        if self.rater is not None:  # records of single-model units keep their shape
            out["rater"] = self.rater
        return out


@dataclass(frozen=True)
class UnitPlan:
    """Everything one (candidate, repeat) unit needs; small and picklable (a job's argument).

    Attributes
    ----------
    candidate : str
        ``NAME`` or ``NAME:FUSION``.
    repeat : int
    dataset : str
        Absolute path of the dataset folder.
    out : str
        Absolute path of the protocol folder.
    split : dict of str -> tuple of str
        ``train``, ``val``, ``test`` subject names (the repeat's split, the same for every
        candidate).
    test_group : str or None
        Leave-one-group-out: the held-out group.
    ground_truth : str
        Key of :data:`softseg.protocol.GROUND_TRUTHS`.
    trainings : tuple of TrainingPlan
        The unit's model(s).
    threads : int or None
        torch CPU threads in the process that runs the unit (jobs); None keeps the process's
        setting.
    """

    candidate: str
    repeat: int
    dataset: str
    out: str
    split: Mapping[str, tuple[str, ...]]
    test_group: str | None
    ground_truth: str
    trainings: tuple[TrainingPlan, ...]
    threads: int | None = None

    @property
    def uid(self) -> str:
        """``candidate/r<k>``: the unit's key in ``run_state.json``."""
        return f"{self.candidate}/r{self.repeat}"

    @property
    def stem(self) -> str:
        """``<candidate>-r<k>`` with unsafe characters replaced: names the unit's files."""
        return f"{_safe(self.candidate)}-r{self.repeat}"

    @property
    def folder(self) -> Path:
        return Path(self.out)

    @property
    def record_path(self) -> Path:
        return self.folder / UNITS / f"{self.stem}.json"

    @property
    def error_path(self) -> Path:
        return self.folder / UNITS / f"{self.stem}.error.json"

    @property
    def lock_path(self) -> Path:
        return self.folder / UNITS / f"{self.stem}.lock"

    def model_paths(self) -> list[Path]:
        return [self.folder / t.model for t in self.trainings]

    def epochs(self) -> int:
        """Maximum epochs over the unit's trainings (progress)."""
        return sum(int(t.config.optim.epochs) for t in self.trainings)

    def as_dict(self) -> dict[str, Any]:
        """What makes a record valid for this plan (no absolute output path: folders move)."""
        return {
            "candidate": self.candidate, "repeat": self.repeat, "dataset": self.dataset,
            "split": {k: list(v) for k, v in self.split.items()}, "test_group": self.test_group,
            "ground_truth": self.ground_truth, "trainings": [t.as_dict() for t in self.trainings],
        }


def plan_units(info: Any, config: Any, *, out: str | os.PathLike,
               threads: int | None = None) -> list[UnitPlan]:
    """The plans of every unit of a protocol, repeat by repeat, candidates in the given order.

    Parameters
    ----------
    info : softseg.data.DatasetInfo
    config : softseg.protocol.ProtocolConfig
    out : path
        Protocol folder.
    threads : int, optional
        See :attr:`UnitPlan.threads`.

    Raises
    ------
    InputError
        A split without test subject, fewer than two groups with ``groups``; a rater ensemble
        on a dataset with fewer than two raters or a subject lacking a rater
        (:func:`softseg.protocol.ensemble.ensemble_raters`).
    """
    from softseg.data import split_subjects
    from softseg.protocol.ensemble import ENSEMBLE, ensemble_raters, member_model

    groups = {s.name: s.group for s in info.subjects}
    group_names = sorted({g for g in groups.values() if g is not None})
    if config.groups and len(group_names) < 2:
        raise InputError(
            f"--groups needs at least two subject groups in {Path(info.root) / 'dataset.json'}; "
            f"found {len(group_names)} ({', '.join(group_names) or 'none'})")
    out = Path(out).resolve()
    plans = []
    for repeat in range(config.repeats):
        test_group = group_names[repeat % len(group_names)] if config.groups else None
        for cand in config.candidates:
            tcfg = config.train_config(cand, repeat, test_group=test_group)
            split = split_subjects(info.names, val_fraction=tcfg.data.val_fraction,
                                   test_fraction=tcfg.data.test_fraction, groups=groups,
                                   test_group=test_group, seed=tcfg.seed)
            if not split.test:
                raise InputError(
                    f"split {repeat} has no test subject ({len(info.names)} subjects, test "
                    f"fraction {config.test_fraction}); add subjects or raise --test-fraction")
            stem = f"{_safe(cand)}-r{repeat}"
            if config.fusion_of(cand) == ENSEMBLE:
                trainings = tuple(
                    TrainingPlan(model=member_model(MODELS, stem, r), config=tcfg, rater=r)
                    for r in ensemble_raters(info, cand))
            else:
                trainings = (TrainingPlan(model=f"{MODELS}/{stem}.safetensors", config=tcfg),)
            plans.append(UnitPlan(
                candidate=cand, repeat=repeat, dataset=str(Path(info.root).resolve()),
                out=str(out), split={"train": split.train, "val": split.val, "test": split.test},
                test_group=test_group, ground_truth=config.ground_truth,
                trainings=trainings, threads=threads))
    return plans


# ------------------------------------------------------------------------------ running
@contextlib.contextmanager
def _unit_lock(plan: UnitPlan) -> Iterator[None]:
    """Wait for (and hold) the unit's lock, so that two processes never run one unit.

    File systems without ``flock`` support (some cluster mounts) run without the lock.
    """
    import filelock

    lock = filelock.FileLock(str(plan.lock_path), timeout=-1, is_singleton=False,
                             thread_local=False)
    try:
        lock.acquire()
    except OSError:  # ENOLCK / ENOSYS: no locking on this file system
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _check_model(path: Path, config: Any, rater: str | None = None) -> None:
    """Refuse a model file left by a run with other settings (it would be evaluated as ours)."""
    from softseg.modelfile import read_card

    card = read_card(path)
    saved = card.training.config
    if (saved is None or saved.as_dict() != config.as_dict()
            or (rater is not None and tuple(card.raters) != (rater,))):
        raise InputError(
            f"{path} was trained with other settings than this run's (an earlier run in this "
            "folder); use --overwrite to start over, or another --out")


def _stale_model(path: Path, candidate: str) -> bool:
    """True for a model file trained with another recipe than ``candidate`` has now (trained
    again: :func:`softseg.protocol.stale_units`)."""
    from softseg.candidates import trained_with_current_recipe
    from softseg.modelfile import read_card

    return not trained_with_current_recipe(read_card(path), candidate)


def _stale_checkpoint(path: Path, candidate: str) -> bool:
    """True for a training checkpoint of another recipe than ``candidate`` has now (a run
    interrupted before the name got another recipe: started over, not resumed)."""
    from softseg.candidates import checkpoint_recipe, get_candidate
    from softseg.training.checkpoint import read_checkpoint

    doc = read_checkpoint(path)[1]
    recorded = doc.get("recipe")
    was = checkpoint_recipe(doc["config"]["candidate"], recorded,
                            int(recorded["n_classes"]) if recorded is not None else 1)
    return was.recipe_key() != get_candidate(candidate).for_classes(was.n_classes).recipe_key()


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))


def _threads_now() -> int:
    import torch

    return int(torch.get_num_threads())


def run_unit(
    plan: UnitPlan,
    *,
    on_stage: StageCallback | None = None,
    cancel: Any = None,
) -> dict[str, Any]:
    """Train and evaluate one unit, write its record, return it (module-level: jobs run it).

    Parameters
    ----------
    plan : UnitPlan
    on_stage : callable(stage, epoch, epochs), optional
        ``("train", e, E)`` after each epoch of the unit, ``("evaluate", E, E)`` before the
        evaluation.
    cancel : object with ``is_set()``, optional
        Stops the training at the next step (a checkpoint is kept; see
        :class:`softseg.training.Trainer`).

    Returns
    -------
    dict
        The record (:class:`UnitRecord` as JSON-safe data).

    Raises
    ------
    InputError
        Bad data, a model file of other settings, a training that failed (NaN loss, out of
        memory: the trainer's one-line message).
    """
    from softseg.data import scan_dataset
    from softseg.events import EpochEvent
    from softseg.io import write_json
    from softseg.protocol.ensemble import rater_view
    from softseg.training import checkpoint_path, fit

    plan.record_path.parent.mkdir(parents=True, exist_ok=True)
    with _unit_lock(plan):
        done = read_record(plan.record_path, plan)
        if done is not None:  # finished by another process meanwhile (or earlier)
            return done
        _set_threads(plan.threads)
        info = scan_dataset(plan.dataset)
        total = plan.epochs()
        offset = 0
        t0 = time.perf_counter()
        for training in plan.trainings:
            path = plan.folder / training.model
            path.parent.mkdir(parents=True, exist_ok=True)
            epochs = int(training.config.optim.epochs)
            if path.exists() and not _stale_model(path, training.config.candidate):
                _check_model(path, training.config, training.rater)
            else:  # none yet, or one trained before its candidate's name got another recipe
                resume = (checkpoint_path(path).exists()
                          and not _stale_checkpoint(checkpoint_path(path), training.config.candidate))

                def on_event(event: Any, _offset: int = offset) -> None:
                    if on_stage is not None and isinstance(event, EpochEvent):
                        on_stage("train", _offset + int(event.epoch), total)

                data = info if training.rater is None else rater_view(info, training.rater)
                fit(data, training.config, out=path, resume=resume, overwrite=not resume,
                    on_event=on_event, cancel=cancel)
            offset += epochs
        train_s = time.perf_counter() - t0
        if on_stage is not None:
            on_stage("evaluate", total, total)
        record = _evaluate(plan, info)
        record["train_seconds"] = round(train_s, 2)
        record["torch_threads"] = _threads_now()
        record = compare.json_safe(record)
        write_json(plan.record_path, record, overwrite=True)
        with contextlib.suppress(FileNotFoundError):
            plan.error_path.unlink()
        return record


def unit_prediction(loaded: Sequence[Any], data: Any) -> np.ndarray:
    """The unit's soft prediction of one subject (display order).

    Parameters
    ----------
    loaded : sequence of softseg.modelfile.LoadedModel
        The unit's models (one; a rater ensemble: one per rater).
    data : softseg.data.SubjectData

    Returns
    -------
    ndarray, float32
        One model: its prediction (:func:`softseg.protocol.predict_subject`); several: the
        voxel-wise mean of theirs (:func:`softseg.protocol.ensemble.mean_prediction`).
        ``(S, H, W)`` or ``(K+1, S, H, W)``.
    """
    from softseg.protocol.ensemble import mean_prediction

    if len(loaded) == 1:
        return predict_subject(loaded[0], data)
    return mean_prediction([predict_subject(m, data) for m in loaded])


class UnitEvaluation:
    """The evaluation part of a unit's record, one test subject at a time.

    Parameters
    ----------
    candidate : str
        For error messages.
    classes : sequence of str
        The model's classes (one: single-class evaluation).
    thresholds : sequence of float
        The model's optimal threshold per class (binarisation of each class map).
    """

    def __init__(self, candidate: str, classes: Sequence[str], thresholds: Sequence[float]) -> None:
        self.candidate = candidate
        self.classes = tuple(classes)
        self.thresholds = [float(t) for t in thresholds]
        self.rows: dict[str, dict[str, Any]] = {}
        self.curves: list[compare.Curves] = []
        self.class_rows: dict[str, dict[str, Any]] = {c: {} for c in self.classes}
        self.class_curves: dict[str, list[compare.Curves]] = {c: [] for c in self.classes}

    def add(self, subject: str, prediction: np.ndarray, reference: np.ndarray, *,
            spacing: Sequence[float], raters: np.ndarray | None = None, label: str = "") -> None:
        """Evaluate one subject.

        Parameters
        ----------
        subject : str
        prediction : ndarray
            ``(S, H, W)`` in [0, 1] (one class), or ``(K+1 | K, S, H, W)`` class probabilities.
        reference : ndarray
            Soft or binary ``(S, H, W)`` (one class); K classes: integer labels 0..K.
        spacing : sequence of 3 float (mm)
        raters : ndarray (R, S, H, W), optional
            One class: the raters (their average is the Brier / entropy reference).
        label : str
            The subject's name in the plot data.
        """
        if len(self.classes) == 1:
            row, c = compare.evaluate_subject(prediction, reference, threshold=self.thresholds[0],
                                              raters=raters, spacing=spacing,
                                              name=self.candidate, subject=label or subject)
            self.rows[subject] = row
            self.curves.append(c)
            return
        ce, cc = compare.evaluate_subject_classes(prediction, reference, classes=self.classes,
                                                  thresholds=self.thresholds, spacing=spacing,
                                                  subject=label or subject)
        self.rows[subject] = dict(ce.overall)
        for c in ce.classes:
            self.class_rows[c][subject] = dict(ce.per_class[c])
            self.class_curves[c].append(cc[c])

    def record(self) -> dict[str, Any]:
        """``subjects``, ``curves`` and ``classes`` of :class:`UnitRecord` (not yet JSON-safe)."""
        single = len(self.classes) == 1
        return {
            "subjects": dict(self.rows),
            "curves": compare.pool_curves(self.curves).as_dict() if single else None,
            "classes": {} if single else {
                c: {"subjects": self.class_rows[c],
                    "curves": compare.pool_curves(self.class_curves[c]).as_dict()}
                for c in self.classes},
        }


def _evaluate(plan: UnitPlan, info: Any) -> dict[str, Any]:
    from softseg.data import load_subject
    from softseg.modelfile import load_model
    from softseg.protocol.models import class_reference

    loaded = [load_model(p) for p in plan.model_paths()]
    card = loaded[0].card
    classes = tuple(card.classes)
    others = [m.path for m in loaded if tuple(m.card.classes) != classes]
    if others:
        raise InputError(f"the models of {plan.uid} predict different classes ({others[0]} vs "
                         f"{loaded[0].path}); use --overwrite to start over")
    thresholds = (tuple(card.thresholds) if len(loaded) == 1
                  else _ensemble_thresholds(plan, info, loaded, len(classes)))
    ev = UnitEvaluation(plan.candidate, classes, thresholds)
    for name in plan.split["test"]:
        subject = info.subject(name)
        data = load_subject(subject)
        pred = unit_prediction(loaded, data)
        if len(classes) == 1:
            ref = ground_truth(subject, data, plan.ground_truth)
            raters = data.raters if data.raters.shape[0] > 1 else None
        else:
            ref = class_reference(subject, data, plan.ground_truth, classes, info=info)
            raters = None
        ev.add(name, pred, ref, spacing=data.spacing, raters=raters,
               label=f"{name} (r{plan.repeat})")
    return {
        "candidate": plan.candidate, "repeat": plan.repeat,
        "model": plan.trainings[0].model, "models": [t.model for t in plan.trainings],
        "threshold": float(thresholds[0]) if len(classes) == 1 else None,
        "thresholds": [float(t) for t in thresholds],
        "members": len(loaded),
        "member_raters": [t.rater for t in plan.trainings if t.rater is not None],
        "split": {k: list(v) for k, v in plan.split.items()}, "test_group": plan.test_group,
        "train_seconds": 0.0, **ev.record(), "plan": plan.as_dict(),
    }


def _ensemble_thresholds(plan: UnitPlan, info: Any, loaded: Sequence[Any],
                         n_classes: int) -> tuple[float, ...]:
    """The averaged map's optimal threshold(s) on the unit's training + validation subjects."""
    from softseg.data import load_subject
    from softseg.protocol.ensemble import ensemble_thresholds

    preds, raters = [], []
    for name in (*plan.split["train"], *plan.split["val"]):
        data = load_subject(info.subject(name))
        preds.append(unit_prediction(loaded, data))
        raters.append(data.raters)
    return ensemble_thresholds(preds, raters, n_classes=n_classes)
