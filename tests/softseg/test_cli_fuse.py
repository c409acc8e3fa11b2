"""``softseg fuse`` driven through ``softseg.cli.main`` on NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from softseg.cli import main
from softseg.io import load_volume, save_volume

from cli_support import AFFINE, SHAPE, blob_raters, one_line_error, write_raters

sitk = pytest.importorskip("SimpleITK")


@pytest.fixture()
def rater_files(tmp_path):
    return write_raters(tmp_path, blob_raters())


# ----------------------------------------------------------------------------------- fuse
def test_fuse_staple_whole_volume_matches_simpleitk(rater_files, tmp_path, capsys):
    out = tmp_path / "staple.nii.gz"
    assert main(["fuse", *rater_files, "--method", "staple", "--roi", "none", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "staple of 4 raters" in text and "pairwise rater Dice" in text
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)
    filt = sitk.STAPLEImageFilter()
    ref = sitk.GetArrayFromImage(filt.Execute([sitk.GetImageFromArray(r) for r in blob_raters()]))
    np.testing.assert_allclose(np.asarray(img.dataobj), ref, atol=1e-6)  # float32 output
    side = json.loads((tmp_path / "staple.json").read_text())["fusion"]
    np.testing.assert_allclose(
        [r["sensitivity"] for r in side["raters"]], filt.GetSensitivity(), atol=1e-9
    )
    np.testing.assert_allclose(
        [r["specificity"] for r in side["raters"]], filt.GetSpecificity(), atol=1e-9
    )
    assert side["roi"] == {"mode": "none"}
    assert side["inputs"] == rater_files
    pair = np.array(side["pairwise_dice"])
    assert pair.shape == (4, 4) and np.allclose(np.diag(pair), 1.0)


def test_fuse_staple_auto_roi_json(rater_files, tmp_path, capsys):
    out = tmp_path / "auto.nii.gz"
    assert main(["fuse", *rater_files, "-o", str(out), "--margin", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["roi"]["mode"] == "auto" and summary["roi"]["margin_voxels"] == 2
    box = summary["roi"]["box"]
    data = np.asarray(nib.load(out).dataobj)
    inside = np.zeros(SHAPE, bool)
    inside[tuple(slice(a, b) for a, b in box)] = True
    assert not data[~inside].any()
    crop = blob_raters()[(slice(None), *(slice(a, b) for a, b in box))]
    ref = sitk.GetArrayFromImage(sitk.STAPLE([sitk.GetImageFromArray(r) for r in crop], 1.0))
    np.testing.assert_allclose(data[inside].reshape(ref.shape), ref, atol=1e-6)


@pytest.mark.parametrize(
    "method, expected",
    [
        ("average", lambda r: r.mean(axis=0)),
        ("majority", lambda r: (r.sum(axis=0) > 2).astype(np.uint8)),
        ("union", lambda r: r.max(axis=0)),
        ("intersection", lambda r: r.min(axis=0)),
    ],
)
def test_fuse_other_methods(rater_files, tmp_path, method, expected):
    out = tmp_path / f"{method}.nii.gz"
    assert main(["fuse", *rater_files, "--method", method, "-o", str(out)]) == 0
    img = nib.load(out)
    assert img.get_data_dtype() == (np.float32 if method == "average" else np.uint8)
    np.testing.assert_allclose(np.asarray(img.dataobj), expected(blob_raters()), atol=1e-7)
    side = json.loads((tmp_path / f"{method}.json").read_text())["fusion"]
    assert side["sensitivity_specificity"].startswith("each rater against the fused map")


def test_fuse_confidence_levels_need_soft(tmp_path, capsys):
    from softseg.confidence import METADATA_KEY, ConfidenceScale

    scale = ConfidenceScale.default()
    raters = blob_raters()
    levels = raters * np.array([3, 2, 3, 1], dtype=np.uint8)[:, None, None, None]
    paths = []
    for i, lv in enumerate(levels):
        path = tmp_path / f"lv-{i}.nii.gz"
        save_volume(path, lv, affine=AFFINE, sidecar={METADATA_KEY: scale.as_dict()})
        paths.append(str(path))
    out = tmp_path / "soft.nii.gz"
    assert main(["fuse", *paths, "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "--soft" in err and not out.exists()
    assert main(["fuse", *paths, "--soft", "-o", str(out)]) == 0
    assert out.exists()
    assert main(["fuse", *paths, "--method", "average", "-o", str(tmp_path / "avg.nii.gz")]) == 0
    avg = np.asarray(nib.load(tmp_path / "avg.nii.gz").dataobj)
    np.testing.assert_allclose(
        avg, np.mean([scale.to_soft(lv) for lv in levels], axis=0), atol=1e-6
    )


def test_fuse_bad_inputs_write_nothing(rater_files, tmp_path, capsys):
    out = tmp_path / "bad.nii.gz"
    # different shapes: both files and shapes named
    other = tmp_path / "small.nii.gz"
    save_volume(other, np.zeros((20, 22, 11), np.uint8), affine=AFFINE)
    assert main(["fuse", rater_files[0], str(other), "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert (
        "small.nii.gz" in err
        and "rater-0.nii.gz" in err
        and "(20, 22, 11)" in err
        and "(20, 22, 12)" in err
    )
    # different affines
    moved = tmp_path / "moved.nii.gz"
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0
    save_volume(moved, blob_raters()[1], affine=shifted)
    assert main(["fuse", rater_files[0], str(moved), "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "moved.nii.gz" in err and "affine" in err
    # a single rater
    assert main(["fuse", rater_files[0], "-o", str(out)]) == 2
    assert "at least two" in one_line_error(capsys)
    # NaN in a soft rater
    nan = tmp_path / "nan.nii.gz"
    data = blob_raters()[0].astype(np.float32)
    data[0, 0, 0] = np.nan
    save_volume(nan, data, affine=AFFINE)
    assert main(["fuse", rater_files[0], str(nan), "--method", "average", "-o", str(out)]) == 2
    assert "NaN" in one_line_error(capsys)
    # soft maps given to a hard method
    soft = tmp_path / "soft.nii.gz"
    save_volume(soft, blob_raters()[0] * np.float32(0.5), affine=AFFINE)
    assert main(["fuse", rater_files[0], str(soft), "--method", "union", "-o", str(out)]) == 2
    assert "binary" in one_line_error(capsys)
    assert not out.exists() and not (tmp_path / "bad.json").exists()
    assert not list(tmp_path.glob(".bad*"))  # no temporary leftovers


def test_fuse_existing_output_needs_overwrite(rater_files, tmp_path, capsys):
    out = tmp_path / "fused.nii.gz"
    out.write_bytes(b"keep me")
    assert main(["fuse", *rater_files, "-o", str(out)]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert out.read_bytes() == b"keep me"
    assert main(["fuse", *rater_files, "-o", str(out), "--overwrite"]) == 0
    assert load_volume(out).shape == SHAPE


def test_fuse_progress_bar_on_stderr(rater_files, tmp_path, capsys):
    out = tmp_path / "p.nii.gz"
    assert main(["fuse", *rater_files, "-o", str(out), "--progress", "always"]) == 0
    err = capsys.readouterr().err
    assert "softseg fuse [" in err and "4/6 " in err and "5/6 " in err and "6/6 " in err


# ------------------------------------------------------------------------------ multi-class
CLASS_NAMES = ("grey matter", "white matter", "csf")


def _class_raters() -> np.ndarray:
    """Four raters' label maps 0..3 (nested shells) that disagree at the borders."""
    z = np.indices(SHAPE, sparse=True)
    r2 = sum(((zi - s / 2) / (s / 3)) ** 2 for zi, s in zip(z, SHAPE))
    out = []
    for j, shift in enumerate((0.0, 0.08, -0.06, 0.04)):
        lab = np.zeros(SHAPE, np.uint8)
        lab[r2 < 1.0 + shift] = 1
        lab[r2 < 0.55 + shift] = 2
        lab[r2 < 0.2 + shift] = 3
        out.append(np.roll(lab, j % 2, axis=0))
    return np.stack(out)


