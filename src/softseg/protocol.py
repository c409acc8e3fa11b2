"""Evaluate trained models on a dataset, and the papers' repeated-training protocol.

:func:`evaluate_models` runs each model file on a dataset's test subjects and builds a
:class:`softseg.compare.Comparison` (one sample per subject). :func:`run_protocol` reproduces
the SoftSeg / label-fusion evaluation: every candidate is trained ``repeats`` times, repeat *k*
on split *k* (random, or leave-one-group-out cycling through the ``dataset.json`` groups), the
same split for every candidate so that samples are paired; each model is evaluated on its
split's test subjects; the table reports mean ± std over repeats and a two-sided Wilcoxon
signed-rank test of each candidate against a reference candidate.

The run is resumable: ``OUT/run_state.json`` records the settings and every finished
(candidate, repeat) unit with its per-subject metrics and plot data; a second call with
``resume=True`` skips finished units and continues an interrupted training from its checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softseg import compare
from softseg.errors import InputError
from softseg.fusion.engine import METHODS as _FUSION_METHODS
from softseg.fusion.engine import training_fusions as _training_fusions
from softseg.io import load_volume, write_json

__all__ = [
    "GROUND_TRUTHS",
    "ProtocolConfig",
    "ProtocolResult",
    "Progress",
    "evaluate_models",
    "ground_truth",
    "parse_candidate",
    "run_protocol",
]

STATE_FILE = "run_state.json"
_STATE_VERSION = 1
#: What the overlap metrics compare against (a plain dict of descriptions).
#: The fusions come from the one registry (softseg.fusion.METHODS, their training target).
GROUND_TRUTHS = {
    **{k: _FUSION_METHODS[k].target for k in _training_fusions() if _FUSION_METHODS[k].fuses},
    "truth": "the subject's truth_soft.nii.gz (phantom datasets)",
}


# -------------------------------------------------------------------------------- subjects
def ground_truth(subject: Any, data: Any, method: str) -> np.ndarray:
    """The reference of one subject in display order, float32 in [0, 1].

    Parameters
    ----------
    subject : softseg.data.Subject
    data : softseg.data.SubjectData
    method : str
        A key of :data:`GROUND_TRUTHS`.
    """
    from softseg.fusion import training_target

    if method not in GROUND_TRUTHS:
        raise InputError(f"unknown ground truth {method!r}; choose one of {', '.join(GROUND_TRUTHS)}")
    if method == "truth":
        folder = Path(subject.images[0]).parent
        path = next((folder / n for n in ("truth_soft.nii.gz", "truth_soft.nii")
                     if (folder / n).exists()), None)
        if path is None:
            raise InputError(
                f"subject {subject.name!r} has no truth_soft.nii.gz; use --ground-truth staple "
                "(or average/majority) to compare against the raters")
        vol = load_volume(path, label=True)
        image_shape = tuple(data.geometry.from_display(data.images[0]).shape)
        if tuple(vol.shape) != image_shape:
            raise InputError(
                f"subject {subject.name!r}: {path.name} has shape {tuple(vol.shape)} but the image "
                f"has shape {image_shape}; the reference must cover the image's voxels")
        return np.asarray(data.geometry.to_display(vol.array), dtype=np.float32)
    if data.raters.shape[0] == 0:
        raise InputError(f"subject {subject.name!r} has no rater files to build a reference from")
    # fusion.fuse's target, as training uses it (STAPLE: its consensus, probability >= 0.5)
    return training_target(data.raters, method)[0]


def _predict(loaded: Any, data: Any) -> np.ndarray:
    from softseg.predict import predict_volume

    # predict_volume works in file axis order; SubjectData is in display order
    images = data.geometry.from_display(data.images)
    pred = predict_volume(loaded, images, affine=data.geometry.affine)
    return np.asarray(data.geometry.to_display(np.asarray(pred, dtype=np.float32)))


def parse_candidate(spec: str) -> tuple[str, str | None]:
    """``"softseg"`` -> ("softseg", None); ``"softseg:staple"`` -> ("softseg", "staple")."""
    name, _, fusion = spec.partition(":")
    if not name:
        raise InputError(f"bad candidate {spec!r}; write NAME or NAME:FUSION (e.g. softseg:staple)")
    return name, (fusion or None)


# -------------------------------------------------------------------------------- models
def evaluate_models(
    models: Sequence[str | os.PathLike],
    dataset: str | os.PathLike,
    *,
    subjects: Sequence[str] | None = None,
    ground_truth_method: str = "staple",
    thresholds: float | None = None,
    on_subject: Callable[[str, str], None] | None = None,
) -> tuple[compare.Comparison, dict[str, Any]]:
    """Evaluate model files on a dataset's test subjects.

    Parameters
    ----------
    models : sequence of path
        Two or more ``.safetensors`` model files.
    dataset : path
        Dataset folder.
    subjects : sequence of str, optional
        Subjects to evaluate; default: the test subjects recorded in the models (those every
        model lists as test), else the subjects none of the models trained or validated on.
    ground_truth_method : str
        Key of :data:`GROUND_TRUTHS`.
    thresholds : float, optional
        One common threshold; default: each model's optimal threshold.
    on_subject : callable(candidate, subject), optional
        Progress callback, called before each prediction.

    Returns
    -------
    comparison : Comparison
        One row per subject for each model.
    meta : dict
        Subjects, thresholds, model files.
    """
    from softseg.data import load_subject, scan_dataset
    from softseg.modelfile import load_model, read_card

    if len(models) < 2:
        raise InputError(f"comparing needs at least two models; got {len(models)}")
    metas = {str(m): read_card(m) for m in models}
    info = scan_dataset(dataset)
    if subjects is None:
        subjects = _default_subjects(metas, info.names)
    unknown = [s for s in subjects if s not in info.names]
    if unknown:
        raise InputError(f"no subject {', '.join(unknown)} in {dataset}; subjects: {', '.join(info.names)}")

    names = _candidate_names(models, metas)
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names.values()}
    curves: dict[str, list[compare.Curves]] = {n: [] for n in names.values()}
    loaded_models = {str(m): load_model(m) for m in models}
    used = {}
    for subject_name in subjects:
        subject = info.subject(subject_name)
        data = load_subject(subject)
        ref = ground_truth(subject, data, ground_truth_method)
        raters = data.raters if data.raters.shape[0] > 1 else None
        for path, loaded in loaded_models.items():
            cand = names[path]
            if on_subject is not None:
                on_subject(cand, subject_name)
            pred = _predict(loaded, data)
            t = float(thresholds) if thresholds is not None else float(loaded.threshold)
            used[cand] = t
            row, c = compare.evaluate_subject(pred, ref, threshold=t, raters=raters,
                                              spacing=data.spacing, name=cand, subject=subject_name)
            row["sample"] = subject_name
            rows[cand].append(row)
            curves[cand].append(c)
    comparison = compare.Comparison(
        rows=rows, curves={c: compare.pool_curves(v) for c, v in curves.items()},
        reference_name=GROUND_TRUTHS[ground_truth_method])
    meta = {"dataset": str(Path(dataset).resolve()), "subjects": list(subjects),
            "models": {names[p]: p for p in names}, "thresholds": used,
            "ground_truth": ground_truth_method}
    return comparison, meta


def _default_subjects(metas: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    tests, seen = [], set()
    for meta in metas.values():
        tests.append(set(meta.split.test))  # meta: the model's card (softseg.card.ModelCard)
        seen |= set(meta.split.train) | set(meta.split.val)
    common = set.intersection(*tests) if tests else set()
    chosen = sorted(s for s in common if s in names)
    if not chosen:
        chosen = sorted(s for s in names if s not in seen)
    if not chosen:
        raise InputError(
            "the models were trained or validated on every subject of the dataset, so none is a "
            "test subject; pass --subjects to evaluate on chosen subjects anyway")
    return chosen


def _candidate_names(models, metas) -> dict[str, str]:
    base = {}
    for m in models:
        meta = metas[str(m)]
        cand, fusion = meta.candidate.name, meta.fusion
        base[str(m)] = f"{cand}:{fusion}" if fusion else str(cand)
    if len(set(base.values())) == len(base):
        # drop the fusion suffix when every model used the same fusion
        fusions = {b.partition(":")[2] for b in base.values()}
        if len(fusions) == 1:
            short = {k: v.partition(":")[0] for k, v in base.items()}
            if len(set(short.values())) == len(short):
                return short
        return base
    return {str(m): Path(m).name.removesuffix(".safetensors") for m in models}


# -------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of a repeated-training comparison (stored in ``run_state.json``).

    Attributes
    ----------
    candidates : tuple of str
        ``NAME`` or ``NAME:FUSION`` (fusion of the raters for training, e.g. ``softseg:staple``).
    repeats : int
        Trainings per candidate (one split each).
    groups : bool
        Leave-one-group-out splits cycling through the ``dataset.json`` groups (SCGM protocol).
    reference : str or None
        Candidate the Wilcoxon test compares every other one with.
    stats : bool
        Run the Wilcoxon test (needs ``repeats >= min_wilcoxon_pairs(alpha)``).
    alpha : float
    test_fraction, val_fraction : float
        Random splits (``groups=False``).
    seed : int
        Repeat *k* uses seed ``seed + k`` (split, initialisation, augmentation).
    ground_truth : str
        Key of :data:`GROUND_TRUTHS` for evaluation.
    epochs, patience, batch_size, crop, width, depth, lr, fusion, device
        Training settings (:class:`softseg.config.TrainConfig`); ``fusion`` is the default for
        candidates without ``:FUSION``.
    """

    candidates: tuple[str, ...]
    repeats: int
    groups: bool = False
    reference: str | None = "softseg"
    stats: bool = True
    alpha: float = 0.05
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    ground_truth: str = "staple"
    epochs: int = 200
    patience: int = 50
    batch_size: int = 8
    crop: tuple[int, int] = (128, 128)
    width: int = 32
    depth: int = 3
    lr: float = 1e-3
    fusion: str = "average"
    device: str = "auto"

    def __post_init__(self) -> None:
        if len(self.candidates) < 2:
            raise InputError(
                f"comparing needs at least two candidates; got {len(self.candidates)} "
                f"({', '.join(self.candidates) or 'none'})")
        if len(set(self.candidates)) != len(self.candidates):
            raise InputError(f"a candidate is listed twice: {', '.join(self.candidates)}")
        for spec in self.candidates:
            parse_candidate(spec)
        if self.ground_truth not in GROUND_TRUTHS:
            raise InputError(f"unknown ground truth {self.ground_truth!r}; choose one of "
                             f"{', '.join(GROUND_TRUTHS)}")
        if int(self.repeats) != self.repeats or self.repeats < 1:
            raise InputError(f"--repeats must be a positive integer; got {self.repeats}")
        if self.stats:
            need = compare.min_wilcoxon_pairs(self.alpha)
            if self.repeats < need:
                raise InputError(
                    f"--repeats {self.repeats} is too few for the Wilcoxon test: with n paired "
                    f"repeats the smallest two-sided exact p-value is 2/2^n, which is below "
                    f"{self.alpha} only from n = {need} (n = {need - 1} gives "
                    f"{2 / 2 ** (need - 1):.4g}); use --repeats {need} or more, or --no-stats")
            if self.reference is None:
                raise InputError("the Wilcoxon test needs a reference candidate (--reference)")
            if self.reference not in self.candidates:
                raise InputError(
                    f"reference candidate {self.reference!r} is not among the candidates "
                    f"({', '.join(self.candidates)}); pick one of them with --reference")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = list(self.candidates)
        d["crop"] = list(self.crop)
        return d

    def train_config(self, candidate: str, repeat: int, *, test_group: str | None) -> Any:
        from softseg.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

        name, fusion = parse_candidate(candidate)
        return TrainConfig(
            candidate=name,
            seed=self.seed + repeat,
            device=self.device,
            data=DataConfig(crop=tuple(self.crop), fusion=fusion or self.fusion,
                            val_fraction=self.val_fraction,
                            test_fraction=0.0 if test_group else self.test_fraction,
                            test_group=test_group),
            model=ModelConfig(depth=self.depth, width=self.width),
            optim=OptimConfig(lr=self.lr, batch_size=self.batch_size, epochs=self.epochs,
                              patience=self.patience),
        )


