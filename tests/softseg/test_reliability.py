"""Issue 13 across the commands: the shared load path and the all-or-nothing outputs.

Every kind of bad NIfTI file (tests/softseg/nifti_cases.py) is given to every command that reads
NIfTI images (fuse, evaluate, predict, train): exit status 2, one line on stderr that names the
file and the true problem, nothing written. Header claims of gigabytes are refused with a bounded
peak memory (measured in a child process with ``resource``). Valid-but-odd files (2D, pixdim vs
sform) go through the commands with hand-computed numbers. Disk-full / I/O errors and SIGKILL at
every rename of a command's output set leave either nothing or the complete set.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import nifti_cases as cases
import softseg.outputs as outputs
from softseg.cli import main
from softseg.outputs import is_softseg_temp

COMMANDS = ["fuse", "evaluate", "predict", "train"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny one-epoch model (predict needs a real model file to reach the image checks)."""
    from softseg.phantom import write_dataset

    root = tmp_path_factory.mktemp("model")
    write_dataset(root / "ds", n_subjects=3, shape=(32, 32, 8), n_raters=2)
    out = root / "m.safetensors"
    rc = main(["train", str(root / "ds"), "--out", str(out), "--epochs", "1", "--width", "4", "--depth", "2",
               "--crop", "32", "--device", "cpu", "--no-augment"])
    assert rc == 0 and out.exists()
    return out


def _temps(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if is_softseg_temp(p)]


def _run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out


def _dataset_with_image(folder: Path, image_builder) -> Path:
    """Three subjects (16 x 16 x 8); sub-01's image.nii.gz is made by *image_builder(path)*."""
    for i in range(1, 4):
        sub = folder / f"sub-0{i}"
        sub.mkdir(parents=True)
        cases.save(sub / "rater-1.nii.gz", cases.blob())
        if i == 1:
            image_builder(sub / "image.nii.gz")
        else:
            cases.save(sub / "image.nii.gz", cases.blob().astype(np.float32))
    return folder


def _argv(command: str, bad: Path, good: Path, out: Path, model: Path | None) -> list[str]:
    return {
        "fuse": ["fuse", str(bad), str(good), "-o", str(out / "f.nii.gz")],
        "evaluate": ["evaluate", str(bad), str(good), "-o", str(out / "metrics.json")],
        "predict": ["predict", str(model), str(bad), "-o", str(out / "pred"), "--device", "cpu"],
        "train": ["train", str(bad), "--out", str(out / "m.safetensors"), "--epochs", "1", "--width", "4",
                  "--depth", "2", "--crop", "16", "--device", "cpu"],
    }[command]


# --------------------------------------------------------------------------- bad files, every command
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", sorted(cases.BAD))
def test_bad_file_refused_by_every_command(tmp_path, kind, command, capsys, request):
    if cases.skip_reason(kind):
        pytest.skip(cases.skip_reason(kind))
    if command == "predict" and kind == "folder":
        pytest.skip("predict reads a folder as a subject or dataset folder (its own message)")
    if command == "train" and kind in cases.FILE_KINDS:
        pytest.skip("a dataset scan only lists regular files (the subject then has no image)")
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    good = cases.save(inputs / "good.nii.gz", cases.blob())
    if command == "train":
        holder = {}
        ds = _dataset_with_image(inputs / "ds", lambda p: holder.setdefault("bad", cases.BAD[kind][0](p)))
        bad, regex, target = holder["bad"], cases.BAD[kind][1], ds
    else:
        bad, regex = cases.make_bad(kind, inputs)
        target = bad
    model = request.getfixturevalue("model") if command == "predict" else None
    before = sorted(str(p) for p in inputs.rglob("*"))
    rc, err, _ = _run(_argv(command, target, good, out, model), capsys)
    assert rc == 2, err
    assert len(err) == 1, err  # one line: no traceback, no nibabel log line before it
    assert err[0].startswith(f"softseg {command}: error: {bad}: "), err[0]
    assert re.search(regex, err[0]), err[0]
    assert list(out.iterdir()) == []  # nothing written
    assert sorted(str(p) for p in inputs.rglob("*")) == before and _temps(tmp_path) == []


_PEAK = textwrap.dedent(
    """
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(proc.returncode, peak_kb, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "", sep="\\t")
    """
)
_READER = "import sys\nfrom napari_softseg._reader import read_volume_layers\nread_volume_layers(sys.argv[1])"


