"""Smooth random fields as uniform cubic B-splines (free-form deformation, Rueckert et al. 1999).

One construction serves every smooth random quantity of the real-anatomy generator: the
subject's deformation (3 components), the MR bias field (1 component) and each rater's boundary
jitter (3 components). A :class:`BSplineField` holds the control-point coefficients of a cubic
B-spline on a regular control grid; its control-grid convention is ITK's ``BSplineTransform``
(order 3): for a transform domain with origin ``O``, physical size ``D`` and mesh size ``m``
(cells per axis) there are ``m + 3`` control points per axis at ``O + (i - 1) * D / m``,
``i = 0 .. m + 2``, and the field at ``x`` is ``sum_i c_i * beta3((x - O) / h + 1 - i)`` per
axis (tensor product), ``h = D / m``. The tests check the evaluated displacements against
SimpleITK's ``BSplineTransform.TransformPoint`` with the same coefficients.

Evaluation on a rectilinear grid is separable (three small matrix products), so a field over
millions of points costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from softseg.errors import InputError

__all__ = ["BSplineField", "bspline_basis", "random_field", "unit_rms_factor"]


def bspline_basis(t: np.ndarray) -> np.ndarray:
    """The uniform cubic B-spline ``beta3(t)`` (support ``|t| < 2``, integral 1), float64."""
    a = np.abs(np.asarray(t, dtype=np.float64))
    out = np.zeros_like(a)
    inner = a < 1.0
    outer = (a >= 1.0) & (a < 2.0)
    out[inner] = (4.0 - 6.0 * a[inner] ** 2 + 3.0 * a[inner] ** 3) / 6.0
    out[outer] = (2.0 - a[outer]) ** 3 / 6.0
    return out


def _mean_square_weight_1d() -> float:
    """Mean over the cell position f in [0, 1) of sum_k beta3(f - k)**2 (exact: 151/315)."""
    # int_0^1 [((1-f)^3)^2 + (3f^3-6f^2+4)^2 + (-3f^3+3f^2+3f+1)^2 + (f^3)^2] df / 36
    return 151.0 / 315.0


def unit_rms_factor(ndim: int = 3) -> float:
    """Control-point standard deviation that gives a field of unit RMS (expected over positions).

    With i.i.d. N(0, s**2) coefficients, the field's variance at a point is
    ``s**2 * prod_axes sum_k beta3(f_a - k)**2``; averaged over the cell that is
    ``s**2 * (151/315)**ndim``.
    """
    return float(_mean_square_weight_1d() ** (-ndim / 2.0))


@dataclass(frozen=True, eq=False)
class BSplineField:
    """A cubic B-spline field over a box, ITK ``BSplineTransform`` control-grid convention.

    Attributes
    ----------
    coefficients : ndarray, shape (C, m0 + 3, m1 + 3, m2 + 3), float64
        Control-point values of each of the C components (mm for a displacement).
    origin : ndarray, shape (3,), float64
        Domain origin ``O`` (world mm, the first corner of the domain).
    size : ndarray, shape (3,), float64
        Domain physical size ``D`` (mm, > 0).
    """

    coefficients: np.ndarray
    origin: np.ndarray
    size: np.ndarray

    @property
    def mesh_size(self) -> tuple[int, int, int]:
        """Cells per axis (``m``): control points per axis minus 3."""
        return tuple(int(n) - 3 for n in self.coefficients.shape[1:])  # type: ignore[return-value]

    @property
    def control_spacing(self) -> np.ndarray:
        """Distance between control points (``h = D / m``, mm), shape (3,)."""
        return self.size / np.asarray(self.mesh_size, dtype=np.float64)

    def basis_matrix(self, axis: int, coords: np.ndarray) -> np.ndarray:
        """(N, m + 3) float64: the B-spline weights of each control point at world coords (mm)."""
        t = (np.asarray(coords, dtype=np.float64) - self.origin[axis]) / self.control_spacing[axis]
        t = t + 1.0
        index = np.arange(self.coefficients.shape[1 + axis], dtype=np.float64)
        return bspline_basis(t[:, None] - index[None, :])

    def on_grid(self, coords: Sequence[np.ndarray], *, dtype=np.float32) -> np.ndarray:
        """Evaluate the field on the rectilinear grid ``coords[0] x coords[1] x coords[2]``.

        Parameters
        ----------
        coords : three 1-D arrays
            World coordinates (mm) along each axis.
        dtype : numpy dtype
            Output dtype (the sums are done in float64).

        Returns
        -------
        ndarray, shape (C, len(coords[0]), len(coords[1]), len(coords[2]))
        """
        bx, by, bz = (self.basis_matrix(a, np.asarray(c)) for a, c in enumerate(coords))
        out = np.empty((self.coefficients.shape[0], bx.shape[0], by.shape[0], bz.shape[0]), dtype)
        for comp, coef in enumerate(self.coefficients):
            t = np.tensordot(coef, bz, axes=([2], [1]))  # (m0, m1, Nz)
            t = np.tensordot(by, t, axes=([1], [1]))  # (Ny, m0, Nz)
            t = np.tensordot(bx, t, axes=([1], [1]))  # (Nx, Ny, Nz)
            out[comp] = t
        return out

    def at_points(self, points: np.ndarray) -> np.ndarray:
        """Evaluate at scattered points: (N, 3) world mm -> (N, C) float64."""
        points = np.asarray(points, dtype=np.float64)
        bx, by, bz = (self.basis_matrix(a, points[:, a]) for a in range(3))
        return np.einsum("ni,nj,nk,cijk->nc", bx, by, bz, self.coefficients, optimize=True)

    def itk_parameters(self) -> np.ndarray:
        """The coefficients flattened as ITK's ``BSplineTransform.SetParameters`` expects them
        (component by component, x fastest)."""
        return np.concatenate([c.ravel(order="F") for c in self.coefficients])


def random_field(
    origin: Sequence[float],
    size: Sequence[float],
    *,
    control_spacing_mm: float,
    components: int,
    rms: float,
    rng: np.random.Generator,
) -> BSplineField:
    """A random smooth field with i.i.d. Gaussian control points and expected RMS ``rms``.

    Parameters
    ----------
    origin, size : 3 floats
        The box (world mm) the field must cover.
    control_spacing_mm : float, > 0
        Desired distance between control points (correlation length); the mesh size per axis is
        ``ceil(size / control_spacing_mm)`` (at least 1), so the actual spacing is at most this.
    components : int
        3 for a displacement field, 1 for a scalar field.
    rms : float, >= 0
        Expected root-mean-square value of each component (mm for displacements).
    rng : numpy.random.Generator
        The only source of randomness.
    """
    origin_arr = np.asarray(origin, dtype=np.float64)
    size_arr = np.asarray(size, dtype=np.float64)
    if control_spacing_mm <= 0 or not (size_arr > 0).all():
        raise InputError(
            f"random field needs a positive control spacing and box size; got "
            f"{control_spacing_mm} mm and {tuple(size_arr)}"
        )
    mesh = np.maximum(1, np.ceil(size_arr / float(control_spacing_mm)).astype(int))
    scale = float(rms) * unit_rms_factor(3)
    coefficients = rng.normal(scale=scale, size=(int(components), *(mesh + 3)))
    return BSplineField(coefficients=coefficients, origin=origin_arr, size=size_arr)
