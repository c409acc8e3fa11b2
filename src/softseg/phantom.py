"""A partial-volume phantom with several raters, and dataset folders made of it.

:func:`phantom` renders smooth 3D structures analytically and integrates them over each voxel
(supersampling every voxel that a boundary may cross, ``supersample**3`` points per voxel), so
the soft truth is the partial-volume fraction of the target in each voxel, in [0, 1]:

* a large smooth blob (a perturbed ellipsoid) with a thin rim, like cortex around white matter;
  the **rim** is part of the target, and being 2-3 mm thick most of its voxels are partial;
* several small ellipsoidal **lesions** (a few voxels across) inside the blob, also target.

The image is MR-like: the intensity of a voxel is the fraction-weighted mix of the tissue
intensities (background, white-matter-like interior, brighter rim, bright lesions), with a
low-frequency texture, a smooth multiplicative bias field and Rician noise.

Raters disagree the way people do: each one thresholds a slightly, smoothly displaced copy of
the truth at their own decision level (spread over 0.3 .. 0.7), and now and then one of them
misses a small lesion.

Arrays are in NIfTI file axis order ``(X, Y, Z)`` with a diagonal RAS+ affine: axis 0 points
to the patient's right, axis 1 anterior, axis 2 (the axial slice axis) superior.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from softseg.errors import InputError

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "Phantom",
    "phantom",
    "write_dataset",
    "write_phantom_files",
]

#: Default phantom grid (X, Y, Z) and voxel size in mm (anisotropic, like clinical 2D scans).
DEFAULT_SHAPE = (96, 96, 32)
#: Correlation lengths (B-spline control-point distance, mm) of the image texture and of each
#: rater's boundary displacement.
_TEXTURE_MM = 6.0
_JITTER_MM = 8.0
DEFAULT_SPACING = (1.0, 1.0, 2.0)

# Tissue intensities (FLAIR-like: bright lesions, rim brighter than interior), before bias/noise.
_INTENSITY = {"background": 0.02, "interior": 0.55, "rim": 0.78, "lesion": 1.0}
_IMAGE_UNITS = 1000.0  # MR-like arbitrary units


@dataclass(frozen=True, eq=False)
class Phantom:
    """One rendered phantom subject. All arrays are in NIfTI file axis order (X, Y, Z).

    Attributes
    ----------
    image : ndarray, shape (X, Y, Z), float32
        MR-like image (arbitrary units, background ~ 20, interior ~ 550, lesions ~ 1000),
        with bias field and Rician noise.
    truth : ndarray, shape (X, Y, Z), float32
        Partial-volume fraction of the target (rim + lesions) in each voxel, in [0, 1].
    raters : ndarray, shape (R, X, Y, Z), uint8
        Binary masks (0/1), one per rater.
    lesions : ndarray, shape (X, Y, Z), uint16
        Lesion label map: 0 background, k = lesion k (voxels at least half inside lesion k).
    affine : ndarray, shape (4, 4), float64
        Voxel-to-world (RAS+ mm), diagonal, centred on the phantom.
    spacing : tuple of 3 float
        Voxel size in mm along X, Y, Z.
    rater_levels : tuple of float
        Decision level (threshold on the displaced truth) of each rater.
    missed_lesions : tuple of tuple of int
        For each rater, the lesion labels they missed.
    """

    image: np.ndarray
    truth: np.ndarray
    raters: np.ndarray
    lesions: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    rater_levels: tuple[float, ...]
    missed_lesions: tuple[tuple[int, ...], ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.truth.shape)  # type: ignore[return-value]

    @property
    def n_raters(self) -> int:
        return int(self.raters.shape[0])


# ---------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class _Blob:
    """Perturbed ellipsoid: rho(p) = |q| / (1 + sum_k a_k sin(f_k w_k.u + phi_k)), q = p / radii."""

    radii: np.ndarray  # (3,) mm
    amps: np.ndarray  # (K,)
    freqs: np.ndarray  # (K,)
    dirs: np.ndarray  # (K, 3) unit vectors
    phases: np.ndarray  # (K,)

    def rho(self, p: np.ndarray) -> np.ndarray:
        """p: (..., 3) mm relative to the centre -> (...,) normalised radius (1 = outer surface)."""
        # elementwise only (no BLAS calls: they oversubscribe small shared machines)
        qx, qy, qz = (p[..., i] / self.radii[i] for i in range(3))
        r = np.sqrt(qx * qx + qy * qy + qz * qz)
        inv = 1.0 / np.maximum(r, 1e-9)
        ux, uy, uz = qx * inv, qy * inv, qz * inv
        pert = np.zeros_like(r)
        for amp, freq, (dx, dy, dz), phase in zip(self.amps, self.freqs, self.dirs, self.phases):
            pert += amp * np.sin(freq * (ux * dx + uy * dy + uz * dz) + phase)
        return r / (1.0 + pert)


def _make_blob(extent: np.ndarray, rng: np.random.Generator) -> _Blob:
    radii = extent * np.array([0.40, 0.40, 0.42]) * rng.uniform(0.93, 1.0, size=3)
    k = 6
    dirs = rng.normal(size=(k, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return _Blob(
        radii=radii,
        amps=rng.uniform(0.015, 0.035, size=k),
        freqs=rng.uniform(2.0, 5.0, size=k),
        dirs=dirs,
        phases=rng.uniform(0, 2 * np.pi, size=k),
    )


def _subsample_offsets(spacing: np.ndarray, n: int) -> np.ndarray:
    """(n**3, 3) offsets (mm) of a regular n x n x n grid of points inside a voxel."""
    ticks = (np.arange(n) + 0.5) / n - 0.5
    grid = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid * spacing


def _blob_fractions(
    blob: _Blob,
    coords: Sequence[np.ndarray],
    spacing: np.ndarray,
    levels: Sequence[float],
    supersample: int,
) -> list[np.ndarray]:
    """Fraction of each voxel with rho < level, for each level (exact up to the subsampling)."""
    cx, cy, cz = coords
    centres = np.stack(np.meshgrid(cx, cy, cz, indexing="ij"), axis=-1)
    rho = blob.rho(centres)
    # How much rho can change inside a voxel: sum over axes of |d rho / d x_i| * half the voxel
    # size, using the largest partial derivative in the 3x3x3 neighbourhood, with a 1.5 margin.
    change = np.zeros_like(rho)
    for axis, grad in enumerate(np.gradient(rho, *spacing)):
        change += ndimage.maximum_filter(np.abs(grad), size=3) * (0.5 * spacing[axis])
    delta = 1.5 * change + 1e-6
    fractions = [(rho < level).astype(np.float64) for level in levels]
    band = np.zeros(rho.shape, dtype=bool)
    for level in levels:
        band |= np.abs(rho - level) <= delta
    idx = np.nonzero(band)
    if idx[0].size:
        offsets = _subsample_offsets(spacing, supersample)
        for start in range(0, idx[0].size, 8192):  # chunks keep the temporaries small
            part = tuple(i[start : start + 8192] for i in idx)
            pts = centres[part][:, None, :] + offsets[None]
            rho_sub = blob.rho(pts)  # (n, S^3)
            for frac, level in zip(fractions, levels):
                frac[part] = (rho_sub < level).mean(axis=1)
    return fractions


def _place_lesions(
    blob: _Blob,
    inner_level: float,
    n_lesions: int,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centres (mm) and radii (mm) of lesions inside the blob interior, not touching each other."""
    lesions: list[tuple[np.ndarray, np.ndarray]] = []
    r_lo = max(1.2, 0.9 * float(spacing.min()))
    for _ in range(200 * max(n_lesions, 1)):
        if len(lesions) >= n_lesions:
            break
        radii = rng.uniform(r_lo, r_lo + 2.2, size=3)
        radii[2] = max(radii[2], 0.8 * spacing[2])  # at least about two slices across
        centre = rng.uniform(-1, 1, size=3) * blob.radii * inner_level
        # stay well inside the interior: margin of the lesion size plus 1.5 mm, in rho units
        reach = (float(radii.max()) + 1.5) / float(blob.radii.min())
        if blob.rho(centre) > inner_level - 1.3 * reach:
            continue
        if any(np.linalg.norm(centre - c) < radii.max() + r.max() + 2.0 for c, r in lesions):
            continue
        lesions.append((centre, radii))
    return lesions


