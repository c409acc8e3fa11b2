"""Former home of the trainer; kept importable while callers move (issue 12).

The trainer lives in :mod:`softseg.training`, the configuration in :mod:`softseg.config`, device
handling in :mod:`softseg.device`. Import from there; this module only re-exports their names.
"""

from softseg.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from softseg.device import resolve_device
from softseg.training import (
    CHECKPOINT_VERSION,
    THRESHOLDS,
    PreparedData,
    Trainer,
    checkpoint_path,
    fit,
    prepare_data,
    train,
)

__all__ = [
    "AugmentConfig",
    "CHECKPOINT_VERSION",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PreparedData",
    "THRESHOLDS",
    "TrainConfig",
    "Trainer",
    "checkpoint_path",
    "fit",
    "prepare_data",
    "resolve_device",
    "train",
]