@pytest.mark.parametrize("kind", ["claims_1450_cubed_in_67_bytes", "claims_10000_cubed"])
@pytest.mark.parametrize("command", ["fuse", "evaluate", "predict", "reader"])
def test_header_claims_are_refused_before_allocating(tmp_path, kind, command, request):
    bad, _ = cases.make_bad(kind, tmp_path)
    good = cases.save(tmp_path / "good.nii.gz", cases.blob())
    softseg = [sys.executable, "-c", "import sys; from softseg.cli import main; sys.exit(main())"]
    if command == "reader":
        pytest.importorskip("napari_softseg")
        argv = [sys.executable, "-c", _READER, str(bad)]
    else:
        model = request.getfixturevalue("model") if command == "predict" else None
        argv = softseg + _argv(command, bad, good, tmp_path / "out", model)[0:]
        (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, timeout=300)
    rc, peak_kb, last = proc.stdout.strip().split("\t")
    assert int(rc) != 0 and str(bad) in last and "cannot hold that much" in last, proc.stdout
    # the header claims 3 GB (1450^3) or 1 TB (10000^3); the process never holds more than the
    # interpreter and its libraries (torch for predict: ~0.5 GB)
    assert int(peak_kb) < 1_000_000, f"peak RSS {int(peak_kb) / 1024:.0f} MiB"