def _lesion_fraction(
    centre: np.ndarray,
    radii: np.ndarray,
    coords: Sequence[np.ndarray],
    spacing: np.ndarray,
    supersample: int,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Partial-volume fraction of one ellipsoidal lesion inside its bounding box."""
    box = []
    for axis in range(3):
        c = coords[axis]
        lo = np.searchsorted(c, centre[axis] - radii[axis] - spacing[axis])
        hi = np.searchsorted(c, centre[axis] + radii[axis] + spacing[axis], side="right")
        box.append(slice(int(max(lo, 0)), int(min(hi, c.size))))
    sub = [coords[a][box[a]] for a in range(3)]
    pts = np.stack(np.meshgrid(*sub, indexing="ij"), axis=-1)
    pts = pts[..., None, :] + _subsample_offsets(spacing, supersample)
    q = (pts - centre) / radii
    inside = np.einsum("...i,...i->...", q, q) < 1.0
    return tuple(box), inside.mean(axis=-1)  # type: ignore[return-value]


def _smooth_field(
    coords: Sequence[np.ndarray], rng: np.random.Generator, *, control_mm: float, components: int, rms: float
) -> np.ndarray:
    """A smooth random field on the phantom's grid: (components, X, Y, Z) float64.

    The one smooth-random-field generator of softseg (:func:`softseg.anatomy.fields.random_field`,
    a cubic B-spline with Gaussian control points every *control_mm* mm, ITK's ``BSplineTransform``
    convention), evaluated at the voxel centres *coords* (mm); expected RMS *rms* per component.
    """
    from softseg.anatomy.fields import random_field

    origin = [float(c[0]) for c in coords]
    size = [float(c[-1] - c[0]) for c in coords]
    field = random_field(origin, size, control_spacing_mm=control_mm, components=components, rms=rms, rng=rng)
    return field.on_grid(coords, dtype=np.float64)


# ---------------------------------------------------------------------------------- phantom
def phantom(
    shape: Sequence[int] = DEFAULT_SHAPE,
    *,
    n_raters: int = 4,
    seed: int = 0,
    spacing: Sequence[float] = DEFAULT_SPACING,
    n_lesions: int = 6,
    noise: float = 0.04,
    bias: float = 0.15,
    rim_mm: float = 2.5,
    levels: tuple[float, float] = (0.3, 0.7),
    boundary_jitter_mm: float = 0.6,
    miss_probability: float = 0.15,
    supersample: int = 4,
) -> Phantom:
    """Render a partial-volume phantom with an MR-like image and several disagreeing raters.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid (X, Y, Z), each at least 8. Default (96, 96, 32): renders in well under a second.
    n_raters : int
        Number of raters (>= 1).
    seed : int
        Everything random comes from ``np.random.default_rng(seed)``: same seed, same data.
    spacing : tuple of 3 float
        Voxel size in mm (default 1 x 1 x 2 mm, anisotropic like a clinical 2D acquisition).
    n_lesions : int
        Requested number of small lesions (fewer are placed when the grid is too small).
    noise : float
        Rician noise sigma relative to the interior intensity.
    bias : float
        Strength of the smooth multiplicative bias field (log-amplitude).
    rim_mm : float
        Approximate thickness of the rim in mm.
    levels : (float, float)
        Range of the raters' decision levels; rater levels are spread evenly over it.
    boundary_jitter_mm : float
        Expected RMS (mm) of each component of a rater's smooth boundary displacement (a
        B-spline field with control points every 8 mm, :func:`softseg.anatomy.fields.random_field`).
    miss_probability : float
        Probability that a given rater misses a given lesion.
    supersample : int
        Points per axis used to integrate each boundary voxel (4 -> 64 points per voxel).

    Returns
    -------
    Phantom
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"phantom shape must be 3 integers >= 8 (X, Y, Z); got {shape}")
    spacing_arr = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if spacing_arr.shape != (3,) or not (spacing_arr > 0).all():
        raise InputError(f"phantom spacing must be 3 positive numbers (mm); got {tuple(spacing)}")
    if int(n_raters) < 1:
        raise InputError(f"n_raters must be >= 1; got {n_raters}")
    if not 0 < levels[0] <= levels[1] < 1:
        raise InputError(f"levels must satisfy 0 < low <= high < 1; got {levels}")
    if int(supersample) < 1:
        raise InputError(f"supersample must be >= 1; got {supersample}")
    rng = np.random.default_rng(seed)

    extent = spacing_arr * np.asarray(shape)
    coords = [(np.arange(n) - (n - 1) / 2.0) * d for n, d in zip(shape, spacing_arr)]
    affine = np.diag([*spacing_arr, 1.0])
    affine[:3, 3] = [c[0] for c in coords]

    # --- anatomy: outer surface rho = 1, inner surface rho = inner_level, lesions inside
    blob = _make_blob(extent, rng)
    inner_level = 1.0 - rim_mm / float(np.mean(blob.radii))
    outer, inner = _blob_fractions(blob, coords, spacing_arr, (1.0, inner_level), supersample)
    lesion_specs = _place_lesions(blob, inner_level, int(n_lesions), spacing_arr, rng)
    lesion_total = np.zeros(shape)
    lesion_labels = np.zeros(shape, dtype=np.uint16)
    lesion_best = np.zeros(shape)
    for label, (centre, radii) in enumerate(lesion_specs, start=1):
        box, frac = _lesion_fraction(centre, radii, coords, spacing_arr, supersample)
        lesion_total[box] += frac
        view_best = lesion_best[box]
        take = (frac >= 0.5) & (frac > view_best)
        if not take.any():  # tiny lesion: label at least its most-covered voxel
            take = frac == frac.max()
        lesion_labels[box][take] = label
        np.maximum(view_best, frac, out=view_best)
    lesion_total = np.minimum(lesion_total, inner)  # lesions live in the interior (by placement)
    rim = outer - inner
    truth = np.clip(rim + lesion_total, 0.0, 1.0).astype(np.float32)

    # --- image: fraction-weighted tissue intensities, texture, bias, Rician noise
    interior = inner - lesion_total
    texture = 1.0 + _smooth_field(coords, rng, control_mm=_TEXTURE_MM, components=1, rms=0.03)[0]
    signal = (
        (1.0 - outer) * _INTENSITY["background"]
        + interior * _INTENSITY["interior"] * texture
        + rim * _INTENSITY["rim"]
        + lesion_total * _INTENSITY["lesion"]
    )
    norm = [c / (e / 2.0) for c, e in zip(coords, extent)]
    gx, gy, gz = np.meshgrid(*norm, indexing="ij", sparse=True)
    terms = [gx, gy, gz, gx * gy, gx * gz, gy * gz, gx * gx - 1 / 3, gy * gy - 1 / 3]
    coef = rng.normal(scale=bias / 2.0, size=len(terms))
    log_field = sum(c * t for c, t in zip(coef, terms))
    signal = signal * np.exp(log_field)
    sigma = noise * _INTENSITY["interior"]
    n1 = rng.normal(scale=sigma, size=shape)
    n2 = rng.normal(scale=sigma, size=shape)
    image = (np.sqrt((signal + n1) ** 2 + n2**2) * _IMAGE_UNITS).astype(np.float32)

    # --- raters: smooth displacement, own decision level, occasional missed lesion
    n_raters = int(n_raters)
    if n_raters > 1:
        spread = np.linspace(levels[0], levels[1], n_raters)
    else:
        spread = np.array([np.mean(levels)])
    rater_levels = rng.permutation(spread)
    index_grid = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    lesion_zones = [
        ndimage.binary_dilation(lesion_labels == k, iterations=2)
        for k in range(1, len(lesion_specs) + 1)
    ]
    raters = np.zeros((n_raters, *shape), dtype=np.uint8)
    missed: list[tuple[int, ...]] = []
    for r in range(n_raters):
        shift_mm = _smooth_field(coords, rng, control_mm=_JITTER_MM, components=3, rms=boundary_jitter_mm)
        warped_coords = [g + shift / d for g, shift, d in zip(index_grid, shift_mm, spacing_arr)]
        del shift_mm
        warped = ndimage.map_coordinates(truth, warped_coords, order=1, mode="nearest")
        mask = warped > rater_levels[r]
        misses = tuple(
            k for k in range(1, len(lesion_specs) + 1) if rng.random() < miss_probability
        )
        for k in misses:
            mask &= ~lesion_zones[k - 1]
        raters[r] = mask
        missed.append(misses)

    return Phantom(
        image=image,
        truth=truth,
        raters=raters,
        lesions=lesion_labels,
        affine=affine,
        spacing=tuple(float(s) for s in spacing_arr),  # type: ignore[arg-type]
        rater_levels=tuple(float(v) for v in rater_levels),
        missed_lesions=tuple(missed),
    )


