"""Dice semimetric loss (Wang & Blaschko 2023, issue 15 #2) against hand-computed values, MONAI's
published test case, the soft Dice on binary targets, gradcheck, and the soft-relu-dml candidate."""

from __future__ import annotations

import pytest
import torch

from softseg.candidates import get_candidate
from softseg.config import TrainConfig
from softseg.errors import InputError
from softseg.losses import (
    LOSS_MODULES,
    LOSSES,
    DiceSemimetricLoss,
    dice_loss,
    dice_semimetric_loss,
)
from softseg.models import UNet2D

# MONAI tests/losses/test_dice_loss.py: the same soft map as prediction and target, two samples,
# smooth_nr = smooth_dr = 1e-4, one Dice per sample; soft_label=False expects 0.307773, True 0.0
PEER = torch.tensor([[[[0.3, 0.4], [0.7, 0.9]]], [[[1.0, 0.1], [0.5, 0.3]]]])


def test_zero_at_a_soft_target_where_the_soft_dice_is_not():
    soft_dice = dice_loss(PEER, PEER, smooth=1e-4, per_sample=True)
    dml = dice_semimetric_loss(PEER, PEER, smooth=1e-4, per_sample=True)
    assert soft_dice.item() == pytest.approx(0.307773, abs=1e-6)  # MONAI's published value
    assert dml.item() == 0.0
    # by hand: 1 - sum x^2 / sum x per sample (smooth 1e-4): (1 - 3.1001/4.6001 + 1 - 2.7001/3.8001) / 2
    by_hand = (1 - 3.1001 / 4.6001 + 1 - 2.7001 / 3.8001) / 2
    assert soft_dice.item() == pytest.approx(by_hand, abs=1e-6)
    # batch form (the trainer's) too, and every smoothing
    for smooth in (0.0, 1e-4, 1.0):
        assert dice_semimetric_loss(PEER, PEER, smooth=smooth).item() == 0.0
    assert dice_loss(PEER, PEER, smooth=1.0).item() > 0.25


def test_hand_computed_value():
    p = torch.tensor([[[0.2, 0.8]]])
    g = torch.tensor([[[0.5, 0.5]]])
    # |p - g| = 0.3 + 0.3 = 0.6; sum p + sum g = 2 -> 0.6 / 2 = 0.3 (soft Dice: 1 - 2 * 0.5 / 2 = 0.5)
    assert dice_semimetric_loss(p, g, smooth=0.0).item() == pytest.approx(0.3, abs=1e-7)
    assert dice_loss(p, g, smooth=0.0).item() == pytest.approx(0.5, abs=1e-7)
    # smoothing in the denominator only: 0.6 / (2 + 1)
    assert dice_semimetric_loss(p, g, smooth=1.0).item() == pytest.approx(0.2, abs=1e-7)
    # per channel, per sample and reductions
    p2 = torch.tensor([[[0.2, 0.8], [1.0, 0.0]], [[0.0, 0.0], [0.5, 0.5]]])  # (N=2, C=2, 2)
    g2 = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    per = dice_semimetric_loss(p2, g2, smooth=0.0, per_sample=True, reduction="none")
    want = torch.tensor([[0.6 / 2.0, 0.0 / 2.0], [1.0 / 1.0, 1.0 / 2.0]])
    torch.testing.assert_close(per, want)
    batch = dice_semimetric_loss(p2, g2, smooth=0.0, reduction="none")
    torch.testing.assert_close(batch, torch.tensor([1.6 / 3.0, 1.0 / 4.0]))
    assert dice_semimetric_loss(p2, g2, smooth=0.0, reduction="sum").item() == pytest.approx(1.6 / 3 + 0.25)


def test_equals_the_soft_dice_on_binary_targets():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(4, 3, 9, 7, generator=g, dtype=torch.float64)
    target = (torch.rand(4, 3, 9, 7, generator=g, dtype=torch.float64) > 0.6).double()
    for per_sample in (False, True):
        for smooth in (0.0, 1.0):
            a = dice_semimetric_loss(probs, target, smooth=smooth, per_sample=per_sample, reduction="none")
            b = dice_loss(probs, target, smooth=smooth, per_sample=per_sample, reduction="none")
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # ... and not on soft ones
    soft = torch.rand(4, 3, 9, 7, generator=g, dtype=torch.float64)
    assert not torch.allclose(dice_semimetric_loss(probs, soft), dice_loss(probs, soft))


def test_zero_only_at_equality_and_a_semimetric():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    assert dice_semimetric_loss(x, y, smooth=0.0).item() > 0
    y2 = x.clone()
    y2[0, 0, 0, 0] += 1e-3
    assert dice_semimetric_loss(x, y2, smooth=0.0).item() > 0
    # symmetric
    assert dice_semimetric_loss(x, y, smooth=0.0).item() == pytest.approx(dice_semimetric_loss(y, x, smooth=0.0).item())


