"""Training: the trainer skeleton and its parts (checkpoints, early stopping, callbacks, lock).

========================================  ===================================================
:mod:`softseg.training.trainer`           :class:`Trainer` (hooks), :func:`train`, :func:`fit`,
                                          :func:`prepare_data`
:mod:`softseg.training.checkpoint`        resumable checkpoints (file format)
:mod:`softseg.training.early_stopping`    :class:`EarlyStopping`
:mod:`softseg.training.callbacks`         ``<model>.history.csv``, TensorBoard scalars
:mod:`softseg.training.lock`              one run per output (filelock)
========================================  ===================================================

The configuration is :class:`softseg.config.TrainConfig`; devices come from
:mod:`softseg.device`.
"""

from softseg.training.callbacks import (
    HISTORY_COLUMNS,
    Callback,
    HistoryCSV,
    TensorBoardScalars,
    history_path,
    write_history_csv,
)
from softseg.training.checkpoint import CHECKPOINT_VERSION, checkpoint_path
from softseg.training.early_stopping import EarlyStopping
from softseg.training.lock import lock_path, output_lock
from softseg.training.trainer import THRESHOLDS, CancelFlag, PreparedData, Trainer, fit, prepare_data, train

__all__ = [
    "CHECKPOINT_VERSION",
    "HISTORY_COLUMNS",
    "THRESHOLDS",
    "Callback",
    "CancelFlag",
    "EarlyStopping",
    "HistoryCSV",
    "PreparedData",
    "TensorBoardScalars",
    "Trainer",
    "checkpoint_path",
    "fit",
    "history_path",
    "lock_path",
    "output_lock",
    "prepare_data",
    "train",
    "write_history_csv",
]
