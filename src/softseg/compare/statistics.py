"""Summaries over subjects or repeats, and the papers' two-sided Wilcoxon signed-rank test.

Nothing is dropped silently (issue 13): every summary reports, per candidate and metric, how
many values were finite, infinite and NaN, and every test reports the number of pairs it
actually used.

Summary of values with infinities
    The empty-mask policy gives infinite values on purpose (e.g. RVD = -inf when the model
    predicts a lesion on a healthy subject). Such a value is a real, maximally bad outcome, so
    the mean is +inf when any value is +inf (-inf when any is -inf; NaN when both occur) and
    the standard deviation is NaN; the count of infinite values is reported beside it. NaN
    values mean "not applicable" (e.g. the rater entropy without raters) and are left out of
    mean and std, and counted.

Wilcoxon signed-rank test
    Pairs are matched by position (repeat k of every candidate used split k). A pair with a NaN
    is not a sample and is dropped; an infinite value takes part (it ranks as the most extreme
    difference); two equal values (``inf`` and ``inf`` included) are a zero difference, which
    the test drops (``zero_method="wilcox"``, scipy's default). ``n`` is what remains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from softseg.errors import InputError
from softseg.metrics import METRICS, format_value

__all__ = [
    "Summary",
    "WilcoxonResult",
    "min_wilcoxon_pairs",
    "summarize",
    "summary_mean",
    "wilcoxon_pvalues",
    "wilcoxon_tests",
]


def min_wilcoxon_pairs(alpha: float = 0.05) -> int:
    """Smallest number of paired samples for which a two-sided exact Wilcoxon signed-rank test
    can reach ``p < alpha`` at all.

    With n pairs and no ties, the most extreme outcome (all differences of one sign) has exact
    two-sided p-value ``2 / 2**n``; a smaller n can never be significant, whatever the data.
    For alpha = 0.05: n = 5 gives 0.0625, n = 6 gives 0.03125, so the answer is 6. Zero
    differences are dropped by the test, so ties with the reference reduce the effective n.
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1); got {alpha}")
    n = 1
    while 2.0 / 2.0**n >= alpha:
        n += 1
    return n


@dataclass(frozen=True)
class WilcoxonResult:
    """One two-sided Wilcoxon signed-rank test.

    Attributes
    ----------
    pvalue : float
        NaN when fewer than two non-zero differences remain; 1.0 when all differences are 0.
    n : int
        Pairs the test used: both values present (not NaN) and different.
    """

    pvalue: float
    n: int


def wilcoxon_tests(
    values: Mapping[str, Sequence[float]], reference: str
) -> dict[str, WilcoxonResult]:
    """Two-sided Wilcoxon signed-rank test of each candidate against ``reference``.

    Parameters
    ----------
    values : mapping of candidate -> sequence of float
        Paired samples (same order for every candidate).
    reference : str
        The candidate everything is tested against (its own entry is ``(NaN, 0)``).

    Returns
    -------
    dict of candidate -> WilcoxonResult
    """
    from scipy.stats import wilcoxon

    if reference not in values:
        raise InputError(f"reference candidate {reference!r} is not among {sorted(values)}")
    ref = np.asarray(values[reference], dtype=np.float64)
    out: dict[str, WilcoxonResult] = {}
    for name, vals in values.items():
        if name == reference:
            out[name] = WilcoxonResult(math.nan, 0)
            continue
        x = np.asarray(vals, dtype=np.float64)
        if x.shape != ref.shape:
            raise InputError(f"{name!r} has {x.size} samples but {reference!r} has {ref.size}; "
                             "the test needs paired samples")
        keep = ~(np.isnan(x) | np.isnan(ref))
        with np.errstate(invalid="ignore"):
            d = x[keep] - ref[keep]
        d[np.isnan(d)] = 0.0  # inf - inf: the same outcome on both sides
        n = int(np.count_nonzero(d))
        if keep.sum() >= 2 and n == 0:
            out[name] = WilcoxonResult(1.0, 0)
        elif n < 2:
            out[name] = WilcoxonResult(math.nan, n)
        else:
            out[name] = WilcoxonResult(float(wilcoxon(d, alternative="two-sided").pvalue), n)
    return out


def wilcoxon_pvalues(values: Mapping[str, Sequence[float]], reference: str) -> dict[str, float]:
    """The p-values of :func:`wilcoxon_tests` alone."""
    return {k: r.pvalue for k, r in wilcoxon_tests(values, reference).items()}


