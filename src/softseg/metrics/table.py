"""The one metric table: :data:`METRICS` (key, title, unit, better, format) and :func:`evaluate`.

``softseg evaluate``, ``softseg compare`` (CSV, HTML, JSON, console), the Compare and Threshold
widgets and the Python API all compute their numbers here and name them with the keys of
:data:`METRICS`; every table, CSV column and widget cell is formatted by :func:`format_value`.

Conventions of the table (the papers' evaluation)
-------------------------------------------------
* The prediction is binarised at ``threshold`` (``p >= t``, in the map's own precision) for the
  binary metrics: Dice, precision, recall, specificity, RVD/AVD, Hausdorff distance, lesion
  detection, binarised volume.
* The reference is binarised at 0.5 for those metrics and for calibration (the label-fusion
  paper compares binarised predictions with the STAPLE ground truth and computes ECE against
  the binarised ground truth). A binary reference is unchanged by this.
* The soft metrics use the maps as they are: soft Dice and soft RVD (soft prediction against
  the soft reference), MSE, calibration (ECE from the raw prediction), subject entropy.
* The Brier score and the entropy comparison use the **rater average** when it is given
  (label-fusion paper, eqs. 1-2), otherwise the reference as given; ``rater_entropy`` and
  ``entropy_error`` are NaN without a rater average.
* Volumes are in mL (``softseg.metrics.volume_ml``), distances in mm; the voxel size is the
  ``spacing`` (mm per axis) that the caller takes from the image geometry.

Empty masks follow the package-wide policy (a 0/0 ratio takes the best value, x/0 its limit);
a subject where prediction, reference and rater average are all zero (a healthy subject and a
SoftSeg model that outputs exact zeros) gets the best value of every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.metrics._common import (
    as_unit,
    binarize_raw,
    box_size,
    check_connectivity,
    check_min_overlap,
    check_n_bins,
    check_percentile,
    check_threshold,
    ratio,
    same_shape,
    support_box,
    total,
    union_box,
    voxel_spacing,
)
from softseg.metrics.calibration import (
    ReliabilityDiagram,
    class_argmax,
    class_labels,
    confidence_correct,
    reliability,
)
from softseg.metrics.distance import hausdorff
from softseg.metrics.lesions import lesions
from softseg.metrics.overlap import dice_from_sums, sq_sum, sums
from softseg.metrics.thresholds import volume_ml
from softseg.metrics.uncertainty import ErrorDetection, entropy_and_errors, entropy_sum

__all__ = [
    "CLASS_SUM_TOLERANCE",
    "METRICS",
    "ClassEvaluation",
    "Evaluation",
    "MetricSpec",
    "Reference",
    "evaluate",
    "evaluate_classes",
    "evaluation",
    "format_value",
    "prepare_reference",
]

#: Per-voxel class probabilities may sum to at most 1 + this (contract of docs/training.md).
CLASS_SUM_TOLERANCE = 1e-5


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is named, shown and judged.

    Attributes
    ----------
    key : str
        The one name of the metric in every dict, CSV column and JSON file.
    title : str
        Column header (the papers' names).
    unit : str
        Unit of the displayed value (``"%"``, ``"mL"``, ``"mm"``, ``"nats"``, ...).
    better : {"higher", "lower", "zero", ""}
        What a better value is: larger, smaller, closer to 0, or not a score.
    fmt : str
        Python format spec of the displayed (scaled) value, e.g. ``".1f"``; ``"d"`` for counts.
    scale : float
        Display factor (100 for percentages); stored values are never scaled.
    group : str
        Family: ``setting``, ``overlap``, ``volume``, ``distance``, ``lesions``, ``soft``,
        ``calibration``, ``uncertainty``, ``multiclass``.
    level : int
        1 = headline (console comparison tables), 2 = comparison tables (HTML report, Compare
        widget), 3 = detail (``softseg evaluate``, CSV and JSON only).
    description : str
        One line for docs and tooltips.
    """

    key: str
    title: str
    unit: str = ""
    better: str = ""
    fmt: str = ".2f"
    scale: float = 1.0
    group: str = ""
    level: int = 2
    description: str = ""

    @property
    def header(self) -> str:
        """``"Title [unit]"`` (or the title alone)."""
        return f"{self.title} [{self.unit}]" if self.unit else self.title

    @property
    def higher_is_better(self) -> bool | None:
        """True / False for scores to maximise / minimise; None otherwise (closer to 0 is
        better, or not a score)."""
        return {"higher": True, "lower": False}.get(self.better)

    def format(self, value: Any) -> str:
        """Text of one cell: scaled, rounded; ``n/a`` for None/NaN, ``inf``/``-inf`` as such."""
        if value is None:
            return "n/a"
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if self.fmt.endswith("d"):
            return format(int(round(v * self.scale)), self.fmt)
        return format(v * self.scale, self.fmt)


