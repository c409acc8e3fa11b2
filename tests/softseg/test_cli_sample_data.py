"""``softseg sample-data``: dataset folders of MNI-template subjects (multi-class contract) and
the phantom alias; deterministic files, all-or-nothing writes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from softseg.anatomy import DATASET_NAME, write_dataset
from softseg.dataset_json import class_key
from softseg.errors import InputError

SOFTSEG = [sys.executable, "-m", "softseg"]


def _run(args, timeout=600, **kwargs):
    return subprocess.run([*SOFTSEG, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def _load(path):
    return np.asarray(nib.load(path).dataobj)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_mni_dataset_follows_the_multiclass_contract(tmp_path):
    out = tmp_path / "mni"
    done = _run(["sample-data", "mni", str(out), "--subjects", "2", "--raters", "2",
                 "--lesions", "--seed", "3"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"softseg sample-data mni: wrote 2 subjects x 2 raters x 4 classes "
        f"(grey matter, white matter, csf, lesion) to {out}"
    )
    meta = json.loads((out / "dataset.json").read_text())
    classes = ["grey matter", "white matter", "csf", "lesion"]
    assert meta["name"] == DATASET_NAME
    assert meta["classes"] == classes
    assert meta["subjects"] == ["sub-01", "sub-02"] and meta["raters"] == ["1", "2"]
    assert meta["groups"] == {"sub-01": "centre-A", "sub-02": "centre-B"}
    assert meta["truth"] == {c: f"truth_label-{class_key(c)}.nii.gz" for c in classes}
    assert meta["generator"]["target"] == "tissue-lesion" and meta["generator"]["seed"] == 3
    from softseg.dataset_json import read_dataset_json

    parsed = read_dataset_json(out)  # the product's one dataset.json schema reads it
    assert parsed.class_names == tuple(classes)
    assert parsed.class_keys == ("grey-matter", "white-matter", "csf", "lesion")
    expected = {"image.nii.gz", "lesions.nii.gz", "lesions.json"}
    for c in classes:
        expected.add(f"truth_label-{class_key(c)}.nii.gz")
        for r in ("1", "2"):
            expected |= {f"rater-{r}_label-{class_key(c)}.nii.gz", f"rater-{r}_label-{class_key(c)}.json"}
    assert {p.name for p in (out / "sub-01").iterdir()} == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left

    sub = out / "sub-02"
    image = nib.load(sub / "image.nii.gz")
    assert image.get_data_dtype() == np.float32
    assert np.allclose(np.diag(image.affine)[:3], 2.0)
    truths = np.stack([_load(sub / meta["truth"][c]) for c in classes])
    assert truths.dtype == np.float32 and truths.min() >= 0
    assert truths.sum(axis=0).max() <= 1 + 1e-5  # background = 1 - sum
    for r in ("1", "2"):
        masks = np.stack([_load(sub / f"rater-{r}_label-{class_key(c)}.nii.gz") for c in classes])
        assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
        assert masks.sum(axis=0).max() == 1  # a rater's classes partition the voxels they label
        for k, c in enumerate(classes):
            side = json.loads((sub / f"rater-{r}_label-{class_key(c)}.json").read_text())
            assert side == {"rater": r, "kind": "labels", "class": c}
            # the rater's grey and white matter agree with the truth the way people do
            if c in ("grey matter", "white matter"):
                hard = np.concatenate([1 - truths.sum(0, keepdims=True), truths]).argmax(0) == k + 1
                dice = 2 * (masks[k].astype(bool) & hard).sum() / (masks[k].sum() + hard.sum())
                assert 0.8 < dice < 0.97
    lesions = _load(sub / "lesions.nii.gz")
    assert lesions.dtype == np.uint16 and 3 <= lesions.max() <= 8
    record = meta["generator"]["subjects"]["sub-02"]
    assert record["n_lesions"] == int(lesions.max())
    assert record["volumes_ml"]["grey matter"] == pytest.approx(
        truths[0].sum(dtype=np.float64) * 8 / 1000, rel=1e-6)


def test_same_seed_same_files_other_seed_other_subjects(tmp_path):
    write_dataset(tmp_path / "a", n_subjects=1, n_raters=2, target="lesion", seed=7)
    write_dataset(tmp_path / "b", n_subjects=1, n_raters=2, target="lesion", seed=7)
    write_dataset(tmp_path / "c", n_subjects=1, n_raters=2, target="lesion", seed=8)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b  # byte for byte, dataset.json included
    assert set(a) == set(c)
    assert a["sub-01/image.nii.gz"] != c["sub-01/image.nii.gz"]
    # the lesion target is the phantom's single-class layout
    assert set(a) == {"dataset.json", "sub-01/image.nii.gz", "sub-01/truth_soft.nii.gz",
                      "sub-01/lesions.nii.gz", "sub-01/lesions.json", "sub-01/rater-1.nii.gz",
                      "sub-01/rater-1.json", "sub-01/rater-2.nii.gz", "sub-01/rater-2.json"}
    meta = json.loads(a["dataset.json"])
    assert meta["classes"] == ["lesion"] and meta["truth"] == "truth_soft.nii.gz"
    from softseg.data import scan_dataset

    info = scan_dataset(tmp_path / "a")  # the single-class loader takes it unchanged
    assert info.classes == ("lesion",) and info.rater_ids == ("1", "2")


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import softseg.anatomy.dataset as dataset

    calls = []
    real = dataset.make_subject

    def failing(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(**kwargs)

    monkeypatch.setattr(dataset, "make_subject", failing)
    with pytest.raises(RuntimeError, match="killed"):
        write_dataset(tmp_path / "ds", n_subjects=2, n_raters=1, target="lesion")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary sibling
    (tmp_path / "empty").mkdir()  # an empty folder is as good as a new one
    write_dataset(tmp_path / "empty", n_subjects=1, n_raters=1, target="lesion")
    assert (tmp_path / "empty" / "dataset.json").is_file()


def test_overwrite_replaces_only_our_datasets(tmp_path):
    out = tmp_path / "ds"
    write_dataset(out, n_subjects=1, n_raters=1, target="lesion", seed=1)
    before = _files(out)
    with pytest.raises(InputError, match="already exists; pass --overwrite to replace it"):
        write_dataset(out, n_subjects=1, n_raters=1, target="lesion", seed=2)
    assert _files(out) == before
    write_dataset(out, n_subjects=1, n_raters=1, target="lesion", seed=2, overwrite=True)
    after = _files(out)
    assert after["sub-01/image.nii.gz"] != before["sub-01/image.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="was not written by softseg sample-data mni"):
        write_dataset(foreign, n_subjects=1, overwrite=True)
    (foreign / "dataset.json").write_text('{"name": "my study"}')
    with pytest.raises(InputError, match="only replaces a dataset written by softseg sample-data"):
        write_dataset(foreign, n_subjects=1, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spacing", "2", "2"], "--spacing takes one value or three (mm); got 2"),
        (["--lesions", "--target", "lesion"], "--lesions adds a lesion class to the tissues"),
        (["--subjects", "0"], "--subjects must be >= 1; got 0"),
        (["--raters", "0"], "--raters must be >= 1; got 0"),
        (["--spacing", "20"], "spacing must be 1 or 3 voxel sizes between 0.5 and 8 mm"),
        (["--lesion-count", "3", "5"], "--lesion-count needs lesions: add --lesions or --target lesion"),
        (["--lesions", "--lesion-count", "9", "2"], "n_lesions must be a count or a (low, high) range within 0 .. 50; got (9, 2)"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, args, message):
    done = _run(["sample-data", "mni", str(tmp_path / "out"), *args])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("softseg sample-data: error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_missing_nilearn_names_the_extra_and_writes_nothing(tmp_path):
    code = (
        "import sys; sys.modules['nilearn'] = None\n"
        "from softseg.cli import main\n"
        f"sys.exit(main(['sample-data', 'mni', {str(tmp_path / 'out')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "softseg sample-data: error: real anatomy needs nilearn (it ships the MNI ICBM152 "
        "template); install it with: pip install 'napari-softseg[anatomy]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_sample_data_phantom_is_softseg_phantom(tmp_path):
    args = ["--subjects", "1", "--raters", "2", "--shape", "24", "24", "8", "--seed", "4"]
    one = _run(["sample-data", "phantom", str(tmp_path / "one"), *args])
    two = _run(["phantom", str(tmp_path / "two"), *args])
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert _run(["sample-data"]).returncode == 2  # a dataset name is required
