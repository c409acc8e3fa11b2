"""Candidates side by side: evaluation, statistics and the report.

The same engine serves the napari "Compare candidates" widget (one subject, layers), the
``softseg compare MODEL...`` command (trained models on a dataset's test subjects) and the
repeated-training protocol ``softseg compare --train ...`` (mean ± std tables and Wilcoxon tests
here; the training loop over splits in :mod:`softseg.protocol`).

=================  =========================================================================
module             what
=================  =========================================================================
``evaluation``     :func:`evaluate_subject`, :func:`compare_predictions`: the metric table of
                   :func:`softseg.metrics.evaluate` plus the plot data (:class:`Curves`)
``statistics``     :func:`summarize` (mean ± std with counts of non-finite values), the
                   two-sided Wilcoxon signed-rank test with the pairs it used
``report``         the papers' figures and the HTML / CSV / JSON report
=================  =========================================================================

Every number comes from :mod:`softseg.metrics`, every column name and format from
:data:`softseg.metrics.METRICS` (re-exported here as :data:`METRICS`, the same dict).
"""

from __future__ import annotations

from softseg.compare.evaluation import (
    HIST_BINS,
    SWEEP_THRESHOLDS,
    Comparison,
    Curves,
    check_prediction,
    compare_class_predictions,
    compare_predictions,
    evaluate_subject,
    evaluate_subject_classes,
    pool_curves,
    prepare_reference,
)
from softseg.compare.report import (
    FIGURES,
    available_figures,
    csv_text,
    draw_figure,
    json_safe,
    number,
    render_figures,
    text_table,
    write_report,
    write_text,
)
from softseg.compare.statistics import (
    Summary,
    WilcoxonResult,
    min_wilcoxon_pairs,
    summarize,
    summary_mean,
    wilcoxon_pvalues,
    wilcoxon_tests,
)
from softseg.metrics import METRICS, MetricSpec, format_value

__all__ = [
    "FIGURES",
    "HIST_BINS",
    "METRICS",
    "SWEEP_THRESHOLDS",
    "Comparison",
    "Curves",
    "MetricSpec",
    "Summary",
    "WilcoxonResult",
    "available_figures",
    "check_prediction",
    "compare_class_predictions",
    "compare_predictions",
    "csv_text",
    "draw_figure",
    "evaluate_subject",
    "evaluate_subject_classes",
    "format_value",
    "json_safe",
    "min_wilcoxon_pairs",
    "number",
    "pool_curves",
    "prepare_reference",
    "render_figures",
    "summarize",
    "summary_mean",
    "text_table",
    "wilcoxon_pvalues",
    "wilcoxon_tests",
    "write_report",
    "write_text",
]
