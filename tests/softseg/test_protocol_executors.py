"""``softseg compare --train --executor local|slurm``: the protocol's trainings as submitit jobs.

A tiny protocol (phantom, 1 epoch, 24x24 crops, 2 candidates x 2 repeats, no statistics: the
table's samples decide every Wilcoxon p-value, so equal samples give equal tables) runs with the
serial executor and with submitit's local executor; the tables and the model weights must be
bit-identical (CPU, same seeds, same number of torch threads). Then: resume after the parent
was killed (its jobs killed too, as in a crash), Ctrl-C cancelling the jobs, a unit that fails
in its job (listed, then resubmitted), the sbatch file a Slurm submission writes (through
submitit's real Slurm executor, with stand-in sbatch/srun programs), and bad options.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from softseg.cli import main
from softseg.phantom import write_dataset

pytestmark = pytest.mark.slow

TINY = ["--epochs", "1", "--crop", "24", "24", "--width", "4", "--depth", "2",
        "--batch-size", "4", "--device", "cpu", "--test-fraction", "0.25",
        "--val-fraction", "0.25", "--no-stats", "--ground-truth", "truth"]
CANDIDATES = ["--train", "conventional", "softseg"]


def _threads() -> str:
    import torch

    return str(torch.get_num_threads())  # jobs train with the threads of this process


def _argv(dataset, out, *extra):
    return ["compare", *CANDIDATES, "--dataset", str(dataset), "--repeats", "2",
            "--out", str(out), *TINY, *extra]


def _local(*extra):
    return ["--executor", "local", "--cpus-per-job", _threads(), *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "ds", n_subjects=4, shape=(24, 24, 8),
                         n_raters=3, seed=0)


@pytest.fixture(scope="module")
def serial_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "report"
    assert main(_argv(dataset, out)) == 0
    return out


def _tensors(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def _same_models(a: Path, b: Path) -> None:
    for model in sorted((a / "models").glob("*.safetensors")):
        ta, tb = _tensors(model), _tensors(b / "models" / model.name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert np.array_equal(ta[k], tb[k]), (model.name, k)


def _units(out: Path) -> dict:
    return json.loads((out / "run_state.json").read_text())["units"]


def test_local_executor_gives_the_serial_table(serial_run, dataset, tmp_path):
    out = tmp_path / "report"
    assert main(_argv(dataset, out, *_local("--array-parallelism", "2"))) == 0
    # the same table, to the last digit (CSV floats are written with repr)
    for name in ("samples.csv", "summary.csv"):
        assert (out / name).read_text() == (serial_run / name).read_text(), name
    # ... because every unit has the same record and every model the same weights
    serial, local = _units(serial_run), _units(out)
    assert set(local) == {"conventional/r0", "softseg/r0", "conventional/r1", "softseg/r1"}
    for uid in serial:
        for key in ("subjects", "curves", "split", "threshold", "plan"):
            assert local[uid][key] == serial[uid][key], (uid, key)
    _same_models(serial_run, out)
    # each unit ran as a job: submitit's logs live in OUT/jobs, the job ids in the state
    state = json.loads((out / "run_state.json").read_text())
    assert set(state["jobs"]) == set(local)
    for job in state["jobs"].values():
        assert job["executor"] == "local"
        assert Path(job["log"]).parent == out / "jobs"
        assert Path(job["log"]).with_suffix(".out").exists()
    assert not state["failures"]


def _wait_for(predicate, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _spawn(argv, log):
    """``softseg ARGV`` as a user starts it in a terminal. SIGINT is set back to its default in the
    child: a test run started in the background by a non-interactive shell (``make test &``)
    ignores SIGINT, every child inherits that, and Python then installs no KeyboardInterrupt
    handler, so Ctrl-C would never reach the run."""
    code = "import sys; from softseg.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *argv], stdout=log, stderr=log,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _jobs(out: Path) -> dict:
    try:
        return json.loads((out / "run_state.json").read_text()).get("jobs", {})
    except (OSError, ValueError):
        return {}


def _processes_with(text: str) -> list[int]:
    """Processes whose command line mentions ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(int(entry.name))
    return found


