"""softseg.losses against hand-computed values, independent references and gradcheck."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from softseg.errors import InputError
from softseg.losses import (
    DISTANCE_MAP_LOSSES,
    LOSS_MODULES,
    LOSSES,
    AdaptiveWingLoss,
    BinaryCrossEntropyLoss,
    BoundaryLoss,
    CrossEntropyLoss,
    DiceLoss,
    GDLBoundaryLoss,
    GeneralizedDiceLoss,
    MSELoss,
    adaptive_wing_loss,
    binary_cross_entropy,
    boundary_loss,
    boundary_weight,
    cross_entropy,
    dice_loss,
    dice_semimetric_loss,
    gdl_boundary_loss,
    generalized_dice_loss,
    mse_loss,
    reduce_loss,
    signed_distance_map,
)

D = torch.float64


def t(values, shape=None):
    x = torch.tensor(values, dtype=D)
    return x.reshape(shape) if shape is not None else x.reshape(1, 1, -1)


def _pair(seed, shape=(2, 1, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(shape, generator=g, dtype=D) * 0.9 + 0.05
    target = torch.rand(shape, generator=g, dtype=D)
    target[0, :, :2] = 1.0  # some exact 0/1 alongside soft values
    target[-1, :, -2:] = 0.0
    return probs, target


# ------------------------------------------------------------------------------- Adaptive Wing
def _awing_scalar(y, p, alpha=2.1, omega=8.0, epsilon=1.0, theta=0.5):
    """Wang et al. 2019, eq. 6-7, written independently with the math module."""
    d = abs(y - p)
    if d < theta:
        return omega * math.log(1 + (d / epsilon) ** (alpha - y))
    a = (
        omega
        * (1 / (1 + (theta / epsilon) ** (alpha - y)))
        * (alpha - y)
        * ((theta / epsilon) ** (alpha - y - 1))
        * (1 / epsilon)
    )
    c = theta * a - omega * math.log(1 + (theta / epsilon) ** (alpha - y))
    return a * d - c


# (target, prediction, value worked out by hand from the formula):
#  y=0,   p=0.3 : d=0.3<0.5  -> 8 ln(1 + 0.3^2.1) = 8 ln(1.07980) = 0.61414
#  y=1,   p=0.2 : d=0.8>=0.5 -> A = 8/(1+0.5^1.1) * 1.1 * 0.5^0.1 = 5.59878,
#                  C = 0.5 A - 8 ln(1 + 0.5^1.1) = -0.26368, A*0.8 - C = 4.74275
#  y=0.5, p=0.9 : d=0.4      -> 8 ln(1 + 0.4^1.6) = 1.66152
#  y=0.5, p=0.5 : d=0        -> 0
#  y=0,   p=1   : d=1        -> linear piece with power 2.1 = 4.85483
AWING_CASES = [
    (0.0, 0.3, 0.6141410205809967),
    (1.0, 0.2, 4.742750223080814),
    (0.5, 0.9, 1.6615228099708013),
    (0.5, 0.5, 0.0),
    (0.0, 1.0, 4.85482623456434),
    (1.0, 0.0, 5.862504463720541),
    (0.25, 0.85, 2.601345629153137),
]


@pytest.mark.parametrize(("y", "p", "expected"), AWING_CASES)
def test_adaptive_wing_known_values(y, p, expected):
    assert _awing_scalar(y, p) == pytest.approx(expected, rel=1e-12)
    got = adaptive_wing_loss(t([p]), t([y]), reduction="sum").item()
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_adaptive_wing_other_parameters_and_reductions():
    ys, ps = [0.0, 0.3, 1.0, 0.8], [0.9, 0.1, 0.6, 0.8]
    params = dict(alpha=2.5, omega=14.0, epsilon=0.5, theta=0.3)
    expected = [_awing_scalar(y, p, **params) for y, p in zip(ys, ps, strict=True)]
    none = adaptive_wing_loss(t(ps), t(ys), reduction="none", **params)
    assert none.shape == (1, 1, 4)
    np.testing.assert_allclose(none.flatten().numpy(), expected, rtol=1e-10)
    assert adaptive_wing_loss(t(ps), t(ys), **params).item() == pytest.approx(np.mean(expected))


def test_adaptive_wing_is_continuous_and_smooth_at_theta():
    y = torch.tensor([0.0, 0.4, 1.0], dtype=D)
    h = 1e-7
    for sign in (1.0, -1.0):
        below = adaptive_wing_loss(
            (y + sign * (0.5 - h)).reshape(1, 1, -1), y.reshape(1, 1, -1), reduction="none"
        )
        above = adaptive_wing_loss(
            (y + sign * (0.5 + h)).reshape(1, 1, -1), y.reshape(1, 1, -1), reduction="none"
        )
        torch.testing.assert_close(below, above, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------- Dice
def test_dice_hand_computed():
    probs, target = t([1.0, 0.5, 0.0, 0.0]), t([1.0, 1.0, 0.0, 0.0])
    # intersection 1.5, sums 1.5 + 2 = 3.5
    assert dice_loss(probs, target, smooth=0).item() == pytest.approx(1 - 3 / 3.5)
    assert dice_loss(probs, target, smooth=1).item() == pytest.approx(1 - 4 / 4.5)
    # soft target: intersection 0.5*0.2 + 0.5*0.8 = 0.5, sums 1 + 1
    assert dice_loss(t([0.5, 0.5]), t([0.2, 0.8]), smooth=0).item() == pytest.approx(0.5)
    # empty target, empty prediction: perfect with smoothing
    assert dice_loss(t([0.0, 0.0]), t([0.0, 0.0])).item() == 0.0


def test_dice_per_batch_versus_per_sample():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]], dtype=D)
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=D)
    # per batch: intersection 1, sums 1 + 2 -> Dice 2/3
    assert dice_loss(probs, target, smooth=0).item() == pytest.approx(1 / 3)
    per_sample = dice_loss(probs, target, smooth=0, per_sample=True, reduction="none")
    assert per_sample.shape == (2, 1)
    torch.testing.assert_close(per_sample, torch.tensor([[0.0], [1.0]], dtype=D))
    assert dice_loss(probs, target, smooth=0, reduction="none").shape == (1,)


# --------------------------------------------------------------------------- generalized Dice
def test_generalized_dice_hand_computed_two_class():
    probs, target = t([0.8, 0.1, 0.0, 0.0]), t([1.0, 0.0, 0.0, 0.0])
    # background added: g_bg = (0,1,1,1), p_bg = (0.2,0.9,1,1); w_fg = 1/1^2, w_bg = 1/3^2
    inter = 1 * 0.8 + (0.9 + 1 + 1) / 9
    union = 1 * (0.9 + 1) + (3.1 + 3) / 9
    expected = 1 - 2 * inter / union  # 0.129310...
    got = generalized_dice_loss(probs, target, eps=1e-12)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.12931, abs=1e-5)


def test_generalized_dice_empty_class_guard():
    # channels (background, foreground); the foreground is absent from the target
    probs = torch.tensor([[[0.5, 1.0], [0.5, 0.0]]], dtype=D)
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], dtype=D)
    # w_bg = 1/4; empty foreground takes the largest present weight, 1/4
    # inter = 0.25 * 1.5, union = 0.25 * 3.5 + 0.25 * 0.5 = 1 -> GDL = 1 - 0.75
    got = generalized_dice_loss(probs, target, add_background=False, eps=1e-12)
    assert got.item() == pytest.approx(0.25, rel=1e-9)
    assert torch.isfinite(got)
    # everything empty and predicted empty -> 0, no NaN
    zero = torch.zeros(1, 1, 4, dtype=D)
    assert generalized_dice_loss(zero, zero, add_background=False).item() == 0.0


def test_generalized_dice_single_class_is_dice():
    probs, target = _pair(4)
    gdl = generalized_dice_loss(probs, target, add_background=False, eps=1e-12, reduction="none")
    dice = dice_loss(probs, target, smooth=0, per_sample=True, reduction="none")[:, 0]
    torch.testing.assert_close(gdl, dice)


# ------------------------------------------------------------------------- BCE, MSE, boundary
def test_bce_hand_computed_and_matches_torch_inside():
    assert binary_cross_entropy(t([0.25]), t([1.0])).item() == pytest.approx(math.log(4))
    # soft target 0.4: -(0.4 ln 0.25 + 0.6 ln 0.75)
    expected = -(0.4 * math.log(0.25) + 0.6 * math.log(0.75))
    assert binary_cross_entropy(t([0.25]), t([0.4])).item() == pytest.approx(expected)
    probs, target = _pair(5)
    torch.testing.assert_close(
        binary_cross_entropy(probs, target), F.binary_cross_entropy(probs, target)
    )


def test_bce_finite_on_exact_zero_and_one():
    for dtype in (torch.float32, D):
        probs = (
            torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype).reshape(1, 1, 4).requires_grad_(True)
        )
        target = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype).reshape(1, 1, 4)
        loss = binary_cross_entropy(probs, target, reduction="none")
        assert torch.isfinite(loss).all()
        assert loss[0, 0, :2].max().item() < 1e-6  # right answers cost ~0
        assert loss[0, 0, 2:].min().item() == pytest.approx(
            -math.log(1e-7), rel=0.02
        )  # capped at -ln(eps)
        loss.sum().backward()
        assert torch.isfinite(probs.grad).all()


def test_mse_and_boundary_hand_computed():
    assert mse_loss(t([0.5, 1.0]), t([0.0, 0.75])).item() == pytest.approx((0.25 + 0.0625) / 2)
    probs, target = _pair(6)
    torch.testing.assert_close(mse_loss(probs, target), F.mse_loss(probs, target))
    phi = t([-2.0, 3.0])
    assert boundary_loss(t([0.5, 1.0]), t([1.0, 0.0]), distance_map=phi).item() == pytest.approx(
        1.0
    )
    assert boundary_loss(
        t([0.5, 1.0]), t([1.0, 0.0]), distance_map=phi, reduction="sum"
    ).item() == pytest.approx(2.0)


def test_gdl_boundary_combination_and_schedule():
    probs, target = _pair(7)
    phi = torch.from_numpy(signed_distance_map(target.numpy(), ndim=2)).to(D)
    for alpha in (1.0, 0.7, 0.01):
        combined = gdl_boundary_loss(probs, target, distance_map=phi, alpha=alpha)
        expected = alpha * generalized_dice_loss(probs, target) + (1 - alpha) * boundary_loss(
            probs, target, distance_map=phi
        )
        torch.testing.assert_close(combined, expected)
    assert gdl_boundary_loss(probs, target, distance_map=phi, reduction="none").shape == (2,)
    # Kervadec: alpha starts at 1, decreases by 0.01 per epoch, floor 0.01
    assert [boundary_weight(e) for e in (0, 1, 2, 50, 98, 99, 100, 1000)] == [
        1.0,
        0.99,
        0.98,
        0.5,
        0.02,
        0.01,
        0.01,
        0.01,
    ]
    assert boundary_weight(3, start=0.5, step=0.1, floor=0.2) == pytest.approx(0.2)


# ---------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_float64(name):
    probs, target = _pair(8, shape=(2, 1, 3, 4))
    probs.requires_grad_(True)
    kwargs = {}
    if name in DISTANCE_MAP_LOSSES:
        kwargs["distance_map"] = torch.from_numpy(
            signed_distance_map((target >= 0.5).numpy(), ndim=2)
        ).to(D)
    if name == "gdl_boundary":
        kwargs["alpha"] = 0.4
    fn = LOSSES[name]
    assert torch.autograd.gradcheck(lambda p: fn(p, target, **kwargs), (probs,))
    assert torch.autograd.gradcheck(lambda p: fn(p, target, reduction="none", **kwargs), (probs,))


# ----------------------------------------------------------------------- modules == functions
@pytest.mark.parametrize(
    ("module", "function", "options"),
    [
        (AdaptiveWingLoss, adaptive_wing_loss, {"theta": 0.4}),
        (DiceLoss, dice_loss, {"smooth": 0.5, "per_sample": True}),
        (GeneralizedDiceLoss, generalized_dice_loss, {"add_background": False}),
        (BinaryCrossEntropyLoss, binary_cross_entropy, {"eps": 1e-5}),
        (MSELoss, mse_loss, {}),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_module_equals_function(module, function, options, reduction):
    probs, target = _pair(9)
    torch.testing.assert_close(
        module(reduction=reduction, **options)(probs, target),
        function(probs, target, reduction=reduction, **options),
    )


def test_distance_map_modules_equal_functions():
    probs, target = _pair(10)
    phi = torch.from_numpy(signed_distance_map(target.numpy(), ndim=2)).to(D)
    torch.testing.assert_close(
        BoundaryLoss()(probs, target, phi), boundary_loss(probs, target, distance_map=phi)
    )
    for epoch in (0, 30, 200):
        torch.testing.assert_close(
            GDLBoundaryLoss()(probs, target, phi, epoch=epoch),
            gdl_boundary_loss(probs, target, distance_map=phi, alpha=boundary_weight(epoch)),
        )
    assert set(LOSS_MODULES) == set(LOSSES)


def test_half_precision_inputs_are_computed_in_float32():
    probs, target = _pair(11)
    loss = adaptive_wing_loss(probs.to(torch.bfloat16), target.to(torch.bfloat16))
    assert loss.dtype == torch.float32


# ------------------------------------------------------------------------- signed distance map
def test_signed_distance_map_hand_computed_1d():
    mask = np.array([0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(signed_distance_map(mask), [2, 1, 0, -1, 0, 1])
    np.testing.assert_allclose(signed_distance_map(mask, spacing=0.5), [1, 0.5, 0, -0.5, 0, 0.5])
    assert signed_distance_map(mask).dtype == np.float32


def _sitk_reference(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing([float(s) for s in spacing[::-1]])  # SimpleITK orders axes x, y, z
    result = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return sitk.GetArrayFromImage(result)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3)])
def test_signed_distance_map_matches_simpleitk_2d(spacing):
    yy, xx = np.mgrid[:40, :50]
    mask = ((yy - 20) ** 2 / 100 + (xx - 22) ** 2 / 200 < 1) | ((yy - 8) ** 2 + (xx - 40) ** 2 < 9)
    mask[:5, :6] = True  # touches the image border, which is not a boundary
    got = signed_distance_map(mask, spacing=spacing)
    np.testing.assert_allclose(got, _sitk_reference(mask, spacing), atol=1e-4)
    assert (got[mask] <= 0).all() and (got[~mask] > 0).all()
    # outside the mask: exactly Kervadec's reference code, distance to the nearest foreground voxel
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    np.testing.assert_allclose(got[~mask], outside[~mask], rtol=1e-6)


def test_signed_distance_map_matches_simpleitk_3d_anisotropic():
    mask = np.random.default_rng(0).random((10, 12, 9)) > 0.7
    spacing = (0.5, 1.0, 1.5)
    np.testing.assert_allclose(
        signed_distance_map(mask, spacing=spacing), _sitk_reference(mask, spacing), atol=1e-4
    )


def test_signed_distance_map_empty_full_soft_and_per_slice():
    assert not signed_distance_map(np.zeros((6, 7))).any()
    assert not signed_distance_map(np.ones((6, 7))).any()
    soft = np.zeros((2, 8, 8), dtype=np.float32)
    soft[0, 2:6, 3:7] = 0.6
    soft[0, 2:6, 2] = 0.4  # below 0.5: outside
    hard = soft >= 0.5
    per_slice = signed_distance_map(soft, ndim=2)
    np.testing.assert_array_equal(per_slice, signed_distance_map(hard, ndim=2))
    np.testing.assert_array_equal(per_slice[0], signed_distance_map(hard[0]))
    assert not per_slice[1].any()  # background-only slice: zero map (Kervadec)


# ------------------------------------------------------------------------------------ errors
def test_errors_are_clear():
    a = torch.zeros(1, 1, 4)
    with pytest.raises(InputError, match=r"same shape.*\(1, 1, 4\) and \(1, 1, 5\)"):
        dice_loss(a, torch.zeros(1, 1, 5))
    with pytest.raises(InputError, match="unknown reduction 'avg'; choose one of: mean, sum, none"):
        mse_loss(a, a, reduction="avg")
    with pytest.raises(InputError, match="unknown reduction"):
        reduce_loss(a, "max")
    with pytest.raises(InputError, match="unknown reduction"):
        DiceLoss(reduction="avg")
    with pytest.raises(InputError, match="needs a signed distance map"):
        boundary_loss(a, a, distance_map=None)
    with pytest.raises(InputError, match="distance_map must have the shape"):
        gdl_boundary_loss(a, a, distance_map=torch.zeros(1, 1, 3))
    with pytest.raises(InputError, match="alpha must be in"):
        gdl_boundary_loss(a, a, distance_map=a, alpha=1.5)
    with pytest.raises(InputError, match="epoch must be an integer >= 0"):
        boundary_weight(-1)
    with pytest.raises(InputError, match="eps must be in"):
        binary_cross_entropy(a, a, eps=0)
    with pytest.raises(InputError, match="must be > 0"):
        adaptive_wing_loss(a, a, theta=0)
    with pytest.raises(InputError, match="NaN"):
        signed_distance_map(np.array([np.nan, 1.0]))
    with pytest.raises(InputError, match="spacing must be positive"):
        signed_distance_map(np.zeros((3, 3)), spacing=(1.0, 0.0))
    with pytest.raises(InputError, match="ndim must be in 1..2"):
        signed_distance_map(np.zeros((3, 3)), ndim=3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_regression_losses_are_minimal_at_the_soft_target(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 1, 4, 5, generator=g, dtype=D)
    other = torch.rand(2, 1, 4, 5, generator=g, dtype=D)
    for fn in (adaptive_wing_loss, mse_loss, binary_cross_entropy):
        assert fn(target, target).item() <= fn(other, target).item() + 1e-12
    assert adaptive_wing_loss(target, target).item() == 0.0


def test_soft_dice_volumetric_bias_bertels():
    """Bertels et al. 2019: with a soft target, soft Dice prefers an over-confident prediction.

    Target 0.5 everywhere: Dice(p = g) = 2 sum g^2 / 2 sum g = 0.5, Dice(p = 1) = 2 sum g /
    (n + sum g) = 2/3, so Dice rewards predicting 1 (volume doubled); cross-entropy does not.
    """
    target = torch.full((1, 1, 10), 0.5, dtype=D)
    ones = torch.ones_like(target)
    assert dice_loss(target, target, smooth=0).item() == pytest.approx(0.5)
    assert dice_loss(ones, target, smooth=0).item() == pytest.approx(1 / 3)
    assert binary_cross_entropy(target, target).item() < binary_cross_entropy(ones, target).item()


@pytest.mark.parametrize("spacing", [None, (0.7, 1.3)])
def test_signed_distance_map_2d_torch_equals_the_scipy_map(spacing):
    """The device implementation (Saito-Toriwaki separable EDT in torch) gives the scipy/SimpleITK
    map: blobs, an empty image, a full image, a mask touching the border, soft values at 0.5."""
    from scipy import ndimage

    from softseg.losses import signed_distance_map_2d

    rng = np.random.default_rng(3)
    m = ndimage.gaussian_filter(rng.random((5, 2, 40, 33)), (0, 0, 3, 3))
    m = (m > np.median(m)).astype(np.float32)
    m[0, 0] = 0.0
    m[0, 1] = 1.0
    m[1, 0, :, :5] = 1.0
    m[2, 1] = np.where(m[2, 1] > 0, 0.5, 0.49)  # soft values: >= 0.5 is inside
    ref = signed_distance_map(m, spacing=spacing, ndim=2)
    got = signed_distance_map_2d(torch.from_numpy(m), spacing=spacing, method="torch")
    assert got.dtype == torch.float32 and got.shape == m.shape
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-5)
    assert np.all(got.numpy()[0] == 0)  # empty and full images: 0 everywhere
    auto = signed_distance_map_2d(torch.from_numpy(m), spacing=spacing)  # CPU: the scipy path
    np.testing.assert_array_equal(auto.numpy(), ref)
    with pytest.raises(InputError, match="method must be"):
        signed_distance_map_2d(torch.from_numpy(m), method="fast")
    with pytest.raises(InputError, match="NaN or Inf"):
        signed_distance_map_2d(torch.full((1, 4, 4), float("nan")), method="torch")


# ------------------------------------------------------------------------------ K classes
# Probabilities of a K-class model have K+1 channels, background first (issue 14).
def _softmax_by_hand(logits):
    """Softmax of a list of logits with the math module (independent of torch)."""
    e = [math.exp(v) for v in logits]
    return [v / sum(e) for v in e]


def test_cross_entropy_hand_computed_soft_and_one_hot():
    # two voxels, three channels (background, class 1, class 2)
    p = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]
    g = [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]
    probs = torch.tensor(p, dtype=D).T.reshape(1, 3, 1, 2)
    target = torch.tensor(g, dtype=D).T.reshape(1, 3, 1, 2)
    v0 = -math.log(0.7)
    v1 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.5))
    torch.testing.assert_close(cross_entropy(probs, target, reduction="none"), t([v0, v1], (1, 1, 2)))
    assert float(cross_entropy(probs, target)) == pytest.approx((v0 + v1) / 2, abs=1e-15)
    assert float(cross_entropy(probs, target, reduction="sum")) == pytest.approx(v0 + v1, abs=1e-15)
    # an exact 0 where the target has mass costs -ln(eps), finite
    zero = torch.tensor([1.0, 0.0], dtype=D).reshape(1, 2, 1, 1)
    hit = torch.tensor([0.0, 1.0], dtype=D).reshape(1, 2, 1, 1)
    assert float(cross_entropy(zero, hit, eps=1e-7)) == pytest.approx(-math.log(1e-7))


def test_cross_entropy_of_two_channels_is_binary_cross_entropy():
    probs, target = _pair(21)
    two_p = torch.cat([1 - probs, probs], dim=1)
    two_g = torch.cat([1 - target, target], dim=1)
    torch.testing.assert_close(cross_entropy(two_p, two_g, reduction="none"),
                               binary_cross_entropy(probs, target, reduction="none")[:, 0])
    # == torch's cross-entropy with probability targets on the log of the probabilities
    logits = torch.randn(2, 4, 3, 5, dtype=D, generator=torch.Generator().manual_seed(2))
    soft = torch.softmax(torch.randn(2, 4, 3, 5, dtype=D, generator=torch.Generator().manual_seed(3)), 1)
    torch.testing.assert_close(cross_entropy(torch.softmax(logits, 1), soft), F.cross_entropy(logits, soft))


def test_multiclass_softmax_dice_hand_computed():
    # 3 voxels, logits of (background, class 1, class 2) -> softmax by hand -> Dice of each class
    logits = [[2.0, 0.5, -1.0], [0.0, 1.5, 0.2], [-0.5, 0.1, 2.2]]
    labels = [0, 1, 2]
    probs = [_softmax_by_hand(v) for v in logits]
    expected = []
    for c in (1, 2):
        inter = sum(p[c] * (lab == c) for p, lab in zip(probs, labels))
        total = sum(p[c] for p in probs) + sum(lab == c for lab in labels)
        expected.append(1 - (2 * inter + 1.0) / (total + 1.0))
    x = torch.tensor(logits, dtype=D).T.reshape(1, 3, 1, 3)
    g = torch.tensor([[float(lab == c) for lab in labels] for c in range(3)], dtype=D).reshape(1, 3, 1, 3)
    p = torch.softmax(x, dim=1)
    torch.testing.assert_close(dice_loss(p, g, include_background=False, reduction="none"), t(expected, (2,)))
    assert float(dice_loss(p, g, include_background=False)) == pytest.approx(sum(expected) / 2, abs=1e-14)
    # include_background=True (default) scores channel 0 too, as before
    assert dice_loss(p, g).shape == ()
    assert dice_loss(p, g, reduction="none").shape == (3,)


def test_adaptive_wing_per_class_is_the_element_wise_mean_over_every_channel():
    p = [[0.6, 0.3, 0.1], [0.0, 0.9, 0.1]]
    g = [[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]]
    by_hand = [_awing_scalar(y, q) for pv, gv in zip(p, g) for q, y in zip(pv, gv)]
    probs = torch.tensor(p, dtype=D).T.reshape(1, 3, 1, 2)
    target = torch.tensor(g, dtype=D).T.reshape(1, 3, 1, 2)
    assert float(adaptive_wing_loss(probs, target)) == pytest.approx(sum(by_hand) / 6, abs=1e-12)


def test_boundary_losses_per_foreground_class():
    probs, target = _pair(22, shape=(2, 3, 5, 6))
    phi = torch.from_numpy(signed_distance_map((target >= 0.5).numpy(), ndim=2)).to(D)
    fg = (probs[:, 1:] * phi[:, 1:]).mean()
    torch.testing.assert_close(boundary_loss(probs, target, distance_map=phi, include_background=False), fg)
    gdl = generalized_dice_loss(probs, target, add_background=False, reduction="none")
    per_sample = (probs[:, 1:] * phi[:, 1:]).flatten(1).mean(1)
    torch.testing.assert_close(
        gdl_boundary_loss(probs, target, distance_map=phi, alpha=0.3, add_background=False,
                          include_background=False, reduction="none"),
        0.3 * gdl + 0.7 * per_sample)
    with pytest.raises(InputError, match="include_background=False needs a background channel"):
        dice_loss(probs[:, :1], target[:, :1], include_background=False)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("cross_entropy", {}),
        ("dice", {"include_background": False}),
        ("adaptive_wing", {}),
        ("generalized_dice", {"add_background": False}),
        ("boundary", {"include_background": False}),
        ("gdl_boundary", {"add_background": False, "include_background": False, "alpha": 0.4}),
    ],
)
def test_gradcheck_float64_through_softmax(name, options):
    """Softmax over K+1 = 3 channels composed with each K-class loss, gradient checked."""
    g = torch.Generator().manual_seed(23)
    logits = torch.randn(2, 3, 3, 4, dtype=D, generator=g, requires_grad=True)
    target = torch.softmax(torch.randn(2, 3, 3, 4, dtype=D, generator=g) * 2, dim=1)
    kwargs = dict(options)
    if name in DISTANCE_MAP_LOSSES:
        kwargs["distance_map"] = torch.from_numpy(signed_distance_map((target >= 0.5).numpy(), ndim=2)).to(D)
    fn = LOSSES[name]
    assert torch.autograd.gradcheck(lambda x: fn(torch.softmax(x, 1), target, **kwargs), (logits,))
    assert torch.autograd.gradcheck(lambda x: fn(torch.softmax(x, 1), target, reduction="none", **kwargs),
                                    (logits,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multiclass_modules_equal_functions(reduction):
    probs, target = _pair(24, shape=(2, 3, 4, 5))
    phi = torch.from_numpy(signed_distance_map(target.numpy(), ndim=2)).to(D)
    torch.testing.assert_close(CrossEntropyLoss(eps=1e-5, reduction=reduction)(probs, target),
                               cross_entropy(probs, target, eps=1e-5, reduction=reduction))
    torch.testing.assert_close(DiceLoss(include_background=False, reduction=reduction)(probs, target),
                               dice_loss(probs, target, include_background=False, reduction=reduction))
    torch.testing.assert_close(BoundaryLoss(include_background=False, reduction=reduction)(probs, target, phi),
                               boundary_loss(probs, target, distance_map=phi, include_background=False,
                                             reduction=reduction))
    torch.testing.assert_close(
        GDLBoundaryLoss(add_background=False, include_background=False, reduction=reduction)(
            probs, target, phi, epoch=40),
        gdl_boundary_loss(probs, target, distance_map=phi, alpha=boundary_weight(40), add_background=False,
                          include_background=False, reduction=reduction))
    with pytest.raises(InputError, match="cross_entropy: eps must be in"):
        cross_entropy(probs, target, eps=0.0)


# ------------------------------------------------ Adaptive Wing's weighted loss map (issue 15)
from softseg.losses import wing_weight_map  # noqa: E402


def test_wing_weight_map_hand_computed():
    target = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    target[0, 0, 2, 2] = 0.6   # >= 0.2: in M, dilated to the 3x3 around it
    target[0, 0, 0, 4] = 0.1   # < 0.2: not in M (Wang et al. binarise the heatmap at 0.2)
    w = wing_weight_map(target, 10.0)
    expected = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    expected[0, 0, 1:4, 1:4] = 11.0
    assert torch.equal(w, expected)


def test_weighted_adaptive_wing_is_the_weighted_mean_of_the_per_voxel_loss():
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64) > 0.9).double()
    probs = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    per_voxel = adaptive_wing_loss(probs, target, reduction="none")
    w = wing_weight_map(target, 10.0)
    got = adaptive_wing_loss(probs, target, weight_map=10.0)
    assert torch.allclose(got, (per_voxel * w).sum() / w.sum())
    assert torch.allclose(adaptive_wing_loss(probs, target, weight_map=10.0, reduction="sum"), (per_voxel * w).sum())
    assert torch.equal(adaptive_wing_loss(probs, target, weight_map=0.0), adaptive_wing_loss(probs, target))
    # the structure's share of the gradient grows with the weight
    p = probs.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(adaptive_wing_loss(p, target), p)
    (g10,) = torch.autograd.grad(adaptive_wing_loss(p, target, weight_map=10.0), p)
    fg = target.bool()
    share = lambda grad: float(grad[fg].abs().sum() / grad.abs().sum())  # noqa: E731
    assert share(g10) > share(g0)
    assert torch.autograd.gradcheck(lambda q: adaptive_wing_loss(q, target, weight_map=10.0), (p,))


def test_weighted_adaptive_wing_bad_input():
    t4 = torch.zeros(1, 1, 3, 3)
    with pytest.raises(InputError, match="weight_map must be a finite number >= 0"):
        adaptive_wing_loss(t4, t4, weight_map=-1.0)
    with pytest.raises(InputError, match=r"needs \(N, C, H, W\)"):
        adaptive_wing_loss(torch.zeros(4), torch.zeros(4), weight_map=10.0)


def test_balanced_adaptive_wing_hand_computed():
    # soft memberships: the structure's mean and the background's mean, averaged
    g = torch.Generator().manual_seed(2)
    target = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    target[0, 0, 1, 1], target[0, 0, 1, 2] = 1.0, 0.5
    probs = torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64)
    per = adaptive_wing_loss(probs, target, reduction="none")
    y = target
    expected = 0.5 * (per * y).sum() / 1.5 + 0.5 * (per * (1 - y)).sum() / 14.5
    assert torch.allclose(adaptive_wing_loss(probs, target, balance=0.5), expected)
    # no structure in the batch: the background mean
    empty = torch.zeros_like(target)
    assert torch.allclose(adaptive_wing_loss(probs, empty, balance=0.5),
                          adaptive_wing_loss(probs, empty))
    # the structure gets half of the loss whatever its size: its gradient share is about 1/2
    p = probs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(adaptive_wing_loss(p, target, balance=0.5), p)
    assert torch.isfinite(grad).all()
    assert torch.autograd.gradcheck(lambda q: adaptive_wing_loss(q, target, balance=0.5), (p,))
    with pytest.raises(InputError, match="balance is a mean"):
        adaptive_wing_loss(probs, target, balance=0.5, reduction="sum")
    with pytest.raises(InputError, match="excludes weight_map"):
        adaptive_wing_loss(probs, target, balance=0.5, weight_map=10.0)
    for bad in (0.0, 0.6, True, "0.5"):
        with pytest.raises(InputError, match=r"balance must be a number in \(0, 0.5\]"):
            adaptive_wing_loss(probs, target, balance=bad)
    # another share: q * structure mean + (1 - q) * background mean
    q = 0.1
    expected_q = q * (per * y).sum() / 1.5 + (1 - q) * (per * (1 - y)).sum() / 14.5
    assert torch.allclose(adaptive_wing_loss(probs, target, balance=q), expected_q)
    # a structure whose own share (1.5 / 16 = 0.094) is above q keeps the plain mean
    assert torch.allclose(adaptive_wing_loss(probs, target, balance=0.05),
                          adaptive_wing_loss(probs, target))
    # where the structure is the majority, the background is the rare side: q for it
    flipped = 1.0 - target
    per_f = adaptive_wing_loss(probs, flipped, reduction="none")
    expected_f = 0.3 * (per_f * y).sum() / 1.5 + 0.7 * (per_f * (1 - y)).sum() / 14.5
    assert torch.allclose(adaptive_wing_loss(probs, flipped, balance=0.3), expected_f)


def test_balanced_adaptive_wing_is_per_channel():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64).round()
    target[:, 2] = 0.0  # a class absent from the batch: its background mean
    probs = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    per_channel = [adaptive_wing_loss(probs[:, c:c + 1], target[:, c:c + 1], balance=0.5) for c in range(3)]
    assert torch.allclose(adaptive_wing_loss(probs, target, balance=0.5), torch.stack(per_channel).mean())


def test_adaptive_wing_with_dice_semimetric_hand_computed():
    """AWing mean + lambda * DML (issue 15): the per-voxel Adaptive Wing of eq. 6-7 written with
    the math module, and DML1 = sum|p - g| / (sum p + sum g + 1) (Wang & Blaschko 2023)."""
    y = [[1.0, 0.5], [0.0, 0.25]]
    p = [[0.75, 0.5], [0.125, 0.0]]
    target = torch.tensor(y, dtype=torch.float64).reshape(1, 1, 2, 2)
    probs = torch.tensor(p, dtype=torch.float64).reshape(1, 1, 2, 2)
    wing = sum(_awing_scalar(a, b) for ra, rb in zip(y, p) for a, b in zip(ra, rb)) / 4
    dml = (0.25 + 0 + 0.125 + 0.25) / (1.375 + 1.75 + 1.0)
    for lam in (0.5, 1.0, 3.0):
        got = adaptive_wing_loss(probs, target, dice_semimetric_weight=lam)
        assert float(got) == pytest.approx(wing + lam * dml, rel=1e-12)
    assert float(AdaptiveWingLoss(dice_semimetric_weight=2.0)(probs, target)) == pytest.approx(wing + 2 * dml)
    # 0 (the default) is Adaptive Wing alone
    assert float(adaptive_wing_loss(probs, target, dice_semimetric_weight=0.0)) == pytest.approx(wing)


def test_adaptive_wing_with_dice_semimetric_is_minimal_at_the_soft_target():
    probs, target = _pair(11, (2, 1, 6, 6))
    at_target = adaptive_wing_loss(target, target, dice_semimetric_weight=1.0)
    assert float(at_target) == 0.0
    g = torch.Generator().manual_seed(5)
    for _ in range(5):  # any move away from the soft target costs
        moved = (target + 0.05 * torch.randn(target.shape, generator=g, dtype=target.dtype)).clamp(0, 1)
        assert float(adaptive_wing_loss(moved, target, dice_semimetric_weight=1.0)) > 0.0
    q = probs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: adaptive_wing_loss(x, target, dice_semimetric_weight=0.5), (q,))
    # with balance: the balanced mean plus the DML term
    both = adaptive_wing_loss(probs, target, balance=0.3, dice_semimetric_weight=0.5)
    expected = adaptive_wing_loss(probs, target, balance=0.3) + 0.5 * dice_semimetric_loss(probs, target)
    assert torch.allclose(both, expected)


def test_adaptive_wing_dice_semimetric_term_without_background_by_hand():
    """K classes (softseg.candidates: the compound's DML term scores the foreground classes):
    channel 0 is left out of the DML term only; each channel's DML1 by hand, averaged."""
    probs = torch.tensor([[[[0.5, 0.25]], [[0.5, 0.75]], [[0.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[0.25, 0.5]], [[0.75, 0.5]], [[0.0, 0.0]]]], dtype=torch.float64)
    wing = adaptive_wing_loss(probs, target)
    fg1 = (0.25 + 0.25) / (1.25 + 1.25 + 1.0)
    fg2 = 0.0 / (0 + 0 + 1.0)
    bg = (0.25 + 0.25) / (0.75 + 0.75 + 1.0)
    got = adaptive_wing_loss(probs, target, dice_semimetric_weight=1.0, dice_semimetric_include_background=False)
    assert float(got) == pytest.approx(float(wing) + (fg1 + fg2) / 2, rel=1e-12)
    with_bg = adaptive_wing_loss(probs, target, dice_semimetric_weight=1.0)
    assert float(with_bg) == pytest.approx(float(wing) + (bg + fg1 + fg2) / 3, rel=1e-12)


def test_adaptive_wing_with_dice_semimetric_bad_input():
    probs, target = _pair(12, (1, 1, 4, 4))
    for bad in (-0.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InputError, match="dice_semimetric_weight must be a finite number >= 0"):
            adaptive_wing_loss(probs, target, dice_semimetric_weight=bad)
    with pytest.raises(InputError, match=r"dice_semimetric_weight adds a batch-wise DML term.*'sum'"):
        adaptive_wing_loss(probs, target, dice_semimetric_weight=1.0, reduction="sum")
