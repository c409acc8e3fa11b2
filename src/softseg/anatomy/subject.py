"""Subjects made from the MNI template: deformation, partial volume, lesions, bias and noise.

A subject is the template seen through a random, smooth, invertible transform and acquired on a
coarser grid:

1. **Transform** (subject world ``x`` -> template world ``y``), drawn once and applied to the T1
   and to the tissue maps alike: a local free-form deformation ``x' = x + u(x)`` (cubic
   B-spline, :mod:`softseg.anatomy.fields`, RMS ``deformation_mm`` per axis, control points every
   ``deformation_spacing_mm``), then a global similarity: the subject's brain is the template
   scaled by ``scale`` (isotropic, volume x ``scale**3``), rotated by small angles about the
   brain's centre and shifted, i.e. ``y = c + R.T (x' - c - t) / scale``.
2. **Partial volume**: each output voxel is the mean of ``n**3`` sub-samples (``n = ceil(spacing /
   1 mm)`` per axis, at the template's own resolution), each sub-sample a trilinear
   interpolation of the 1 mm template at ``y``. Because linear interpolation is a convex
   combination and ``GM + WM <= mask`` holds at every template voxel, it also holds after the
   transform, so ``csf = mask - GM - WM >= 0`` and background = ``1 - mask``: the classes sum to 1
   at every voxel. With the identity transform and an integer spacing the sub-samples sit exactly
   on template voxel centres, so each output voxel is the exact block average and every class's
   volume equals the template's (tested against volumes computed from nilearn's images).
3. **Lesions** (targets ``tissue-lesion`` and ``lesion``): 3-8 ellipsoids of 2-8 mm mean
   diameter, randomly oriented and elongated, placed where the subject's white matter is nearly
   pure; their partial-volume fraction is integrated with 4 x 4 x 4 points per voxel and
   replaces the tissue underneath (every class is scaled by ``1 - lesion``). On T1 they are
   hypointense (55-75 % of the white-matter intensity, per lesion), like MS lesions.
4. **Image**: the sub-sampled T1 (partial volume of intensities), a subject gamma (tissue contrast
   varies between scanners), the lesions, a smooth multiplicative bias field
   ``exp(bias * f)`` (``f`` a unit-RMS B-spline field, control points every 60 mm) and Rician
   noise ``|s + n1 + i n2|`` with ``sigma = noise`` x white-matter intensity; in arbitrary units
   (white matter ~ 870).
5. **Raters**: see :mod:`softseg.anatomy.raters`.

Everything random comes from one ``numpy.random.Generator`` seeded with ``seed``: same seed,
same subject, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from softseg.anatomy.fields import random_field
from softseg.anatomy.raters import RaterModel, RaterRecord, simulate_raters
from softseg.anatomy.template import Template, load_template
from softseg.errors import InputError

__all__ = [
    "CLASSES",
    "DEFAULT_SPACING",
    "LESION",
    "TARGETS",
    "AnatomySubject",
    "Transform",
    "check_spacing",
    "make_subject",
    "output_grid",
]

#: Tissue classes in class-index order 1..3 (0 = background), as dataset.json lists them.
CLASSES = ("grey matter", "white matter", "csf")
#: The lesion class name.
LESION = "lesion"
#: target -> foreground classes (index 1..K).
TARGETS: dict[str, tuple[str, ...]] = {
    "tissue": CLASSES,
    "tissue-lesion": (*CLASSES, LESION),
    "lesion": (LESION,),
}
#: Default output voxel size (mm): 2 mm isotropic keeps a subject at about 83 x 101 x 88 voxels
#: (a 2D U-Net trains on its axial slices on a CPU in minutes) while the cortex (2-4 mm thick)
#: stays resolved as partial volume.
DEFAULT_SPACING = (2.0, 2.0, 2.0)
#: Margin (mm) around the template's head mask: room for scale 1.05, 4 mm shifts and the warp.
_MARGIN_MM = 12.0
_LESION_SUPERSAMPLE = 4
_BIAS_CONTROL_MM = 60.0
_IMAGE_UNITS = 1000.0
_CHUNK_VOXELS = 1 << 20  # sub-samples interpolated at a time (bounds the temporaries)


@dataclass(frozen=True)
class Transform:
    """The subject's transform parameters (drawn once; see the module docstring).

    Attributes
    ----------
    scale : float
        Isotropic scale of the subject relative to the template (volume x scale**3).
    rotation_deg : tuple of 3 float
        Rotation angles about the R, A, S axes (degrees), applied in that order.
    translation_mm : tuple of 3 float
    deformation_mm : float
        Expected RMS of the local displacement per axis.
    jacobian_range : tuple of 2 float
        Minimum and maximum of ``det(I + grad u)`` over the output grid (> 0: no folding).
    """

    scale: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    deformation_mm: float
    jacobian_range: tuple[float, float]


@dataclass(frozen=True, eq=False)
class AnatomySubject:
    """One generated subject. Arrays in NIfTI file order (X, Y, Z) = (R, A, S).

    Attributes
    ----------
    image : ndarray (X, Y, Z), float32
        T1-weighted image, arbitrary units (white matter ~ 870, CSF ~ 270, background ~ noise).
    truth : ndarray (K + 1, X, Y, Z), float32, values in [0, 1]
        Partial-volume fraction of background (index 0) and of each class; sums to 1 at every
        voxel (within 1e-6).
    classes : tuple of str
        Foreground class names, index 1..K.
    raters : ndarray (R, X, Y, Z), uint8
        One label map per rater (0 = background, k = class k).
    lesions : ndarray (X, Y, Z), uint16, or None
        Lesion label map (0 none, k = lesion k: voxels at least half inside it, or the most
        covered voxel of a lesion smaller than that); None when the target has no lesions.
    affine : ndarray (4, 4), float64
        Voxel-to-world (MNI mm), diagonal.
    spacing : tuple of 3 float (mm)
    transform : Transform
    rater_record : RaterRecord
        What each rater did (decision offsets, lesion levels, missed lesions).
    seed : int
    """

    image: np.ndarray
    truth: np.ndarray
    classes: tuple[str, ...]
    raters: np.ndarray
    lesions: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    transform: Transform
    rater_record: RaterRecord
    seed: int
    parameters: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def n_raters(self) -> int:
        return int(self.raters.shape[0])

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def fraction(self, name: str) -> np.ndarray:
        """The truth map of one class (``"background"`` or a name of :attr:`classes`)."""
        names = ("background", *self.classes)
        if name not in names:
            raise InputError(f"no class {name!r}; classes: {', '.join(names)}")
        return self.truth[names.index(name)]

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each foreground class in mL (sum of its fractions x voxel volume)."""
        return {
            c: float(self.truth[k + 1].sum(dtype=np.float64)) * self.voxel_ml
            for k, c in enumerate(self.classes)
        }

    def truth_labels(self) -> np.ndarray:
        """(X, Y, Z) uint8: the class with the largest fraction at each voxel (0 = background)."""
        return np.argmax(self.truth, axis=0).astype(np.uint8)


