"""softseg.metrics on hand-computed cases (soft ones included), brute-force references and
hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from scipy.spatial.distance import cdist

from softseg import metrics as M
from softseg.errors import InputError


# ------------------------------------------------------------------------------- overlap
def test_overlap_metrics_binary_by_hand():
    p = np.array([1, 1, 0, 0, 1])
    g = np.array([1, 0, 1, 0, 1])
    # TP = 2, FP = 1, FN = 1, TN = 1
    assert M.dice(p, g) == pytest.approx(4 / 6)
    assert M.precision(p, g) == pytest.approx(2 / 3)
    assert M.recall(p, g) == pytest.approx(2 / 3)
    assert M.specificity(p, g) == pytest.approx(1 / 2)
    assert M.mse(p, g) == pytest.approx(2 / 5)


def test_overlap_metrics_soft_by_hand():
    p = np.array([0.5, 1.0, 0.0, 0.25])
    g = np.array([1.0, 0.5, 0.0, 0.0])
    tp = 0.5 + 0.5  # sum p*g
    sp, sg = 1.75, 1.5
    assert M.dice(p, g) == pytest.approx(2 * tp / (sp + sg))
    assert M.precision(p, g) == pytest.approx(tp / sp)
    assert M.recall(p, g) == pytest.approx(tp / sg)
    tn = 0.5 * 0.0 + 0.0 * 0.5 + 1.0 * 1.0 + 0.75 * 1.0
    fp = 0.5 * 0.0 + 1.0 * 0.5 + 0.0 + 0.25 * 1.0
    assert M.specificity(p, g) == pytest.approx(tn / (tn + fp))
    assert M.mse(p, g) == pytest.approx((0.25 + 0.25 + 0 + 0.0625) / 4)
    # float32 inputs give the same numbers (float64 accumulation)
    assert M.dice(p.astype(np.float32), g.astype(np.float32)) == pytest.approx(
        2 * tp / (sp + sg), abs=1e-7
    )


def test_empty_mask_policy():
    z = np.zeros((3, 3))
    one = z.copy()
    one[1, 1] = 1
    # both empty: best values
    assert M.dice(z, z) == 1.0
    assert M.precision(z, z) == 1.0 and M.recall(z, z) == 1.0
    assert M.relative_volume_difference(z, z) == 0.0
    assert M.hausdorff_distance(z, z) == 0.0
    det = M.lesion_detection(z, z)
    assert (det.ltpr, det.lfdr, det.n_true, det.n_predicted) == (1.0, 0.0, 0, 0)
    # only the truth empty
    assert M.dice(one, z) == 0.0
    assert M.precision(one, z) == 0.0
    assert M.recall(one, z) == 1.0
    assert M.relative_volume_difference(one, z) == -math.inf
    assert M.absolute_volume_difference(one, z) == math.inf
    assert M.hausdorff_distance(one, z) == math.inf
    det = M.lesion_detection(one, z, min_overlap=1)
    assert (det.ltpr, det.lfdr, det.n_false) == (1.0, 1.0, 1)
    # only the prediction empty
    assert M.dice(z, one) == 0.0
    assert M.precision(z, one) == 1.0
    assert M.recall(z, one) == 0.0
    assert M.relative_volume_difference(z, one) == 1.0
    assert M.hausdorff_distance(z, one) == math.inf
    det = M.lesion_detection(z, one, min_overlap=1)
    assert (det.ltpr, det.lfdr) == (0.0, 0.0)
    # specificity without any background in the truth
    full = np.ones((2, 2))
    assert M.specificity(full, full) == 1.0


def test_volumes_in_mm():
    mask = np.zeros((4, 4, 4))
    mask[0, 0, :3] = 1
    assert M.volume(mask, spacing=(1.0, 2.0, 0.5)) == pytest.approx(3.0)
    assert M.volume(mask * 0.5) == pytest.approx(1.5)
    truth = np.zeros((4, 4, 4))
    truth[1, 1, :4] = 1  # 4 voxels
    pred = np.zeros((4, 4, 4))
    pred[2, 2, :] = 1
    pred[3, 3, 0] = 1  # 5 voxels: over-segmentation -> negative RVD (SoftSeg sign)
    assert M.relative_volume_difference(pred, truth, spacing=(2, 2, 2)) == pytest.approx(-0.25)
    assert M.absolute_volume_difference(pred, truth) == pytest.approx(0.25)
    with pytest.raises(InputError, match="spacing"):
        M.volume(mask, spacing=(1.0, 1.0))


def test_pairwise_dice_by_hand():
    raters = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=np.uint8)
    expected = np.array([[1, 2 / 3, 0], [2 / 3, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(M.pairwise_dice(raters), expected)
    soft = raters * np.array([[0.5], [1.0], [1.0]])
    np.testing.assert_allclose(M.pairwise_dice(soft)[0, 1], 2 * 0.5 / (1.0 + 1.0))


# ----------------------------------------------------------------------------- distances
def test_hausdorff_two_voxels_anisotropic():
    p = np.zeros((6, 6, 8), bool)
    g = np.zeros((6, 6, 8), bool)
    p[2, 2, 2] = True
    g[2, 3, 5] = True
    d = math.hypot(1 * 1.5, 3 * 2.0)
    assert M.hausdorff_distance(p, g, spacing=(1.0, 1.5, 2.0), percentile=100) == pytest.approx(d)
    assert M.hausdorff_distance(p, g, spacing=(1.0, 1.5, 2.0)) == pytest.approx(d)


def test_hausdorff_shifted_cube():
    g = np.zeros((14, 12, 12), bool)
    g[2:7, 3:8, 3:8] = True
    p = np.roll(g, 2, axis=0)
    assert M.hausdorff_distance(p, g, spacing=(0.5, 1, 1), percentile=100) == pytest.approx(1.0)


def _brute_hausdorff(p, g, spacing, q):
    def surface(m):
        return m & ~ndimage.binary_erosion(
            m, ndimage.generate_binary_structure(m.ndim, 1), border_value=0
        )

    ps = np.argwhere(surface(p)) * np.asarray(spacing)
    gs = np.argwhere(surface(g)) * np.asarray(spacing)
    d = cdist(ps, gs)
    return max(np.percentile(d.min(axis=1), q), np.percentile(d.min(axis=0), q))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (18, 20, 16)
    base = ndimage.gaussian_filter(rng.standard_normal(shape), 2)
    g = base > 0.05
    p = ndimage.shift(base, (1, -1, 0), order=0) > 0.0
    spacing = (0.8, 1.1, 2.5)
    for q in (95, 100, 50):
        assert M.hausdorff_distance(p, g, spacing=spacing, percentile=q) == pytest.approx(
            _brute_hausdorff(p, g, spacing, q), rel=1e-9
        )
    # soft inputs are binarised at 0.5 (>=)
    soft = np.where(p, 0.5, 0.49)
    assert M.hausdorff_distance(soft, g, spacing=spacing) == pytest.approx(
        _brute_hausdorff(p, g, spacing, 95)
    )


# ------------------------------------------------------------------------ lesion detection
def test_lesion_detection_by_hand():
    truth = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros_like(truth)
    truth[2:4, 2:4, 2:4] = 1  # A: 8 voxels, 3 predicted -> detected
    pred[2, 2, 2:4] = 1
    pred[3, 2, 2] = 1
    truth[10:14, 10:14, 10:14] = 1  # B: 2 predicted voxels -> missed; that component is false
    pred[10, 10, 10:12] = 1
    truth[17, 17, 17:19] = 1  # C: 2 voxels, can never reach min_overlap=3 (ivadomed rule)
    pred[17, 17, 17:19] = 1
    pred[6:8, 15:17, 1:3] = 1  # D: a false component, far from any lesion
    det = M.lesion_detection(pred, truth)
    assert (det.n_true, det.n_predicted) == (3, 4)
    assert det.n_detected == 1
    assert det.n_false == 3  # B's 2-voxel hit, C (2 voxels), D
    assert det.ltpr == pytest.approx(1 / 3)
    assert det.lfdr == pytest.approx(3 / (1 + 3))
    relaxed = M.lesion_detection(pred, truth, min_overlap=1)
    assert (relaxed.n_detected, relaxed.n_false) == (3, 1)
    assert relaxed.lfdr == pytest.approx(1 / 4)


def test_lesion_connectivity_18_in_3d_and_8_in_2d():
    corner = np.zeros((5, 5, 5), np.uint8)
    corner[1, 1, 1] = corner[2, 2, 2] = 1  # touch at a corner only: two lesions with 18-conn
    assert M.lesion_detection(corner, corner, min_overlap=1).n_true == 2
    assert M.lesion_detection(corner, corner, min_overlap=1, connectivity=3).n_true == 1
    edge = np.zeros((5, 5, 5), np.uint8)
    edge[1, 1, 1] = edge[2, 2, 1] = 1  # touch along an edge: one lesion with 18-conn
    assert M.lesion_detection(edge, edge, min_overlap=1).n_true == 1
    assert M.lesion_detection(edge, edge, min_overlap=1, connectivity=1).n_true == 2
    diag2d = np.eye(4, dtype=np.uint8)
    assert M.lesion_detection(diag2d, diag2d, min_overlap=1).n_true == 1  # 8-connectivity
    with pytest.raises(InputError, match="connectivity"):
        M.lesion_detection(diag2d, diag2d, connectivity=3)


# --------------------------------------------------------------------------- calibration
def test_ece_binary_by_hand_counts_confidence_one():
    prob = np.array([1.0, 1.0, 0.8, 0.3])
    truth = np.array([1, 0, 1, 0])
    # confidences 1, 1, 0.8, 0.7; correct T, F, T, T; bins 9, 9, 8, 7
    rd = M.reliability_diagram(prob, truth)
    assert rd.count.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 2]
    np.testing.assert_allclose(rd.confidence[7:], [0.7, 0.8, 1.0])
    np.testing.assert_allclose(rd.accuracy[7:], [1.0, 1.0, 0.5])
    assert np.isnan(rd.confidence[:7]).all()
    expected = (1 * 0.3 + 1 * 0.2 + 2 * 0.5) / 4
    assert M.expected_calibration_error(prob, truth) == pytest.approx(expected)
    assert rd.ece == pytest.approx(expected)


def test_ece_multiclass_by_hand():
    prob = np.array(
        [
            [0.7, 0.2, 0.1, 0.34],
            [0.2, 0.5, 0.1, 0.33],
            [0.1, 0.3, 0.8, 0.33],
        ]
    )
    truth = np.array([0, 2, 2, 1])
    # predicted 0, 1, 2, 0; correct T, F, T, F; confidences .7, .5, .8, .34
    expected = (0.3 + 0.5 + 0.2 + 0.34) / 4
    assert M.expected_calibration_error(prob, truth) == pytest.approx(expected)
    rd = M.reliability_diagram(prob, truth, n_bins=5)
    assert rd.count.tolist() == [0, 1, 1, 1, 1]
    with pytest.raises(InputError, match="labels must lie"):
        M.expected_calibration_error(prob, np.array([0, 3, 1, 1]))


def test_calibration_rejects_bad_probabilities():
    with pytest.raises(InputError, match=r"must lie in \[0, 1\].*min 0\.2, max 1\.2"):
        M.expected_calibration_error(np.array([0.2, 1.2]), np.array([0, 1]))
    with pytest.raises(InputError, match="NaN"):
        M.reliability_diagram(np.array([0.2, np.nan]), np.array([0, 1]))
    with pytest.raises(InputError, match=r"\(3,\).*\(2,\)"):
        M.expected_calibration_error(np.zeros(3), np.zeros(2))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 1)),
    st.integers(1, 15),
    st.data(),
)
def test_ece_in_unit_interval(prob, n_bins, data):
    truth = data.draw(hnp.arrays(np.uint8, prob.shape, elements=st.integers(0, 1)))
    ece = M.expected_calibration_error(prob, truth, n_bins=n_bins)
    assert 0.0 <= ece <= 1.0
    assert M.reliability_diagram(prob, truth, n_bins=n_bins).count.sum() == prob.size


def test_brier_score_by_hand():
    prob = np.array([0.9, 0.2, 0.5])
    avg = np.array([1.0, 0.0, 0.75])
    assert M.brier_score(prob, avg) == pytest.approx((0.01 + 0.04 + 0.0625) / 3)


# --------------------------------------------------------------------------- uncertainty
def test_entropy_values():
    p = np.array([0.0, 1.0, 0.5, 0.25], dtype=np.float32)
    h = M.entropy(p)
    assert h.dtype == np.float32
    np.testing.assert_allclose(
        h, [0, 0, np.log(2), -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))], rtol=1e-6
    )
    assert M.subject_entropy(p) == pytest.approx(float(h.sum()), rel=1e-6)
    classes = np.array([[1 / 3, 1.0], [1 / 3, 0.0], [1 / 3, 0.0]])
    np.testing.assert_allclose(M.entropy(classes, class_axis=0), [np.log(3), 0.0], rtol=1e-6)


# ---------------------------------------------------------------------------- thresholds
def test_threshold_sweep_by_hand():
    prob = np.array([0.1, 0.4, 0.6, 0.9])
    truth = np.array([0, 1, 1, 1])
    sweep = M.threshold_sweep(prob, truth, thresholds=[0.05, 0.5, 0.95], spacing=2.0)
    np.testing.assert_allclose(sweep.dice, [6 / 7, 4 / 5, 0.0])
    np.testing.assert_allclose(sweep.volume_ml, [8e-3, 4e-3, 0.0])  # 2 mm voxels: 8 mm^3 each
    assert sweep.truth_volume_ml == pytest.approx(6e-3)
    assert M.optimal_threshold(prob, truth, thresholds=[0.05, 0.5, 0.95]) == 0.05
    default = M.threshold_sweep(prob, truth)
    np.testing.assert_allclose(default.thresholds, np.arange(1, 20) * 0.05)


def test_threshold_sweep_equals_binarised_dice():
    rng = np.random.default_rng(0)
    prob = rng.random((12, 13, 9)).astype(np.float32)
    prob.flat[:19] = M.DEFAULT_THRESHOLDS.astype(np.float32)  # values exactly on the grid
    truth = rng.random(prob.shape) < prob
    sweep = M.threshold_sweep(prob, truth)
    for t, d in zip(sweep.thresholds, sweep.dice):
        assert d == pytest.approx(M.dice(M.binarize(prob, t), truth), abs=1e-12)
    # a float32 value on the grid counts at its own threshold (0.35 is not exact in float32)
    edge = np.array([0.35], dtype=np.float32)
    assert M.binarize(edge, 0.35)[0] and M.binarize(edge, np.float64(0.35))[0]
    assert M.threshold_sweep(edge, np.ones(1), thresholds=[0.35]).dice[0] == 1.0


def test_optimal_threshold_over_several_images():
    p1, g1 = np.array([0.3, 0.3, 0.9]), np.array([1, 1, 1])
    p2, g2 = np.array([0.3, 0.3, 0.9]), np.array([0, 0, 1])
    t = [0.2, 0.5]
    # image 1 prefers 0.2 (Dice 1 vs 0.5), image 2 prefers 0.5 (Dice 1 vs 0.5): tie -> lowest
    assert M.optimal_threshold([p1, p2], [g1, g2], thresholds=t) == 0.2
    assert M.optimal_threshold([p2, p2], [g2, g2], thresholds=t) == 0.5
    with pytest.raises(InputError, match="one truth per prediction"):
        M.optimal_threshold([p1, p2], [g1], thresholds=t)
    with pytest.raises(InputError, match="thresholds"):
        M.threshold_sweep(p1, g1, thresholds=[0.5, 0.2])


# ---------------------------------------------------------------------- properties, input
@settings(max_examples=50, deadline=None)
@given(st.data())
def test_dice_symmetric_and_bounded(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6))
    a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    b = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    d = M.dice(a, b)
    assert 0.0 <= d <= 1.0 + 1e-12
    assert d == pytest.approx(M.dice(b, a), rel=1e-12, abs=1e-300)


def test_input_errors_name_shapes_and_problems():
    with pytest.raises(InputError, match=r"prediction shape \(2, 3\) and truth shape \(3, 2\)"):
        M.dice(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(InputError, match="NaN/Inf"):
        M.dice(np.array([np.inf, 0.0]), np.zeros(2))
    with pytest.raises(InputError, match=r"must lie in \[0, 1\].*max 255"):
        M.mse(np.array([0, 255]), np.zeros(2))
    with pytest.raises(InputError, match="numeric"):
        M.dice(np.array(["a", "b"]), np.zeros(2))
