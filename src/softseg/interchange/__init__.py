"""Data in and out the way the field works (issue 16).

* :mod:`softseg.interchange.bids`: BIDS datasets (raw + derivatives, ivadomed style) -> softseg
  dataset folders (``softseg import bids``);
* :mod:`softseg.interchange.nnunet`: nnU-Net v2 / Medical Segmentation Decathlon datasets ->
  softseg dataset folders (``softseg import nnunet``) and softseg datasets -> nnU-Net v2 raw
  datasets with fused labels and the model's split (``softseg export nnunet``);
* :mod:`softseg.interchange.plan`: the import plan (dry run) and its all-or-nothing execution;
* :mod:`softseg.interchange.export_model`: a model file -> ONNX or TorchScript with its final
  activation and the model card (``softseg export-model``).

Imports link the source files (symbolic links; copies on request) and never rewrite an image.
Importing this package imports neither torch nor pybids.
"""

from softseg.interchange.plan import ImportPlan, Link, Unmatched, execute_plan, format_plan

__all__ = ["ImportPlan", "Link", "Unmatched", "execute_plan", "format_plan"]
