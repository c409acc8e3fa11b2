"""Voxel grids read from NIfTI headers only (no voxel data), to check files before linking them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softseg.errors import InputError

__all__ = ["AFFINE_ATOL", "Grid", "check_same_grid", "read_grid"]

#: Affines that differ by at most this much (mm) are one grid (as in softseg.data).
AFFINE_ATOL = 1e-3


@dataclass(frozen=True, eq=False)
class Grid:
    """Shape (3 ints) and voxel-to-world affine (4x4, sform else qform) of a NIfTI file."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray


def read_grid(path: str | os.PathLike) -> Grid:
    """Read the grid of a NIfTI file from its header (the voxel data are not read).

    Raises
    ------
    InputError
        Not a readable NIfTI file, or not 3D (a 4D file with one volume counts as 3D).
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(os.fspath(path))
    except Exception as exc:  # nibabel raises several types for bad headers
        raise InputError(f"{path}: not a readable NIfTI file ({' '.join(str(exc).split())})") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(
            f"{path}: a {len(shape)}D image of shape {shape}; softseg reads 3D volumes (split a 4D "
            "file into one file per volume first)"
        )
    return Grid(path=path, shape=shape, affine=np.asarray(img.affine, dtype=np.float64))


def check_same_grid(reference: Grid, other: Grid, *, hint: str = "") -> None:
    """Raise :class:`InputError` unless *other* lies on *reference*'s voxel grid.

    Same shape and affines within :data:`AFFINE_ATOL` mm; the message names both files.
    """
    tail = f"; {hint}" if hint else ""
    if other.shape != reference.shape:
        raise InputError(
            f"{other.path}: shape {other.shape} differs from {reference.path.name} {reference.shape}; "
            f"the files of a subject must share one voxel grid{tail}"
        )
    diff = float(np.max(np.abs(other.affine - reference.affine)))
    if diff > AFFINE_ATOL:
        raise InputError(
            f"{other.path}: affine differs from {reference.path.name} by {diff:.3g} mm; the files "
            f"of a subject must share one voxel grid{tail}"
        )
