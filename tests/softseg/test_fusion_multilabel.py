"""softseg.fusion.multilabel against independent references: SimpleITK's MultiLabelSTAPLE and
LabelVoting, scikit-learn's confusion_matrix, hand-computed cases and the binary STAPLE."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from softseg import fusion
from softseg.errors import InputError
from softseg.fusion import multilabel as ml

sitk = pytest.importorskip("SimpleITK")


# ----------------------------------------------------------------------------- references
def sitk_multilabel_staple(raters, *, max_iter=None, tol=None, undecided=None, prior=None):
    """Labels and confusion matrices of SimpleITK's filter, the matrices turned into our
    orientation (rows = true class, columns = rater's label) with ITK's extra row returned
    separately."""
    images = [sitk.GetImageFromArray(np.ascontiguousarray(r)) for r in raters]
    filt = sitk.MultiLabelSTAPLEImageFilter()
    if max_iter is not None:
        filt.SetMaximumNumberOfIterations(max_iter)
    if tol is not None:
        filt.SetTerminationUpdateThreshold(tol)
    if undecided is not None:
        filt.SetLabelForUndecidedPixels(undecided)
    if prior is not None:
        filt.SetPriorProbabilities(list(prior))
    labels = sitk.GetArrayFromImage(filt.Execute(images))
    t = int(max(r.max() for r in raters)) + 1
    itk = np.array([np.reshape(filt.GetConfusionMatrix(j), (t + 1, t)) for j in range(len(raters))])
    return labels, np.swapaxes(itk[:, :t, :], 1, 2), itk[:, t, :]


def sitk_label_voting(raters, undecided=None):
    images = [sitk.GetImageFromArray(np.ascontiguousarray(r)) for r in raters]
    if undecided is None:
        return sitk.GetArrayFromImage(sitk.LabelVoting(images))
    return sitk.GetArrayFromImage(sitk.LabelVoting(images, undecided))


def noisy_label_maps(rng, shape, n_raters, n_classes, error):
    """Raters who copy a random truth and relabel a fraction ``error`` of voxels at random."""
    truth = rng.integers(0, n_classes + 1, shape)
    dtype = np.uint8 if n_classes < 256 else np.uint16
    errors = rng.random((n_raters, *shape)) < np.asarray(error).reshape(-1, *([1] * len(shape)))
    noise = rng.integers(0, n_classes + 1, (n_raters, *shape))
    return np.where(errors, noise, truth).astype(dtype)


def tissue_raters(shape=(20, 24, 18), n_raters=4, n_classes=3, seed=0):
    """Smooth nested tissue classes outlined by raters with different boundary habits."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
    field /= field.std()
    cuts = np.linspace(-0.6, 0.9, n_classes)
    out = []
    for j in range(n_raters):
        jitter = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
        habit = 0.04 * (j - (n_raters - 1) / 2)  # generous or strict rater
        out.append(np.digitize(field + 0.1 * jitter / jitter.std() + habit, cuts))
    return np.stack(out).astype(np.uint8)


def assert_matches_sitk(res, ref, *, atol=1e-6):
    labels, confusion, extra_row = ref
    t = confusion.shape[1]
    np.testing.assert_array_equal(res.labels, labels)
    # ITK's extra row (a label above every rater's) is empty after the first iteration
    np.testing.assert_array_equal(extra_row, 0.0)
    itk_rows = confusion.sum(axis=2)  # a true class without posterior weight: ITK keeps zeros
    ours = res.confusion[:, :t, :t]
    live = itk_rows > 0
    np.testing.assert_allclose(ours[live], confusion[live], rtol=0, atol=atol)
    np.testing.assert_array_equal(ours[~live], np.broadcast_to(np.eye(t), ours.shape)[~live])


# ---------------------------------------------------------------------- STAPLE vs SimpleITK
@pytest.mark.parametrize(
    "seed, n_raters, n_classes, shape, error",
    [
        (0, 2, 1, (12, 14), [0.1, 0.3]),
        (1, 3, 2, (8, 9, 10), [0.05, 0.2, 0.4]),
        (2, 4, 3, (10, 11, 7), [0.1, 0.1, 0.3, 0.5]),
        (3, 5, 4, (9, 8, 7), [0.05, 0.1, 0.2, 0.3, 0.6]),
        (4, 6, 2, (7, 8, 9), [0.2] * 6),
        (5, 2, 4, (15, 16), [0.2, 0.2]),
    ],
)
@pytest.mark.parametrize("max_iter", [1, 2, None])
def test_staple_matches_simpleitk_random(seed, n_raters, n_classes, shape, error, max_iter):
    raters = noisy_label_maps(np.random.default_rng(seed), shape, n_raters, n_classes, error)
    res = ml.multilabel_staple(raters, **({} if max_iter is None else {"max_iter": max_iter}))
    assert_matches_sitk(res, sitk_multilabel_staple(raters, max_iter=max_iter))
    if max_iter is not None:
        assert res.iterations == max_iter and not res.converged
    else:
        assert res.converged and res.iterations > 2


@pytest.mark.parametrize("n_raters, n_classes", [(3, 1), (4, 3), (5, 2), (6, 4)])
def test_staple_matches_simpleitk_structured(n_raters, n_classes):
    raters = tissue_raters(n_raters=n_raters, n_classes=n_classes, seed=n_raters)
    assert len(np.unique(raters)) == n_classes + 1
    res = ml.multilabel_staple(raters)
    assert_matches_sitk(res, sitk_multilabel_staple(raters))
    # realistic raters: every class is mostly recognised
    assert (np.diagonal(res.confusion, axis1=1, axis2=2) > 0.5).all()


def test_staple_matches_simpleitk_with_a_class_one_rater_never_uses():
    raters = tissue_raters(n_raters=4, n_classes=3, seed=7)
    raters[2][raters[2] == 2] = 3  # rater 2 merges class 2 into class 3
    assert 2 not in raters[2]
    res = ml.multilabel_staple(raters)
    assert_matches_sitk(res, sitk_multilabel_staple(raters))
    assert res.confusion[2, :, 2].max() == 0.0  # rater 2 never says 2
    assert res.confusion[2, 2, 3] > 0.9  # ... it says 3 where the truth is 2


def test_staple_tolerance_matches_simpleitk():
    raters = tissue_raters(n_raters=4, n_classes=2, seed=3)
    for tol in (1e-2, 1e-8):
        res = ml.multilabel_staple(raters, tol=tol)
        assert_matches_sitk(res, sitk_multilabel_staple(raters, tol=tol))


def test_staple_given_prior_matches_simpleitk():
    raters = tissue_raters(n_raters=3, n_classes=2, seed=17)
    prior = [0.2, 0.5, 0.3]  # far from the label shares (0.19, 0.63, 0.19)
    res = ml.multilabel_staple(raters, prior=prior)
    assert_matches_sitk(res, sitk_multilabel_staple(raters, prior=prior))
    np.testing.assert_allclose(res.prior, prior)
    estimated = ml.multilabel_staple(raters)
    assert np.abs(res.confusion - estimated.confusion).max() > 1e-3
    scaled = ml.multilabel_staple(raters, prior=[2.0, 5.0, 3.0])
    np.testing.assert_array_equal(scaled.labels, res.labels)


def test_staple_roi_equals_simpleitk_on_the_roi_voxels():
    raters = tissue_raters(shape=(16, 18, 14), n_raters=4, n_classes=3, seed=11)
    roi = np.zeros(raters.shape[1:], bool)
    roi[3:12, 2:15, 4:11] = True
    res = ml.multilabel_staple(raters, roi=roi)
    inside = raters[:, roi][:, None, :]  # the roi voxels as a 1 x M image per rater
    labels, confusion, extra = sitk_multilabel_staple(inside)
    np.testing.assert_array_equal(res.labels[roi], labels[0])
    np.testing.assert_allclose(res.confusion, confusion, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(extra, 0.0)
    # outside: background, probability 1
    assert (res.labels[~roi] == 0).all()
    assert (res.probabilities[0][~roi] == 1).all() and (res.probabilities[1:][:, ~roi] == 0).all()
    # the prior is estimated inside the roi only
    np.testing.assert_allclose(res.prior, np.bincount(raters[:, roi].ravel()) / inside.size)


def test_staple_all_raters_agree():
    one = tissue_raters(n_raters=1, n_classes=3, seed=5)[0]
    raters = np.stack([one] * 3)
    res = ml.multilabel_staple(raters)
    assert_matches_sitk(res, sitk_multilabel_staple(raters))
    np.testing.assert_array_equal(res.labels, one)
    np.testing.assert_array_equal(res.confusion, np.broadcast_to(np.eye(4), (3, 4, 4)))
    assert res.converged and res.iterations == 1
    np.testing.assert_array_equal(res.probabilities.argmax(axis=0), one)
    assert set(np.unique(res.probabilities)) == {0.0, 1.0}


def test_staple_classes_absent_from_every_rater():
    # labels 0 and 2 used; class 1 and (with n_classes=4) classes 3, 4 never
    raters = tissue_raters(n_raters=3, n_classes=1, seed=2) * 2
    res = ml.multilabel_staple(raters, n_classes=4)
    itk_labels, itk_conf, _ = sitk_multilabel_staple(raters)
    itk_undecided = 3  # ITK: largest label used + 1
    ours = np.where(res.labels == res.undecided, itk_undecided, res.labels)
    np.testing.assert_array_equal(ours, itk_labels)
    assert res.undecided == 5
    assert res.confusion.shape == (3, 5, 5)
    np.testing.assert_allclose(res.confusion[:, :3, :3][:, [0, 2]], itk_conf[:, [0, 2]], atol=1e-6)
    for absent in (1, 3, 4):
        assert res.prior[absent] == 0.0
        identity_row = np.broadcast_to(np.eye(5)[absent], (3, 5))
        np.testing.assert_array_equal(res.confusion[:, absent], identity_row)
        assert (res.probabilities[absent] == 0).all()
    assert set(np.unique(res.labels)) <= {0, 2, 5}


def test_staple_undecided_label_matches_simpleitk():
    raters = np.random.default_rng(1).integers(0, 3, (2, 3, 4)).astype(np.uint8)
    ref = sitk_multilabel_staple(raters, undecided=9)
    res = ml.multilabel_staple(raters, undecided=9)
    assert (res.labels == 9).any()  # two raters: ties do happen
    assert_matches_sitk(res, ref)
    to_background = ml.multilabel_staple(raters, undecided=0)
    np.testing.assert_array_equal(to_background.labels, np.where(ref[0] == 9, 0, ref[0]))


def test_staple_impossible_combinations_are_undecided_with_rater_fractions():
    # two raters, three labels: the estimated matrices give some label pairs weight 0 for
    # every class; ITK calls them undecided and we fall back to the raters' fractions
    raters = np.random.default_rng(1).integers(0, 3, (2, 3, 4)).astype(np.uint8)
    res = ml.multilabel_staple(raters)
    assert_matches_sitk(res, sitk_multilabel_staple(raters))
    # by hand: the class weight f(t) theta_0[d0, t] theta_1[d1, t] of every voxel
    theta = np.swapaxes(res.confusion, 1, 2)  # [j, s, t]
    weight = res.prior[:, None, None] * theta[0][raters[0]].transpose(2, 0, 1)
    weight = weight * theta[1][raters[1]].transpose(2, 0, 1)
    impossible = weight.max(axis=0) == 0
    assert impossible.any()
    assert (res.labels[impossible] == res.undecided).all()
    fractions = ml.class_average(raters)
    np.testing.assert_allclose(res.probabilities[:, impossible], fractions[:, impossible])
    possible = ~impossible
    np.testing.assert_allclose(
        res.probabilities[:, possible], weight[:, possible] / weight[:, possible].sum(0), atol=1e-6
    )


def test_staple_one_iteration_by_hand():
    # three raters, five voxels, labels 0..2 (T = 3)
    raters = np.array(
        [[[0, 1, 2, 2, 0]], [[0, 1, 1, 2, 1]], [[0, 2, 1, 2, 2]]],
        dtype=np.uint8,
    )
    # vote: 0, 1, 1, 2, tie (undecided = 3)
    # initial matrices [s, v] counts; a tied vote lands at [s + 1, 0] (ITK's row-major write
    # past the row end), then each row is normalised
    flat = raters[:, 0]
    theta0 = np.zeros((3, 4, 3))
    theta0[0][[0, 1, 2, 2], [0, 1, 1, 2]] = 1, 1, 1, 1
    theta0[0][1, 0] += 1  # rater 0 says 0 at the tie
    theta0[1][[0, 1, 1, 2], [0, 1, 1, 2]] += 1
    theta0[1][2, 0] += 1  # rater 1 says 1 at the tie
    theta0[2][[0, 2, 1, 2], [0, 1, 1, 2]] += 1
    theta0[2][3, 0] += 1  # rater 2 says 2 at the tie: ITK's extra row
    rows = theta0.sum(axis=2, keepdims=True)
    theta0 = np.where(rows > 0, theta0 / np.where(rows > 0, rows, 1), 0)
    prior = np.array([4, 5, 6]) / 15  # label shares over the 15 rater labels
    # E-step and M-step, voxel by voxel
    updated = np.zeros_like(theta0)
    for v in range(5):
        w = prior * np.prod([theta0[j][flat[j, v]] for j in range(3)], axis=0)
        if w.sum() > 0:
            w = w / w.sum()
        for j in range(3):
            updated[j][flat[j, v]] += w
    cols = updated.sum(axis=1, keepdims=True)
    theta1 = np.where(cols > 0, updated / np.where(cols > 0, cols, 1), 0)
    final = np.array(
        [prior * np.prod([theta1[j][flat[j, v]] for j in range(3)], axis=0) for v in range(5)]
    )
    best = final.max(axis=1)
    expected = np.where((final == best[:, None]).sum(1) > 1, 3, final.argmax(1))

    res = ml.multilabel_staple(raters, max_iter=1)
    ref_labels, ref_conf, _ = sitk_multilabel_staple(raters, max_iter=1)
    np.testing.assert_array_equal(res.labels[0], expected)
    np.testing.assert_array_equal(ref_labels[0], expected)
    ours = np.swapaxes(theta1[:, :3, :], 1, 2)
    live = ours.sum(axis=2) > 0
    np.testing.assert_allclose(res.confusion[live], ours[live], atol=1e-12)
    np.testing.assert_allclose(ref_conf, ours, atol=1e-12)
    np.testing.assert_allclose(res.prior, prior, atol=1e-15)


def test_staple_many_tuple_groupings_match_simpleitk():
    rng = np.random.default_rng(21)
    # 5**6 codes (renumbered), 5**10 codes (np.unique), 2**64 codes (rows sorted)
    for n_raters, n_classes, shape in [(6, 4, (9, 10, 8)), (10, 4, (8, 9, 7)), (64, 1, (6, 5, 4))]:
        raters = noisy_label_maps(rng, shape, n_raters, n_classes, [0.3] * n_raters)
        res = ml.multilabel_staple(raters)
        assert_matches_sitk(res, sitk_multilabel_staple(raters))


def test_staple_more_than_255_labels_matches_simpleitk():
    rng = np.random.default_rng(4)
    raters = noisy_label_maps(rng, (6, 7, 8), 3, 300, [0.1, 0.2, 0.3]).astype(np.uint16)
    res = ml.multilabel_staple(raters)
    assert res.labels.dtype == np.uint16
    assert_matches_sitk(res, sitk_multilabel_staple(raters))


def test_staple_and_vote_sparse_label_values_match_simpleitk():
    # few labels with large, sparse values (ITK: T = 261 classes, most of them unused)
    rng = np.random.default_rng(6)
    small = noisy_label_maps(rng, (7, 8, 9), 4, 3, [0.1, 0.2, 0.3, 0.4])
    raters = np.array([0, 2, 41, 260], dtype=np.uint16)[small]
    res = ml.multilabel_staple(raters)
    assert res.labels.dtype == np.uint16 and res.confusion.shape == (4, 261, 261)
    assert_matches_sitk(res, sitk_multilabel_staple(raters))
    np.testing.assert_array_equal(ml.label_vote(raters), sitk_label_voting(raters))
    huge = np.array([0, 60000], dtype=np.uint16)[(small > 1).astype(np.intp)]
    with pytest.raises(InputError, match="renumber the labels to 0..K"):
        ml.multilabel_staple(huge)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_raters=st.integers(2, 5),
    n_classes=st.integers(1, 4),
    size=st.integers(1, 60),
)
def test_staple_property_matches_simpleitk(seed, n_raters, n_classes, size):
    rng = np.random.default_rng(seed)
    raters = noisy_label_maps(rng, (size, 3), n_raters, n_classes, rng.random(n_raters))
    res = ml.multilabel_staple(raters, n_classes=n_classes)
    ref = sitk_multilabel_staple(raters)
    t = ref[1].shape[1]
    ours = res.labels.copy()
    ours[ours == res.undecided] = t  # ITK: largest label used + 1
    assert_matches_sitk(
        ml.MultiLabelStapleResult(ours, None, res.confusion, res.prior, 0, True, t), ref
    )
    # always: rows sum to 1, probabilities sum to 1, labels = unique argmax
    np.testing.assert_allclose(res.confusion.sum(axis=2), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.probabilities.sum(axis=0), 1.0, atol=1e-6)
    decided = res.labels != res.undecided
    np.testing.assert_array_equal(res.labels[decided], res.probabilities.argmax(0)[decided])


def test_staple_inputs_and_outputs():
    raters = tissue_raters(n_raters=3, n_classes=2, seed=9)
    res = ml.multilabel_staple(raters)
    assert res.labels.dtype == np.uint8 and res.labels.shape == raters.shape[1:]
    assert res.probabilities.dtype == np.float32
    assert res.probabilities.shape == (3, *raters.shape[1:])
    assert res.confusion.dtype == np.float64 and res.prior.shape == (3,)
    assert res.prior.sum() == pytest.approx(1.0)
    # a list of arrays, int64 and whole-number floats (nibabel get_fdata) give the same result
    for same in (list(raters), raters.astype(np.int64), raters.astype(np.float64)):
        other = ml.multilabel_staple(same)
        np.testing.assert_array_equal(other.labels, res.labels)
        np.testing.assert_array_equal(other.confusion, res.confusion)
    assert ml.multilabel_staple(raters, probabilities=False).probabilities is None
    # the given prior is used (normalised); SimpleITK's estimate is the default
    fixed = ml.multilabel_staple(raters, prior=[2, 1, 1])
    np.testing.assert_allclose(fixed.prior, [0.5, 0.25, 0.25])
    seen = []
    ml.multilabel_staple(raters, progress=lambda i, change: seen.append((i, change)))
    assert [i for i, _ in seen] == list(range(1, res.iterations + 1))
    assert seen[-1][1] < 1e-5 <= seen[-2][1]
    # the caller's arrays are not modified
    before = raters.copy()
    ml.multilabel_staple(raters, roi=raters[0] > 0)
    np.testing.assert_array_equal(raters, before)


def test_staple_bool_raters_are_one_class():
    raters = tissue_raters(n_raters=3, n_classes=1, seed=4).astype(bool)
    res = ml.multilabel_staple(raters)
    assert res.confusion.shape == (3, 2, 2)
    assert_matches_sitk(res, sitk_multilabel_staple(raters.astype(np.uint8)))


# ------------------------------------------------------------- K = 1 and the binary STAPLE
def test_staple_one_class_agrees_with_the_binary_staple_where_the_optimum_is_unique():
    """K = 1: both maximise the same likelihood with the same fixed prior (the mean rater
    vote) but start differently (binary ITK: W = the raters' average; multi-label ITK:
    matrices from a label vote) and stop differently (|change| of p, q <= 1e-7 vs. of every
    matrix entry < 1e-5). With independent rater errors the likelihood has one optimum and,
    run to convergence, both reach it: the same sensitivities (confusion[:, 1, 1]),
    specificities (confusion[:, 0, 0]) and probabilities; labels agree wherever the binary
    probability is not exactly 0.5 (multi-label: undecided)."""
    rng = np.random.default_rng(3)
    truth = rng.random((20, 22, 24)) < 0.3
    flip = np.array([0.05, 0.1, 0.2, 0.3])[:, None, None, None]
    raters = np.where(rng.random((4, *truth.shape)) < flip, ~truth, truth).astype(np.uint8)
    binary = fusion.staple(raters, tol=1e-13, max_iter=100_000)
    multi = ml.multilabel_staple(raters, tol=1e-13, max_iter=100_000)
    assert binary.converged and multi.converged
    assert multi.prior[1] == pytest.approx(binary.prior, abs=1e-15)
    np.testing.assert_allclose(multi.confusion[:, 1, 1], binary.sensitivity, atol=1e-9)
    np.testing.assert_allclose(multi.confusion[:, 0, 0], binary.specificity, atol=1e-9)
    np.testing.assert_allclose(multi.probabilities[1], binary.probability, atol=1e-6)
    clear = np.abs(binary.probability - 0.5) > 1e-6
    np.testing.assert_array_equal(multi.labels[clear], binary.binary()[clear])


def test_staple_one_class_is_a_fixed_point_of_the_binary_em():
    """With correlated raters (dilated, eroded, shifted outlines) the likelihood has several
    optima and the two starts can end in different ones; the multi-label result is still a
    fixed point of Warfield's binary EM (its E-step and M-step formulas, written out here)."""
    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.standard_normal((24, 26, 20)), 2.5)
    truth = field > 0.3 * field.std()
    raters = np.stack(
        [
            truth,
            ndimage.binary_dilation(truth),
            ndimage.binary_erosion(truth),
            np.roll(truth, 1, axis=0) ^ (rng.random(truth.shape) < 0.02),
        ]
    ).astype(np.float64)
    res = ml.multilabel_staple(raters.astype(np.uint8), tol=1e-13, max_iter=100_000)
    p, q, g = res.confusion[:, 1, 1], res.confusion[:, 0, 0], res.prior[1]
    d = raters
    a = np.prod(np.where(d == 1, p[:, None, None, None], 1 - p[:, None, None, None]), axis=0)
    b = np.prod(np.where(d == 1, 1 - q[:, None, None, None], q[:, None, None, None]), axis=0)
    w = g * a / (g * a + (1 - g) * b)  # binary E-step
    np.testing.assert_allclose(res.probabilities[1], w, atol=1e-6)
    p_next = (w * d).sum(axis=(1, 2, 3)) / w.sum()  # binary M-step
    q_next = ((1 - w) * (1 - d)).sum(axis=(1, 2, 3)) / (1 - w).sum()
    np.testing.assert_allclose(p_next, p, atol=1e-9)
    np.testing.assert_allclose(q_next, q, atol=1e-9)


