"""Where the protocol's units run: in this process, or as submitit jobs on this machine or Slurm.

DESIGN decision 7: many trainings run as jobs through **submitit**, never through a home-made
process pool or scheduler. Three executors (:data:`EXECUTORS`):

``serial``
    One unit after another in the calling process (:func:`run_serial`), as before jobs existed.
``local``
    :class:`submitit.LocalExecutor`: each unit is a job (a process started and watched by
    submitit's controller) on this machine. submitit starts every submitted job at once, so
    the parent submits ``array_parallelism`` units and the next one each time a job ends (a
    window over ``executor.submit``; processes, logs, timeouts and cancelling stay submitit's).
    With GPUs, each job of the window gets its own ``gpus_per_job`` GPUs
    (``CUDA_VISIBLE_DEVICES`` through submitit's ``visible_gpus``).
``slurm``
    :class:`submitit.SlurmExecutor`: all units in one job array (``sbatch --array=0-N%P``, P =
    ``array_parallelism``), each task with ``gpus_per_job`` GPUs and ``cpus_per_job`` CPUs;
    extra ``sbatch`` settings through ``slurm_params`` (submitit's parameter names).

A job runs :class:`softseg.protocol.jobs.UnitJob` (:func:`softseg.protocol.units.run_unit`),
which writes the unit's model and record in the protocol folder; the parent
(:mod:`softseg.protocol.running`) polls the jobs' states and reads the records (never a
pickle). submitit's files (submitted function, logs ``<job id>_0_log.out|err``) live in
``OUT/jobs/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softseg.errors import InputError
from softseg.protocol.units import UnitPlan

__all__ = [
    "DEFAULT_TIMEOUT_MIN",
    "POLL_S",
    "EXECUTORS",
    "ExecutorConfig",
    "LocalLayout",
    "build_executor",
    "job_threads",
    "local_layout",
    "parse_slurm_param",
    "slurm_gpus",
    "submit_array",
]

#: Executor name -> description (CLI choices, docs).
EXECUTORS = {
    "serial": "one unit after another in this process",
    "local": "each unit a submitit job (process) on this machine, --array-parallelism at a time",
    "slurm": "each unit a task of one Slurm job array submitted through submitit",
}

#: Job time limit when none is given (minutes): Slurm one day (a partition may allow less:
#: pass --timeout-min), local one week. A job that reaches it is requeued by submitit and
#: continues from its last epoch checkpoint (softseg.protocol.jobs.UnitJob is checkpointable).
DEFAULT_TIMEOUT_MIN = {"local": 7 * 24 * 60, "slurm": 24 * 60}

#: submitit Slurm parameters set by dedicated options, and parameters a unit cannot use.
_SLURM_OPTIONS = {"partition": "--slurm-partition", "gpus_per_node": "--gpus-per-job",
                  "cpus_per_task": "--cpus-per-job", "time": "--timeout-min",
                  "array_parallelism": "--array-parallelism"}
_SLURM_REFUSED = {"nodes", "ntasks_per_node", "num_gpus", "map_count"}

#: Seconds between two looks at the jobs (Slurm states come from sacct, which submitit calls
#: at most about once a minute once jobs run).
POLL_S = {"local": 1.0, "slurm": 10.0}


def _positive(value: Any, flag: str) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
        raise InputError(f"{flag} must be a positive integer; got {value!r}")


@dataclass(frozen=True)
class ExecutorConfig:
    """How the protocol's units run (not part of a run's settings: a run resumes with any).

    Attributes
    ----------
    kind : {'serial', 'local', 'slurm'}
    gpus_per_job : int, optional
        GPUs of each job. Default: 1 when the protocol's device is not ``cpu`` (local: and
        this machine shows a GPU), else 0.
    cpus_per_job : int, optional
        CPUs of each job (Slurm ``--cpus-per-task``); also the job's torch CPU threads.
        Local default: this machine's CPUs divided among the jobs running at once.
    timeout_min : int, optional
        Job time limit in minutes (default :data:`DEFAULT_TIMEOUT_MIN`).
    array_parallelism : int, optional
        Jobs running at once. Slurm: the array's ``%P`` (default: submitit's, 256). Local:
        one per ``gpus_per_job`` GPUs of this machine on GPU; on CPU ``CPUs // cpus_per_job``
        (at most 8 by default).
    slurm_partition : str, optional
    slurm_params : tuple of (key, value)
        Other :class:`submitit.SlurmExecutor` parameters (``account``, ``qos``, ``constraint``,
        ``mem``, ``setup``, ``additional_parameters``, ...).
    poll_s : float, optional
        Seconds between two looks at the jobs (default 1 local, 10 Slurm; submitit itself
        calls ``sacct`` at most once a minute once jobs run).

    Raises
    ------
    InputError
        Job options with the serial executor, Slurm options with another executor, values out
        of range, an unknown or reserved Slurm parameter.
    """

    kind: str = "serial"
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    timeout_min: int | None = None
    array_parallelism: int | None = None
    slurm_partition: str | None = None
    slurm_params: tuple[tuple[str, Any], ...] = ()
    poll_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise InputError(f"unknown executor {self.kind!r}; choose one of "
                             f"{', '.join(EXECUTORS)}")
        job_options = {"--gpus-per-job": self.gpus_per_job, "--cpus-per-job": self.cpus_per_job,
                       "--timeout-min": self.timeout_min,
                       "--array-parallelism": self.array_parallelism}
        slurm_options = {"--slurm-partition": self.slurm_partition,
                         "--slurm-param": self.slurm_params or None}
        if self.kind == "serial":
            given = [k for k, v in {**job_options, **slurm_options}.items() if v is not None]
            if given:
                raise InputError(
                    f"{', '.join(given)} configure jobs; add --executor local (jobs on this "
                    "machine) or --executor slurm, or drop them for the serial run")
        elif self.kind == "local":
            given = [k for k, v in slurm_options.items() if v is not None]
            if given:
                raise InputError(f"{', '.join(given)} only apply to --executor slurm")
        if self.gpus_per_job is not None and (isinstance(self.gpus_per_job, bool)
                                              or int(self.gpus_per_job) != self.gpus_per_job
                                              or self.gpus_per_job < 0):
            raise InputError(f"--gpus-per-job must be 0 or more; got {self.gpus_per_job!r}")
        for flag, value in (("--cpus-per-job", self.cpus_per_job),
                            ("--timeout-min", self.timeout_min),
                            ("--array-parallelism", self.array_parallelism)):
            _positive(value, flag)
        if self.poll_s is not None and not self.poll_s > 0:
            raise InputError(f"poll_s must be positive; got {self.poll_s!r}")
        if self.slurm_partition is not None and not str(self.slurm_partition).strip():
            raise InputError("--slurm-partition is empty; name a partition (sinfo lists them)")
        if self.slurm_params:
            _check_slurm_params(self.slurm_params)

    @property
    def jobs(self) -> bool:
        """True for the submitit executors."""
        return self.kind != "serial"

    def check_available(self) -> None:
        """Refuse, before anything is written, an executor this machine cannot use.

        Raises
        ------
        InputError
            submitit not installed; ``slurm`` without ``sbatch``/``srun`` on PATH.
        """
        if not self.jobs:
            return
        _submitit()
        if self.kind == "slurm":
            missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
            if missing:
                raise InputError(
                    f"--executor slurm: {' and '.join(missing)} not found on PATH; run on a "
                    "Slurm login node (or load the Slurm module), or use --executor local")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "gpus_per_job": self.gpus_per_job,
                "cpus_per_job": self.cpus_per_job, "timeout_min": self.timeout_min,
                "array_parallelism": self.array_parallelism,
                "slurm_partition": self.slurm_partition,
                "slurm_params": {k: v for k, v in self.slurm_params}}


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise InputError(
            "jobs need submitit: pip install 'napari-softseg[cluster]' (or use --executor "
            "serial)") from None
    return submitit


def _check_slurm_params(params: Sequence[tuple[str, Any]]) -> None:
    submitit = _submitit()
    valid = sorted(submitit.SlurmExecutor._valid_parameters())
    offered = [k for k in valid if k not in _SLURM_OPTIONS and k not in _SLURM_REFUSED]
    for key, _value in params:
        if key in _SLURM_OPTIONS:
            raise InputError(f"--slurm-param {key}=...: use {_SLURM_OPTIONS[key]} instead")
        if key in _SLURM_REFUSED:
            raise InputError(
                f"--slurm-param {key}=...: each unit is one training process on one node; "
                "multi-node or multi-task jobs are not supported here")
        if key not in valid:
            raise InputError(
                f"--slurm-param {key}=...: not a submitit Slurm parameter; valid: "
                f"{', '.join(offered)}")


def parse_slurm_param(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> (key, value); VALUE is read as JSON when it is JSON (numbers, lists,
    objects, true/false), else kept as text: ``account=lab``, ``mem=32G``,
    ``setup=["module load cuda"]``, ``additional_parameters={"mail-type": "END"}``.

    Raises
    ------
    InputError
        No ``=``, or an empty key.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise InputError(f"--slurm-param {text!r}: write KEY=VALUE, e.g. account=my-lab")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key, parsed


# ------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class LocalLayout:
    """How the local executor shares this machine: jobs at once, CPUs and GPUs of each."""

    parallelism: int
    cpus_per_job: int
    gpu_slots: tuple[tuple[int, ...], ...]  # one entry per slot ((), ... on CPU)
    gpus_per_job: int


def _visible_gpus() -> list[int]:
    import torch

    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        ids = [s.strip() for s in env.split(",") if s.strip()]
        if all(s.isdigit() for s in ids):
            return [int(s) for s in ids][:n]
    return list(range(n))


def local_layout(cfg: ExecutorConfig, *, device: str, n_units: int,
                 cpu_count: int | None = None, gpus: Sequence[int] | None = None) -> LocalLayout:
    """The local executor's sharing of this machine (see :class:`ExecutorConfig`).

    Raises
    ------
    InputError
        More GPUs per job than this machine shows, or GPUs asked with ``--device cpu``.
    """
    cpus = cpu_count or os.cpu_count() or 1
    visible = list(_visible_gpus() if gpus is None else gpus)
    g = cfg.gpus_per_job
    if g is None:
        g = 1 if visible and device != "cpu" else 0
    if g and device == "cpu":
        raise InputError(f"--gpus-per-job {g} with --device cpu: drop one of them")
    if g > len(visible):
        raise InputError(
            f"--gpus-per-job {g}: this machine shows {len(visible)} GPU(s); ask for at most "
            f"{len(visible)}" + ("" if visible else " (0: train on the CPU)"))
    if g:
        most = len(visible) // g
        parallelism = min(cfg.array_parallelism or most, most)
        slots = tuple(tuple(visible[i * g:(i + 1) * g]) for i in range(parallelism))
        per_job = cfg.cpus_per_job or max(1, cpus // parallelism)
    else:
        if cfg.array_parallelism is not None:
            parallelism = cfg.array_parallelism
            per_job = cfg.cpus_per_job or max(1, cpus // parallelism)
        elif cfg.cpus_per_job is not None:
            per_job = cfg.cpus_per_job
            parallelism = max(1, cpus // per_job)
        else:
            parallelism = min(8, cpus)
            per_job = max(1, cpus // parallelism)
        slots = tuple(() for _ in range(parallelism))
    parallelism = max(1, min(parallelism, max(n_units, 1)))
    return LocalLayout(parallelism=parallelism, cpus_per_job=per_job,
                       gpu_slots=slots[:parallelism], gpus_per_job=g)


def slurm_gpus(cfg: ExecutorConfig, *, device: str) -> int:
    """GPUs of each Slurm job: ``gpus_per_job``, else 1 unless ``device`` is ``cpu``."""
    if cfg.gpus_per_job is not None:
        if cfg.gpus_per_job and device == "cpu":
            raise InputError(
                f"--gpus-per-job {cfg.gpus_per_job} with --device cpu: drop one of them")
        return int(cfg.gpus_per_job)
    return 0 if device == "cpu" else 1


def job_threads(cfg: ExecutorConfig, *, device: str, n_units: int) -> int | None:
    """torch CPU threads of each job (the unit plans carry it)."""
    if cfg.kind == "local":
        return local_layout(cfg, device=device, n_units=n_units).cpus_per_job
    if cfg.kind == "slurm":
        return cfg.cpus_per_job
    return None


def build_executor(cfg: ExecutorConfig, folder: str | os.PathLike, *, device: str,
                   n_units: int) -> Any:
    """The submitit executor of ``cfg`` writing its files (pickles, logs) in ``folder``.

    Returns
    -------
    submitit.LocalExecutor or submitit.SlurmExecutor
        Parameters set: time limit, GPUs, CPUs; Slurm also job name, partition, array
        parallelism and ``slurm_params``.
    """
    submitit = _submitit()
    cfg.check_available()
    job_folder = Path(folder)
    timeout = int(cfg.timeout_min or DEFAULT_TIMEOUT_MIN[cfg.kind])
    if cfg.kind == "local":
        layout = local_layout(cfg, device=device, n_units=n_units)
        ex = submitit.LocalExecutor(folder=job_folder)
        ex.update_parameters(timeout_min=timeout, gpus_per_node=layout.gpus_per_job)
        return ex
    ex = submitit.SlurmExecutor(folder=job_folder)
    params: dict[str, Any] = {"job_name": "softseg-compare", "time": timeout}
    gpus = slurm_gpus(cfg, device=device)
    if gpus:
        params["gpus_per_node"] = gpus
    if cfg.cpus_per_job is not None:
        params["cpus_per_task"] = int(cfg.cpus_per_job)
    if cfg.slurm_partition is not None:
        params["partition"] = cfg.slurm_partition
    if cfg.array_parallelism is not None:
        params["array_parallelism"] = int(cfg.array_parallelism)
    params.update(dict(cfg.slurm_params))
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--slurm-param: {' '.join(str(exc).split())[:300]}") from None
    return ex


def submit_array(ex: Any, plans: Sequence[UnitPlan]) -> list[Any]:
    """Submit ``plans`` as one submitit job array (Slurm: one ``sbatch --array``).

    Raises
    ------
    InputError
        ``sbatch`` refused the submission (its message, e.g. an invalid partition or time).
    """
    from softseg.protocol.jobs import UnitJob

    import contextlib
    import io

    try:
        # submitit prints sbatch's complaint to stderr, then raises it: say it once, below
        with contextlib.redirect_stderr(io.StringIO()):
            return list(ex.map_array(UnitJob(), list(plans)))
    except Exception as exc:  # submitit raises FailedJobError / FailedSubmissionError
        if isinstance(exc, InputError):
            raise
        text = " ".join(str(exc).split())
        raise InputError(f"the job submission failed: {text[-400:]}") from None
