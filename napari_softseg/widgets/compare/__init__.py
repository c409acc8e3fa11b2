"""The *Compare candidates* dock: soft predictions side by side.

Choose two or more predictions (single-class layers, or K-class predictions: one entry each,
all with the same classes) and a reference (by default a truth, fused or label layer, never
the MR image); optionally rater layers (their average is the reference of the Brier score and
of the entropy plot). *Compare* runs :func:`softseg.compare.compare_predictions` (K classes:
:func:`softseg.compare.compare_class_predictions`) in a thread worker on snapshots of the
layers' arrays, then fills a sortable table and the papers' figures (one tab each).

Table
    The registry's headline metrics first (:data:`softseg.metrics.METRICS`, display level 1:
    Dice, precision, recall, RVD, AVD, LTPR, LFDR, MSE, ECE, Brier, threshold); *Columns*
    chooses others. Rows are named by candidate (``softseg``, not ``image · softseg``), each in
    its candidate's colour (:mod:`softseg.palette`), the same colour as in every plot.
K classes
    A class chooser: the multi-class summary (the label-fusion paper's multi-class ECE,
    accuracy) or one class's table and plots (Dice, volumes, ECE of that class). Binarised by
    argmax (the paper), each model's per-class thresholds, or one threshold.
Grid view
    One viewbox per candidate, titled with it (image, soft map with a titled colour bar,
    binarised contour; K classes: the argmax classes); the camera is refitted on entering and
    leaving it; its layers (role ``compare_view``) are never offered as inputs.
Report
    *Save report…* writes the engine's report (:func:`softseg.compare.write_report`, the files
    ``softseg compare`` writes), asking before it replaces anything.

A ``QWidget`` (not a magicgui ``Container``) because it embeds a table, tabs of matplotlib
canvases and a superqt slider; no metric is computed here.
"""

from __future__ import annotations

from ._widget import SOURCE, CompareWidget

__all__ = ["SOURCE", "CompareWidget"]
