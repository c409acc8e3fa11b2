"""softseg.card: the model card's schema, its consistency rules and its text rendering."""

from __future__ import annotations

import json

import pytest

from softseg.card import ModelCard, card_from_document, render_card
from softseg.config import TrainConfig
from softseg.errors import InputError


def _doc(**over):
    doc = {
        "format_version": 2,
        "classes": ["grey matter"],
        "thresholds": [0.4],
        "channels": ["t2s"],
        "preprocessing": {"spacing": [None, 0.5, 0.5], "crop": [128, 128]},
        "candidate": {"name": "softseg", "title": "Soft-ReLU-Wing", "soft_gt": True,
                      "activation": {"name": "normalized_relu"}, "loss": "adaptive_wing",
                      "loss_params": {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}},
        "architecture": {"name": "UNet2D", "config": {"in_channels": 1, "out_channels": 1, "depth": 3,
                                                      "width": 32, "dropout": 0.3, "batch_norm": True}},
        "raters": ["1", "2", "3", "4"], "fusion": "average", "dataset": "/data/sc-gm",
        "split": {"train": ["s1", "s2", "s3"], "val": ["s4"], "test": ["s5"]},
        "validation": {"best_epoch": 120, "val_loss": 0.0712, "val_dice": 0.8534, "val_soft_dice": 0.8011},
        "training": {"config": TrainConfig().as_dict(), "epochs": 170, "max_epochs": 200,
                     "stop_reason": "early_stopping", "seconds": 3725.4, "seed": 0, "device": "cuda:0",
                     "created": "2025-03-01T10:00:00+0100"},
        "software": {"softseg": "0.1.0", "python": "3.11.7", "torch": "2.5.1"},
    }
    doc.update(over)
    return doc


def test_render_card_hand_checked():
    card = card_from_document(_doc(), source="m")
    text = render_card(card, path="gm.safetensors")
    assert text.splitlines() == [
        "Model          gm.safetensors",
        "Candidate      softseg (Soft-ReLU-Wing): soft ground truth, normalized_relu (sample_max), adaptive_wing loss",
        "Classes        grey matter (threshold 0.40)",
        "Channels       t2s",
        "Preprocessing  spacing (S, H, W) native x 0.5 x 0.5 mm; crop 128 x 128; zscore normalisation; orientation SPL",
        "Network        UNet2D depth 3, width 32, dropout 0.3, batch norm; 1 -> 1 channel(s)",
        "Raters         1, 2, 3, 4; fusion average",
        "Data           /data/sc-gm: 3 training, 1 validation, 1 test subject(s)",
        "Validation     best epoch 120: loss 0.0712, Dice 0.853, soft Dice 0.801",
        "Training       170 of 200 epochs (early stopping) in 1h02m on cuda:0, seed 0, 2025-03-01T10:00:00+0100",
        "Software       softseg 0.1.0, python 3.11.7, torch 2.5.1",
        "Format         model card version 2",
    ]


def test_render_card_names_the_options_that_change_a_recipe():
    """Two recipes under one loss (issue 15: softseg, softseg-wing) read differently: the
    balance, the Dice semimetric weight and the leaky gradient are shown; the Wing constants
    are not."""
    wing = {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}
    cand = {"name": "softseg", "title": "Soft-ReLU-Wing+DML", "soft_gt": True,
            "activation": {"name": "normalized_relu", "normalization": "fixed", "tau": 1.0},
            "loss": "adaptive_wing", "negative_slope": 0.1,
            "loss_params": {**wing, "balance": 0.1, "dice_semimetric_weight": 1.0}}
    line = render_card(card_from_document(_doc(candidate=cand), source="m")).splitlines()[1]
    assert line == ("Candidate      softseg (Soft-ReLU-Wing+DML): soft ground truth, normalized_relu "
                    "(fixed, tau 1), adaptive_wing loss (balance 0.1, dice_semimetric_weight 1, "
                    "leaky gradient 0.1)")


def test_consistency_rules():
    with pytest.raises(InputError, match=r"m: \(top level\): 2 threshold\(s\) for 1 class\(es\)"):
        card_from_document(_doc(thresholds=[0.4, 0.5]), source="m")
    with pytest.raises(InputError, match="the network takes 1 input channel\\(s\\) but 2 channel name"):
        card_from_document(_doc(channels=["t1", "t2"]), source="m")
    # multi-class: K classes + background out of K + 1 channels is accepted, one threshold per class
    doc = _doc(classes=["gm", "wm", "csf"], thresholds=[0.5, 0.4, 0.3])
    doc["architecture"]["config"]["out_channels"] = 4
    card = card_from_document(doc, source="m")
    assert card.thresholds == (0.5, 0.4, 0.3)
    with pytest.raises(InputError, match="this model has 3 classes"):
        card.threshold
    doc["architecture"]["config"]["out_channels"] = 2
    with pytest.raises(InputError, match="2 output channel\\(s\\) for 3 class\\(es\\)"):
        card_from_document(doc, source="m")


def test_bad_documents():
    for doc, message in (
        ([], "expected a JSON object; got list"),
        ({"format_version": "2"}, "format_version '2' is not a model-card version"),
        ({"format_version": 3}, "format version 3 is not supported by this softseg (reads versions 1..2)"),
        (_doc(thresholds=[0.0]), "thresholds.0: Input should be greater than 0"),
        (_doc(candidate={"name": "x", "activation": {"name": "relu"}}), "candidate.activation.name"),
    ):
        with pytest.raises(InputError, match=None) as exc:
            card_from_document(doc, source="m")
        assert message in str(exc.value), str(exc.value)


def test_json_round_trip_and_activation_names_match_the_registry():
    from typing import get_args

    from softseg.activations import ACTIVATIONS
    from softseg.card import ActivationCard

    card = card_from_document(_doc(), source="m")
    assert ModelCard.model_validate_json(card.to_json()) == card
    assert json.loads(card.to_json())["training"]["config"] == TrainConfig().as_dict()
    assert set(get_args(ActivationCard.model_fields["name"].annotation)) == set(ACTIVATIONS)


def test_format_seconds_hand_checked():
    from softseg.events import format_seconds

    assert [format_seconds(x) for x in (None, float("nan"), 0.4, 59.6, 187, 7500, -3)] == [
        "?", "?", "0s", "1m00s", "3m07s", "2h05m", "0s"]
