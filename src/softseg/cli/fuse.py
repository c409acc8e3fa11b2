"""``softseg fuse``: fuse several raters' label maps into one (STAPLE, average, vote, ...).

Rater files may hold binary masks, soft maps in [0, 1] or painted confidence levels (whole
numbers 1..9) whose scale is read from the file's JSON sidecar (``softseg.confidence``). All
raters must share one voxel grid (same shape and affine). The fused map is written with the
first rater's geometry (float32 for STAPLE and average, uint8 0/1 for the hard methods) and a
JSON sidecar (``OUT.json``) records the method, inputs, per-rater sensitivity/specificity and
the pairwise Dice between raters.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from softseg.errors import InputError

__all__ = [
    "AFFINE_TOLERANCE",
    "HELP",
    "METHODS",
    "ProgressBar",
    "add_arguments",
    "check_same_grid",
    "json_safe",
    "load_label_maps",
    "run",
]

HELP = "fuse several raters' label maps (STAPLE, average, majority vote, union, intersection)"

#: --method choices (plain tuple; the functions live in softseg.fusion).
METHODS = ("staple", "average", "majority", "union", "intersection")
#: Largest difference between two affines' entries (mm) still treated as the same grid.
AFFINE_TOLERANCE = 1e-4
#: Show the progress bar by default when the raters hold at least this many voxels in total.
LARGE_INPUT_VOXELS = 8_000_000
SIDECAR_KEY = "softseg_fusion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "raters",
        nargs="+",
        metavar="RATER",
        help="rater label maps (.nii/.nii.gz): binary, soft in [0, 1], or confidence levels "
        "with their JSON sidecar; at least two, on one voxel grid",
    )
    parser.add_argument(
        "--method", choices=METHODS, default="staple", help="fusion method (default: staple)"
    )
    parser.add_argument(
        "--soft",
        action="store_true",
        help="soft STAPLE: read each rater's value in [0, 1] as the probability of a foreground "
        "vote (needed for confidence maps; identical to binary STAPLE on 0/1 maps)",
    )
    parser.add_argument(
        "--roi",
        choices=("auto", "none"),
        default="auto",
        help="STAPLE estimation region: 'auto' = bounding box of the raters' union grown by "
        "--margin voxels (the result then does not depend on the field of view); 'none' = the "
        "whole volume, as SimpleITK does (default: auto). Outside the box the probability is 0",
    )
    parser.add_argument(
        "--margin",
        type=int,
        default=10,
        metavar="VOXELS",
        help="margin of --roi auto (default: 10)",
    )
    parser.add_argument(
        "--ties",
        choices=("background", "foreground"),
        default="background",
        help="what a tie gives in --method majority with an even number of raters "
        "(default: background)",
    )
    parser.add_argument(
        "--max-iter", type=int, default=None, metavar="N", help="STAPLE iteration cap"
    )
    parser.add_argument(
        "--tol", type=float, default=1e-7, help="STAPLE convergence tolerance (default: 1e-7)"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.nii.gz", help="fused map to write"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT and its sidecar if they exist"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: for inputs of 8 million voxels or more)",
    )


# ------------------------------------------------------------------------------- helpers
class ProgressBar:
    """A small text progress bar on a stream (stderr by default).

    On a terminal it redraws one line; elsewhere (logs, pipes) it prints one line per step.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str,
        enabled: bool = True,
        stream: TextIO | None = None,
        width: int = 28,
    ) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.perf_counter()

    def step(self, note: str = "") -> None:
        """Mark one step done and show ``note``."""
        self.done = min(self.done + 1, self.total)
        self._draw(note, newline=not self._tty)

    def note(self, note: str) -> None:
        """Update the text without advancing (drawn on terminals only)."""
        if self._tty:
            self._draw(note, newline=False)

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, note: str, *, newline: bool) -> None:
        if not self.enabled:
            return
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self._start
        text = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {note}"
        if newline:
            self.stream.write(text.rstrip() + "\n")
        else:
            self.stream.write("\r" + text[:120].ljust(120))
        self.stream.flush()


def check_same_grid(reference: Any, other: Any) -> None:
    """Raise :class:`InputError` unless two :class:`~softseg.io.Volume` share shape and affine.

    The message names both files, their shapes or the largest affine difference.
    """
    if tuple(other.shape) != tuple(reference.shape):
        raise InputError(
            f"{other.path} has shape {tuple(other.shape)} but {reference.path} has shape "
            f"{tuple(reference.shape)}; all images must be on one voxel grid (resample first)"
        )
    diff = float(np.max(np.abs(np.asarray(other.affine) - np.asarray(reference.affine))))
    if diff > AFFINE_TOLERANCE:
        raise InputError(
            f"{other.path} and {reference.path} have different affines (largest difference "
            f"{diff:.3g} mm, tolerance {AFFINE_TOLERANCE:g}); resample one onto the other's grid"
        )


