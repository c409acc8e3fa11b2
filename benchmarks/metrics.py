"""Benchmark: the one metric table (``softseg.metrics.evaluate``) on a 197 x 233 x 189 volume.

Measures, in one run and on the same data as ``benchmarks/fusion.py`` (its ``make_raters``: one
smooth irregular structure outlined by four raters, a dense sigmoid-like prediction without
exact zeros and a SoftSeg-like one with exact zeros):

* ``metrics.evaluate`` (every key of ``metrics.METRICS``: overlap, 95th-percentile Hausdorff,
  lesions, calibration, Brier against the rater average, entropies, volumes) on the dense and
  the sparse prediction;
* the reference, measured in the same run: SimpleITK's ``LabelOverlapMeasuresImageFilter`` +
  ``HausdorffDistanceImageFilter`` + ``StatisticsImageFilter`` on the binarised masks (Dice,
  precision/recall, Hausdorff, volume: a *subset* of the table). Ratio = ours / SimpleITK
  (lower is better); the Dice values must agree exactly;
* ``metrics.evaluate_classes`` on a 3-class prediction of the same size (per-class tables +
  multi-class ECE) against SimpleITK's per-label overlap measures on the argmax.

Run:  .venv/bin/python benchmarks/metrics.py     (writes benchmarks/results/metrics.json)
Wall-clock medians on a shared 2-core machine; process CPU times are recorded beside them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from _common import Timer, itk_record, machine, save_result

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "metrics.json"
SPACING = (1.0, 1.0, 1.2)


def _fusion_data():
    spec = importlib.util.spec_from_file_location("_fusion_bench", HERE / "fusion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_raters()


timed = Timer().medians  # (median wall s, median CPU s, last result)


def _sitk_table(pred_mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    import SimpleITK as sitk

    def image(mask):
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.SetSpacing(SPACING[::-1])
        return img

    p, g = image(pred_mask), image(truth)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(p, g)
    hd = sitk.HausdorffDistanceImageFilter()
    hd.Execute(p, g)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(p)
    return {"dice": overlap.GetDiceCoefficient(), "recall": 1 - overlap.GetFalseNegativeError(),
            "precision": 1 - overlap.GetFalseDiscoveryRate(),
            "hausdorff_mm": hd.GetHausdorffDistance(),
            "binary_volume_ml": stats.GetSum() * float(np.prod(SPACING)) / 1000}


def main() -> int:
    import SimpleITK as sitk

    from softseg import fusion, metrics

    raters, dense, sparse = _fusion_data()
    truth = fusion.majority_vote(raters)
    avg = fusion.average(raters)
    shape = truth.shape

    def ours(prob):
        return metrics.evaluate(prob, truth, threshold=0.5, spacing=SPACING, rater_average=avg)

    results: dict[str, dict] = {}
    for name, prob in (("dense", dense), ("sparse", sparse)):
        mask = prob >= np.float32(0.5)
        sitk_wall, sitk_cpu, ref = timed(lambda m=mask: _sitk_table(m, truth), 5)
        wall, cpu, table = timed(lambda p=prob: ours(p), 5)
        hd100 = metrics.hausdorff_distance(mask, truth, spacing=SPACING, percentile=100)
        results[name] = {
            "evaluate_median_s": wall, "evaluate_cpu_s": cpu,
            "simpleitk_subset_median_s": sitk_wall, "simpleitk_subset_cpu_s": sitk_cpu,
            "ratio_to_simpleitk": wall / sitk_wall,
            "ratio_to_simpleitk_cpu": cpu / sitk_cpu,
            "dice": table["dice"], "simpleitk_dice": ref["dice"],
            "dice_identical": table["dice"] == ref["dice"],
            "max_abs_diff_precision_recall": max(abs(table["precision"] - ref["precision"]),
                                                 abs(table["recall"] - ref["recall"])),
            "hausdorff_max_mm": hd100, "simpleitk_hausdorff_mm": ref["hausdorff_mm"],
            "values": {k: (v if np.isfinite(v) else str(v)) for k, v in table.items()},
        }

    # K = 3 classes: softmax of noisy one-hot logits around the same structure
    rng = np.random.default_rng(1)
    labels = truth.astype(np.uint8) + (avg > 0.75).astype(np.uint8)  # 0, 1 (rim), 2 (core)
    labels[(labels == 0) & (dense > 0.3)] = 3
    logits = np.stack([labels == k for k in range(4)]).astype(np.float32) * 3.0
    logits += rng.normal(scale=0.6, size=logits.shape).astype(np.float32)  # ~0.06% flipped
    logits -= logits.max(axis=0)
    probs = np.exp(logits)
    probs /= probs.sum(axis=0)
    classes = ["rim", "core", "halo"]
    wall, cpu, ce = timed(lambda: metrics.evaluate_classes(probs, labels, classes=classes,
                                                           spacing=SPACING), 3)

    def sitk_classes():
        f = sitk.LabelOverlapMeasuresImageFilter()
        f.Execute(sitk.GetImageFromArray(probs.argmax(axis=0).astype(np.uint8)),
                  sitk.GetImageFromArray(labels))
        return [f.GetDiceCoefficient(k) for k in (1, 2, 3)]

    s_wall, s_cpu, s_dice = timed(sitk_classes, 3)
    results["classes_3"] = {
        "evaluate_classes_median_s": wall, "evaluate_classes_cpu_s": cpu,
        "simpleitk_label_overlap_median_s": s_wall, "ratio_to_simpleitk": wall / s_wall,
        "dice": [ce.per_class[c]["dice"] for c in classes], "simpleitk_dice": s_dice,
        "max_abs_diff_dice": float(np.max(np.abs(
            np.array([ce.per_class[c]["dice"] for c in classes]) - np.array(s_dice)))),
        "multiclass_ece": ce.overall["ece"],
    }

    out = {
        "benchmark": "metrics",
        "shape": list(shape),
        "voxels": int(np.prod(shape)),
        "note": "ratio_to_simpleitk: our full table (25 metrics) over SimpleITK's overlap + "
                "Hausdorff + volume filters (5 metrics) on the same masks, measured in this run; "
                "wall-clock medians on a shared 2-core machine (CPU times beside them)",
        "machine": machine(**itk_record(), load_average_at_end=list(os.getloadavg())),
        **results,
    }
    save_result(RESULT, out)
    for name in ("dense", "sparse"):
        r = results[name]
        print(f"evaluate {name:6s} {r['evaluate_median_s']:.3f} s (cpu {r['evaluate_cpu_s']:.3f}) "
              f"vs SimpleITK subset {r['simpleitk_subset_median_s']:.3f} s: ratio "
              f"{r['ratio_to_simpleitk']:.2f}; Dice identical: {r['dice_identical']}")
    r = results["classes_3"]
    print(f"evaluate_classes K=3 {r['evaluate_classes_median_s']:.3f} s vs SimpleITK "
          f"{r['simpleitk_label_overlap_median_s']:.3f} s; max |Dice diff| "
          f"{r['max_abs_diff_dice']:.2e}")
    print(f"load average {os.getloadavg()[0]:.2f}; wrote {RESULT}")
    ok = all(results[n]["dice_identical"] for n in ("dense", "sparse"))
    return 0 if ok and r["max_abs_diff_dice"] < 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