@pytest.fixture()
def label_files(tmp_path):
    return write_raters(tmp_path, _class_raters())


def _nothing_written(tmp_path, stem):
    return not list(tmp_path.glob(f"{stem}*")) and not list(tmp_path.glob(f".{stem}*"))


def test_fuse_classes_staple_matches_simpleitk_multilabel(label_files, tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    args = ["fuse", *label_files, "--classes", "3", "--roi", "none", "-o", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    fused = np.asarray(nib.load(out).dataobj)
    assert fused.dtype == np.uint8 and set(np.unique(fused)) <= {0, 1, 2, 3}
    filt = sitk.MultiLabelSTAPLEImageFilter()
    ref = sitk.GetArrayFromImage(filt.Execute([sitk.GetImageFromArray(r) for r in _class_raters()]))
    assert np.count_nonzero(ref == 4) == summary["undecided_voxels"]  # ITK's undecided -> 0
    np.testing.assert_array_equal(fused, np.where(ref == 4, 0, ref))
    for j, rater in enumerate(summary["raters"]):
        confusion = np.array(rater["confusion"])
        assert confusion.shape == (4, 4)
        np.testing.assert_allclose(confusion.sum(axis=1), 1.0, atol=1e-12)  # rows = true class
        itk = np.array(filt.GetConfusionMatrix(j)).reshape(5, 4)  # rows: rater's label (+ undecided)
        np.testing.assert_allclose(confusion, itk[:4].T, atol=1e-6)
    assert summary["classes"] == ["background", "1", "2", "3"]
    # per-class probabilities beside OUT (staple and average), float32, summing to <= 1
    maps = [tmp_path / f"labels_label-{k}.nii.gz" for k in (1, 2, 3)]
    assert summary["class_maps"] == [str(p) for p in maps]
    probs = np.stack([np.asarray(nib.load(p).dataobj) for p in maps])
    assert probs.dtype == np.float32 and probs.sum(axis=0).max() <= 1 + 1e-5
    np.testing.assert_array_equal(np.argmax(np.concatenate([1 - probs.sum(0, keepdims=True), probs]), 0)[fused > 0], fused[fused > 0])
    side = json.loads((tmp_path / "labels.json").read_text())
    assert side["kind"] == "labels" and side["fusion"]["n_classes"] == 3


def test_fuse_classes_average_and_majority_by_hand(label_files, tmp_path, capsys):
    raters = _class_raters()
    fractions = np.stack([(raters == c).mean(axis=0) for c in range(4)])
    out = tmp_path / "avg.nii.gz"
    assert main(["fuse", *label_files, "--classes", "3", "--method", "average", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for k in (1, 2, 3):
        got = np.asarray(nib.load(tmp_path / f"avg_label-{k}.nii.gz").dataobj)
        np.testing.assert_allclose(got, fractions[k], atol=1e-7)
    # label map: the class most raters gave, ties -> background
    best = fractions.max(axis=0)
    tie = (fractions == best).sum(axis=0) > 1
    expected = np.where(tie, 0, np.argmax(fractions, axis=0))
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), expected)
    # confusion of rater 0 against the class fractions (soft counts), rows = true class, by hand
    region = tuple(slice(a, b) for a, b in summary["roi"]["box"])
    p = fractions[(slice(None), *region)].reshape(4, -1)
    lab = raters[0][region].reshape(-1)
    by_hand = np.stack([[p[t][lab == s].sum() / p[t].sum() for s in range(4)] for t in range(4)])
    np.testing.assert_allclose(summary["raters"][0]["confusion"], by_hand, atol=1e-12)
    out = tmp_path / "vote.nii.gz"
    assert main(["fuse", *label_files, "--classes", "3", "--method", "majority", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), expected)
    assert not (tmp_path / "vote_label-1.nii.gz").exists()  # no class maps for a hard method


def _write_class_files(tmp_path, raters, *, scale=None, keys=("grey-matter", "white-matter", "csf")):
    from softseg.confidence import METADATA_KEY

    paths = []
    for j, lab in enumerate(raters):
        for k, key in enumerate(keys, start=1):
            path = tmp_path / f"rater-{j}_label-{key}.nii.gz"
            data = (lab == k).astype(np.uint8) * (3 if scale is not None else 1)
            side = {"rater": str(j), "class": CLASS_NAMES[k - 1]}
            if scale is not None:
                side[METADATA_KEY] = scale.as_dict()
            save_volume(path, data, affine=AFFINE, sidecar=side)
            paths.append(str(path))
    return paths


def test_fuse_dataset_json_per_class_files_equal_label_maps(label_files, tmp_path, capsys):
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"classes": list(CLASS_NAMES)}))
    files = _write_class_files(tmp_path, _class_raters())
    a, b = tmp_path / "from_files.nii.gz", tmp_path / "from_labels.nii.gz"
    assert main(["fuse", *files, "--dataset-json", str(dataset_json), "-o", str(a), "--json"]) == 0
    from_files = json.loads(capsys.readouterr().out)
    assert main(["fuse", *label_files, "--dataset-json", str(dataset_json), "-o", str(b), "--json"]) == 0
    from_labels = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))
    np.testing.assert_allclose(
        [r["confusion"] for r in from_files["raters"]], [r["confusion"] for r in from_labels["raters"]]
    )
    assert from_files["classes"] == ["background", *CLASS_NAMES]
    assert [r["path"] for r in from_files["raters"]] == [str(tmp_path / f"rater-{j}_label-*") for j in range(4)]


