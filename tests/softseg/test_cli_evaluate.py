"""``softseg evaluate`` driven through ``softseg.cli.main`` on NIfTI files: the one metric table,
voxel size from the affine, probabilities within rounding of [0, 1], K-class predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from softseg.cli import main
from softseg.io import save_volume

AFFINE = np.array(
    [[0.9, 0, 0, -10.0], [0, 1.1, 0, 5.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]], dtype=np.float64
)
SHAPE = (20, 22, 12)


def _raters() -> np.ndarray:
    z = np.indices(SHAPE, sparse=True)
    r2 = sum(((zi - s / 2) / (s / 4)) ** 2 for zi, s in zip(z, SHAPE))
    blob = r2 < 1.0
    return np.stack(
        [blob, ndimage.binary_dilation(blob), ndimage.binary_erosion(blob), np.roll(blob, 1, 0)]
    ).astype(np.uint8)


@pytest.fixture()
def rater_files(tmp_path):
    paths = []
    for i, r in enumerate(_raters()):
        path = tmp_path / f"rater-{i}.nii.gz"
        save_volume(path, r, affine=AFFINE)
        paths.append(str(path))
    return paths


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    return err


# ------------------------------------------------------------------------------- evaluate
@pytest.fixture()
def pred_truth(tmp_path):
    raters = _raters()
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
    err = _one_line_error(capsys)
    assert "pred.nii.gz" in err and "other.nii.gz" in err and "(20, 22, 11)" in err
    big = tmp_path / "big.nii.gz"
    save_volume(big, prob * 3, affine=AFFINE)
    assert main(["evaluate", str(big), truth]) == 2
    assert "[0, 1]" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", pred, truth, "--threshold", "0.5", "--optimal"])
    assert exc.value.code == 2