# -------------------------------------------------------------------------------- voting
@pytest.mark.parametrize(
    "seed, n_raters, n_classes", [(0, 2, 1), (1, 3, 2), (2, 4, 3), (3, 5, 4), (4, 6, 3)]
)
def test_label_vote_matches_simpleitk(seed, n_raters, n_classes):
    raters = noisy_label_maps(
        np.random.default_rng(seed), (9, 10, 11), n_raters, n_classes, [0.5] * n_raters
    )
    assert raters.max() == n_classes
    ref = sitk_label_voting(raters)
    np.testing.assert_array_equal(ml.label_vote(raters), ref)  # ties included
    tied = ref == n_classes + 1
    assert tied.any()
    to_background = ml.label_vote(raters, undecided=0)
    np.testing.assert_array_equal(to_background, np.where(tied, 0, ref))
    np.testing.assert_array_equal(ml.label_vote(raters, undecided=7), sitk_label_voting(raters, 7))


def test_label_vote_structured_and_by_hand():
    raters = tissue_raters(n_raters=5, n_classes=3, seed=1)
    np.testing.assert_array_equal(ml.label_vote(raters), sitk_label_voting(raters))
    by_hand = np.array([[0, 1, 2, 2, 0], [1, 1, 0, 2, 1], [1, 2, 0, 2, 2]])
    np.testing.assert_array_equal(ml.label_vote(by_hand), [1, 1, 0, 2, 3])
    np.testing.assert_array_equal(ml.label_vote(by_hand, n_classes=5), [1, 1, 0, 2, 6])
    # K = 1: the binary majority vote, ties to background
    binary = (tissue_raters(n_raters=4, n_classes=1, seed=6) > 0).astype(np.uint8)
    np.testing.assert_array_equal(
        ml.label_vote(binary, undecided=0), fusion.majority_vote(binary, ties=0)
    )


