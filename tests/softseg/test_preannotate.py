"""softseg.preannotate: a model's prediction as painted levels / class codes, hand-computed.

Scale used throughout: values 0.25, 0.5, 1 (the paper's scale, exact in binary), so the level
boundaries (midpoints) are 0.125, 0.375 and 0.75, and a value exactly on a boundary goes to the
lower level.
"""

import numpy as np
import pytest

from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.preannotate import (
    RULE,
    changed_voxels,
    is_uncorrected,
    prediction_to_codes,
    preannotation_record,
)

SCALE = ConfidenceScale((0.25, 0.5, 1.0), ("low", "medium", "high"))


def test_one_class_nearest_level_with_ties_to_the_lower_level():
    p = np.array([0.0, 0.1, 0.125, 0.2, 0.375, 0.4, 0.75, 0.8, 1.0], dtype=np.float32)
    want = [0, 0, 0, 1, 1, 2, 2, 3, 3]
    got = prediction_to_codes(p.reshape(1, 3, 3), scale=SCALE)
    assert got.dtype == np.uint8
    assert got.ravel().tolist() == want
    # n_classes=1 is the same as None
    assert prediction_to_codes(p, scale=SCALE, n_classes=1).tolist() == want


def test_values_within_rounding_of_0_and_1_are_clipped():
    p = np.array([-1e-7, 1 + 1e-7])
    assert prediction_to_codes(p, scale=SCALE).tolist() == [0, 3]


def test_k_classes_argmax_class_at_the_level_of_its_probability():
    # two classes (L = 3): codes (c - 1) * 3 + level
    #   voxel: (p1, p2) -> background = 1 - p1 - p2 -> winner, its p, level, code
    cases = [
        ((0.9, 0.05), 1, 3),      # bg 0.05: class 1 at 0.9 -> level 3 -> code 3
        ((0.3, 0.6), 2, 2),       # bg 0.1: class 2 at 0.6 -> level 2 -> code 5
        ((0.2, 0.1), 0, 0),       # bg 0.7 wins -> background
        ((0.4, 0.4), 1, 2),       # tie of classes 1, 2 -> lower index 1; 0.4 -> level 2 -> 2
        ((0.375, 0.25), 0, 0),    # bg 0.375 ties class 1 -> background first
        ((0.0, 0.5), 0, 0),       # bg 0.5 ties class 2 -> background
        ((0.34, 0.33), 1, 1),     # bg 0.33: class 1 at 0.34 -> level 1 -> code 1
    ]
    p = np.array([c[0] for c in cases], dtype=np.float32).T  # (2, N)
    got = prediction_to_codes(p, scale=SCALE, n_classes=2)
    want = [0 if c == 0 else (c - 1) * 3 + lv for _, c, lv in cases]
    assert got.tolist() == want
    assert got.dtype == np.uint8


def test_a_winning_class_that_rounds_to_level_0_stays_background():
    # 8 classes at 0.12 each, background 0.04: class 1 wins (ties to the lower index) at 0.12,
    # below the first boundary 0.125 -> background
    p = np.full((8, 1), 0.12, dtype=np.float32)
    assert prediction_to_codes(p, scale=SCALE, n_classes=8).tolist() == [0]  # 0.12 < 0.125
    p = np.full((8, 1), 0.124, dtype=np.float32)
    p[0] = 0.0
    p[3] = 0.13  # background 1 - 6 * 0.124 - 0.13 = 0.126: class 4 wins, level 1, code 3 * 3 + 1
    assert prediction_to_codes(p, scale=SCALE, n_classes=8).tolist() == [10]


def test_codes_widen_to_uint16_when_k_times_l_exceeds_255():
    scale = ConfidenceScale.linear(9)
    p = np.zeros((30, 2), dtype=np.float32)
    p[29, 0] = 1.0  # class 30 at level 9 -> code 29 * 9 + 9 = 270
    got = prediction_to_codes(p, scale=scale, n_classes=30)
    assert got.dtype == np.uint16 and got.tolist() == [270, 0]


@pytest.mark.parametrize(
    ("probabilities", "kwargs", "words"),
    [
        (np.array([0.5, 1.2]), {}, "[0, 1]"),
        (np.array([0.5, np.nan]), {}, "NaN"),
        (np.zeros((3, 4)), {"n_classes": 2}, "expected 2 class maps"),
        (np.array([[0.7], [0.6]]), {"n_classes": 2}, "sum to"),
        (np.zeros(3), {"n_classes": 0}, "n_classes"),
        (np.zeros(3), {"n_classes": 1.5}, "n_classes"),
    ],
)
def test_bad_input_is_one_line(probabilities, kwargs, words):
    with pytest.raises(InputError) as info:
        prediction_to_codes(probabilities, scale=SCALE, **kwargs)
    text = str(info.value)
    assert words in text and "\n" not in text


def test_scale_must_be_a_confidence_scale():
    with pytest.raises(InputError, match="ConfidenceScale"):
        prediction_to_codes(np.zeros(2), scale=(0.5, 1.0))


def test_changed_voxels_counts_differences_plus_earlier_sessions():
    model = np.array([[0, 1, 2], [3, 0, 0]])
    painted = np.array([[0, 2, 2], [0, 0, 1]])
    assert changed_voxels(painted, model) == 3
    assert changed_voxels(painted, model, before=4) == 7
    assert changed_voxels(model, model) == 0
    with pytest.raises(InputError, match="shape"):
        changed_voxels(painted, model[:1])


def test_record_and_the_training_rule():
    rec = preannotation_record(model="m.safetensors", source="file", model_voxels=12, rater_changed_voxels=0)
    assert rec == {"model": "m.safetensors", "source": "file", "rule": RULE, "model_voxels": 12,
                   "rater_changed_voxels": 0}
    with pytest.raises(InputError, match="source"):
        preannotation_record(model="m", source="disk", model_voxels=1, rater_changed_voxels=0)
    # painted by a person
    assert not is_uncorrected(None, None)
    # a model's map nobody corrected (or whose record is missing / malformed)
    assert is_uncorrected("m.safetensors", rec)
    assert is_uncorrected("m.safetensors", None)
    assert is_uncorrected("m.safetensors", {**rec, "rater_changed_voxels": "3"})
    assert is_uncorrected("m.safetensors", {**rec, "rater_changed_voxels": True})
    # corrected
    assert not is_uncorrected("m.safetensors", {**rec, "rater_changed_voxels": 3})
    assert not is_uncorrected(None, {**rec, "rater_changed_voxels": 3})