# ---------------------------------------------------------------------------------- files
def write_phantom_files(
    folder: str | os.PathLike,
    ph: Phantom | None = None,
    *,
    overwrite: bool = False,
    **phantom_kwargs,
) -> dict[str, Path]:
    """Write one phantom subject into *folder* (created if missing).

    Files: ``image.nii.gz`` (float32), ``truth_soft.nii.gz`` (float32), ``lesions.nii.gz``
    (uint16) and ``rater-<i>.nii.gz`` (uint8, i = 1..R) with a JSON sidecar each
    (``{"rater": "<i>", "kind": "labels"}``).

    Parameters
    ----------
    folder : path-like
    ph : Phantom, optional
        What to write; rendered with ``phantom(**phantom_kwargs)`` when not given.
    overwrite : bool
        Replace existing files; otherwise an existing file is an :class:`InputError` and
        nothing is written.

    Returns
    -------
    dict
        Name (``"image"``, ``"truth"``, ``"lesions"``, ``"rater-1"``, ...) -> written path.
    """
    from softseg.outputs import OutputSet

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if ph is None:
        ph = phantom(**phantom_kwargs)
    elif phantom_kwargs:
        raise InputError("give either a Phantom or phantom keyword arguments, not both")
    files = _phantom_files(folder, ph)
    # one output set, the image its primary (renamed last): every file checked before the first
    # write, and after a failure or a kill none of them appears (nor the folder, when new)
    with OutputSet(list(files), overwrite=overwrite, make_dirs=True) as outs:
        return _write_files(outs, files)