# ------------------------------------------------------------------- average, disagreement
def test_class_average_and_disagreement_values():
    raters = np.array([[0, 2], [0, 1], [1, 2], [2, 2]], dtype=np.uint8)
    avg = ml.class_average(raters)
    np.testing.assert_array_equal(avg, np.float32([[0.5, 0], [0.25, 0.25], [0.25, 0.75]]))
    h = ml.class_disagreement(raters)
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    second = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    np.testing.assert_allclose(h, [expected, second], rtol=1e-6)
    per_class = ml.class_disagreement(raters, per_class=True)
    assert per_class.shape == (3, 2) and per_class.dtype == np.float32
    np.testing.assert_allclose(per_class[0], [np.log(2), 0.0], atol=1e-7)
    agree = ml.class_disagreement(np.array([[1, 2], [1, 2]]))
    np.testing.assert_array_equal(agree, 0.0)


def test_one_class_average_and_disagreement_equal_the_binary_fusions():
    raters = (tissue_raters(n_raters=5, n_classes=1, seed=8) > 0).astype(np.uint8)
    avg = ml.class_average(raters)
    np.testing.assert_allclose(avg[1], fusion.average(raters), atol=1e-7)
    np.testing.assert_allclose(
        ml.class_disagreement(raters), fusion.disagreement(raters), atol=1e-6
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_raters=st.integers(2, 7),
    n_classes=st.integers(1, 5),
)
def test_class_average_sums_to_one(seed, n_raters, n_classes):
    rng = np.random.default_rng(seed)
    raters = rng.integers(0, n_classes + 1, (n_raters, 5, 6)).astype(np.uint8)
    avg = ml.class_average(raters, n_classes=n_classes)
    assert avg.shape == (n_classes + 1, 5, 6) and avg.dtype == np.float32
    np.testing.assert_allclose(avg.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(avg * n_raters, np.round(avg * n_raters), atol=1e-5)
    h = ml.class_disagreement(raters, n_classes=n_classes)
    assert (h >= 0).all() and (h <= np.log(min(n_raters, n_classes + 1)) + 1e-6).all()
    per_class = ml.class_disagreement(raters, n_classes=n_classes, per_class=True)
    assert (per_class >= 0).all() and (per_class <= np.log(2) + 1e-6).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_raters=st.sampled_from([2, 3, 4, 5, 7, 300]),
    n_classes=st.integers(1, 6),
)
def test_disagreement_lookup_is_bit_for_bit_the_entropy_of_the_class_average(seed, n_raters, n_classes):
    """The vote-count lookup gives exactly metrics.entropy of the class fractions (the per-voxel
    logarithms it replaces), for uint8 votes and for >= 256 raters (int32 votes)."""
    from softseg.metrics import entropy

    rng = np.random.default_rng(seed)
    raters = rng.integers(0, n_classes + 1, (n_raters, 4, 5, 3)).astype(np.uint8)
    votes = ml.class_votes(raters, n_classes=n_classes)
    assert votes.shape == (n_classes + 1, 4, 5, 3)
    np.testing.assert_array_equal(votes.sum(axis=0), n_raters)
    for c in range(n_classes + 1):  # by hand: how many raters gave class c
        np.testing.assert_array_equal(votes[c], (raters == c).sum(axis=0))
    avg = ml.class_average(raters, n_classes=n_classes)
    total, per_class = ml.class_disagreements(raters, n_classes=n_classes, votes=votes)
    np.testing.assert_array_equal(total, entropy(avg, class_axis=0))
    np.testing.assert_array_equal(per_class, entropy(avg))
    np.testing.assert_array_equal(ml.class_disagreement(raters, n_classes=n_classes), total)
    np.testing.assert_array_equal(
        ml.class_disagreement(raters, n_classes=n_classes, per_class=True), per_class
    )
    assert total.dtype == per_class.dtype == np.float32


