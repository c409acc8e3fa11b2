"""Benchmark: multi-class rater fusion on a 197 x 233 x 189 volume (4 raters, 3 classes).

Measures, in one run and on the same data:

* ``softseg.fusion.multilabel.multilabel_staple`` against SimpleITK's
  ``MultiLabelSTAPLEImageFilter`` (default settings: termination threshold 1e-5, no iteration
  cap): wall and CPU time, speed-up (goal >= 5x), the largest difference of any confusion-matrix
  entry (goal <= 1e-6) and the number of voxels whose label differs (goal 0);
  also without the per-class probability maps (labels and matrices only) and inside the
  default region of interest;
* ``label_vote`` against SimpleITK's ``LabelVotingImageFilter`` (ties included: both give the
  undecided label K + 1);
* ``class_average`` (time only) and ``class_disagreements`` (both disagreement maps ``fuse``
  returns, looked up from the vote counts) against the entropy of the class average computed
  voxel by voxel (``softseg.metrics.entropy``): speed-up and bit-for-bit equality.

The raters are structured rather than noise: a head-like ellipsoid holding three nested tissue
classes (1 = outer, 2 = middle, 3 = inner) whose boundaries fold with a smooth random field;
four raters draw every boundary at a slightly different level of that field plus their own
smooth deviation (a generous, a strict and a neutral rater, and one misregistered by 2 voxels).

Run:  .venv/bin/python benchmarks/multilabel_staple.py
(prints a summary and writes benchmarks/results/multilabel_staple.json)
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from _common import Timer, itk_record, machine, save_result

SHAPE = (197, 233, 189)
N_RATERS = 4
N_CLASSES = 3
RESULT = Path(__file__).resolve().parent / "results" / "multilabel_staple.json"


def folding(rng: np.random.Generator, shape, *, step: int, sigma: float) -> np.ndarray:
    """Smooth random field, unit peak: Gaussian-filtered noise on a grid ``step`` times coarser,
    trilinearly enlarged to ``shape``."""
    grid = tuple(max(s // step, 4) for s in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(grid), sigma, mode="wrap")
    noise /= np.abs(noise).max()
    big = ndimage.zoom(noise, [s / g for s, g in zip(shape, grid)], order=1)
    return big[tuple(slice(0, s) for s in shape)].astype(np.float32)


def make_raters(seed: int = 0) -> np.ndarray:
    """(4, *SHAPE) uint8 label maps, 0 = background, 1..3 = nested tissue classes."""
    rng = np.random.default_rng(seed)
    z = np.indices(SHAPE, sparse=True)
    centre = (98.0, 116.0, 94.0)
    radii = (80.0, 95.0, 78.0)
    r2 = sum(((zi - c) / r) ** 2 for zi, c, r in zip(z, centre, radii))
    depth = (1.0 - r2).astype(np.float32) + 0.25 * folding(rng, SHAPE, step=6, sigma=1.2)
    cuts = np.array([0.0, 0.22, 0.5], dtype=np.float32)  # outer, middle, inner tissue
    habits = (-0.025, 0.0, 0.025, 0.0)  # generous, neutral, strict, misregistered
    raters = np.empty((N_RATERS, *SHAPE), dtype=np.uint8)
    for j, habit in enumerate(habits):
        own = depth + 0.04 * folding(rng, SHAPE, step=3, sigma=1.0) - habit
        if j == 3:
            own = np.roll(own, 2, axis=1)
        raters[j] = np.searchsorted(cuts, own.ravel(), side="right").reshape(SHAPE)
    return raters


def tuples_present(raters: np.ndarray, n_labels: int) -> int:
    """How many distinct (rater 0, ..., rater R-1) label tuples the volume holds."""
    code = np.zeros(raters.shape[1:], dtype=np.int64)
    for r in raters:
        code = code * n_labels + r
    return int(np.count_nonzero(np.bincount(code.ravel())))


timed = Timer()
CPU_TIMES = timed.cpu  # median process CPU time per label


def main() -> int:
    import SimpleITK as sitk

    from softseg.fusion import default_roi
    from softseg.fusion import multilabel as ml

    raters = make_raters()
    shares = np.bincount(raters.ravel(), minlength=N_CLASSES + 1) / raters.size
    print(
        f"raters: {N_RATERS} x {SHAPE} ({raters[0].size / 1e6:.2f} M voxels each), label "
        f"shares {np.round(shares, 3).tolist()}"
    )
    images = [sitk.GetImageFromArray(r) for r in raters]

    # ---------------------------------------------------------------- multi-label STAPLE
    def run_sitk():
        filt = sitk.MultiLabelSTAPLEImageFilter()
        out = sitk.GetArrayFromImage(filt.Execute(images))
        t = N_CLASSES + 1
        conf = np.array([np.reshape(filt.GetConfusionMatrix(j), (t + 1, t)) for j in range(4)])
        return out, conf

    sitk_times, (sitk_labels, sitk_conf) = timed(run_sitk, 3, "staple_simpleitk")
    ours_times, res = timed(lambda: ml.multilabel_staple(raters), 7, "staple_softseg")
    bare_times, bare = timed(
        lambda: ml.multilabel_staple(raters, probabilities=False),
        7,
        "staple_softseg_no_probabilities",
    )
    roi = default_roi(raters > 0)
    roi_times, roi_res = timed(lambda: ml.multilabel_staple(raters, roi=roi), 3, "staple_roi")

    t = N_CLASSES + 1
    itk_ours = np.swapaxes(sitk_conf[:, :t, :], 1, 2)  # rows = true class, as ours
    max_conf = float(np.abs(res.confusion - itk_ours).max())
    differ = int(np.count_nonzero(res.labels != sitk_labels))
    undecided = int(np.count_nonzero(sitk_labels == t))
    prob_sum = float(np.abs(res.probabilities.sum(axis=0, dtype=np.float64) - 1.0).max())
    t_sitk = statistics.median(sitk_times)
    t_ours = statistics.median(ours_times)
    t_bare = statistics.median(bare_times)
    staple = {
        "simpleitk_s": sitk_times,
        "softseg_s": ours_times,
        "softseg_without_probabilities_s": bare_times,
        "simpleitk_median_s": t_sitk,
        "softseg_median_s": t_ours,
        "softseg_without_probabilities_median_s": t_bare,
        "speedup_median": t_sitk / t_ours,
        "speedup_median_without_probabilities": t_sitk / t_bare,
        "speedup_cpu": CPU_TIMES["staple_simpleitk"] / CPU_TIMES["staple_softseg"],
        "speedup_best": min(sitk_times) / min(ours_times),
        "iterations_softseg": res.iterations,
        "label_tuples_present": tuples_present(raters, t),
        "max_abs_diff_confusion": max_conf,
        "voxels_with_different_label": differ,
        "label_agreement": 1.0 - differ / raters[0].size,
        "undecided_voxels_simpleitk": undecided,
        "extra_itk_row_max": float(np.abs(sitk_conf[:, t, :]).max()),
        "max_abs_probability_sum_error": prob_sum,
        "same_labels_without_probabilities": bool(np.array_equal(bare.labels, res.labels)),
        "confusion_rows_true_class": res.confusion.round(6).tolist(),
        "prior": res.prior.tolist(),
        "goal_speedup": 5.0,
        "goal_max_abs_diff": 1e-6,
        "softseg_default_roi_median_s": statistics.median(roi_times),
        "default_roi_fraction": float(roi.mean()),
        "prior_default_roi": roi_res.prior.tolist(),
    }
    staple["pass"] = bool(staple["speedup_median"] >= 5.0 and max_conf <= 1e-6 and differ == 0)

    # -------------------------------------------------------------------- label voting
    lv_times, lv = timed(
        lambda: sitk.GetArrayFromImage(sitk.LabelVoting(images)), 5, "label_voting_simpleitk"
    )
    mv_times, mv = timed(lambda: ml.label_vote(raters), 7, "label_vote_softseg")
    vote = {
        "simpleitk_s": lv_times,
        "softseg_s": mv_times,
        "simpleitk_median_s": statistics.median(lv_times),
        "softseg_median_s": statistics.median(mv_times),
        "speedup_median": statistics.median(lv_times) / statistics.median(mv_times),
        "speedup_cpu": CPU_TIMES["label_voting_simpleitk"] / CPU_TIMES["label_vote_softseg"],
        "tie_voxels": int(np.count_nonzero(lv == t)),
        "identical_including_ties": bool(np.array_equal(lv, mv)),
        "note": "both give ties the undecided label K + 1 = 4",
    }

    # ------------------------------------------------------- average and disagreement
    from softseg.metrics import entropy

    avg_times, avg = timed(lambda: ml.class_average(raters), 5, "class_average")
    # both disagreement maps fuse() returns, looked up from the vote counts, against the
    # reference: metrics.entropy of the class average (a logarithm per voxel and class), which
    # is what class_disagreement computed before the lookup
    dis_times, (dis, per_class) = timed(lambda: ml.class_disagreements(raters), 5, "class_disagreements")
    ref_times, (ref, ref_per_class) = timed(
        lambda: (entropy(ml.class_average(raters), class_axis=0), entropy(ml.class_average(raters))),
        3,
        "entropy_of_class_average",
    )
    soft = {
        "class_average_median_s": statistics.median(avg_times),
        "class_disagreements_median_s": statistics.median(dis_times),
        "reference_entropy_of_class_average_median_s": statistics.median(ref_times),
        "speedup_median": statistics.median(ref_times) / statistics.median(dis_times),
        "speedup_cpu": CPU_TIMES["entropy_of_class_average"] / CPU_TIMES["class_disagreements"],
        "identical_to_reference": bool(np.array_equal(dis, ref) and np.array_equal(per_class, ref_per_class)),
        "max_abs_sum_error": float(np.abs(avg.sum(axis=0, dtype=np.float64) - 1.0).max()),
    }

    result = {
        "benchmark": "multilabel_staple",
        "shape": list(SHAPE),
        "n_raters": N_RATERS,
        "n_classes": N_CLASSES,
        "label_shares": shares.tolist(),
        "load_average_at_end": list(os.getloadavg()),
        "median_cpu_s": CPU_TIMES,
        "note": "wall-clock medians on a 2-core machine shared with other jobs; median_cpu_s is "
        "the process CPU time (SimpleITK's MultiLabelSTAPLE runs single-threaded; LabelVoting "
        "uses ITK's thread pool, so its CPU time can exceed its wall time)",
        "machine": machine(**itk_record()),
        "multilabel_staple": staple,
        "label_voting": vote,
        "class_average": soft,
    }
    save_result(RESULT, result)

    print(
        f"MultiLabelSTAPLE: SimpleITK {t_sitk:.2f} s, softseg {t_ours:.3f} s "
        f"({staple['speedup_median']:.0f}x; {t_bare:.3f} s / "
        f"{staple['speedup_median_without_probabilities']:.0f}x without probability maps; "
        f"CPU {staple['speedup_cpu']:.0f}x), {res.iterations} iterations, "
        f"max |confusion diff| {max_conf:.1e}, {differ} voxels with another label"
    )
    print(
        f"LabelVoting: SimpleITK {vote['simpleitk_median_s']:.3f} s, softseg "
        f"{vote['softseg_median_s']:.3f} s ({vote['speedup_median']:.1f}x), identical incl. "
        f"{vote['tie_voxels']} ties: {vote['identical_including_ties']}"
    )
    print(
        f"class_average {soft['class_average_median_s']:.3f} s; both disagreement maps "
        f"{soft['class_disagreements_median_s']:.3f} s vs entropy of the class average "
        f"{soft['reference_entropy_of_class_average_median_s']:.3f} s ({soft['speedup_median']:.1f}x, "
        f"CPU {soft['speedup_cpu']:.1f}x), identical: {soft['identical_to_reference']}"
    )
    print(f"wrote {RESULT}")
    ok = staple["pass"] and vote["identical_including_ties"] and soft["identical_to_reference"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
