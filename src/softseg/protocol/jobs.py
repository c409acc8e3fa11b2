"""What a submitit job runs: :class:`UnitJob` (imports submitit; only job executors load it).

The job's argument is a :class:`~softseg.protocol.units.UnitPlan` (submitit pickles it with the
callable into ``OUT/jobs/<job id>/``; the job process imports softseg from the same Python
environment). The job writes the unit's model and record; its return value (the record's path)
is not read by the parent, which reads the record itself.
"""

from __future__ import annotations

import os
from typing import Any

from submitit.helpers import Checkpointable

from softseg.protocol.records import write_error
from softseg.protocol.units import UnitPlan, run_unit

__all__ = ["UnitJob"]


class UnitJob(Checkpointable):
    """Run one unit in a job: :func:`~softseg.protocol.units.run_unit`, errors recorded.

    Checkpointable (submitit): when a job reaches its time limit or is preempted, submitit
    requeues it with the same plan, and the unit continues from its last epoch checkpoint
    (``<model>.checkpoint.safetensors``, written by the trainer after every epoch).

    On an exception the job writes ``units/<stem>.error.json`` (type, one-line message,
    traceback, host) for the parent, then re-raises it (submitit marks the job failed).
    """

    def __call__(self, plan: UnitPlan) -> str:
        if plan.threads is None:
            plan = _with_allocated_threads(plan)
        try:
            run_unit(plan)
        except Exception as exc:
            write_error(plan, exc)
            raise
        return str(plan.record_path)


def _with_allocated_threads(plan: UnitPlan) -> UnitPlan:
    """Threads = the CPUs this job may run on (a Slurm allocation; torch would use the node's)."""
    from dataclasses import replace

    try:
        n: Any = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return plan
    return replace(plan, threads=max(1, int(n)))
