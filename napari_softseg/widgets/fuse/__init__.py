"""The *Fuse raters* dock widget: several raters -> one fused map, STAPLE, disagreement.

Pick two or more rater layers, a method, press **Fuse**. The work runs in a napari
``thread_worker`` on copies of the layers' data, through the one conversion
(:func:`softseg.confidence.as_rater_values`, with each layer's confidence scale) and the one
fusion engine, :func:`softseg.fusion.iter_fuse` -- the engine ``softseg fuse``, training and the
protocol use, so the numbers are the same as on the command line.

**One structure** (*Classes* = 1): raters are binary or confidence-level Labels layers, or soft
Image layers. Methods: the registry's (:data:`softseg.fusion.METHODS`: STAPLE, soft STAPLE,
average, majority vote, union, intersection). Results: ``fused (<method>)`` (a Labels layer for
the hard methods; a transparent-to-colour Image for average and STAPLE, whose fused map is its
probability, as ``softseg fuse`` writes), ``disagreement (entropy)`` (0 where all agree, ln 2 at
a 50/50 split) and a table of each rater's sensitivity and specificity (one definition on every
path, :data:`softseg.fusion.RATER_STATISTICS`) with the pairwise Dice between raters.

**Classes** (*Classes* = K >= 2): raters are Labels layers painted with classes (one layer per
rater, codes ``(class - 1) * L + level``, :mod:`softseg.class_levels`, class names in the
layer metadata) or integer label maps 0..K opened from files (K typed in, or read from a
dataset.json). Methods: multi-label STAPLE, average (class fractions summing to 1; with
painted confidence, each level's value), label vote — ``fuse(..., n_classes=K)``. Results: the
fused label map in the class colours, each class's probability (STAPLE) or fraction (average),
the disagreement and each class's disagreement, a table of each rater's agreement per true
class and each rater's confusion matrix (rows = true class, each row sums to 1).

Layers are tracked by :func:`napari_softseg._metadata.layer_uid` and roles, never by Python
identity (the Plugins menu hands the widget proxies); outputs (roles ``fused``,
``staple_probability``, ``disagreement``) are never offered as raters, also once saved and
opened again; fusing again updates the same layers; a removed layer is forgotten at once, and a
fusion whose rater is removed while it runs is dropped. **Save** writes the files ``softseg
fuse`` writes (fused map, JSON sidecar with the engine's summary, per-class probability maps)
in the raters' geometry, and asks before replacing any file.

Modules: :mod:`._inputs` (which layers are raters, snapshots), :mod:`._run` (the worker's
fusion), :mod:`._outputs` (result layers), :mod:`._save` (files), :mod:`._widget` (the dock).
"""

from __future__ import annotations

from softseg.fusion import SoftRatersError

from napari_softseg.widgets.fuse._inputs import (
    OUTPUT_ROLES,
    RaterInput,
    collect_raters,
    is_fusion_output,
    is_rater_candidate,
)
from napari_softseg.widgets.fuse._run import METHODS, ROI_MODES, FusionOutput, iter_fusion, run_fusion
from napari_softseg.widgets.fuse._widget import SOURCE, FuseWidget

__all__ = [
    "METHODS",
    "OUTPUT_ROLES",
    "ROI_MODES",
    "SOURCE",
    "FuseWidget",
    "FusionOutput",
    "RaterInput",
    "SoftRatersError",
    "collect_raters",
    "is_fusion_output",
    "is_rater_candidate",
    "iter_fusion",
    "run_fusion",
]