def summary_mean(values: Sequence[float]) -> tuple[float, float, dict[str, int]]:
    """Mean, sample std (ddof=1) and counts of a metric's values (module notes).

    Returns
    -------
    mean : float
        Of the finite values; +-inf when any value is +-inf (NaN when both signs occur); NaN
        when no value is left.
    std : float
        Of the finite values (NaN with fewer than two, or when any value is infinite).
    counts : dict
        ``finite``, ``inf`` (either sign), ``nan``.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = np.isnan(v)
    inf = np.isinf(v)
    finite = v[~(nan | inf)]
    counts = {"finite": int(finite.size), "inf": int(inf.sum()), "nan": int(nan.sum())}
    if counts["inf"]:
        signs = set(np.sign(v[inf]).tolist())
        mean = math.nan if len(signs) > 1 else math.copysign(math.inf, signs.pop())
        return mean, math.nan, counts
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return mean, std, counts


@dataclass(frozen=True)
class Summary:
    """Mean ± std table over subjects or repeats, with value counts and optional tests.

    Attributes
    ----------
    mean, std : dict candidate -> dict metric -> float
        See :func:`summary_mean` (infinite values make the mean infinite).
    n : dict candidate -> int
        Samples (subjects or repeats) per candidate.
    counts : dict candidate -> dict metric -> dict
        ``{"finite": int, "inf": int, "nan": int}`` per metric: nothing is dropped silently.
    pvalues : dict candidate -> dict metric -> float
        Two-sided Wilcoxon p-values against ``reference`` (empty without one).
    n_test : dict candidate -> dict metric -> int
        Pairs each test used (see :func:`wilcoxon_tests`).
    reference : str or None
    alpha : float
    unit : str
        What the samples are ("subjects" or "repeats").
    """

    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    n: dict[str, int]
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    pvalues: dict[str, dict[str, float]] = field(default_factory=dict)
    n_test: dict[str, dict[str, int]] = field(default_factory=dict)
    reference: str | None = None
    alpha: float = 0.05
    unit: str = "subjects"

    def significant(self, candidate: str, metric: str) -> bool:
        p = self.pvalues.get(candidate, {}).get(metric, math.nan)
        return bool(p < self.alpha)

    def cell(self, candidate: str, metric: str) -> str:
        """``"mean ± std"`` in display units; ``[k inf]`` / ``[n=k]`` when values were infinite
        or not applicable; ``**`` when p < alpha (the papers' marker)."""
        m, s = self.mean[candidate][metric], self.std[candidate][metric]
        text = format_value(metric, m)
        if self.n[candidate] > 1 and not math.isnan(s):
            text += f" ± {format_value(metric, s)}"
        c = self.counts.get(candidate, {}).get(metric)
        if c and c["inf"]:
            text += f" [{c['inf']} inf]"
        elif c and c["nan"] and c["finite"]:
            text += f" [n={c['finite']}]"
        if self.significant(candidate, metric):
            text += " **"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean, "std": self.std, "n": self.n, "counts": self.counts,
            "pvalues": self.pvalues, "n_test": self.n_test, "reference": self.reference,
            "alpha": self.alpha, "unit": self.unit,
        }


def summarize(
    rows: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    reference: str | None = None,
    alpha: float = 0.05,
    unit: str = "subjects",
) -> Summary:
    """Mean ± sample std (ddof=1) of every metric of :data:`softseg.metrics.METRICS` per
    candidate, value counts, and Wilcoxon tests against ``reference`` when given (samples
    paired by position). See the module notes for infinite and NaN values."""
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    n: dict[str, int] = {}
    for cand, cand_rows in rows.items():
        mean[cand], std[cand], counts[cand] = {}, {}, {}
        n[cand] = len(cand_rows)
        for metric in METRICS:
            vals = [_number(r.get(metric)) for r in cand_rows]
            mean[cand][metric], std[cand][metric], counts[cand][metric] = summary_mean(vals)
    pvalues: dict[str, dict[str, float]] = {}
    n_test: dict[str, dict[str, int]] = {}
    if reference is not None:
        if reference not in rows:
            raise InputError(
                f"reference candidate {reference!r} is not among the candidates "
                f"({', '.join(rows)}); pick one of them with --reference"
            )
        tested = [m for m, spec in METRICS.items() if spec.group != "setting"]
        per_metric = {
            m: wilcoxon_tests({c: [_number(r.get(m)) for r in rs] for c, rs in rows.items()},
                              reference)
            for m in tested
        }
        for cand in rows:
            pvalues[cand] = {m: per_metric[m][cand].pvalue for m in tested}
            n_test[cand] = {m: per_metric[m][cand].n for m in tested}
    return Summary(mean=mean, std=std, n=n, counts=counts, pvalues=pvalues, n_test=n_test,
                   reference=reference, alpha=alpha, unit=unit)


def _number(value: Any) -> float:
    """A stored value as float (None -- a JSON null -- is NaN)."""
    return math.nan if value is None else float(value)
