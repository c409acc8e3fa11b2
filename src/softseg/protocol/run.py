"""The papers' repeated-training protocol: plan the units, run them (any executor), report.

:func:`run_protocol` trains every candidate ``repeats`` times, repeat *k* on split *k* (random,
or leave-one-group-out cycling through the ``dataset.json`` groups), the same split for every
candidate so that samples are paired; each model is evaluated on its split's test subjects;
the table reports mean ± std over repeats and a two-sided Wilcoxon signed-rank test of each
candidate against a reference candidate.

The run is resumable. ``OUT/run_state.json`` records the settings, every finished
(candidate, repeat) unit (its record: per-subject metrics and plot data), the jobs submitted and
the failures. A second call with ``resume=True``

* merges the records of units finished after the parent stopped (jobs outlive their parent),
* skips finished units; a unit with a model but no record is only evaluated; an interrupted
  training continues from its checkpoint;
* resubmits units whose job failed or died, reporting what happened to them (``"resubmit"``),
* waits for Slurm jobs of the interrupted run that still run (``"attach"``) instead of
  submitting them again (a local job that still runs is waited for through the unit's lock).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from softseg import compare
from softseg.errors import InputError
from softseg.io import write_json
from softseg.protocol.config import Progress, ProtocolConfig, ProtocolResult
from softseg.protocol.ensemble import ENSEMBLE
from softseg.protocol.executors import ExecutorConfig, job_threads
from softseg.protocol.reference import GROUND_TRUTHS, parse_candidate
from softseg.protocol.running import Failure, run_jobs, run_serial
from softseg.protocol.records import read_record, stale_units
from softseg.protocol.units import JOBS, MODELS, UNITS, UnitPlan, plan_units

__all__ = ["STATE_FILE", "run_protocol"]

STATE_FILE = "run_state.json"
_STATE_VERSION = 1
_LOCK_FILE = ".protocol.lock"


def run_protocol(
    dataset: str | os.PathLike,
    config: ProtocolConfig,
    *,
    out: str | os.PathLike,
    executor: ExecutorConfig | None = None,
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
        Report folder: ``run_state.json``, ``models/``, ``units/`` (one record per finished
        unit), ``jobs/`` (submitit's files and logs), ``index.html``, CSV, JSON, figures.
    executor : ExecutorConfig, optional
        Where the units run (default: serially in this process). Any executor gives the same
        records, hence the same table; a run may be resumed with another executor.
    resume : bool
        Continue the run recorded in ``out/run_state.json`` (same settings required).
    overwrite : bool
        Start over in a folder that already holds a run (its models, records and job files
        are deleted first).
    on_progress : callable(Progress), optional

    Returns
    -------
    ProtocolResult

    Raises
    ------
    InputError
        Bad settings, an executor this machine cannot use, a folder holding another run or in
        use by another process, too few groups, dataset problems; units whose jobs failed (one
        line listing them, after the finished units were recorded: ``resume`` resubmits them).
    KeyboardInterrupt
        Ctrl-C; the jobs in flight are cancelled first.
    """
    from softseg.candidates import get_candidate
    from softseg.data import FUSIONS, scan_dataset

    executor = executor or ExecutorConfig()
    for spec in config.candidates:  # every name checked before the first training starts
        name, _ = parse_candidate(spec)
        get_candidate(name)
        fusion = config.fusion_of(spec)
        if fusion not in FUSIONS and fusion != ENSEMBLE:
            raise InputError(f"unknown fusion {fusion!r} in {spec!r}; choose one of "
                             f"{', '.join(FUSIONS)}, or {ENSEMBLE} (one model per rater)")
    executor.check_available()
    out = Path(out)
    info = scan_dataset(dataset)
    n_units = len(config.candidates) * config.repeats
    threads = job_threads(executor, device=config.device, n_units=n_units)
    plans = plan_units(info, config, out=out, threads=threads)

    state_path = out / STATE_FILE
    settings = {"version": _STATE_VERSION, "dataset": str(Path(dataset).resolve()),
                "config": config.as_dict()}
    existing = state_path.exists()
    if existing and not overwrite:
        state = _load_state(state_path, settings, out, resume=resume)
    else:
        state = dict(settings, units={})
    out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out):
        if existing and overwrite:
            for sub in (MODELS, UNITS, JOBS):
                shutil.rmtree(out / sub, ignore_errors=True)
        for sub in (MODELS, UNITS):
            (out / sub).mkdir(exist_ok=True)
        state.setdefault("jobs", {})
        state.setdefault("failures", {})
        state["executor"] = executor.as_dict()

        def save() -> None:
            write_json(state_path, compare.json_safe(state), overwrite=True)

        def record_unit(plan: UnitPlan, record: Mapping[str, Any]) -> None:
            state["units"][plan.uid] = dict(record)
            state["failures"].pop(plan.uid, None)
            save()

        def record_job(plan: UnitPlan, job_id: str, log: str) -> None:
            state["jobs"][plan.uid] = {"executor": executor.kind, "job_id": job_id, "log": log}
            save()

        report = on_progress or (lambda p: None)
        for plan in plans:  # units finished after their parent stopped
            if plan.uid not in state["units"]:
                record = read_record(plan.record_path, plan)
                if record is not None:
                    state["units"][plan.uid] = record
                    state["failures"].pop(plan.uid, None)
        # a unit trained before its candidate's name got another recipe is trained again
        stale = stale_units(out, state["units"])
        for uid, why in stale.items():
            del state["units"][uid]
            state["failures"][uid] = {"job_id": None, "reason": why, "log": None}
        save()
        total = len(plans)
        todo = [p for p in plans if p.uid not in state["units"]]
        done = total - len(todo)
        adopted = _adopt_slurm_jobs(todo, state, out, executor)
        for plan in todo:
            if plan.uid in adopted:
                report(Progress(done, total, plan.candidate, plan.repeat, "attach",
                                message=f"job {state['jobs'][plan.uid]['job_id']} still runs"))
            elif plan.uid in state["failures"] or plan.uid in state["jobs"]:
                why = state["failures"].get(plan.uid, {}).get("reason") or (
                    f"its job {state['jobs'][plan.uid]['job_id']} did not finish (the run was "
                    "interrupted)")
                report(Progress(done, total, plan.candidate, plan.repeat, "resubmit", message=why))
        if not todo:
            failures = []
        elif executor.jobs:
            failures = run_jobs(todo, executor, folder=out / JOBS, device=config.device,
                                done=done, total=total, on_record=record_unit,
                                on_job=record_job, report=report, adopted=adopted)
        else:
            failures = run_serial(todo, done=done, total=total, on_record=record_unit,
                                  report=report)
        if failures:
            _record_failures(state, failures)
            save()
            raise InputError(_failure_message(failures, total, out))
        return _finish(out, config, state, info)


