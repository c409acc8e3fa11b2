"""softseg.candidates: the papers' ablation table, target preparation, losses, CLI listing."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from softseg import activations, losses
from softseg import candidates as cand_module
from softseg.augment import AffineAugment, random_affine
from softseg.candidates import (
    CANDIDATES,
    FUSION_DESCRIPTIONS,
    FUSIONS,
    Candidate,
    check_fusion,
    get_candidate,
)
from softseg.cli import COMMANDS, main
from softseg.errors import InputError
from softseg.losses import signed_distance_map
from softseg.models import UNet2D

# SoftSeg paper, Table 2 (+ the two loss baselines of issue 4)
TABLE = {
    "conventional": ("Hard-Sig-Dice", False, "sigmoid", "dice"),
    "hard-relu-wing": ("Hard-ReLU-Wing", False, "normalized_relu", "adaptive_wing"),
    "soft-sig-wing": ("Soft-Sig-Wing", True, "sigmoid", "adaptive_wing"),
    "soft-relu-dice": ("Soft-ReLU-Dice", True, "normalized_relu", "dice"),
    # issue 15 #1: Adaptive Wing + the Dice semimetric loss (compound, for small lesions)
    "softseg": ("Soft-ReLU-Wing+DML", True, "normalized_relu", "adaptive_wing"),
    # the previous default: the balanced Adaptive Wing alone
    "softseg-wing": ("Soft-ReLU-Wing (balanced)", True, "normalized_relu", "adaptive_wing"),
    # issue 15 #1: the paper's formula, and the normalisations studied beside the new default
    "softseg-paper": ("Soft-ReLU-Wing (paper)", True, "normalized_relu", "adaptive_wing"),
    "softseg-floor": ("Soft-ReLU-Wing (floor)", True, "normalized_relu", "adaptive_wing"),
    "softseg-batch-max": ("Soft-ReLU-Wing (batch max)", True, "normalized_relu", "adaptive_wing"),
    "softseg-volume-max": ("Soft-ReLU-Wing (volume max)", True, "normalized_relu", "adaptive_wing"),
    "soft-sig-bce": ("Soft-Sig-BCE", True, "sigmoid", "bce"),
    "gdl-boundary": ("Hard-Sig-GDL+Boundary", False, "sigmoid", "gdl_boundary"),
    "soft-relu-dml": ("Soft-ReLU-DML", True, "normalized_relu", "dice_semimetric"),  # issue 15 #2
}


def _batch(seed=0, n=4, size=24):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 1, size, size, generator=g)
    lab = torch.zeros(n, 1, size, size)
    lab[:, :, 6:16, 8:18] = 1.0
    img = img + 2 * lab
    return img, lab


def test_registry_matches_the_papers_table():
    assert list(CANDIDATES) == list(TABLE)
    for name, (title, soft, activation, loss) in TABLE.items():
        c = get_candidate(name)
        assert (c.name, c.title, c.soft_gt, c.activation, c.loss) == (
            name,
            title,
            soft,
            activation,
            loss,
        )
        assert c.description and "\n" not in c.description
    wing = get_candidate("softseg-paper").loss_params
    assert wing == {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}  # SoftSeg Table 1
    paper = get_candidate("softseg-paper")
    assert (paper.normalization, paper.tau, paper.negative_slope) == ("sample_max", None, 0.0)
    new = get_candidate("softseg")  # issue 15: balance 0.1 + 1 x the Dice semimetric; constant divisor
    assert new.loss_params == {**wing, "balance": 0.1, "dice_semimetric_weight": 1.0}
    assert (new.normalization, new.tau, new.negative_slope) == ("fixed", 1.0, 0.1)
    old = get_candidate("softseg-wing")  # the previous default: the same fixes, balance 0.05 alone
    assert old.loss_params == {**wing, "balance": 0.05}
    assert (old.normalization, old.tau, old.negative_slope) == (new.normalization, new.tau, new.negative_slope)
    for key, norm, slope in (("floor", "floor", 0.1), ("batch-max", "batch_max", 0.0),
                             ("volume-max", "volume_max", 0.0)):
        c = get_candidate(f"softseg-{key}")  # softseg-wing but for the normalisation
        assert (c.normalization, c.negative_slope, c.loss_params) == (norm, slope, old.loss_params)
    assert get_candidate("gdl-boundary").needs_distance_map
    assert not any(c.needs_distance_map for n, c in CANDIDATES.items() if n != "gdl-boundary")


def test_names_known_without_torch_match_the_registries():
    assert set(cand_module._ACTIVATION_NAMES) == set(activations.ACTIVATIONS)
    assert set(cand_module._LOSS_NAMES) == set(losses.LOSSES)
    assert set(cand_module._DISTANCE_MAP_LOSSES) == set(losses.DISTANCE_MAP_LOSSES)


def test_importing_candidates_does_not_import_torch():
    code = "import sys, softseg.candidates, softseg.cli.candidates; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_frozen_and_json_able():
    c = get_candidate("softseg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.loss = "dice"  # type: ignore[misc]
    params = {"smooth": 1.0}
    custom = Candidate(
        name="x",
        title="X",
        description="d",
        soft_gt=True,
        activation="sigmoid",
        loss="dice",
        loss_params=params,
    )
    params["smooth"] = 5.0
    assert custom.loss_params == {"smooth": 1.0}  # own copy
    assert (
        json.loads(json.dumps([c.as_dict() for c in CANDIDATES.values()]))[4]["title"]
        == "Soft-ReLU-Wing+DML"
    )
    assert hash(c) == hash(get_candidate("softseg"))


def test_prepare_target_hard_binarises_at_half_soft_keeps():
    target = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.9, 1.0]).reshape(1, 1, 1, -1)
    hard = get_candidate("conventional").prepare_target(target)
    assert hard.tolist() == [[[[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]]]
    assert hard.dtype == target.dtype
    assert get_candidate("softseg").prepare_target(target) is target
    assert (
        get_candidate("conventional").prepare_target(torch.tensor([0, 1], dtype=torch.uint8)).dtype
        == torch.float32
    )


@pytest.mark.parametrize("name", list(TABLE))
def test_after_augmentation_soft_sees_fractions_hard_sees_binary(name):
    c = get_candidate(name)
    img, lab = _batch()
    _, aug = random_affine(
        img, lab, params=AffineAugment(), generator=torch.Generator().manual_seed(1)
    )
    target = c.prepare_target(aug)
    fractional = ((target > 0) & (target < 1)).sum().item()
    if c.soft_gt:
        assert fractional > 10
        assert torch.equal(target, aug)
    else:
        assert fractional == 0
        assert set(target.unique().tolist()) == {0.0, 1.0}


def test_activate_uses_the_named_activation():
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        get_candidate("softseg-paper").activate(logits), activations.normalized_relu(logits)
    )
    # the default divides by the constant 1: min(relu(x), 1), hand-computed
    torch.testing.assert_close(
        get_candidate("softseg").activate(logits), logits.clamp(0.0, 1.0)
    )
    torch.testing.assert_close(
        get_candidate("conventional").activate(logits), torch.sigmoid(logits)
    )


def test_compute_loss_is_the_named_loss_with_its_parameters():
    g = torch.Generator().manual_seed(3)
    probs, target = torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    c = get_candidate("softseg-paper")
    torch.testing.assert_close(
        c.compute_loss(probs, target, epoch=0),
        losses.adaptive_wing_loss(probs, target, alpha=2.1, omega=8, epsilon=1, theta=0.5),
    )
    torch.testing.assert_close(
        get_candidate("softseg").compute_loss(probs, target, epoch=0),
        losses.adaptive_wing_loss(probs, target, alpha=2.1, omega=8, epsilon=1, theta=0.5,
                                  balance=0.1) + losses.dice_semimetric_loss(probs, target),
    )
    torch.testing.assert_close(
        get_candidate("softseg-wing").compute_loss(probs, target, epoch=0),
        losses.adaptive_wing_loss(probs, target, alpha=2.1, omega=8, epsilon=1, theta=0.5,
                                  balance=0.05),
    )
    torch.testing.assert_close(
        get_candidate("conventional").compute_loss(probs, target, epoch=5),
        losses.dice_loss(probs, target, smooth=1.0),
    )
    torch.testing.assert_close(
        get_candidate("soft-sig-bce").compute_loss(probs, target, epoch=5),
        losses.binary_cross_entropy(probs, target),
    )
    assert c.compute_loss(probs, target, epoch=0).ndim == 0


def test_gdl_boundary_schedule_moves_weight_to_boundary():
    c = get_candidate("gdl-boundary")
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(2, 1, 12, 12, generator=g)
    target = c.prepare_target(torch.rand(2, 1, 12, 12, generator=g))
    phi = torch.from_numpy(signed_distance_map(target.numpy(), ndim=2))
    gdl = losses.generalized_dice_loss(probs, target)
    bnd = losses.boundary_loss(probs, target, distance_map=phi)
    torch.testing.assert_close(c.compute_loss(probs, target, epoch=0, distance_map=phi), gdl)
    torch.testing.assert_close(
        c.compute_loss(probs, target, epoch=40, distance_map=phi), 0.6 * gdl + 0.4 * bnd
    )
    torch.testing.assert_close(
        c.compute_loss(probs, target, epoch=150, distance_map=phi), 0.01 * gdl + 0.99 * bnd
    )
    assert [c.boundary_weight(e) for e in (0, 1, 99, 120)] == [1.0, 0.99, 0.01, 0.01]
    # without a map the candidate computes it from the target on its device (same map)
    torch.testing.assert_close(c.compute_loss(probs, target, epoch=40), 0.6 * gdl + 0.4 * bnd)
    phi_mm = torch.from_numpy(signed_distance_map(target.numpy(), ndim=2, spacing=(0.5, 2.0)))
    torch.testing.assert_close(
        c.compute_loss(probs, target, epoch=150, spacing=(0.5, 2.0)),
        0.01 * gdl + 0.99 * losses.boundary_loss(probs, target, distance_map=phi_mm),
    )


@pytest.mark.parametrize("name", list(TABLE))
def test_a_few_training_steps_reduce_the_loss(name):
    """Wiring smoke test: augment -> prepare_target -> model -> activate -> loss -> Adam."""
    torch.manual_seed(0)
    c = get_candidate(name)
    img, lab = _batch(n=4, size=16)
    target = c.prepare_target(lab)
    phi = (
        torch.from_numpy(signed_distance_map(target.numpy(), ndim=2))
        if c.needs_distance_map
        else None
    )
    model = UNet2D(1, width=4, depth=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for _ in range(8):
        loss = c.compute_loss(c.activate(model(img)), target, epoch=0, distance_map=phi)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0]


def test_fusions():
    assert FUSIONS == ("staple", "average", "majority", "random")
    assert set(FUSION_DESCRIPTIONS) == set(FUSIONS)
    assert check_fusion("average") == "average"
    with pytest.raises(
        InputError, match="unknown fusion 'mean'; choose one of: staple, average, majority, random"
    ):
        check_fusion("mean")


def test_errors_are_clear():
    with pytest.raises(
        InputError, match="unknown candidate 'soft'; choose one of: conventional, .*softseg"
    ):
        get_candidate("soft")
    # a retired name is its recipe's name now (issue 15), not listed
    assert get_candidate("softseg-dml") is get_candidate("softseg")
    assert "softseg-dml" not in CANDIDATES
    with pytest.raises(InputError, match="unknown activation 'tanh'"):
        Candidate(
            name="x", title="X", description="d", soft_gt=True, activation="tanh", loss="dice"
        )
    with pytest.raises(InputError, match="unknown loss 'l1'"):
        Candidate(
            name="x", title="X", description="d", soft_gt=True, activation="sigmoid", loss="l1"
        )
    with pytest.raises(InputError, match="boundary_schedule"):
        Candidate(
            name="x",
            title="X",
            description="d",
            soft_gt=False,
            activation="sigmoid",
            loss="gdl_boundary",
        )



# ------------------------------------------------------------------------------------ K classes
# Each ablation candidate for K classes (issue 14): (activation, loss, parameters added)
MULTICLASS = {
    "conventional": ("softmax", "dice", {"include_background": False}),
    "hard-relu-wing": ("multiclass_normalized_relu", "adaptive_wing", {}),
    "soft-sig-wing": ("softmax", "adaptive_wing", {}),
    "soft-relu-dice": ("multiclass_normalized_relu", "dice", {"include_background": False}),
    # the compound's DML term scores the foreground classes, as the K-class DML loss does
    "softseg": ("multiclass_normalized_relu", "adaptive_wing", {"dice_semimetric_include_background": False}),
    "softseg-wing": ("multiclass_normalized_relu", "adaptive_wing", {}),
    "softseg-paper": ("multiclass_normalized_relu", "adaptive_wing", {}),
    "softseg-floor": ("multiclass_normalized_relu", "adaptive_wing", {}),
    "softseg-batch-max": ("multiclass_normalized_relu", "adaptive_wing", {}),
    "softseg-volume-max": ("multiclass_normalized_relu", "adaptive_wing", {}),
    "soft-sig-bce": ("softmax", "cross_entropy", {}),
    "gdl-boundary": ("softmax", "gdl_boundary", {"add_background": False, "include_background": False}),
    "soft-relu-dml": ("multiclass_normalized_relu", "dice_semimetric", {"include_background": False}),
}


def test_one_class_is_todays_recipe():
    for name, c in CANDIDATES.items():
        assert c.n_classes == 1 and c.out_channels == 1
        assert c.for_classes(1) is c
        assert c.as_dict()["n_classes"] == 1


@pytest.mark.parametrize("name", list(TABLE))
def test_every_candidate_for_three_classes(name):
    c = get_candidate(name)
    k3 = c.for_classes(3)
    activation, loss, added = MULTICLASS[name]
    assert (k3.name, k3.title, k3.soft_gt, k3.n_classes, k3.out_channels) == (name, c.title, c.soft_gt, 3, 4)
    assert (k3.activation, k3.loss) == (activation, loss)
    assert k3.loss_params == {**c.loss_params, **added}
    assert k3.boundary_schedule == c.boundary_schedule
    assert k3.for_classes(3) is k3
    assert c.loss_params == get_candidate(name).loss_params  # the registry is untouched
    with pytest.raises(InputError, match="already defined for 3 classes"):
        k3.for_classes(2)


def test_k_class_targets_by_hand():
    # foreground maps (class 1, class 2) of four voxels; background = 1 - their sum
    fg = torch.tensor([[0.3, 0.375, 0.0, 0.5], [0.5, 0.25, 0.0, 0.5]]).reshape(1, 2, 1, 4)
    soft = get_candidate("softseg").for_classes(2).prepare_target(fg)
    expected_soft = [[0.2, 0.375, 1.0, 0.0], [0.3, 0.375, 0.0, 0.5], [0.5, 0.25, 0.0, 0.5]]
    torch.testing.assert_close(soft, torch.tensor(expected_soft).reshape(1, 3, 1, 4))
    hard = get_candidate("conventional").for_classes(2).prepare_target(fg)
    # winners: class 2; background/class 1 tie -> background; background; class 1/2 tie -> class 1
    expected_hard = [[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert hard[0, :, 0].tolist() == [[float(v) for v in row] for row in expected_hard]
    with pytest.raises(InputError, match=r"expected the 2 foreground class maps \(N, 2, H, W\); got shape \(1, 3, 1, 4\)"):
        get_candidate("softseg").for_classes(2).prepare_target(soft)


def test_one_hot_after_augmentation():
    """Augmentation warps the foreground maps; the hard target is the one-hot of the most
    probable class of the warped maps (numpy argmax here), the soft target sums to 1 everywhere
    (background outside the field of view)."""
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (4, 24, 24), generator=g)
    fg = torch.stack([(labels == 1).float(), (labels == 2).float()], dim=1)
    img = torch.randn(4, 1, 24, 24, generator=g)
    _, warped = random_affine(img, fg, params=AffineAugment(rotation=30, translation=0.2, scale=0.2),
                              generator=torch.Generator().manual_seed(6))
    w = warped.numpy().astype(np.float64)
    maps = np.concatenate([1.0 - w.sum(axis=1, keepdims=True), w], axis=1)
    winner = np.argmax(maps, axis=1)
    for name in ("conventional", "hard-relu-wing", "gdl-boundary"):
        hard = get_candidate(name).for_classes(2).prepare_target(warped).numpy()
        assert set(np.unique(hard)) == {0.0, 1.0}
        np.testing.assert_array_equal(hard.sum(axis=1), 1.0)
        np.testing.assert_array_equal(np.argmax(hard, axis=1), winner)
    soft = get_candidate("softseg").for_classes(2).prepare_target(warped).numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    assert ((soft > 0) & (soft < 1)).sum() > 50  # fractional borders kept
    assert (soft[:, 0] == 1.0).any()  # zero padding outside the field of view is background


def test_k_class_activation_and_loss_are_the_named_ones():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.softmax(torch.randn(2, 4, 8, 8, generator=g), dim=1)
    sm = get_candidate("conventional").for_classes(3)
    torch.testing.assert_close(sm.activate(logits), torch.softmax(logits, dim=1))
    relu = get_candidate("softseg-paper").for_classes(3)
    torch.testing.assert_close(relu.activate(logits), activations.multiclass_normalized_relu(logits))
    # the default for K classes: relu divided by its sum over the classes (by hand; the window
    # maximum cancels, and the constant divisor's min(., 1) is not used)
    r = logits.clamp_min(0.0)
    torch.testing.assert_close(get_candidate("softseg").for_classes(3).activate(logits),
                               r / r.sum(dim=1, keepdim=True).clamp_min(1e-6))
    probs = sm.activate(logits)
    torch.testing.assert_close(sm.compute_loss(probs, target, epoch=0),
                               losses.dice_loss(probs, target, smooth=1.0, include_background=False))
    torch.testing.assert_close(get_candidate("soft-sig-bce").for_classes(3).compute_loss(probs, target, epoch=0),
                               losses.cross_entropy(probs, target, eps=1e-7))
    gdl = get_candidate("gdl-boundary").for_classes(3)
    hard = gdl.prepare_target(target[:, 1:])
    phi = torch.from_numpy(signed_distance_map(hard.numpy(), ndim=2))
    torch.testing.assert_close(
        gdl.compute_loss(probs, hard, epoch=40),
        losses.gdl_boundary_loss(probs, hard, distance_map=phi, alpha=0.6, add_background=False,
                                 include_background=False))


@pytest.mark.parametrize("name", list(TABLE))
def test_a_few_k_class_training_steps_reduce_the_loss(name):
    """The trainer's start (``candidate.init_network``) then a few Adam steps."""
    torch.manual_seed(0)
    c = get_candidate(name).for_classes(2)
    img, lab = _batch(n=4, size=16)
    second = torch.zeros_like(lab)
    second[:, :, 1:5, 1:6] = 1.0
    target = c.prepare_target(torch.cat([lab, second], dim=1))
    model = c.init_network(UNet2D(1, c.out_channels, width=4, depth=2, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for _ in range(8):
        loss = c.compute_loss(c.activate(model(img)), target, epoch=0)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0]


def test_k_class_relu_starts_with_every_class_alive():
    """The cause of the stall and its fix (softseg.activations, "Starting a K-class network"):
    with PyTorch's default start both foreground logits of the steps test above are <= 0 at
    every voxel and the Soft-ReLU-Dice loss has an exactly zero gradient; with the initial
    output bias no voxel is without a positive class, most (80 % here) have >= 2 (a gradient)
    and every parameter gets a gradient."""
    img, lab = _batch(n=4, size=16)
    second = torch.zeros_like(lab)
    second[:, :, 1:5, 1:6] = 1.0
    c = get_candidate("soft-relu-dice").for_classes(2)
    target = c.prepare_target(torch.cat([lab, second], dim=1))
    for fixed in (False, True):
        torch.manual_seed(0)
        model = UNet2D(1, c.out_channels, width=4, depth=2, dropout=0.0)
        if fixed:
            c.init_network(model)
        logits = model(img)
        c.compute_loss(c.activate(logits), target, epoch=0).backward()
        grads = [p.grad.abs().max().item() for p in model.parameters()]
        live = (logits > 0).sum(dim=1)
        if fixed:
            assert (live >= 1).all() and (live >= 2).float().mean() > 0.5
            assert min(grads) > 0
        else:
            assert not (live >= 2).any()
            assert (logits[:, 1:] <= 0).all()
            assert max(grads) == 0.0


def test_init_network_sets_only_the_k_class_relu_output_bias():
    for name in TABLE:
        for k in (1, 3):
            c = get_candidate(name).for_classes(k)
            torch.manual_seed(4)
            plain = UNet2D(1, c.out_channels, width=4, depth=2)
            torch.manual_seed(4)
            started = UNet2D(1, c.out_channels, width=4, depth=2)
            assert c.init_network(started) is started
            relu = k > 1 and c.activation == "multiclass_normalized_relu"
            assert c.initial_output_bias == (0.5 if relu else None)
            a, b = plain.state_dict(), started.state_dict()
            for key in a:
                if relu and key == "head.bias":
                    assert torch.equal(b[key], torch.full((c.out_channels,), 0.5))
                else:
                    assert torch.equal(a[key], b[key]), (name, k, key)
    with pytest.raises(InputError, match="output bias must be a finite number; got nan"):
        UNet2D(1, 3, width=4, depth=2).init_output_bias(float("nan"))


# ----------------------------------------------------------------------------------------- CLI
def test_cli_lists_candidates_and_fusions(capsys):
    assert "candidates" in COMMANDS
    assert main(["candidates"]) == 0
    out = capsys.readouterr().out
    for name, (title, *_rest) in TABLE.items():
        assert name in out and title in out
    for fusion in FUSIONS:
        assert fusion in out


def test_cli_json(capsys):
    assert main(["candidates", "--json", "softseg", "conventional"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in payload["candidates"]] == ["softseg", "conventional"]
    assert payload["candidates"][0]["loss_params"]["alpha"] == 2.1
    assert [f["name"] for f in payload["fusions"]] == list(FUSIONS)


def test_cli_unknown_name_exit_2(capsys):
    assert main(["candidates", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith(
        "softseg candidates: error: unknown candidate 'nope'; choose one of:"
    )
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------- normalisation options (issue 15 #1)
def _relu_candidate(**kw):
    return Candidate(name="x", title="X", description="d", soft_gt=True,
                     activation="normalized_relu", loss="adaptive_wing", **kw)


def test_normalisation_options_are_validated_in_one_line():
    for kw, message in (
        ({"normalization": "maxi"}, "candidate 'x': unknown normalized ReLU normalisation 'maxi'"),
        ({"normalization": "fixed"}, "candidate 'x': normalisation 'fixed' divides by tau"),
        ({"normalization": "sample_max", "tau": 1.0}, "takes no tau"),
        ({"normalization": "running_max", "tau": 1.0}, "running_max's divisor is a statistic"),
        ({"negative_slope": 1.5}, r"negative_slope .* \[0, 1\)"),
        ({"negative_slope": 0.1}, "negative_slope needs a divisor bounded away from 0"),
    ):
        with pytest.raises(InputError, match=message):
            _relu_candidate(**kw)
    with pytest.raises(InputError, match="sigmoid has no normalisation options"):
        Candidate(name="x", title="X", description="d", soft_gt=True, activation="sigmoid",
                  loss="dice", negative_slope=0.1)


def test_activate_applies_the_options_and_the_slope_only_in_training():
    c = _relu_candidate(normalization="fixed", tau=2.0, negative_slope=0.25)
    x = torch.tensor([[[[-1.0, 0.5, 1.0, 5.0]]]], requires_grad=True)
    p = c.activate(x)
    # fixed, tau 2: min(relu(x) / 2, 1), hand-computed; no window maximum
    assert torch.equal(p.detach(), torch.tensor([[[[0.0, 0.25, 0.5, 1.0]]]]))
    (g_eval,) = torch.autograd.grad(c.activate(x).sum(), x)
    (g_train,) = torch.autograd.grad(c.activate(x, training=True).sum(), x)
    assert torch.equal(g_eval, torch.tensor([[[[0.0, 0.5, 0.5, 0.0]]]]))
    assert torch.equal(g_train, torch.tensor([[[[0.125, 0.5, 0.5, 0.0]]]]))  # 0.25 / tau below 0
    k3 = c.for_classes(3)  # the class sum replaces the constant divisor (for_classes)
    assert (k3.normalization, k3.tau, k3.negative_slope) == ("sample_max", None, 0.0)
    assert {"normalization": "fixed", "tau": 2.0, "negative_slope": 0.25}.items() <= c.as_dict().items()


def test_output_bias_starts_a_single_class_network_where_asked():
    from softseg.models import UNet2D

    net = _relu_candidate(output_bias=0.5).init_network(UNet2D(1, 1, depth=1, width=4))
    biases = [m.bias for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert torch.equal(biases[-1].detach(), torch.tensor([0.5]))  # the output convolution
    assert _relu_candidate().initial_output_bias is None  # PyTorch's start (every earlier model)
    with pytest.raises(InputError, match="output_bias must be a finite number"):
        _relu_candidate(output_bias=float("inf"))