def test_fuse_disagreement_is_the_entropy_of_the_class_average():
    from softseg.metrics import entropy

    raters = tissue_raters(n_raters=4, n_classes=3, seed=11)
    avg = ml.class_average(raters, n_classes=3)
    for method in ("staple", "average", "majority"):
        res = fusion.fuse(raters, method, n_classes=3)
        np.testing.assert_array_equal(res.disagreement, entropy(avg, class_axis=0))
        np.testing.assert_array_equal(res.class_disagreement, entropy(avg))
        if method == "average":
            np.testing.assert_array_equal(res.probability, avg)
    with pytest.raises(InputError, match="votes must have shape"):
        ml.class_disagreements(raters, n_classes=3, votes=np.zeros((2, 2), np.uint8))


# ------------------------------------------------------------------------------ confusion
def test_confusion_matrices_match_sklearn():
    from sklearn.metrics import confusion_matrix

    raters = tissue_raters(n_raters=4, n_classes=3, seed=12)
    reference = ml.label_vote(raters, undecided=0)
    got = ml.confusion_matrices(raters, reference)
    assert got.shape == (4, 4, 4)
    for j in range(4):
        expected = confusion_matrix(
            reference.ravel(), raters[j].ravel(), labels=[0, 1, 2, 3], normalize="true"
        )
        np.testing.assert_allclose(got[j], expected, atol=1e-15)
    np.testing.assert_allclose(got.sum(axis=2), 1.0)