def load_label_maps(
    paths: Sequence[str | Path], *, progress: ProgressBar | None = None
) -> tuple[list[Any], list[np.ndarray], list[str]]:
    """Load label maps on one grid as values in [0, 1].

    Binary maps become uint8 0/1; soft maps stay float32; maps whose JSON sidecar holds a
    confidence scale (``softseg_confidence``) are converted to float32 soft values with it
    (a map painted with level 1 only looks binary, so the sidecar decides).

    Returns
    -------
    volumes : list of Volume
        As read (geometry source).
    arrays : list of ndarray
        Binary (uint8) or soft (float32) maps.
    kinds : list of {"binary", "soft", "levels"}
        What each file held ("levels": converted with its sidecar's scale).
    """
    from softseg.confidence import METADATA_KEY, detect_label_kind, label_to_soft, scale_from_sidecar
    from softseg.io import load_volume, read_sidecar

    volumes, arrays, kinds = [], [], []
    for path in paths:
        vol = load_volume(path, label=True)
        if volumes:
            check_same_grid(volumes[0], vol)
        try:
            kind = detect_label_kind(vol.array)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        side = read_sidecar(path) if kind != "soft" else None
        scale = scale_from_sidecar(side)
        if scale is not None:  # painted levels (a map painted with level 1 only looks binary)
            arr = label_to_soft(vol.array, scale=scale)
            if np.all((arr == 0) | (arr == 1)):
                arr, kind = arr.astype(np.uint8), "binary"
            else:
                kind = "levels"
        elif kind == "levels":
            raise InputError(
                f"{path}: holds confidence levels up to {int(np.max(vol.array))} but its JSON "
                f"sidecar has no '{METADATA_KEY}' scale; save it from the annotate widget or "
                "convert it to soft values first"
            )
        elif kind == "binary":
            arr = (vol.array != 0).astype(np.uint8)
        else:
            arr = vol.array.astype(np.float32, copy=False)
        volumes.append(vol)
        arrays.append(arr)
        kinds.append(kind)
        if progress is not None:
            progress.step(f"loaded {Path(path).name}")
    return volumes, arrays, kinds


