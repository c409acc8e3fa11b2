"""Fill the slices between painted slices: shape-based interpolation per confidence level.

A rater paints a structure on every few slices; the slices in between are filled so that each
region varies smoothly from one painted slice to the next. The method is shape-based
interpolation (Raya & Udupa 1990, "Shape-based interpolation of multidimensional objects";
Herman, Zheng & Bucholtz 1992 for several nested grey levels): each painted slice's region is
turned into a signed distance map (exact Euclidean distances in mm with the in-plane voxel
size, the values of ``scipy.ndimage.distance_transform_edt``), the two maps around a gap are
mixed linearly in the slice position, and a filled slice's region is where the mix is negative.

Rules (the same for the Python API, the ``softseg interpolate`` command and the viewer):

* **Painted slices.** The caller says which slices were painted (``painted=``; the viewer passes
  the slices the rater touched). A painted slice that holds no paint is an *empty painted slice*:
  the rater said "nothing here", and a structure interpolated towards it shrinks and ends.
  Without ``painted``, the slices holding any non-zero voxel are the painted ones
  (:func:`painted_slices`; ``softseg interpolate`` does this unless ``--slices`` is given).
* **What is filled.** Only slices lying strictly between two painted slices, and not painted
  themselves; whatever they held is replaced. Painted slices and slices before the first or
  after the last painted slice are never changed (bit for bit).
* **Levels stay nested.** For a confidence level map (0 = background, 1..K) the region of level
  >= k is interpolated for each k; each region is then cut to the one below it (so level >= k+1
  lies inside level >= k on every filled slice, whatever the shapes) and the levels are rebuilt
  as the number of nested regions a voxel lies in.
* **Components.** On each level, the connected regions (8-connected in the slice) of the two
  painted slices are matched by overlap; regions that overlap, directly or through a chain, are
  interpolated together (so a structure may split or merge). A region that overlaps nothing on
  the other slice *ends* in the gap: it shrinks towards its deepest point and is gone from the
  middle of the gap on (a slice exactly half-way no longer holds it); one that appears grows
  the same way from the middle. This keeps each structure's fate local: an unrelated region
  elsewhere on the slice does not change how fast another one ends.
* **Holes.** A region with holes is interpolated as its filled outline minus its holes, each
  interpolated on its own (islands in holes likewise). A ring (a cortex-like rim) whose radius
  changes by more than its thickness between two painted slices does not overlap itself, but
  its outline and its hole do: it is filled as a ring instead of vanishing half-way.
* **Signed distance.** ``sd = edt(outside) - edt(inside)`` shifted by half a voxel (half the
  smaller in-plane voxel size, in mm) so that the boundary lies between voxel centres. For a
  filled slice at fraction ``t = (s - a) / (b - a)`` of the gap ``(a, b)`` a voxel is inside
  when ``(1 - t) sd_a + t sd_b < 0`` (a voxel on the interpolated boundary, within
  :data:`BOUNDARY_TOLERANCE_MM`, is outside: float rounding never decides).
* **Multi-class label maps** (:func:`interpolate_labels`, 0 = background, classes 1..K): each
  class's region is interpolated the same way and each voxel goes to the class with the most
  negative interpolated distance (background when no class is negative; the lower class when
  two are equal within :data:`BOUNDARY_TOLERANCE_MM`), so classes never overlap. A layer
  painted with classes *and* levels (:mod:`softseg.class_levels` codes):
  :func:`interpolate_class_levels` (the class as for label maps, the level nested within it).
  Per-class level maps (``rater-<id>_label-<class>.nii.gz``) interpolated one by one with
  :func:`interpolate_levels` may overlap where two classes meet.
* **Slice border.** The border of the slice is not a boundary: a region cut by the field of
  view is as deep as the background inside the slice makes it.

Cost: distances are needed only at voxels inside exactly one of the two painted regions (a
voxel inside both is inside on every filled slice, one inside neither is outside). They come
from k-d trees (``scipy.spatial.cKDTree``) of the regions' surface voxels, which hold every
nearest voxel (a step from any other voxel towards the query point would come closer), so
they equal the Euclidean distance transform's values. Each painted slice is prepared once
(components, holes, trees, in its region's bounding box plus one voxel) for both of its gaps.
About 0.7 s of one core for a 197 x 233 x 189 three-level rim map painted every 5th slice
(``benchmarks/interpolation.py``). Everything is pure numpy/scipy without module state, so it
may run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from softseg.errors import InputError
from softseg.metrics.distance import surface

__all__ = [
    "BOUNDARY_TOLERANCE_MM",
    "METHOD",
    "SliceInterpolation",
    "interpolate_class_levels",
    "interpolate_labels",
    "interpolate_levels",
    "painted_slices",
]

#: One-line description of the method, written in sidecars (``interpolation.method``).
METHOD = "shape-based (signed distance, linear between painted slices, nested levels)"
#: A voxel is inside when its interpolated signed distance is below ``-BOUNDARY_TOLERANCE_MM``:
#: voxels on the interpolated boundary (within float rounding) are outside, whatever the rounding.
BOUNDARY_TOLERANCE_MM = 1e-6


@dataclass(frozen=True, eq=False)
class SliceInterpolation:
    """The result of :func:`interpolate_levels` / :func:`interpolate_labels`.

    Attributes
    ----------
    filled : ndarray, same shape and dtype as the input
        A new array: the input with the interpolated slices replaced (the input is not changed).
    axis : int
        The slice axis (non-negative).
    painted : tuple of int
        The slices taken as painted, sorted (indices along ``axis``).
    interpolated : tuple of int
        The slices that were filled, sorted: every slice strictly between two painted slices
        that is not painted itself (empty when the painted slices are contiguous).
    changed : tuple of ndarray of intp
        Index arrays (one per axis of the input, fancy-indexing order) of the voxels whose value
        differs from the input; all lie on interpolated slices. napari's
        ``Labels.data_setitem(changed, values)`` applies the fill as one undo step.
    values : ndarray, shape (N,), dtype of the input
        The new values at ``changed``.
    kind : {"levels", "labels", "class-levels"}
        Nested confidence levels, exclusive class labels, or both (:mod:`softseg.class_levels`
        codes).
    """

    filled: np.ndarray
    axis: int
    painted: tuple[int, ...]
    interpolated: tuple[int, ...]
    changed: tuple[np.ndarray, ...]
    values: np.ndarray
    kind: str

    @property
    def n_changed(self) -> int:
        """Number of voxels whose value changed."""
        return int(self.values.size)

    def as_record(self) -> dict[str, Any]:
        """JSON-able summary (written under ``"interpolation"`` in a rater sidecar).

        Keys: ``method``, ``kind``, ``axis``, ``painted``, ``interpolated`` (slice indices along
        ``axis`` of the array that was interpolated) and ``changed_voxels``.
        """
        return {
            "method": METHOD,
            "kind": self.kind,
            "axis": self.axis,
            "painted": list(self.painted),
            "interpolated": list(self.interpolated),
            "changed_voxels": self.n_changed,
        }


# ----------------------------------------------------------------------------- public API
def painted_slices(array: np.ndarray, *, axis: int = 0) -> tuple[int, ...]:
    """The slices along *axis* that hold at least one non-zero voxel (sorted).

    Parameters
    ----------
    array : ndarray, ndim >= 2
        A label or level map.
    axis : int
        Slice axis.

    Returns
    -------
    tuple of int
    """
    arr = np.asarray(array)
    axis = _axis(arr, axis, "array")
    moved = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
    return tuple(int(i) for i in np.flatnonzero(moved.any(axis=1)))


def interpolate_levels(
    levels: np.ndarray,
    *,
    axis: int = 0,
    painted: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    n_levels: int | None = None,
    name: str = "level map",
) -> SliceInterpolation:
    """Fill the slices between painted slices of a confidence level map (nested levels).

    Parameters
    ----------
    levels : ndarray, shape (*spatial), ndim >= 2
        Painted confidence levels: whole numbers 0 (background) .. K (K <= 9), any integer,
        bool or whole-valued float dtype. A binary mask is a level map with K = 1.
    axis : int
        The slice axis (the viewer's slider axis: 0 for napari's display order).
    painted : iterable of int, optional
        The painted slices along *axis*, including painted slices left empty on purpose.
        Default: the slices holding any non-zero voxel (:func:`painted_slices`). Negative
        indices count from the end.
    spacing : sequence of float, length ndim, optional
        Voxel size in mm along every axis (napari's ``layer.scale`` in display order, or
        :func:`softseg.geometry.voxel_size` in file order). Only the in-plane sizes are used:
        distances are measured in mm in each slice; along the slice axis the mix is linear in
        the slice position. Default: 1 mm.
    n_levels : int, optional
        K of the confidence scale the map was painted with. A voxel above K means slices were
        painted with another (larger) scale, and is refused naming those slices.
    name : str
        What the map is (a file name, ``"layer 'rater-1'"``), first in every message.

    Returns
    -------
    SliceInterpolation
        ``filled`` has the dtype of *levels*; its filled slices hold levels 0..K with level
        >= k+1 inside level >= k.

    Raises
    ------
    InputError
        A soft (fractional) map, NaN/Inf, negative values or values above 9 (see
        :func:`softseg.confidence.detect_label_kind`); a level above *n_levels*; fewer than two
        painted slices; a painted index out of range; a bad *axis* or *spacing*.

    Examples
    --------
    Seven voxels on slice 0, one on slice 3: the filled slices hold five and three, as the
    width changes linearly (7 - 2 t * 3 voxels):

    >>> m = np.zeros((4, 1, 9), np.uint8)
    >>> m[0, 0, 1:8] = 1
    >>> m[3, 0, 4] = 1
    >>> for row in interpolate_levels(m).filled[:, 0]:
    ...     print("".join(map(str, row)))
    011111110
    001111100
    000111000
    000010000
    """
    from softseg.confidence import detect_label_kind

    arr = _as_array(levels, name)
    axis = _axis(arr, axis, name)
    kind = detect_label_kind(arr, name=name)
    if kind == "soft":
        raise InputError(
            f"{name}: holds soft (fractional) values; interpolation fills painted confidence "
            "levels (whole numbers 0..9): interpolate the level map the rater painted, not its "
            "soft values"
        )
    top = int(np.max(arr))
    if n_levels is not None:
        n_levels = _count(n_levels, "n_levels", name)
        if top > n_levels:
            bad = _slices_where(np.moveaxis(arr, axis, 0) > n_levels)
            raise InputError(
                f"{name}: {_slice_list(bad)} along axis {axis} hold levels up to {top} but the "
                f"confidence scale has levels 1..{n_levels}; those slices "
                "were painted with another scale: repaint them, or use the scale they were "
                "painted with"
            )
    return _interpolate(arr, axis, painted, spacing, name, kind="levels", top=top)


def interpolate_labels(
    labels: np.ndarray,
    *,
    axis: int = 0,
    painted: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    n_classes: int | None = None,
    name: str = "label map",
) -> SliceInterpolation:
    """Fill the slices between painted slices of a multi-class label map (exclusive classes).

    Parameters
    ----------
    labels : ndarray, shape (*spatial), ndim >= 2
        Integer labels 0 (background) .. K (DESIGN decision 11, nnU-Net ``"labels"``).
    axis, painted, spacing, name
        As in :func:`interpolate_levels`. A painted slice without a class is empty for that
        class (the class ends there).
    n_classes : int, optional
        K; a label above it is refused. Default: the largest label present.

    Returns
    -------
    SliceInterpolation
        ``filled`` has the dtype of *labels*; on filled slices each voxel holds the class whose
        interpolated signed distance is the most negative, or 0.

    Raises
    ------
    InputError
        Fractional, NaN/Inf or negative labels, a label above *n_classes*
        (:func:`softseg.fusion.as_label_maps`); fewer than two painted slices; a painted index out
        of range; a bad *axis* or *spacing*.
    """
    from softseg.fusion.multilabel import as_label_maps

    arr = _as_array(labels, name)
    axis = _axis(arr, axis, name)
    _checked, k = as_label_maps(
        arr[None], n_classes=n_classes, min_raters=1, what=name, names=[name]
    )
    return _interpolate(arr, axis, painted, spacing, name, kind="labels", top=int(k))


def interpolate_class_levels(
    codes: np.ndarray,
    *,
    n_classes: int,
    n_levels: int,
    axis: int = 0,
    painted: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    name: str = "rater layer",
) -> SliceInterpolation:
    """Fill the slices between painted slices of a multi-class confidence layer.

    One rater's classes painted in one layer with confidence levels: the codes of
    :mod:`softseg.class_levels` (``0`` background, ``(c - 1) * L + l`` for class ``c`` at level
    ``l``). On every filled slice each voxel's class is the one :func:`interpolate_labels` gives
    (classes stay exclusive) and its level the one :func:`interpolate_levels` gives for that
    class's level map (levels stay nested within each class). With one class this is
    :func:`interpolate_levels`; with one level, :func:`interpolate_labels`.

    Parameters
    ----------
    codes : ndarray of int, shape (*spatial), ndim >= 2
        Values ``0..K*L``.
    n_classes, n_levels : int
        ``K`` and ``L`` (the layer's confidence scale has ``L`` levels).
    axis, painted, spacing, name
        As in :func:`interpolate_levels`. Without ``painted``, the slices holding any code are
        the painted ones; a painted slice without a class is empty for that class.

    Returns
    -------
    SliceInterpolation
        ``filled`` has the dtype of *codes*; ``kind`` is ``"class-levels"``.

    Raises
    ------
    InputError
        Codes outside ``0..K*L`` or not whole numbers (:func:`softseg.class_levels.decode`);
        fewer than two painted slices; the errors of :func:`interpolate_levels`.
    """
    from softseg.class_levels import decode

    arr = _as_array(codes, name)
    axis = _axis(arr, axis, name)
    classes, levels = decode(arr, n_classes=n_classes, n_levels=n_levels, name=name)
    marks = _painted(painted, np.moveaxis(arr, axis, 0), axis, name)
    common = {"axis": axis, "painted": marks, "spacing": spacing, "name": name}
    which = interpolate_labels(classes, n_classes=int(n_classes), **common)
    filled = arr.copy(order="K")
    dst = np.moveaxis(filled, axis, 0)
    fill = list(which.interpolated)
    if fill:
        cls = np.moveaxis(which.filled, axis, 0)[fill]
        out = np.zeros(cls.shape, dtype=np.int64)
        for c in range(1, int(n_classes) + 1):
            inside = cls == c
            if not inside.any():
                continue
            own = np.where(classes == c, levels, 0).astype(np.uint8)
            res = interpolate_levels(own, n_levels=int(n_levels), **common)
            lv = np.moveaxis(res.filled, axis, 0)
            # where the class is assigned its level-1 region holds the voxel: level >= 1
            out[inside] = (c - 1) * int(n_levels) + lv[fill][inside]
        dst[fill] = out.astype(arr.dtype, copy=False)
    changed, values = _changes(np.moveaxis(arr, axis, 0), dst, fill, axis)
    return SliceInterpolation(
        filled=filled,
        axis=axis,
        painted=which.painted,
        interpolated=which.interpolated,
        changed=changed,
        values=values,
        kind="class-levels",
    )


# ----------------------------------------------------------------------------- validation
def _as_array(array: Any, name: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim < 2:
        raise InputError(
            f"{name}: expected an array with a slice axis and at least one in-plane axis; "
            f"got shape {arr.shape}"
        )
    if arr.size == 0:
        raise InputError(f"{name}: is empty (shape {arr.shape})")
    return arr


def _axis(arr: np.ndarray, axis: Any, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InputError(f"{name}: the slice axis must be a whole number; got {axis!r}")
    if not -arr.ndim <= int(axis) < arr.ndim:
        raise InputError(
            f"{name}: slice axis {axis} does not exist; the map has {arr.ndim} axes "
            f"(0..{arr.ndim - 1})"
        )
    return int(axis) % arr.ndim


def _count(value: Any, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}: {what} must be a whole number >= 1; got {value!r}")
    return int(value)


def _spacing(
    spacing: Sequence[float] | None, arr: np.ndarray, axis: int, name: str
) -> tuple[float, ...]:
    if spacing is None:
        values = [1.0] * arr.ndim
    else:
        try:
            values = [float(s) for s in spacing]
        except (TypeError, ValueError):
            raise InputError(
                f"{name}: spacing must be {arr.ndim} voxel sizes in mm; got {spacing!r}"
            ) from None
        if len(values) != arr.ndim or not all(np.isfinite(v) and v > 0 for v in values):
            raise InputError(
                f"{name}: spacing must be {arr.ndim} positive voxel sizes in mm (one per axis); "
                f"got {list(values)}"
            )
    return tuple(v for i, v in enumerate(values) if i != axis)


def _painted(painted: Iterable[int] | None, moved: np.ndarray, axis: int, name: str) -> np.ndarray:
    n = moved.shape[0]
    if painted is None:
        found = np.flatnonzero(moved.reshape(n, -1).any(axis=1))
        if found.size < 2:
            where = "" if found.size == 0 else f" (slice {int(found[0])})"
            raise InputError(
                f"{name}: holds paint on {found.size} slice{'' if found.size == 1 else 's'} along "
                f"axis {axis}{where}; interpolation needs at least two painted slices: paint the "
                "structure on another slice"
            )
        return found
    items = list(painted)
    try:
        idx = [int(i) for i in items]
        if any(isinstance(i, (bool, np.bool_)) or int(i) != i for i in items):
            raise TypeError
    except (TypeError, ValueError):
        raise InputError(
            f"{name}: painted slices must be whole numbers; got {items[:8]!r}"
        ) from None
    out_of_range = [i for i in idx if not -n <= i < n]
    if out_of_range:
        raise InputError(
            f"{name}: painted slice{'s' if len(out_of_range) > 1 else ''} "
            f"{', '.join(map(str, out_of_range[:5]))} out of range; axis {axis} has slices "
            f"0..{n - 1}"
        )
    found = np.unique(np.asarray([i % n for i in idx], dtype=np.intp))
    if found.size < 2:
        raise InputError(
            f"{name}: {found.size} painted slice{'' if found.size == 1 else 's'} given along axis "
            f"{axis}; interpolation needs at least two painted slices"
        )
    return found


def _slices_where(mask_moved: np.ndarray) -> list[int]:
    n = mask_moved.shape[0]
    return [int(i) for i in np.flatnonzero(mask_moved.reshape(n, -1).any(axis=1))]


def _slice_list(slices: Sequence[int]) -> str:
    shown = ", ".join(map(str, slices[:8])) + (", ..." if len(slices) > 8 else "")
    return f"slice{'s' if len(slices) > 1 else ''} {shown}"


# ----------------------------------------------------------------------------- the method
def _interpolate(
    arr: np.ndarray,
    axis: int,
    painted: Iterable[int] | None,
    spacing: Sequence[float] | None,
    name: str,
    *,
    kind: str,
    top: int,
) -> SliceInterpolation:
    sampling = _spacing(spacing, arr, axis, name)
    src = np.moveaxis(arr, axis, 0)
    marks = _painted(painted, src, axis, name)
    filled = arr.copy(order="K")
    dst = np.moveaxis(filled, axis, 0)  # a view: writes land in `filled`
    geo = _Geometry(sampling, src.shape[1:])
    prepared: dict[int, dict[int, _Region | None]] = {}  # the two painted slices of a gap

    def regions(s: int) -> dict[int, _Region | None]:
        if s not in prepared:
            slab = src[s]
            if kind == "levels":
                prepared[s] = {k: _region(slab >= k, geo) for k in range(1, max(top, 1) + 1)}
            else:
                present = np.unique(slab)
                prepared[s] = {int(c): _region(slab == c, geo) for c in present[present > 0]}
        return prepared[s]

    filled_slices: list[int] = []
    for a, b in zip(marks[:-1], marks[1:]):
        a, b = int(a), int(b)
        for old in [s for s in prepared if s not in (a, b)]:
            del prepared[old]  # each painted slice is prepared once, for both of its gaps
        if b - a < 2:
            continue
        ts = (np.arange(a + 1, b, dtype=np.float64) - a) / (b - a)
        ra, rb = regions(a), regions(b)
        if kind == "levels":
            out = _fill_levels(ra, rb, ts, top, geo)
        else:
            out = _fill_labels(ra, rb, ts, top, geo)
        dst[a + 1 : b] = out.astype(arr.dtype, copy=False)
        filled_slices.extend(range(a + 1, b))

    changed, values = _changes(src, dst, filled_slices, axis)
    return SliceInterpolation(
        filled=filled,
        axis=axis,
        painted=tuple(int(i) for i in marks),
        interpolated=tuple(filled_slices),
        changed=changed,
        values=values,
        kind=kind,
    )


def _changes(
    src: np.ndarray, dst: np.ndarray, slices: list[int], axis: int
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Index arrays (input axis order) and new values of the voxels that differ."""
    ndim = src.ndim
    if not slices:
        empty = np.zeros(0, dtype=np.intp)
        return tuple(empty for _ in range(ndim)), dst[(0,) * ndim][None][:0]
    idx = np.asarray(slices, dtype=np.intp)
    new = dst[idx]
    where = np.nonzero(new != src[idx])
    values = new[where]
    moved = (idx[where[0]], *where[1:])  # moved order: slice axis first
    order = [0] * ndim
    # moved axis j corresponds to input axis: j = 0 -> axis; others in increasing order
    rest = [i for i in range(ndim) if i != axis]
    order[axis] = 0
    for j, i in enumerate(rest, start=1):
        order[i] = j
    return tuple(np.ascontiguousarray(moved[order[i]], dtype=np.intp) for i in range(ndim)), values


@dataclass(frozen=True)
class _Geometry:
    """In-plane voxel size (mm) and slice shape, with the constants derived from them."""

    sampling: tuple[float, ...]
    shape: tuple[int, ...]

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.sampling, dtype=np.float64)

    @property
    def shift(self) -> float:
        """Half a voxel (of the smaller in-plane size): the boundary lies between centres."""
        return 0.5 * min(self.sampling)

    @property
    def far(self) -> float:
        """Longer than any in-plane distance: the depth of a region filling its whole slice."""
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(self.shape, self.sampling)))) + 1.0


