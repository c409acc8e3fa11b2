"""Evaluate trained model files on a dataset's test subjects (``softseg compare MODEL MODEL ...``).

:func:`evaluate_models` runs each model on the test subjects and builds a
:class:`softseg.compare.Comparison` (one sample per subject). Single-class models are compared
against :func:`softseg.protocol.ground_truth`; K-class models class by class
(:func:`softseg.compare.compare_class_predictions`) against the label map of
:func:`class_reference`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softseg import compare
from softseg.errors import InputError
from softseg.protocol.reference import GROUND_TRUTHS, ground_truth, predict_subject

__all__ = ["class_reference", "evaluate_models"]


def class_reference(
    subject: Any, data: Any, method: str, classes: Sequence[str], *, info: Any = None
) -> np.ndarray:
    """The K-class reference of one subject: an integer label map in display order.

    Parameters
    ----------
    subject : softseg.data.Subject
    data : softseg.data.SubjectData
        Its ``raters`` are integer label maps ``(R, S, H, W)`` (0 = background, 1..K) or class
        maps ``(R, K+1, S, H, W)``.
    method : str
        A key of :data:`GROUND_TRUTHS`: a fusion (:func:`softseg.fusion.training_target` with
        ``n_classes=K``: multi-label STAPLE / label vote / class average), or ``truth`` (the
        per-class partial-volume files ``truth_label-<key>.nii.gz``, or the files that
        ``dataset.json``'s ``"truth"`` names, as :mod:`softseg.anatomy` writes them).
    classes : sequence of str
        The K class names (index 1..K).
    info : softseg.data.DatasetInfo, optional
        To read ``dataset.json`` (class keys, truth file names).

    Returns
    -------
    ndarray, shape (S, H, W), uint8
        0 = background, k = class k: the most probable class of the fused (or true) class
        maps, the first one among ties (:func:`softseg.metrics.class_argmax`).

    Raises
    ------
    InputError
        Unknown method, a missing truth file or one of another shape, no rater files.
    """
    from softseg.fusion import training_target
    from softseg.metrics import class_argmax

    k = len(classes)
    if method not in GROUND_TRUTHS:
        raise InputError(f"unknown ground truth {method!r}; choose one of "
                         f"{', '.join(GROUND_TRUTHS)}")
    if method == "truth":
        maps = _class_truth(subject, data, classes, info)
        background = np.clip(1.0 - maps.sum(axis=0), 0.0, 1.0)[None]
        return class_argmax(np.concatenate([background, maps]))[0].astype(np.uint8)
    raters = np.asarray(data.raters)
    if raters.shape[0] == 0:
        raise InputError(f"subject {subject.name!r} has no rater files to build a reference from")
    class_maps = raters.ndim == data.images.ndim + 1  # (R, K+1, S, H, W)
    target = training_target(raters, method, n_classes=k, class_maps=class_maps)[0]
    return class_argmax(np.asarray(target, dtype=np.float32))[0].astype(np.uint8)


def _class_truth(subject: Any, data: Any, classes: Sequence[str], info: Any) -> np.ndarray:
    from softseg.dataset_json import class_key, read_dataset_json
    from softseg.io import load_volume

    folder = Path(subject.images[0]).parent
    meta = read_dataset_json(info.root if info is not None else folder.parent)
    named = meta.truth if meta is not None and isinstance(meta.truth, dict) else {}
    keys = (meta.class_keys if meta is not None else None) or tuple(class_key(c) for c in classes)
    image_shape = tuple(data.geometry.from_display(data.images[0]).shape)
    maps = []
    for name, key in zip(classes, keys):
        path = folder / named.get(name, f"truth_label-{key}.nii.gz")
        if not path.exists():
            raise InputError(
                f"subject {subject.name!r} has no {path.name} (the partial-volume truth of class "
                f"{name!r}); use --ground-truth staple (or average/majority) to compare against "
                "the raters")
        vol = load_volume(path, label=True)
        if tuple(vol.shape) != image_shape:
            raise InputError(
                f"subject {subject.name!r}: {path.name} has shape {tuple(vol.shape)} but the "
                f"image has shape {image_shape}; the reference must cover the image's voxels")
        maps.append(np.asarray(data.geometry.to_display(vol.array), dtype=np.float32))
    return np.stack(maps)


def evaluate_models(
    models: Sequence[str | os.PathLike],
    dataset: str | os.PathLike,
    *,
    subjects: Sequence[str] | None = None,
    ground_truth_method: str = "staple",
    thresholds: float | None = None,
    on_subject: Callable[[str, str], None] | None = None,
) -> tuple[compare.Comparison, dict[str, Any]]:
    """Evaluate model files on a dataset's test subjects.

    Parameters
    ----------
    models : sequence of path
        Two or more ``.safetensors`` model files, all single-class or all predicting the same
        K classes.
    dataset : path
        Dataset folder.
    subjects : sequence of str, optional
        Subjects to evaluate; default: the test subjects recorded in the models (those every
        model lists as test), else the subjects none of the models trained or validated on.
    ground_truth_method : str
        Key of :data:`GROUND_TRUTHS`.
    thresholds : float, optional
        One common threshold (for every class of K-class models); default: each model's
        optimal threshold(s) from its card.
    on_subject : callable(candidate, subject), optional
        Progress callback, called before each prediction.

    Returns
    -------
    comparison : Comparison
        One row per subject for each model; K-class models: the multi-class ``ece`` and
        ``accuracy`` per subject in ``rows`` and one :class:`~softseg.compare.Comparison` per
        class in ``per_class``.
    meta : dict
        Subjects, thresholds (K-class: one list per model), model files, ground truth, classes.

    Raises
    ------
    InputError
        Fewer than two models, models of different classes, unknown subjects, no test subject,
        any refusal of the reference or the metrics.
    """
    from softseg.data import scan_dataset
    from softseg.modelfile import load_model, read_card

    if len(models) < 2:
        raise InputError(f"comparing needs at least two models; got {len(models)}")
    metas = {str(m): read_card(m) for m in models}
    class_sets = {tuple(card.classes) for card in metas.values()}
    if len(class_sets) > 1:
        listed = "; ".join(f"{Path(m).name}: {', '.join(c.classes)}" for m, c in metas.items())
        raise InputError(f"the models predict different classes ({listed}); compare models of "
                         "one set of classes")
    classes = next(iter(class_sets))
    info = scan_dataset(dataset)
    if subjects is None:
        subjects = _default_subjects(metas, info.names)
    unknown = [s for s in subjects if s not in info.names]
    if unknown:
        raise InputError(f"no subject {', '.join(unknown)} in {dataset}; subjects: "
                         f"{', '.join(info.names)}")

    names = _candidate_names(models, metas)
    loaded_models = {str(m): load_model(m) for m in models}
    if len(classes) > 1:
        comparison, used = _evaluate_classes(loaded_models, names, info, subjects, classes,
                                             ground_truth_method, thresholds, on_subject)
    else:
        comparison, used = _evaluate_single(loaded_models, names, info, subjects,
                                            ground_truth_method, thresholds, on_subject)
    meta = {"dataset": str(Path(dataset).resolve()), "subjects": list(subjects),
            "models": {names[p]: p for p in names}, "thresholds": used,
            "ground_truth": ground_truth_method, "classes": list(classes)}
    return comparison, meta


def _evaluate_single(loaded_models, names, info, subjects, method, thresholds, on_subject):
    from softseg.data import load_subject

    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names.values()}
    curves: dict[str, list[compare.Curves]] = {n: [] for n in names.values()}
    used: dict[str, float] = {}
    for subject_name in subjects:
        subject = info.subject(subject_name)
        data = load_subject(subject)
        ref = ground_truth(subject, data, method)
        raters = data.raters if data.raters.shape[0] > 1 else None
        for path, loaded in loaded_models.items():
            cand = names[path]
            if on_subject is not None:
                on_subject(cand, subject_name)
            pred = predict_subject(loaded, data)
            t = float(thresholds) if thresholds is not None else float(loaded.threshold)
            used[cand] = t
            row, c = compare.evaluate_subject(pred, ref, threshold=t, raters=raters,
                                              spacing=data.spacing, name=cand, subject=subject_name)
            row["sample"] = subject_name
            rows[cand].append(row)
            curves[cand].append(c)
    comparison = compare.Comparison(
        rows=rows, curves={c: compare.pool_curves(v) for c, v in curves.items()},
        reference_name=GROUND_TRUTHS[method])
    return comparison, used


def _evaluate_classes(loaded_models, names, info, subjects, classes, method, thresholds,
                      on_subject):
    from softseg.data import load_subject

    cands = list(names.values())
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in cands}
    class_rows = {c: {n: [] for n in cands} for c in classes}
    class_curves: dict[str, dict[str, list[compare.Curves]]] = {c: {n: [] for n in cands}
                                                                for c in classes}
    used: dict[str, list[float]] = {}
    for subject_name in subjects:
        subject = info.subject(subject_name)
        data = load_subject(subject)
        ref = class_reference(subject, data, method, classes, info=info)
        preds, ts = {}, {}
        for path, loaded in loaded_models.items():
            cand = names[path]
            if on_subject is not None:
                on_subject(cand, subject_name)
            preds[cand] = predict_subject(loaded, data)
            ts[cand] = ([float(thresholds)] * len(classes) if thresholds is not None
                        else [float(t) for t in loaded.card.thresholds])
            used[cand] = ts[cand]
        one = compare.compare_class_predictions(
            preds, ref, classes=classes, thresholds=ts, spacing=data.spacing,
            reference_name=GROUND_TRUTHS[method], subject=subject_name)
        for cand in cands:
            rows[cand].append({**one.rows[cand][0], "sample": subject_name})
            for c in classes:
                sub = one.per_class[c]
                class_rows[c][cand].append({**sub.rows[cand][0], "sample": subject_name})
                class_curves[c][cand].append(sub.curves[cand])
    per_class = {
        c: compare.Comparison(
            rows=class_rows[c],
            curves={n: compare.pool_curves(v) for n, v in class_curves[c].items()},
            reference_name=f"{GROUND_TRUTHS[method]} ({c})")
        for c in classes}
    comparison = compare.Comparison(rows=rows, curves={}, reference_name=GROUND_TRUTHS[method],
                                    per_class=per_class)
    return comparison, used


def _default_subjects(metas: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    tests, seen = [], set()
    for meta in metas.values():
        tests.append(set(meta.split.test))  # meta: the model's card (softseg.card.ModelCard)
        seen |= set(meta.split.train) | set(meta.split.val)
    common = set.intersection(*tests) if tests else set()
    chosen = sorted(s for s in common if s in names)
    if not chosen:
        chosen = sorted(s for s in names if s not in seen)
    if not chosen:
        raise InputError(
            "the models were trained or validated on every subject of the dataset, so none is a "
            "test subject; pass --subjects to evaluate on chosen subjects anyway")
    return chosen


def _candidate_names(models, metas) -> dict[str, str]:
    base = {}
    for m in models:
        meta = metas[str(m)]
        cand, fusion = meta.candidate.name, meta.fusion
        base[str(m)] = f"{cand}:{fusion}" if fusion else str(cand)
    if len(set(base.values())) == len(base):
        # drop the fusion suffix when every model used the same fusion
        fusions = {b.partition(":")[2] for b in base.values()}
        if len(fusions) == 1:
            short = {k: v.partition(":")[0] for k, v in base.items()}
            if len(set(short.values())) == len(short):
                return short
        return base
    return {str(m): Path(m).name.removesuffix(".safetensors") for m in models}