def json_safe(value: Any) -> Any:
    """Recursively turn numpy values into Python ones and NaN/inf into None (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _roi_box(roi: np.ndarray) -> list[list[int]]:
    box = []
    for ax in range(roi.ndim):
        idx = np.flatnonzero(np.any(roi, axis=tuple(a for a in range(roi.ndim) if a != ax)))
        box.append([int(idx[0]), int(idx[-1]) + 1])
    return box


# ----------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from softseg import __version__, fusion, metrics
    from softseg.io import check_writable, is_nifti_path, save_volume, sidecar_path

    out = Path(args.output)
    if not is_nifti_path(out):
        raise InputError(f"{out}: output must end in .nii or .nii.gz")
    check_writable(out, overwrite=args.overwrite)
    check_writable(sidecar_path(out), overwrite=args.overwrite)
    if len(args.raters) < 2:
        raise InputError(f"fusion needs at least two raters; got one ({args.raters[0]})")
    if args.method in ("majority", "union", "intersection") and args.soft:
        raise InputError(f"--soft applies to --method staple; {args.method} needs binary raters")
    if args.margin < 0:
        raise InputError(f"--margin must be >= 0 voxels; got {args.margin}")
    if args.max_iter is not None and args.max_iter < 1:
        raise InputError(f"--max-iter must be >= 1; got {args.max_iter}")

    # size decides the progress bar before loading: read only the headers
    import nibabel as nib

    n_vox = 0
    for path in args.raters:
        try:
            n_vox += int(np.prod(nib.load(path).shape[:3]))
        except Exception:  # unreadable files get their proper error from load_volume
            pass
    show = args.progress == "always" or (args.progress == "auto" and n_vox >= LARGE_INPUT_VOXELS)
    bar = ProgressBar(len(args.raters) + 3, label="softseg fuse", enabled=show)

    volumes, arrays, kinds = load_label_maps(args.raters, progress=bar)
    raters = np.stack(arrays)
    del arrays
    binary = all(k == "binary" for k in kinds)

    record: dict[str, Any] = {
        "method": args.method,
        "soft": bool(args.soft),
        "inputs": [str(Path(p)) for p in args.raters],
        "input_kinds": kinds,
    }
    soft_files = [str(p) for p, k in zip(args.raters, kinds) if k != "binary"]
    if args.method in ("majority", "union", "intersection") and soft_files:
        raise InputError(
            f"--method {args.method} needs binary raters but {', '.join(soft_files)} hold soft or "
            "confidence values; binarise them, or use --method average or --method staple --soft"
        )
    sens = spec = None
    if args.method == "staple":
        if not binary and not args.soft:
            raise InputError(
                f"binary STAPLE needs 0/1 raters but {', '.join(soft_files)} hold soft or "
                "confidence values; pass --soft for soft STAPLE, or binarise the maps"
            )
        roi = fusion.default_roi(raters, margin=args.margin) if args.roi == "auto" else None
        kwargs: dict[str, Any] = {"tol": args.tol, "roi": roi, "soft": args.soft}
        if args.max_iter is not None:
            kwargs["max_iter"] = args.max_iter
        result = fusion.staple(
            raters,
            progress=lambda it, ch: bar.note(f"STAPLE iteration {it} (change {ch:.2g})"),
            **kwargs,
        )
        fused = result.probability.astype(np.float32)
        sens, spec = result.sensitivity, result.specificity
        record["roi"] = (
            {"mode": "auto", "margin_voxels": args.margin, "box": _roi_box(roi)}
            if roi is not None
            else {"mode": "none"}
        )
        record["staple"] = {
            "prior": result.prior,
            "iterations": result.iterations,
            "converged": result.converged,
            "tol": args.tol,
        }
        record["sensitivity_specificity"] = "STAPLE estimates"
    elif args.method == "average":
        fused = fusion.average(raters)
    elif args.method == "majority":
        fused = fusion.majority_vote(raters, ties=1 if args.ties == "foreground" else 0)
        record["ties"] = args.ties
    elif args.method == "union":
        fused = fusion.union(raters)
    else:
        fused = fusion.intersection(raters)
    bar.step(f"{args.method} done")

    if sens is None:  # each rater scored against the fused map (soft counts for soft maps)
        sens = np.array([metrics.recall(r, fused) for r in raters])
        spec = np.array([metrics.specificity(r, fused) for r in raters])
        record["sensitivity_specificity"] = "against the fused map (soft counts)"
    pair = metrics.pairwise_dice(raters)
    bar.step("pairwise Dice")
    off = pair[~np.eye(len(pair), dtype=bool)]
    record["raters"] = [
        {"path": str(Path(p)), "sensitivity": float(s), "specificity": float(q)}
        for p, s, q in zip(args.raters, sens, spec)
    ]
    record["pairwise_dice"] = pair
    record["mean_pairwise_dice"] = float(off.mean())
    record["output_dtype"] = str(fused.dtype)
    record["softseg_version"] = __version__
    sidecar = json_safe({SIDECAR_KEY: record})

    save_volume(out, fused, like=volumes[0], overwrite=args.overwrite, sidecar=sidecar)
    bar.step(f"wrote {out.name}")
    bar.close()

    if args.json:
        print(
            json.dumps(
                {"output": str(out), "sidecar": str(sidecar_path(out)), **sidecar[SIDECAR_KEY]},
                indent=2,
            )
        )
    else:
        _print_summary(out, record, fused)
    return 0


def _print_summary(out: Path, record: dict[str, Any], fused: np.ndarray) -> None:
    lines = [
        f"softseg fuse: {record['method']} of {len(record['raters'])} raters -> {out} "
        f"({fused.dtype})"
    ]
    if "staple" in record:
        st = record["staple"]
        roi = record["roi"]
        where = f"roi box {roi['box']}" if roi["mode"] == "auto" else "whole volume"
        state = "converged" if st["converged"] else "stopped at the iteration cap"
        lines.append(
            f"  STAPLE on {where}: prior {st['prior']:.4g}, {st['iterations']} iterations ({state})"
        )
    lines.append(
        f"  {'sensitivity':>11}  {'specificity':>11}  rater ({record['sensitivity_specificity']})"
    )
    for r in record["raters"]:
        lines.append(f"  {r['sensitivity']:11.4f}  {r['specificity']:11.4f}  {r['path']}")
    pair = np.asarray(record["pairwise_dice"])
    off = pair[~np.eye(len(pair), dtype=bool)]
    lines.append(
        f"  pairwise rater Dice: mean {off.mean():.4f}, min {off.min():.4f}, max {off.max():.4f}"
    )
    print("\n".join(lines))