class _Region:
    """One painted slice's region (one level or class), prepared once for both of its gaps.

    ``filled`` is the region with its holes filled (its outline), a crop of the slice starting
    at ``offset`` (the region's bounding box plus one voxel, clipped to the slice);
    ``labels`` numbers its 8-connected components 1..``n``; ``holes`` is the region of its holes,
    prepared the same way (None without holes). The k-d trees of surface voxels that give the
    distances are built on first use.
    """

    def __init__(
        self, filled: np.ndarray, offset: np.ndarray, geo: _Geometry, region: np.ndarray
    ) -> None:
        self.filled = filled
        self.offset = offset
        self.geo = geo
        self.labels, self.n = ndimage.label(filled, structure=np.ones((3,) * filled.ndim, bool))
        holes = filled & ~region
        self.holes = _region(holes, geo, offset) if holes.any() else None
        self._outside: cKDTree | None | bool = False
        self._surface: tuple[cKDTree, np.ndarray, np.ndarray] | None = None

    def _tree(self, voxels: np.ndarray) -> cKDTree:
        """k-d tree of crop voxels at their slice positions in mm."""
        pos = (voxels + self.offset) * self.geo.scale
        return cKDTree(pos, balanced_tree=False, compact_nodes=False)

    @property
    def box(self) -> tuple[slice, ...]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.filled.shape))

    def depth(self, points_mm: np.ndarray) -> np.ndarray:
        """Distance (mm) from points inside to the nearest voxel outside the outline.

        The nearest voxel outside is face-adjacent to the outline (a step from any other one
        towards the point comes closer), and lies in the crop (its border is outside, except
        at the slice border, which is not a boundary); with no voxel outside, ``far``.
        """
        if self._outside is False:
            cand = np.argwhere(surface(~self.filled))
            self._outside = None if cand.size == 0 else self._tree(cand)
        if self._outside is None:
            return np.full(points_mm.shape[0], self.geo.far)
        return self._outside.query(points_mm, k=1)[0]

    def distance(self, points_mm: np.ndarray, want: np.ndarray, group_of: np.ndarray) -> np.ndarray:
        """Distance (mm) from points outside to the nearest outline voxel of a wanted group.

        ``want``: each point's group; ``group_of``: the group of each component (index 0 is
        background). One k-d tree of the surface voxels serves every group; points whose
        nearest voxel is of another group are looked up again among their group's voxels.
        """
        if self._surface is None:
            cand = np.argwhere(surface(self.filled))
            self._surface = (self._tree(cand), self.labels[tuple(cand.T)], cand)
        tree, comp, cand = self._surface
        dist, nearest = tree.query(points_mm, k=1)
        wrong = np.flatnonzero(group_of[comp[nearest]] != want)
        if wrong.size:  # the next nearest voxels usually hold one of the point's group
            k = min(16, cand.shape[0])
            d16, n16 = tree.query(points_mm[wrong], k=k)
            d16, n16 = d16.reshape(wrong.size, k), n16.reshape(wrong.size, k)
            hit = group_of[comp[n16]] == want[wrong, None]
            found = hit.any(axis=1)
            dist[wrong[found]] = d16[found, hit[found].argmax(axis=1)]
            wrong = wrong[~found]
        if wrong.size:  # the rest: a tree of their group's voxels
            groups = group_of[comp]
            for g in np.unique(want[wrong]):
                rows = wrong[want[wrong] == g]
                dist[rows] = self._tree(cand[groups == g]).query(points_mm[rows], k=1)[0]
        return dist


