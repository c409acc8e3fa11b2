"""``softseg interpolate`` driven through ``softseg.cli.main`` on NIfTI files."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from softseg.cli import main
from softseg.cli.interpolate import parse_slices
from softseg.confidence import ConfidenceScale
from softseg.interpolate import interpolate_labels, interpolate_levels
from softseg.sidecar import RaterSidecar, read_rater_sidecar

from cli_support import one_line_error

# File axes: 0 -> superior (the axial slice axis), 1 -> left (flipped: R->L), 2 -> anterior.
# The display slice axis is file axis 0, so --axis auto must pick 0, not the usual 2.
AFFINE = np.array(
    [[0.0, -0.9, 0.0, 40.0], [0.0, 0.0, 1.1, -30.0], [2.0, 0.0, 0.0, -20.0], [0, 0, 0, 1]]
)
SHAPE = (25, 30, 28)  # (S-I slices, L-R, A-P)
SPACING = (2.0, 0.9, 1.1)


def _levels() -> np.ndarray:
    g = np.indices(SHAPE, sparse=True)
    r = np.sqrt(sum(((gi - c) * s) ** 2 for gi, c, s in zip(g, (12, 15, 14), SPACING)))
    return ((r <= 18).astype(np.uint8) + (r <= 12) + (r <= 6)).astype(np.uint8)


PAINTED = list(range(4, 21, 4))  # 4, 8, 12, 16, 20 on file axis 0


def _write(path, array, sidecar=None):
    img = nib.Nifti1Image(array, AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=2)
    img.header["descrip"] = b"painted by rater A"
    nib.save(img, path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


@pytest.fixture()
def rater(tmp_path):
    sparse = np.zeros(SHAPE, np.uint8)
    sparse[PAINTED] = _levels()[PAINTED]
    side = RaterSidecar(
        rater="A", kind="labels", scale=ConfidenceScale.default(), class_name="lesion",
        preannotated_by="model-7.safetensors", extra={"BIDSVersion": "1.9"},
    ).to_json()
    return _write(tmp_path / "rater-A.nii.gz", sparse, side)


def test_round_trip_keeps_geometry_header_dtype_and_scale(rater, tmp_path, capsys):
    out = tmp_path / "filled.nii.gz"
    assert main(["interpolate", str(rater), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "filled 12 slices between 5 painted slices along file axis 0 (axial, S)" in text
    src, img = nib.load(rater), nib.load(out)
    np.testing.assert_array_equal(img.affine, src.affine)
    for key in ("qform_code", "sform_code", "pixdim", "descrip", "xyzt_units", "dim"):
        np.testing.assert_array_equal(img.header[key], src.header[key])
    np.testing.assert_array_equal(img.header.get_sform(), src.header.get_sform())
    assert img.get_data_dtype() == np.uint8
    data, before = np.asarray(img.dataobj), np.asarray(src.dataobj)
    np.testing.assert_array_equal(data[PAINTED], before[PAINTED])
    # the command gives exactly what the Python function gives (one engine)
    want = interpolate_levels(before, axis=0, spacing=SPACING, n_levels=3).filled
    np.testing.assert_array_equal(data, want)
    # ... and it is a good fill of the true level map
    truth = _levels()
    inner = slice(PAINTED[0], PAINTED[-1] + 1)
    for k in (1, 2):
        a, b = data[inner] >= k, truth[inner] >= k
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.9

    side = read_rater_sidecar(out)
    assert side.scale == ConfidenceScale.default()
    assert (side.rater, side.kind, side.class_name) == ("A", "labels", "lesion")
    assert side.preannotated_by == "model-7.safetensors"
    assert side.extra["BIDSVersion"] == "1.9"
    rec = side.extra["interpolation"]
    assert rec["axis"] == 0 and rec["axis_code"] == "S" and rec["orientation"] == "axial"
    assert rec["painted"] == PAINTED
    assert rec["interpolated"] == [i for i in range(4, 21) if i % 4]
    assert rec["kind"] == "levels" and rec["source"] == str(rater)
    assert rec["changed_voxels"] == int(np.count_nonzero(data != before))


def test_axis_choice(rater, tmp_path, capsys):
    auto, zero, two = (tmp_path / f"{n}.nii.gz" for n in ("auto", "zero", "two"))
    assert main(["interpolate", str(rater), "-o", str(auto), "--axis", "auto"]) == 0
    assert main(["interpolate", str(rater), "-o", str(zero), "--axis", "0"]) == 0
    np.testing.assert_array_equal(
        np.asarray(nib.load(auto).dataobj), np.asarray(nib.load(zero).dataobj)
    )
    # file axis 2 (anterior: coronal slices): every coronal slice crossing the sphere holds paint
    assert main(["interpolate", str(rater), "-o", str(two), "--axis", "2"]) == 0
    assert "along file axis 2 (coronal, A)" in capsys.readouterr().out
    rec = read_rater_sidecar(two).extra["interpolation"]
    assert rec["axis"] == 2 and rec["axis_code"] == "A" and rec["interpolated"] == []


def test_json_summary(rater, tmp_path, capsys):
    out = tmp_path / "o.nii.gz"
    assert main(["interpolate", str(rater), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out)
    assert summary["sidecar"] == str(tmp_path / "o.json")
    assert summary["interpolated"] == read_rater_sidecar(out).extra["interpolation"]["interpolated"]


def test_listed_empty_slice_ends_the_structure(tmp_path, capsys):
    m = np.zeros(SHAPE, np.uint8)
    m[4, 10:20, 10:20] = 1
    path = _write(tmp_path / "mask.nii.gz", m)  # binary, no sidecar: fine
    out = tmp_path / "o.nii.gz"
    assert main(["interpolate", str(path), "-o", str(out), "--slices", "4,12"]) == 0
    data = np.asarray(nib.load(out).dataobj)
    areas = [int(data[i].sum()) for i in range(4, 13)]
    assert areas[0] == 100 and areas[1] > areas[2] > areas[3] > 0 and areas[4:] == [0] * 5
    side = read_rater_sidecar(out)
    assert side.kind == "labels" and side.scale is None
    assert side.extra["interpolation"]["painted"] == [4, 12]


def test_multiclass_label_map(tmp_path, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, 5:15, 5:25] = 1
    labels[:, 15:25, 5:25] = 2
    labels[8, 15:25, 5:25] = 1  # the interface moves on slice 8
    sparse = np.zeros_like(labels)
    sparse[[0, 8, 16]] = labels[[0, 8, 16]]
    path = _write(tmp_path / "rater-B.nii.gz", sparse)
    out = tmp_path / "o.nii.gz"
    assert main(["interpolate", str(path), "-o", str(out), "--classes", "2"]) == 0
    data = np.asarray(nib.load(out).dataobj)
    want = interpolate_labels(sparse, axis=0, spacing=SPACING, n_classes=2).filled
    np.testing.assert_array_equal(data, want)
    assert set(np.unique(data[1:8])) == {0, 1, 2}
    rec = read_rater_sidecar(out).extra["interpolation"]
    assert rec["kind"] == "labels" and rec["classes"] == ["background", "1", "2"]
    # the same with the classes named in a dataset.json
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"classes": ["grey matter", "white matter"]}))
    out2 = tmp_path / "o2.nii.gz"
    assert main(["interpolate", str(path), "-o", str(out2), "--dataset-json", str(ds)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out2).dataobj), data)
    assert read_rater_sidecar(out2).extra["interpolation"]["classes"][1] == "grey matter"


def test_overwrite(rater, tmp_path, capsys):
    out = tmp_path / "o.nii.gz"
    assert main(["interpolate", str(rater), "-o", str(out)]) == 0
    stamp = out.stat().st_mtime_ns
    assert main(["interpolate", str(rater), "-o", str(out)]) == 2
    assert "already exists" in one_line_error(capsys)
    assert out.stat().st_mtime_ns == stamp
    assert main(["interpolate", str(rater), "-o", str(out), "--overwrite"]) == 0


def test_parse_slices():
    assert parse_slices("10,15,20-22") == [10, 15, 20, 21, 22]
    assert parse_slices(" 3 , 5 - 6") == [3, 5, 6]
    for bad in ("a", "3-", "-1", "5-2", "1.5", ""):
        with pytest.raises(Exception, match="--slices"):
            parse_slices(bad)


def _sparse(values) -> np.ndarray:
    m = np.zeros(SHAPE, np.float32)
    m[4, 10:20, 10:20] = values
    m[12, 12:18, 12:18] = values
    return m


@pytest.mark.parametrize(
    "array, sidecar, extra, match",
    [
        (_sparse(0.4), None, [], "holds soft \\(fractional\\) values"),
        (_sparse(1.0), {"kind": "soft"}, [], "its sidecar says it is a soft map"),
        (_sparse(3.0), None, [], "holds confidence levels up to 3 but has no confidence scale"),
        (_sparse(5.0), {"softseg_confidence": {"values": [0.5, 1.0]}}, [],
         "slices 4, 12 along axis 0 hold levels up to 5 but the confidence scale has levels 1..2"),
        (np.pad(np.ones((1, 30, 28), np.float32), ((7, 17), (0, 0), (0, 0))), None, [],
         "holds paint on 1 slice along axis 0 \\(slice 7\\); interpolation needs at least two"),
        (_sparse(1.0), None, ["--slices", "4"], "1 painted slice given along axis 0"),
        (_sparse(1.0), None, ["--slices", "4,99"], "99 out of range; axis 0 has slices 0..24"),
        (_sparse(1.0), None, ["--slices", "4,x"], "--slices: 'x' is not a slice index"),
        (_sparse(3.0), None, ["--classes", "2"], "holds label value 3, not a class of --classes"),
        (_sparse(1.0), None, ["--classes", "2", "--dataset-json", "d.json"], "not both"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, array, sidecar, extra, match):
    path = _write(tmp_path / "rater.nii.gz", array, sidecar)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "o.nii.gz"
    assert main(["interpolate", str(path), "-o", str(out), *extra]) == 2
    err = one_line_error(capsys)
    assert err.startswith("softseg interpolate: error: ")
    assert re.search(match, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bad_output_name(rater, tmp_path, capsys):
    assert main(["interpolate", str(rater), "-o", str(tmp_path / "o.png")]) == 2
    assert "output must end in .nii or .nii.gz" in one_line_error(capsys)
