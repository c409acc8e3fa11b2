"""Test helpers of the Threshold and Compare docks: K-class predictions as napari shows them.

The trainer does not make K-class models yet, so the layers are built here exactly as
``CONTRACTS.md`` ("K-class predictions in napari") says a K-class prediction appears: one soft
Image layer per class ``<image> · <candidate> · <class>`` (role ``prediction``, the model card,
``CLASS_KEY = {"index", "name", "classes"}``), one Labels layer ``<image> · <candidate> · labels``
with the argmax (role ``prediction_labels``), all with one ``GROUP_KEY``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from napari_softseg._metadata import CLASS_KEY, GROUP_KEY, PREDICTION_KEY, set_role

CLASSES = ("grey matter", "white matter", "csf")
CLASS_HEX = {"grey matter": "#ff9d2e", "white matter": "#3d9df2", "csf": "#f5e642"}


def kclass_card(thresholds: Sequence[float], *, classes: Sequence[str] = CLASSES,
                candidate: str = "softseg") -> Any:
    """A K-class model card (background + K classes out)."""
    from softseg.card import ModelCard

    return ModelCard.model_validate_json(json.dumps({
        "classes": list(classes),
        "thresholds": list(thresholds),
        "channels": ["image"],
        "preprocessing": {"spacing": [None, 1.0, 1.0], "crop": [32, 32]},
        "candidate": {"name": candidate, "title": candidate, "soft_gt": True,
                      "activation": {"name": "multiclass_normalized_relu"},
                      "loss": "adaptive_wing"},
        "architecture": {"name": "UNet2D", "config": {"in_channels": 1,
                                                     "out_channels": len(classes) + 1,
                                                     "depth": 2, "width": 4}},
    }))


def kclass_arrays(shape=(10, 36, 40), *, blur=1.0, seed=0, shift=0.0):
    """(probabilities (K+1, *shape) float32 summing to 1, labels (*shape) 0..K): three nested
    classes (csf outside, grey matter, white matter inside) with soft borders."""
    z, y, x = np.indices(shape, dtype=np.float64)
    c = [(s - 1) / 2 for s in shape]
    r = np.sqrt(((z - c[0]) / (shape[0] / 2.2)) ** 2 + ((y - c[1]) / (shape[1] / 2.6)) ** 2
                + ((x - c[2]) / (shape[2] / 2.6)) ** 2) + shift
    labels = np.zeros(shape, np.uint8)
    labels[r < 1.0] = 3  # csf
    labels[r < 0.75] = 1  # grey matter
    labels[r < 0.45] = 2  # white matter
    onehot = np.stack([(labels == k).astype(np.float64) for k in range(4)])
    soft = np.stack([ndimage.gaussian_filter(o, blur) for o in onehot])
    noise = np.random.default_rng(seed).random(soft.shape) * 0.05
    soft = soft + noise
    soft /= soft.sum(axis=0, keepdims=True)
    return soft.astype(np.float32), labels


def add_kclass_prediction(viewer, probabilities: np.ndarray, *, candidate: str = "softseg",
                          thresholds: Sequence[float] | None = (0.45, 0.4, 0.35),
                          classes: Sequence[str] = CLASSES, image: str = "image",
                          scale=(2.0, 1.0, 1.0), labels: bool = True) -> list[Any]:
    """Add a K-class prediction (per-class soft layers + argmax layer) as the contract says.

    ``probabilities``: (K+1, *spatial) with the background first. ``thresholds`` None: the
    layers carry no model card (a soft map that is not a model's prediction)."""
    from napari.utils.colormaps import Colormap

    from napari_softseg._prediction import prediction_metadata
    from softseg.metrics import class_argmax

    group = str(uuid.uuid4())
    card_meta = ({} if thresholds is None else
                 {PREDICTION_KEY: prediction_metadata(kclass_card(thresholds, classes=classes,
                                                                  candidate=candidate),
                                                      model=f"{candidate}.safetensors",
                                                      image=image)})
    added = []
    for k, name in enumerate(classes, start=1):
        meta = set_role(dict(card_meta), "prediction")
        meta[CLASS_KEY] = {"index": k, "name": name, "classes": list(classes)}
        meta[GROUP_KEY] = group
        hexa = CLASS_HEX.get(name, "#b07cff")
        rgb = [int(hexa[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        added.append(viewer.add_image(
            probabilities[k], name=f"{image} · {candidate} · {name}", scale=scale,
            colormap=Colormap([[*rgb, 0.0], [*rgb, 1.0]], name=f"test-{hexa}"),
            contrast_limits=(0.0, 1.0), metadata=meta, visible=k == 1))
    if labels:
        meta = set_role(dict(card_meta), "prediction_labels")
        meta[CLASS_KEY] = list(classes)
        meta[GROUP_KEY] = group
        argmax = class_argmax(probabilities)[0]
        colours = {0: "transparent", None: "transparent",
                   **{k: CLASS_HEX.get(n, "#b07cff") for k, n in enumerate(classes, start=1)}}
        added.append(viewer.add_labels(argmax, name=f"{image} · {candidate} · labels",
                                       scale=scale, colormap=colours, metadata=meta))
    return added
