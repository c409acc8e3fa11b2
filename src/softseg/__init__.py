"""softseg: the engine of napari-softseg.

Soft segmentation of medical images: NIfTI I/O with exact geometry, confidence scales, rater
fusion (STAPLE and friends), segmentation/calibration metrics, SoftSeg training and inference.

This package never imports Qt or napari, and importing it does not import torch: the heavy
modules (``softseg.train``, ``softseg.models``, ...) are imported only when used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