def _region(mask: np.ndarray, geo: _Geometry, offset: np.ndarray | None = None) -> _Region | None:
    """Prepare the region *mask* (a slice, or a crop of one at *offset*); None when empty."""
    if offset is None:
        offset = np.zeros(mask.ndim, dtype=np.intp)
    if not mask.any():
        return None
    lo, hi = [], []
    for i in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(j for j in range(mask.ndim) if j != i)))
        lo.append(max(int(idx[0]) - 1, 0))
        hi.append(min(int(idx[-1]) + 2, mask.shape[i]))
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    return _Region(_fill_holes(crop), offset + np.asarray(lo, dtype=np.intp), geo, crop)


def _fill_levels(
    ra: dict[int, _Region | None], rb: dict[int, _Region | None], ts: np.ndarray, top: int,
    geo: _Geometry,
) -> np.ndarray:
    """Filled slices (len(ts), *slice) uint8 of nested levels between two painted slices."""
    out = np.zeros((ts.size, *geo.shape), dtype=np.uint8)
    inside_prev: np.ndarray | None = None
    for k in range(1, max(top, 1) + 1):
        if ra[k] is None and rb[k] is None:
            break  # no region >= k on either side: none above it either
        inside = np.zeros(out.shape, dtype=bool)
        box, fields = _pair(ra[k], rb[k], ts, geo)
        inside[(slice(None), *box)] = fields < -BOUNDARY_TOLERANCE_MM
        if inside_prev is not None:
            inside &= inside_prev  # level >= k lies inside level >= k-1
        out += inside
        inside_prev = inside
    return out