# --------------------------------------------------------------------------- odd but valid, every command
def test_2d_files_through_fuse_evaluate_and_predict(tmp_path, capsys, model):
    aff = np.diag([0.5, 0.7, 3.0, 1.0])
    aff[:3, 3] = [-4.0, 3.0, 12.0]
    a = np.zeros((16, 12), np.uint8)
    a[4:10, 3:9] = 1
    b = np.zeros((16, 12), np.uint8)
    b[5:11, 3:9] = 1
    pa, pb = cases.save(tmp_path / "a.nii.gz", a, aff), cases.save(tmp_path / "b.nii.gz", b, aff)
    assert int(nib.load(pa).header["dim"][0]) == 2

    rc, err, _ = _run(["fuse", str(pa), str(pb), "--method", "average", "-o", str(tmp_path / "f.nii.gz")], capsys)
    assert rc == 0, err
    fused = nib.load(tmp_path / "f.nii.gz")
    assert fused.shape == (16, 12, 1)
    np.testing.assert_allclose(fused.affine, nib.load(pa).affine)
    np.testing.assert_array_equal(np.asanyarray(fused.dataobj)[..., 0], (a + b) / 2.0)  # hand-computed mean

    rc, err, out = _run(["evaluate", str(pa), str(pb), "--threshold", "0.5", "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["dice"] == pytest.approx(2 * 30 / (36 + 36))  # 5 rows x 6 cols overlap of 6 x 6 boxes
    assert report["hausdorff_mm"] == pytest.approx(0.5)  # one voxel along axis 0, 0.5 mm

    img = cases.save(tmp_path / "img.nii.gz", np.random.default_rng(0).random((40, 36)).astype(np.float32), aff)
    rc, err, _ = _run(["predict", str(model), str(img), "-o", str(tmp_path / "pred"), "--device", "cpu"], capsys)
    assert rc == 0, err
    pred = nib.load(tmp_path / "pred" / "img_pred.nii.gz")
    assert pred.shape == (40, 36, 1)
    np.testing.assert_allclose(pred.affine, nib.load(img).affine)
    values = np.asanyarray(pred.dataobj)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1


def test_pixdim_against_sform_one_voxel_size_in_evaluate_and_training(tmp_path, capsys):
    from softseg.data import load_subject, scan_dataset

    truth = cases.blob()
    pred = np.roll(truth, 1, axis=2)  # one voxel further along file axis 2
    sform = np.diag([1.0, 1.0, 2.5])
    pt = cases._sform(sform, pixdim=(1.0, 1.0, 1.0), array=truth)(tmp_path / "truth.nii.gz")  # pixdim says 1 mm
    pp = cases._sform(sform, pixdim=(1.0, 1.0, 2.5), array=pred)(tmp_path / "pred.nii.gz")  # consistent
    rc, err, out = _run(["evaluate", str(pp), str(pt), "--threshold", "0.5", "--percentile", "100", "--json"], capsys)
    assert rc == 0, err
    # the warning: once (truth is read more than once), one line, naming the file
    assert err == [
        f"softseg evaluate: warning: {pt}: pixdim gives voxel size 1 x 1 x 1 mm but the sform gives "
        "1 x 1 x 2.5 mm; softseg uses the sform's (as nibabel and the viewer do)"
    ]
    report = json.loads(out)
    assert report["hausdorff_mm"] == pytest.approx(2.5)  # one voxel along the sform's 2.5 mm axis
    # training sees the same voxel size (display order: slice axis first)
    ds = tmp_path / "ds" / "sub-01"
    ds.mkdir(parents=True)
    shutil.copy(pt, ds / "image.nii.gz")
    shutil.copy(pp, ds / "rater-1.nii.gz")
    with pytest.warns(Warning):
        sub = load_subject(scan_dataset(tmp_path / "ds").subjects[0])
    assert sub.spacing == (2.5, 1.0, 1.0)


# --------------------------------------------------------------------------- dataset.json
_DATASET_JSON = {
    "classes_number": (b'{"classes": 5}', r"classes: expected a list of class names"),
    "classes_string": (b'{"classes": "lesion"}', r"classes: expected a list of class names, e\.g\. \[\"lesion\"\]; got a string"),
    "top_level_list": (b'[1, 2]', r"expected a JSON object with channels/classes/groups; got a list"),
    "not_utf8": (b'{"classes": ["l\xe9sion"]}', r"not UTF-8 text"),
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, r"nested deeper than"),
    "unknown_key": (b'{"clases": ["lesion"]}', r"clases: unknown key"),
    "groups_list": (b'{"groups": ["a", "b"]}', r"groups: must map subject -> group"),
    "background_class": (b'{"classes": ["lesion", "background"]}', r"'background' is index 0"),
    "labels_gap": (b'{"labels": {"background": 0, "a": 1, "b": 3}}', r"labels: foreground label values must be 1\.\.K"),
    "nan_literal": (b'{"groups": {"s": NaN}}', r"NaN is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(_DATASET_JSON))
def test_invalid_dataset_json_is_refused_by_train(tmp_path, case, capsys):
    ds = _dataset_with_image(tmp_path / "ds", lambda p: cases.save(p, cases.blob().astype(np.float32)))
    text, regex = _DATASET_JSON[case]
    (ds / "dataset.json").write_bytes(text)
    out = tmp_path / "out"
    out.mkdir()
    rc, err, _ = _run(_argv("train", ds, ds, out, None), capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"softseg train: error: {ds / 'dataset.json'}: "), err[0]
    assert re.search(regex, err[0]), err[0]
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- disk full, I/O errors
def _hook(monkeypatch, stage: str, name: str, code: int) -> None:
    def fail(st, path):
        if st == stage and Path(path).name == name:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(outputs, "_fault_hook", fail)


@pytest.mark.parametrize(
    ("stage", "name", "code"),
    [("write", "f.nii.gz", errno.ENOSPC), ("write", "f.json", errno.ENOSPC), ("rename", "f.json", errno.EIO),
     ("rename", "f.nii.gz", errno.EIO)],
)
def test_fuse_disk_full_or_io_error_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, stage, name, code):
    r = [cases.save(tmp_path / f"r{k}.nii.gz", np.roll(cases.blob(), k, 0)) for k in range(3)]
    (tmp_path / "out").mkdir()
    _hook(monkeypatch, stage, name, code)
    rc, err, _ = _run(["fuse", *map(str, r), "--method", "average", "-o", str(tmp_path / "out" / "f.nii.gz")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"softseg fuse: error: {tmp_path / 'out'}/"), err[0]
    assert os.strerror(code) in err[0] and "nothing was written" in err[0]
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("stage", "name"), [("write", "rater-2.nii.gz"), ("rename", "ds")])
def test_phantom_disk_full_leaves_no_folder(tmp_path, monkeypatch, capsys, stage, name):
    _hook(monkeypatch, stage, name, errno.ENOSPC)
    rc, err, _ = _run(["phantom", str(tmp_path / "ds"), "--subjects", "2", "--shape", "16", "16", "8"], capsys)
    named = tmp_path / "ds" / "sub-01" / name if stage == "write" else tmp_path / "ds"
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"softseg phantom: error: {named}: could not write it (No space left on device); nothing was written"), err[0]
    assert list(tmp_path.iterdir()) == []


def test_phantom_refusal_leaves_no_folder(tmp_path, capsys):
    rc, err, _ = _run(["phantom", str(tmp_path / "ds"), "--shape", "4", "16", "8"], capsys)
    assert rc == 2 and len(err) == 1 and "phantom shape must be 3 integers >= 8" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a small tmpfs")
def test_fuse_on_a_really_full_disk(tmp_path, capsys):
    r = [cases.save(tmp_path / f"r{k}.nii.gz", (np.random.default_rng(k).random((128, 128, 64)) > 0.5).astype(np.uint8)) for k in range(3)]
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (small / "filler").write_bytes(b"\0" * (1024 * 1024 - 128 * 1024))
        for _ in range(2):  # the rerun says the same: nothing was left to block it
            rc, err, _ = _run(["fuse", *map(str, r), "--method", "average", "-o", str(small / "f.nii.gz")], capsys)
            assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
            assert sorted(p.name for p in small.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(small)], check=False)


# --------------------------------------------------------------------------- killed at every rename
_KILLED_CLI = textwrap.dedent(
    """
    import os, signal, sys
    import softseg.outputs as outputs
    from softseg.cli import main
    stage, name = sys.argv[1], sys.argv[2]

    def kill(st, path):
        if st == stage and os.path.basename(str(path)) == name:
            os.kill(os.getpid(), signal.SIGKILL)

    outputs._fault_hook = kill
    sys.exit(main(sys.argv[3:]))
    """
)