def _spec(key: str, title: str, unit: str, better: str, fmt: str, scale: float, group: str,
          level: int, description: str) -> MetricSpec:
    return MetricSpec(key, title, unit, better, fmt, scale, group, level, description)


_PCT = 100.0
#: Every metric of the product in display order (a plain dict, STYLE.md 6).
METRICS: dict[str, MetricSpec] = {s.key: s for s in (
    _spec("threshold", "Threshold", "", "", ".2f", 1.0, "setting", 1,
          "binarisation threshold of the prediction (p >= t); n/a for argmax"),
    _spec("dice", "Dice", "%", "higher", ".1f", _PCT, "overlap", 1,
          "2|P∩G| / (|P| + |G|), binarised prediction vs reference >= 0.5"),
    _spec("precision", "Precision", "%", "higher", ".1f", _PCT, "overlap", 1,
          "|P∩G| / |P|"),
    _spec("recall", "Recall", "%", "higher", ".1f", _PCT, "overlap", 1,
          "|P∩G| / |G| (sensitivity)"),
    _spec("specificity", "Specificity", "%", "higher", ".3f", _PCT, "overlap", 3,
          "true negatives / reference background"),
    _spec("rvd", "RVD", "%", "zero", ".1f", _PCT, "volume", 1,
          "relative volume difference (V_ref - V_pred) / V_ref, binarised "
          "(< 0: over-segmentation)"),
    _spec("avd", "AVD", "%", "lower", ".1f", _PCT, "volume", 1,
          "absolute volume difference |RVD|"),
    _spec("hausdorff_mm", "Hausdorff", "mm", "lower", ".2f", 1.0, "distance", 2,
          "percentile (default 95th) symmetric surface distance"),
    _spec("ltpr", "LTPR", "%", "higher", ".1f", _PCT, "lesions", 1,
          "lesion true-positive rate"),
    _spec("lfdr", "LFDR", "%", "lower", ".1f", _PCT, "lesions", 1,
          "lesion false-detection rate"),
    _spec("n_true_lesions", "Lesions (reference)", "", "", "d", 1.0, "lesions", 3,
          "connected components of the binarised reference"),
    _spec("n_predicted_lesions", "Lesions (predicted)", "", "", "d", 1.0, "lesions", 3,
          "connected components of the binarised prediction"),
    _spec("n_detected_lesions", "Lesions detected", "", "", "d", 1.0, "lesions", 3,
          "reference lesions with at least min_overlap predicted voxels"),
    _spec("n_false_lesions", "False lesions", "", "", "d", 1.0, "lesions", 3,
          "predicted components with fewer than min_overlap reference voxels"),
    _spec("soft_dice", "Soft Dice", "%", "higher", ".1f", _PCT, "soft", 2,
          "2 Σpg / (Σp + Σg), soft prediction vs soft reference"),
    _spec("soft_rvd", "Soft RVD", "%", "zero", ".1f", _PCT, "soft", 2,
          "(Σg - Σp) / Σg, soft volumes"),
    _spec("mse", "MSE", "%", "lower", ".3f", _PCT, "soft", 1,
          "mean over all voxels of (p - g)², soft prediction vs soft reference"),
    _spec("ece", "ECE", "%", "lower", ".2f", _PCT, "calibration", 1,
          "expected calibration error, 10 bins, vs reference >= 0.5 (label-fusion paper)"),
    _spec("brier", "Brier", "×1e-4", "lower", ".2f", 1e4, "calibration", 1,
          "mean (p - rater average)² (or the reference without raters)"),
    _spec("entropy", "Entropy", "nats", "", ".1f", 1.0, "uncertainty", 2,
          "subject entropy of the prediction, Σ binary entropy"),
    _spec("rater_entropy", "Rater entropy", "nats", "", ".1f", 1.0, "uncertainty", 2,
          "subject entropy of the rater average"),
    _spec("entropy_error", "|ΔEntropy|", "nats", "lower", ".1f", 1.0, "uncertainty", 2,
          "|entropy - rater entropy| (its mean over subjects is the paper's MAE)"),
    _spec("uncertainty_auroc", "Uncertainty AUROC", "%", "higher", ".1f", _PCT, "uncertainty", 2,
          "AUROC of the per-voxel entropy as a detector of misclassified voxels (0.5 = chance)"),
    _spec("soft_volume_ml", "Soft volume", "mL", "", ".3f", 1.0, "volume", 2,
          "Σp × voxel volume"),
    _spec("binary_volume_ml", "Binary volume", "mL", "", ".3f", 1.0, "volume", 2,
          "|p >= t| × voxel volume"),
    _spec("reference_volume_ml", "Reference volume", "mL", "", ".3f", 1.0, "volume", 2,
          "Σg × voxel volume (soft reference)"),
    _spec("accuracy", "Accuracy", "%", "higher", ".2f", _PCT, "multiclass", 2,
          "multi-class: fraction of voxels whose predicted class is the reference class"),
)}

