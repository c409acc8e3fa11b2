"""softseg.models.UNet2D: shapes, logits, config round trip, padding, errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softseg.errors import InputError
from softseg.models import UNet2D


def _input(n, c, h, w, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("depth", [3, 4])
@pytest.mark.parametrize("size", [(32, 48), (37, 50), (5, 3)])
def test_output_shape_any_size(depth, size):
    torch.manual_seed(0)
    model = UNet2D(2, 3, depth=depth, width=4).eval()
    with torch.no_grad():
        out = model(_input(2, 2, *size))
    assert out.shape == (2, 3, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_returns_logits_not_probabilities():
    torch.manual_seed(0)
    model = UNet2D(1, width=4, depth=2).eval()
    with torch.no_grad():
        out = model(_input(2, 1, 16, 16) * 5)
    assert out.min() < 0  # a sigmoid/normalized-ReLU output could not be negative


def test_internal_padding_is_replicate_pad_then_crop():
    torch.manual_seed(0)
    model = UNet2D(1, width=4, depth=3).eval()
    x = _input(1, 1, 13, 21)
    padded = F.pad(x, (0, 3, 0, 3), mode="replicate")  # next multiples of 2**3: 16 x 24
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :13, :21])


def test_parameter_count_hand_computed():
    # depth 1, width 2, no batch norm/dropout, 1 -> 1 channel:
    # enc0: conv 1->2 (18+2) + conv 2->2 (36+2) = 58; bottom: 2->4 (72+4) + 4->4 (144+4) = 224
    # up: transposed 4->2, 2x2 (32+2) = 34; dec: 4->2 (72+2) + 2->2 (36+2) = 112; head 2->1: 3
    model = UNet2D(1, 1, depth=1, width=2, dropout=0.0, batch_norm=False)
    assert sum(p.numel() for p in model.parameters()) == 58 + 224 + 34 + 112 + 3


def test_layers_follow_the_paper():
    depth = 3
    model = UNet2D(1, depth=depth, width=4)
    blocks = 2 * depth + 1
    modules = list(model.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in modules) == 2 * blocks + 1  # + 1x1 head
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == 2 * blocks
    drops = [m for m in modules if isinstance(m, nn.Dropout2d)]
    assert len(drops) == 2 * blocks and all(d.p == 0.3 for d in drops)
    bare = UNet2D(1, depth=depth, width=4, dropout=0.0, batch_norm=False)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout2d)) for m in bare.modules())
    # widths double at every level: bottom has width * 2**depth filters
    assert model.encoder[-1][0].out_channels == 4 * 2**depth


def test_dropout_active_in_train_mode_only():
    torch.manual_seed(0)
    model = UNet2D(1, width=4, depth=2)
    x = _input(2, 1, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet2D(3, 2, width=4, depth=3)
    model(_input(2, 3, 20, 20)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_config_round_trip_json():
    torch.manual_seed(0)
    model = UNet2D(2, 1, depth=4, width=6, dropout=0.1, batch_norm=True)
    config = json.loads(json.dumps(model.config))
    assert config == {
        "in_channels": 2,
        "out_channels": 1,
        "depth": 4,
        "width": 6,
        "dropout": 0.1,
        "batch_norm": True,
    }
    clone = UNet2D.from_config(config)
    clone.load_state_dict(model.state_dict())
    x = _input(1, 2, 24, 24)
    model.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), clone(x))


def test_errors_are_clear():
    with pytest.raises(InputError, match="unknown key.*colour.*valid keys"):
        UNet2D.from_config({"in_channels": 1, "colour": "red"})
    with pytest.raises(InputError, match="missing key 'in_channels'"):
        UNet2D.from_config({"depth": 3})
    with pytest.raises(InputError, match="depth must be an integer in 1..6; got 0"):
        UNet2D(1, depth=0)
    with pytest.raises(InputError, match="in_channels must be an integer >= 1"):
        UNet2D(0)
    with pytest.raises(InputError, match=r"dropout must be a number in \[0, 1\)"):
        UNet2D(1, dropout=1.0)
    with pytest.raises(InputError, match="batch_norm must be true or false"):
        UNet2D(1, batch_norm="yes")
    with pytest.raises(
        InputError, match=r"expected input of shape \(N, 2, H, W\); got \(1, 3, 8, 8\)"
    ):
        UNet2D(2, width=2, depth=1)(torch.zeros(1, 3, 8, 8))
