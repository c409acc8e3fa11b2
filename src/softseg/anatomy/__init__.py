"""Real anatomy: subjects made from the MNI ICBM152 2009a template shipped in the nilearn wheel.

The nilearn wheel (the ``anatomy`` extra: ``pip install 'napari-softseg[anatomy]'``) ships a real
T1 and grey- and white-matter probability maps; :func:`make_subject` deforms them into a new
subject (same transform for the T1 and the tissue maps), acquires it on a coarser grid with
partial volume, a bias field and Rician noise, optionally adds small MS-like lesions, and lets
several simulated raters label it, each in their own way. :func:`write_dataset` writes subjects
in the multi-class dataset layout (docs/training.md). Nothing here imports Qt or napari.

Modules: :mod:`~softseg.anatomy.template` (the nilearn images, the head mask),
:mod:`~softseg.anatomy.fields` (cubic B-spline random fields, ITK convention),
:mod:`~softseg.anatomy.subject` (the generator), :mod:`~softseg.anatomy.raters` (the raters),
:mod:`~softseg.anatomy.dataset` (files, dataset folders, the cache of generated subjects).
"""

from softseg.anatomy.dataset import (
    CACHE_ENV,
    DATASET_NAME,
    cache_root,
    cached_subject,
    subject_seed,
    write_dataset,
    write_subject,
)
from softseg.anatomy.fields import BSplineField, random_field
from softseg.anatomy.raters import RaterModel, RaterRecord, simulate_raters
from softseg.anatomy.subject import (
    CLASSES,
    DEFAULT_SPACING,
    LESION,
    TARGETS,
    AnatomySubject,
    Transform,
    make_subject,
    output_grid,
)
from softseg.anatomy.template import (
    EXTRA,
    Template,
    check_nilearn,
    load_template,
    require_nilearn,
)

__all__ = [
    "CACHE_ENV",
    "CLASSES",
    "DATASET_NAME",
    "DEFAULT_SPACING",
    "EXTRA",
    "LESION",
    "TARGETS",
    "AnatomySubject",
    "BSplineField",
    "RaterModel",
    "RaterRecord",
    "Template",
    "Transform",
    "cache_root",
    "cached_subject",
    "check_nilearn",
    "load_template",
    "make_subject",
    "output_grid",
    "random_field",
    "require_nilearn",
    "simulate_raters",
    "subject_seed",
    "write_dataset",
    "write_subject",
]