#: Keys of :func:`evaluate`'s result (the multi-class summary keys are not among them).
TABLE_KEYS = tuple(k for k, s in METRICS.items() if s.group != "multiclass")


def format_value(key: str, value: Any) -> str:
    """The text of one table cell for metric ``key`` (see :meth:`MetricSpec.format`)."""
    spec = METRICS.get(key)
    if spec is None:
        spec = MetricSpec(key, key)
    return spec.format(value)


# ------------------------------------------------------------------------------ reference
@dataclass(frozen=True, eq=False)
class Reference:
    """A validated reference and what every candidate is compared with, computed once.

    Build it with :func:`prepare_reference`; :func:`evaluate` accepts it in place of an array
    (the Compare widget and ``softseg compare`` evaluate several candidates against one).

    Attributes
    ----------
    soft : ndarray, bool or float
        The reference as given (binary or soft, clipped onto [0, 1]).
    mask : ndarray of bool
        ``soft >= 0.5``: reference of the binary metrics and of calibration.
    rater_average : ndarray or None
        Reference of the Brier score and of the entropy comparison.
    rater_entropy : float
        Subject entropy of the rater average (nats); NaN without it.
    box : tuple of slice
        Where ``soft`` or the rater average is non-zero (:func:`support_box`).
    soft_total, mask_total : float
        ``sum soft`` and the number of ``mask`` voxels.
    name : str
        Used in error messages.
    """

    soft: np.ndarray
    mask: np.ndarray
    rater_average: np.ndarray | None
    rater_entropy: float
    box: tuple[slice, ...]
    soft_total: float
    mask_total: float
    name: str = "reference"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.soft.shape)


def prepare_reference(
    reference: Any, *, rater_average: Any | None = None, name: str = "reference"
) -> Reference:
    """Check a reference (and the rater average) once for one or several candidates.

    Parameters
    ----------
    reference : ndarray (*spatial), binary or soft, values in [0, 1]
    rater_average : ndarray (*spatial), values in [0, 1], optional
        The mean of the raters' soft maps (``softseg.fusion.average``).
    name : str
        What the reference is, for messages (a file or layer name).

    Returns
    -------
    Reference
    """
    if isinstance(reference, Reference):
        raise InputError("reference is already prepared; pass it to evaluate() directly")
    soft = as_unit(reference, name)
    ra = None
    if rater_average is not None:
        ra_arr = np.asarray(rater_average)
        same_shape(ra_arr, soft, ("rater average", name))
        ra = as_unit(ra_arr, "rater average")
    mask = binarize_raw(soft, 0.5)
    box = support_box(soft, ra)
    h = math.nan
    if ra is not None:
        h = entropy_sum(np.ascontiguousarray(ra[box])) if box_size(box) else 0.0
    return Reference(soft=soft, mask=mask, rater_average=ra, rater_entropy=h, box=box,
                     soft_total=total(soft), mask_total=total(mask), name=name)


