"""The papers' figures (matplotlib, no pyplot) and the comparison report (HTML, CSV, JSON).

Every column comes from :data:`softseg.metrics.METRICS` (title, unit, format), so the report,
the console tables and the widgets name and format each metric the same way.

JSON convention for metric values (:func:`json_safe`): finite numbers as numbers, NaN ("not
applicable", e.g. the rater entropy without raters) as ``null``, infinities (the empty-mask
limits) as the strings ``"inf"`` / ``"-inf"`` -- explicit, and still strict JSON.
:func:`number` reads such a value back.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softseg.compare.evaluation import Comparison, Curves
from softseg.compare.statistics import Summary, summarize
from softseg.errors import InputError
from softseg.io import atomic_path, write_json
from softseg.metrics import METRICS
from softseg.palette import candidate_color

__all__ = [
    "FIGURES",
    "UNCERTAINTY_FIGURES",
    "available_figures",
    "csv_text",
    "draw_figure",
    "json_safe",
    "number",
    "render_figures",
    "text_table",
    "write_report",
    "write_text",
]


def _colors(curves: Mapping[str, Curves], colors: Mapping[str, Any] | None = None) -> list:
    """One colour per candidate: ``colors[name]`` or :func:`softseg.palette.candidate_color`."""
    return [(colors or {}).get(name) or candidate_color(name) for name in curves]


def _draw_reliability(ax, curves: Mapping[str, Curves], cursor=None, colors=None) -> None:
    ax.plot([0, 1], [0, 1], color="red", lw=1.2, ls="--", label="perfect calibration")
    for (name, c), col in zip(curves.items(), _colors(curves, colors)):
        keep = c.rel_count > 0
        ax.plot(c.rel_confidence[keep], c.rel_accuracy[keep], "o-", color=col, label=name, ms=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")


def _draw_histogram(ax, curves: Mapping[str, Curves], cursor=None, colors=None) -> None:
    for (name, c), col in zip(curves.items(), _colors(curves, colors)):
        total = c.hist_counts.sum()
        width = np.diff(c.hist_edges)
        density = c.hist_counts / (total * width) if total else np.zeros_like(width)
        centers = 0.5 * (c.hist_edges[1:] + c.hist_edges[:-1])
        ax.plot(centers, density, color=col, label=name)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("prediction value (non-zero voxels)")
    ax.set_ylabel("density")
    ax.set_title("Distribution of non-zero predictions")


def _draw_dice(ax, curves: Mapping[str, Curves], cursor=None, colors=None) -> None:
    for (name, c), col in zip(curves.items(), _colors(curves, colors)):
        d = np.asarray(c.dice, dtype=np.float64) * 100
        mean = np.nanmean(d, axis=0)
        ax.plot(c.thresholds, mean, color=col, lw=2, label=name)
        if d.shape[0] > 1:
            ax.fill_between(c.thresholds, np.nanmin(d, axis=0), np.nanmax(d, axis=0),
                            color=col, alpha=0.2)
        best = int(np.nanargmax(mean))
        ax.plot(c.thresholds[best], mean[best], "o", color=col, ms=6)
    if cursor is not None:
        ax.axvline(cursor, color="k", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold")
    ax.set_ylabel("Dice [%]")
    ax.set_title("Dice vs threshold")


def _draw_volume(ax, curves: Mapping[str, Curves], cursor=None, colors=None) -> None:
    ref_drawn = False
    for (name, c), col in zip(curves.items(), _colors(curves, colors)):
        ax.plot(c.thresholds, np.nanmean(c.volume_ml, axis=0), color=col, lw=2, label=name)
        if not ref_drawn and c.reference_volume_ml.size:
            ax.axhline(float(np.nanmean(c.reference_volume_ml)), color="gray", ls="--",
                       label="reference")
            ref_drawn = True
    if cursor is not None:
        ax.axvline(cursor, color="k", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold")
    ax.set_ylabel("volume [mL]")
    ax.set_title("Binarised volume vs threshold")


def _draw_entropy(ax, curves: Mapping[str, Curves], cursor=None, colors=None) -> None:
    hi = 0.0
    for (name, c), col in zip(curves.items(), _colors(curves, colors)):
        keep = np.isfinite(c.rater_entropy)
        ax.scatter(c.rater_entropy[keep], c.entropy[keep], color=col, label=name, s=25)
        if keep.any():
            hi = max(hi, float(np.max(c.rater_entropy[keep])), float(np.max(c.entropy[keep])))
    hi = hi * 1.05 or 1.0
    ax.plot([0, hi], [0, hi], color="k", ls="--", lw=1, label="identity")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("entropy of the rater average [nats]")
    ax.set_ylabel("prediction entropy [nats]")
    ax.set_title("Prediction vs rater entropy")


def _draw_uncertainty_error(ax, curves: Mapping[str, Curves], cursor=None, colors=None) -> None:
    from softseg.metrics.uncertainty import roc_from_counts

    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1, label="chance (AUROC 0.5)")
    for (name, c), col in zip(curves.items(), _colors(curves, colors)):
        if not c.roc_error_counts.size:
            continue
        fpr, tpr = roc_from_counts(c.roc_error_counts, c.roc_correct_counts)
        ax.plot(fpr, tpr, color=col, lw=2, label=name)  # AUROC: the table's uncertainty_auroc
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("correct voxels flagged (false-positive rate, log)")
    ax.set_ylabel("misclassified voxels flagged (true-positive rate)")
    ax.set_title("Entropy as a detector of errors")


#: figure name -> (title, draw(ax, curves, **kw), needs raters). Plain dict (STYLE.md 6).
FIGURES: dict[str, tuple[str, Callable[..., None], bool]] = {
    "reliability": ("Reliability diagram", _draw_reliability, False),
    "histogram": ("Non-zero predictions", _draw_histogram, False),
    "dice_threshold": ("Dice vs threshold", _draw_dice, False),
    "volume_threshold": ("Volume vs threshold", _draw_volume, False),
    "entropy": ("Entropy vs rater entropy", _draw_entropy, True),
    "uncertainty_error": ("Uncertainty vs errors", _draw_uncertainty_error, False),
}
#: figures of the report's uncertainty section (label-fusion paper Fig. 1; uncertainty-error ROC)
UNCERTAINTY_FIGURES = ("entropy", "uncertainty_error")


def draw_figure(ax, name: str, curves: Mapping[str, Curves], **kwargs) -> None:
    """Draw figure ``name`` of :data:`FIGURES` on a matplotlib ``Axes`` (legend included).

    ``kwargs``: ``cursor`` (a threshold line), ``colors`` (candidate -> colour; default
    :func:`softseg.palette.candidate_color` of each curve's name)."""
    if name not in FIGURES:
        raise InputError(f"unknown figure {name!r}; valid names: {', '.join(FIGURES)}")
    FIGURES[name][1](ax, curves, **kwargs)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def available_figures(curves: Mapping[str, Curves]) -> list[str]:
    """Figure names that make sense for these curves (the entropy plot needs raters, the
    uncertainty-error plot the entropy histograms of :class:`Curves`)."""
    has_raters = any(c.has_raters for c in curves.values())
    has_roc = any(c.roc_error_counts.size for c in curves.values())
    return [name for name, (_, _, needs) in FIGURES.items()
            if (has_raters or not needs) and (has_roc or name != "uncertainty_error")]


def render_figures(folder: str | os.PathLike, curves: Mapping[str, Curves], *,
                   dpi: int = 100, overwrite: bool = True, prefix: str = "") -> dict[str, Path]:
    """Write every available figure as ``folder/<prefix><name>.png`` (Agg, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in available_figures(curves):
        fig = Figure(figsize=(5.5, 4.0), dpi=dpi, layout="tight")
        FigureCanvasAgg(fig)
        draw_figure(fig.add_subplot(1, 1, 1), name, curves)
        path = folder / f"{prefix}{name}.png"
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png")
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text (values as Python writes them: full precision, ``inf``, ``nan``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool) -> Path:
    """Write a text file atomically (UTF-8)."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def json_safe(obj: Any) -> Any:
    """Strict-JSON form: numpy to Python, NaN to None, +-inf to ``"inf"`` / ``"-inf"``."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def number(value: Any) -> float:
    """A metric value read back from :func:`json_safe`'s JSON (``None`` is NaN)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value not in ("inf", "-inf", "nan"):
            raise InputError(f"expected a number, null, 'inf' or '-inf'; got {value!r}")
        return float(value)
    return float(value)


def _summary_csv(comparison: Comparison, summary: Summary) -> str:
    keys = list(METRICS)
    header = ["candidate", "n"]
    for m in keys:
        header += [f"{m}_mean", f"{m}_std", f"{m}_n_finite", f"{m}_n_inf", f"{m}_n_nan"]
    tested = [m for m in keys if summary.pvalues and m in next(iter(summary.pvalues.values()))]
    header += [x for m in tested for x in (f"{m}_p", f"{m}_n_test")]
    rows = []
    for cand in comparison.rows:
        r: list[Any] = [cand, summary.n[cand]]
        for m in keys:
            c = summary.counts[cand][m]
            r += [summary.mean[cand][m], summary.std[cand][m], c["finite"], c["inf"], c["nan"]]
        r += [x for m in tested for x in (summary.pvalues[cand][m], summary.n_test[cand][m])]
        rows.append(r)
    return csv_text(header, rows)


def _samples_csv(comparison: Comparison) -> str:
    keys = list(METRICS)
    rows = []
    for cand, cand_rows in comparison.rows.items():
        subjects = comparison.curves[cand].subjects if cand in comparison.curves else ()
        for i, r in enumerate(cand_rows):
            label = r.get("sample", subjects[i] if i < len(subjects) else str(i))
            rows.append([cand, label] + [r.get(m, math.nan) for m in keys])
    return csv_text(["candidate", "sample"] + keys, rows)


def text_table(comparison: Comparison, summary: Summary, *, level: int = 1) -> str:
    """The console table: one row per candidate, the metrics of :data:`METRICS` up to
    ``level`` that have a value, cells as :meth:`Summary.cell` writes them."""
    cols = [m for m, spec in METRICS.items() if spec.level <= level
            and any(not math.isnan(summary.mean[c][m]) for c in comparison.rows)]
    name_w = max(len("candidate"), *(len(c) for c in comparison.rows)) + 2
    cells = {m: [summary.cell(c, m) for c in comparison.rows] for m in cols}
    widths = {m: max(len(METRICS[m].header), *(len(x) for x in cells[m])) + 2 for m in cols}
    lines = ["candidate".ljust(name_w) + "".join(METRICS[m].header.rjust(widths[m]) for m in cols)]
    for i, cand in enumerate(comparison.rows):
        lines.append(cand.ljust(name_w) + "".join(cells[m][i].rjust(widths[m]) for m in cols))
    return "\n".join(lines)


def _file_key(name: str) -> str:
    """A class name as a file-name part: its key (:func:`softseg.dataset_json.class_key`), any
    character other than letters, digits, ``-``, ``_`` and ``.`` as ``-``."""
    from softseg.dataset_json import class_key

    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in class_key(name))


