"""``softseg evaluate``: the papers' metric table for one prediction against a reference.

The table is :func:`softseg.metrics.evaluate` (the one table of the product, the keys of
:data:`softseg.metrics.METRICS`): the prediction binarised at ``--threshold`` (default 0.5) or
at the Dice-optimal threshold of this image (``--optimal``) for Dice, precision, recall,
specificity, RVD/AVD, the percentile Hausdorff distance and lesion detection, the reference
binarised at 0.5; soft Dice, soft RVD, MSE, ECE, Brier score and entropy on the soft maps,
the Brier score and the entropy comparison against the rater average with ``--raters``. Voxel
sizes come from the reference's affine, as in the viewer, training and ``softseg compare``.

Multi-class (``--classes`` or ``--dataset-json``): PRED names a K-class prediction of
``softseg predict`` (``<image>_label-<class>.nii.gz`` per class, optional
``<image>_label-background.nii.gz``; give any of them, ``<image>_labels.nii.gz`` or the
``<image>`` stem), TRUTH is an integer label map (0 = background, 1..K); one table per class
(binarised by argmax unless ``--threshold``) and the multi-class ECE of the label-fusion paper.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from softseg.errors import InputError

if TYPE_CHECKING:
    from softseg.dataset_json import ClassList

__all__ = ["HELP", "add_arguments", "class_prediction_paths", "run"]

HELP = (
    "evaluate a (soft) prediction against a reference: overlap, volume, Hausdorff, lesions, "
    "calibration (per class for K-class predictions)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prediction", metavar="PRED",
        help="prediction (.nii/.nii.gz): probabilities in [0, 1] or a 0/1 mask; with --classes "
        "one of a K-class prediction's files (or its stem)",
    )
    parser.add_argument(
        "truth", metavar="TRUTH",
        help="reference (.nii/.nii.gz): binary, soft in [0, 1] or confidence levels with their "
        "sidecar; with --classes an integer label map (0 = background). Its affine gives the "
        "voxel size",
    )
    parser.add_argument(
        "--raters", nargs="+", metavar="R",
        help="rater maps: the Brier score and the entropy are then computed against the rater "
        "average, and Dice against each rater is reported (with --classes: integer label maps)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--threshold", type=float, metavar="T",
        help="binarise the prediction (>= T) for the binary metrics (default: 0.5; with "
        "--classes: the argmax class)",
    )
    group.add_argument(
        "--optimal", action="store_true",
        help="binarise at the threshold (0.05..0.95) that maximises Dice on THIS image; "
        "optimistic, the papers choose it on training+validation images",
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--classes", nargs="+", metavar="NAME",
        help="class names 1..K of a K-class prediction (files <image>_label-<name>.nii.gz, "
        "spaces as '-')",
    )
    classes.add_argument(
        "--dataset-json", metavar="FILE",
        help="take the class names (and file keys) from this dataset.json",
    )
    parser.add_argument("--min-overlap", type=int, default=3, metavar="VOXELS",
                        help="lesion detection overlap (default: 3)")
    parser.add_argument("--bins", type=int, default=10, help="calibration bins (default: 10)")
    parser.add_argument("--percentile", type=float, default=95.0,
                        help="Hausdorff percentile (default: 95)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    parser.add_argument("-o", "--output", metavar="METRICS.json",
                        help="also write the metrics to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")


# ----------------------------------------------------------------------------- inputs
#: A per-class rater file ``<rater>_label-<class>.nii[.gz]`` (the multi-class contract).
_PER_CLASS_FILE = re.compile(r"^.+_label-[^_/]+\.nii(?:\.gz)?$")


def _check_options(args: argparse.Namespace) -> None:
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise InputError(f"--threshold must lie in (0, 1]; got {args.threshold:g}")
    if args.min_overlap < 1:
        raise InputError(f"--min-overlap must be >= 1 voxel; got {args.min_overlap}")
    if args.bins < 1:
        raise InputError(f"--bins must be >= 1; got {args.bins}")
    if not 0.0 <= args.percentile <= 100.0:
        raise InputError(f"--percentile must lie in [0, 100]; got {args.percentile:g}")


def _spacing(volume: Any) -> tuple[float, ...]:
    """Voxel size in mm from the affine: :func:`softseg.geometry.voxel_size`, the one voxel size
    of the viewer, training and ``softseg compare``."""
    from softseg.geometry import voxel_size

    return voxel_size(volume)


def _check_inputs(paths: list[str | Path], *, factor: float) -> None:
    """Every NIfTI header checked, and the memory the evaluation needs, before any voxel is
    read (``factor``: working arrays per input voxel byte of float32)."""
    import warnings

    from softseg.errors import SoftsegWarning
    from softseg.io import check_memory, check_nifti

    voxels = 0
    with warnings.catch_warnings():  # the file's warnings come once, when it is loaded
        warnings.simplefilter("ignore", SoftsegWarning)
        for path in paths:
            voxels += int(np.prod(check_nifti(path, label=True).shape))
    check_memory(int(voxels * 4 * factor), what=f"evaluating {len(paths)} volumes")


def _stem(path: str) -> str:
    name = str(path)
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def class_prediction_paths(
    prediction: str, keys: list[str]
) -> tuple[dict[str, Path], Path | None]:
    """The per-class files of a K-class prediction (docs/training.md contract).

    Parameters
    ----------
    prediction : str
        ``<image>_label-<key>.nii.gz`` (any class), ``<image>_labels.nii.gz`` or ``<image>``.
    keys : list of str
        File keys of the classes 1..K.

    Returns
    -------
    files : dict of key -> Path
        ``<image>_label-<key>.nii.gz`` (or ``.nii``) per class.
    background : Path or None
        ``<image>_label-background.nii.gz`` when it exists.
    """
    stem = _stem(prediction)
    if stem.endswith("_labels"):
        stem = stem[: -len("_labels")]
    else:
        m = re.search(r"_label-[^/\\]+$", stem)  # the suffix is reserved for per-class maps
        if m:
            stem = stem[: m.start()]

    from softseg.dataset_json import class_file_path

    def find(key: str) -> Path | None:
        for suffix in (".nii.gz", ".nii"):
            p = class_file_path(stem + suffix, key)
            if p.exists():
                return p
        return None

    files, missing = {}, []
    for key in keys:
        p = find(key)
        if p is None:
            missing.append(f"{Path(stem).name}_label-{key}.nii.gz")
        else:
            files[key] = p
    if missing:
        raise InputError(
            f"{prediction}: no per-class prediction file {', '.join(missing)} next to it; give "
            "a K-class prediction of `softseg predict` and the model's class names"
        )
    return files, find("background")


def _classes(args: argparse.Namespace) -> ClassList | None:
    """The classes of a multi-class evaluation (names and file keys), or None."""
    from softseg.dataset_json import ClassList, read_class_list

    if args.classes:
        return ClassList.from_names(args.classes, source="--classes")
    return read_class_list(args.dataset_json) if args.dataset_json else None


def _load_rater(path: str) -> tuple[Any, np.ndarray]:
    """A rater (or two-class reference) file and its values in [0, 1]
    (:func:`softseg.sidecar.rater_values`: its sidecar's scale, the one conversion)."""
    from softseg.io import load_volume
    from softseg.sidecar import rater_values

    vol = load_volume(path, label=True)
    return vol, rater_values(vol, name=str(path))[0]


# ------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from softseg.compare import json_safe
    from softseg.io import check_writable, write_json

    _check_options(args)
    if args.output is not None:
        check_writable(args.output, overwrite=args.overwrite)
    classes = _classes(args)
    report = _run_classes(args, classes) if classes else _run_single(args)
    safe = json_safe(report)
    if args.output is not None:
        write_json(args.output, safe, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(safe, indent=2))
    else:
        print(_class_table(report) if classes else _table(report))
    return 0


def _run_single(args: argparse.Namespace) -> dict[str, Any]:
    from softseg import metrics
    from softseg.checks import as_probability
    from softseg.fusion import average
    from softseg.geometry import check_same_grid
    from softseg.io import load_volume

    _check_inputs([args.prediction, args.truth, *(args.raters or [])], factor=3)
    pred_vol = load_volume(args.prediction, label=True)
    truth_vol, truth = _load_rater(args.truth)
    check_same_grid(truth_vol, pred_vol)
    spacing = _spacing(truth_vol)
    name = str(args.prediction)
    prob = as_probability(pred_vol.array, name=name,
                          hint="give probabilities in [0, 1] or a 0/1 mask")
    rater_average, rater_arrays = None, []
    if args.raters:
        for path in args.raters:
            vol, values = _load_rater(path)
            check_same_grid(truth_vol, vol)
            rater_arrays.append(values)
        rater_average = average(rater_arrays) if len(rater_arrays) > 1 else (
            rater_arrays[0].astype(np.float32))

    threshold = 0.5 if args.threshold is None else float(args.threshold)
    how = f"binarised at {threshold:g}" + (" (default)" if args.threshold is None else "")
    if args.optimal:
        threshold = metrics.optimal_threshold(prob, metrics.binarize(truth, 0.5))
        how = f"binarised at {threshold:g} (Dice-optimal on this image)"
    values = metrics.evaluate(
        prob, truth, threshold=threshold, spacing=spacing, rater_average=rater_average,
        min_overlap=args.min_overlap, n_bins=args.bins, percentile=args.percentile, name=name,
    )
    report: dict[str, Any] = {
        "prediction": name,
        "truth": str(args.truth),
        "spacing_mm": list(spacing),
        "binarisation": how,
        "hausdorff_percentile": args.percentile,
        "brier_entropy_reference": "rater average" if args.raters else "truth",
        **values,
    }
    if args.raters:
        mask = metrics.binarize(prob, threshold)
        report["dice_per_rater"] = [
            {"path": str(p), "dice": metrics.dice(mask, metrics.binarize(a, 0.5))}
            for p, a in zip(args.raters, rater_arrays)
        ]
    return report


def _run_classes(args: argparse.Namespace, classes: ClassList) -> dict[str, Any]:
    from softseg import metrics
    from softseg.geometry import check_same_grid
    from softseg.io import load_volume

    names, keys = list(classes.names), list(classes.keys)
    per_class = [r for r in (args.raters or []) if _PER_CLASS_FILE.match(Path(r).name)]
    if per_class:  # each would be read as a label map of class 1: refuse, never mis-measure
        raise InputError(
            f"{per_class[0]}: --raters with several classes takes one integer label map per rater "
            "(0 = background, 1..K), not per-class files <rater>_label-<class>.nii.gz; make the "
            "label maps with softseg fuse, or leave --raters out"
        )
    files, background = class_prediction_paths(str(args.prediction), keys)
    _check_inputs([args.truth, *files.values(), *([background] if background else []),
                   *(args.raters or [])], factor=4)
    truth_vol = load_volume(args.truth, label=True)
    labels = truth_vol.array
    if labels.dtype.kind not in "iub" and not np.all(labels == np.round(labels)):
        raise InputError(
            f"{args.truth}: a multi-class reference must be an integer label map (0 = background, "
            f"1..{len(names)}); got non-integer values"
        )
    maps = []
    for key in (["background"] if background else []) + keys:
        path = background if key == "background" else files[key]
        vol = load_volume(path, label=True)
        check_same_grid(truth_vol, vol)
        maps.append(vol.array.astype(np.float32, copy=False))
    probs = np.stack(maps)
    spacing = _spacing(truth_vol)

    rater_average = None
    if args.raters:
        from softseg import fusion

        rater_vols = [load_volume(p, label=True) for p in args.raters]
        for vol in rater_vols:
            check_same_grid(truth_vol, vol)
        fused = fusion.fuse([v.array for v in rater_vols], "average", n_classes=len(names),
                            roi=None)
        rater_average = fused.probability

    thresholds: Any = args.threshold
    how = "argmax class" if thresholds is None else f"each class binarised at {thresholds:g}"
    if args.optimal:
        offset = probs.shape[0] - len(names)
        labels_i = np.asarray(labels).astype(np.int64)
        thresholds = [metrics.optimal_threshold(np.clip(probs[i + offset], 0, 1), labels_i == i + 1)
                      for i in range(len(names))]
        how = "each class at its Dice-optimal threshold on this image"
    ce = metrics.evaluate_classes(
        probs, labels, classes=names, thresholds=thresholds, spacing=spacing,
        rater_average=rater_average, min_overlap=args.min_overlap, n_bins=args.bins,
        percentile=args.percentile,
    )
    return {
        "prediction": {k: str(v) for k, v in files.items()},
        "truth": str(args.truth),
        "spacing_mm": list(spacing),
        "binarisation": how,
        "hausdorff_percentile": args.percentile,
        "brier_entropy_reference": "rater average" if args.raters else "truth",
        "classes": ce.per_class,
        "overall": ce.overall,
    }


# ----------------------------------------------------------------------------- tables
def _header(report: dict[str, Any]) -> list[str]:
    sp = " x ".join(f"{s:g}" for s in report["spacing_mm"])
    return [
        f"  spacing {sp} mm (affine); binary metrics: {report['binarisation']}, reference >= 0.5; "
        f"Hausdorff at percentile {report['hausdorff_percentile']:g}; Brier/entropy against the "
        f"{report['brier_entropy_reference']}",
    ]


def _table(report: dict[str, Any]) -> str:
    from softseg.metrics import METRICS, format_value

    lines = [f"softseg evaluate: {report['prediction']} vs {report['truth']}", *_header(report)]
    width = max(len(s.header) for s in METRICS.values()) + 2
    lines.append(f"  {'metric':<{width}} value")
    for key, spec in METRICS.items():
        if key in report:
            lines.append(f"  {spec.header:<{width}} {format_value(key, report[key])}")
    for row in report.get("dice_per_rater", []):
        lines.append(f"  {'Dice vs ' + Path(row['path']).name:<{width}} "
                     f"{format_value('dice', row['dice'])}")
    return "\n".join(lines)


def _class_table(report: dict[str, Any]) -> str:
    from softseg.metrics import METRICS, format_value

    classes = list(report["classes"])
    lines = [f"softseg evaluate: {len(classes)}-class prediction vs {report['truth']}",
             *_header(report)]
    width = max(len(s.header) for s in METRICS.values()) + 2
    cols = [max(len(c), 10) + 2 for c in classes]
    lines.append(f"  {'metric':<{width}}" + "".join(c.rjust(w) for c, w in zip(classes, cols)))
    for key, spec in METRICS.items():
        if key in report["classes"][classes[0]]:
            cells = [format_value(key, report["classes"][c][key]).rjust(w)
                     for c, w in zip(classes, cols)]
            lines.append(f"  {spec.header:<{width}}" + "".join(cells))
    for key, value in report["overall"].items():
        spec = METRICS[key]
        label = f"{spec.title} (multi-class)" + (f" [{spec.unit}]" if spec.unit else "")
        lines.append(f"  {label:<{width}}{format_value(key, value).rjust(cols[0])}")
    return "\n".join(lines)
