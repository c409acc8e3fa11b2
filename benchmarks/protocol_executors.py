"""The comparison protocol with each executor: serial vs submitit's local executor.

The same tiny protocol (phantom, 2 candidates x 2 repeats, 1 epoch, 24x24 crops, width 4: every
unit trains for about a second, so the executor's own cost shows) runs as
``softseg compare --train`` in a child process with

* ``serial``  — units one after another in the command's process (the reference);
* ``local-1`` — each unit a submitit job (its own Python process), one at a time, with the
  serial run's torch threads (the overhead of a job: a process, imports, pickles, polling);
* ``local-P`` — P jobs at once (P = CPUs, one torch thread each: the local executor's default on
  this machine).

Each configuration runs ``--rounds`` times, interleaved (ABC, CBA, ...) so that load changes on
the shared machine hit all of them; the medians are reported. Two clocks: wall time, and the
CPU time of the command and every process it waited for (``RUSAGE_CHILDREN``: submitit's
controllers and job processes included). Also measured: the start-up of a bare job process
(Python + ``import torch, softseg.protocol.jobs, softseg.training``), which is most of a job's
overhead, and how each configuration's table compares with the serial one (``samples.csv``
bit-identical, else the largest differences: a job with another number of torch threads than the
serial run sums floats in another order).

Run: ``.venv/bin/python benchmarks/protocol_executors.py [--rounds 2] [--epochs 1]``; writes
``benchmarks/results/protocol_executors.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(argv: list[str], log: Path) -> tuple[float, float]:
    cpu0, t0 = _child_cpu(), time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.call([PY, "-m", "softseg", *argv], stdout=fh, stderr=subprocess.STDOUT,
                               cwd=ROOT)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"{' '.join(argv)} failed ({code}):\n{tail}")
    return wall, cpu


def _table_difference(reference: Path, other: Path) -> dict:
    """Bit-identical samples.csv? Else the largest differences, per metric (absolute)."""
    import csv
    import math

    if reference.read_text() == other.read_text():
        return {"identical": True}
    with open(reference, newline="") as a, open(other, newline="") as b:
        rows_a, rows_b = list(csv.DictReader(a)), list(csv.DictReader(b))
    worst: dict[str, float] = {}
    for ra, rb in zip(rows_a, rows_b):
        for key, va in ra.items():
            try:
                x, y = float(va), float(rb[key])
            except (TypeError, ValueError):
                continue
            if math.isfinite(x) and math.isfinite(y) and x != y:
                worst[key] = max(worst.get(key, 0.0), abs(x - y))
    top = dict(sorted(worst.items(), key=lambda kv: -kv[1])[:6])
    return {"identical": False, "metrics_that_differ": len(worst),
            "largest_abs_differences": {k: float(f"{v:.3g}") for k, v in top.items()}}


def _startup() -> tuple[float, float]:
    code = "import torch, torch._dynamo, softseg.protocol.jobs, softseg.training, softseg.predict"
    cpu0, t0 = _child_cpu(), time.perf_counter()
    subprocess.check_call([PY, "-c", code], cwd=ROOT)
    return time.perf_counter() - t0, _child_cpu() - cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out",
                    default=str(ROOT / "benchmarks" / "results" / "protocol_executors.json"))
    args = ap.parse_args()

    import torch

    from softseg.phantom import write_dataset

    cpus = os.cpu_count() or 1
    threads = torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="protocol-executors-"))
    try:
        dataset = write_dataset(work / "ds", n_subjects=4, shape=(24, 24, 8), n_raters=3, seed=0)
        base = ["compare", "--train", "conventional", "softseg", "--dataset", str(dataset),
                "--repeats", "2", "--no-stats", "--ground-truth", "truth", "--epochs",
                str(args.epochs), "--patience", str(args.epochs), "--crop", "24", "24",
                "--width", "4", "--depth", "2", "--batch-size", "4", "--device", "cpu",
                "--test-fraction", "0.25", "--val-fraction", "0.25", "--overwrite"]
        units = 4
        configs = {
            "serial": [],
            "local-1": ["--executor", "local", "--array-parallelism", "1", "--cpus-per-job",
                        str(threads)],
            f"local-{cpus}": ["--executor", "local"],
        }
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
        order = list(configs)
        startup = []
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                out = work / name
                wall, cpu = _run([*base, "--out", str(out), *configs[name]], work / f"{name}.log")
                times[name].append((wall, cpu))
                print(f"[protocol_executors] round {r} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU",
                      flush=True)
            startup.append(_startup())
        reference = work / "serial" / "samples.csv"
        same = {name: _table_difference(reference, work / name / "samples.csv")
                for name in configs}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: {"wall_s": statistics.median(w for w, _ in v),
               "cpu_s": statistics.median(c for _, c in v),
               "runs": [{"wall_s": round(w, 2), "cpu_s": round(c, 2)} for w, c in v]}
           for k, v in times.items()}
    s_wall, s_cpu = med["serial"]["wall_s"], med["serial"]["cpu_s"]
    par = f"local-{cpus}"
    result = {
        "benchmark": "protocol_executors",
        "what": "softseg compare --train, 2 candidates x 2 repeats (4 units), tiny trainings",
        "machine": {"cpus": cpus, "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"epochs": args.epochs, "rounds": args.rounds, "units": units,
                     "serial_threads": threads},
        "configs": {k: {"wall_s": round(v["wall_s"], 2), "cpu_s": round(v["cpu_s"], 2),
                        "runs": v["runs"]} for k, v in med.items()},
        "job_process_startup": {"wall_s": round(statistics.median(w for w, _ in startup), 2),
                                "cpu_s": round(statistics.median(c for _, c in startup), 2)},
        "ratios": {
            "local-1 / serial wall": round(med["local-1"]["wall_s"] / s_wall, 3),
            f"{par} / serial wall": round(med[par]["wall_s"] / s_wall, 3),
            "local-1 / serial CPU": round(med["local-1"]["cpu_s"] / s_cpu, 3),
            f"{par} / serial CPU": round(med[par]["cpu_s"] / s_cpu, 3),
        },
        "overhead_per_job": {
            "wall_s": round((med["local-1"]["wall_s"] - s_wall) / units, 2),
            "cpu_s": round((med["local-1"]["cpu_s"] - s_cpu) / units, 2),
        },
        # bit-identical when the jobs train with the serial run's torch threads (local-1);
        # another thread count sums floats in another order (local-P: 1 thread per job)
        "table_vs_serial": same,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(json.dumps(result["overhead_per_job"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
