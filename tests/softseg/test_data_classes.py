"""softseg.data, K classes (issue 14, DESIGN 11): dataset.json classes / labels, per-rater
per-class files (binary, levels, soft) and integer label maps, refusals, pre-annotated raters,
K-class slices. Expected arrays are built by hand with numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softseg import data as D
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.io import save_volume
from softseg.sidecar import RaterSidecar, write_rater_sidecar

SHAPE = (6, 5, 4)
CLASSES = ["grey matter", {"name": "white matter", "key": "WM"}]


def _labels(seed):
    return np.random.default_rng(seed).integers(0, 3, size=SHAPE).astype(np.uint8)


def _image(seed=0):
    return np.random.default_rng(100 + seed).normal(size=SHAPE).astype(np.float32)


def _dataset(root, *, meta=None, n_subjects=2):
    """Two subjects, three raters: per-class binary files (1), an integer label map (2) and
    per-class level maps with a scale (3)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta or {"classes": CLASSES}))
    scale = ConfidenceScale((0.5, 1.0))
    truth = {}
    for s in range(n_subjects):
        sub = root / f"sub-{s + 1:02d}"
        sub.mkdir()
        save_volume(sub / "image.nii.gz", _image(s), affine=np.eye(4))
        lab1, lab2 = _labels(10 * s + 1), _labels(10 * s + 2)
        save_volume(sub / "rater-1_label-grey-matter.nii.gz", (lab1 == 1).astype(np.uint8), affine=np.eye(4))
        save_volume(sub / "rater-1_label-WM.nii.gz", (lab1 == 2).astype(np.uint8), affine=np.eye(4))
        save_volume(sub / "rater-2.nii.gz", lab2, affine=np.eye(4))
        rng = np.random.default_rng(10 * s + 3)
        cls3 = rng.integers(0, 3, size=SHAPE)
        lev3 = rng.integers(1, 3, size=SHAPE)  # level 1 (0.5) or 2 (1.0)
        for c, key in ((1, "grey-matter"), (2, "2")):  # the index works as a key too
            path = sub / f"rater-3_label-{key}.nii.gz"
            save_volume(path, np.where(cls3 == c, lev3, 0).astype(np.uint8), affine=np.eye(4))
            write_rater_sidecar(path, RaterSidecar(rater="3", kind="labels", scale=scale,
                                                   class_name=("grey matter", "white matter")[c - 1]))
        truth[sub.name] = (lab1, lab2, cls3, lev3)
    return truth


def _one_hot(labels, k=2):
    return np.stack([(labels == c).astype(np.float32) for c in range(k + 1)])


def test_scan_and_load_per_class_files_label_maps_and_levels(tmp_path):
    truth = _dataset(tmp_path / "ds")
    info = D.scan_dataset(tmp_path / "ds")
    assert info.classes == ("grey matter", "white matter") and info.keys == ("grey-matter", "WM")
    assert info.n_classes == 2 and info.rater_ids == ("1", "2", "3")
    sub = info.subjects[0]
    assert sub.kinds == ("classes", "labels", "classes") and sub.n_classes == 2
    assert [[p.name for p in f] for f in sub.rater_files] == [
        ["rater-1_label-grey-matter.nii.gz", "rater-1_label-WM.nii.gz"],
        ["rater-2.nii.gz"],
        ["rater-3_label-grey-matter.nii.gz", "rater-3_label-2.nii.gz"],
    ]
    data = D.load_subject(sub)
    assert data.raters.shape == (3, 3, *data.images.shape[1:]) and data.n_classes == 2
    lab1, lab2, cls3, lev3 = truth[sub.name]
    soft3 = np.where(lev3 == 2, 1.0, 0.5).astype(np.float32)
    fg3 = np.stack([np.where(cls3 == c, soft3, 0) for c in (1, 2)])
    expected = np.stack([_one_hot(lab1), _one_hot(lab2), np.concatenate([1 - fg3.sum(0, keepdims=True), fg3])])
    np.testing.assert_allclose(data.raters, data.geometry.to_display(expected), atol=1e-7)
    np.testing.assert_allclose(data.raters.sum(axis=1), 1.0, atol=1e-6)
    # the same rater read through load_rater, in file order
    values, vol = D.load_rater(sub, 1)
    np.testing.assert_array_equal(values, _one_hot(lab2))
    assert vol.path.name == "rater-2.nii.gz"