def test_fuse_per_class_confidence_maps_average_only(tmp_path, capsys):
    from softseg.confidence import ConfidenceScale

    scale = ConfidenceScale.default()  # painted "high" (3) everywhere: one-hot after the scale
    files = _write_class_files(tmp_path, _class_raters(), scale=scale, keys=("1", "2", "3"))
    out = tmp_path / "soft.nii.gz"
    assert main(["fuse", *files, "--classes", "3", "--method", "staple", "-o", str(out)]) == 0
    # "medium" (2/3) in one class of one rater: soft class maps -> average only
    vol = nib.load(files[0])
    data = np.asarray(vol.dataobj).copy()
    data[data == 3] = 2
    nib.save(nib.Nifti1Image(data, vol.affine, vol.header), files[0])
    out = tmp_path / "soft2.nii.gz"
    assert main(["fuse", *files, "--classes", "3", "--method", "staple", "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "rater-0_label-*" in err and "--method average" in err and _nothing_written(tmp_path, "soft2")
    assert main(["fuse", *files, "--classes", "3", "--method", "average", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_kinds"][0] == "soft" and summary["soft"] is True


def test_fuse_classes_bad_input_one_line_nothing_written(label_files, tmp_path, capsys):
    out = tmp_path / "bad.nii.gz"
    # a label value that is not a class of dataset.json (nnU-Net "labels")
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "GM": 1, "WM": 2}}))
    assert main(["fuse", *label_files, "--dataset-json", str(dataset_json), "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "rater-0.nii.gz" in err and "label value 3" in err and "1 = GM, 2 = WM" in err
    assert _nothing_written(tmp_path, "bad")
    # per-class soft maps whose classes sum to more than 1 beyond rounding
    raters = _class_raters()
    files = _write_class_files(tmp_path, raters, keys=("1", "2", "3"))
    overlap = tmp_path / "rater-1_label-2.nii.gz"
    save_volume(overlap, ((raters[1] == 2) | (raters[1] == 1)).astype(np.float32) * np.float32(0.7),
                affine=AFFINE, overwrite=True)
    assert main(["fuse", *files, "--classes", "3", "--method", "average", "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "rater-1_label-*" in err and "sum to 1.69999998" in err and "at most 1" in err
    assert _nothing_written(tmp_path, "bad")
    # a class file missing, an unknown class, union, both class options
    assert main(["fuse", *files[:-1], "--classes", "3", "-o", str(out)]) == 2
    assert "no file for class 3" in one_line_error(capsys)
    assert main(["fuse", *files, "--classes", "2", "-o", str(out)]) == 2
    assert "class '3' is not a class of --classes" in one_line_error(capsys)
    assert main(["fuse", *label_files, "--classes", "3", "--method", "union", "-o", str(out)]) == 2
    assert "two classes" in one_line_error(capsys)
    assert main(["fuse", *label_files, "--classes", "3", "--dataset-json", str(dataset_json), "-o", str(out)]) == 2
    assert "not both" in one_line_error(capsys)
    bad_json = tmp_path / "bad_dataset.json"
    bad_json.write_text('{"classes": 5}')
    assert main(["fuse", *label_files, "--dataset-json", str(bad_json), "-o", str(out)]) == 2
    assert "bad_dataset.json: classes" in one_line_error(capsys)
    assert _nothing_written(tmp_path, "bad.")


def test_fuse_refuses_a_working_set_beyond_memory_before_reading_voxels(rater_files, tmp_path, capsys, monkeypatch):
    """io's check_memory on the whole run (R raters converted and stacked + the engine's
    arrays), not only per file: each 5 KiB file fits in 60 KiB, the 4-rater fusion does not."""
    import softseg.io

    monkeypatch.setattr(softseg.io, "available_memory", lambda: 60 * 1024)
    read = []
    real_load = softseg.io.load_volume
    monkeypatch.setattr(softseg.io, "load_volume", lambda *a, **k: read.append(a) or real_load(*a, **k))
    out = tmp_path / "fused.nii.gz"
    assert main(["fuse", *rater_files, "-o", str(out)]) == 2
    err = one_line_error(capsys)
    assert "fusing 4 raters of 20 x 22 x 12 voxels (staple) needs" in err and "60.0 KiB is available" in err
    assert read == [] and not out.exists() and not out.with_name("fused.json").exists()
    # soft STAPLE needs more (its EM keeps float maps per rater): 1 MiB is enough for the
    # average of the same raters (~0.6 MiB) but not for --soft staple (~1.8 MiB)
    monkeypatch.setattr(softseg.io, "available_memory", lambda: 1024 * 1024)
    assert main(["fuse", *rater_files, "--method", "average", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["fuse", *rater_files, "--soft", "-o", str(tmp_path / "soft.nii.gz")]) == 2
    assert "(staple) needs" in one_line_error(capsys)
