"""softseg.metrics.uncertainty: uncertainty as a detector of misclassified voxels (AUROC, ROC)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from softseg.errors import InputError
from softseg.metrics.uncertainty import (
    ROC_BINS,
    entropy,
    entropy_and_errors,
    error_detection,
    misclassified,
    roc_from_counts,
    subject_entropy,
    uncertainty_error_auroc,
)


def test_auroc_by_hand():
    # errors at u = 0.9, 0.4; correct at u = 0.4, 0.1, 0.0
    # pairs (err > ok): 0.9 beats all 3; 0.4 beats 0.1, 0.0 and ties 0.4 -> 3 + 2.5 = 5.5 of 6
    u = np.array([0.9, 0.4, 0.4, 0.1, 0.0])
    e = np.array([True, True, False, False, False])
    assert uncertainty_error_auroc(u, e) == pytest.approx(5.5 / 6)
    # 2 more correct voxels at 0 left out of the arrays: both errors beat them -> (5.5 + 4) / 10
    assert uncertainty_error_auroc(u, e, n_correct_at_zero=2) == pytest.approx(9.5 / 10)
    # the histogram form: one bin per distinct value here, so the same numbers
    d = error_detection(u, e, n_correct_at_zero=2, max_uncertainty=1.0)
    assert d.auroc == pytest.approx(9.5 / 10) and d.n_correct == 5 and d.n_errors == 2
    assert error_detection(u, e, max_uncertainty=1.0).auroc == pytest.approx(5.5 / 6)
    assert uncertainty_error_auroc(u[::-1], e[::-1]) == pytest.approx(5.5 / 6)  # order-free
    assert uncertainty_error_auroc(-u + 1, e) == pytest.approx(0.5 / 6)  # inverted ranking
    # a mask drops voxels
    assert uncertainty_error_auroc(u, e, mask=np.array([0, 1, 1, 1, 1], bool)) == pytest.approx(2.5 / 3)


def test_auroc_equals_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    u = rng.random((30, 40)).round(2).astype(np.float32)  # many ties
    e = rng.random((30, 40)) < 0.6 * u
    assert uncertainty_error_auroc(u, e) == pytest.approx(sk.roc_auc_score(e.ravel(), u.ravel()), abs=1e-12)
    ref = sk.roc_auc_score(np.r_[e.ravel(), np.zeros(500, bool)], np.r_[u.ravel(), np.zeros(500)])
    assert uncertainty_error_auroc(u, e, n_correct_at_zero=500) == pytest.approx(ref, abs=1e-12)
    # histograms: values 0.01 apart never share a bin of width 1/200 -> exact
    assert error_detection(u, e, n_correct_at_zero=500, max_uncertainty=1.0).auroc == pytest.approx(ref, abs=1e-12)
    # continuous values: within the pairs sharing a bin (bins of 1/200)
    v = rng.random(4000)
    f = rng.random(4000) < v
    assert abs(error_detection(v, f, max_uncertainty=1.0).auroc - sk.roc_auc_score(f, v)) < 2 / ROC_BINS


def test_undefined_without_errors_or_without_correct_voxels():
    u = np.array([0.1, 0.2])
    assert math.isnan(uncertainty_error_auroc(u, np.array([False, False])))
    assert math.isnan(uncertainty_error_auroc(u, np.array([True, True])))


def test_roc_from_histograms():
    # bins of width ln2/100; errors in the top bin, correct voxels in bin 0
    d = error_detection(np.array([0.69, 0.69, 0.0, 0.0, 0.0]), np.array([True, True, False, False, False]))
    fpr, tpr = d.roc()
    assert fpr[0] == 1 and tpr[0] == 1 and fpr[-1] == 0 and tpr[-1] == 0
    assert fpr[1] == 0 and tpr[1] == 1  # above the zero bin: every error, no correct voxel
    assert d.error_counts.sum() == 2 and d.correct_counts[0] == 3 and d.auroc == 1.0
    # pooling two subjects = adding histograms
    fpr2, tpr2 = roc_from_counts(2 * d.error_counts, 2 * d.correct_counts)
    np.testing.assert_array_equal(fpr, fpr2)
    np.testing.assert_array_equal(tpr, tpr2)


def test_misclassified_by_hand():
    p = np.array([0.1, 0.6, 0.35, 0.9])
    g = np.array([0.0, 0.0, 1.0, 0.7])
    np.testing.assert_array_equal(misclassified(p, g, threshold=0.3), [False, True, False, False])
    np.testing.assert_array_equal(misclassified(p, g, threshold=0.5), [False, True, True, False])


def test_refusals():
    with pytest.raises(InputError, match="differ"):
        error_detection(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(InputError, match="bool map"):
        error_detection(np.zeros(3), np.zeros(3))
    with pytest.raises(InputError, match="finite and >= 0"):
        error_detection(np.array([0.1, -0.1]), np.array([True, False]))
    with pytest.raises(InputError, match="above max_uncertainty"):
        error_detection(np.array([0.8]), np.array([True]))
    with pytest.raises(InputError, match="n_correct_at_zero"):
        error_detection(np.zeros(2), np.array([True, False]), n_correct_at_zero=-1)


def test_entropy_and_errors_in_one_pass():
    rng = np.random.default_rng(2)
    p = rng.random((40, 30)).astype(np.float32)
    p[p < 0.5] = 0
    err = rng.random((40, 30)) < 0.2
    total, det = entropy_and_errors(p, err, n_correct_at_zero=7)
    assert total == pytest.approx(subject_entropy(p), rel=1e-12)
    ref = error_detection(entropy(p), err, n_correct_at_zero=7)
    np.testing.assert_array_equal(det.error_counts, ref.error_counts)
    np.testing.assert_array_equal(det.correct_counts, ref.correct_counts)
    assert det.auroc == ref.auroc
    total0, det0 = entropy_and_errors(p > 0.5, err)  # a mask: no entropy, no ranking (AUROC 1/2)
    assert total0 == 0 and det0.auroc == 0.5
