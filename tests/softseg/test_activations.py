"""softseg.activations: normalized ReLU properties, multi-class form, registry."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softseg.activations import (
    ACTIVATIONS,
    get_activation,
    multiclass_normalized_relu,
    normalized_relu,
    sigmoid,
    softmax,
)
from softseg.errors import InputError


def _logits(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def test_known_values_hand_computed():
    x = torch.tensor([[[[-1.0, 0.0, 2.0, 4.0]]], [[[0.5, -3.0, 0.25, 1.0]]]])
    out = normalized_relu(x)
    expected = torch.tensor([[[[0.0, 0.0, 0.5, 1.0]]], [[[0.5, 0.0, 0.25, 1.0]]]])
    torch.testing.assert_close(out, expected)


def test_range_and_per_sample_max_is_one():
    x = _logits(5, 2, 9, 7)
    out = normalized_relu(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), torch.ones(5))


def test_zero_where_max_is_zero_no_nan_and_finite_gradient():
    x = torch.cat([-torch.rand(1, 1, 4, 4) - 0.1, torch.zeros(1, 1, 4, 4), _logits(1, 1, 4, 4)])
    x.requires_grad_(True)
    out = normalized_relu(x)
    assert torch.equal(out[:2], torch.zeros(2, 1, 4, 4))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[:2], torch.zeros(2, 1, 4, 4))


def test_tiny_maximum_stays_below_one_and_bounded():
    x = torch.full((1, 1, 2, 2), 1e-9, requires_grad=True)
    out = normalized_relu(x, eps=1e-6)
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 1e-3))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() <= 1e6


def test_independent_of_batch_neighbours():
    a = _logits(1, 1, 8, 8, seed=1)
    big_neighbour = 100.0 * _logits(1, 1, 8, 8, seed=2).abs()
    alone = normalized_relu(a)
    together = normalized_relu(torch.cat([a, big_neighbour]))[:1]
    torch.testing.assert_close(alone, together)
    # dim=0 reproduces ivadomed's batch-global maximum, which does depend on the neighbour
    global_max = normalized_relu(torch.cat([a, big_neighbour]), dim=0)[:1]
    assert not torch.allclose(global_max, alone)
    torch.testing.assert_close(
        global_max, torch.relu(a) / torch.relu(big_neighbour).max().clamp_min(torch.relu(a).max())
    )


def test_gradcheck_float64():
    x = _logits(2, 1, 3, 3, seed=3, dtype=torch.float64)
    # keep values away from the ReLU kink and from ties in the maximum
    x = torch.where(x.abs() < 0.1, x + 0.3, x).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: normalized_relu(t), (x,))
    assert torch.autograd.gradcheck(
        lambda t: multiclass_normalized_relu(t),
        (x.detach().repeat(1, 3, 1, 1).requires_grad_(True),),
    )


def test_multiclass_sums_to_one_hand_computed():
    # one sample, 3 classes (background first), 2 voxels
    x = torch.tensor([[[2.0, -1.0], [1.0, -2.0], [1.0, -0.5]]])  # (1, 3, 2)
    out = multiclass_normalized_relu(x)
    # voxel 0: relu = (2, 1, 1) -> (0.5, 0.25, 0.25); voxel 1: all <= 0 -> zeros
    torch.testing.assert_close(out, torch.tensor([[[0.5, 0.0], [0.25, 0.0], [0.25, 0.0]]]))


def test_multiclass_properties():
    x = _logits(3, 4, 6, 6)
    out = multiclass_normalized_relu(x)
    total = out.sum(dim=1)
    positive = (x > 0).any(dim=1)
    torch.testing.assert_close(total[positive], torch.ones(int(positive.sum())))
    assert torch.equal(total[~positive], torch.zeros(int((~positive).sum())))
    assert out.min() >= 0 and out.max() <= 1


def test_sigmoid_softmax_by_name():
    x = _logits(2, 3, 4, 4)
    torch.testing.assert_close(get_activation("sigmoid")(x), 1 / (1 + torch.exp(-x)))
    sm = get_activation("softmax")(x)
    torch.testing.assert_close(sm, torch.exp(x) / torch.exp(x).sum(dim=1, keepdim=True))
    assert get_activation("normalized_relu") is normalized_relu
    assert sigmoid is ACTIVATIONS["sigmoid"] and softmax is ACTIVATIONS["softmax"]
    assert {"sigmoid", "normalized_relu", "softmax"} <= set(ACTIVATIONS)


def test_errors_are_clear():
    with pytest.raises(InputError, match="unknown activation 'relu'.*normalized_relu.*sigmoid"):
        get_activation("relu")
    with pytest.raises(InputError, match="dim=4 is out of range"):
        normalized_relu(torch.zeros(1, 1, 2, 2), dim=4)
    with pytest.raises(InputError, match="floating-point"):
        normalized_relu(torch.zeros(1, 1, 2, 2, dtype=torch.int64))
    with pytest.raises(InputError, match="eps must be > 0"):
        normalized_relu(torch.zeros(1, 1, 2, 2), eps=0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 6),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_properties_hold_for_any_shape_and_scale(n, c, h, scale, seed):
    x = _logits(n, c, h, h + 1, seed=seed) * scale
    out = normalized_relu(x)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    peak = torch.relu(x).amax(dim=(1, 2, 3))
    positive = peak >= 1e-6
    torch.testing.assert_close(out.amax(dim=(1, 2, 3))[positive], torch.ones(int(positive.sum())))
    # each sample alone gives the same result as in the batch
    for k in range(n):
        torch.testing.assert_close(normalized_relu(x[k : k + 1]), out[k : k + 1])
    mc = multiclass_normalized_relu(x)
    assert torch.isfinite(mc).all() and mc.min() >= 0 and mc.sum(dim=1).max() <= 1 + 1e-5


# ------------------------------------------------------------------ normalisation options (issue 15)
from softseg.activations import NORMALIZATIONS, RunningMax, check_normalization, inference_window  # noqa: E402


def test_normalisation_options_hand_computed():
    # two samples; relu: [0, 0, 0.5, 2] and [0.25, 0, 0.125, 0.5]
    x = torch.tensor([[[[-1.0, 0.0, 0.5, 2.0]]], [[[0.25, -3.0, 0.125, 0.5]]]])
    cases = {
        ("sample_max", None): [[0, 0, 0.25, 1], [0.5, 0, 0.25, 1]],
        ("batch_max", None): [[0, 0, 0.25, 1], [0.125, 0, 0.0625, 0.25]],
        ("volume_max", None): [[0, 0, 0.25, 1], [0.5, 0, 0.25, 1]],  # per sample without divisor
        ("floor", 1.0): [[0, 0, 0.25, 1], [0.25, 0, 0.125, 0.5]],  # max(2, 1) = 2; max(0.5, 1) = 1
        ("fixed", 1.0): [[0, 0, 0.5, 1], [0.25, 0, 0.125, 0.5]],  # min(r / 1, 1)
        ("fixed", 0.5): [[0, 0, 1, 1], [0.5, 0, 0.25, 1]],
        ("running_max", 4.0): [[0, 0, 0.125, 0.5], [0.0625, 0, 0.03125, 0.125]],
    }
    assert {k for k, _ in cases} == set(NORMALIZATIONS)
    for (how, tau), expected in cases.items():
        out = normalized_relu(x, normalization=how, tau=tau)
        torch.testing.assert_close(out, torch.tensor(expected).reshape(2, 1, 1, 4), msg=how)
    # a divisor computed elsewhere (the volume's maximum at prediction)
    torch.testing.assert_close(normalized_relu(x[1:], normalization="volume_max", divisor=2.0),
                               torch.tensor([[[[0.125, 0, 0.0625, 0.25]]]]))


def test_multiclass_forms_hand_computed():
    # one voxel, three classes: relu = [1, 3, 0]
    x = torch.tensor([[[[1.0]], [[3.0]], [[-2.0]]]])
    # sample_max: [1/3, 1, 0] / (4/3) = [0.25, 0.75, 0]; fixed tau=2: min([0.5, 1.5, 0], 1) = [0.5, 1, 0] / 1.5
    torch.testing.assert_close(multiclass_normalized_relu(x)[0, :, 0, 0], torch.tensor([0.25, 0.75, 0.0]))
    torch.testing.assert_close(multiclass_normalized_relu(x, normalization="fixed", tau=2.0)[0, :, 0, 0],
                               torch.tensor([1 / 3, 2 / 3, 0.0]))
    # every class <= 0 -> 0 for every class, any option
    z = -torch.ones(1, 3, 2, 2)
    for how, tau in (("sample_max", None), ("fixed", 1.0), ("floor", 0.5)):
        assert torch.equal(multiclass_normalized_relu(z, normalization=how, tau=tau), torch.zeros(1, 3, 2, 2))


def test_crop_and_whole_slice_agree_only_without_a_window():
    """The same logits normalised inside a crop and in the whole slice (issue 15): the window-free
    options agree within 1e-5 where they overlap; a window maximum outside the crop changes it."""
    whole = _logits(1, 1, 48, 40, seed=7) * 0.6
    whole[0, 0, 2, 3] = 5.0  # the slice's largest logit lies outside the crop
    crop = (slice(None), slice(None), slice(12, 40), slice(10, 36))
    for how, tau in (("fixed", 1.0), ("running_max", 0.8)):
        a = normalized_relu(whole[crop], normalization=how, tau=tau)
        b = normalized_relu(whole, normalization=how, tau=tau)[crop]
        assert (a - b).abs().max() <= 1e-5, how
        classes = torch.cat([whole, -whole, 0.5 * whole], dim=1)  # (1, 3, H, W)
        a = multiclass_normalized_relu(classes[crop], normalization=how, tau=tau)
        b = multiclass_normalized_relu(classes, normalization=how, tau=tau)[crop]
        assert (a - b).abs().max() <= 1e-5, how
    for how, tau in (("sample_max", None), ("floor", 1.0)):
        a = normalized_relu(whole[crop], normalization=how, tau=tau)
        b = normalized_relu(whole, normalization=how, tau=tau)[crop]
        assert (a - b).abs().max() > 0.1, how
    assert [inference_window(k) for k in NORMALIZATIONS] == [
        "sample", "volume", "volume", "sample", "none", "none"]


def test_empty_slice_is_not_stretched_to_certainty():
    """A slice without the structure whose largest logit is tiny: the paper's per-slice maximum
    reads 1.0 there, the window-free default keeps it tiny."""
    x = torch.full((1, 1, 8, 8), -1.0)
    x[0, 0, 3, 4] = 0.02
    assert float(normalized_relu(x).max()) == 1.0
    assert float(normalized_relu(x, normalization="fixed", tau=1.0).max()) == pytest.approx(0.02)
    assert float(normalized_relu(x, normalization="floor", tau=1.0).max()) == pytest.approx(0.02)


def test_bad_normalisation_options():
    x = _logits(1, 1, 4, 4)
    with pytest.raises(InputError, match="unknown normalized ReLU normalisation 'max'; choose one of: sample_max"):
        normalized_relu(x, normalization="max")
    for how in ("floor", "fixed", "running_max"):
        for tau in (None, 0.0, -1.0, float("nan"), True):
            with pytest.raises(InputError, match=f"normalisation '{how}' divides by tau"):
                normalized_relu(x, normalization=how, tau=tau)
    assert check_normalization("fixed", 2) == "fixed"
    with pytest.raises(InputError, match="unknown normalized ReLU normalisation"):
        inference_window("nope")


def test_gradcheck_options_float64():
    x = _logits(2, 1, 3, 3, seed=4, dtype=torch.float64)
    x = torch.where(x.abs() < 0.1, x + 0.3, x)
    x = torch.where((x - 1.0).abs() < 0.1, x + 0.3, x).requires_grad_(True)  # away from the clamp kink
    for how, tau in (("floor", 0.5), ("fixed", 1.0), ("batch_max", None)):
        assert torch.autograd.gradcheck(lambda t: normalized_relu(t, normalization=how, tau=tau), (x,))


def test_running_max_hand_computed_and_state():
    rm = RunningMax(momentum=0.5)
    a = torch.tensor([[[[-1.0, 2.0]]]])
    b = torch.tensor([[[[4.0, 0.0]]]])
    assert rm.update(a) == 2.0 and rm.value == 2.0  # the first batch sets c
    assert rm.update(b) == 2.0 and rm.value == 3.0  # divides by c before the update
    assert rm.update(-b) == 3.0 and rm.value == 1.5
    state = rm.state_dict()
    other = RunningMax()
    other.load_state_dict(state)
    assert other.state_dict() == state
    floor = RunningMax(floor=0.01)
    assert floor.update(-torch.ones(1, 1, 2, 2)) == 0.01  # a network predicting nothing
    with pytest.raises(InputError, match="momentum must lie in"):
        RunningMax(momentum=0)


# ------------------------------------------- starting a K-class network (initial output bias)
def test_multiclass_gradient_vanishes_with_at_most_one_positive_class():
    """p_c = r_c / sum_k r_k (Lemay et al. 2022): d p_0 / d x_0 = r_1 / (r_0 + r_1)^2 with two
    positive classes (hand-computed 1/9 at r = (2, 1)); exactly 0 with one or none."""
    x = torch.tensor([[2.0, 1.0, -3.0], [2.0, -1.0, -3.0], [-2.0, -1.0, -3.0]]).reshape(3, 3, 1, 1)
    x.requires_grad_(True)
    multiclass_normalized_relu(x)[:, 0].sum().backward()
    grad = x.grad.reshape(3, 3)
    torch.testing.assert_close(grad[0], torch.tensor([1 / 9, -2 / 9, 0.0]))
    assert torch.equal(grad[1:], torch.zeros(2, 3))


def test_initial_output_bias_only_for_the_multiclass_normalized_relu():
    from softseg.activations import MULTICLASS_RELU_INITIAL_BIAS, initial_output_bias

    assert MULTICLASS_RELU_INITIAL_BIAS == 0.5
    assert {name: initial_output_bias(name) for name in ACTIVATIONS} == {
        "sigmoid": None, "normalized_relu": None, "multiclass_normalized_relu": 0.5, "softmax": None,
    }
    with pytest.raises(InputError, match="unknown activation 'tanh'"):
        initial_output_bias("tanh")


# ---------------------------------------------------------------- training through dead units
from softseg.normalization import check_negative_slope  # noqa: E402


@pytest.mark.parametrize("normalization,tau", [("sample_max", None), ("fixed", 1.0), ("floor", 0.5)])
def test_negative_slope_changes_the_gradient_not_the_values(normalization, tau):
    x = torch.tensor([[[[-2.0, -0.5, 0.25, 0.5]]]], dtype=torch.float64, requires_grad=True)
    plain = normalized_relu(x, normalization=normalization, tau=tau)
    leaky = normalized_relu(x, normalization=normalization, tau=tau, negative_slope=0.1)
    assert torch.equal(plain, leaky)  # the forward value is exactly relu's
    (g_plain,) = torch.autograd.grad(plain.sum(), x)
    (g_leaky,) = torch.autograd.grad(leaky.sum(), x)
    # above 0 the gradients agree; below 0 the plain ReLU gives none and the leaky one
    # d/dx of a * x / m (hand-computed): sample_max m = 0.5, fixed m = tau = 1, floor max(0.5, 0.5)
    m = {"sample_max": 0.5, "fixed": 1.0, "floor": 0.5}[normalization]
    assert torch.equal(g_plain[..., :2], torch.zeros(1, 1, 1, 2, dtype=torch.float64))
    assert torch.allclose(g_leaky[..., :2], torch.full((1, 1, 1, 2), 0.1 / m, dtype=torch.float64))
    assert torch.allclose(g_leaky[..., 2:], g_plain[..., 2:])


def test_negative_slope_reaches_a_dead_unit_in_a_training_step():
    # every logit < 0, target 1: the paper's ReLU gives no gradient, the leaky backward pulls it up
    x = torch.full((1, 1, 2, 2), -0.3, requires_grad=True)
    for slope, moves in ((0.0, False), (0.2, True)):
        p = normalized_relu(x, normalization="fixed", tau=1.0, negative_slope=slope)
        (g,) = torch.autograd.grad(((p - 1.0) ** 2).mean(), x)
        assert bool((g < 0).all()) is moves and bool((g == 0).all()) is not moves


def test_negative_slope_validated():
    assert check_negative_slope(0) == 0.0
    for bad in (-0.1, 1.0, float("nan"), True, "0.1"):
        with pytest.raises(InputError, match=r"negative_slope .* \[0, 1\)"):
            check_negative_slope(bad)
    with pytest.raises(InputError, match="negative_slope"):
        normalized_relu(torch.zeros(1, 1, 2, 2), negative_slope=2.0)


def test_multiclass_negative_slope_same_values():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    a = multiclass_normalized_relu(x)
    b = multiclass_normalized_relu(x, negative_slope=0.1)
    assert torch.equal(a, b)
