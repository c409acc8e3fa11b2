"""Confidence scales: levels <-> soft values, validation, serialisation, label kinds."""

import json

import numpy as np
import pytest

from softseg.confidence import (
    PRESETS,
    ConfidenceScale,
    as_rater_values,
    detect_label_kind,
    get_preset,
    label_to_soft,
)
from softseg.errors import InputError


def test_default_scale_is_three_equal_steps():
    scale = ConfidenceScale.default()
    assert scale.names == ("low", "medium", "high")
    assert scale.n_levels == 3
    np.testing.assert_allclose(scale.values, [1 / 3, 2 / 3, 1.0])


def test_paper_scale_is_half_one_two_over_two():
    # Gros et al. 2021, section 4.4.2: 0.5, 1, 2 for low/medium/high; divided by the max (2).
    scale = ConfidenceScale.from_paper()
    assert scale.values == (0.25, 0.5, 1.0)
    assert scale.names == ("low", "medium", "high")


def test_to_soft_known_values_keep_shape_and_float32():
    scale = ConfidenceScale(values=(0.25, 0.5, 1.0), names=("low", "medium", "high"))
    levels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    soft = scale.to_soft(levels)
    assert soft.dtype == np.float32
    assert soft.shape == (2, 2)
    np.testing.assert_array_equal(soft, np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32))
    # integer-valued floats and bools are accepted
    np.testing.assert_array_equal(scale.to_soft(np.array([3.0, 0.0])), [1.0, 0.0])
    np.testing.assert_array_equal(scale.to_soft(np.array([True, False])), [0.25, 0.0])


def test_to_soft_refuses_levels_outside_the_scale():
    scale = ConfidenceScale.default()
    with pytest.raises(InputError, match=r"values 0\.\.4 .* levels 0\.\.3"):
        scale.to_soft(np.array([0, 4]))
    with pytest.raises(InputError, match="negative|values -1"):
        scale.to_soft(np.array([-1, 2]))
    with pytest.raises(InputError, match="whole numbers"):
        scale.to_soft(np.array([0.5, 1.0]))


def test_to_levels_inverts_to_soft():
    scale = ConfidenceScale.from_paper()
    levels = np.arange(4, dtype=np.uint8)
    np.testing.assert_array_equal(scale.to_levels(scale.to_soft(levels)), levels)
    # nearest level: 0.3 is nearer 0.25 than 0.5; 0.8 nearer 1 than 0.5
    np.testing.assert_array_equal(scale.to_levels(np.array([0.1, 0.3, 0.8])), [0, 1, 3])


@pytest.mark.parametrize(
    ("values", "names", "match"),
    [
        ((), (), "1 to 9 levels"),
        (tuple(np.linspace(0.1, 1, 10)), (), "1 to 9 levels"),
        ((0.0, 1.0), (), r"\(0, 1\]"),
        ((0.5, 1.5), (), r"\(0, 1\]"),
        ((0.5, 2.0), (), "0.5/1/2 -> 0.25/0.5/1"),
        ((0.6, 0.3), (), "increase strictly"),
        ((0.5, 0.5), (), "increase strictly"),
        ((0.5, 1.0), ("a",), "one name per level"),
        ((0.5, 1.0), ("a", "a"), "distinct"),
        (("x",), (), "numbers"),
    ],
)
def test_invalid_scales_say_what_is_wrong(values, names, match):
    with pytest.raises(InputError, match=match):
        ConfidenceScale(values=values, names=names)


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        ConfidenceScale(values=(2.0,))


def test_default_names_and_linear():
    assert ConfidenceScale(values=(0.5, 1.0)).names == ("level 1", "level 2")
    lin = ConfidenceScale.linear(4)
    np.testing.assert_allclose(lin.values, [0.25, 0.5, 0.75, 1.0])
    assert len(lin.names) == 4
    assert ConfidenceScale.linear(3) == ConfidenceScale.default()
    with pytest.raises(InputError, match="1 to 9"):
        ConfidenceScale.linear(0)


def test_from_weights_normalises_by_max():
    assert ConfidenceScale.from_weights((1, 2, 4, 8)).values == (0.125, 0.25, 0.5, 1.0)
    with pytest.raises(InputError, match="positive"):
        ConfidenceScale.from_weights((0, 1))


def test_dict_round_trip_through_json():
    scale = ConfidenceScale(values=(0.2, 0.7, 1.0), names=("unsure", "likely", "sure"))
    back = ConfidenceScale.from_dict(json.loads(json.dumps(scale.as_dict())))
    assert back == scale
    # the short form and the metadata-wrapped form
    assert ConfidenceScale.from_dict({"values": [0.2, 0.7, 1.0], "names": ["unsure", "likely", "sure"]}) == scale
    assert ConfidenceScale.from_dict({"softseg_confidence": scale.as_dict()}) == scale


def test_from_dict_errors():
    with pytest.raises(InputError, match="unknown keys"):
        ConfidenceScale.from_dict({"values": [1.0], "colour": "red"})
    with pytest.raises(InputError, match="without gaps"):
        ConfidenceScale.from_dict({"levels": [{"level": 1, "value": 0.5}, {"level": 3, "value": 1.0}]})
    with pytest.raises(InputError, match="'levels' or 'values'"):
        ConfidenceScale.from_dict({})


