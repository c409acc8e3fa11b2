"""softseg.class_levels: one painted code = (class, level); hand-computed cases and round trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softseg.class_levels import (
    class_level_maps,
    class_soft_maps,
    codes_from_class_level_maps,
    decode,
    encode,
    label_map,
    max_code,
)
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError


def test_codes_by_hand_three_classes_three_levels():
    # code = (c - 1) * L + l with L = 3: class 1 -> 1..3, class 2 -> 4..6, class 3 -> 7..9
    assert [encode(c, lv, n_levels=3) for c, lv in [(1, 1), (1, 3), (2, 1), (3, 3), (0, 2), (2, 0)]] == [1, 3, 4, 9, 0, 0]
    codes = np.array([0, 1, 3, 4, 6, 7, 9])
    classes, levels = decode(codes, n_classes=3, n_levels=3)
    assert classes.tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert levels.tolist() == [0, 1, 3, 1, 3, 1, 3]
    assert max_code(3, 3) == 9


def test_one_class_codes_are_levels():
    levels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    classes, back = decode(levels, n_classes=1, n_levels=3)
    np.testing.assert_array_equal(back, levels)
    np.testing.assert_array_equal(classes, levels > 0)
    np.testing.assert_array_equal(class_level_maps(levels, n_classes=1, n_levels=3)[0], levels)


def test_soft_maps_use_the_scale_and_sum_to_the_painted_value():
    scale = ConfidenceScale.default()  # 1/3, 2/3, 1
    codes = np.array([0, 2, 6, 7])  # bg, class1 medium, class2 high, class3 low
    soft = class_soft_maps(codes, scale=scale, n_classes=3)
    expected = np.array(
        [[0, 2 / 3, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1 / 3]], dtype=np.float32
    )
    np.testing.assert_allclose(soft, expected, rtol=0, atol=1e-7)
    assert soft.dtype == np.float32 and soft.shape == (3, 4)
    assert label_map(codes, n_classes=3, n_levels=3).tolist() == [0, 1, 2, 3]
    assert label_map(codes, n_classes=3, n_levels=3, min_level=2).tolist() == [0, 1, 2, 0]


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 5), lv=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_round_trip_through_per_class_files(k, lv, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k * lv + 1, size=(6, 7, 3))
    maps = class_level_maps(codes, n_classes=k, n_levels=lv)
    assert maps.shape == (k, 6, 7, 3) and int(maps.max()) <= lv
    assert ((maps > 0).sum(0) <= 1).all()  # classes never overlap
    np.testing.assert_array_equal(codes_from_class_level_maps(maps, n_levels=lv), codes)


def test_errors_are_one_line_and_name_the_layer():
    with pytest.raises(InputError, match=r"^layer 'A': holds values 0\.\.10 but 3 class\(es\) x 3 level\(s\) allow 0\.\.9"):
        decode(np.array([0, 10]), n_classes=3, n_levels=3, name="layer 'A'")
    with pytest.raises(InputError, match="fractional"):
        decode(np.array([0.5]), n_classes=1, n_levels=3)
    overlap = np.zeros((2, 3), dtype=np.uint8)
    overlap[0, 1] = overlap[1, 1] = 2
    with pytest.raises(InputError, match=r"^wm\.nii\.gz: voxel \(1,\) is also painted for another class"):
        codes_from_class_level_maps(overlap, n_levels=3, names=["gm.nii.gz", "wm.nii.gz"])
    with pytest.raises(InputError, match="levels 1..3"):
        encode(1, 4, n_levels=3)