# ------------------------------------------------------------------------------------ grid
@dataclass(frozen=True)
class _Grid:
    """The output grid in template index units (template voxel v spans [v - 0.5, v + 0.5])."""

    shape: tuple[int, int, int]
    step: np.ndarray  # (3,) output voxel size in template voxels
    edge: np.ndarray  # (3,) template index of the lower edge of output voxel 0
    subsample: tuple[int, int, int]  # sub-samples per output voxel and axis
    affine: np.ndarray  # output voxel -> world
    template_affine: np.ndarray

    def _to_world(self, axis: int, index: np.ndarray) -> np.ndarray:
        a = self.template_affine
        return a[axis, axis] * index + a[axis, 3]

    def centres_world(self, axis: int) -> np.ndarray:
        """World coordinates (mm) of the output voxel centres along *axis*."""
        i = np.arange(self.shape[axis])
        return self._to_world(axis, self.edge[axis] + (i + 0.5) * self.step[axis])

    def sub_world(self, axis: int, lo: int, hi: int) -> np.ndarray:
        """World coordinates of the sub-samples of output voxels lo..hi-1 along *axis*."""
        n, s = self.subsample[axis], self.step[axis]
        inside = (np.arange(n) + 0.5) * (s / n)
        index = self.edge[axis] + np.arange(lo, hi)[:, None] * s + inside[None, :]
        return self._to_world(axis, index.ravel())