def test_nnunet_labels_give_the_classes(tmp_path):
    root = tmp_path / "ds"
    _dataset(root, meta={"labels": {"background": 0, "GM": 1, "WM": 2}}, n_subjects=1)
    for f in root.glob("sub-01/rater-*_label-*"):  # per-class files named by the labels' keys
        f.rename(f.with_name(f.name.replace("grey-matter", "GM").replace("_label-2", "_label-WM")))
    info = D.scan_dataset(root)
    assert info.classes == ("GM", "WM") and info.subjects[0].kinds == ("classes", "labels", "classes")


def test_single_class_dataset_unchanged_and_class_suffix_accepted(tmp_path):
    sub = tmp_path / "ds" / "a"
    sub.mkdir(parents=True)
    save_volume(sub / "image.nii.gz", _image(), affine=np.eye(4))
    save_volume(sub / "rater-1.nii.gz", (_labels(1) > 0).astype(np.uint8), affine=np.eye(4))
    save_volume(sub / "rater-2_label-lesion.nii.gz", (_labels(2) > 0).astype(np.uint8), affine=np.eye(4))
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"classes": ["lesion"]}))
    info = D.scan_dataset(tmp_path / "ds")
    s = info.subjects[0]
    assert info.n_classes == 1 and s.kinds == ("map", "map") and s.rater_kinds == ()
    data = D.load_subject(s)
    assert data.raters.shape == (2, *data.images.shape[1:]) and data.n_classes == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sub: (sub / "rater-1_label-WM.nii.gz").rename(sub / "rater-1_label-csf.nii.gz"),
         r"rater-1_label-csf.nii.gz: class 'csf' is not a class of .*dataset.json \(classes 1=grey matter, "
         r"2=white matter\); name per-class files"),
        (lambda sub: (sub / "rater-1_label-WM.nii.gz").unlink(),
         r"subject 'sub-01': rater '1' has per-class files but not rater-1_label-WM.nii.gz; every rater needs "
         r"one file per class"),
        (lambda sub: save_volume(sub / "rater-2_label-WM.nii.gz", np.zeros(SHAPE, np.uint8), affine=np.eye(4)),
         r"subject 'sub-01': rater '2' has both rater-2.nii.gz and rater-2_label-WM.nii.gz; keep one"),
        (lambda sub: save_volume(sub / "rater-1_label-1.nii.gz", np.zeros(SHAPE, np.uint8), affine=np.eye(4)),
         r"subject 'sub-01': rater-1_label-1.nii.gz and rater-1_label-grey-matter.nii.gz both hold class "
         r"'grey matter' of rater '1'; keep one"),
    ],
)
def test_layout_refusals_are_one_line(tmp_path, change, message):
    _dataset(tmp_path / "ds", n_subjects=1)
    change(tmp_path / "ds" / "sub-01")
    with pytest.raises(InputError, match=message) as exc:
        D.scan_dataset(tmp_path / "ds")
    assert "\n" not in str(exc.value)


def test_label_map_value_not_in_labels_is_refused(tmp_path):
    _dataset(tmp_path / "ds", n_subjects=1)
    bad = _labels(2)
    bad[0, 0, 0] = 3
    save_volume(tmp_path / "ds" / "sub-01" / "rater-2.nii.gz", bad, affine=np.eye(4), overwrite=True)
    info = D.scan_dataset(tmp_path / "ds")
    with pytest.raises(InputError, match=r"rater-2.nii.gz: holds label value 3, not a class of the dataset's "
                       r"classes \(0 = background, 1 = grey matter, 2 = white matter\)"):
        D.load_subject(info.subjects[0])
    save_volume(tmp_path / "ds" / "sub-01" / "rater-2.nii.gz", bad * np.float32(0.5), affine=np.eye(4),
                overwrite=True)
    with pytest.raises(InputError, match=r"rater-2.nii.gz: an integer label map .* holds \d\.5; soft or confidence "
                       "maps of a multi-class dataset go in per-class files"):
        D.load_subject(D.scan_dataset(tmp_path / "ds").subjects[0])


