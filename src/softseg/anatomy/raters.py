"""Simulated raters who disagree the way people do.

A rater sees the true partial-volume maps through three kinds of human variation:

* **boundary jitter**: the rater's boundaries are displaced by a smooth random field (cubic
  B-spline, RMS ``jitter_mm`` per axis, control points every ``jitter_spacing_mm``): each rater
  traces a slightly different outline, locally coherent, as a hand does;
* **decision level**: where tissues mix, each rater has personal preferences: the rater labels a
  voxel with the class ``k`` that maximises ``p_k + offset_k`` (``p`` = the jittered fractions),
  with per-rater, per-class offsets uniform in ``[-class_offset, class_offset]``. Between two
  classes this is a threshold ``p_a > 0.5 + (offset_b - offset_a) / 2``: with the default 0.12
  the raters' GM/WM decision levels spread over about 0.38 .. 0.62. For the lesion class the
  offset is set so that the rater's decision level against the tissue around the lesion (white
  matter, or background for the lesion-only target) is exactly the rater's ``lesion level``,
  spread evenly over ``lesion_levels`` (0.3 .. 0.7, as the phantom's raters);
* **misses**: each rater overlooks each small lesion with probability ``miss_probability``
  (its voxels get the rater's best non-lesion class).

The output is one integer label map per rater (a partition: every voxel gets one class), the way
tissue raters paint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from softseg.anatomy.fields import random_field
from softseg.errors import InputError

__all__ = ["RaterModel", "RaterRecord", "simulate_raters"]


@dataclass(frozen=True)
class RaterModel:
    """How simulated raters disagree (see the module docstring).

    Attributes
    ----------
    jitter_mm : float, >= 0
        RMS of each rater's smooth boundary displacement per axis (mm).
    jitter_spacing_mm : float, > 0
        Control-point distance of the displacement (mm).
    class_offset : float, in [0, 0.5)
        Half-width of the uniform per-class decision offsets.
    lesion_levels : (float, float), 0 < low <= high < 1
        Range over which the raters' lesion decision levels are spread evenly.
    miss_probability : float, in [0, 1]
        Probability that a rater misses a given lesion.
    """

    jitter_mm: float = 0.8
    jitter_spacing_mm: float = 12.0
    class_offset: float = 0.12
    lesion_levels: tuple[float, float] = (0.3, 0.7)
    miss_probability: float = 0.15

    def __post_init__(self) -> None:
        if not (np.isfinite(self.jitter_mm) and self.jitter_mm >= 0):
            raise InputError(f"jitter_mm must be >= 0; got {self.jitter_mm}")
        if not (np.isfinite(self.jitter_spacing_mm) and self.jitter_spacing_mm > 0):
            raise InputError(f"jitter_spacing_mm must be > 0; got {self.jitter_spacing_mm}")
        if not 0 <= self.class_offset < 0.5:
            raise InputError(f"class_offset must be in [0, 0.5); got {self.class_offset}")
        lo, hi = self.lesion_levels
        if not 0 < lo <= hi < 1:
            raise InputError(f"lesion_levels must satisfy 0 < low <= high < 1; got {self.lesion_levels}")
        if not 0 <= self.miss_probability <= 1:
            raise InputError(f"miss_probability must be in [0, 1]; got {self.miss_probability}")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RaterRecord:
    """What each simulated rater did on one subject.

    Attributes
    ----------
    offsets : tuple of tuple of float, shape (R, K + 1)
        Decision offsets per rater and class (background first).
    lesion_levels : tuple of float or None
        Each rater's decision level for lesions (None without a lesion class).
    missed_lesions : tuple of tuple of int
        Per rater, the lesion labels they missed.
    """

    offsets: tuple[tuple[float, ...], ...]
    lesion_levels: tuple[float, ...] | None
    missed_lesions: tuple[tuple[int, ...], ...]


def simulate_raters(
    truth: np.ndarray,
    spacing: Sequence[float],
    n_raters: int,
    model: RaterModel,
    rng: np.random.Generator,
    *,
    lesion_class: int | None = None,
    lesion_reference: int | None = None,
    lesion_zones: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, RaterRecord]:
    """Label maps of ``n_raters`` simulated raters.

    Parameters
    ----------
    truth : ndarray (K + 1, X, Y, Z), float
        Partial-volume fractions, background first, summing to 1.
    spacing : 3 floats
        Voxel size (mm).
    n_raters : int, >= 1
    model : RaterModel
    rng : numpy.random.Generator
    lesion_class : int, optional
        Index of the lesion class in *truth* (None: no lesions).
    lesion_reference : int, optional
        Class surrounding the lesions (the lesion decision level is taken against it);
        default white matter (index 2) when K > 1, else background.
    lesion_zones : sequence of bool arrays (X, Y, Z)
        Where each lesion is (dilated a little), for misses.

    Returns
    -------
    labels : ndarray (R, X, Y, Z), uint8
    record : RaterRecord
    """
    truth = np.asarray(truth)
    n_classes = truth.shape[0]
    shape = truth.shape[1:]
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if lesion_class is not None and lesion_reference is None:
        lesion_reference = 2 if n_classes > 2 else 0
    n_raters = int(n_raters)
    offsets = rng.uniform(-model.class_offset, model.class_offset, size=(n_raters, n_classes))
    levels = None
    if lesion_class is not None:
        lo, hi = model.lesion_levels
        spread = np.linspace(lo, hi, n_raters) if n_raters > 1 else np.array([(lo + hi) / 2])
        levels = rng.permutation(spread)
        offsets[:, lesion_class] = offsets[:, lesion_reference] + 1.0 - 2.0 * levels
    grid = [np.arange(n, dtype=np.float64) for n in shape]
    centres = [g * s for g, s in zip(grid, spacing_arr)]
    size = np.asarray(shape) * spacing_arr
    labels = np.empty((n_raters, *shape), dtype=np.uint8)
    missed: list[tuple[int, ...]] = []
    for r in range(n_raters):
        jitter = random_field(
            -0.5 * spacing_arr, size, control_spacing_mm=model.jitter_spacing_mm, components=3,
            rms=model.jitter_mm, rng=rng,
        ).on_grid(centres)
        coords = np.stack(
            [
                np.broadcast_to(
                    grid[a].reshape([-1 if b == a else 1 for b in range(3)]), shape
                ) + jitter[a] / spacing_arr[a]
                for a in range(3)
            ]
        )
        del jitter
        best = np.full(shape, -np.inf, dtype=np.float32)
        best_non_lesion = np.full(shape, -np.inf, dtype=np.float32) if lesion_class is not None else None
        label = np.zeros(shape, dtype=np.uint8)
        label_non_lesion = np.zeros(shape, dtype=np.uint8) if lesion_class is not None else None
        for k in range(n_classes):
            seen = ndimage.map_coordinates(
                truth[k], coords, order=1, mode="nearest", prefilter=False, output=np.float32
            )
            seen += np.float32(offsets[r, k])
            better = seen > best
            label[better] = k
            np.maximum(best, seen, out=best)
            if lesion_class is not None and k != lesion_class:
                better = seen > best_non_lesion
                label_non_lesion[better] = k
                np.maximum(best_non_lesion, seen, out=best_non_lesion)
        misses = tuple(
            k + 1 for k in range(len(lesion_zones)) if rng.random() < model.miss_probability
        )
        for k in misses:
            zone = lesion_zones[k - 1] & (label == lesion_class)
            label[zone] = label_non_lesion[zone]
        labels[r] = label
        missed.append(misses)
    record = RaterRecord(
        offsets=tuple(tuple(float(v) for v in row) for row in offsets),
        lesion_levels=None if levels is None else tuple(float(v) for v in levels),
        missed_lesions=tuple(missed),
    )
    return labels, record
