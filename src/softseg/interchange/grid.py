"""Voxel grids of the files an import links, from their headers only (no voxel data read).

Thin adapter over the one header check (:func:`softseg.io.check_nifti`) and the one "same voxel
grid" test (:func:`softseg.geometry.check_same_grid`), adding how to fix the import.
"""

from __future__ import annotations

import os
from typing import Any

from softseg.errors import InputError

__all__ = ["check_same_grid", "read_grid"]


def read_grid(path: str | os.PathLike, *, what: str = "image") -> Any:
    """:func:`softseg.io.check_nifti` of *path* (a :class:`~softseg.io.NiftiInfo`: path, shape, affine)."""
    from softseg.io import check_nifti

    return check_nifti(path, what=what)


def check_same_grid(reference: Any, other: Any, *, hint: str = "") -> None:
    """:func:`softseg.geometry.check_same_grid` with *hint* (how to fix it) appended to its message."""
    from softseg.geometry import check_same_grid as same_grid

    try:
        same_grid(reference, other)
    except InputError as exc:
        raise InputError(f"{exc}; {hint}" if hint else str(exc)) from None