def test_per_class_soft_maps_summing_above_one_are_refused(tmp_path):
    _dataset(tmp_path / "ds", n_subjects=1)
    sub = tmp_path / "ds" / "sub-01"
    a = np.full(SHAPE, 0.6, np.float32)
    save_volume(sub / "rater-1_label-grey-matter.nii.gz", a, affine=np.eye(4), overwrite=True)
    save_volume(sub / "rater-1_label-WM.nii.gz", a, affine=np.eye(4), overwrite=True)
    info = D.scan_dataset(tmp_path / "ds")
    with pytest.raises(InputError, match=r"rater '1' .*: the per-class maps sum to 1.2\d* at voxel \(0, 0, 0\); "
                       "a voxel's classes must sum to at most 1"):
        D.load_subject(info.subjects[0])
    # within rounding (1 + 1e-6) is accepted and rescaled to sum 1
    b = np.full(SHAPE, 0.5000005, np.float32)
    save_volume(sub / "rater-1_label-grey-matter.nii.gz", b, affine=np.eye(4), overwrite=True)
    save_volume(sub / "rater-1_label-WM.nii.gz", b, affine=np.eye(4), overwrite=True)
    data = D.load_subject(D.scan_dataset(tmp_path / "ds").subjects[0])
    np.testing.assert_allclose(data.raters[0].sum(axis=0), 1.0, atol=1e-6)


def test_uncorrected_preannotation_is_refused_unless_allowed(tmp_path):
    _dataset(tmp_path / "ds", n_subjects=1)
    path = tmp_path / "ds" / "sub-01" / "rater-2.nii.gz"

    def mark(changed):
        record = {"model": "m.safetensors", "source": "file", "rule": "nearest level", "model_voxels": 40,
                  "rater_changed_voxels": changed}
        extra = {} if changed is None else {"preannotation": record}
        write_rater_sidecar(path, RaterSidecar(rater="2", kind="labels", preannotated_by="m.safetensors",
                                               extra=extra), overwrite=True)

    for changed in (0, None):  # nothing changed, or no record of what changed
        mark(changed)
        with pytest.raises(InputError, match=r"rater-2.nii.gz: pre-annotated by m.safetensors and not corrected "
                           r"by the rater; correct it .*or pass --allow-preannotated") as exc:
            D.scan_dataset(tmp_path / "ds")
        assert "\n" not in str(exc.value)
        assert D.scan_dataset(tmp_path / "ds", allow_preannotated=True).subjects[0].rater_ids == ("1", "2", "3")
    mark(7)  # a corrected pre-annotation is a rater's work
    assert D.scan_dataset(tmp_path / "ds").subjects[0].rater_ids == ("1", "2", "3")


def test_k_class_slices(tmp_path):
    _dataset(tmp_path / "ds")
    info = D.scan_dataset(tmp_path / "ds")
    subs = [D.load_subject(s) for s in info.subjects]
    prep = D.Preprocessing(spacing=(None, 0.5, 0.5), crop=(12, 12), channels=info.channels)
    rand = D.build_slices(subs, prep, fusion="random")
    s0 = subs[0].images.shape[1]
    assert rand.n_classes == 2 and [lab.shape[:3] for lab in rand.labels] == [(3, 2, s0)] * 2
    chosen = rand.label_array([2, 0])
    assert chosen.shape == (len(rand), 2, 12, 12)
    np.testing.assert_array_equal(chosen[:s0], np.moveaxis(rand.labels[0][2], 0, 1))
    assert chosen.sum(axis=1).max() <= 1 + 1e-6
    avg = D.build_slices(subs, prep, fusion="average")
    np.testing.assert_allclose(avg.label_array(), rand.label_array(), atol=1e-6)
    # the fused target is the class average of the native class maps, resampled (background dropped)
    target = D.fuse_raters(subs[0].raters, "average", n_classes=2, class_maps=True)
    np.testing.assert_allclose(target[0], subs[0].raters.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(avg.labels[0][0], D.preprocess_label(target[:, 1:], subs[0].spacing, prep)[0])
    for fusion in ("staple", "majority"):  # one-hot of a label per voxel, resampled linearly
        hard = D.build_slices(subs, prep, fusion=fusion).label_array()
        assert hard.shape == avg.label_array().shape and hard.sum(axis=1).max() <= 1 + 1e-6