def test_k_class_form_scores_foreground_classes_only():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    target = torch.softmax(torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64), dim=1)
    probs = torch.softmax(logits, dim=1)
    fg = dice_semimetric_loss(probs, target, smooth=0.0, include_background=False, reduction="none")
    assert fg.shape == (2,)
    for k in (1, 2):
        p, t = probs[:, k], target[:, k]
        want = (p - t).abs().sum() / (p.sum() + t.sum())
        assert fg[k - 1].item() == pytest.approx(want.item(), rel=1e-12)
    # equal class maps: 0 even with background excluded
    assert dice_semimetric_loss(target, target, include_background=False).item() == 0.0
    with pytest.raises(InputError, match="include_background=False needs a background channel"):
        dice_semimetric_loss(probs[:, :1], target[:, :1], include_background=False)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(11)
    p = (0.05 + 0.9 * torch.rand(2, 2, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    t = torch.rand(2, 2, 4, 4, generator=g, dtype=torch.float64)
    # stay away from p == t, where |p - t| has no derivative
    t = torch.where((p.detach() - t).abs() < 0.05, (t + 0.2) % 1.0, t)
    for kw in ({}, {"per_sample": True}, {"include_background": False, "smooth": 0.0}):
        assert torch.autograd.gradcheck(lambda x: dice_semimetric_loss(x, t, **kw), (p,), eps=1e-6, atol=1e-8)


def test_module_registry_and_refusals():
    assert LOSSES["dice_semimetric"] is dice_semimetric_loss
    assert LOSS_MODULES["dice_semimetric"] is DiceSemimetricLoss
    m = DiceSemimetricLoss(smooth=0.0, per_sample=True, reduction="none")
    p = torch.tensor([[[0.2, 0.8]]])
    g = torch.tensor([[[0.5, 0.5]]])
    torch.testing.assert_close(m(p, g), torch.tensor([[0.3]]))
    with pytest.raises(InputError, match="smooth must be >= 0"):
        DiceSemimetricLoss(smooth=-1)
    with pytest.raises(InputError, match="smooth must be >= 0"):
        dice_semimetric_loss(p, g, smooth=-1)
    with pytest.raises(InputError, match="unknown reduction"):
        dice_semimetric_loss(p, g, reduction="max")
    with pytest.raises(InputError, match="same shape"):
        dice_semimetric_loss(p, g[..., :1])


def test_candidate_builds_validates_and_a_few_steps_reduce_the_loss():
    c = get_candidate("soft-relu-dml")
    assert (c.title, c.soft_gt, c.activation, c.loss) == ("Soft-ReLU-DML", True, "normalized_relu", "dice_semimetric")
    assert get_candidate("soft-relu-dice").loss == "dice"  # the plain soft Dice stays selectable
    assert TrainConfig.from_dict({"candidate": "soft-relu-dml"}).candidate == "soft-relu-dml"
    k2 = c.for_classes(2)
    assert (k2.loss, k2.loss_params) == ("dice_semimetric", {"smooth": 1.0, "include_background": False})

    torch.manual_seed(0)
    img = torch.randn(4, 1, 16, 16)
    lab = torch.zeros(4, 1, 16, 16)
    lab[:, :, 4:12, 5:11] = 1.0
    lab[:, :, 3, 5:11] = 0.4  # soft border
    img = img + 2 * lab
    net = UNet2D(in_channels=1, out_channels=1, depth=2, width=4, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = c.prepare_target(lab)
    assert target is lab  # soft labels kept
    values = []
    for epoch in range(8):
        opt.zero_grad()
        loss = c.compute_loss(c.activate(net(img)), target, epoch=epoch)
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0], values


def test_softseg_train_with_the_candidate_writes_a_card_that_reads_back(tmp_path, capsys):
    """One tiny epoch through ``softseg train``: the card records the DML recipe and predicts."""
    from softseg.cli import main
    from softseg.modelfile import read_card
    from softseg.phantom import write_dataset

    ds = tmp_path / "ds"
    write_dataset(ds, n_subjects=3, shape=(32, 32, 8), n_raters=2, seed=4)
    model = tmp_path / "dml.safetensors"
    code = main([str(a) for a in ("train", ds, "--candidate", "soft-relu-dml", "--out", model, "--epochs", 1,
                                  "--crop", 32, "--width", 4, "--depth", 2, "--batch-size", 4,
                                  "--val-fraction", 0.34, "--device", "cpu", "--seed", 1)])
    assert code == 0, capsys.readouterr().err
    card = read_card(model)
    assert (card.candidate.name, card.candidate.title, card.candidate.loss) == (
        "soft-relu-dml", "Soft-ReLU-DML", "dice_semimetric")
    assert card.candidate.loss_params == {"smooth": 1.0}
    assert card.training.config.candidate == "soft-relu-dml"
    assert main(["predict", str(model), str(ds / "sub-01"), "-o", str(tmp_path / "p"), "--device", "cpu"]) == 0
    assert (tmp_path / "p" / "sub-01_pred.nii.gz").is_file()
