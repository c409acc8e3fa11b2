"""Rater sidecars: every shape softseg ever wrote is read by the sidecar reader, the trainer and
``softseg fuse``; bad sidecars are one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softseg.cli import main
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.io import load_volume, save_volume, sidecar_path
from softseg.sidecar import (
    RaterSidecar,
    parse_rater_sidecar,
    rater_values,
    read_rater_sidecar,
    write_rater_sidecar,
)

SCALE = ConfidenceScale.from_paper()  # 0.25, 0.5, 1: distinct from the default 1/3, 2/3, 1
SHAPE = (6, 7, 5)
AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def _levels(seed: int) -> np.ndarray:
    """A level map 0..3 with every level present."""
    rng = np.random.default_rng(seed)
    lv = rng.integers(0, 4, size=SHAPE).astype(np.uint8)
    lv.flat[:4] = [0, 1, 2, 3]
    return lv


# Every sidecar shape the product wrote (from `git log -p`), with a confidence scale where the
# shape carried one. Each entry: (written_by, sidecar dict, has scale).
SHAPES = {
    # Soft annotation widget's Export (a4472a6), as levels
    "export": (
        "export",
        {
            "rater": "dr-a",
            "kind": "labels",
            "softseg_confidence": SCALE.as_dict(),
            "source_image": "/data/sub-01/image.nii.gz",
            "exported_at": "2024-05-01T10:00:00+00:00",
            "software": "napari-softseg 0.3.0",
        },
        True,
    ),
    # napari writer (1ae4717): label_sidecar of a layer read with a sidecar
    "napari_writer": (
        "export",
        {"kind": "labels", "rater": "dr-a", "softseg_confidence": SCALE.as_dict()},
        True,
    ),
    # autosave format 1 (e9065c3): one JSON per rater, scale under "confidence_scale"
    "autosave_v1": (
        "autosave",
        {
            "format": "softseg-autosave/1",
            "rater": "dr-a",
            "saved_at": "2024-05-01T10:00:00+00:00",
            "saved_at_unix": 1714557600.0,
            "source_image": None,
            "shape": list(SHAPE),
            "dtype": "|u1",
            "order": "file",
            "sha1": "0" * 40,
            "confidence_scale": SCALE.as_dict(),
        },
        True,
    ),
    # layers_dataset (713703a) and a bare scale ({"values", "names"} and {"levels"})
    "layers_dataset": ("scale", {"softseg_confidence": SCALE.as_dict()}, True),
    "bare_values": ("scale", {"values": list(SCALE.values), "names": list(SCALE.names)}, True),
    "bare_levels": ("scale", SCALE.as_dict(), True),
    # phantom raters (3874473)
    "phantom": ("sample-data", {"rater": "1", "kind": "labels"}, False),
    # softseg fuse (fccd39b) and the Fuse widget's Save (8946303)
    "fuse_cli": ("fuse", {"softseg_fusion": {"method": "majority", "inputs": ["a", "b"]}}, False),
    "fuse_widget": (
        "fuse",
        {
            "kind": "labels",
            "fusion": {"method": "majority vote", "raters": ["a", "b"]},
            "saved_at": "2024-05-01T10:00:00+00:00",
            "software": "napari-softseg 0.3.0",
        },
        False,
    ),
    # softseg predict --binarize (6526fb1): kind "mask"
    "predict": (
        "predict",
        {
            "model": "/m/softseg.safetensors",
            "candidate": "softseg",
            "candidate_title": "SoftSeg",
            "threshold": 0.45,
            "binarized": True,
            "kind": "mask",
            "sources": ["/data/image.nii.gz"],
            "softseg_version": "0.3.0",
        },
        False,
    ),
    # Threshold widget's applied mask (8836030)
    "threshold": ("threshold", {"softseg_threshold": {"threshold": 0.45}}, False),
    # the anatomy generator's per-class rater files (multi-class contract)
    "anatomy_class": ("sample-data", {"rater": "2", "kind": "labels", "class": "grey matter"}, False),
}


def _write_pair(folder, name, shape_key, seed):
    written_by, side, has_scale = SHAPES[shape_key]
    data = _levels(seed) if has_scale else (_levels(seed) >= 2).astype(np.uint8)
    path = folder / f"{name}.nii.gz"
    save_volume(path, data, affine=AFFINE)
    sidecar_path(path).write_text(json.dumps(side), encoding="utf-8")
    return path, data


@pytest.mark.parametrize("shape_key", sorted(SHAPES))
def test_every_written_shape_is_read_by_the_reader_the_trainer_and_fuse(shape_key, tmp_path, capsys):
    from softseg.data import rater_to_soft

    written_by, side, has_scale = SHAPES[shape_key]
    paths, arrays = zip(*(_write_pair(tmp_path, f"rater-{i}", shape_key, seed=i) for i in range(2)))
    # 1. the sidecar reader
    read = read_rater_sidecar(paths[0])
    assert read is not None and read.written_by == written_by
    if has_scale:
        assert read.scale == SCALE
    else:
        assert read.scale is None
    if "rater" in side:
        assert read.rater == str(side["rater"])
    if shape_key == "predict":
        assert read.kind == "labels" and read.prediction["threshold"] == 0.45
    if shape_key.startswith("fuse"):
        assert read.fusion["raters" if shape_key == "fuse_widget" else "inputs"] == ["a", "b"]
    if shape_key == "anatomy_class":
        assert read.class_name == "grey matter"
    # 2. the trainer's reading of a rater file (through the same sidecar and conversion)
    expected = [SCALE.to_soft(a) if has_scale else a.astype(np.float32) for a in arrays]
    soft = rater_to_soft(load_volume(paths[0], label=True))
    np.testing.assert_array_equal(soft, expected[0])
    # ... which is rater_values, the reading fuse and evaluate share (binary stays uint8 0/1)
    values, kind = rater_values(load_volume(paths[0], label=True))
    assert kind == ("levels" if has_scale else "binary")
    assert values.dtype == (np.float32 if has_scale else np.uint8)
    np.testing.assert_array_equal(values, expected[0])
    # 3. softseg fuse (average: the mean of the converted raters)
    out = tmp_path / "avg.nii.gz"
    assert main(["fuse", *map(str, paths), "--method", "average", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_kinds"] == (["levels", "levels"] if has_scale else ["binary", "binary"])
    np.testing.assert_allclose(load_volume(out).array, (expected[0] + expected[1]) / 2, atol=1e-7)


def test_autosave_snapshots_are_rater_files(tmp_path):
    """A current autosave snapshot (format 2, written by softseg.autosave) reads like an export."""
    from softseg import autosave
    from softseg.data import rater_to_soft

    levels = _levels(3)
    snap = autosave.write_snapshot(tmp_path, "dr-b", levels, session="abcd1234", scale=SCALE)
    read = read_rater_sidecar(snap)
    assert read.written_by == "autosave" and read.rater == "dr-b" and read.scale == SCALE
    np.testing.assert_array_equal(rater_to_soft(load_volume(snap, label=True)), SCALE.to_soft(levels))


def test_phantom_sidecars_written_by_the_phantom_writer(tmp_path):
    from softseg.phantom import phantom, write_phantom_files

    files = write_phantom_files(tmp_path, phantom(shape=(20, 20, 8), n_raters=2, seed=1))
    read = read_rater_sidecar(files["rater-1"])
    assert read.rater == "1" and read.kind == "labels" and read.scale is None
    lesions = read_rater_sidecar(files["lesions"])
    assert lesions.kind == "labels" and lesions.extra["description"] == "lesions"
    assert read_rater_sidecar(files["image"]) is None


def test_fuse_output_sidecar_round_trips(tmp_path, capsys):
    paths = [_write_pair(tmp_path, f"r{i}", "phantom", seed=i)[0] for i in range(3)]
    out = tmp_path / "fused.nii.gz"
    assert main(["fuse", *map(str, paths), "--method", "majority", "-o", str(out)]) == 0
    read = read_rater_sidecar(out)
    assert read.written_by == "fuse" and read.kind == "labels"
    assert read.fusion["method"] == "majority" and len(read.fusion["raters"]) == 3
    assert read.software.startswith("softseg ")


def test_to_json_is_the_export_shape_and_keeps_unknown_keys(tmp_path):
    side = RaterSidecar(
        rater="dr-a",
        kind="labels",
        scale=SCALE,
        class_name="white matter",
        preannotated_by="models/softseg.safetensors",
        software="napari-softseg 0.4.0",
        extra={"SkullStripped": True},
    )
    path = tmp_path / "rater-dr-a_label-white-matter.nii.gz"
    written = write_rater_sidecar(path, side)
    assert written == tmp_path / "rater-dr-a_label-white-matter.json"
    data = json.loads(written.read_text())
    assert data == {
        "rater": "dr-a",
        "kind": "labels",
        "softseg_confidence": SCALE.as_dict(),
        "class": "white matter",
        "preannotated_by": "models/softseg.safetensors",
        "software": "napari-softseg 0.4.0",
        "SkullStripped": True,
    }
    assert read_rater_sidecar(path) == side
    with pytest.raises(InputError, match="already exists"):
        write_rater_sidecar(path, side)


def test_unknown_keys_are_kept_not_refused():
    read = parse_rater_sidecar({"rater": 7, "SkullStripped": True, "Sources": ["x"]}, source="x.json")
    assert read.rater == "7" and read.extra == {"SkullStripped": True, "Sources": ["x"]}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2]", r"^.*r\.json: a sidecar must be a JSON object.*got list$"),
        ('{"rater": [1]}', r"r\.json: rater"),
        ('{"kind": "blob"}', r"r\.json: kind: Input should be 'labels'"),
        ('{"softseg_confidence": {"values": [2]}}', r"r\.json: softseg_confidence: confidence values must lie in \(0, 1\]"),
        ('{"confidence_scale": {"values": [0.5, 0.2]}}', r"r\.json: confidence_scale: .*increase"),
        ('{"model": "m", "threshold": "abc"}', r"r\.json: threshold: Input should be a valid number"),
        ('{"rater": "a",', r"r\.json: not valid JSON"),
        ("[" * 100 + "]" * 100, r"r\.json: JSON nested deeper than"),
    ],
)
def test_bad_sidecars_are_one_line_naming_the_file(tmp_path, text, match):
    path = tmp_path / "r.nii.gz"
    save_volume(path, np.zeros(SHAPE, np.uint8), affine=AFFINE)
    sidecar_path(path).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=match) as info:
        read_rater_sidecar(path)
    assert "\n" not in str(info.value)


def test_non_utf8_and_non_regular_sidecars(tmp_path):
    import os

    path = tmp_path / "r.nii.gz"
    sidecar_path(path).write_bytes(b'{"rater": "\xff"}')
    with pytest.raises(InputError, match=r"r\.json: not UTF-8"):
        read_rater_sidecar(path)
    sidecar_path(path).unlink()
    os.mkfifo(sidecar_path(path))  # a FIFO would block a plain open() forever
    with pytest.raises(InputError, match="not a regular file"):
        read_rater_sidecar(path)
    assert read_rater_sidecar(tmp_path / "none.nii.gz") is None
