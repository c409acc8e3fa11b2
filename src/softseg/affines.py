"""Voxel size from an affine: THE one voxel size used everywhere in softseg.

A module of its own at the bottom of the import graph (it needs only numpy), so that both
:mod:`softseg.io` (which checks voxel sizes while reading a header) and :mod:`softseg.geometry`
(which re-exports :func:`voxel_size` as its public name) can use it without importing each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softseg.errors import InputError

__all__ = ["voxel_size"]


def voxel_size(obj: Any) -> tuple[float, float, float]:
    """The voxel size (mm) along the three file axes: THE one used everywhere in softseg.

    It is the length of each of the affine's first three columns, where the affine is the one
    nibabel's ``img.affine`` returns (sform if its code is set, else qform, else pixdim); the
    same numbers as ``nibabel.affines.voxel_sizes``. Hausdorff distances and volumes
    (``softseg evaluate``, ``compare``), training resampling and the viewer's layer scale all use
    it, so they agree even when a header's pixdim disagrees with its sform
    (:func:`softseg.io.check_nifti` warns about that).

    Importable as :func:`softseg.geometry.voxel_size` (the public name callers use).

    Parameters
    ----------
    obj : Volume, NiftiInfo, DisplayGeometry, or array-like of shape (4, 4) or (3, 3)
        Something with an ``affine`` attribute, or the affine itself.

    Returns
    -------
    tuple of 3 float
        mm, in file axis order (not the display order; see
        :attr:`softseg.geometry.DisplayGeometry.scale`).

    Raises
    ------
    InputError
        The affine is not (4, 4) or (3, 3).

    Examples
    --------
    >>> voxel_size(np.diag([0.5, 0.5, 3.0, 1.0]))
    (0.5, 0.5, 3.0)
    """
    affine = np.asarray(getattr(obj, "affine", obj), dtype=np.float64)
    if affine.shape not in ((4, 4), (3, 3)):
        raise InputError(f"expected a (4, 4) affine or an object with one; got shape {affine.shape}")
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    return tuple(float(v) for v in norms)  # type: ignore[return-value]