def test_resume_after_the_parent_and_its_jobs_were_killed(serial_run, dataset, tmp_path, capsys):
    out = tmp_path / "report"
    argv = _argv(dataset, out, *_local("--array-parallelism", "1"))
    with open(tmp_path / "first.log", "w") as log:
        proc = _spawn(argv, log)
        try:
            # the first unit finished and the second one's job started
            _wait_for(lambda: (out / "units" / "conventional-r0.json").exists()
                      and "softseg/r0" in _jobs(out), 240, "the second job")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # a crash: the parent and its jobs die
            proc.wait()
    first = out / "models" / "conventional-r0.safetensors"
    mtime = os.stat(first).st_mtime_ns
    assert set(_units(out)) == {"conventional/r0"}

    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    # the unit whose job died is run again, and said so
    assert "softseg repeat 0: run again" in err and "did not finish" in err
    assert os.stat(first).st_mtime_ns == mtime  # the finished unit was not retrained
    for name in ("samples.csv", "summary.csv"):
        assert (out / name).read_text() == (serial_run / name).read_text(), name


def test_records_of_jobs_that_outlived_their_parent_are_used(serial_run, dataset, tmp_path,
                                                             capsys):
    out = tmp_path / "report"
    argv = _argv(dataset, out, *_local("--array-parallelism", "2"))
    with open(tmp_path / "first.log", "w") as log:
        proc = _spawn(argv, log)
        try:
            _wait_for(lambda: len(_jobs(out)) >= 2, 240, "two jobs")
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # only the parent: its jobs go on
            proc.wait()
    running = set(_jobs(out))
    # resumed at once: the jobs still running hold their units' locks; the resumed run's jobs
    # for those units wait for them and take over their records (each model trained once)
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    for name in ("samples.csv", "summary.csv"):
        assert (out / name).read_text() == (serial_run / name).read_text(), name
    for uid in running:
        cand, rep = uid.split("/r")
        history = (out / "models" / f"{cand}-r{rep}.history.csv").read_text().splitlines()
        assert len(history) == 2, history  # header + the one epoch: never trained twice


