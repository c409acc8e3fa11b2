"""Training data: the dataset folder, subjects, preprocessing, splits and 2D slices.

A package along its seams (issue 12, scikit-image style); every public name is importable from
``softseg.data``:

* :mod:`softseg.data.dataset` — the dataset folder: :func:`scan_dataset` (layout, dataset.json,
  multi-class rater files), :func:`load_subject` (validated arrays in display order);
* :mod:`softseg.data.preprocessing` — resampling, z-score, crop/pad (SoftSeg Table 1);
* :mod:`softseg.data.splits` — reproducible subject splits;
* :mod:`softseg.data.slices` — training targets (:func:`fuse_raters`) and 2D slice sets.
"""

from softseg.candidates import FUSIONS  # the fusion choices of a run; re-exported here
from softseg.data.dataset import (
    RATER_KINDS,
    DatasetInfo,
    Subject,
    SubjectData,
    load_rater,
    load_subject,
    rater_to_soft,
    scan_dataset,
)
from softseg.data.preprocessing import (
    Preprocessing,
    center_crop_or_pad,
    median_spacing,
    preprocess_image,
    preprocess_label,
    resample,
    resampled_shape,
    resolve_spacing,
    zscore,
)
from softseg.data.slices import SliceSet, build_slices, fuse_raters
from softseg.data.splits import Split, split_subjects

__all__ = [
    "FUSIONS",
    "RATER_KINDS",
    "DatasetInfo",
    "Preprocessing",
    "SliceSet",
    "Split",
    "Subject",
    "SubjectData",
    "build_slices",
    "center_crop_or_pad",
    "fuse_raters",
    "load_rater",
    "load_subject",
    "median_spacing",
    "preprocess_image",
    "preprocess_label",
    "rater_to_soft",
    "resample",
    "resampled_shape",
    "resolve_spacing",
    "scan_dataset",
    "split_subjects",
    "zscore",
]
