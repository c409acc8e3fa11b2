"""``softseg evaluate`` driven through ``softseg.cli.main`` on NIfTI files: the one metric table,
voxel size from the affine, probabilities within rounding of [0, 1], K-class predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from softseg.cli import main
from softseg.io import save_volume

from cli_support import AFFINE, SHAPE, blob_raters, one_line_error, write_raters


@pytest.fixture()
def rater_files(tmp_path):
    return write_raters(tmp_path, blob_raters())


# ------------------------------------------------------------------------------- evaluate
@pytest.fixture()
def pred_truth(tmp_path):
    raters = blob_raters()
    truth = raters[0]
    prob = np.clip(ndimage.gaussian_filter(truth.astype(np.float32), 1.0), 0, 1).astype(np.float32)
    pred_path, truth_path = tmp_path / "pred.nii.gz", tmp_path / "truth.nii.gz"
    save_volume(pred_path, prob, affine=AFFINE)
    save_volume(truth_path, truth, affine=AFFINE)
    return str(pred_path), str(truth_path), prob, truth


def test_evaluate_json_values(pred_truth, tmp_path, capsys):
    from softseg import metrics as M

    pred, truth, prob, mask = pred_truth
    assert main(["evaluate", pred, truth, "--threshold", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    binary = prob >= np.float32(0.5)
    tp = np.count_nonzero(binary & (mask == 1))
    assert out["dice"] == pytest.approx(2 * tp / (binary.sum() + mask.sum()))
    assert out["spacing_mm"] == pytest.approx([0.9, 1.1, 2.0])
    assert out["reference_volume_ml"] == pytest.approx(mask.sum() * 0.9 * 1.1 * 2.0e-3, rel=1e-6)
    assert out["hausdorff_mm"] == pytest.approx(
        M.hausdorff_distance(binary, mask, spacing=(0.9, 1.1, 2.0)), rel=1e-6
    )
    assert out["threshold"] == 0.5


def test_evaluate_table_optimal_and_raters(pred_truth, rater_files, tmp_path, capsys):
    pred, truth, _, _ = pred_truth
    report = tmp_path / "m.json"
    assert (
        main(["evaluate", pred, truth, "--optimal", "--raters", *rater_files, "-o", str(report)])
        == 0
    )
    text = capsys.readouterr().out
    assert "Dice" in text and "Dice-optimal" in text and "Dice vs rater-3.nii.gz" in text
    saved = json.loads(report.read_text())
    assert saved["brier_entropy_reference"] == "rater average"
    assert len(saved["dice_per_rater"]) == 4
    assert 0.05 <= saved["threshold"] <= 0.95


def test_evaluate_errors(pred_truth, tmp_path, capsys):
    pred, truth, prob, _ = pred_truth
    other = tmp_path / "other.nii.gz"
    save_volume(other, np.zeros((20, 22, 11), np.uint8), affine=AFFINE)
    assert main(["evaluate", pred, str(other)]) == 2
    err = one_line_error(capsys)
    assert "pred.nii.gz" in err and "other.nii.gz" in err and "(20, 22, 11)" in err
    big = tmp_path / "big.nii.gz"
    save_volume(big, prob * 3, affine=AFFINE)
    assert main(["evaluate", str(big), truth]) == 2
    assert "[0, 1]" in one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", pred, truth, "--threshold", "0.5", "--optimal"])
    assert exc.value.code == 2


# ------------------------------------------------------------------- geometry, tolerance
def test_voxel_size_comes_from_the_affine_not_pixdim(pred_truth, tmp_path, capsys):
    import nibabel as nib

    _, _, prob, mask = pred_truth
    paths = []
    for name, data in (("p.nii.gz", prob), ("t.nii.gz", mask)):
        img = nib.Nifti1Image(data, AFFINE)
        img.header.set_zooms((3.0, 3.0, 3.0))  # pixdim disagrees with the sform (valid files do)
        img.set_sform(AFFINE, code=1)
        img.set_qform(None, code=0)
        nib.save(img, tmp_path / name)
        paths.append(str(tmp_path / name))
    assert main(["evaluate", *paths, "--threshold", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spacing_mm"] == pytest.approx([0.9, 1.1, 2.0])  # what the viewer shows
    assert out["reference_volume_ml"] == pytest.approx(mask.sum() * 0.9 * 1.1 * 2.0e-3)


def test_probabilities_within_rounding_accepted_beyond_refused(pred_truth, tmp_path, capsys):
    import nibabel as nib

    _, truth, prob, mask = pred_truth
    # a uint8 map with scl_slope = 1/255: 255 decodes to 1.00000006
    levels = np.round(prob * 255).astype(np.uint8)
    levels[mask == 1] = 255  # certain voxels
    img = nib.Nifti1Image(levels, AFFINE)
    img.header.set_slope_inter(1 / 255, 0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    assert nib.load(tmp_path / "scaled.nii.gz").get_fdata().max() > 1.0
    assert main(["evaluate", str(tmp_path / "scaled.nii.gz"), truth, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == 0.5 and 0.9 < out["dice"] <= 1.0
    bad = prob.astype(np.float64)
    bad[3, 4, 5] = 1.01
    save_volume(tmp_path / "bad.nii.gz", bad, affine=AFFINE)
    assert main(["evaluate", str(tmp_path / "bad.nii.gz"), truth]) == 2
    err = one_line_error(capsys)
    # the file holds float32: its true extreme at full precision, not a rounded "1.01"
    assert "bad.nii.gz" in err and f"max {float(np.float32(1.01))!r}" in err and "min 0.0" in err


def test_healthy_subject_is_evaluated(tmp_path, capsys):
    z = np.zeros(SHAPE, dtype=np.float32)
    save_volume(tmp_path / "p.nii.gz", z, affine=AFFINE)
    save_volume(tmp_path / "t.nii.gz", z.astype(np.uint8), affine=AFFINE)
    assert main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "t.nii.gz"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["dice"], out["rvd"], out["hausdorff_mm"], out["ltpr"]) == (1.0, 0.0, 0.0, 1.0)


def test_infinite_values_are_explicit_in_json(pred_truth, tmp_path, capsys):
    pred, _, _, _ = pred_truth
    save_volume(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8), affine=AFFINE)
    assert main(["evaluate", pred, str(tmp_path / "empty.nii.gz"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rvd"] == "-inf" and out["hausdorff_mm"] == "inf"
    assert out["rater_entropy"] is None  # not applicable without raters


# ----------------------------------------------------------------------------- classes
@pytest.fixture()
def class_files(tmp_path):
    from scipy.special import softmax

    rng = np.random.default_rng(0)
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:16, 4:12] = 1
    labels[4:16, 12:18] = 2
    logits = 4.0 * np.stack([labels == k for k in range(3)]) + rng.normal(size=(3, *SHAPE))
    probs = softmax(logits, axis=0).astype(np.float32)
    for key, p in zip(("grey-matter", "white-matter"), probs[1:]):
        save_volume(tmp_path / f"sub_label-{key}.nii.gz", p, affine=AFFINE)
    save_volume(tmp_path / "truth.nii.gz", labels, affine=AFFINE)
    return tmp_path, probs, labels


def test_k_class_prediction_per_class_tables(class_files, capsys):
    from softseg import metrics as M

    folder, probs, labels = class_files
    pred = str(folder / "sub_label-white-matter.nii.gz")  # any of its files names it
    truth = str(folder / "truth.nii.gz")
    assert main(["evaluate", pred, truth, "--classes", "grey matter", "white matter",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # no background file: background = 1 - sum of the classes (float32 rounding: rtol 1e-5)
    want = M.evaluate_classes(probs[1:], labels, classes=["grey matter", "white matter"],
                              spacing=(0.9, 1.1, 2.0))
    for name in ("grey matter", "white matter"):
        assert out["classes"][name]["dice"] == pytest.approx(want.per_class[name]["dice"])
        assert out["classes"][name]["ece"] == pytest.approx(want.per_class[name]["ece"])
    assert out["overall"]["ece"] == pytest.approx(want.overall["ece"])
    assert out["binarisation"] == "argmax class"
    assert main(["evaluate", str(folder / "sub"), truth, "--classes", "grey matter",
                 "white matter", "--threshold", "0.4"]) == 0
    text = capsys.readouterr().out
    assert "grey matter" in text and "white matter" in text and "ECE (multi-class)" in text
    assert main(["evaluate", pred, truth, "--classes", "grey matter", "csf"]) == 2
    assert "sub_label-csf.nii.gz" in one_line_error(capsys)


def test_class_files_are_found_by_the_one_class_key_rule(class_files, capsys):
    """``--classes`` names go through :func:`softseg.dataset_json.class_key` (the rule the anatomy
    generator and dataset.json use): every space counts, so "white  matter" (two spaces) names
    ``_label-white--matter``, not ``_label-white-matter`` as evaluate's own rule once gave."""
    import shutil

    folder, _probs, _labels = class_files
    shutil.copy(folder / "sub_label-white-matter.nii.gz", folder / "sub_label-white--matter.nii.gz")
    (folder / "sub_label-white-matter.nii.gz").unlink()
    truth = str(folder / "truth.nii.gz")
    assert main(["evaluate", str(folder / "sub"), truth, "--classes", "grey matter",
                 "white  matter", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prediction"]["white--matter"].endswith("sub_label-white--matter.nii.gz")
    # the same classes from a dataset.json (the one schema; a short key is honoured)
    ds = folder / "dataset.json"
    ds.write_text(json.dumps({"classes": ["grey matter", {"name": "white matter", "key": "white--matter"}]}))
    assert main(["evaluate", str(folder / "sub"), truth, "--dataset-json", str(ds), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["classes"]["white matter"]["dice"] == out["classes"]["white  matter"]["dice"]
    # a dataset.json the schema refuses is one line naming the key (evaluate once parsed it by hand)
    ds.write_text(json.dumps({"classes": 5}))
    assert main(["evaluate", str(folder / "sub"), truth, "--dataset-json", str(ds)]) == 2
    assert "dataset.json: classes" in one_line_error(capsys)


def test_k_class_raters_as_per_class_files_are_refused_not_mismeasured(class_files, capsys):
    """Per-class rater files read as label maps would all count as class 1 (wrong Brier and rater
    entropy with exit 0, seen by a new user): refused in one line naming the file."""
    folder, _probs, labels = class_files
    raters = []
    for rater in ("rater-1", "rater-2"):
        for k, key in ((1, "grey-matter"), (2, "white-matter")):
            path = folder / f"{rater}_label-{key}.nii.gz"
            save_volume(path, (labels == k).astype(np.uint8), affine=AFFINE)
            raters.append(str(path))
    assert main(["evaluate", str(folder / "sub"), str(folder / "truth.nii.gz"), "--classes",
                 "grey matter", "white matter", "--raters", *raters]) == 2
    line = one_line_error(capsys)
    assert raters[0] in line and "one integer label map per rater" in line
    # the label maps of the same raters are accepted
    maps = []
    for rater in ("rater-1", "rater-2"):
        path = folder / f"{rater}.nii.gz"
        save_volume(path, labels, affine=AFFINE)
        maps.append(str(path))
    assert main(["evaluate", str(folder / "sub"), str(folder / "truth.nii.gz"), "--classes",
                 "grey matter", "white matter", "--raters", *maps, "--json"]) == 0


def test_a_mistyped_option_value_is_one_line(tmp_path, capsys):
    """argparse's own errors (a typo in a choice, an unknown option) are one line, exit 2."""
    for argv, needle in ((["fuse", "a.nii.gz", "b.nii.gz", "--method", "stapel", "-o", "f.nii.gz"],
                          "invalid choice: 'stapel'"),
                         (["evaluate", "p.nii.gz", "t.nii.gz", "--optimall"], "--optimall")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
        assert lines[0].startswith("softseg") and ": error: " in lines[0] and "--help" in lines[0]
    assert list(tmp_path.iterdir()) == []
