"""The "Predict" dock widget: soft predictions of one or more model files on image layers.

A thin view over :mod:`napari_softseg._prediction` (shared with the Train dock's "Predict on the
training image"). It shows each chosen model's **card** — a one-line summary and, in the
*Model card* section, the full text that ``softseg info`` prints (:func:`softseg.card.render_card`)
— lets the user pick the image layers (one per model channel; only images are offered) and a
device (found in a child process: opening the dock imports no torch), and runs the models in a
worker with progress and cancel.

Results follow :mod:`napari_softseg._prediction`: ``"<image> · <candidate>"`` in the
candidate's colour, transparent where p is small; a K-class model gives one soft layer per class
plus an argmax Labels layer, grouped (CONTRACTS.md); predicting again updates the layers in place.

*Uncertainty* (issue 15 #3): ``none``, ``MC dropout`` or ``test-time augmentation`` with N
passes runs :func:`softseg.uncertainty.predict_with_uncertainty` (what ``softseg predict
--mc-dropout / --tta`` runs, seed 0, so the dock and the command line show the same numbers): the
prediction layers show the mean of the passes, plus ``"<image> · <candidate> · entropy"``
(predictive entropy in nats, over the K + 1 classes of a K-class model) and the variance layer(s),
hidden, role ``"uncertainty"`` (Threshold and Compare never offer them). MC dropout is greyed out,
with the reason as its tooltip, when a chosen model's card records dropout 0 (no dropout layers);
a run asked for anyway is refused by the engine with one line. ``ensemble (mean of the models)``
(offered with 2 or more model files) makes the chosen models one ensemble
(:func:`softseg.uncertainty.predict_ensemble`, what ``softseg predict -m A -m B`` runs): one
prediction ``"<image> · <candidate>:ensemble"`` showing the members' mean (its threshold: the mean
of theirs), with the same entropy and variance (between the models) layers; members with other
classes or channels are refused in one line naming the two files.

When the Train dock fine-tunes a model whose prediction is shown, the prediction is refreshed
with the new model and this dock switches its model list to it
(:data:`napari_softseg._prediction.prediction_events`).
"""

from napari_softseg._prediction import (
    check_channels,
    describe_model,
    prediction_colormap,
    start_prediction,
)
from napari_softseg._metadata import PREDICTION_KEY
from napari_softseg.widgets.predict._widget import SOURCE, PredictWidget

__all__ = [
    "PREDICTION_KEY",
    "SOURCE",
    "PredictWidget",
    "check_channels",
    "describe_model",
    "prediction_colormap",
    "start_prediction",
]