# ----------------------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False)
class Evaluation:
    """The metric table of one prediction and what its plots need.

    Attributes
    ----------
    values : dict of str -> float
        The keys of :data:`METRICS` (``accuracy`` excepted), in display order.
    reliability : ReliabilityDiagram
        Of the whole volume (its ECE is ``values["ece"]``).
    box : tuple of slice
        The crop where prediction, reference or rater average is non-zero (one voxel when all
        three are zero): every voxel outside it is zero in all three.
    """

    values: dict[str, float]
    reliability: ReliabilityDiagram
    box: tuple[slice, ...]
    errors: ErrorDetection | None = None  # entropy as a detector of misclassified voxels


def _crop(a: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    return np.ascontiguousarray(a[box])  # one copy, read many times in C order


def evaluation(
    prediction: Any,
    reference: Any,
    *,
    threshold: float | None,
    spacing: Sequence[float] | float | None = None,
    rater_average: Any | None = None,
    binarized: Any | None = None,
    min_overlap: int = 3,
    connectivity: int | None = None,
    n_bins: int = 10,
    percentile: float = 95.0,
    name: str = "prediction",
) -> Evaluation:
    """:func:`evaluate`, with the reliability diagram and the crop used (for plots)."""
    p = as_unit(prediction, name)
    if isinstance(reference, Reference):
        if rater_average is not None:
            raise InputError(
                "give the rater average to prepare_reference(), not with a prepared reference"
            )
        ref = reference
    else:
        ref = prepare_reference(reference, rater_average=rater_average)
    same_shape(p, ref.soft, (name, ref.name))
    if binarized is None:
        t = check_threshold(threshold)
        bm = None
    else:
        t = math.nan if threshold is None else check_threshold(threshold)
        bm = np.asarray(binarized)
        same_shape(bm, p, ("binarized", name))
        if bm.dtype != np.bool_:
            raise InputError(f"binarized must be a bool mask; got dtype {bm.dtype}")
    sp = voxel_spacing(spacing, p.ndim)
    k = check_n_bins(n_bins)
    q = check_percentile(percentile)
    overlap = check_min_overlap(min_overlap)
    rank = check_connectivity(connectivity, p.ndim)

    n = p.size
    box = union_box(support_box(p, bm), ref.box)
    if box_size(box) == 0:  # all three are zero: one background voxel stands for the rest
        box = tuple(slice(0, 1) for _ in p.shape)
    n_out = n - box_size(box)
    pr, gs, gm = _crop(p, box), _crop(ref.soft, box), _crop(ref.mask, box)
    ra = gs if ref.rater_average is None else _crop(ref.rater_average, box)
    pm = binarize_raw(pr, t) if bm is None else _crop(bm, box)

    # binary metrics: exact counts
    n_p, n_g = float(np.count_nonzero(pm)), ref.mask_total
    tp = float(np.count_nonzero(pm & gm))
    rvd = ratio(n_g - n_p, n_g, best=0.0)
    det = lesions(pm, gm, overlap, rank)
    # soft metrics
    s_p, _, tp_soft = sums(pr, gs)
    s_g = ref.soft_total
    diagram = reliability(None, None, k, prob=pr, truth_mask=gm, n_sure_right=n_out)
    # per-voxel entropy: its sum, and how well it flags the misclassified voxels (issue 15 #3)
    h_pred, errors = entropy_and_errors(pr, pm != gm, n_correct_at_zero=n_out)
    h_rater = ref.rater_entropy
    values: dict[str, float] = {
        "threshold": t,
        "dice": dice_from_sums(n_p, n_g, tp),
        "precision": ratio(tp, n_p, best=1.0),
        "recall": ratio(tp, n_g, best=1.0),
        "specificity": ratio(n - n_p - n_g + tp, n - n_g, best=1.0),
        "rvd": rvd,
        "avd": abs(rvd),
        "hausdorff_mm": hausdorff(pm, gm, sp, q),
        "ltpr": det.ltpr,
        "lfdr": det.lfdr,
        "n_true_lesions": det.n_true,
        "n_predicted_lesions": det.n_predicted,
        "n_detected_lesions": det.n_detected,
        "n_false_lesions": det.n_false,
        "soft_dice": dice_from_sums(s_p, s_g, tp_soft),
        "soft_rvd": ratio(s_g - s_p, s_g, best=0.0),
        "mse": sq_sum(pr, gs) / n,
        "ece": diagram.ece,
        "brier": sq_sum(pr, ra) / n,
        "entropy": h_pred,
        "rater_entropy": h_rater,
        "entropy_error": abs(h_pred - h_rater) if math.isfinite(h_rater) else math.nan,
        "uncertainty_auroc": errors.auroc,
        "soft_volume_ml": volume_ml(s_p, sp),
        "binary_volume_ml": volume_ml(n_p, sp),
        "reference_volume_ml": volume_ml(s_g, sp),
    }
    return Evaluation(values=values, reliability=diagram, box=box, errors=errors)


def evaluate(
    prediction: Any,
    reference: Any,
    *,
    threshold: float,
    spacing: Sequence[float] | float | None = None,
    rater_average: Any | None = None,
    min_overlap: int = 3,
    connectivity: int | None = None,
    n_bins: int = 10,
    percentile: float = 95.0,
    name: str = "prediction",
) -> dict[str, float]:
    """The papers' full metric table for one soft prediction against one reference.

    Parameters
    ----------
    prediction : ndarray (*spatial), values in [0, 1]
        Soft prediction (a binary mask works too). Values within rounding of [0, 1]
        (:data:`softseg.checks.PROBABILITY_TOLERANCE`) are accepted and clipped.
    reference : ndarray (*spatial), binary or soft in [0, 1], or a :class:`Reference`
    threshold : float in (0, 1]
        The prediction is binarised as ``p >= threshold`` for the binary metrics (a model's
        optimal threshold, :func:`softseg.metrics.optimal_threshold`, or 0.5).
    spacing : sequence of float or float, optional
        Voxel size in mm per axis (take it from the affine); 1 mm without it.
    rater_average : ndarray (*spatial), values in [0, 1], optional
        Mean of the raters (``softseg.fusion.average``): reference of the Brier score and the
        entropy comparison. Not with a prepared :class:`Reference` (give it there).
    min_overlap : int >= 1
        Lesion detection: voxels a true lesion needs to count as detected.
    connectivity : int, optional
        Lesion components: ``scipy.ndimage`` connectivity rank (default 2: 18-connected in 3D).
    n_bins : int >= 1
        Reliability-diagram / ECE bins (the paper: 10).
    percentile : float in [0, 100]
        Hausdorff percentile (95; 100 for the classical Hausdorff distance).
    name : str
        What the prediction is, for messages.

    Returns
    -------
    dict of str -> float
        The keys of :data:`METRICS` in display order (see the module notes for what each is
        computed against): ``threshold, dice, precision, recall, specificity, rvd, avd,
        hausdorff_mm, ltpr, lfdr, n_true_lesions, n_predicted_lesions, n_detected_lesions,
        n_false_lesions, soft_dice, soft_rvd, mse, ece, brier, entropy, rater_entropy,
        entropy_error, soft_volume_ml, binary_volume_ml, reference_volume_ml``. Non-finite
        values (the empty-mask limits, NaN without raters) are returned as they are.

    Raises
    ------
    InputError
        Shapes that differ, values outside [0, 1] beyond rounding (the message gives the true
        extremes), NaN/Inf, a bad threshold, spacing or option.
    """
    return evaluation(
        prediction, reference, threshold=threshold, spacing=spacing,
        rater_average=rater_average, min_overlap=min_overlap, connectivity=connectivity,
        n_bins=n_bins, percentile=percentile, name=name,
    ).values


# ------------------------------------------------------------------------------ classes
@dataclass(frozen=True, eq=False)
class ClassEvaluation:
    """Per-class metric tables of a K-class prediction and the multi-class calibration.

    Attributes
    ----------
    classes : tuple of str
        The K foreground class names (index 1..K; 0 is the background).
    per_class : dict of class -> dict of str -> float
        :func:`evaluate`'s table of each class (prediction: the class's probability map;
        reference: the class's voxels; binarised by argmax or at the class's threshold).
    overall : dict of str -> float
        ``ece``: multi-class ECE of the label-fusion paper (confidence = the largest class
        probability, correct = predicted class == reference class, background included);
        ``accuracy``: fraction of voxels whose argmax class is the reference class.
    reliability : ReliabilityDiagram
        The multi-class reliability diagram (its ECE is ``overall["ece"]``).
    class_reliability : dict of class -> ReliabilityDiagram
        Each class's binary (one-vs-rest) reliability diagram (ECE per class).
    thresholds : dict of class -> float
        The binarisation threshold of each class; NaN for argmax.
    boxes : dict of class -> tuple of slice
        The crop of each class's evaluation (see :class:`Evaluation`).
    """

    classes: tuple[str, ...]
    per_class: dict[str, dict[str, float]]
    overall: dict[str, float]
    reliability: ReliabilityDiagram
    class_reliability: dict[str, ReliabilityDiagram]
    thresholds: dict[str, float]
    boxes: dict[str, tuple[slice, ...]]


def _class_names(classes: Any) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise InputError(f"classes must be a list of class names; got {classes!r}")
    names = tuple(str(c) for c in classes)
    if not names:
        raise InputError("classes is empty; give the names of the K foreground classes")
    if any(not c.strip() for c in names):
        raise InputError(f"class names must not be empty; got {list(names)}")
    if len(set(names)) != len(names):
        raise InputError(f"a class name is listed twice: {list(names)}")
    return names


def _class_maps(x: Any, k: int, spatial: tuple[int, ...] | None, name: str) -> np.ndarray:
    """(K+1, *spatial) class maps from (K+1, ...) or (K, ...) (background = 1 - sum)."""
    arr = np.asarray(x)
    if arr.ndim < 2 or arr.shape[0] not in (k, k + 1) or (
        spatial is not None and arr.shape[1:] != spatial
    ):
        want = "(K+1, *spatial) or (K, *spatial)" if spatial is None else (
            f"({k + 1}, {', '.join(map(str, spatial))}) or ({k}, ...)")
        raise InputError(
            f"{name} has shape {arr.shape}; expected {want} for {k} classes (class axis first, "
            "background at index 0 or left out)"
        )
    arr = as_unit(arr, name)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    fg = arr if arr.shape[0] == k else arr[1:]
    s = fg.sum(axis=0, dtype=np.float64) if arr.shape[0] == k else arr.sum(axis=0, dtype=np.float64)
    worst = float(s.max())
    if worst > 1.0 + CLASS_SUM_TOLERANCE:
        where = np.unravel_index(int(np.argmax(s)), s.shape)
        raise InputError(
            f"{name}: class probabilities sum to {worst!r} at voxel "
            f"{tuple(int(i) for i in where)}, "
            f"more than 1 (tolerance {CLASS_SUM_TOLERANCE:g}); give per-class soft maps that "
            "sum (with the background) to 1"
        )
    if arr.shape[0] == k + 1:
        return arr
    background = np.clip(1.0 - s, 0.0, 1.0).astype(arr.dtype)
    return np.concatenate([background[None], arr])


def class_probabilities(probabilities: Any, *, classes: Sequence[str]) -> np.ndarray:
    """(K+1, *spatial) class probabilities, background first, from (K+1 | K, *spatial) maps
    (background ``1 - sum``), checked as :func:`evaluate_classes` checks them (InputError)."""
    return _class_maps(probabilities, len(_class_names(classes)), None, "probabilities")


def _class_thresholds(thresholds: Any, names: tuple[str, ...]) -> dict[str, float | None]:
    if thresholds is None:
        return {c: None for c in names}
    if isinstance(thresholds, Mapping):
        unknown = [c for c in thresholds if c not in names]
        missing = [c for c in names if c not in thresholds]
        if unknown or missing:
            raise InputError(
                f"thresholds must name every class ({', '.join(names)}); "
                f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        return {c: check_threshold(thresholds[c], f"threshold of {c!r}") for c in names}
    if np.isscalar(thresholds):
        t = check_threshold(thresholds)
        return {c: t for c in names}
    values = list(thresholds)
    if len(values) != len(names):
        raise InputError(
            f"got {len(values)} thresholds for {len(names)} classes ({', '.join(names)}); give "
            "one per class, one for all, or none (argmax)"
        )
    return {c: check_threshold(v, f"threshold of {c!r}") for c, v in zip(names, values)}


def evaluate_classes(
    probabilities: Any,
    reference: Any,
    *,
    classes: Sequence[str],
    thresholds: float | Sequence[float] | Mapping[str, float] | None = None,
    spacing: Sequence[float] | float | None = None,
    rater_average: Any | None = None,
    min_overlap: int = 3,
    connectivity: int | None = None,
    n_bins: int = 10,
    percentile: float = 95.0,
) -> ClassEvaluation:
    """Per-class tables and the multi-class ECE of a K-class soft prediction.

    Parameters
    ----------
    probabilities : ndarray (K+1, *spatial) or (K, *spatial), values in [0, 1]
        Class probabilities, class axis first, background at index 0; without the background
        it is ``1 - sum`` of the classes. They may sum to at most 1 (+1e-5) per voxel.
    reference : ndarray
        Integer labels ``(*spatial)`` in 0..K (0 = background), or soft class maps
        ``(K+1 | K, *spatial)`` (e.g. the per-class rater average; the reference class of a
        voxel is then its argmax).
    classes : sequence of str
        The K foreground class names, in index order 1..K.
    thresholds : None, float, sequence of K floats or mapping class -> float
        None (default): each voxel belongs to its argmax class (label-fusion paper, SCGM);
        otherwise class k is ``p_k >= t_k``.
    spacing, min_overlap, connectivity, n_bins, percentile
        As :func:`evaluate`.
    rater_average : ndarray (K+1 | K, *spatial), optional
        Per-class rater average: reference of each class's Brier score and entropy.

    Returns
    -------
    ClassEvaluation

    Raises
    ------
    InputError
        Shapes that do not fit, class sums above 1, labels outside 0..K, bad thresholds.
    """
    names = _class_names(classes)
    k = len(names)
    probs = _class_maps(probabilities, k, None, "probabilities")
    spatial = probs.shape[1:]
    ref = np.asarray(reference)
    if ref.shape == spatial:
        labels = class_labels(ref, k + 1, "reference")
        ref_maps = None
    else:
        ref_maps = _class_maps(ref, k, spatial, "reference")
        labels = class_argmax(ref_maps)[0]
    ra = None if rater_average is None else _class_maps(rater_average, k, spatial, "rater average")
    per_t = _class_thresholds(thresholds, names)
    top = class_argmax(probs)  # (argmax, largest probability), shared by every use

    per_class, diagrams, boxes, used = {}, {}, {}, {}
    for i, cname in enumerate(names, start=1):
        t = per_t[cname]
        ev = evaluation(
            probs[i],
            labels == i if ref_maps is None else ref_maps[i],
            threshold=t,
            binarized=None if t is not None else top[0] == i,
            spacing=spacing,
            rater_average=None if ra is None else ra[i],
            min_overlap=min_overlap, connectivity=connectivity, n_bins=n_bins,
            percentile=percentile, name=f"probabilities of {cname!r}",
        )
        per_class[cname] = ev.values
        diagrams[cname] = ev.reliability
        boxes[cname] = ev.box
        used[cname] = math.nan if t is None else t
    conf, correct = confidence_correct(probs, labels, top)
    diagram = reliability(conf, correct, check_n_bins(n_bins))
    overall = {"ece": diagram.ece, "accuracy": float(np.count_nonzero(correct)) / correct.size}
    return ClassEvaluation(classes=names, per_class=per_class, overall=overall,
                           reliability=diagram, class_reliability=diagrams, thresholds=used,
                           boxes=boxes)
