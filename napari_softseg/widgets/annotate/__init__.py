"""The "Soft annotation" dock widget: confidence painting, one Labels layer per rater.

A rater layer is an ordinary napari Labels layer whose integer values are confidence levels
(0 = background, 1..K = low .. high). Its metadata carries the rater id (``softseg_rater``), the
confidence scale (``softseg_confidence``), the image's geometry (``softseg_geometry``), the
rater's colour (``softseg_hue``), the role ``"rater"`` and the image file (``source_path``).

napari's own tools (brush, fill, polygon, undo/redo, 2D/3D) keep working; the widget adds a level
picker with the keys 1..K (0 selects the eraser, as does napari's E), a guard against labels the
scale does not know, a colormap whose colour strength grows with confidence, the soft value under
the cursor in the status bar, orientation letters on the canvas, Up/Down/PageUp/PageDown slice
keys and an annotated-slice bar, export/open of rater files (never replacing a file without a
confirmation), and versioned autosave with a recovery offer.

Modules: :mod:`._widget` (the dock), :mod:`._autosave` (sessions by layer uid), :mod:`._levels`,
:mod:`._navigation`, :mod:`._recovery`. The rater-layer helpers every widget shares live in
:mod:`napari_softseg._raters`.
"""

from napari_softseg.widgets.annotate._autosave import AutosaveController, RaterAutosave
from napari_softseg.widgets.annotate._files import export_path_for
from napari_softseg.widgets.annotate._widget import AnnotateWidget

__all__ = ["AnnotateWidget", "AutosaveController", "RaterAutosave", "export_path_for"]