def _load_state(state_path: Path, settings: Mapping[str, Any], out: Path, *, resume: bool) -> dict:
    from softseg.schema import load_json

    state = load_json(state_path, what="comparison run state")
    if not isinstance(state, dict) or not isinstance(state.get("units"), dict):
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
    return state


class _run_lock:
    """One parent per protocol folder (a second ``softseg compare --train`` there is refused)."""

    def __init__(self, out: Path) -> None:
        import filelock

        self.path = out / _LOCK_FILE
        self.lock = filelock.FileLock(str(self.path), timeout=0, is_singleton=False,
                                      thread_local=False)

    def __enter__(self) -> None:
        import filelock

        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise InputError(
                f"{self.path.parent}: another softseg compare --train is running this protocol "
                f"(lock {self.path.name}); wait for it to end, or use another --out") from None
        except OSError:  # a file system without locks: run unprotected
            self.lock = None

    def __exit__(self, *exc: Any) -> None:
        if self.lock is not None:
            self.lock.release()


def _adopt_slurm_jobs(todo: Sequence[UnitPlan], state: Mapping[str, Any], out: Path,
                      executor: ExecutorConfig) -> dict[str, Any]:
    """Slurm jobs of an interrupted run that are still pending or running, by unit id."""
    if executor.kind != "slurm":
        return {}
    import submitit

    adopted = {}
    for plan in todo:
        job = state["jobs"].get(plan.uid)
        if not job or job.get("executor") != "slurm":
            continue
        sjob = submitit.SlurmJob(folder=out / JOBS, job_id=str(job["job_id"]))
        try:
            finished = sjob.done(force_check=True)
        except Exception:  # noqa: BLE001 - sacct unreachable: submit again (the lock protects)
            finished = True
        if not finished:
            adopted[plan.uid] = sjob
    return adopted


def _record_failures(state: dict, failures: Sequence[Failure]) -> None:
    for f in failures:
        state["failures"][f.plan.uid] = {"job_id": f.job_id, "reason": f.reason, "log": f.log}