def test_confusion_matrices_policies():
    raters = np.array([[0, 1, 1, 2, 1], [0, 2, 1, 2, 0]], dtype=np.uint8)
    reference = np.array([0, 1, 3, 2, 1])  # 3 = the undecided label of K = 2: ignored
    got = ml.confusion_matrices(raters, reference)
    np.testing.assert_array_equal(got[0], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(got[1], [[1, 0, 0], [0.5, 0, 0.5], [0, 0, 1]])
    # n_classes = 3: class 3 is absent from the reference (voxel 2 counts now): identity row
    got = ml.confusion_matrices(raters, reference, n_classes=3)
    np.testing.assert_array_equal(got[1][3], [0, 1, 0, 0])
    np.testing.assert_array_equal(got[0][3], [0, 1, 0, 0])
    np.testing.assert_array_equal(got[0][2], [0, 0, 1, 0])
    # classes outside the roi: identity rows
    roi = np.array([True, True, False, False, False])
    got = ml.confusion_matrices(raters, reference, roi=roi)
    np.testing.assert_array_equal(got[1], [[1, 0, 0], [0, 0, 1], [0, 0, 1]])


def test_confusion_matrices_soft_reference_match_weighted_sklearn():
    from sklearn.metrics import confusion_matrix

    raters = tissue_raters(n_raters=3, n_classes=2, seed=14)
    soft = ml.class_average(raters)
    got = ml.confusion_matrices(raters, soft)
    # soft counts = a weighted confusion matrix with every voxel once per true class t, weight P_t
    flat = soft.reshape(3, -1)
    y_true = np.repeat(np.arange(3), flat.shape[1])
    for j in range(3):
        expected = confusion_matrix(
            y_true,
            np.tile(raters[j].ravel(), 3),
            labels=[0, 1, 2],
            sample_weight=flat.ravel().astype(np.float64),
            normalize="true",
        )
        np.testing.assert_allclose(got[j], expected, atol=1e-12)
    # a one-hot reference gives the label-map result
    reference = ml.label_vote(raters, undecided=0)
    one_hot = np.stack([reference == c for c in range(3)]).astype(np.float32)
    np.testing.assert_allclose(
        ml.confusion_matrices(raters, one_hot), ml.confusion_matrices(raters, reference)
    )
    # the soft reference gives the number of classes; roi restricts the counts
    roi = np.zeros(raters.shape[1:], bool)
    roi[:10] = True
    np.testing.assert_allclose(
        ml.confusion_matrices(raters, soft, roi=roi),
        ml.confusion_matrices(raters[:, :10], soft[:, :10]),
    )
    with pytest.raises(InputError, match="values must lie in"):
        ml.confusion_matrices(raters, soft * 2)


def test_confusion_matrices_soft_binary_reference_is_soft_sensitivity_specificity():
    rng = np.random.default_rng(15)
    raters = (rng.random((4, 9, 10, 11)) < 0.4).astype(np.uint8)
    w = rng.random((9, 10, 11))
    got = ml.confusion_matrices(raters, np.stack([1 - w, w]))
    d = raters.astype(np.float64)
    sens = (w * d).sum(axis=(1, 2, 3)) / w.sum()
    spec = ((1 - w) * (1 - d)).sum(axis=(1, 2, 3)) / (1 - w).sum()
    np.testing.assert_allclose(got[:, 1, 1], sens, rtol=1e-12)
    np.testing.assert_allclose(got[:, 0, 0], spec, rtol=1e-12)
    ref_sens, ref_spec = fusion.rater_performance(raters, w)  # the binary fusions' definition
    np.testing.assert_allclose(got[:, 1, 1], ref_sens, rtol=1e-6)
    np.testing.assert_allclose(got[:, 0, 0], ref_spec, rtol=1e-6)


def test_confusion_matrices_of_staple_labels_approach_its_estimate():
    raters = tissue_raters(n_raters=4, n_classes=2, seed=13)
    res = ml.multilabel_staple(raters, undecided=0)
    empirical = ml.confusion_matrices(raters, res.labels)
    np.testing.assert_allclose(empirical, res.confusion, atol=0.05)


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "raters, kwargs, message",
    [
        (np.zeros((1, 4, 4), np.uint8), {}, "at least 2"),
        ([np.zeros((4, 4)), np.zeros((4, 5))], {}, "rater 1 has shape (4, 5)"),
        (np.full((2, 3), 0.5), {}, "non-integer label 0.5"),
        (np.array([[0, 1], [-1, 0]]), {}, "rater 1 holds the negative label -1"),
        (np.array([[0, 1], [0, 5]]), {"n_classes": 3}, "rater 1 holds label 5 but n_classes is 3"),
        (np.array([[0, 1], [0, 1]]), {"n_classes": 0}, "n_classes must be a whole number >= 1"),
        (np.array([[0, np.nan], [0, 1]]), {}, "NaN/Inf"),
        (np.array([["a"], ["b"]]), {}, "must hold integers"),
        (np.zeros(4), {}, "shape (R, *spatial)"),
        (np.zeros((2, 0)), {}, "empty"),
        (np.zeros((2, 3), int), {"max_iter": 0}, "max_iter must be an integer >= 1"),
        (np.zeros((2, 3), int), {"tol": -1.0}, "tol must be a finite number >= 0"),
        (np.zeros((2, 3), int), {"undecided": -2}, "undecided must be a label"),
        (np.zeros((2, 3), int), {"prior": [1, 1, 1]}, "prior must hold 2 values"),
        (np.zeros((2, 3), int), {"prior": [0, 0]}, "prior values must be finite"),
        (np.zeros((2, 3), int), {"roi": np.ones(4, bool)}, "roi has shape (4,)"),
        (np.zeros((2, 3), int), {"roi": np.zeros(3, bool)}, "roi is empty"),
    ],
)
def test_staple_errors_are_one_line(raters, kwargs, message):
    with pytest.raises(InputError) as err:
        ml.multilabel_staple(raters, **kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_other_functions_validate_their_input():
    bad = np.array([[0, 1], [0, 7]])
    for call in (
        lambda: ml.label_vote(bad, n_classes=2),
        lambda: ml.class_average(bad, n_classes=2),
        lambda: ml.class_disagreement(bad, n_classes=2),
        lambda: ml.confusion_matrices(bad, np.zeros(2, int), n_classes=2),
    ):
        with pytest.raises(InputError, match="rater 1 holds label 7 but n_classes is 2"):
            call()
    with pytest.raises(InputError, match="reference has shape"):
        ml.confusion_matrices(np.zeros((2, 3), int), np.zeros(4, int))
    with pytest.raises(InputError, match=r"or 3 class maps of shape \(3, 3\)"):
        ml.confusion_matrices(np.zeros((2, 3), int), np.zeros((3, 4)), n_classes=2)
    names = ["rater-a.nii.gz", "rater-b.nii.gz"]
    with pytest.raises(InputError, match="rater-b.nii.gz holds label 7 but n_classes is 2"):
        ml.as_label_maps(bad, n_classes=2, names=names)
    with pytest.raises(InputError, match="rater-b.nii.gz has shape"):
        ml.as_label_maps([np.zeros(3), np.zeros(4)], names=names)
    with pytest.raises(InputError, match="negative label"):
        ml.confusion_matrices(np.zeros((2, 3), int), np.array([0, -1, 0]))


def test_docstring_examples():
    assert doctest.testmod(ml, optionflags=doctest.ELLIPSIS).failed == 0