@dataclass(frozen=True)
class Progress:
    """One progress report of :func:`run_protocol`.

    ``done``/``total`` count (candidate, repeat) units; ``fraction`` also counts the epochs of
    the unit being trained, so a progress bar moves smoothly over the whole run.
    """

    done: int
    total: int
    candidate: str
    repeat: int
    stage: str  # "train", "evaluate", "skip", "finished"
    epoch: int = 0
    epochs: int = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        # training counts for 90% of a unit, evaluation for the rest
        within = 0.9 * self.epoch / self.epochs if self.epochs else 0.0
        if self.stage == "evaluate":
            within = 0.9
        return min(1.0, (self.done + within) / self.total) if self.total else 1.0


@dataclass(frozen=True, eq=False)
class ProtocolResult:
    """Result of :func:`run_protocol`: the per-repeat comparison, its summary, the report."""

    comparison: compare.Comparison
    summary: compare.Summary
    report: Path
    state: dict[str, Any] = field(default_factory=dict)


def _unit_id(candidate: str, repeat: int) -> str:
    return f"{candidate}/r{repeat}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def run_protocol(
    dataset: str | os.PathLike,
    config: ProtocolConfig,
    *,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> ProtocolResult:
    """Train every candidate ``repeats`` times on paired splits, evaluate, test, report.

    Parameters
    ----------
    dataset : path
        Dataset folder (:mod:`softseg.data` layout).
    config : ProtocolConfig
    out : path
        Report folder: ``run_state.json``, ``models/``, ``index.html``, CSV, JSON, figures.
    resume : bool
        Continue the run recorded in ``out/run_state.json`` (same settings required).
    overwrite : bool
        Start over in a folder that already holds a run.
    on_progress : callable(Progress), optional

    Returns
    -------
    ProtocolResult

    Raises
    ------
    InputError
        Bad settings, a folder holding another run, too few groups, dataset problems.
    """
    from softseg.data import load_subject, scan_dataset, split_subjects
    from softseg.events import EpochEvent
    from softseg.modelfile import load_model
    from softseg.training import checkpoint_path, fit

    from softseg.candidates import get_candidate
    from softseg.data import FUSIONS

    for spec in config.candidates:  # every name checked before the first training starts
        name, fusion = parse_candidate(spec)
        get_candidate(name)
        if (fusion or config.fusion) not in FUSIONS:
            raise InputError(f"unknown fusion {fusion or config.fusion!r} in {spec!r}; choose "
                             f"one of {', '.join(FUSIONS)}")
    out = Path(out)
    info = scan_dataset(dataset)
    groups = {s.name: s.group for s in info.subjects}
    group_names = sorted({g for g in groups.values() if g is not None})
    if config.groups and len(group_names) < 2:
        raise InputError(
            f"--groups needs at least two subject groups in {Path(dataset) / 'dataset.json'}; "
            f"found {len(group_names)} ({', '.join(group_names) or 'none'})")

    state_path = out / STATE_FILE
    settings = {"version": _STATE_VERSION, "dataset": str(Path(dataset).resolve()),
                "config": config.as_dict()}
    if state_path.exists() and not overwrite:
        from softseg.schema import load_json

        state = load_json(state_path, what="comparison run state")
        if not isinstance(state, dict):
            raise InputError(f"{state_path}: not a comparison run state; use --overwrite")
        if not resume:
            raise InputError(
                f"{out} already holds a comparison run ({STATE_FILE}); add --resume to continue "
                "it or --overwrite to start over")
        saved = {k: state.get(k) for k in settings}
        if saved != settings:
            diff = [k for k in settings["config"]
                    if (state.get("config") or {}).get(k) != settings["config"][k]]
            raise InputError(
                f"{out} holds a run with other settings ({', '.join(diff) or 'dataset'} differ); "
                "resume with the same options, or use another --out / --overwrite")
    else:
        state = dict(settings, units={})
    out.mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    write_json(state_path, state, overwrite=True)

    units = [(k, c) for k in range(config.repeats) for c in config.candidates]
    total = len(units)
    done = sum(1 for k, c in units if _unit_id(c, k) in state["units"])
    cache: dict[int, dict[str, Any]] = {}

    def report(p: Progress) -> None:
        if on_progress is not None:
            on_progress(p)

    for repeat, cand in units:
        uid = _unit_id(cand, repeat)
        if uid in state["units"]:
            continue
        test_group = group_names[repeat % len(group_names)] if config.groups else None
        tcfg = config.train_config(cand, repeat, test_group=test_group)
        split = split_subjects(info.names, val_fraction=tcfg.data.val_fraction,
                               test_fraction=tcfg.data.test_fraction, groups=groups,
                               test_group=test_group, seed=tcfg.seed)
        if not split.test:
            raise InputError(
                f"split {repeat} has no test subject ({len(info.names)} subjects, test fraction "
                f"{config.test_fraction}); add subjects or raise --test-fraction")
        model_path = out / "models" / f"{_safe(cand)}-r{repeat}.safetensors"
        t0 = time.perf_counter()
        if not model_path.exists():
            resume_training = checkpoint_path(model_path).exists()
            report(Progress(done, total, cand, repeat, "train", 0, config.epochs))

            def on_event(event, _cand=cand, _repeat=repeat):
                if isinstance(event, EpochEvent):
                    report(Progress(done, total, _cand, _repeat, "train", int(event.epoch),
                                    int(event.epochs)))

            fit(info, tcfg, out=model_path, resume=resume_training,
                overwrite=not resume_training, on_event=on_event)
        train_s = time.perf_counter() - t0
        report(Progress(done, total, cand, repeat, "evaluate", config.epochs, config.epochs))
        loaded = load_model(model_path)
        if repeat not in cache:
            cache.clear()
            cache[repeat] = {}
        rows, curves = [], []
        for name in split.test:
            if name not in cache[repeat]:
                subject = info.subject(name)
                data = load_subject(subject)
                cache[repeat][name] = (data, ground_truth(subject, data, config.ground_truth))
            data, ref = cache[repeat][name]
            pred = _predict(loaded, data)
            raters = data.raters if data.raters.shape[0] > 1 else None
            row, c = compare.evaluate_subject(pred, ref, threshold=loaded.threshold,
                                              raters=raters, spacing=data.spacing, name=cand,
                                              subject=f"{name} (r{repeat})")
            rows.append(row)
            curves.append(c)
        pooled = compare.pool_curves(curves)
        state["units"][uid] = {
            "candidate": cand, "repeat": repeat, "model": str(model_path.relative_to(out)),
            "threshold": loaded.threshold, "split": split.as_dict(), "test_group": test_group,
            "train_seconds": round(train_s, 2),
            "subjects": {n: r for n, r in zip(split.test, rows)},
            "curves": pooled.as_dict(),
        }
        write_json(state_path, compare.json_safe(state), overwrite=True)
        done += 1
        report(Progress(done, total, cand, repeat, "finished"))

    return _finish(out, config, state, info)