def _failure_message(failures: Sequence[Failure], total: int, out: Path) -> str:
    shown = "; ".join(f.line() for f in failures[:3])
    more = f"; and {len(failures) - 3} more (see {out / STATE_FILE})" if len(failures) > 3 else ""
    return (f"{len(failures)} of {total} units failed: {shown}{more}. The finished units are "
            f"kept; fix the cause and run again with --resume to resubmit only these")


# ------------------------------------------------------------------------------ report
def _repeat_row(subject_rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    # the repeat's value: mean over its test subjects; an infinite value (empty-mask limit)
    # makes it infinite instead of being dropped (compare.summary_mean)
    return {m: compare.summary_mean([compare.number(r.get(m)) for r in subject_rows])[0]
            for m in keys}


def _finish(out: Path, config: ProtocolConfig, state: Mapping[str, Any],
            info: Any) -> ProtocolResult:
    rows: dict[str, list[dict[str, float]]] = {c: [] for c in config.candidates}
    curves: dict[str, list[compare.Curves]] = {c: [] for c in config.candidates}
    class_rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    class_curves: dict[str, dict[str, list[compare.Curves]]] = {}
    for k in range(config.repeats):
        for cand in config.candidates:
            unit = state["units"][f"{cand}/r{k}"]
            subject_rows = list(unit["subjects"].values())
            if unit.get("classes"):
                keys = [m for m in compare.METRICS if any(m in r for r in subject_rows)]
                for cname, part in unit["classes"].items():
                    mean = _repeat_row(list(part["subjects"].values()), list(compare.METRICS))
                    mean["sample"] = f"repeat {k}"
                    class_rows.setdefault(cname, {c: [] for c in config.candidates})
                    class_curves.setdefault(cname, {c: [] for c in config.candidates})
                    class_rows[cname][cand].append(mean)
                    class_curves[cname][cand].append(compare.Curves.from_dict(part["curves"]))
            else:
                keys = list(compare.METRICS)
                curves[cand].append(compare.Curves.from_dict(unit["curves"]))
            mean = _repeat_row(subject_rows, keys)
            mean["sample"] = f"repeat {k}"
            rows[cand].append(mean)
    reference_name = GROUND_TRUTHS[config.ground_truth]
    per_class = {
        cname: compare.Comparison(
            rows=class_rows[cname],
            curves={c: compare.pool_curves(v) for c, v in class_curves[cname].items()},
            reference_name=f"{reference_name} ({cname})")
        for cname in class_rows}
    comparison = compare.Comparison(
        rows=rows, curves={c: compare.pool_curves(v) for c, v in curves.items() if v},
        reference_name=reference_name, per_class=per_class)
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
    notes.extend(_candidate_notes(config, state))
    meta = {"dataset": state["dataset"], "candidates": ", ".join(config.candidates),
            "repeats": config.repeats, "ground truth": reference_name,
            "epochs (max)": config.epochs, "crop": tuple(config.crop)}
    report = compare.write_report(out, comparison, summary=summary,
                                  title="SoftSeg candidates: repeated-training comparison",
                                  notes=notes, meta=meta)
    return ProtocolResult(comparison=comparison, summary=summary, report=report, state=dict(state))


def _candidate_notes(config: ProtocolConfig, state: Mapping[str, Any]) -> list[str]:
    """One line per candidate: its paper name and what it changes (from the registry); a rater
    ensemble says how many models it averages and on which raters they trained."""
    from softseg.candidates import CANDIDATES

    lines = []
    for spec in config.candidates:
        name, fusion = parse_candidate(spec)
        cand = CANDIDATES.get(name)
        if cand is None:
            continue
        if config.fusion_of(spec) == ENSEMBLE:
            unit = state["units"].get(f"{spec}/r0", {})
            raters = list(unit.get("member_raters") or [])
            extra = (f"; a rater ensemble of {len(raters)} models per repeat (raters "
                     f"{', '.join(raters)}), each trained on one rater's labels alone, their "
                     "probability maps averaged (the label-fusion paper's Conv-STAPLE-QUBIQ, "
                     "Ma 2020) and binarised at the averaged map's optimal threshold")
        else:
            extra = f", trained on the {fusion} fusion of the raters" if fusion else ""
        lines.append(f"{spec} = {cand.title}: {cand.description}{extra}")
    return lines