def _kill_run(stage: str, name: str, argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_CLI, stage, name, *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


@pytest.mark.parametrize("name", ["f.json", "f.nii.gz"])
def test_fuse_killed_at_every_rename_then_rerun(tmp_path, capsys, name):
    r = [str(cases.save(tmp_path / f"r{k}.nii.gz", np.roll(cases.blob(), k, 0))) for k in range(3)]
    out = tmp_path / "out"
    out.mkdir()
    argv = ["fuse", *r, "--method", "average", "-o", str(out / "f.nii.gz")]
    _kill_run("rename", name, argv)
    assert not (out / "f.nii.gz").exists()  # the image never appears without its sidecar
    rc, err, _ = _run(argv, capsys)  # the same command again, no --overwrite: it just works
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["f.json", "f.nii.gz"]
    assert '"average"' in (out / "f.json").read_text()  # the sidecar of this very fusion


@pytest.mark.parametrize(("stage", "name"), [("rename", "image.nii.gz"), ("rename", "dataset.json"), ("rename", "ds")])
def test_phantom_killed_at_a_rename_then_rerun(tmp_path, capsys, stage, name):
    argv = ["phantom", str(tmp_path / "ds"), "--subjects", "2", "--shape", "16", "16", "8"]
    _kill_run(stage, name, argv)
    assert not (tmp_path / "ds").exists()  # built under a temporary name: nothing visible
    rc, err, _ = _run(argv, capsys)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the killed run's temps are gone
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["dataset.json", "sub-01", "sub-02"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("when", [1, 2])
def test_fuse_killed_by_strace_at_every_rename(tmp_path, capsys, when):
    if subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True).returncode:
        pytest.skip("ptrace is not permitted here (strace cannot attach)")
    r = [str(cases.save(tmp_path / f"r{k}.nii.gz", np.roll(cases.blob(), k, 0))) for k in range(3)]
    argv = ["fuse", *r, "-o", str(tmp_path / "f.nii.gz")]
    subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
         "-e", f"inject=rename,renameat,renameat2:signal=SIGKILL:when={when}",
         sys.executable, "-c", "import sys; from softseg.cli import main; sys.exit(main())", *argv],
        capture_output=True, timeout=300,
    )
    assert not (tmp_path / "f.nii.gz").exists()
    rc, err, _ = _run(argv, capsys)
    assert rc == 0, err
    assert (tmp_path / "f.nii.gz").exists() and (tmp_path / "f.json").exists() and _temps(tmp_path) == []


@pytest.mark.slow
def test_train_on_a_dataset_of_2d_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    aff = np.diag([0.8, 0.8, 3.0, 1.0])
    for i in range(3):
        sub = tmp_path / "ds" / f"sub-0{i + 1}"
        sub.mkdir(parents=True)
        lab = np.zeros((32, 32), np.uint8)
        lab[8:20, 10:22] = 1
        cases.save(sub / "image.nii.gz", (rng.random((32, 32)) + lab).astype(np.float32), aff)
        cases.save(sub / "rater-1.nii.gz", lab, aff)
    rc, err, _ = _run(["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m.safetensors"), "--epochs", "1",
                       "--width", "4", "--depth", "2", "--crop", "32", "--device", "cpu"], capsys)
    assert rc == 0, err
    from softseg.data import load_subject, scan_dataset

    sub = load_subject(scan_dataset(tmp_path / "ds").subjects[0])
    assert sub.images.shape == (1, 1, 32, 32) and sub.spacing == pytest.approx((3.0, 0.8, 0.8), rel=1e-6)


def test_predict_names_the_image_with_nan_and_writes_nothing_for_earlier_inputs(tmp_path, capsys, model):
    """issue 13 #10/#11: a later input with a NaN voxel: one line naming that file, exit 2, and
    the earlier input's prediction is not written either (one output set)."""
    rng = np.random.default_rng(0)
    good = cases.save(tmp_path / "a.nii.gz", rng.random((32, 32, 8)).astype(np.float32))
    bad_values = rng.random((32, 32, 8)).astype(np.float32)
    bad_values[0, 0, 0] = np.nan
    bad = cases.save(tmp_path / "b.nii.gz", bad_values)
    out = tmp_path / "out"
    rc, err, _ = _run(["predict", str(model), str(good), str(bad), "-o", str(out), "--device", "cpu"], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("softseg predict: error: ")
    assert str(bad) in err[0] and "NaN/Inf" in err[0] and str(good) not in err[0]
    assert not out.exists()
    assert _temps(tmp_path) == []
