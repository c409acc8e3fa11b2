"""The "Train" dock widget: train a SoftSeg candidate from open layers or a dataset folder.

A thin view (DESIGN.md decision 3) over the engine's configuration
(:class:`softseg.config.TrainConfig`): a **preset** (``softseg.config.PRESETS``: ``quick`` on a
CPU, ``paper`` where a CUDA GPU is found, one click apart) sets every value, which can then be
changed under *Settings*. *Train* writes the chosen layers as a dataset folder beside the model
file (``m.training-data/``, so the model card names a folder that exists) and the configuration
as ``m.train-config.json``, and runs ``softseg train DATASET --config FILE --out m.safetensors
--json-progress`` in a child process supervised by a napari worker
(:mod:`napari_softseg._supervisor`). The dock shows what the run is waiting for, then its
progress (bar, ETA, napari's activity dock), live curves in napari's theme and the best
validation metric; a suspiciously perfect validation Dice is flagged. Cancel asks the child to
stop and save a checkpoint (*Resume* continues it) and kills it after a timeout; closing napari
while a run goes asks first; closing the dock stops the child.

Opening the dock imports neither torch nor matplotlib on napari's main thread: the devices are
found in a child process (:func:`~napari_softseg._supervisor.device_probe`), the curves are
built when a run starts or a history is opened, and a background interpreter
(:class:`~napari_softseg._supervisor.Prestarter`) imports torch and the trainer ahead of the
first click.

*One model per rater (rater ensemble)* (:mod:`._ensemble`) trains, with 2 or more raters, one
model per rater one after another (each an ordinary run of the dock on that rater's targets,
files ``m-rater-<id>.safetensors`` as :func:`softseg.protocol.ensemble.member_model` names
them); the status says "rater k of R"; Cancel ends the sequence and keeps the finished members;
*Predict on the training image* then predicts their mean (the Predict dock's ensemble,
:func:`softseg.uncertainty.predict_ensemble`).

*Training history* draws a finished (or stopped) run's ``<model>.history.csv``. *Fine-tune*
starts from an existing model file (``softseg train --init``: its candidate, network and
preprocessing) on the current targets, e.g. raters who corrected the model's pre-annotation;
when it ends, prediction layers of that model are predicted again with the new one
(:func:`napari_softseg._prediction.refresh_predictions`).

Layers are offered and tracked by :func:`napari_softseg._metadata.layer_uid` and roles
(:mod:`._inputs`): an image is never offered as a target.
"""

from napari_softseg.widgets.train._run import LAYER_SUBJECTS, TrainRun, training_data_folder
from napari_softseg.widgets.train._widget import SOURCE, TrainWidget, default_preset

__all__ = ["LAYER_SUBJECTS", "SOURCE", "TrainRun", "TrainWidget", "default_preset",
           "training_data_folder"]