def _phantom_files(folder: Path, ph: Phantom | None = None, *, n_raters: int = 0) -> dict[Path, tuple[str, Any]]:
    """Target -> (key, what to write: (array, affine) for a NIfTI, a dict for a JSON sidecar).

    Without *ph*, only the targets of a phantom with *n_raters* raters (the values are None).
    """
    from softseg.io import sidecar_path

    n = ph.n_raters if ph is not None else int(n_raters)
    items = [
        ("image", "image.nii.gz", None),
        ("truth", "truth_soft.nii.gz", None),
        ("lesions", "lesions.nii.gz", {"kind": "labels", "description": "lesions"}),
    ] + [(f"rater-{r + 1}", f"rater-{r + 1}.nii.gz", {"rater": str(r + 1), "kind": "labels"}) for r in range(n)]
    files: dict[Path, tuple[str, Any]] = {}
    for key, name, side in items:
        if ph is None:
            data = None
        elif key.startswith("rater-"):
            data = (ph.raters[int(key[6:]) - 1], ph.affine)
        else:
            data = ({"image": ph.image, "truth": ph.truth, "lesions": ph.lesions}[key], ph.affine)
        files[folder / name] = (key, data)
        if side is not None:
            files[sidecar_path(folder / name)] = (f"{key}.json", side)
    return files


