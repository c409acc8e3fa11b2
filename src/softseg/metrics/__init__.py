"""Segmentation, lesion, calibration and uncertainty metrics (SoftSeg and label-fusion papers).

One package, one concept per module (as ``skimage.metrics``); every public name is importable
from ``softseg.metrics``:

================  ==========================================================================
module            what
================  ==========================================================================
``overlap``       Dice, precision, recall, specificity, MSE, volumes, RVD/AVD, pairwise Dice
``distance``      (percentile) Hausdorff distance
``lesions``       lesion detection (LTPR, LFDR)
``calibration``   reliability diagram, ECE (binary and multi-class), Brier score
``uncertainty``   predictive entropy, subject entropy, uncertainty-error AUROC
``thresholds``    binarisation, threshold sweeps, the one optimal-threshold search, live readouts
``table``         the one metric table: :data:`METRICS`, :func:`evaluate`, :func:`evaluate_classes`
================  ==========================================================================

Inputs
    ``(prediction, truth)`` arrays of one shape (any number of dimensions) with values in
    [0, 1]: binary masks or soft maps. Values within :data:`softseg.checks.PROBABILITY_TOLERANCE`
    of [0, 1] (a uint8 map decoded with ``scl_slope = 1/255`` gives 1.00000006) are valid and
    clipped; beyond it the error prints the true extremes at full precision. Volumes and
    distances take a voxel ``spacing`` in mm (one value per axis; default 1 mm).

Soft overlap
    With soft inputs the overlap counts are soft: ``TP = sum p*g``, ``FP = sum p*(1-g)``,
    ``FN = sum (1-p)*g``, ``TN = sum (1-p)*(1-g)``. On binary masks these are the usual counts.

Binarisation
    ``value >= threshold`` (the papers' toolbox, ivadomed), in the map's own precision
    (:mod:`softseg.metrics.thresholds`).

Empty masks (one policy for every metric)
    An undefined ratio 0/0 takes the metric's best value, because nothing could go wrong;
    a ratio x/0 with x != 0 takes its limit (+-inf):

    ======================  ===========  =================  ======================
    metric                  both empty   truth empty only   prediction empty only
    ======================  ===========  =================  ======================
    dice                    1            0                  0
    precision               1            0                  1 (no false positive)
    recall (sensitivity)    1            1 (nothing missed) 0
    relative vol. diff.     0            -inf               1
    absolute vol. diff.     0            +inf               1
    Hausdorff distance      0            +inf               +inf
    LTPR                    1            1 (nothing missed) 0
    LFDR                    0            1                  0 (nothing detected)
    ======================  ===========  =================  ======================

    ``specificity`` is 1 when the truth has no background. :func:`evaluate` returns
    non-finite values as they are; summaries count them (:func:`softseg.compare.summarize`)
    and the CLI writes them as ``null`` in JSON with the count beside.
"""

from __future__ import annotations

from softseg.metrics._common import support_box
from softseg.metrics.calibration import (
    ReliabilityDiagram,
    brier_score,
    class_argmax,
    expected_calibration_error,
    reliability_diagram,
)
from softseg.metrics.distance import hausdorff_distance
from softseg.metrics.lesions import LesionDetection, lesion_detection
from softseg.metrics.overlap import (
    absolute_volume_difference,
    dice,
    mse,
    pairwise_dice,
    precision,
    recall,
    relative_volume_difference,
    specificity,
    volume,
)
from softseg.metrics.table import (
    CLASS_SUM_TOLERANCE,
    METRICS,
    ClassEvaluation,
    Evaluation,
    MetricSpec,
    Reference,
    class_probabilities,
    evaluate,
    evaluate_classes,
    evaluation,
    format_value,
    prepare_reference,
)
from softseg.metrics.thresholds import (
    DEFAULT_THRESHOLDS,
    ThresholdSweep,
    band,
    binarize,
    optimal_threshold,
    threshold_curves,
    threshold_readouts,
    threshold_sweep,
    volume_ml,
)
from softseg.metrics.uncertainty import (
    ErrorDetection,
    entropy,
    error_detection,
    misclassified,
    subject_entropy,
    uncertainty_error_auroc,
)

__all__ = [
    "CLASS_SUM_TOLERANCE",
    "DEFAULT_THRESHOLDS",
    "ErrorDetection",
    "METRICS",
    "ClassEvaluation",
    "Evaluation",
    "LesionDetection",
    "MetricSpec",
    "Reference",
    "ReliabilityDiagram",
    "ThresholdSweep",
    "absolute_volume_difference",
    "band",
    "binarize",
    "brier_score",
    "class_argmax",
    "class_probabilities",
    "dice",
    "entropy",
    "error_detection",
    "evaluate",
    "evaluate_classes",
    "evaluation",
    "expected_calibration_error",
    "format_value",
    "hausdorff_distance",
    "lesion_detection",
    "misclassified",
    "mse",
    "optimal_threshold",
    "pairwise_dice",
    "precision",
    "prepare_reference",
    "recall",
    "relative_volume_difference",
    "reliability_diagram",
    "specificity",
    "subject_entropy",
    "support_box",
    "threshold_curves",
    "threshold_readouts",
    "threshold_sweep",
    "uncertainty_error_auroc",
    "volume",
    "volume_ml",
]