def test_ctrl_c_cancels_the_jobs(dataset, tmp_path):
    out = tmp_path / "report"
    argv = ["compare", *CANDIDATES, "--dataset", str(dataset), "--repeats", "1",
            "--out", str(out), *TINY, "--epochs", "500", "--patience", "500",
            *_local("--array-parallelism", "2")]
    with open(tmp_path / "run.log", "w") as log:
        proc = _spawn(argv, log)
        try:
            # both jobs train (their history CSVs have rows)
            histories = [out / "models" / f"{c}-r0.history.csv"
                         for c in ("conventional", "softseg")]
            _wait_for(lambda: all(h.exists() for h in histories), 240, "training jobs")
            assert _processes_with(str(out / "jobs"))  # submitit's controllers and tasks
            # Ctrl-C on the parent, once (it failed only in test runs started in the background,
            # which ignore SIGINT: see _spawn)
            os.kill(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "interrupted" in (tmp_path / "run.log").read_text()
    _wait_for(lambda: not _processes_with(str(out / "jobs")), 30, "the jobs to end")
    assert not _units(out)


def test_a_failing_unit_is_listed_then_resubmitted(dataset, tmp_path, capsys):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for truth in ds.glob("*/truth_soft.nii.gz"):  # every evaluation will fail in its job
        truth.rename(hidden / f"{truth.parent.name}.nii.gz")
    out = tmp_path / "report"
    argv = ["compare", *CANDIDATES, "--dataset", str(ds), "--repeats", "1", "--out", str(out),
            *TINY, *_local("--array-parallelism", "2")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("softseg compare: error: 2 of 2 units failed: ")
    assert "conventional/r0 (job " in err and "has no truth_soft.nii.gz" in err
    assert "--resume" in err
    state = json.loads((out / "run_state.json").read_text())
    assert set(state["failures"]) == {"conventional/r0", "softseg/r0"} and not state["units"]
    error = json.loads((out / "units" / "softseg-r0.error.json").read_text())
    assert error["type"] == "InputError" and "Traceback" in error["traceback"]
    models = {p.name: os.stat(p).st_mtime_ns for p in (out / "models").glob("*.safetensors")}
    assert len(models) == 2  # trained before the evaluation failed

    for moved in hidden.iterdir():
        moved.rename(ds / moved.name.removesuffix(".nii.gz") / "truth_soft.nii.gz")
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "conventional repeat 0: run again (subject" in err  # the failure is listed
    # only the evaluation ran again
    after = {p.name: os.stat(p).st_mtime_ns for p in (out / "models").glob("*.safetensors")}
    assert after == models
    state = json.loads((out / "run_state.json").read_text())
    assert set(state["units"]) == {"conventional/r0", "softseg/r0"} and not state["failures"]
    assert not (out / "units" / "softseg-r0.error.json").exists()


# ------------------------------------------------------------------------------ Slurm
_SBATCH = """#!/bin/sh
# stand-in for sbatch: keep the submission file, answer like sbatch
cp "$1" "{keep}"
{answer}
"""


def _slurm_bin(tmp_path, answer="echo 'Submitted batch job 4242'"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    keep = tmp_path / "submitted.sh"
    (bin_dir / "sbatch").write_text(_SBATCH.format(keep=keep, answer=answer))
    for name in ("srun", "sacct", "scancel"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    return bin_dir, keep


def test_slurm_submission_is_one_job_array(dataset, tmp_path, monkeypatch):
    from softseg.data import scan_dataset
    from softseg.protocol import ExecutorConfig, ProtocolConfig, plan_units
    from softseg.protocol.executors import build_executor, submit_array
    from softseg.protocol.jobs import UnitJob

    bin_dir, keep = _slurm_bin(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = ExecutorConfig(kind="slurm", gpus_per_job=1, cpus_per_job=4, timeout_min=120,
                         array_parallelism=2, slurm_partition="gpu",
                         slurm_params=(("account", "lab"), ("setup", ["module load cuda"])))
    config = ProtocolConfig(candidates=("conventional", "softseg"), repeats=2, stats=False,
                            reference=None, epochs=1, crop=(24, 24), test_fraction=0.25,
                            val_fraction=0.25)
    plans = plan_units(scan_dataset(dataset), config, out=tmp_path / "out", threads=4)
    ex = build_executor(cfg, tmp_path / "out" / "jobs", device="auto", n_units=len(plans))
    jobs = submit_array(ex, plans)
    assert [j.job_id for j in jobs] == [f"4242_{i}" for i in range(4)]
    script = keep.read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --partition=gpu", "#SBATCH --time=120",
                 "#SBATCH --account=lab", "#SBATCH --job-name=softseg-compare",
                 "module load cuda", "-m submitit.core._submit"):
        assert line in script, line
    assert f"#SBATCH --output={tmp_path / 'out' / 'jobs'}/%A_%a_0_log.out" in script
    assert jobs[1].paths.stderr == tmp_path / "out" / "jobs" / "4242_1_0_log.err"
    # what each array task will run: the unit job with its own plan
    for i, job in enumerate(jobs):
        sub = job.submission()
        assert isinstance(sub.function, UnitJob)
        assert sub.args == (plans[i],)


def test_slurm_refusal_is_one_line(dataset, tmp_path, monkeypatch, capsys):
    bin_dir, _ = _slurm_bin(
        tmp_path, answer="echo 'sbatch: error: invalid partition specified: nogpu' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "r"
    code = main(_argv(dataset, out, "--executor", "slurm", "--slurm-partition", "nogpu"))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid partition specified: nogpu" in err, err
    assert not _units(out)


# ------------------------------------------------------------------------------ bad options
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gpus-per-job", "1"], "--gpus-per-job configure jobs; add --executor local"),
        (["--executor", "serial", "--slurm-partition", "gpu"], "--slurm-partition configure jobs"),
        (["--executor", "local", "--slurm-partition", "gpu"], "only apply to --executor slurm"),
        (["--executor", "local", "--slurm-param", "account=lab"], "only apply to --executor slurm"),
        (["--executor", "slurm"], "--executor slurm: sbatch and srun not found on PATH"),
        (["--executor", "slurm", "--slurm-param", "partition=gpu"], "use --slurm-partition"),
        (["--executor", "slurm", "--slurm-param", "time=60"], "use --timeout-min"),
        (["--executor", "slurm", "--slurm-param", "nodes=2"], "multi-node"),
        (["--executor", "slurm", "--slurm-param", "bogus=1"],
         "not a submitit Slurm parameter; valid: .*account"),
        (["--executor", "slurm", "--slurm-param", "account"], "write KEY=VALUE"),
        (["--executor", "local", "--cpus-per-job", "0"], "--cpus-per-job must be a positive"),
        (["--executor", "local", "--gpus-per-job", "1"], "drop one of them"),
        (["--executor", "local", "--gpus-per-job", "-1"], "--gpus-per-job must be 0 or more"),
    ],
)
def test_bad_executor_options_exit_2_with_one_line(dataset, tmp_path, capsys, extra, message):
    import re

    out = tmp_path / "r"
    assert main(_argv(dataset, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()  # nothing written


def test_executor_options_need_train(serial_run, dataset, tmp_path, capsys):
    models = [str(serial_run / "models" / f"{c}-r0.safetensors")
              for c in ("conventional", "softseg")]
    code = main(["compare", *models, "--dataset", str(dataset), "--out", str(tmp_path / "r"),
                 "--executor", "local"])
    assert code == 2
    assert "--executor applies to --train" in capsys.readouterr().err


# ------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize(
    ("options", "cpus", "gpus", "device", "expected"),
    [
        # CPU: at most 8 jobs, the CPUs shared among them
        ({}, 2, [], "auto", (2, 1, ((), ()), 0)),
        ({}, 16, [], "auto", (8, 2, ((),) * 8, 0)),
        ({"cpus_per_job": 4}, 16, [], "auto", (4, 4, ((),) * 4, 0)),
        ({"array_parallelism": 3}, 16, [], "auto", (3, 5, ((),) * 3, 0)),
        # GPUs: one job per GPU (or per gpus_per_job GPUs), each its own
        ({}, 16, [0, 1, 2, 3], "auto", (4, 4, ((0,), (1,), (2,), (3,)), 1)),
        ({"gpus_per_job": 2}, 16, [0, 1, 2, 3], "cuda", (2, 8, ((0, 1), (2, 3)), 2)),
        ({"array_parallelism": 1}, 16, [4, 5], "auto", (1, 16, ((4,),), 1)),
        ({}, 16, [0, 1], "cpu", (8, 2, ((),) * 8, 0)),  # --device cpu: no GPU by default
    ],
)
def test_local_layout(options, cpus, gpus, device, expected):
    from softseg.protocol import ExecutorConfig
    from softseg.protocol.executors import local_layout

    layout = local_layout(ExecutorConfig(kind="local", **options), device=device, n_units=12,
                          cpu_count=cpus, gpus=gpus)
    assert (layout.parallelism, layout.cpus_per_job, layout.gpu_slots,
            layout.gpus_per_job) == expected
    # never more jobs at once than units
    assert local_layout(ExecutorConfig(kind="local", **options), device=device, n_units=1,
                        cpu_count=cpus, gpus=gpus).parallelism == 1


def test_slurm_param_values():
    from softseg.protocol import parse_slurm_param

    assert parse_slurm_param("account=my-lab") == ("account", "my-lab")
    assert parse_slurm_param("mem=32G") == ("mem", "32G")
    assert parse_slurm_param("exclusive=true") == ("exclusive", True)
    assert parse_slurm_param('setup=["module load cuda"]') == ("setup", ["module load cuda"])
    assert parse_slurm_param('additional-parameters={"mail-type": "END"}') == (
        "additional_parameters", {"mail-type": "END"})