def test_presets_registry():
    assert get_preset("binary").values == (1.0,)
    assert set(PRESETS) >= {"default (1/3, 2/3, 1)", "paper (0.5, 1, 2 / 2)", "binary"}
    with pytest.raises(InputError, match="choose one of"):
        get_preset("nope")


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.array([0, 1, 1], dtype=np.uint8), "binary"),
        (np.array([True, False]), "binary"),
        (np.array([0.0, 1.0]), "binary"),
        (np.array([0, 2, 3], dtype=np.int16), "levels"),
        (np.array([0.0, 3.0]), "levels"),
        (np.array([0.0, 0.25, 1.0], dtype=np.float32), "soft"),
    ],
)
def test_detect_label_kind(array, kind):
    assert detect_label_kind(array) == kind


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([-1, 1]), "negative"),
        (np.array([0.5, 1.5]), r"max 1\.5"),
        (np.array([0.5, -0.01]), r"min -0\.01"),
        (np.array([0, 12]), "multi-class"),
    ],
)
def test_detect_label_kind_errors(array, match):
    with pytest.raises(InputError, match=match):
        detect_label_kind(array)


def test_label_to_soft_for_each_kind():
    np.testing.assert_array_equal(label_to_soft(np.array([0, 1], dtype=np.uint8)), [0.0, 1.0])
    soft = np.array([0.0, 0.3], dtype=np.float32)
    np.testing.assert_array_equal(label_to_soft(soft), soft)
    paper = ConfidenceScale.from_paper()
    np.testing.assert_array_equal(label_to_soft(np.array([0, 2, 3]), scale=paper), [0.0, 0.5, 1.0])
    with pytest.raises(InputError, match="give the scale it was painted with"):
        label_to_soft(np.array([0, 2, 3]))


@pytest.mark.parametrize(
    "soft",
    [
        # a uint8 map stored with scl_slope = 1/255 decodes 255 to 1.00000006 (float32)
        np.float32([0, 128, 255]) * np.float32(1 / 255),
        # a Gaussian-smoothed 0/1 map: 1 + 2e-16 and -1e-17 (float64)
        np.array([1.0 + 2e-16, -1e-17, 0.4]),
    ],
)
def test_values_within_rounding_of_the_unit_interval_are_soft_and_clipped(soft):
    assert detect_label_kind(soft) == "soft"
    values, kind = as_rater_values(soft, name="r.nii.gz")
    assert kind == "soft" and values.dtype == np.float32
    assert values.max() <= 1.0 and values.min() >= 0.0
    np.testing.assert_allclose(values, np.clip(soft, 0, 1), atol=1e-7)


def test_as_rater_values_kinds_dtypes_and_the_scale_deciding():
    default = ConfidenceScale.default()
    binary = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    values, kind = as_rater_values(binary)
    assert kind == "binary" and values is binary  # no copy
    values, kind = as_rater_values(binary.astype(np.float64))
    assert kind == "binary" and values.dtype == np.uint8
    # with a scale a 0/1 map is a level map painted with level 1 ("low" = 1/3)
    values, kind = as_rater_values(binary, scale=default)
    assert kind == "levels" and values.dtype == np.float32
    np.testing.assert_allclose(values, binary / 3.0, rtol=1e-6)
    # only the full-confidence level painted: values 0/1 -> binary uint8
    values, kind = as_rater_values(binary * 3, scale=default)
    assert kind == "binary" and values.dtype == np.uint8
    np.testing.assert_array_equal(values, binary)
    # soft maps ignore the scale (an exported soft map keeps its scale in the sidecar)
    soft = np.array([0.0, 0.25], np.float32)
    values, kind = as_rater_values(soft, scale=default)
    assert kind == "soft" and values.tolist() == [0.0, 0.25]


def test_as_rater_values_messages_name_the_map():
    with pytest.raises(InputError, match=r"^rater-2\.nii\.gz: holds confidence levels up to 3"):
        as_rater_values(np.array([0, 3]), name="rater-2.nii.gz")
    with pytest.raises(InputError, match=r"^layer 'a': level map holds values 0\.\.5"):
        as_rater_values(np.array([0, 5]), scale=ConfidenceScale.default(), name="layer 'a'")
    with pytest.raises(InputError, match=r"^r\.nii: values must lie in \[0, 1\].*max 1\.01"):
        as_rater_values(np.array([0.5, 1.01]), name="r.nii")


def test_scale_from_sidecar_reads_every_form_softseg_writes():
    from softseg.confidence import scale_from_sidecar

    values = [0.25, 0.5, 1.0]
    export = {"rater": "a", "softseg_confidence": {"values": values, "names": ["l", "m", "h"]}}
    autosave = {"rater": "a", "confidence_scale": {"values": values}}
    bare = {"values": values}
    for side in (export, autosave, bare):
        assert scale_from_sidecar(side).to_soft(np.array([0, 1, 2, 3])).tolist() == [0.0, *values]
    assert scale_from_sidecar(None) is None
    assert scale_from_sidecar({"rater": "a"}) is None
