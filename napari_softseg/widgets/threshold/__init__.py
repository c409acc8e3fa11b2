"""The *Threshold* dock: binarise soft predictions interactively.

A thin view over :mod:`softseg.metrics` (binarisation, live readouts, threshold curves). Choose
one or more soft predictions (a K-class prediction is one entry, thresholded alone) and a
reference; the dock adds one live overlay per soft layer whose array it rewrites **in place** on
every slider move (no new layers, no reallocation), so the overlay follows the handle while
dragging. The readouts (binarised and soft volumes; Dice, precision, recall against the
reference) follow once the handle rests; the plot shows Dice and volume against the threshold
in napari's theme, each prediction in its candidate's colour (:mod:`softseg.palette`).

Single class
    One slider drives every selected prediction, or each sits at its model's optimal threshold
    (the model card, ``_metadata.prediction_threshold``; a soft map that is not a model's
    prediction follows the slider, and the dock says so: no silent 0.5); a band mode shows
    ``lo <= p < hi``.
K classes (``CONTRACTS.md``, "K-class predictions in napari")
    One slider per class, each starting at its class's optimal threshold from the card, and an
    argmax view (each voxel its most probable class, background included). Overlays and curves
    in the class colours; readouts per class, against an integer label map, a layer painted
    with class codes, or one reference layer per class.

Layers are tracked by ``layer_uid`` and roles (DESIGN.md decision 9): overlays (role
``threshold_overlay``) and applied results (``threshold_result``) are never offered as inputs; a
removed prediction's overlay goes with it before napari draws again; the canvas's OpenGL context
is made current before napari cleans up a removal (:mod:`napari_softseg.widgets._gl_context`:
the segmentation fault of issue 11 #4). *Apply* keeps the current map in one result layer per
prediction (updated, never stacked); *Save applied maps…* writes them as NIfTI files with
readable names in the prediction's geometry, never replacing a file without confirmation.

This is a ``QWidget`` rather than a magicgui ``Container`` because it embeds superqt sliders and
a matplotlib canvas; it only collects parameters, calls the engine and updates layers.
"""

from __future__ import annotations

from ._widget import SOURCE, ThresholdWidget

__all__ = ["SOURCE", "ThresholdWidget"]
