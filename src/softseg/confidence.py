"""Confidence scales: painted integer levels <-> soft values in [0, 1].

A rater paints integer *levels* in a label map: 0 is background, ``1..K`` are increasing levels
of confidence that the voxel belongs to the structure. A :class:`ConfidenceScale` maps each level
to a soft value, so a level map becomes a soft ground truth for SoftSeg training or soft fusion.

Two three-level scales ship with the package:

``ConfidenceScale.default()``  low / medium / high = 1/3, 2/3, 1 (equal steps). Thresholding the
    soft map at 0.5 keeps "medium" and "high" and drops "low", which matches how raters read
    the words.
``ConfidenceScale.from_paper()``  low / medium / high = 0.25, 0.5, 1: the SoftSeg paper's
    suggestion of 0.5, 1 and 2 (section 4.4.2 of Gros et al. 2021) divided by the maximum so
    the values lie in [0, 1]. "Medium" then sits exactly on the usual 0.5 threshold.

The scale travels with the data: in napari layer metadata (``"softseg_confidence"``) and in the
JSON sidecar of a saved rater file (``as_dict`` / ``from_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from softseg.checks import as_probability
from softseg.errors import InputError

__all__ = [
    "MAX_LEVELS",
    "METADATA_KEY",
    "PRESETS",
    "ConfidenceScale",
    "LabelKind",
    "as_rater_values",
    "detect_label_kind",
    "get_preset",
    "label_to_soft",
    "scale_from_sidecar",
]

#: Layer metadata / sidecar key holding :meth:`ConfidenceScale.as_dict`.
METADATA_KEY = "softseg_confidence"
#: Most levels a scale may have (keys 1..9 select them in the viewer).
MAX_LEVELS = 9

LabelKind = Literal["binary", "levels", "soft"]


@dataclass(frozen=True)
class ConfidenceScale:
    """Map painted confidence levels ``1..K`` to soft values in (0, 1].

    Parameters
    ----------
    values : tuple of float, length K (1 <= K <= 9)
        Soft value of level ``k`` at position ``k - 1``; strictly increasing, each in (0, 1].
        Level 0 (background) is always 0.
    names : tuple of str, length K, optional
        A short word per level shown to the rater ("low", "medium", "high"). Defaults to
        ``"level 1"``, ``"level 2"``, ... when empty.

    Examples
    --------
    >>> scale = ConfidenceScale.default()
    >>> scale.to_soft(np.array([0, 1, 2, 3], dtype=np.uint8)).astype(float).round(3).tolist()
    [0.0, 0.333, 0.667, 1.0]
    """

    values: tuple[float, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            values = tuple(float(v) for v in self.values)
        except (TypeError, ValueError):
            raise InputError(
                f"confidence values must be numbers in (0, 1]; got {self.values!r}"
            ) from None
        if not 1 <= len(values) <= MAX_LEVELS:
            raise InputError(
                f"a confidence scale needs 1 to {MAX_LEVELS} levels; got {len(values)}"
            )
        bad = [v for v in values if not (np.isfinite(v) and 0.0 < v <= 1.0)]
        if bad:
            raise InputError(
                f"confidence values must lie in (0, 1] (0 is the background); got {list(values)}; "
                "divide by the largest value to normalise, e.g. 0.5/1/2 -> 0.25/0.5/1"
            )
        if any(b <= a for a, b in zip(values, values[1:])):
            raise InputError(
                f"confidence values must increase strictly with the level; got {list(values)}"
            )
        names = tuple(str(n).strip() for n in self.names)
        if not names:
            names = tuple(f"level {k}" for k in range(1, len(values) + 1))
        if len(names) != len(values):
            raise InputError(
                f"expected one name per level ({len(values)} levels); got {len(names)} names {list(names)}"
            )
        if any(not n for n in names):
            raise InputError(f"level names must not be empty; got {list(names)}")
        if len(set(names)) != len(names):
            raise InputError(f"level names must be distinct; got {list(names)}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", names)

    # ------------------------------------------------------------------ presets
    @classmethod
    def default(cls) -> ConfidenceScale:
        """Three equal steps: low 1/3, medium 2/3, high 1."""
        return cls(values=(1.0 / 3.0, 2.0 / 3.0, 1.0), names=("low", "medium", "high"))

    @classmethod
    def from_paper(cls) -> ConfidenceScale:
        """The SoftSeg paper's 0.5 / 1 / 2 (section 4.4.2) normalised by the maximum: 0.25, 0.5, 1."""
        return cls.from_weights((0.5, 1.0, 2.0), names=("low", "medium", "high"))

    @classmethod
    def binary(cls) -> ConfidenceScale:
        """One level with value 1: an ordinary binary mask."""
        return cls(values=(1.0,), names=("lesion",))

    @classmethod
    def linear(cls, n_levels: int, *, names: Sequence[str] | None = None) -> ConfidenceScale:
        """``n_levels`` equal steps ``k / n_levels`` for ``k = 1..n_levels``.

        Three levels get the names low / medium / high, two get low / high.
        """
        n = int(n_levels)
        if not 1 <= n <= MAX_LEVELS:
            raise InputError(f"number of levels must be 1 to {MAX_LEVELS}; got {n_levels}")
        if names is None:
            names = _DEFAULT_NAMES.get(n, ())
        return cls(values=tuple(k / n for k in range(1, n + 1)), names=tuple(names))

    @classmethod
    def from_weights(
        cls, weights: Sequence[float], *, names: Sequence[str] = ()
    ) -> ConfidenceScale:
        """Positive, increasing weights (any unit) divided by their maximum.

        ``from_weights((0.5, 1, 2))`` gives values 0.25, 0.5, 1.
        """
        w = np.asarray([float(x) for x in weights], dtype=np.float64)
        if w.size == 0 or not np.isfinite(w).all() or (w <= 0).any():
            raise InputError(f"confidence weights must be positive numbers; got {list(weights)}")
        return cls(values=tuple(float(x) for x in w / w.max()), names=tuple(names))

    # ------------------------------------------------------------------ properties
    @property
    def n_levels(self) -> int:
        """Number of painted levels K (background excluded)."""
        return len(self.values)

    @property
    def lut(self) -> np.ndarray:
        """Lookup table, shape (K + 1,), float32: ``lut[level]`` is the soft value, ``lut[0] == 0``."""
        return np.asarray((0.0, *self.values), dtype=np.float32)

    def value_of(self, level: int) -> float:
        """Soft value of one level (0 for the background)."""
        level = int(level)
        if not 0 <= level <= self.n_levels:
            raise InputError(f"level {level} is not on this scale; valid levels are 0..{self.n_levels}")
        return float(self.lut[level])

    # ------------------------------------------------------------------ mapping
    def to_soft(self, levels: np.ndarray) -> np.ndarray:
        """Soft map of a painted level map.

        Parameters
        ----------
        levels : ndarray of int (or integer-valued float), any shape
            Values in ``0..K``.

        Returns
        -------
        ndarray, same shape, float32, values in [0, 1]

        Raises
        ------
        InputError
            A value is negative, not an integer, or above K.
        """
        arr = np.asarray(levels)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                raise InputError(
                    "a level map must hold whole numbers 0..K; got fractional or NaN values "
                    "(is this already a soft map?)"
                )
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "iu":
            raise InputError(f"a level map must be an integer array; got dtype {arr.dtype}")
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > self.n_levels:
                raise InputError(
                    f"level map holds values {lo}..{hi} but the confidence scale has levels "
                    f"0..{self.n_levels}; add levels to the scale or fix the map"
                )
        return self.lut[arr]

    def to_levels(self, soft: np.ndarray) -> np.ndarray:
        """Nearest level of each soft value (the inverse of :meth:`to_soft` on its own values).

        Parameters
        ----------
        soft : ndarray of float, values in [0, 1]

        Returns
        -------
        ndarray, same shape, uint8, values in ``0..K``
        """
        arr = np.asarray(soft, dtype=np.float64)
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
            raise InputError("soft values must be finite and in [0, 1]")
        lut = self.lut.astype(np.float64)
        mids = (lut[:-1] + lut[1:]) / 2.0
        return np.searchsorted(mids, arr, side="left").astype(np.uint8)

    # ------------------------------------------------------------------ serialisation
    def as_dict(self) -> dict[str, Any]:
        """``{"levels": [{"level": 1, "name": "low", "value": 0.33}, ...]}`` (JSON-able)."""
        return {
            "levels": [
                {"level": k, "name": n, "value": v}
                for k, (n, v) in enumerate(zip(self.names, self.values), start=1)
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfidenceScale:
        """Inverse of :meth:`as_dict`; also accepts ``{"values": [...], "names": [...]}``."""
        if not isinstance(data, Mapping):
            raise InputError(f"a confidence scale must be a JSON object; got {type(data).__name__}")
        if METADATA_KEY in data and isinstance(data[METADATA_KEY], Mapping):
            data = data[METADATA_KEY]
        allowed = {"levels", "values", "names"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InputError(f"unknown keys {unknown} in confidence scale; expected {sorted(allowed)}")
        if "levels" in data:
            rows = data["levels"]
            if not isinstance(rows, Sequence) or isinstance(rows, str):
                raise InputError("confidence scale 'levels' must be a list of {level, name, value}")
            try:
                rows = sorted(rows, key=lambda r: int(r["level"]))
                if [int(r["level"]) for r in rows] != list(range(1, len(rows) + 1)):
                    raise InputError(
                        "confidence scale levels must be numbered 1..K without gaps; "
                        f"got {[r['level'] for r in rows]}"
                    )
                return cls(
                    values=tuple(float(r["value"]) for r in rows),
                    names=tuple(str(r.get("name", f"level {r['level']}")) for r in rows),
                )
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(
                    f"confidence scale 'levels' entries need 'level' and 'value'; got {rows!r}"
                ) from None
        if "values" not in data:
            raise InputError("confidence scale needs 'levels' or 'values'")
        return cls(values=tuple(data["values"]), names=tuple(data.get("names", ())))


_DEFAULT_NAMES = {
    1: ("lesion",),
    2: ("low", "high"),
    3: ("low", "medium", "high"),
    4: ("very low", "low", "medium", "high"),
    5: ("very low", "low", "medium", "high", "very high"),
}

#: Named scales offered in the viewer; ``get_preset`` raises listing these names.
PRESETS: dict[str, ConfidenceScale] = {
    "default (1/3, 2/3, 1)": ConfidenceScale.default(),
    "paper (0.5, 1, 2 / 2)": ConfidenceScale.from_paper(),
    "binary": ConfidenceScale.binary(),
}


def get_preset(name: str) -> ConfidenceScale:
    """A scale from :data:`PRESETS` by name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown confidence preset {name!r}; choose one of {list(PRESETS)}") from None


def detect_label_kind(array: np.ndarray, *, name: str = "rater map") -> LabelKind:
    """What a rater file holds: ``"binary"`` (0/1), ``"levels"`` (whole numbers 0..9) or ``"soft"``.

    Parameters
    ----------
    array : ndarray, any shape, numeric or bool
    name : str
        What the array is (a file name, ``"layer 'rater-1'"``), first in every message.

    Returns
    -------
    {"binary", "levels", "soft"}
        A float map with any fractional value is soft (its values must then lie in [0, 1]
        within :data:`softseg.checks.PROBABILITY_TOLERANCE`); whole numbers {0, 1} are binary;
        whole numbers up to 9 are confidence levels.

    Raises
    ------
    InputError
        NaN/Inf, negative values, fractional values outside [0, 1] beyond the tolerance, or
        integers above 9.
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return "binary"
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name}: a rater map must be numeric; got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name}: a rater map must not be empty")
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{name}: contains {bad} NaN/Inf values; labels must be finite")
    whole = arr.dtype.kind in "iu" or bool((arr == np.round(arr)).all())
    if not whole:
        as_probability(arr, name=name, hint="soft maps hold values in [0, 1]")
        return "soft"
    if lo < 0:
        raise InputError(
            f"{name}: has negative values (min {float(lo)!r}); expected 0/1, levels 0..9 or "
            "soft values in [0, 1]"
        )
    if hi <= 1:
        return "binary"
    if hi <= MAX_LEVELS:
        return "levels"
    raise InputError(
        f"{name}: has whole values up to {float(hi):g}; confidence levels go from 0 to "
        f"{MAX_LEVELS} (is this a multi-class label map? give its number of classes)"
    )


def as_rater_values(
    array: np.ndarray,
    *,
    scale: ConfidenceScale | None = None,
    name: str = "rater map",
) -> tuple[np.ndarray, LabelKind]:
    """The one conversion of a rater map (file or layer) to values in [0, 1], with its kind.

    Parameters
    ----------
    array : ndarray, any shape
        Bool, 0/1, painted confidence levels (whole numbers 0..9) or soft values.
    scale : ConfidenceScale, optional
        The scale the map was painted with (its JSON sidecar, :mod:`softseg.sidecar`, or the
        layer metadata). With a scale, whole-number maps are *levels*, including maps that
        hold only 0 and 1 (a map painted with level 1 only looks binary: the scale decides).
        Soft maps ignore it (an exported soft map keeps its scale in the sidecar).
    name : str
        What the map is (file name, ``"layer 'rater-1'"``), first in every message.

    Returns
    -------
    values : ndarray, same shape
        ``"binary"``: uint8 0/1 (the input itself when it already is uint8);
        ``"levels"``: float32 soft values through the scale; ``"soft"``: float32, values within
        :data:`softseg.checks.PROBABILITY_TOLERANCE` of [0, 1] clipped onto it.
    kind : {"binary", "levels", "soft"}
        What the map held. Levels whose values are all 0 or 1 after the scale (only the
        full-confidence level painted) are returned as ``"binary"`` uint8.

    Raises
    ------
    InputError
        See :func:`detect_label_kind`; levels without a scale; a level above the scale.

    Examples
    --------
    >>> as_rater_values(np.array([0, 1, 3]), scale=ConfidenceScale.default())[1]
    'levels'
    >>> float(as_rater_values(np.array([0.0, 0.5, 1.0000001]))[0].max())
    1.0
    """
    arr = np.asarray(array)
    kind = detect_label_kind(arr, name=name)
    if kind == "soft":
        values = as_probability(arr, name=name).astype(np.float32, copy=False)
        return values, "soft"
    if scale is None:
        if kind == "binary":
            return (arr if arr.dtype == np.uint8 else (arr != 0).view(np.uint8)), "binary"
        raise InputError(
            f"{name}: holds confidence levels up to {int(np.max(arr))} but has no confidence "
            "scale; give the scale it was painted with (its JSON sidecar), or, if it is a "
            "multi-class label map, its number of classes"
        )
    try:
        values = scale.to_soft(arr)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    used = np.unique(values)  # few distinct values: the scale's
    if np.isin(used, (0.0, 1.0)).all():
        return (values != 0).view(np.uint8), "binary"
    return values, "levels"


def label_to_soft(
    array: np.ndarray, *, scale: ConfidenceScale | None = None, name: str = "rater map"
) -> np.ndarray:
    """Any rater map (binary, levels or soft) as a float32 soft map in [0, 1].

    :func:`as_rater_values` (the one conversion) as float32: use it where a soft map is wanted
    (training targets, references of the Threshold and Compare widgets).

    Parameters
    ----------
    array : ndarray, any shape
    scale : ConfidenceScale, optional
        The scale the map was painted with; see :func:`as_rater_values`.
    name : str
        Used in error messages.

    Returns
    -------
    ndarray, same shape, float32, values in [0, 1]
    """
    values, _kind = as_rater_values(array, scale=scale, name=name)
    return values.astype(np.float32, copy=False)


def scale_from_sidecar(sidecar: Mapping[str, Any] | None) -> ConfidenceScale | None:
    """The confidence scale stored in a rater file's JSON sidecar, or None when it has none.

    Accepts every form softseg writes or reads: the export key :data:`METADATA_KEY`, the
    autosave key ``"confidence_scale"``, or a bare scale (``"values"``/``"levels"`` at the top
    level). The CLI, the trainer and the widgets all read sidecars through this one function.
    """
    if not sidecar:
        return None
    for key in (METADATA_KEY, "confidence_scale"):
        if isinstance(sidecar.get(key), Mapping):
            return ConfidenceScale.from_dict(sidecar[key])
    if "levels" in sidecar or "values" in sidecar:
        return ConfidenceScale.from_dict(
            {k: sidecar[k] for k in ("levels", "values", "names") if k in sidecar}
        )
    return None