def write_report(
    folder: str | os.PathLike,
    comparison: Comparison,
    *,
    summary: Summary | None = None,
    title: str = "Candidate comparison",
    notes: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an HTML report with PNG figures, CSV tables and a JSON file.

    Layout::

        folder/index.html         tables (mean ± std, ** = p < alpha) and the figures
        folder/summary.csv        one row per candidate: per metric mean, std, the counts of
                                  finite / infinite / NaN values, and (with a reference) the
                                  Wilcoxon p-value and the pairs it used
        folder/samples.csv        one row per candidate and subject (or repeat), raw values
        folder/metrics.json       everything above plus the plot data and ``meta``
        folder/figures/*.png      reliability, histogram, dice_threshold, volume_threshold,
                                  entropy (with raters)

    A multi-class comparison (:attr:`Comparison.per_class`) adds, per class ``<key>`` (the
    class name with spaces as ``-``), ``summary_<key>.csv``, ``samples_<key>.csv`` and
    ``figures/<key>/*.png``, and one table per class in ``index.html``; ``summary.csv`` then
    holds the multi-class ECE and accuracy.

    Every file is written atomically; ``index.html`` last, so a report with an index is complete.

    Returns
    -------
    Path
        ``folder/index.html``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(comparison.rows)
    figs = (render_figures(folder / "figures", comparison.curves, overwrite=overwrite)
            if comparison.curves else {})
    write_text(folder / "summary.csv", _summary_csv(comparison, summary), overwrite=overwrite)
    write_text(folder / "samples.csv", _samples_csv(comparison), overwrite=overwrite)
    sections = []
    classes: dict[str, Any] = {}
    for cname, sub in comparison.per_class.items():
        key = _file_key(cname)
        sub_summary = summarize(sub.rows, reference=summary.reference, alpha=summary.alpha,
                                unit=summary.unit)
        sub_figs = render_figures(folder / "figures" / key, sub.curves, overwrite=overwrite)
        write_text(folder / f"summary_{key}.csv", _summary_csv(sub, sub_summary),
                   overwrite=overwrite)
        write_text(folder / f"samples_{key}.csv", _samples_csv(sub), overwrite=overwrite)
        sections.append((cname, sub, sub_summary, sub_figs))
        classes[cname] = {
            "summary": sub_summary.as_dict(),
            "samples": {c: [dict(r) for r in rs] for c, rs in sub.rows.items()},
            "curves": {c: cv.as_dict() for c, cv in sub.curves.items()},
            "figures": {k: str(v.relative_to(folder)) for k, v in sub_figs.items()},
        }

    payload = {
        "title": title,
        "meta": dict(meta or {}),
        "reference": comparison.reference_name,
        "metrics": {m: {"title": s.title, "unit": s.unit, "scale": s.scale, "better": s.better,
                        "format": s.fmt} for m, s in METRICS.items()},
        "summary": summary.as_dict(),
        "samples": {c: [dict(r) for r in rs] for c, rs in comparison.rows.items()},
        "curves": {c: cv.as_dict() for c, cv in comparison.curves.items()},
        "figures": {k: str(v.relative_to(folder)) for k, v in figs.items()},
        "classes": classes,
    }
    write_json(folder / "metrics.json", json_safe(payload), overwrite=True)
    write_text(folder / "index.html",
               _html(title, comparison, summary, figs, folder, notes, meta, sections),
               overwrite=overwrite)
    return folder / "index.html"


def _table_html(comparison: Comparison, summary: Summary) -> str:
    e = html.escape
    shown = [m for m, s in METRICS.items() if s.level <= 2 and any(
        not math.isnan(summary.mean[c][m]) for c in comparison.rows)]
    opt = {"higher": "higher is better", "lower": "lower is better", "zero": "best at 0",
           "": ""}
    head = "".join(f"<th>{e(METRICS[m].header)}<br><small>{opt[METRICS[m].better]}</small></th>"
                   for m in shown)
    body = []
    for cand in comparison.rows:
        cells = []
        for m in shown:
            cls = ' class="sig"' if summary.significant(cand, m) else ""
            tip = ""
            if summary.n_test.get(cand, {}).get(m) is not None and cand != summary.reference:
                tip = (f' title="Wilcoxon p = {summary.pvalues[cand][m]:.3g}, '
                       f'n = {summary.n_test[cand][m]} pairs"')
            cells.append(f"<td{cls}{tip}>{e(summary.cell(cand, m))}</td>")
        ref = " (ref)" if cand == summary.reference else ""
        body.append(f"<tr><th>{e(cand)}{ref}</th><td>{summary.n[cand]}</td>{''.join(cells)}</tr>")
    return (f"<table><tr><th>candidate</th><th>n</th>{head}</tr>\n{''.join(body)}\n</table>")


def _figures_html(figs: Mapping[str, Path], folder: Path) -> str:
    e = html.escape
    return "".join(
        f'<figure><img src="{e(p.relative_to(folder).as_posix())}" alt="{e(FIGURES[k][0])}">'
        f"<figcaption>{e(FIGURES[k][0])}</figcaption></figure>" for k, p in figs.items())


def _uncertainty_html(comparison: Comparison, summary: Summary, figs: Mapping[str, Path],
                      folder: Path) -> str:
    """The uncertainty section: entropy vs rater entropy (MAE) and entropy as an error detector."""
    e = html.escape
    keys = [k for k in ("entropy_error", "uncertainty_auroc")
            if any(not math.isnan(summary.mean[c][k]) for c in comparison.rows)]
    shown = {k: v for k, v in figs.items() if k in UNCERTAINTY_FIGURES}
    if not keys and not shown:
        return ""
    rows = "".join(
        f"<tr><th>{e(c)}</th>"
        + "".join(f"<td>{e(summary.cell(c, k))}</td>" for k in keys) + "</tr>"
        for c in comparison.rows)
    head = "".join(f"<th>{e(METRICS[k].header)}</th>" for k in keys)
    text = ("Entropy vs rater entropy: each subject's total predictive entropy against the entropy "
            "of the rater average (label-fusion paper, Fig. 1); the mean of |ΔEntropy| over "
            "subjects is the paper's MAE (lower: the prediction's uncertainty matches the raters' "
            "disagreement). Uncertainty AUROC: the per-voxel entropy used to flag the voxels the "
            "binarised prediction gets wrong (1 = every error is more uncertain than every correct "
            "voxel, 0.5 = chance); the ROC pools every subject. Uncertainty maps of MC dropout or "
            "test-time augmentation are compared the same way through their mean map.")
    table = f"<table><tr><th>candidate</th>{head}</tr>{rows}</table>" if keys else ""
    return f"<h2>Uncertainty</h2><p>{e(text)}</p>{table}{_figures_html(shown, folder)}"


def _html(title, comparison, summary, figs, folder, notes, meta, sections=()) -> str:
    e = html.escape
    legend = f"Mean ± standard deviation over {summary.unit}. "
    legend += ("[k inf]: k values were infinite (the empty-mask limits, e.g. a structure "
               "predicted on a subject without one); the mean is then infinite. [n=k]: only k "
               "values apply (NaN for the others). ")
    if summary.reference:
        legend += (f"** p &lt; {summary.alpha} for a two-sided Wilcoxon signed-rank test against "
                   f"{e(summary.reference)} (scipy.stats.wilcoxon, paired by {e(summary.unit)}; "
                   "pairs with equal values are dropped: hover a cell for p and the pairs used, "
                   "all in summary.csv).")
    legend += f" Reference for overlap metrics: {e(comparison.reference_name)}."
    meta_html = "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>"
                        for k, v in (meta or {}).items())
    notes_html = "".join(f"<p>{e(n)}</p>" for n in notes)
    main_title = "Multi-class summary" if sections else "Metrics"
    class_html = "".join(
        f"<h2>{e(cname)}</h2>{_table_html(sub, sub_summary)}"
        f"<p>Files: summary_{e(_file_key(cname))}.csv, samples_{e(_file_key(cname))}.csv.</p>"
        f"{_figures_html(sub_figs, folder)}"
        for cname, sub, sub_summary, sub_figs in sections)
    plain = {k: v for k, v in figs.items() if k not in UNCERTAINTY_FIGURES}
    fig_html = f"<h2>Figures</h2>{_figures_html(plain, folder)}" if plain else ""
    unc_html = _uncertainty_html(comparison, summary, figs, folder)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #bbb;padding:3px 7px;text-align:right}} th{{background:#f1f1f1}}
td.sig{{font-weight:bold;background:#fff4d6}} figure{{display:inline-block;margin:8px}}
img{{max-width:560px;border:1px solid #ddd}}
</style></head><body>
<h1>{e(title)}</h1>
<ul>{meta_html}</ul>
{notes_html}
<h2>{main_title}</h2>
{_table_html(comparison, summary)}
<p>{legend} Files: <a href="summary.csv">summary.csv</a>, <a href="samples.csv">samples.csv</a>,
<a href="metrics.json">metrics.json</a>.</p>
{class_html}
{unc_html}
{fig_html}
</body></html>
"""
