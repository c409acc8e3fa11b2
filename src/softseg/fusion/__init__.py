"""Rater fusion: one entry point, :func:`fuse`, and one method registry, :data:`METHODS`.

``fuse(raters, method, *, roi="auto", soft=None, n_classes=None, ...) -> FusionResult`` is what
``softseg fuse``, the *Fuse raters* widget, the training data (:func:`training_target`) and the
protocol's references call; see :mod:`softseg.fusion.engine` for the methods, STAPLE's output
(probability, and its consensus when asked), the region and the one definition of rater
sensitivity/specificity.

Modules (one concept each):

* :mod:`~softseg.fusion.raters`: input validation (``as_raters``), the STAPLE region
  (``default_roi``);
* :mod:`~softseg.fusion.voting`: ``average``, ``majority_vote``, ``union``, ``intersection``,
  ``sample_rater`` (random-rater training);
* :mod:`~softseg.fusion.staple_em`: two-class STAPLE, binary and soft (``staple``, matches
  SimpleITK's ``STAPLEImageFilter``);
* :mod:`~softseg.fusion.multilabel`: multi-label STAPLE, label voting, per-class average and
  disagreement, confusion matrices (matches SimpleITK's ``MultiLabelSTAPLEImageFilter``);
* :mod:`~softseg.fusion.agreement`: disagreement map, rater sensitivity/specificity;
* :mod:`~softseg.fusion.engine`: ``fuse``, ``FusionResult``, ``METHODS``, ``training_target``.
"""

from __future__ import annotations

from softseg.fusion.agreement import (
    binary_confusion,
    disagreement,
    rater_performance,
    soft_class_confusion,
)
from softseg.fusion.engine import (
    CLASS_SUM_TOLERANCE,
    METHODS,
    FusionResult,
    MethodSpec,
    TIE_TOLERANCE,
    SoftRatersError,
    class_probabilities,
    fuse,
    fusion_methods,
    get_method,
    iter_fuse,
    training_fusions,
    training_target,
)
from softseg.fusion.multilabel import (
    MultiLabelStapleResult,
    as_label_maps,
    class_average,
    class_disagreement,
    class_disagreements,
    class_votes,
    confusion_matrices,
    label_vote,
    multilabel_staple,
)
from softseg.fusion.raters import as_raters, default_roi, roi_box, roi_mask
from softseg.fusion.staple_em import DEFAULT_MAX_ITER, StapleResult, staple
from softseg.fusion.voting import average, intersection, majority_vote, sample_rater, union

__all__ = [
    "CLASS_SUM_TOLERANCE",
    "DEFAULT_MAX_ITER",
    "FusionResult",
    "METHODS",
    "MethodSpec",
    "MultiLabelStapleResult",
    "SoftRatersError",
    "StapleResult",
    "TIE_TOLERANCE",
    "as_label_maps",
    "as_raters",
    "average",
    "binary_confusion",
    "class_average",
    "class_disagreement",
    "class_disagreements",
    "class_votes",
    "class_probabilities",
    "confusion_matrices",
    "default_roi",
    "disagreement",
    "fuse",
    "fusion_methods",
    "get_method",
    "intersection",
    "iter_fuse",
    "label_vote",
    "majority_vote",
    "multilabel_staple",
    "rater_performance",
    "roi_box",
    "roi_mask",
    "sample_rater",
    "soft_class_confusion",
    "staple",
    "training_fusions",
    "training_target",
    "union",
]
