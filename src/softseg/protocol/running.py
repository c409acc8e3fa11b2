"""Running the units: one after another here (:func:`run_serial`), or as submitit jobs that
the parent watches (:func:`run_jobs`). See :mod:`softseg.protocol.executors` for the executors.

The parent never unpickles a job's result: it polls the jobs' states
(:meth:`submitit.Job.done`; Slurm states come from ``sacct``, throttled by submitit), reads each
unit's record when its job ends, and for a job that ended without one reads the unit's error
record (written by the job) or says how the job ended and where its log is. Progress inside a
running job comes from the history CSV the trainer rewrites after every epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softseg.protocol.config import Progress
from softseg.protocol.executors import (
    POLL_S,
    ExecutorConfig,
    build_executor,
    local_layout,
    submit_array,
)
from softseg.protocol.records import read_error, read_record
from softseg.protocol.units import UnitPlan, run_unit

__all__ = ["Failure", "run_jobs", "run_serial"]


@dataclass(frozen=True)
class Failure:
    """A unit whose job ended without a record."""

    plan: UnitPlan
    job_id: str
    reason: str
    log: str | None

    def line(self) -> str:
        where = f"; log {self.log}" if self.log else ""
        return f"{self.plan.uid} (job {self.job_id}): {self.reason}{where}"


RecordCallback = Callable[[UnitPlan, dict], None]
JobCallback = Callable[[UnitPlan, str, str], None]
ReportCallback = Callable[[Progress], None]


def run_serial(plans: Sequence[UnitPlan], *, done: int, total: int,
               on_record: RecordCallback, report: ReportCallback) -> list[Failure]:
    """Run ``plans`` one after another in this process (an error stops the run, as before)."""
    for plan in plans:
        report(Progress(done, total, plan.candidate, plan.repeat, "train", 0, plan.epochs()))

        def on_stage(stage: str, epoch: int, epochs: int, _p: UnitPlan = plan,
                     _done: int = done) -> None:
            report(Progress(_done, total, _p.candidate, _p.repeat, stage, epoch, epochs))

        record = run_unit(plan, on_stage=on_stage)
        on_record(plan, record)
        done += 1
        report(Progress(done, total, plan.candidate, plan.repeat, "finished"))
    return []


def _epochs_done(plan: UnitPlan) -> int:
    """Epochs finished so far (the history CSVs the trainer rewrites after every epoch)."""
    from softseg.training.callbacks import history_path

    n = 0
    for t, path in zip(plan.trainings, plan.model_paths()):
        if path.exists():
            n += int(t.config.optim.epochs)
            continue
        try:
            with open(history_path(path), encoding="utf-8") as fh:
                n += max(0, sum(1 for line in fh if line.strip()) - 1)
        except OSError:
            pass
    return min(n, plan.epochs())


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = [ln.strip() for ln in fh.read()[-20000:].splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _failure(plan: UnitPlan, job: Any) -> Failure:
    err = read_error(plan)
    log = job.paths.stderr
    if err is not None:
        reason = str(err.get("message", "failed"))
    else:
        try:
            state = str(job.state)
        except Exception:  # noqa: BLE001 - a state we cannot read is still a failure
            state = "UNKNOWN"
        tail = _log_tail(log)
        reason = (f"the job ended ({state}) without a result (killed, out of memory or out of "
                  "time?)" + (f"; last log line: {tail[-200:]}" if tail else ""))
    return Failure(plan=plan, job_id=str(job.job_id), reason=reason,
                   log=str(log) if log.exists() else None)


def run_jobs(
    plans: Sequence[UnitPlan],
    cfg: ExecutorConfig,
    *,
    folder: str | os.PathLike,
    device: str,
    done: int,
    total: int,
    on_record: RecordCallback,
    on_job: JobCallback,
    report: ReportCallback,
    adopted: Mapping[str, Any] | None = None,
) -> list[Failure]:
    """Run ``plans`` as submitit jobs; wait, merging each record as its job ends.

    Parameters
    ----------
    plans : sequence of UnitPlan
        Units to run.
    cfg : ExecutorConfig
        ``local`` or ``slurm``.
    folder : path
        submitit's folder (``OUT/jobs``).
    device : str
        The protocol's device (GPU defaults).
    done, total : int
        Units finished before, and in all (progress).
    on_record : callable(plan, record)
        Called in this process when a unit's record appears.
    on_job : callable(plan, job_id, log)
        Called when a unit's job is submitted.
    report : callable(Progress)
    adopted : mapping uid -> submitit.Job, optional
        Jobs of an interrupted run that still run: waited for instead of submitting again.

    Returns
    -------
    list of Failure
        Units whose job ended without a record (the others are merged).

    Raises
    ------
    KeyboardInterrupt
        After cancelling every job in flight (Ctrl-C).
    InputError
        A submission refused by the cluster.
    """
    from softseg.protocol.jobs import UnitJob

    ex = build_executor(cfg, folder, device=device, n_units=len(plans))
    poll = cfg.poll_s or POLL_S[cfg.kind]
    adopted = dict(adopted or {})
    queue = [p for p in plans if p.uid not in adopted]
    flight: dict[str, tuple[UnitPlan, Any, int]] = {}
    for plan in plans:
        if plan.uid in adopted:
            flight[plan.uid] = (plan, adopted[plan.uid], -1)
    failures: list[Failure] = []
    free: list[int] = []
    slots: tuple[tuple[int, ...], ...] = ()
    if cfg.kind == "local":
        layout = local_layout(cfg, device=device, n_units=len(plans))
        slots = layout.gpu_slots
        free = list(range(layout.parallelism))

    def submitted(plan: UnitPlan, job: Any, slot: int) -> None:
        flight[plan.uid] = (plan, job, slot)
        on_job(plan, str(job.job_id), str(job.paths.stderr))
        report(Progress(done, total, plan.candidate, plan.repeat, "submitted",
                        message=f"job {job.job_id}"))

    def clear_errors(batch: Sequence[UnitPlan]) -> None:
        for plan in batch:
            if plan.error_path.exists():
                plan.error_path.unlink()

    last = ""
    try:
        if cfg.kind == "slurm" and queue:
            clear_errors(queue)
            for plan, job in zip(queue, submit_array(ex, queue)):
                submitted(plan, job, -1)
            queue = []
        while queue or flight:
            while queue and free:
                plan = queue.pop(0)
                slot = free.pop(0)
                clear_errors([plan])
                if slots[slot]:
                    ex.update_parameters(visible_gpus=slots[slot])
                submitted(plan, ex.submit(UnitJob(), plan), slot)
            for uid, (plan, job, slot) in list(flight.items()):
                if not job.done():
                    continue
                del flight[uid]
                if slot >= 0:
                    free.append(slot)
                record = read_record(plan.record_path, plan)
                if record is not None:
                    on_record(plan, record)
                    done += 1
                    report(Progress(done, total, plan.candidate, plan.repeat, "finished"))
                else:
                    fail = _failure(plan, job)
                    failures.append(fail)
                    report(Progress(done, total, plan.candidate, plan.repeat, "failed",
                                    message=fail.line()))
            if not (queue or flight):
                break
            running, text = _summary(list(flight.values()), len(queue))
            if text != last:
                report(Progress(done, total, "", -1, "jobs", message=text, running=running))
                last = text
            time.sleep(poll)
    except BaseException:
        for _plan, job, _slot in flight.values():
            try:
                job.cancel(check=False)
            except Exception:  # noqa: BLE001 - cancel every job we can
                pass
        raise
    return failures


def _summary(flight: Sequence[tuple[UnitPlan, Any, int]], queued: int) -> tuple[float, str]:
    """Sum of the in-flight units' fractions, and one line saying which run and how far."""
    running = 0.0
    parts, waiting = [], queued
    for plan, _job, _slot in flight:
        e = _epochs_done(plan)
        if e == 0 and not any(p.exists() for p in plan.model_paths()):
            waiting += 1
            continue
        running += 0.9 * e / plan.epochs() if plan.epochs() else 0.0
        parts.append(f"{plan.candidate} r{plan.repeat} epoch {e}/{plan.epochs()}")
    head = f"{len(parts)} running"
    if parts:
        head += f" ({', '.join(parts[:3])}{', ...' if len(parts) > 3 else ''})"
    return running, head + (f", {waiting} waiting" if waiting else "")
