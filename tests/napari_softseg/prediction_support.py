"""Prediction-layer metadata as the Predict widget writes it (a model card), for widget tests."""

from __future__ import annotations

import json
from typing import Any

from napari_softseg._metadata import PREDICTION_KEY


def prediction_metadata(threshold: float, *, candidate: str = "softseg") -> dict[str, Any]:
    """``{PREDICTION_KEY: ...}`` of a single-class model with this optimal threshold."""
    from napari_softseg._prediction import prediction_metadata as written
    from softseg.card import ModelCard

    card = ModelCard.model_validate_json(json.dumps({
        "thresholds": [threshold],
        "channels": ["image"],
        "preprocessing": {"spacing": [None, 1.0, 1.0], "crop": [32, 32]},
        "candidate": {"name": candidate, "title": candidate, "soft_gt": True,
                      "activation": {"name": "normalized_relu"}, "loss": "adaptive_wing"},
        "architecture": {"name": "UNet2D", "config": {"in_channels": 1, "out_channels": 1,
                                                     "depth": 2, "width": 4}},
    }))
    return {PREDICTION_KEY: written(card, model=f"{candidate}.safetensors", image="image")}
