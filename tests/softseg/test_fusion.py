"""softseg.fusion against independent references: SimpleITK's STAPLE and LabelVoting, a direct
(ungrouped) implementation of the soft-STAPLE formulas, and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from softseg import fusion
from softseg.errors import InputError

sitk = pytest.importorskip("SimpleITK")


# ----------------------------------------------------------------------------- references
def sitk_staple(raters: np.ndarray, max_iter: int | None = None):
    images = [sitk.GetImageFromArray(np.ascontiguousarray(r, dtype=np.uint8)) for r in raters]
    filt = sitk.STAPLEImageFilter()
    filt.SetForegroundValue(1.0)
    if max_iter is not None:
        filt.SetMaximumIterations(max_iter)
    out = filt.Execute(images)
    return (
        sitk.GetArrayFromImage(out),
        np.array(filt.GetSensitivity()),
        np.array(filt.GetSpecificity()),
        filt.GetElapsedIterations(),
    )


def noisy_raters(rng, shape, n_raters, flip, density=0.3):
    truth = rng.random(shape) < density
    flips = rng.random((n_raters, *shape)) < np.asarray(flip).reshape(-1, *([1] * len(shape)))
    return np.where(flips, ~truth, truth).astype(np.uint8)


def blob_raters(shape=(24, 28, 20)):
    """A smooth structure outlined by raters with different habits (realistic disagreement)."""
    z = np.indices(shape, sparse=True)
    r2 = sum(((zi - s / 2 + 0.5) / (s / 4)) ** 2 for zi, s in zip(z, shape))
    blob = r2 < 1.0
    return np.stack(
        [
            blob,
            ndimage.binary_dilation(blob),  # generous rater
            ndimage.binary_erosion(blob),  # strict rater
            np.roll(blob, 2, axis=0),  # misregistered rater
        ]
    ).astype(np.uint8)


def assert_matches_sitk(result, ref, *, tol=1e-6):
    prob, sens, spec, elapsed = ref
    np.testing.assert_allclose(result.probability, prob, rtol=0, atol=tol)
    np.testing.assert_allclose(result.sensitivity, sens, rtol=0, atol=tol)
    np.testing.assert_allclose(result.specificity, spec, rtol=0, atol=tol)
    # SimpleITK reports the loop index at its convergence break (one less than the
    # iterations run) and the full count when it hits MaximumIterations
    assert result.iterations == (elapsed + 1 if result.converged else elapsed)


# -------------------------------------------------------------------------- STAPLE vs ITK
@pytest.mark.parametrize(
    "seed, n_raters, shape, flip",
    [
        (0, 3, (10, 12, 14), [0.05, 0.1, 0.2]),
        (1, 4, (16, 9, 11), [0.02, 0.02, 0.3, 0.1]),
        (2, 2, (30, 40), [0.1, 0.15]),
        (3, 5, (8, 8, 8), [0.05, 0.1, 0.15, 0.2, 0.25]),
        (4, 7, (9, 10, 11), [0.1] * 7),
        (5, 21, (6, 7, 8), [0.05, 0.3] * 10 + [0.1]),  # more than 20 raters: grouped by np.unique
    ],
)
def test_staple_matches_simpleitk_random(seed, n_raters, shape, flip):
    raters = noisy_raters(np.random.default_rng(seed), shape, n_raters, flip)
    ref = sitk_staple(raters)
    res = fusion.staple(raters)
    assert res.converged
    assert_matches_sitk(res, ref)
    # the prior is the mean of the initial average, as in ITK
    assert res.prior == pytest.approx(raters.mean(), abs=1e-12)


def test_staple_matches_simpleitk_structured():
    raters = blob_raters()
    res = fusion.staple(raters)
    assert_matches_sitk(res, sitk_staple(raters))
    # the strict rater never marks background as foreground
    assert res.specificity[2] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("max_iter", [1, 2, 3])
def test_staple_fixed_iterations_match_simpleitk(max_iter):
    raters = noisy_raters(
        np.random.default_rng(10 + max_iter), (12, 13, 14), 4, [0.05, 0.1, 0.2, 0.3]
    )
    res = fusion.staple(raters, max_iter=max_iter)
    ref = sitk_staple(raters, max_iter=max_iter)
    assert res.iterations == max_iter == ref[3]
    assert not res.converged
    assert_matches_sitk(res, ref)


def test_staple_one_iteration_by_hand():
    # two raters, four voxels: votes (1,1), (1,0), (0,0), (0,0)
    raters = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=np.uint8)
    w0 = np.array([1.0, 0.5, 0.0, 0.0])
    g = w0.mean()
    p = np.array([(1 + 0.5) / 1.5, 1 / 1.5])
    q = np.array([2 / 2.5, 2.5 / 2.5])
    a = np.array([p[0] * p[1], p[0] * (1 - p[1]), (1 - p[0]) * (1 - p[1]), (1 - p[0]) * (1 - p[1])])
    b = np.array([(1 - q[0]) * (1 - q[1]), (1 - q[0]) * q[1], q[0] * q[1], q[0] * q[1]])
    expected = g * a / (g * a + (1 - g) * b)
    res = fusion.staple(raters, max_iter=1)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-15)
    np.testing.assert_allclose(res.specificity, q, atol=1e-15)
    np.testing.assert_allclose(res.probability, expected, atol=1e-15)


def test_staple_roi_equals_simpleitk_on_the_crop():
    raters = blob_raters((30, 30, 24))
    roi = np.zeros(raters.shape[1:], dtype=bool)
    box = (slice(4, 26), slice(6, 25), slice(3, 22))
    roi[box] = True
    res = fusion.staple(raters, roi=roi)
    crop = raters[(slice(None), *box)]
    ref = sitk_staple(crop)
    np.testing.assert_allclose(res.probability[box], ref[0], atol=1e-6)
    np.testing.assert_allclose(res.sensitivity, ref[1], atol=1e-6)
    assert not res.probability[~roi].any()
    # the global prior depends on the field of view: the whole volume gives another answer
    whole = fusion.staple(raters)
    assert whole.prior < res.prior


def test_default_roi_box_and_margin():
    raters = np.zeros((2, 20, 20, 20), dtype=np.uint8)
    raters[0, 5:8, 6:9, 7:10] = 1
    raters[1, 9, 9, 12] = 1
    roi = fusion.default_roi(raters, margin=2)
    expected = np.zeros((20, 20, 20), dtype=bool)
    expected[3:12, 4:12, 5:15] = True
    np.testing.assert_array_equal(roi, expected)
    clipped = fusion.default_roi(raters, margin=30)
    assert clipped.all()
    assert fusion.default_roi(np.zeros((2, 4, 4))).all()  # nothing labelled: whole array
    with pytest.raises(InputError, match="margin"):
        fusion.default_roi(raters, margin=-1)


@pytest.mark.parametrize("value", [0, 1])
def test_staple_consensus_all_empty_or_full(value):
    raters = np.full((3, 5, 6, 7), value, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fusion.staple(raters)
    assert np.all(res.probability == value)
    np.testing.assert_array_equal(res.sensitivity, 1.0)
    np.testing.assert_array_equal(res.specificity, 1.0)
    assert res.iterations == 0 and res.converged
    # SimpleITK gives NaN here (0/0): the consensus is our documented answer
    assert np.isnan(sitk_staple(raters)[0]).all()


def test_staple_identical_raters_match_simpleitk():
    rater = blob_raters()[0]
    raters = np.stack([rater] * 3)
    res = fusion.staple(raters)
    np.testing.assert_array_equal(res.probability, rater.astype(float))
    prob, sens, spec, _ = sitk_staple(raters)
    np.testing.assert_allclose(res.probability, prob, atol=1e-12)
    np.testing.assert_allclose(sens, 1.0)
    np.testing.assert_allclose(spec, 1.0)


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=st.integers(0, 1)
    ),
    st.integers(2, 5),
)
def test_staple_of_identical_raters_returns_that_rater(rater, n):
    raters = np.stack([rater] * n)
    res = fusion.staple(raters)
    np.testing.assert_array_equal(res.probability, rater.astype(np.float64))
    assert not np.isnan(res.sensitivity).any()


def test_staple_soft_flag_on_binary_is_bit_identical():
    raters = noisy_raters(np.random.default_rng(5), (10, 11, 12), 4, [0.1, 0.1, 0.2, 0.05])
    binary = fusion.staple(raters)
    soft = fusion.staple(raters.astype(np.float32), soft=True)
    np.testing.assert_array_equal(binary.probability, soft.probability)
    np.testing.assert_array_equal(binary.sensitivity, soft.sensitivity)
    assert binary.iterations == soft.iterations


def dense_soft_staple(d: np.ndarray, *, max_iter: int, tol: float = 1e-7):
    """Soft STAPLE written straight from the formulas, one entry per voxel (no grouping)."""
    n = d.shape[0]
    d = d.reshape(n, -1).astype(np.float64)
    w = d.mean(axis=0)
    g = w.mean()
    last = None
    for _ in range(max_iter):
        p = (d * w).sum(axis=1) / w.sum()
        q = ((1 - d) * (1 - w)).sum(axis=1) / (1 - w).sum()
        a = np.prod(p[:, None] ** d * (1 - p[:, None]) ** (1 - d), axis=0)
        b = np.prod((1 - q[:, None]) ** d * q[:, None] ** (1 - d), axis=0)
        w = g * a / (g * a + (1 - g) * b)
        if last is not None and max(np.abs(p - last[0]).max(), np.abs(q - last[1]).max()) <= tol:
            break
        last = (p, q)
    return w, p, q


def test_soft_staple_matches_direct_formulas():
    rng = np.random.default_rng(7)
    raters = blob_raters((14, 16, 12)).astype(np.float32)
    levels = np.array([1 / 3, 2 / 3, 1.0], dtype=np.float32)
    raters = raters * levels[rng.integers(0, 3, size=raters.shape)]  # painted confidence
    res = fusion.staple(raters, soft=True)
    w, p, q = dense_soft_staple(raters, max_iter=10_000)
    np.testing.assert_allclose(res.probability.reshape(-1), w, atol=1e-9)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-9)
    np.testing.assert_allclose(res.specificity, q, atol=1e-9)
    assert ((res.probability >= 0) & (res.probability <= 1)).all()


def test_soft_staple_many_distinct_values_still_exact():
    rng = np.random.default_rng(8)
    raters = rng.random((3, 6, 7, 5)) ** 3  # every voxel value distinct
    res = fusion.staple(raters, soft=True, max_iter=4)
    w, p, _ = dense_soft_staple(raters, max_iter=4)
    np.testing.assert_allclose(res.probability.reshape(-1), w, atol=1e-12)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-12)


def test_soft_identical_raters_are_the_consensus():
    rater = np.array([[0.0, 0.5], [1.0, 0.25]])
    res = fusion.staple([rater, rater], soft=True)
    np.testing.assert_array_equal(res.probability, rater)
    np.testing.assert_array_equal(res.sensitivity, [1.0, 1.0])


def test_staple_progress_callback_and_prior_option():
    raters = noisy_raters(np.random.default_rng(9), (8, 9, 10), 3, [0.1, 0.2, 0.1])
    seen = []
    res = fusion.staple(raters, prior=0.3, progress=lambda it, change: seen.append((it, change)))
    assert res.prior == 0.3
    assert [it for it, _ in seen] == list(range(1, res.iterations + 1))
    assert seen[0][1] == float("inf") and seen[-1][1] <= 1e-7


def test_staple_errors():
    soft = np.array([[0.0, 0.5], [1.0, 1.0]])
    with pytest.raises(InputError, match=r"soft=True.*--soft|--soft.*binarise"):
        fusion.staple(soft)
    with pytest.raises(InputError, match="at least 2"):
        fusion.staple(np.zeros((1, 4, 4)))
    with pytest.raises(InputError, match=r"\(4, 5\).*\(4, 4\)"):
        fusion.staple([np.zeros((4, 4)), np.zeros((4, 5))])
    with pytest.raises(InputError, match="NaN"):
        fusion.staple(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        fusion.staple(np.array([[0, 2], [1, 0]]))
    with pytest.raises(InputError, match="roi"):
        fusion.staple(np.zeros((2, 4, 4)), roi=np.ones((4, 5), bool))
    with pytest.raises(InputError, match="roi is empty"):
        fusion.staple(np.zeros((2, 4, 4)), roi=np.zeros((4, 4), bool))
    with pytest.raises(InputError, match="max_iter"):
        fusion.staple(np.zeros((2, 4)), max_iter=0)
    with pytest.raises(InputError, match="prior"):
        fusion.staple(np.zeros((2, 4)), prior=1.0)


# ------------------------------------------------------------------------- simple fusions
def test_majority_vote_matches_simpleitk_label_voting():
    raters = noisy_raters(np.random.default_rng(11), (9, 10, 11), 4, [0.2] * 4)
    undecided = 255
    images = [sitk.GetImageFromArray(r) for r in raters]
    ref = sitk.GetArrayFromImage(sitk.LabelVoting(images, undecided))
    ties = ref == undecided
    assert ties.any()  # 4 raters: some 2-2 splits
    for tie_value in (0, 1):
        ours = fusion.majority_vote(raters, ties=tie_value)
        np.testing.assert_array_equal(ours[~ties], ref[~ties])
        assert np.all(ours[ties] == tie_value)
    odd = raters[:3]
    ref3 = sitk.GetArrayFromImage(
        sitk.LabelVoting([sitk.GetImageFromArray(r) for r in odd], undecided)
    )
    np.testing.assert_array_equal(fusion.majority_vote(odd), ref3)


def test_union_intersection_by_hand():
    raters = [np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), np.array([1, 0, 0, 0])]
    np.testing.assert_array_equal(fusion.union(raters), [1, 1, 1, 0])
    np.testing.assert_array_equal(fusion.intersection(raters), [1, 0, 0, 0])
    np.testing.assert_array_equal(fusion.majority_vote(raters), [1, 0, 0, 0])
    assert fusion.union(raters).dtype == np.uint8
    with pytest.raises(InputError, match="binary"):
        fusion.union([np.array([0.5, 1.0]), np.array([1.0, 0.0])])
    with pytest.raises(InputError, match="ties"):
        fusion.majority_vote(raters, ties=2)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(2, 6), st.integers(1, 8), st.integers(1, 8)),
        elements=st.integers(0, 1),
    )
)
def test_average_of_binary_raters_is_the_vote_fraction(raters):
    votes = raters.sum(axis=0)
    avg = fusion.average(raters)
    assert avg.dtype == np.float32
    np.testing.assert_allclose(avg, votes / raters.shape[0], rtol=1e-6, atol=0)


def test_average_of_soft_raters_and_disagreement():
    raters = [np.array([0.0, 1.0, 0.5]), np.array([1.0, 1.0, 0.0])]
    np.testing.assert_allclose(fusion.average(raters), [0.5, 1.0, 0.25])
    h = fusion.disagreement(raters)
    expected_last = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    np.testing.assert_allclose(h, [np.log(2), 0.0, expected_last], rtol=1e-6)


def test_sample_rater_uses_the_generator():
    raters = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    draws = [
        fusion.sample_rater(raters, rng=np.random.default_rng(s), return_index=True)[1]
        for s in range(40)
    ]
    assert set(draws) == {0, 1, 2, 3}
    again = [
        fusion.sample_rater(raters, rng=np.random.default_rng(s), return_index=True)[1]
        for s in range(40)
    ]
    assert draws == again
    arr, idx = fusion.sample_rater(list(raters), rng=np.random.default_rng(3), return_index=True)
    np.testing.assert_array_equal(arr, raters[idx])
    with pytest.raises(InputError, match="Generator"):
        fusion.sample_rater(raters, rng=3)
