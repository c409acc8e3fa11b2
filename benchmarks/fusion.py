"""Benchmark: rater fusion and the full metric set on a 197 x 233 x 189 volume.

Measures, in one run and on the same data:

* ``softseg.fusion.staple`` against SimpleITK's ``STAPLEImageFilter`` (same tolerance, 1e-7):
  wall time, speed-up, and the largest differences of the probabilities and of every rater's
  sensitivity and specificity (goal: >= 5x faster, differences <= 1e-6);
* ``softseg.fusion.fuse`` (the one entry point the CLI, the widget and training call: STAPLE plus
  rater statistics, pairwise Dice and the disagreement map) against the same SimpleITK run;
* ``softseg.fusion.majority_vote`` against SimpleITK's ``LabelVoting`` (ties compared apart);
* ``softseg.metrics.evaluate`` (the full metric set) on one volume (goal: < 1 s).

The raters are realistic rather than noise: one smooth, irregular structure (a few
centimetres across, like a tumour core) outlined by four raters who each draw the boundary at
a slightly different level of the same smooth field plus their own smooth deviation, one of
them slightly misregistered.

Run:  .venv/bin/python benchmarks/fusion.py
(prints a table and writes benchmarks/results/fusion.json)
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from _common import Timer, itk_record, machine, save_result

SHAPE = (197, 233, 189)
N_RATERS = 4
RESULT = Path(__file__).resolve().parent / "results" / "fusion.json"


def smooth_field(
    rng: np.random.Generator, shape, *, coarse: int = 8, sigma: float = 1.5
) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish: filtered noise on a coarse grid, upsampled."""
    small = tuple(max(s // coarse, 4) for s in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(small), sigma)
    noise /= np.abs(noise).max()
    zoom = [s / n for s, n in zip(shape, small)]
    return ndimage.zoom(noise, zoom, order=1)[tuple(slice(0, s) for s in shape)].astype(np.float32)


def make_raters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four binary raters (uint8, (4, *SHAPE)) and two soft predictions (float32): a dense
    sigmoid-like map and a SoftSeg-like map with exact zeros in the background."""
    rng = np.random.default_rng(seed)
    z = np.indices(SHAPE, sparse=True)
    centre = (100.0, 110.0, 95.0)
    radii = (28.0, 34.0, 24.0)
    r2 = sum(((zi - c) / r) ** 2 for zi, c, r in zip(z, centre, radii))
    field = (1.0 - r2).astype(np.float32) + 0.35 * smooth_field(rng, SHAPE)  # > 0 inside
    levels = (-0.06, 0.0, 0.05, 0.12)  # generous ... strict raters
    raters = np.empty((N_RATERS, *SHAPE), dtype=np.uint8)
    for j, level in enumerate(levels):
        own = field + 0.08 * smooth_field(rng, SHAPE, coarse=4, sigma=1.0)
        if j == 3:
            own = np.roll(own, 2, axis=0)  # a slightly misregistered rater
        raters[j] = own > level
    # a sigmoid-like prediction: logits clipped to +-15, so no voxel is exactly 0 (the dense,
    # worst case for the metrics) ...
    dense = special.expit(np.clip(12.0 * field, -15.0, 15.0)).astype(np.float32)
    # ... and a SoftSeg-like one (normalized ReLU): exactly 0 away from the structure
    sparse = np.clip(3.0 * field + 0.5, 0.0, 1.0).astype(np.float32)
    return raters, dense, sparse


timed = Timer()
CPU_TIMES = timed.cpu  # median process CPU time per label (less sensitive to load)


def main() -> int:
    import SimpleITK as sitk

    from softseg import fusion, metrics

    raters, prob, prob_sparse = make_raters()
    print(
        f"raters: {N_RATERS} x {SHAPE} ({raters[0].size / 1e6:.1f} M voxels each), "
        f"foreground fractions {[round(float(r.mean()), 4) for r in raters]}"
    )
    images = [sitk.GetImageFromArray(r) for r in raters]

    # ------------------------------------------------------------------ STAPLE vs SimpleITK
    def run_sitk():
        filt = sitk.STAPLEImageFilter()
        filt.SetForegroundValue(1.0)
        out = filt.Execute(images)
        return out, filt.GetSensitivity(), filt.GetSpecificity(), filt.GetElapsedIterations()

    sitk_times, (sitk_img, sitk_sens, sitk_spec, sitk_iters) = timed(
        run_sitk, 3, "staple_simpleitk"
    )
    sitk_prob = sitk.GetArrayFromImage(sitk_img)
    ours_times, res = timed(lambda: fusion.staple(raters), 7, "staple_softseg")
    max_prob = float(np.max(np.abs(res.probability - sitk_prob)))
    max_sens = float(np.max(np.abs(res.sensitivity - np.asarray(sitk_sens))))
    max_spec = float(np.max(np.abs(res.specificity - np.asarray(sitk_spec))))
    t_sitk, t_ours = statistics.median(sitk_times), statistics.median(ours_times)
    staple = {
        "simpleitk_s": sitk_times,
        "softseg_s": ours_times,
        "simpleitk_median_s": t_sitk,
        "softseg_median_s": t_ours,
        "speedup_median": t_sitk / t_ours,
        "speedup_best": min(sitk_times) / min(ours_times),
        "iterations_softseg": res.iterations,
        "elapsed_iterations_simpleitk": sitk_iters,
        "max_abs_diff_probability": max_prob,
        "max_abs_diff_sensitivity": max_sens,
        "max_abs_diff_specificity": max_spec,
        "sensitivity": res.sensitivity.tolist(),
        "specificity": res.specificity.tolist(),
        "goal_speedup": 5.0,
        "goal_max_abs_diff": 1e-6,
    }
    staple["pass"] = bool(
        staple["speedup_median"] >= 5.0 and max(max_prob, max_sens, max_spec) <= 1e-6
    )

    # the full entry point (same region as SimpleITK: the whole volume)
    fuse_times, fused = timed(lambda: fusion.fuse(raters, "staple", roi=None), 5, "fuse_staple_softseg")
    staple["fuse_median_s"] = statistics.median(fuse_times)
    staple["fuse_speedup_median"] = t_sitk / staple["fuse_median_s"]
    staple["fuse_max_abs_diff_probability"] = float(np.max(np.abs(fused.probability - sitk_prob)))
    staple["fuse_max_abs_diff_sensitivity"] = float(np.max(np.abs(fused.sensitivity - np.asarray(sitk_sens))))
    del fused
    roi_times, roi_res = timed(lambda: fusion.staple(raters, roi=fusion.default_roi(raters)), 3)
    staple["softseg_with_default_roi_median_s"] = statistics.median(roi_times)
    staple["prior_whole_volume"] = res.prior
    staple["prior_default_roi"] = roi_res.prior

    # soft STAPLE on painted confidence maps (levels 1/3, 2/3, 1): informative, no reference
    rng = np.random.default_rng(1)
    shells = np.stack([ndimage.binary_erosion(r, iterations=2) for r in raters])
    soft_raters = np.where(shells, 1.0, raters * np.float32(2 / 3)).astype(np.float32)
    soft_raters[:, ::7] *= np.float32(0.5)  # some low-confidence strokes
    soft_times, soft_res = timed(lambda: fusion.staple(soft_raters, soft=True), 2)
    staple["soft_staple_median_s"] = statistics.median(soft_times)
    staple["soft_staple_iterations"] = soft_res.iterations
    del rng

    # ------------------------------------------------------------ majority vs LabelVoting
    undecided = 255
    lv_times, lv_img = timed(
        lambda: sitk.LabelVoting(images, undecided), 3, "label_voting_simpleitk"
    )
    lv = sitk.GetArrayFromImage(lv_img)
    mv_times, mv = timed(lambda: fusion.majority_vote(raters, ties=0), 5, "majority_vote_softseg")
    ties = lv == undecided
    agree = bool(np.array_equal(mv[~ties], lv[~ties]) and not mv[ties].any())
    vote = {
        "simpleitk_label_voting_s": lv_times,
        "softseg_majority_vote_s": mv_times,
        "simpleitk_median_s": statistics.median(lv_times),
        "softseg_median_s": statistics.median(mv_times),
        "speedup_median": statistics.median(lv_times) / statistics.median(mv_times),
        "tie_voxels": int(ties.sum()),
        "identical_outside_ties": agree,
        "note": "LabelVoting labels 2-2 ties 'undecided' (255); "
        "majority_vote(ties=0) gives background",
    }

    # ------------------------------------------------------------------- full metric set
    truth = fusion.majority_vote(raters)
    avg = fusion.average(raters)
    spacing = (1.0, 1.0, 1.2)
    metric_times, report = timed(
        lambda: metrics.evaluate(prob, truth, spacing=spacing, threshold=0.5, rater_average=avg),
        5,
        "metrics_dense",
    )
    soft_metric_times, _ = timed(
        lambda: metrics.evaluate(prob, truth, spacing=spacing, threshold=0.5), 3
    )
    sparse_times, _ = timed(
        lambda: metrics.evaluate(
            prob_sparse, truth, spacing=spacing, threshold=0.5, rater_average=avg
        ),
        5,
    )
    full = {
        "prediction": "dense sigmoid-like map (no exact zeros), binarised at 0.5, "
        "reference = rater average",
        "metrics_s": metric_times,
        "median_s": statistics.median(metric_times),
        "without_rater_average_median_s": statistics.median(soft_metric_times),
        "softseg_like_sparse_median_s": statistics.median(sparse_times),
        "goal_s": 1.0,
        "pass": statistics.median(metric_times) < 1.0,
        "values": {k: v for k, v in report.items() if isinstance(v, (int, float)) or v is None},
    }

    result = {
        "benchmark": "fusion",
        "shape": list(SHAPE),
        "n_raters": N_RATERS,
        "load_average_at_end": list(os.getloadavg()),
        "median_cpu_s": CPU_TIMES,
        "note": "wall-clock medians on a 2-core machine shared with other jobs; median_cpu_s is "
        "the process CPU time (SimpleITK's LabelVoting uses ITK's thread pool, so its CPU time "
        "can exceed its wall time)",
        "machine": machine(**itk_record()),
        "staple": staple,
        "majority_vote": vote,
        "metrics": full,
    }
    save_result(RESULT, result)

    print(
        f"STAPLE      SimpleITK {t_sitk:7.3f} s   softseg {t_ours:7.3f} s   "
        f"speed-up {staple['speedup_median']:6.1f}x "
        f"(goal >= 5x)   iterations {res.iterations} (SimpleITK reports {sitk_iters})"
    )
    print(
        f"            max |diff|: probability {max_prob:.2e}, sensitivity {max_sens:.2e}, "
        f"specificity {max_spec:.2e} "
        f"(goal <= 1e-6)   -> {'PASS' if staple['pass'] else 'FAIL'}"
    )
    print(
        f"            fuse() entry point {staple['fuse_median_s']:.3f} s "
        f"(speed-up {staple['fuse_speedup_median']:.1f}x, with rater statistics, pairwise Dice, "
        "disagreement)"
    )
    print(
        f"            with default_roi {staple['softseg_with_default_roi_median_s']:.3f} s (prior "
        f"{roi_res.prior:.4f} vs {res.prior:.4f} whole volume); soft STAPLE on confidence maps "
        f"{staple['soft_staple_median_s']:.3f} s ({soft_res.iterations} iterations)"
    )
    print(
        f"majority    LabelVoting {vote['simpleitk_median_s']:.3f} s   "
        f"softseg {vote['softseg_median_s']:.3f} s   speed-up {vote['speedup_median']:.1f}x   "
        f"identical outside {vote['tie_voxels']} tie voxels: {agree}"
    )
    print(
        f"metrics     full set {full['median_s']:.3f} s on a dense map (goal < 1 s) -> "
        f"{'PASS' if full['pass'] else 'FAIL'}; "
        f"without the rater average {full['without_rater_average_median_s']:.3f} s; "
        f"SoftSeg-like sparse map {full['softseg_like_sparse_median_s']:.3f} s"
    )
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (timings are wall clock)"
    )
    print(f"wrote {RESULT}")
    return 0 if staple["pass"] and full["pass"] and agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