def _finish(out: Path, config: ProtocolConfig, state: Mapping[str, Any], info: Any) -> ProtocolResult:
    rows: dict[str, list[dict[str, float]]] = {c: [] for c in config.candidates}
    curves: dict[str, list[compare.Curves]] = {c: [] for c in config.candidates}
    for k in range(config.repeats):
        for cand in config.candidates:
            unit = state["units"][_unit_id(cand, k)]
            subject_rows = list(unit["subjects"].values())
            # the repeat's value: mean over its test subjects; an infinite value (empty-mask
            # limit) makes it infinite instead of being dropped (compare.summary_mean)
            mean = {m: compare.summary_mean([compare.number(r.get(m)) for r in subject_rows])[0]
                    for m in compare.METRICS}
            mean["sample"] = f"repeat {k}"
            rows[cand].append(mean)
            curves[cand].append(compare.Curves.from_dict(unit["curves"]))
    comparison = compare.Comparison(
        rows=rows, curves={c: compare.pool_curves(v) for c, v in curves.items()},
        reference_name=GROUND_TRUTHS[config.ground_truth])
    summary = compare.summarize(rows, reference=config.reference if config.stats else None,
                                alpha=config.alpha, unit="repeats")
    split_kind = ("leave-one-group-out splits cycling through groups "
                  + ", ".join(sorted({u["test_group"] for u in state["units"].values()
                                      if u.get("test_group")}))
                  if config.groups else
                  f"random splits (test fraction {config.test_fraction}, validation "
                  f"{config.val_fraction})")
    notes = [
        f"{config.repeats} trainings per candidate on {split_kind}; repeat k uses seed "
        f"{config.seed}+k and the same split for every candidate (paired samples).",
        "Each repeat's value is the mean over its test subjects; the table gives mean ± std "
        "over repeats; overlap metrics at each model's optimal threshold (Dice on "
        "training+validation images, 0.05 to 0.95 step 0.05).",
    ]
    if not config.stats:
        notes.append("Statistics disabled (--no-stats): no Wilcoxon test was run.")
    notes.extend(_candidate_notes(config.candidates))
    meta = {"dataset": state["dataset"], "candidates": ", ".join(config.candidates),
            "repeats": config.repeats, "ground truth": GROUND_TRUTHS[config.ground_truth],
            "epochs (max)": config.epochs, "crop": tuple(config.crop)}
    report = compare.write_report(out, comparison, summary=summary,
                                  title="SoftSeg candidates: repeated-training comparison",
                                  notes=notes, meta=meta)
    return ProtocolResult(comparison=comparison, summary=summary, report=report, state=dict(state))


def _candidate_notes(specs: Sequence[str]) -> list[str]:
    """One line per candidate: its paper name and what it changes (from the registry)."""
    from softseg.candidates import CANDIDATES

    lines = []
    for spec in specs:
        name, fusion = parse_candidate(spec)
        cand = CANDIDATES.get(name)
        if cand is not None:
            extra = f", trained on the {fusion} fusion of the raters" if fusion else ""
            lines.append(f"{spec} = {cand.title}: {cand.description}{extra}")
    return lines
