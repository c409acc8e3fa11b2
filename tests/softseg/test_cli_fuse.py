"""``softseg fuse`` driven through ``softseg.cli.main`` on NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from softseg.cli import main
from softseg.io import load_volume, save_volume

sitk = pytest.importorskip("SimpleITK")

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
    ref = sitk.GetArrayFromImage(filt.Execute([sitk.GetImageFromArray(r) for r in _raters()]))
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
    crop = _raters()[(slice(None), *(slice(a, b) for a, b in box))]
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
    np.testing.assert_allclose(np.asarray(img.dataobj), expected(_raters()), atol=1e-7)
    side = json.loads((tmp_path / f"{method}.json").read_text())["fusion"]
    assert side["sensitivity_specificity"].startswith("each rater against the fused map")


def test_fuse_confidence_levels_need_soft(tmp_path, capsys):
    from softseg.confidence import METADATA_KEY, ConfidenceScale

    scale = ConfidenceScale.default()
    raters = _raters()
    levels = raters * np.array([3, 2, 3, 1], dtype=np.uint8)[:, None, None, None]
    paths = []
    for i, lv in enumerate(levels):
        path = tmp_path / f"lv-{i}.nii.gz"
        save_volume(path, lv, affine=AFFINE, sidecar={METADATA_KEY: scale.as_dict()})
        paths.append(str(path))
    out = tmp_path / "soft.nii.gz"
    assert main(["fuse", *paths, "-o", str(out)]) == 2
    err = _one_line_error(capsys)
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
    err = _one_line_error(capsys)
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
    save_volume(moved, _raters()[1], affine=shifted)
    assert main(["fuse", rater_files[0], str(moved), "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "moved.nii.gz" in err and "affine" in err
    # a single rater
    assert main(["fuse", rater_files[0], "-o", str(out)]) == 2
    assert "at least two" in _one_line_error(capsys)
    # NaN in a soft rater
    nan = tmp_path / "nan.nii.gz"
    data = _raters()[0].astype(np.float32)
    data[0, 0, 0] = np.nan
    save_volume(nan, data, affine=AFFINE)
    assert main(["fuse", rater_files[0], str(nan), "--method", "average", "-o", str(out)]) == 2
    assert "NaN" in _one_line_error(capsys)
    # soft maps given to a hard method
    soft = tmp_path / "soft.nii.gz"
    save_volume(soft, _raters()[0] * np.float32(0.5), affine=AFFINE)
    assert main(["fuse", rater_files[0], str(soft), "--method", "union", "-o", str(out)]) == 2
    assert "binary" in _one_line_error(capsys)
    assert not out.exists() and not (tmp_path / "bad.json").exists()
    assert not list(tmp_path.glob(".bad*"))  # no temporary leftovers


def test_fuse_existing_output_needs_overwrite(rater_files, tmp_path, capsys):
    out = tmp_path / "fused.nii.gz"
    out.write_bytes(b"keep me")
    assert main(["fuse", *rater_files, "-o", str(out)]) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert out.read_bytes() == b"keep me"
    assert main(["fuse", *rater_files, "-o", str(out), "--overwrite"]) == 0
    assert load_volume(out).shape == SHAPE


def test_fuse_progress_bar_on_stderr(rater_files, tmp_path, capsys):
    out = tmp_path / "p.nii.gz"
    assert main(["fuse", *rater_files, "-o", str(out), "--progress", "always"]) == 0
    err = capsys.readouterr().err
    assert "softseg fuse [" in err and "4/6 " in err and "5/6 " in err and "6/6 " in err