def output_grid(
    spacing: Sequence[float] = DEFAULT_SPACING, *, template: Template | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the output grid for a voxel size (mm): the template's head mask
    bounding box plus a 12 mm margin, aligned so that integer spacings block-average whole
    template voxels."""
    grid = _make_grid(check_spacing(spacing), template or load_template())
    return grid.shape, grid.affine


def check_spacing(spacing: Sequence[float] | float) -> np.ndarray:
    """The output voxel size of generated subjects as 3 floats (mm).

    Parameters
    ----------
    spacing : float or sequence of 1 or 3 floats
        mm; one value means isotropic voxels.

    Returns
    -------
    ndarray, shape (3,), float64

    Raises
    ------
    InputError
        Not 1 or 3 finite values between 0.5 and 8 mm.
    """
    arr = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.isfinite(arr).all() or not ((arr >= 0.5) & (arr <= 8.0)).all():
        raise InputError(
            f"spacing must be 1 or 3 voxel sizes between 0.5 and 8 mm; got {tuple(np.ravel(spacing))}"
        )
    return arr


def _make_grid(spacing: np.ndarray, template: Template) -> _Grid:
    a = template.affine
    if not np.allclose(a[:3, :3], np.diag(np.diag(a)[:3])) or (np.diag(a)[:3] <= 0).any():
        raise InputError("expected a template with a diagonal RAS affine (nilearn's MNI152)")
    voxel = np.diag(a)[:3]
    idx = np.nonzero(template.mask)
    lo = np.array([i.min() for i in idx], dtype=np.float64)
    hi = np.array([i.max() for i in idx], dtype=np.float64)
    margin = np.ceil(_MARGIN_MM / voxel)
    edge = lo - margin - 0.5
    extent = hi - lo + 1 + 2 * margin  # template voxels
    step = spacing / voxel
    shape = tuple(int(np.ceil(e / s - 1e-9)) for e, s in zip(extent, step))
    subsample = tuple(max(1, int(np.ceil(s - 1e-9))) for s in step)
    affine = np.eye(4)
    for axis in range(3):
        affine[axis, axis] = spacing[axis]
        affine[axis, 3] = a[axis, axis] * (edge[axis] + 0.5 * step[axis]) + a[axis, 3]
    return _Grid(
        shape=shape,  # type: ignore[arg-type]
        step=step,
        edge=edge,
        subsample=subsample,  # type: ignore[arg-type]
        affine=affine,
        template_affine=a,
    )


# ------------------------------------------------------------------------------ transform
def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _jacobian_range(field, grid: _Grid, mask: np.ndarray) -> tuple[float, float]:
    """min/max of det(I + grad u) at the output voxel centres (finite differences)."""
    coords = [grid.centres_world(a) for a in range(3)]
    u = field.on_grid(coords, dtype=np.float64)
    step = [float(c[1] - c[0]) if c.size > 1 else 1.0 for c in coords]
    jac = np.empty((3, 3, *u.shape[1:]))
    for i in range(3):
        grads = np.gradient(u[i], *step)
        for j in range(3):
            jac[i, j] = grads[j] + (1.0 if i == j else 0.0)
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
    inside = det[mask] if mask.any() else det.ravel()
    return float(inside.min()), float(inside.max())


# ------------------------------------------------------------------------------- sampling
def _sample_template(
    template: Template,
    grid: _Grid,
    field,
    matrix: np.ndarray,
    centre: np.ndarray,
    shift: np.ndarray,
) -> dict[str, np.ndarray]:
    """Warp the template into the output grid with partial volume (see the module docstring)."""
    nx, ny, nz = grid.shape
    sx, sy, sz = grid.subsample
    ys = grid.sub_world(1, 0, ny)
    zs = grid.sub_world(2, 0, nz)
    out = {k: np.empty(grid.shape, dtype=np.float32) for k in ("t1", "gm", "wm", "mask")}
    volumes = {
        "t1": template.t1,
        "gm": template.gm,
        "wm": template.wm,
        "mask": template.mask.astype(np.float32),
    }
    support = template.support
    a = grid.template_affine
    inv_step = 1.0 / np.diag(a)[:3]
    planes = max(1, _CHUNK_VOXELS // (sx * ys.size * zs.size))
    for x0 in range(0, nx, planes):
        x1 = min(nx, x0 + planes)
        xs = grid.sub_world(0, x0, x1)
        u = field.on_grid((xs, ys, zs))
        # x' = x + u ; y = c + M (x' - c - t); template index = (y - a[:3, 3]) / step
        rel = [
            xs[:, None, None] + u[0] - (centre[0] + shift[0]),
            ys[None, :, None] + u[1] - (centre[1] + shift[1]),
            zs[None, None, :] + u[2] - (centre[2] + shift[2]),
        ]
        del u
        coords = np.empty((3, *rel[0].shape), dtype=np.float64)
        for i in range(3):
            yi = centre[i] + matrix[i, 0] * rel[0] + matrix[i, 1] * rel[1] + matrix[i, 2] * rel[2]
            coords[i] = (yi - a[i, 3]) * inv_step[i]
        del rel
        # every template volume is 0 outside the head mask: interpolate only the sub-samples
        # whose nearest template voxel lies in the mask dilated by one voxel (3x3x3), i.e.
        # those with a corner of their interpolation cell in the mask (about a third)
        nearest = np.rint(coords).astype(np.intp)
        inside = np.ones(nearest.shape[1:], dtype=bool)
        for i in range(3):
            inside &= (nearest[i] >= 0) & (nearest[i] < support.shape[i])
        flat = np.ravel_multi_index(tuple(np.where(inside, nearest[i], 0) for i in range(3)), support.shape)
        inside &= support.ravel()[flat]
        del nearest, flat
        where = np.nonzero(inside.ravel())[0]
        points = coords.reshape(3, -1)[:, where]
        del coords
        for key, vol in volumes.items():
            sub = np.zeros(inside.size, dtype=np.float32)
            sub[where] = ndimage.map_coordinates(
                vol, points, order=1, mode="constant", cval=0.0, prefilter=False,
                output=np.float32,
            )
            blocks = sub.reshape(x1 - x0, sx, ny, sy, nz, sz)
            out[key][x0:x1] = blocks.mean(axis=(1, 3, 5), dtype=np.float64)
    return out


# -------------------------------------------------------------------------------- lesions
@dataclass(frozen=True)
class _Lesion:
    centre: np.ndarray  # world mm
    radii: np.ndarray  # semi-axes mm
    rotation: np.ndarray  # (3, 3)
    intensity: float  # relative to white matter


def _place_lesions(
    wm: np.ndarray,
    grid: _Grid,
    n_lesions: int,
    diameter_mm: tuple[float, float],
    rng: np.random.Generator,
) -> list[_Lesion]:
    """Lesions centred where the white matter is nearly pure over the lesion's extent (the
    minimum of the white-matter fraction over a cube reaching 1 mm beyond the lesion is >= 0.6),
    spread over the axial levels that have such white matter, at least 2 mm apart."""
    spacing = np.asarray(grid.affine.diagonal()[:3])
    lesions: list[_Lesion] = []
    candidates_by_size: dict[int, np.ndarray] = {}
    for _ in range(400 * max(n_lesions, 1)):
        if len(lesions) >= n_lesions:
            break
        diameter = rng.uniform(*diameter_mm)
        stretch = np.exp(rng.uniform(-0.3, 0.3, size=3))
        stretch /= np.exp(np.log(stretch).mean())  # geometric mean 1: mean diameter kept
        radii = 0.5 * diameter * stretch
        rotation = _rotation(rng.uniform(-180.0, 180.0, size=3))
        reach = int(np.ceil((radii.max() + 1.0) / spacing.min()))
        if reach not in candidates_by_size:
            footprint = np.ones((2 * reach + 1,) * 3, dtype=bool)
            pure = ndimage.minimum_filter(wm, footprint=footprint, mode="constant", cval=0.0)
            candidates_by_size[reach] = np.argwhere(pure >= 0.6)
        candidates = candidates_by_size[reach]
        if candidates.shape[0] == 0:
            continue
        # axial level first, uniformly over the slices that hold eligible white matter, then a
        # voxel in it: MS lesions occur throughout the white matter, and drawing voxels directly
        # would crowd them into the few slices of the centrum semiovale
        levels = np.unique(candidates[:, 2])
        in_level = candidates[candidates[:, 2] == levels[rng.integers(levels.size)]]
        voxel = in_level[rng.integers(in_level.shape[0])]
        centre = grid.affine[:3, :3] @ (voxel + rng.uniform(-0.5, 0.5, size=3)) + grid.affine[:3, 3]
        if any(np.linalg.norm(centre - o.centre) < radii.max() + o.radii.max() + 2.0 for o in lesions):
            continue
        lesions.append(_Lesion(centre, radii, rotation, float(rng.uniform(0.55, 0.75))))
    return lesions


def _lesion_fraction(lesion: _Lesion, grid: _Grid, shape) -> tuple[tuple[slice, ...], np.ndarray]:
    """Partial-volume fraction of one rotated ellipsoid inside its bounding box."""
    spacing = grid.affine.diagonal()[:3]
    origin = grid.affine[:3, 3]
    n = _LESION_SUPERSAMPLE
    box, axes = [], []
    for axis in range(3):
        lo = int(np.floor((lesion.centre[axis] - lesion.radii.max() - origin[axis]) / spacing[axis]))
        hi = int(np.ceil((lesion.centre[axis] + lesion.radii.max() - origin[axis]) / spacing[axis]))
        lo, hi = max(lo, 0), min(hi + 1, shape[axis])
        box.append(slice(lo, hi))
        offsets = ((np.arange(n) + 0.5) / n - 0.5) * spacing[axis]
        centres = origin[axis] + np.arange(lo, hi) * spacing[axis]
        axes.append((centres[:, None] + offsets[None, :]).ravel() - lesion.centre[axis])
    px, py, pz = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = np.zeros(np.broadcast_shapes(px.shape, py.shape, pz.shape), dtype=bool)
    q2 = np.zeros(inside.shape)
    for row in range(3):  # body coordinates q = R.T p / radii
        r = lesion.rotation[:, row]
        q = (r[0] * px + r[1] * py + r[2] * pz) / lesion.radii[row]
        q2 += q * q
    inside = q2 < 1.0
    sizes = [s.stop - s.start for s in box]
    frac = inside.reshape(sizes[0], n, sizes[1], n, sizes[2], n).mean(axis=(1, 3, 5))
    return tuple(box), frac


# -------------------------------------------------------------------------------- subject
def make_subject(
    *,
    seed: int = 0,
    target: str = "tissue",
    spacing: Sequence[float] | float = DEFAULT_SPACING,
    n_raters: int = 4,
    deformation_mm: float = 2.0,
    deformation_spacing_mm: float = 40.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    rotation_deg: float = 5.0,
    translation_mm: float = 4.0,
    n_lesions: int | tuple[int, int] = (3, 8),
    lesion_diameter_mm: tuple[float, float] = (2.0, 8.0),
    bias: float = 0.15,
    noise: float = 0.03,
    gamma_range: tuple[float, float] = (0.85, 1.15),
    raters: RaterModel | None = None,
    template: Template | None = None,
) -> AnatomySubject:
    """Generate one subject from the MNI ICBM152 template (see the module docstring).

    Parameters
    ----------
    seed : int
        Seed of the subject's ``numpy.random.default_rng``; same seed, identical subject.
    target : {"tissue", "tissue-lesion", "lesion"}
        Which foreground classes the truth and the raters hold (:data:`TARGETS`): the three
        tissues; the tissues plus MS-like lesions (4 classes); or the lesions alone (one class,
        the tissues folded into background).
    spacing : float or 3 floats, mm, each in [0.5, 8]
        Output voxel size (default 2 mm isotropic, :data:`DEFAULT_SPACING`).
    n_raters : int, >= 1
    deformation_mm : float, >= 0
        Expected RMS of the local displacement per axis (0: no local deformation).
    deformation_spacing_mm : float, > 0
        Control-point distance of the local deformation (its correlation length).
    scale_range : (float, float)
        Range of the isotropic scale (uniform); (1, 1) for none.
    rotation_deg, translation_mm : float, >= 0
        Rotation angles and shifts are uniform in [-value, value] per axis.
    n_lesions : int or (int, int), 0 .. 50
        Lesions to place (targets with lesions): a count, or a range drawn uniformly
        (default 3..8). Fewer are placed only when the white matter has no room left.
    lesion_diameter_mm : (float, float)
        Range of the lesions' mean diameters (uniform).
    bias : float, >= 0
        Log-amplitude (RMS) of the multiplicative bias field.
    noise : float, >= 0
        Rician noise sigma relative to the white-matter intensity.
    gamma_range : (float, float)
        Range of the subject's intensity gamma (tissue contrast).
    raters : RaterModel, optional
        How raters disagree (default :class:`~softseg.anatomy.raters.RaterModel()`).
    template : Template, optional
        Default :func:`~softseg.anatomy.template.load_template` (needs nilearn).

    Returns
    -------
    AnatomySubject

    Raises
    ------
    InputError
        An unknown target, a spacing out of range, bad counts or ranges, nilearn missing.
    """
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    spacing_arr = check_spacing(spacing)
    if int(n_raters) < 1:
        raise InputError(f"n_raters must be >= 1; got {n_raters}")
    for name, value in (
        ("deformation_mm", deformation_mm), ("rotation_deg", rotation_deg),
        ("translation_mm", translation_mm), ("bias", bias), ("noise", noise),
    ):
        if not np.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite number >= 0; got {value}")
    for name, pair, (lowest, highest) in (
        ("scale_range", scale_range, (0.5, 2.0)),
        ("gamma_range", gamma_range, (0.2, 5.0)),
        ("lesion_diameter_mm", lesion_diameter_mm, (0.5, 30.0)),
    ):
        lo, hi = (float(v) for v in pair)
        if not lowest <= lo <= hi <= highest:
            raise InputError(
                f"{name} must be (low, high) with {lowest} <= low <= high <= {highest}; got {(lo, hi)}"
            )
    lesion_counts = (n_lesions, n_lesions) if np.isscalar(n_lesions) else tuple(n_lesions)
    if len(lesion_counts) != 2 or not 0 <= int(lesion_counts[0]) <= int(lesion_counts[1]) <= 50:
        raise InputError(
            f"n_lesions must be a count or a (low, high) range within 0 .. 50; got {n_lesions}"
        )
    template = template or load_template()
    rater_model = raters or RaterModel()
    rng = np.random.default_rng(int(seed))
    grid = _make_grid(spacing_arr, template)

    # --- transform (one draw, applied to T1 and tissue maps alike)
    scale = float(rng.uniform(*scale_range))
    angles = rng.uniform(-rotation_deg, rotation_deg, size=3)
    shift = rng.uniform(-translation_mm, translation_mm, size=3)
    idx = np.argwhere(template.mask).mean(axis=0)
    centre = template.affine[:3, :3] @ idx + template.affine[:3, 3]
    matrix = _rotation(angles).T / scale
    lo_world = grid.affine[:3, 3] - 0.5 * spacing_arr
    size_world = np.asarray(grid.shape) * spacing_arr
    deformation = random_field(
        lo_world, size_world, control_spacing_mm=deformation_spacing_mm, components=3,
        rms=deformation_mm, rng=rng,
    )
    maps = _sample_template(template, grid, deformation, matrix, centre, shift)
    head = np.clip(maps["mask"], 0.0, 1.0)
    gm = np.clip(maps["gm"], 0.0, head)
    wm = np.clip(maps["wm"], 0.0, head)
    wm = np.minimum(wm, head - gm)  # float rounding only: GM + WM <= head holds exactly
    jacobian = _jacobian_range(deformation, grid, head > 0.5)

    # --- lesions
    has_lesions = LESION in TARGETS[target]
    lesion_frac = np.zeros(grid.shape, dtype=np.float64)
    lesion_labels = np.zeros(grid.shape, dtype=np.uint16) if has_lesions else None
    lesion_specs: list[_Lesion] = []
    if has_lesions:
        count = int(rng.integers(int(lesion_counts[0]), int(lesion_counts[1]) + 1))
        lesion_specs = _place_lesions(wm, grid, count, lesion_diameter_mm, rng)
        best = np.zeros(grid.shape)
        for label, lesion in enumerate(lesion_specs, start=1):
            box, frac = _lesion_fraction(lesion, grid, grid.shape)
            lesion_frac[box] += frac
            view = best[box]
            take = (frac >= 0.5) & (frac > view)
            if not take.any():
                take = (frac == frac.max()) & (frac > 0)
            lesion_labels[box][take] = label
            np.maximum(view, frac, out=view)
        lesion_frac = np.minimum(lesion_frac, head)  # inside the head (placement makes it so)

    # --- truth: background, classes (the lesion replaces what was there)
    keep = 1.0 - lesion_frac
    tissue = {
        "background": (1.0 - head),
        "grey matter": gm,
        "white matter": wm,
        "csf": np.maximum(head - gm - wm, 0.0),
    }
    classes = TARGETS[target]
    truth = np.empty((len(classes) + 1, *grid.shape), dtype=np.float32)
    if target == "lesion":
        truth[1] = lesion_frac
        truth[0] = 1.0 - lesion_frac
    else:
        for k, name in enumerate(("background", *CLASSES)):
            truth[k] = tissue[name] * keep
        if has_lesions:
            truth[len(CLASSES) + 1] = lesion_frac

    # --- image
    gamma = float(rng.uniform(*gamma_range))
    t1 = np.clip(maps["t1"], 0.0, 1.0).astype(np.float64) ** gamma
    wm_level = float(np.median(t1[wm > 0.9])) if (wm > 0.9).any() else float(t1.max())
    if lesion_specs:
        lesion_intensity = np.zeros(grid.shape)
        for label, lesion in enumerate(lesion_specs, start=1):
            lesion_intensity[lesion_labels == label] = lesion.intensity * wm_level
        # voxels partly inside a lesion but not labelled: the nearest lesion's intensity
        missing = (lesion_frac > 0) & (lesion_intensity == 0)
        if missing.any():
            lesion_intensity[missing] = np.mean([les.intensity for les in lesion_specs]) * wm_level
        t1 = t1 * keep + lesion_intensity * lesion_frac
    bias_field = random_field(
        lo_world, size_world, control_spacing_mm=_BIAS_CONTROL_MM, components=1, rms=1.0, rng=rng
    ).on_grid([grid.centres_world(a) for a in range(3)], dtype=np.float64)[0]
    signal = t1 * np.exp(bias * bias_field)
    sigma = noise * wm_level
    n1 = rng.normal(scale=sigma, size=grid.shape)
    n2 = rng.normal(scale=sigma, size=grid.shape)
    image = (np.sqrt((signal + n1) ** 2 + n2**2) * _IMAGE_UNITS).astype(np.float32)

    # --- raters
    lesion_zones = []
    if lesion_specs:
        for label in range(1, len(lesion_specs) + 1):
            lesion_zones.append(ndimage.binary_dilation(lesion_labels == label, iterations=2))
    lesion_index = classes.index(LESION) + 1 if has_lesions else None
    rater_maps, record = simulate_raters(
        truth, spacing_arr, int(n_raters), rater_model, rng,
        lesion_class=lesion_index, lesion_zones=lesion_zones,
    )

    transform = Transform(
        scale=scale,
        rotation_deg=tuple(float(v) for v in angles),  # type: ignore[arg-type]
        translation_mm=tuple(float(v) for v in shift),  # type: ignore[arg-type]
        deformation_mm=float(deformation_mm),
        jacobian_range=jacobian,
    )
    parameters = {
        "seed": int(seed), "target": target, "spacing": [float(s) for s in spacing_arr],
        "n_raters": int(n_raters), "deformation_mm": float(deformation_mm),
        "deformation_spacing_mm": float(deformation_spacing_mm),
        "scale_range": [float(v) for v in scale_range], "rotation_deg": float(rotation_deg),
        "translation_mm": float(translation_mm), "n_lesions": [int(v) for v in lesion_counts],
        "lesion_diameter_mm": [float(v) for v in lesion_diameter_mm], "bias": float(bias),
        "noise": float(noise), "gamma_range": [float(v) for v in gamma_range],
        "raters": rater_model.as_dict(),
    }
    return AnatomySubject(
        image=image,
        truth=truth,
        classes=classes,
        raters=rater_maps,
        lesions=lesion_labels,
        affine=grid.affine,
        spacing=tuple(float(s) for s in spacing_arr),  # type: ignore[arg-type]
        transform=transform,
        rater_record=record,
        seed=int(seed),
        parameters=parameters,
    )
