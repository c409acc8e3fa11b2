"""``softseg evaluate``: the papers' full metric set for one prediction against a truth.

Overlap (Dice, precision, recall, specificity, MSE, volume differences) on the soft prediction,
or on the prediction binarised at ``--threshold`` / the Dice-optimal threshold (``--optimal``);
95th-percentile Hausdorff distance in mm (spacing from the truth's header); lesion detection
(LTPR, LFDR); calibration (ECE); Brier score and subject entropy against the truth or, with
``--raters``, against the rater average (label-fusion paper), plus Dice against each rater.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "evaluate a (soft) prediction against a truth: overlap, volume, Hausdorff, lesions, calibration"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prediction",
        metavar="PRED",
        help="prediction (.nii/.nii.gz), probabilities in [0, 1] or a mask",
    )
    parser.add_argument(
        "truth",
        metavar="TRUTH",
        help="reference (.nii/.nii.gz): binary, soft in [0, 1] or confidence levels with their "
        "sidecar; "
        "its header gives the voxel spacing",
    )
    parser.add_argument(
        "--raters",
        nargs="+",
        metavar="R",
        help="rater maps: Brier score and entropy are then computed against the rater average, "
        "and Dice against each rater is reported",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="binarise the prediction (>= T) before the overlap and volume metrics "
        "(default: soft overlap on the raw prediction)",
    )
    group.add_argument(
        "--optimal",
        action="store_true",
        help="binarise at the threshold (0.05..0.95) that maximises Dice on THIS image; "
        "optimistic, "
        "the papers choose it on training+validation images",
    )
    parser.add_argument(
        "--min-overlap",
        type=int,
        default=3,
        metavar="VOXELS",
        help="lesion detection overlap (default: 3)",
    )
    parser.add_argument("--bins", type=int, default=10, help="calibration bins (default: 10)")
    parser.add_argument(
        "--percentile", type=float, default=95.0, help="Hausdorff percentile (default: 95)"
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    parser.add_argument(
        "-o", "--output", metavar="METRICS.json", help="also write the metrics to this JSON file"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")


#: (key, label, format) rows of the readable table.
_ROWS = (
    ("dice", "Dice", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall (sensitivity)", "{:.4f}"),
    ("specificity", "specificity", "{:.6f}"),
    ("mse", "MSE", "{:.6f}"),
    ("relative_volume_difference", "relative volume difference", "{:+.4f}"),
    ("absolute_volume_difference", "absolute volume difference", "{:.4f}"),
    ("volume_prediction_mm3", "volume, prediction (mm3)", "{:.1f}"),
    ("volume_truth_mm3", "volume, truth (mm3)", "{:.1f}"),
    ("hausdorff_mm", "Hausdorff distance (mm)", "{:.2f}"),
    ("ltpr", "lesion TPR (LTPR)", "{:.4f}"),
    ("lfdr", "lesion FDR (LFDR)", "{:.4f}"),
    ("n_true_lesions", "lesions in truth", "{:d}"),
    ("n_predicted_lesions", "lesions predicted", "{:d}"),
    ("n_detected_lesions", "lesions detected", "{:d}"),
    ("n_false_lesions", "false lesions", "{:d}"),
    ("ece", "expected calibration error", "{:.4f}"),
    ("brier_score", "Brier score", "{:.6f}"),
    ("entropy_prediction", "entropy, prediction (nats)", "{:.1f}"),
    ("entropy_reference", "entropy, reference (nats)", "{:.1f}"),
    ("entropy_abs_difference", "|entropy difference| (nats)", "{:.1f}"),
)


def run(args: argparse.Namespace) -> int:
    from softseg import metrics
    from softseg.cli.fuse import check_same_grid, json_safe, load_label_maps
    from softseg.fusion import average
    from softseg.io import check_writable, load_volume, write_json

    if args.output is not None:
        check_writable(args.output, overwrite=args.overwrite)
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise InputError(f"--threshold must lie in (0, 1]; got {args.threshold:g}")
    if args.min_overlap < 1:
        raise InputError(f"--min-overlap must be >= 1 voxel; got {args.min_overlap}")
    if args.bins < 1:
        raise InputError(f"--bins must be >= 1; got {args.bins}")
    if not 0.0 <= args.percentile <= 100.0:
        raise InputError(f"--percentile must lie in [0, 100]; got {args.percentile:g}")

    pred_vol = load_volume(args.prediction, label=True)
    truth_vols, truth_arrays, _ = load_label_maps([args.truth])
    truth_vol, truth = truth_vols[0], truth_arrays[0]
    check_same_grid(truth_vol, pred_vol)
    pred = pred_vol.array
    if pred.dtype != np.bool_:
        lo, hi = float(pred.min()), float(pred.max())
        if lo < 0 or hi > 1:
            raise InputError(
                f"{args.prediction}: values must be probabilities in [0, 1] or a 0/1 mask; "
                f"got min {lo:g}, max {hi:g}"
            )
    spacing = truth_vol.spacing

    reference = None
    rater_dice: list[dict[str, Any]] = []
    if args.raters:
        rater_vols, rater_arrays, _ = load_label_maps(args.raters)
        for vol in rater_vols:
            check_same_grid(truth_vol, vol)
        reference = (
            average(rater_arrays) if len(rater_arrays) > 1 else rater_arrays[0].astype(np.float32)
        )

    threshold = args.threshold
    how = "soft overlap (no threshold)"
    if args.optimal:
        threshold = metrics.optimal_threshold(pred, truth)
        how = f"binarised at {threshold:g} (Dice-optimal on this image)"
    elif threshold is not None:
        how = f"binarised at {threshold:g}"

    result = metrics.evaluate(
        pred,
        truth,
        spacing=spacing,
        threshold=threshold,
        min_overlap=args.min_overlap,
        n_bins=args.bins,
        percentile=args.percentile,
        reference=reference,
    )
    if args.raters:
        mask = metrics.binarize(pred, 0.5 if threshold is None else threshold)
        for path, arr in zip(args.raters, rater_arrays):
            rater_dice.append({"path": str(path), "dice": metrics.dice(mask, arr)})

    report = {
        "prediction": str(args.prediction),
        "truth": str(args.truth),
        "spacing_mm": list(spacing),
        "overlap": how,
        "brier_entropy_reference": "rater average" if args.raters else "truth",
        **result,
    }
    if rater_dice:
        report["dice_per_rater"] = rater_dice
    safe = json_safe(report)
    if args.output is not None:
        write_json(args.output, safe, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(safe, indent=2))
    else:
        print(_table(report))
    return 0


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return fmt.format(value)


def _table(report: dict[str, Any]) -> str:
    sp = " x ".join(f"{s:g}" for s in report["spacing_mm"])
    lines = [
        f"softseg evaluate: {report['prediction']} vs {report['truth']}",
        f"  spacing {sp} mm; overlap metrics: {report['overlap']}; Hausdorff at "
        f"percentile {report['hausdorff_percentile']:g}; Brier/entropy against the "
        f"{report['brier_entropy_reference']}",
        f"  {'metric':<30} value",
    ]
    for key, label, fmt in _ROWS:
        lines.append(f"  {label:<30} {_fmt(report[key], fmt)}")
    for row in report.get("dice_per_rater", []):
        lines.append(f"  {'Dice vs ' + Path(row['path']).name:<30} {row['dice']:.4f}")
    return "\n".join(lines)