def _fill_labels(
    ra: dict[int, _Region | None], rb: dict[int, _Region | None], ts: np.ndarray, top: int,
    geo: _Geometry,
) -> np.ndarray:
    """Filled slices of exclusive classes: argmin of the interpolated signed distances.

    Background unless a class is inside (below ``-BOUNDARY_TOLERANCE_MM``); between classes
    within the tolerance of each other, the lower class (so float rounding never decides).
    """
    best = np.full((ts.size, *geo.shape), np.inf)
    out = np.zeros(best.shape, dtype=np.min_scalar_type(max(top, 1)))
    for c in sorted(set(ra) | set(rb)):  # increasing class order
        box, fields = _pair(ra.get(c), rb.get(c), ts, geo)
        view, labels = best[(slice(None), *box)], out[(slice(None), *box)]
        better = (fields < -BOUNDARY_TOLERANCE_MM) & (fields < view - BOUNDARY_TOLERANCE_MM)
        labels[better] = c
        view[better] = fields[better]
    return out


def _pair(
    ra: _Region | None, rb: _Region | None, ts: np.ndarray, geo: _Geometry,
    box: tuple[slice, ...] | None = None,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Interpolated signed distance (mm) of one region between two painted slices.

    Returns ``(box, fields)``: fields (len(ts), *box shape) float64 over *box* (default: the
    union of the two regions' crops) — negative inside; ``-inf`` where the voxel is inside on
    every filled slice, ``+inf`` where it is outside on every one. The outline is interpolated,
    then the holes (recursively), and a voxel is inside the outline and outside the holes.
    """
    if box is None:
        crops = [r.box for r in (ra, rb) if r is not None]
        box = tuple(
            slice(min(c[i].start for c in crops), max(c[i].stop for c in crops))
            for i in range(len(crops[0]))
        )
    fields = _outline_fields(ra, rb, ts, geo, box)
    holes_a = ra.holes if ra is not None else None
    holes_b = rb.holes if rb is not None else None
    if holes_a is not None or holes_b is not None:
        _box, holes = _pair(holes_a, holes_b, ts, geo, box)
        np.maximum(fields, -holes, out=fields)
    return box, fields


def _paste(region: _Region | None, box: tuple[slice, ...]) -> np.ndarray:
    """The region's component labels on *box* (0 elsewhere)."""
    out = np.zeros(tuple(s.stop - s.start for s in box), dtype=np.int32)
    if region is not None:
        at = tuple(
            slice(o - s.start, o - s.start + n)
            for o, s, n in zip(region.offset, box, region.filled.shape)
        )
        out[at] = region.labels
    return out


def _outline_fields(
    ra: _Region | None, rb: _Region | None, ts: np.ndarray, geo: _Geometry,
    box: tuple[slice, ...],
) -> np.ndarray:
    """The mix ``(1 - t) sd_a + t sd_b`` of the two outlines on *box*: exact on voxels inside
    exactly one outline, ``-inf`` inside both, ``+inf`` inside neither.

    Regions are matched by overlap (:func:`_match`); a voxel's value depends on its group only.
    """
    la, lb = _paste(ra, box), _paste(rb, box)
    a, b = la > 0, lb > 0
    both = a & b
    fields = np.where(both, -np.inf, np.inf)[None].repeat(ts.size, axis=0)
    na = ra.n if ra is not None else 0
    nb = rb.n if rb is not None else 0
    group = _match(la, na, lb, nb, both)  # group of each component: A's first, then B's
    group_a, group_b = group[: na + 1], np.concatenate(([0], group[na + 1 :]))
    n_groups = int(group.max())
    in_a = np.zeros(n_groups + 1, dtype=bool)
    in_a[group_a[1:]] = True
    in_b = np.zeros(n_groups + 1, dtype=bool)
    in_b[group_b[1:]] = True
    w = ts.reshape(-1, 1)
    corner = np.asarray([s.start for s in box], dtype=np.intp)
    sides = (
        (ra, la, a, group_a, rb, group_b, in_b, 1.0 - w),
        (rb, lb, b, group_b, ra, group_a, in_a, w),
    )
    for src, lab, mask, g_src, other, g_other, other_has, ta in sides:
        if src is None:
            continue
        only = mask & ~both  # inside this outline, outside the other one
        if not only.any():
            continue
        idx = np.nonzero(only)
        pts = (np.column_stack(idx) + corner) * geo.scale
        groups = g_src[lab[idx]]
        sd_src = geo.shift - src.depth(pts)  # negative
        mix = np.empty((ts.size, pts.shape[0]))
        matched = other_has[groups]
        if matched.any():  # the group goes on: mix with the distance to its other part
            sd_other = other.distance(pts[matched], groups[matched], g_other) - geo.shift
            mix[:, matched] = ta * sd_src[matched] + (1.0 - ta) * sd_other
        if not matched.all():  # ends (or appears) in the gap: down to its deepest point by t = 1/2
            ends = ~matched
            deepest = np.zeros(n_groups + 1)
            np.maximum.at(deepest, groups[ends], -sd_src[ends])
            mix[:, ends] = ta * sd_src[ends] + (1.0 - ta) * deepest[groups[ends]]
        fields[(slice(None), *idx)] = mix
    return fields


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """*mask* with its holes filled: background not face-connected to the box border.

    The same as ``scipy.ndimage.binary_fill_holes`` (its default structure), by one labelling
    of the background instead of an iterated dilation (a few times faster on slices).
    """
    if not mask.any():
        return mask.copy()
    lab, n = ndimage.label(~mask)
    if n == 0:
        return mask.copy()
    edge = np.zeros(n + 1, dtype=bool)
    for i in range(mask.ndim):
        for j in (0, -1):
            edge[np.take(lab, j, axis=i)] = True
    edge[0] = False  # label 0 is the mask itself
    return ~edge[lab]


def _match(la: np.ndarray, na: int, lb: np.ndarray, nb: int, both: np.ndarray) -> np.ndarray:
    """Group ids for the regions of two painted slices: regions that overlap (directly or
    through a chain of overlaps) share a group.

    Returns int array of length 1 + na + nb: entry 0 is 0 (background), entries 1..na the
    groups of slice a's regions, entries na+1..na+nb those of slice b's; groups are 1..G.
    """
    if na == 1 and nb == 1:
        return np.array([0, 1, 1 if both.any() else 2])
    parent = list(range(na + nb + 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if na and nb:
        pairs = np.unique(la[both].astype(np.int64) * (nb + 1) + lb[both])
        for ia, ib in zip((pairs // (nb + 1)).tolist(), (pairs % (nb + 1)).tolist()):
            ra, rb = root(ia), root(na + ib)
            if ra != rb:
                parent[rb] = ra
    roots = np.asarray([root(i) for i in range(1, na + nb + 1)], dtype=np.int64)
    _u, ids = np.unique(roots, return_inverse=True)
    return np.concatenate(([0], ids.reshape(-1) + 1))
