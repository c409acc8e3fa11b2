"""One training run of the Train dock: what it trains, where its data goes, the worker body.

A run from open layers writes the chosen layers (:class:`~._inputs.LayerSnapshot`) as a dataset
folder **beside the model file** (:func:`training_data_folder`: ``m.safetensors`` ->
``m.training-data/<image>/``), so the model card's ``dataset`` names a folder that still exists
after training: the run can be resumed, repeated on the command line and audited (issue 11 #11).
A run from a dataset folder trains on that folder.

The worker (:func:`run_training`, a generator run by a napari ``GeneratorWorker``) writes the
folder and the configuration file, starts ``softseg train --config FILE ... --json-progress``
(through a :class:`~napari_softseg._supervisor.Prestarter` interpreter when one waits) and yields
``("stage", name, seconds)`` markers and the child's events; it returns the
:class:`~napari_softseg._supervisor.Outcome`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_softseg._supervisor import Outcome, Prestarter, TrainingProcess, supervise, train_argv
from softseg.config import TrainConfig

__all__ = [
    "LAYER_SUBJECTS",
    "TrainRun",
    "run_training",
    "training_config_file",
    "training_data_folder",
]

#: Axial slabs written as subjects when training from one open volume (the trainer's
#: subject-wise split then keeps some for validation; see softseg.layers_dataset).
LAYER_SUBJECTS = 5
_SUFFIX = ".safetensors"


def _stem(model: Path) -> str:
    return model.name[: -len(_SUFFIX)] if model.name.endswith(_SUFFIX) else model.stem


def training_data_folder(model: str | os.PathLike) -> Path:
    """Where a run from open layers keeps its data: ``m.safetensors`` -> ``m.training-data``."""
    return Path(model).with_name(_stem(Path(model)) + ".training-data")


def training_config_file(model: str | os.PathLike) -> Path:
    """The run's settings beside its model: ``m.safetensors`` -> ``m.train-config.json`` (the
    file ``softseg train --config`` reads, so the run can be repeated on the command line)."""
    return Path(model).with_name(_stem(Path(model)) + ".train-config.json")


@dataclass(frozen=True)
class TrainRun:
    """One run the dock starts.

    Attributes
    ----------
    config : TrainConfig
        The engine's configuration (handed to the child as a JSON file).
    out : Path
        The model file to write (absolute).
    resume : bool
        Continue from this model file's checkpoint.
    overwrite : bool
        Replace the model file (the user confirmed).
    init : Path or None
        Fine-tune: the model file whose weights the run starts from.
    allow_preannotated : bool
        Train on pre-annotations nobody corrected (the user confirmed).
    layers : LayerSnapshot or None
        The open layers to train on; ``None`` for a dataset folder.
    folder : Path or None
        The dataset folder (runs from a folder).
    """

    config: TrainConfig
    out: Path
    resume: bool = False
    overwrite: bool = False
    init: Path | None = None
    allow_preannotated: bool = False
    layers: Any = None
    folder: Path | None = None

    @property
    def data_folder(self) -> Path:
        """Where the layers are written (runs from layers)."""
        return training_data_folder(self.out)


def _write_layers(run: TrainRun) -> Path:
    from softseg.layers_dataset import safe_name, write_layers_dataset

    lay = run.layers
    root = run.data_folder
    target = root / safe_name(lay.image_name)  # its name is shown as "trained on" in Predict
    if run.resume and target.is_dir() and (target / "dataset.json").is_file():
        return target  # continue on the data the checkpoint was trained on
    channels, classes = lay.channels, getattr(lay, "classes", None)  # K >= 2 classes, or None
    if run.init is not None:
        # fine-tuning: the image layers are the parent's channels and the targets its structure
        # (the dock checked their numbers), written under the parent's names as --init requires
        from softseg.modelfile import read_card

        parent = read_card(run.init)
        if len(parent.channels) == len(channels):
            channels = dict(zip(parent.channels, channels.values()))
        if len(parent.classes) == 1:  # K classes: the dock checked they are the parent's
            classes = parent.classes
    if root.exists():
        shutil.rmtree(root)  # the user confirmed replacing this model (and its data)
    try:
        return write_layers_dataset(
            target, channels, lay.targets, lay.geometry,
            n_subjects=min(LAYER_SUBJECTS, lay.geometry.display_shape[0]),
            sidecars=lay.sidecars, source=lay.source, classes=classes,
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # nothing half-written is left behind
        raise


def run_training(run: TrainRun, *, prestarter: Prestarter | None = None) -> Iterator[Any]:
    """Worker generator: write the data and configuration, start and supervise the child.

    Yields ``("stage", name, t)`` (``name`` = ``"data written"``, ``"started"``; ``t`` =
    :func:`time.perf_counter`), the :class:`TrainingProcess` once started, then every
    progress event; returns the :class:`Outcome`.
    """
    folder = _write_layers(run) if run.layers is not None else run.folder
    assert folder is not None
    yield ("stage", "data written", time.perf_counter())
    run.out.parent.mkdir(parents=True, exist_ok=True)
    config_file = run.config.to_json_file(training_config_file(run.out))
    argv = train_argv(folder, config=config_file, out=run.out, resume=run.resume,
                      overwrite=run.overwrite, init=run.init,
                      allow_preannotated=run.allow_preannotated)
    process = TrainingProcess(argv, cwd=run.out.parent, prestarter=prestarter)
    process.start()
    yield process
    yield ("stage", "started", time.perf_counter())
    outcome: Outcome = yield from supervise(process)
    return outcome
