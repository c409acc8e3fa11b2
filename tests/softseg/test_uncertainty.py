"""softseg.uncertainty: MC dropout and test-time augmentation, batched, and their summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from softseg.activations import sigmoid, softmax
from softseg.augment import AffineAugment
from softseg.errors import InputError
from softseg.models import UNet2D
from softseg.uncertainty import (
    check_passes,
    has_dropout,
    mc_dropout_forward,
    split_maps,
    summarize_passes,
    tta_forward,
)

IDENTITY = AffineAugment(rotation=0, translation=0, scale=0)


def _x(b=3, h=24, w=20, seed=0):
    return np.random.default_rng(seed).normal(size=(b, 1, h, w)).astype(np.float32)


def _net(dropout=0.3, out=1, seed=0):
    torch.manual_seed(seed)
    return UNet2D(1, out, depth=2, width=4, dropout=dropout).eval()


def _one_pass(net, x, act=sigmoid):
    with torch.no_grad():
        return act(net(torch.from_numpy(x))).numpy()


class _Identity(nn.Module):
    """logits = the input: any spatial transform that is not undone shows in the output."""

    def forward(self, x):
        return x


def test_summaries_by_hand():
    # two passes of one voxel: 0.2 and 0.6
    m = summarize_passes(np.array([0.2, 0.6]).reshape(2, 1, 1, 1, 1))
    assert m.mean.item() == pytest.approx(0.4)
    assert m.variance.item() == pytest.approx(0.04)
    assert m.entropy.item() == pytest.approx(-(0.4 * math.log(0.4) + 0.6 * math.log(0.6)), rel=1e-6)
    # weights 3 and 1: mean 0.3, variance (3 * 0.01 + 1 * 0.09) / 4 = 0.03
    w = summarize_passes(np.array([0.2, 0.6]).reshape(2, 1, 1, 1, 1), np.array([3.0, 1.0]).reshape(2, 1, 1, 1, 1))
    assert w.mean.item() == pytest.approx(0.3) and w.variance.item() == pytest.approx(0.03)
    # three classes, passes [0.5, 0.5, 0] and [0.1, 0.3, 0.6]: mean [0.3, 0.4, 0.3]
    k = summarize_passes(np.array([[0.5, 0.5, 0.0], [0.1, 0.3, 0.6]]).reshape(2, 1, 3, 1, 1))
    np.testing.assert_allclose(k.mean[0, :, 0, 0], [0.3, 0.4, 0.3], atol=1e-7)
    np.testing.assert_allclose(k.variance[0, :, 0, 0], [0.04, 0.01, 0.09], atol=1e-7)
    assert k.entropy.item() == pytest.approx(-(2 * 0.3 * math.log(0.3) + 0.4 * math.log(0.4)), rel=1e-6)
    # stacked <-> split
    back = split_maps(k.stacked(), axis=1)
    np.testing.assert_array_equal(back.mean, k.mean)
    np.testing.assert_array_equal(back.entropy, k.entropy)


def test_summary_refusals():
    with pytest.raises(InputError, match=r"shape \(n, B, K, H, W\)"):
        summarize_passes(np.zeros((2, 3, 3)))
    with pytest.raises(InputError, match="positive weight"):
        summarize_passes(np.zeros((2, 1, 1, 2, 2)), np.zeros((2, 1, 1, 2, 2)))
    with pytest.raises(InputError, match="mean of the passes"):
        summarize_passes(np.full((2, 1, 1, 2, 2), 1.5))


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "4"])
def test_bad_pass_counts_are_one_line(n):
    with pytest.raises(InputError, match="whole number >= 1") as exc:
        check_passes(n)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="MC dropout passes must be a whole number"):
        mc_dropout_forward(_net(), sigmoid, n=n)
    with pytest.raises(InputError, match="test-time augmentation passes must be a whole number"):
        tta_forward(_net(), sigmoid, n=n)


def test_mc_dropout_without_dropout_is_one_pass():
    net = _net(dropout=0.0)
    assert not has_dropout(net)
    x = _x()
    maps = split_maps(mc_dropout_forward(net, sigmoid, n=5)(x), axis=1)
    np.testing.assert_allclose(maps.mean, _one_pass(net, x), atol=1e-6)
    assert float(np.abs(maps.variance).max()) < 1e-10


def test_mc_dropout_passes_differ_reproducibly_and_leave_state_alone():
    net = _net(dropout=0.3)
    assert has_dropout(net)
    x = _x()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = mc_dropout_forward(net, sigmoid, n=6, seed=4)(x)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the caller's random stream is untouched
    b = mc_dropout_forward(net, sigmoid, n=6, seed=4)(x)
    np.testing.assert_array_equal(a, b)
    maps = split_maps(a, axis=1)
    assert maps.variance.min() >= 0 and maps.variance.max() > 1e-6
    assert not net.training and all(not m.training for m in net.modules())  # modes restored
    # the passes are one batch of n * B slices, or chunks of max_slices
    calls = []
    hook = net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    mc_dropout_forward(net, sigmoid, n=6, max_slices=8)(x)
    hook.remove()
    assert calls == [8, 8, 2]


def test_tta_identity_transforms_are_one_pass():
    net = _net()
    x = _x()
    maps = split_maps(tta_forward(net, sigmoid, n=4, params=IDENTITY, flip_axes=())(x), axis=1)
    np.testing.assert_allclose(maps.mean, _one_pass(net, x), atol=1e-6)
    assert float(maps.variance.max()) < 1e-10


def test_tta_flips_and_affines_are_mapped_back():
    x = _x(b=2, h=32, w=28, seed=3)
    ident = _Identity()
    # flips only: every pass mapped back is exactly the plain prediction
    flips = split_maps(tta_forward(ident, sigmoid, n=8, params=IDENTITY, seed=1)(x), axis=1)
    np.testing.assert_allclose(flips.mean, torch.sigmoid(torch.from_numpy(x)).numpy(), atol=1e-6)
    assert float(flips.variance.max()) < 1e-10
    # not mapping back would mix flipped copies: check the test can fail
    assert np.abs(np.flip(x, -1) - x).max() > 1
    # rotation/zoom/shift + flips on a smooth image: back within bilinear error, away from the border
    yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 28), indexing="ij")
    smooth = np.stack([np.sin(2 * yy + 3 * xx), np.cos(3 * yy - xx)])[:, None].astype(np.float32)
    full = split_maps(tta_forward(ident, sigmoid, n=10, seed=2)(smooth), axis=1)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    err = np.abs(full.mean - torch.sigmoid(torch.from_numpy(smooth)).numpy())[inner]
    assert err.max() < 0.03
    assert full.variance.min() >= 0


def test_multiclass_passes_sum_to_one():
    net = _net(out=3)
    x = _x()
    for fwd in (mc_dropout_forward(net, softmax, n=4), tta_forward(net, softmax, n=4)):
        maps = split_maps(fwd(x), axis=1)
        assert maps.mean.shape == (3, 3, 24, 20) and maps.entropy.shape == (3, 24, 20)
        np.testing.assert_allclose(maps.mean.sum(axis=1), 1.0, atol=1e-5)
        assert maps.entropy.max() <= math.log(3) + 1e-6


def test_tta_option_refusals():
    with pytest.raises(InputError, match="flip_axes"):
        tta_forward(_net(), sigmoid, n=2, flip_axes=(0,))
    with pytest.raises(InputError, match="AffineAugment"):
        tta_forward(_net(), sigmoid, n=2, params={"rotation": 5})
