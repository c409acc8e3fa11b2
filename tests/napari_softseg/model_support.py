"""Model files with a random (untrained) network, for GUI tests that need a model's card and a
forward pass but no training: the layer layout of a prediction, refusals of a card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def untrained_model(path: str | Path, *, classes: Sequence[str] = ("foreground",),
                    thresholds: Sequence[float] | None = None,
                    channels: Sequence[str] = ("image",), seed: int = 0,
                    dropout: float = 0.3) -> Path:
    """Write a model file: UNet2D depth 2 width 4, softmax for K > 1 classes (K + 1 outputs,
    background first) else sigmoid, native spacing, crop 16; its card records no training
    settings; ``dropout`` 0 builds it without dropout layers. Returns the path."""
    import torch

    from softseg.card import (ActivationCard, ArchitectureCard, CandidateCard, ModelCard,
                              PreprocessingCard, UNetConfig)
    from softseg.modelfile import save_model
    from softseg.models import UNet2D

    torch.manual_seed(seed)
    k = len(classes)
    net = UNet2D(len(channels), 1 if k == 1 else k + 1, depth=2, width=4, dropout=dropout)
    card = ModelCard(
        classes=tuple(classes), thresholds=tuple(thresholds or (0.5,) * k),
        channels=tuple(channels),
        preprocessing=PreprocessingCard(spacing=(None, None, None), crop=(16, 16)),
        candidate=CandidateCard(name="conventional", soft_gt=False, loss="dice",
                                activation=ActivationCard(name="sigmoid" if k == 1 else "softmax")),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)
