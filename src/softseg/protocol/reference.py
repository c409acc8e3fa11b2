"""What the protocol compares against, and how it predicts a subject.

:data:`GROUND_TRUTHS` names the references of the overlap metrics (the training fusions of
:data:`softseg.fusion.METHODS`, plus the phantom's ``truth``); :func:`ground_truth` builds one
subject's reference; :func:`predict_subject` runs a model on a subject in display order;
:func:`parse_candidate` reads ``NAME[:FUSION]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.fusion.engine import METHODS as _FUSION_METHODS
from softseg.fusion.engine import training_fusions as _training_fusions
from softseg.io import load_volume

__all__ = ["GROUND_TRUTHS", "ground_truth", "parse_candidate", "predict_subject"]

#: What the overlap metrics compare against (a plain dict of descriptions).
#: The fusions come from the one registry (softseg.fusion.METHODS, their training target).
GROUND_TRUTHS = {
    **{k: _FUSION_METHODS[k].target for k in _training_fusions() if _FUSION_METHODS[k].fuses},
    "truth": "the subject's truth_soft.nii.gz (phantom datasets)",
}


def ground_truth(subject: Any, data: Any, method: str) -> np.ndarray:
    """The reference of one subject in display order, float32 in [0, 1].

    Parameters
    ----------
    subject : softseg.data.Subject
    data : softseg.data.SubjectData
    method : str
        A key of :data:`GROUND_TRUTHS`.

    Returns
    -------
    ndarray, shape (S, H, W), float32
        ``truth``: the subject's ``truth_soft.nii.gz``; otherwise the fusion's training target
        (:func:`softseg.fusion.training_target`; STAPLE: its consensus, probability >= 0.5).

    Raises
    ------
    InputError
        Unknown method, no ``truth_soft.nii.gz`` or one of another shape, no rater files.
    """
    from softseg.fusion import training_target

    if method not in GROUND_TRUTHS:
        raise InputError(f"unknown ground truth {method!r}; choose one of "
                         f"{', '.join(GROUND_TRUTHS)}")
    if method == "truth":
        folder = Path(subject.images[0]).parent
        path = next((folder / n for n in ("truth_soft.nii.gz", "truth_soft.nii")
                     if (folder / n).exists()), None)
        if path is None:
            raise InputError(
                f"subject {subject.name!r} has no truth_soft.nii.gz; use --ground-truth staple "
                "(or average/majority) to compare against the raters")
        vol = load_volume(path, label=True)
        image_shape = tuple(data.geometry.from_display(data.images[0]).shape)
        if tuple(vol.shape) != image_shape:
            raise InputError(
                f"subject {subject.name!r}: {path.name} has shape {tuple(vol.shape)} but the image "
                f"has shape {image_shape}; the reference must cover the image's voxels")
        return np.asarray(data.geometry.to_display(vol.array), dtype=np.float32)
    if data.raters.shape[0] == 0:
        raise InputError(f"subject {subject.name!r} has no rater files to build a reference from")
    # fusion.fuse's target, as training uses it (STAPLE: its consensus, probability >= 0.5)
    return training_target(data.raters, method)[0]


def predict_subject(loaded: Any, data: Any) -> np.ndarray:
    """A model's soft prediction of one subject, in display order.

    Parameters
    ----------
    loaded : softseg.modelfile.LoadedModel
    data : softseg.data.SubjectData

    Returns
    -------
    ndarray, float32 in [0, 1]
        ``(S, H, W)`` for a single-class model; ``(K+1, S, H, W)`` (background first) for a
        K-class model, as :func:`softseg.predict.predict_volume` returns it.
    """
    from softseg.predict import predict_volume

    # predict_volume works in file axis order; SubjectData is in display order
    images = data.geometry.from_display(data.images)
    pred = predict_volume(loaded, images, affine=data.geometry.affine)
    # to_display keeps a leading class axis in front
    return np.asarray(data.geometry.to_display(np.asarray(pred, dtype=np.float32)))


#: Former private name (tests and benchmarks import it).
_predict = predict_subject


def parse_candidate(spec: str) -> tuple[str, str | None]:
    """``"softseg"`` -> ("softseg", None); ``"softseg:staple"`` -> ("softseg", "staple").

    Raises
    ------
    InputError
        An empty name (``":staple"``).
    """
    name, _, fusion = spec.partition(":")
    if not name:
        raise InputError(f"bad candidate {spec!r}; write NAME or NAME:FUSION (e.g. softseg:staple)")
    return name, (fusion or None)
