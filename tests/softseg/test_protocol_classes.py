"""K-class evaluation in the protocol: the label-map reference of a subject, and the per-class
tables of a repeated-training run, checked against numbers computed here with plain numpy.

The K-class predictions are arrays built in the test (softmax of random logits): they are what a
K-class model's ``predict_volume`` returns, class axis first, background at index 0.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from softseg import compare
from softseg.data import Subject, SubjectData
from softseg.errors import InputError
from softseg.geometry import display_geometry
from softseg.io import load_volume
from softseg.protocol import ProtocolConfig, class_reference
from softseg.protocol.run import _finish
from softseg.protocol.units import UnitEvaluation

CLASSES = ("grey matter", "white matter")
AFFINE = np.array([[-1.5, 0, 0, 10], [0, 1.0, 0, -4], [0, 0, 2.0, 3], [0, 0, 0, 1]])


def _subject(folder, shape=(6, 5, 4), raters=None, truth=None):
    """A subject folder with an image (and per-class truth files), loaded as the protocol does."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "image.nii.gz"
    rng = np.random.default_rng(1)
    nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), AFFINE), image)
    for key, values in (truth or {}).items():
        nib.save(nib.Nifti1Image(values.astype(np.float32), AFFINE),
                 folder / f"truth_label-{key}.nii.gz")
    vol = load_volume(image)
    geom = display_geometry(vol)
    images = geom.to_display(np.asarray(vol.array, dtype=np.float32)[None])
    rater_maps = (np.zeros((0, *images.shape[1:]), np.float32) if raters is None
                  else geom.to_display(raters.astype(np.float32)))
    data = SubjectData(name=folder.name, images=images, raters=rater_maps,
                       spacing=tuple(float(s) for s in geom.scale), geometry=geom)
    return Subject(name=folder.name, images=(image,), raters=(), rater_ids=()), data


def test_truth_reference_is_the_most_probable_class(tmp_path):
    shape = (6, 5, 4)
    rng = np.random.default_rng(0)
    gm = rng.choice([0.0, 0.25, 0.5, 0.75], size=shape)
    wm = np.where(gm > 0.5, 0.0, rng.choice([0.0, 0.25, 0.5], size=shape))
    subject, data = _subject(tmp_path / "sub-01", shape,
                             truth={"grey-matter": gm, "white-matter": wm})
    labels = class_reference(subject, data, "truth", CLASSES)
    # by hand, in file order: background 1 - gm - wm; the first class wins a tie (np.argmax)
    expected = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, data.geometry.to_display(expected))
    assert set(np.unique(labels)) == {0, 1, 2}


def test_missing_class_truth_is_named(tmp_path):
    subject, data = _subject(tmp_path / "sub-01", truth={"grey-matter": np.zeros((6, 5, 4))})
    with pytest.raises(InputError,
                       match=r"no truth_label-white-matter.nii.gz .*'white matter'.*staple"):
        class_reference(subject, data, "truth", CLASSES)


def test_fused_reference_is_the_label_vote(tmp_path):
    shape = (6, 5, 4)
    rng = np.random.default_rng(3)
    raters = rng.integers(0, 3, size=(3, *shape))
    split = (raters[0] != raters[1]) & (raters[1] != raters[2]) & (raters[0] != raters[2])
    raters[2][split] = raters[0][split]  # no three-way tie: a majority always exists
    subject, data = _subject(tmp_path / "sub-01", shape, raters=raters)
    votes = np.stack([(raters == k).sum(axis=0) for k in range(3)])
    expected = data.geometry.to_display(np.argmax(votes, axis=0))
    assert (votes.max(axis=0) >= 2).all()
    for method in ("majority", "average"):  # (STAPLE weights the raters: not a vote)
        np.testing.assert_array_equal(class_reference(subject, data, method, CLASSES), expected,
                                      err_msg=method)


def _probabilities(rng, shape):
    logits = rng.normal(scale=2.0, size=(3, *shape))
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def _dice(pred, ref):
    inter = np.logical_and(pred, ref).sum()
    return 2.0 * inter / (pred.sum() + ref.sum())


def test_per_class_tables_over_repeats(tmp_path):
    shape = (4, 8, 8)
    thresholds = (0.4, 0.3)
    rng = np.random.default_rng(7)
    state = {"dataset": "in memory", "units": {}}
    expected_dice = {c: {} for c in CLASSES}
    expected_accuracy = {}
    for cand in ("a", "b"):
        for k in range(2):
            ev = UnitEvaluation(cand, CLASSES, thresholds)
            dice = {c: [] for c in CLASSES}
            accuracy = []
            for s in ("s1", "s2"):
                probs = _probabilities(rng, shape)
                ref = rng.integers(0, 3, size=shape)
                ev.add(s, probs, ref, spacing=(1.0, 1.0, 1.0))
                for i, c in enumerate(CLASSES):
                    dice[c].append(_dice(probs[i + 1] >= thresholds[i], ref == i + 1))
                accuracy.append(np.mean(np.argmax(probs, axis=0) == ref))
            record = {"candidate": cand, "repeat": k, "test_group": None, **ev.record()}
            state["units"][f"{cand}/r{k}"] = json.loads(json.dumps(compare.json_safe(record)))
            for c in CLASSES:
                expected_dice[c][(cand, k)] = np.mean(dice[c])
            expected_accuracy[(cand, k)] = np.mean(accuracy)
    config = ProtocolConfig(candidates=("a", "b"), repeats=2, stats=False, reference=None)
    result = _finish(tmp_path, config, state, None)
    comparison = result.comparison
    assert set(comparison.per_class) == set(CLASSES)
    for c in CLASSES:
        for (cand, k), value in expected_dice[c].items():
            assert comparison.per_class[c].rows[cand][k]["dice"] == pytest.approx(value, abs=1e-12)
            assert comparison.per_class[c].rows[cand][k]["threshold"] == pytest.approx(
                thresholds[CLASSES.index(c)])
    for (cand, k), value in expected_accuracy.items():
        assert comparison.rows[cand][k]["accuracy"] == pytest.approx(value, abs=1e-12)
    # the report: one summary per class, mean over repeats as in the table
    files = sorted(p.name for p in tmp_path.glob("summary_*.csv"))
    assert len(files) == 2, files
    with open(tmp_path / files[0], newline="") as fh:
        rows = {r["candidate"]: r for r in csv.DictReader(fh)}
    first = "grey matter" if "grey" in files[0] else "white matter"
    mean_a = np.mean([expected_dice[first][("a", k)] for k in range(2)])
    assert float(rows["a"]["dice_mean"]) == pytest.approx(mean_a, abs=1e-12)