def _write_files(outs: Any, files: dict[Path, tuple[str, Any]]) -> dict[str, Path]:
    from softseg.io import nifti_image

    out: dict[str, Path] = {}
    for target, (key, what) in files.items():
        if isinstance(what, dict):
            outs.write_json(target, what)
        else:
            data, affine = what
            out[key] = outs.save_image(target, nifti_image(target, data, affine=affine))
    return out


def write_dataset(
    folder: str | os.PathLike,
    *,
    n_subjects: int = 4,
    shape: Sequence[int] = DEFAULT_SHAPE,
    n_raters: int = 4,
    seed: int = 0,
    spacing: Sequence[float] = DEFAULT_SPACING,
    overwrite: bool = False,
) -> Path:
    """Write a phantom dataset in the DESIGN.md folder layout.

    ::

        folder/dataset.json
        folder/sub-01/image.nii.gz          float32 MR-like image
        folder/sub-01/rater-1.nii.gz ...    uint8 binary masks (+ .json sidecars)
        folder/sub-01/truth_soft.nii.gz     float32 partial-volume truth (for evaluation)
        folder/sub-01/lesions.nii.gz        uint16 lesion labels (for lesion-wise metrics)

    Subjects alternate between groups ``"centre-A"`` and ``"centre-B"`` (centre B is noisier),
    so group-wise splits can be tried. Subject *i* is rendered with the seed
    ``SeedSequence([seed, i])``; the whole dataset is deterministic for a seed.

    Parameters
    ----------
    folder : path-like
        Created if missing; must be empty (or ``overwrite=True``).
    n_subjects, shape, n_raters, seed, spacing
        See :func:`phantom`.
    overwrite : bool
        Replace files of an existing dataset.

    Returns
    -------
    Path
        *folder*.

    Raises
    ------
    InputError
        Bad arguments, a non-empty folder (without ``overwrite``), a missing or read-only parent
        folder; :class:`~softseg.errors.OutputError` on a full disk. Either way nothing was
        written: a new dataset is built in a temporary sibling folder and renamed into place at
        the end (:func:`softseg.outputs.output_folder`); an overwritten one is one
        :class:`softseg.outputs.OutputSet`. A killed run leaves only recognisable temporaries,
        removed by the next run.
    """
    from softseg.io import write_json
    from softseg.outputs import OutputSet, output_folder, recover

    folder = Path(folder)
    n_subjects = int(n_subjects)
    if n_subjects < 1:
        raise InputError(f"n_subjects must be >= 1; got {n_subjects}")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if folder.is_dir():
        recover(folder)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise InputError(
            f"{folder}: folder is not empty; choose a new folder or pass "
            "overwrite=True (--overwrite)"
        )
    subjects = [f"sub-{i + 1:02d}" for i in range(n_subjects)]
    groups = {s: ("centre-A" if i % 2 == 0 else "centre-B") for i, s in enumerate(subjects)}
    meta = {
        "name": "softseg-phantom",
        "description": "Partial-volume phantom: rim + small lesions; raters use different levels",
        "channels": ["image"],
        "classes": ["target"],
        "subjects": subjects,
        "groups": groups,
        "raters": [str(r + 1) for r in range(int(n_raters))],
        "truth": "truth_soft.nii.gz",
        "generator": {
            "function": "softseg.phantom.write_dataset",
            "seed": int(seed),
            "shape": [int(s) for s in shape],
            "spacing": [float(s) for s in spacing],
        },
    }

    def render(i: int, subject: str) -> Phantom:
        sub_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        noise = 0.04 if groups[subject] == "centre-A" else 0.07
        return phantom(shape, n_raters=n_raters, seed=sub_seed, spacing=spacing, noise=noise)

    if not folder.is_dir() or not any(folder.iterdir()):
        # a new dataset: built in a temporary sibling folder, renamed into place at the end, so
        # a refusal, a failure or a kill leaves no folder behind
        with output_folder(folder) as tmp:
            for i, subject in enumerate(subjects):
                write_phantom_files(tmp / subject, render(i, subject))
            write_json(tmp / "dataset.json", meta)
        return folder
    # overwrite=True on an existing dataset: every file of every subject and dataset.json are
    # one output set (dataset.json its primary), so the dataset is replaced all or nothing
    json_path = folder / "dataset.json"
    files: dict[Path, tuple[str, Any]] = {json_path: ("dataset", meta)}
    for subject in subjects:  # the targets only; the phantoms are rendered one at a time below
        files.update(_phantom_files(folder / subject, n_raters=n_raters))
    with OutputSet(list(files), overwrite=True, make_dirs=True) as outs:
        for i, subject in enumerate(subjects):
            _write_files(outs, _phantom_files(folder / subject, render(i, subject)))
        outs.write_json(json_path, meta)
    return folder
