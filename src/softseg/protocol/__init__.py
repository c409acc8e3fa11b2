"""Evaluate trained models on a dataset, and the papers' repeated-training protocol.

:func:`evaluate_models` runs each model file on a dataset's test subjects and builds a
:class:`softseg.compare.Comparison` (one sample per subject; K-class models class by class).
:func:`run_protocol` reproduces the SoftSeg / label-fusion evaluation: every candidate is
trained ``repeats`` times on paired splits, each model evaluated on its split's test subjects,
mean ± std over repeats and a two-sided Wilcoxon signed-rank test against a reference
candidate. Its units (candidate, repeat) run one after another in this process, or as submitit
jobs on this machine or a Slurm cluster (:class:`ExecutorConfig`); every executor gives the
same table, and every run is resumable.

A candidate is ``NAME`` or ``NAME:FUSION``: the fusion says how the raters become the training
target (``softseg:staple``, ``conventional:average``, ``softseg:random``), and
``NAME:ensemble`` makes a **rater ensemble**: one model of the NAME recipe per rater, each
trained on that rater's labels alone, the unit's prediction the mean of their probability maps
(``conventional:ensemble`` is the label-fusion paper's Conv-STAPLE-QUBIQ baseline, Ma 2020's
loss ensemble). It needs at least two raters, every subject labelled by every rater; its record
counts the members (``members``, ``member_raters``).

Modules (one concept each):

===================  ==========================================================================
``reference``        ground truths, predicting a subject, ``NAME[:FUSION]`` candidates
``models``           :func:`evaluate_models`, the K-class reference :func:`class_reference`
``config``           :class:`ProtocolConfig`, :class:`Progress`, :class:`ProtocolResult`
``units``            :class:`UnitPlan`, :func:`run_unit` (train, evaluate, record: what a job runs)
``ensemble``         ``NAME:ensemble``: one member per rater, their mean, its optimal threshold
``records``          the unit record and the error record (JSON files the parent reads)
``executors``        :class:`ExecutorConfig`: serial, submitit local or Slurm; their parameters
``running``          running units serially, or as jobs the parent watches (Ctrl-C cancels them)
``jobs``             ``UnitJob``, the callable submitit runs (imports submitit)
``run``              :func:`run_protocol`: state, resume, the report
===================  ==========================================================================
"""

from softseg.protocol.config import Progress, ProtocolConfig, ProtocolResult
from softseg.protocol.executors import EXECUTORS, ExecutorConfig, parse_slurm_param
from softseg.protocol.models import class_reference, evaluate_models
from softseg.protocol.reference import (
    GROUND_TRUTHS,
    _predict,
    ground_truth,
    parse_candidate,
    predict_subject,
)
from softseg.protocol.records import stale_units
from softseg.protocol.run import STATE_FILE, run_protocol
from softseg.protocol.units import UnitPlan, plan_units, run_unit, unit_prediction

__all__ = [
    "EXECUTORS",
    "GROUND_TRUTHS",
    "STATE_FILE",
    "ExecutorConfig",
    "Progress",
    "ProtocolConfig",
    "ProtocolResult",
    "UnitPlan",
    "class_reference",
    "evaluate_models",
    "ground_truth",
    "parse_candidate",
    "parse_slurm_param",
    "plan_units",
    "predict_subject",
    "run_protocol",
    "run_unit",
    "stale_units",
    "unit_prediction",
]
