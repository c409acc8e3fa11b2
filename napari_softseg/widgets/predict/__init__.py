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
