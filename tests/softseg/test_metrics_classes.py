"""softseg.metrics.evaluate_classes: per-class tables of a K-class prediction and the multi-class
ECE of the label-fusion paper, by hand and against SimpleITK's per-label overlap measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from softseg import compare
from softseg import metrics as M
from softseg.errors import InputError

CLASSES = ["grey matter", "white matter"]
# four voxels; class axis first: background, grey matter, white matter
PROBS = np.array(
    [
        [0.7, 0.2, 0.1, 0.34],
        [0.2, 0.5, 0.1, 0.33],
        [0.1, 0.3, 0.8, 0.33],
    ]
)
LABELS = np.array([0, 2, 2, 1])


def test_multiclass_ece_and_argmax_tables_by_hand():
    ce = M.evaluate_classes(PROBS, LABELS, classes=CLASSES)
    # argmax 0, 1, 2, 0 vs labels 0, 2, 2, 1: correct T F T F; confidences .7 .5 .8 .34 in
    # bins 7, 5, 8, 3 (10 bins): ECE = mean |accuracy - confidence| (label-fusion paper, eq. 5)
    assert ce.overall["ece"] == pytest.approx((0.3 + 0.5 + 0.2 + 0.34) / 4)
    assert ce.overall["accuracy"] == pytest.approx(2 / 4)
    assert ce.reliability.count.sum() == 4
    gm, wm = ce.per_class["grey matter"], ce.per_class["white matter"]
    # grey matter: predicted at voxel 1, true at voxel 3
    assert (gm["dice"], gm["precision"], gm["recall"]) == (0.0, 0.0, 0.0)
    # white matter: predicted at voxel 2, true at voxels 1 and 2
    assert wm["dice"] == pytest.approx(2 / 3)
    assert (wm["precision"], wm["recall"]) == (1.0, 0.5)
    assert math.isnan(wm["threshold"]) and math.isnan(ce.thresholds["white matter"])
    # ECE of one class (one-vs-rest): p = .1 .3 .8 .33 vs [0 1 1 0]: confidences .9 .7 .8 .67,
    # predicted [0 0 1 0] -> correct T F T T
    assert wm["ece"] == pytest.approx((0.1 + 0.7 + 0.2 + 0.33) / 4)
    assert wm["soft_volume_ml"] == pytest.approx((0.1 + 0.3 + 0.8 + 0.33) * 1e-3)


def test_class_thresholds_and_the_background_left_out():
    at = M.evaluate_classes(PROBS, LABELS, classes=CLASSES, thresholds=0.3)
    # white matter p >= 0.3 -> voxels 1, 2, 3 vs true 1, 2: TP 2, FP 1
    assert at.per_class["white matter"]["dice"] == pytest.approx(4 / 5)
    assert at.per_class["white matter"]["threshold"] == 0.3
    by_name = M.evaluate_classes(PROBS, LABELS, classes=CLASSES,
                                 thresholds={"grey matter": 0.6, "white matter": 0.3})
    assert by_name.per_class["white matter"] == at.per_class["white matter"]
    assert by_name.per_class["grey matter"]["binary_volume_ml"] == 0.0
    # K maps without the background: background = 1 - sum, same tables
    no_bg = M.evaluate_classes(PROBS[1:], LABELS, classes=CLASSES)
    full = M.evaluate_classes(PROBS, LABELS, classes=CLASSES)
    for name in CLASSES:
        for key, value in full.per_class[name].items():
            assert no_bg.per_class[name][key] == pytest.approx(value, nan_ok=True), key
    assert no_bg.overall["ece"] == pytest.approx(full.overall["ece"])


def test_soft_class_reference_and_rater_average():
    ref = np.array(
        [
            [1.0, 0.0, 0.0, 0.2],
            [0.0, 0.4, 0.0, 0.8],
            [0.0, 0.6, 1.0, 0.0],
        ]
    )
    ce = M.evaluate_classes(PROBS, ref, classes=CLASSES, rater_average=ref)
    # the reference class is the argmax of the soft maps: 0, 2, 2, 1 (as LABELS)
    assert ce.overall["ece"] == pytest.approx((0.3 + 0.5 + 0.2 + 0.34) / 4)
    wm = ce.per_class["white matter"]
    assert wm["dice"] == pytest.approx(2 / 3)  # reference >= 0.5: voxels 1, 2
    assert wm["brier"] == pytest.approx(np.mean((PROBS[2] - ref[2]) ** 2))
    assert wm["reference_volume_ml"] == pytest.approx(1.6e-3)


def test_per_class_dice_matches_simpleitk_label_overlap():
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 9, 10, 7))
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    labels = np.argmax(logits + rng.normal(scale=0.8, size=logits.shape), axis=0)
    names = ["a", "b", "c"]
    ce = M.evaluate_classes(probs, labels, classes=names)
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(sitk.GetImageFromArray(probs.argmax(axis=0).astype(np.uint8)),
              sitk.GetImageFromArray(labels.astype(np.uint8)))
    for k, name in enumerate(names, start=1):
        assert ce.per_class[name]["dice"] == pytest.approx(f.GetDiceCoefficient(k), rel=1e-12)
    assert ce.overall["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=0) == labels))


def test_per_class_plot_data():
    ce, curves = compare.evaluate_subject_classes(PROBS, LABELS, classes=CLASSES,
                                                  sweep=[0.2, 0.5])
    assert set(curves) == set(CLASSES)
    # white matter p >= 0.2 -> voxels 1, 2, 3 (TP 2, FP 1); p >= 0.5 -> voxel 2 (TP 1)
    np.testing.assert_allclose(curves["white matter"].dice[0], [4 / 5, 2 / 3])
    assert curves["white matter"].rel_count.sum() == 4
    assert ce.per_class["white matter"]["dice"] == pytest.approx(2 / 3)


def test_bad_class_input_is_one_line():
    with pytest.raises(InputError, match=r"sum to 1\.1.*voxel \(0,\)"):
        M.evaluate_classes(np.array([[0.6, 0.1], [0.5, 0.1]]), np.array([1, 0]),
                           classes=CLASSES)
    with pytest.raises(InputError, match=r"labels must lie in 0\.\.2; got 0\.\.3"):
        M.evaluate_classes(PROBS, np.array([0, 3, 1, 1]), classes=CLASSES)
    with pytest.raises(InputError, match="expected"):
        M.evaluate_classes(PROBS, LABELS, classes=["a", "b", "c", "d"])  # 3 maps for 4 classes
    with pytest.raises(InputError, match="listed twice"):
        M.evaluate_classes(PROBS, LABELS, classes=["a", "a"])
    with pytest.raises(InputError, match="missing"):
        M.evaluate_classes(PROBS, LABELS, classes=CLASSES, thresholds={"grey matter": 0.5})
    with pytest.raises(InputError, match="2 classes"):
        M.evaluate_classes(PROBS, LABELS, classes=CLASSES, thresholds=[0.5])
