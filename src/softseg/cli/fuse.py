"""``softseg fuse``: fuse several raters' label maps into one (STAPLE, average, vote, ...).

Two classes (default): each RATER file holds a binary mask, a soft map in [0, 1] or painted
confidence levels (whole numbers 1..9) whose scale comes from the file's JSON sidecar
(:mod:`softseg.sidecar`, converted with :func:`softseg.confidence.as_rater_values`). The fused
map (:func:`softseg.fusion.fuse`, the engine the Fuse widget and training use) is written with
the first rater's geometry: float32 for STAPLE (its probability) and average, uint8 0/1 for the
hard methods.

Multi-class (``--classes K`` or ``--dataset-json FILE``): each RATER is an integer label map
(0 = background, 1..K; nnU-Net ``"labels"`` are 0..K too), or the raters
are given as per-class files ``<rater>_label-<class>.nii.gz`` (binary, levels or soft; ``<class>``
is the class index, name with spaces as ``-`` or key). OUT gets the fused integer label map and,
for ``staple`` and ``average``, ``<OUT stem>_label-<k>.nii.gz`` holds the float32 probability of
class k = 1..K.

A JSON sidecar ``OUT.json`` (:class:`softseg.sidecar.RaterSidecar`, ``fusion`` key) records the
method, inputs, region, STAPLE's prior and iterations, each rater's sensitivity/specificity
(multi-class: confusion matrices, rows = true class) and the pairwise Dice; ``--json`` prints
the same on stdout. Every input is checked before anything is written, and the output files
appear together or not at all (:class:`softseg.outputs.OutputSet`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from softseg.errors import InputError
from softseg.fusion import METHODS, fusion_methods
from softseg.geometry import check_same_grid

if TYPE_CHECKING:
    from softseg.dataset_json import ClassList

__all__ = [
    "HELP",
    "ProgressBar",
    "add_arguments",
    "load_label_maps",
    "run",
]

HELP = "fuse several raters' label maps (STAPLE, average, majority vote, union, intersection)"

#: Show the progress bar by default when the raters hold at least this many voxels in total.
LARGE_INPUT_VOXELS = 8_000_000
#: A per-class rater file: ``<rater>_label-<class>.nii[.gz]`` (multi-class contract).
_CLASS_FILE = re.compile(r"^(?P<rater>.+)_label-(?P<cls>[^_/]+)\.nii(?:\.gz)?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "raters",
        nargs="+",
        metavar="RATER",
        help="rater label maps (.nii/.nii.gz): binary, soft in [0, 1], or confidence levels "
        "with their JSON sidecar; with --classes/--dataset-json integer label maps or per-class "
        "files <rater>_label-<class>.nii.gz; at least two raters, on one voxel grid",
    )
    methods = fusion_methods()
    parser.add_argument(
        "--method",
        choices=methods,
        default="staple",
        help="fusion method (default: staple): "
        + "; ".join(f"{m}: {METHODS[m].description}" for m in methods),
    )
    parser.add_argument(
        "--soft",
        action="store_true",
        help="soft STAPLE: read each rater's value in [0, 1] as the probability of a foreground "
        "vote (needed for confidence maps; identical to binary STAPLE on 0/1 maps)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        metavar="K",
        help="the raters are multi-class label maps with classes 1..K (0 = background)",
    )
    parser.add_argument(
        "--dataset-json",
        default=None,
        metavar="FILE",
        help="a dataset.json whose \"classes\" (or nnU-Net \"labels\") name the classes of "
        "multi-class raters (instead of --classes)",
    )
    parser.add_argument(
        "--roi",
        choices=("auto", "none"),
        default="auto",
        help="estimation region of STAPLE and of the rater statistics: 'auto' = bounding box of "
        "the raters' union grown by --margin voxels (the result then does not depend on the "
        "field of view); 'none' = the whole volume, as SimpleITK does (default: auto). Outside "
        "the box STAPLE's probability is 0",
    )
    parser.add_argument(
        "--margin", type=int, default=10, metavar="VOXELS", help="margin of --roi auto (default: 10)"
    )
    parser.add_argument(
        "--ties",
        choices=("background", "foreground"),
        default="background",
        help="what a tie gives in --method majority with an even number of raters "
        "(default: background; multi-class ties always give background)",
    )
    parser.add_argument("--max-iter", type=int, default=None, metavar="N", help="STAPLE iteration cap")
    parser.add_argument(
        "--tol",
        type=float,
        default=None,
        help="STAPLE convergence tolerance (default: 1e-7, multi-class 1e-5, as SimpleITK)",
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


def load_label_maps(
    paths: Sequence[str | Path], *, progress: ProgressBar | None = None
) -> tuple[list[Any], list[np.ndarray], list[str]]:
    """Load two-class rater maps on one grid as values in [0, 1].

    Each file goes through :func:`softseg.sidecar.rater_values` (the one sidecar reader and the
    one conversion, :func:`softseg.confidence.as_rater_values`): binary maps become
    uint8 0/1, soft maps float32 (values within 1e-6 of [0, 1] clipped), painted levels float32
    soft values through their sidecar's scale (a map painted with level 1 only looks binary, so
    the sidecar decides).

    Returns
    -------
    volumes : list of Volume
        As read (geometry source).
    arrays : list of ndarray
        Binary (uint8) or soft (float32) maps.
    kinds : list of {"binary", "soft", "levels"}
        What each file held.

    Raises
    ------
    InputError
        Unreadable files, different grids (both files named), bad values or sidecars (file
        named), levels without a scale.
    """
    from softseg.io import load_volume
    from softseg.sidecar import rater_values

    volumes, arrays, kinds = [], [], []
    for path in paths:
        vol = load_volume(path, label=True)
        if volumes:
            check_same_grid(volumes[0], vol)
        arr, kind = rater_values(vol, name=str(path))
        volumes.append(vol)
        arrays.append(arr)
        kinds.append(kind)
        if progress is not None:
            progress.step(f"loaded {Path(path).name}")
    return volumes, arrays, kinds


def _load_class_raters(
    paths: Sequence[str], classes: ClassList, progress: ProgressBar
) -> tuple[list[Any], np.ndarray, list[str], list[str], bool]:
    """Multi-class raters: (volumes, stacked array, rater names, kinds, class_maps?)."""
    from softseg.fusion import as_label_maps, class_probabilities
    from softseg.io import load_volume
    from softseg.sidecar import rater_values

    matches = [_CLASS_FILE.match(Path(p).name) for p in paths]
    volumes: list[Any] = []

    def load(path: str) -> Any:
        vol = load_volume(path, label=True)
        if volumes:
            check_same_grid(volumes[0], vol)
        volumes.append(vol)
        progress.step(f"loaded {Path(path).name}")
        return vol

    if all(matches):  # per-class files, grouped by rater
        groups: dict[str, dict[int, str]] = {}
        for path, m in zip(paths, matches):
            rater = str(Path(path).with_name(m.group("rater")))
            k = classes.index(m.group("cls"), path)
            if k in groups.setdefault(rater, {}):
                raise InputError(f"{path}: class {k} of rater {rater} is given twice")
            groups[rater][k] = path
        for rater, files in groups.items():  # every file named before any is read
            missing = [k for k in range(1, classes.k + 1) if k not in files]
            if missing:
                raise InputError(
                    f"{rater}: no file for class {', '.join(map(str, missing))} "
                    f"({', '.join(classes.names[k - 1] for k in missing)}); give "
                    f"{rater}_label-<class>.nii.gz for every class"
                )
        maps, names, kinds = [], [], []
        for rater, files in groups.items():
            per_class, rater_kinds = [], []
            for k in range(1, classes.k + 1):
                values, kind = rater_values(load(files[k]), name=files[k])
                per_class.append(values)
                rater_kinds.append(kind)
            name = f"{rater}_label-*"
            maps.append(class_probabilities(per_class, name=name))
            names.append(name)
            kinds.append("binary" if set(rater_kinds) == {"binary"} else "soft")
        return volumes, np.stack(maps), names, kinds, True
    if any(matches):
        raise InputError(
            "give either integer label maps or per-class files <rater>_label-<class>.nii.gz, not "
            f"both ({next(p for p, m in zip(paths, matches) if m)} is a per-class file, "
            f"{next(p for p, m in zip(paths, matches) if not m)} is not)"
        )
    labels = []
    for path in paths:
        (one,), _k = as_label_maps(load(path).array[None], min_raters=1, what="softseg fuse", names=[path])
        classes.check_label_values(one, path)
        labels.append(one)
    return volumes, np.stack(labels), [str(p) for p in paths], ["labels"] * len(paths), False


# ----------------------------------------------------------------------------------- run
def _check_options(args: argparse.Namespace) -> None:
    if len(args.raters) < 2:
        raise InputError(f"fusion needs at least two raters; got one ({args.raters[0]})")
    if args.soft and args.method != "staple":
        raise InputError(f"--soft applies to --method staple; {args.method} needs binary raters")
    if args.margin < 0:
        raise InputError(f"--margin must be >= 0 voxels; got {args.margin}")
    if args.max_iter is not None and args.max_iter < 1:
        raise InputError(f"--max-iter must be >= 1; got {args.max_iter}")
    if args.tol is not None and not (np.isfinite(args.tol) and args.tol >= 0):
        raise InputError(f"--tol must be a finite number >= 0; got {args.tol}")


#: Peak bytes per voxel of the fusion engine beyond its input, measured with tracemalloc on
#: 96 x 96 x 64 volumes (3 and 6 raters): binary and label-map methods at most ~60 plus ~4 per
#: rater; soft STAPLE ~56 per rater (its EM keeps float64 maps per rater).
_ENGINE_BYTES = 64
_ENGINE_BYTES_PER_RATER = 4
_SOFT_STAPLE_BYTES_PER_RATER = 56


def _check_inputs(paths: Sequence[str], method: str, classes: ClassList | None, soft: bool) -> int:
    """Every rater's header checked (:func:`softseg.io.check_nifti`), then the run's memory
    (:func:`softseg.io.check_memory`), before any voxel is read; returns the total voxel count.

    The working set: the loaded files, each rater converted to float32 and stacked (per-class
    files: K + 1 class maps per rater), and the engine's arrays (``_ENGINE_BYTES*``).
    """
    from softseg.io import check_memory, check_nifti
    from softseg.sidecar import read_rater_sidecar

    infos = [check_nifti(p, what="label map", label=True) for p in paths]
    n_vox = int(np.prod(infos[0].shape))
    r = len(infos)
    per_class_files = classes is not None and all(_CLASS_FILE.match(Path(p).name) for p in paths)
    n_raters = len({_CLASS_FILE.match(Path(p).name).group("rater") for p in paths}) if per_class_files else r
    converted = 8 * (classes.k + 1 if per_class_files else 1)  # float32 values + the stack
    engine = _ENGINE_BYTES + _ENGINE_BYTES_PER_RATER * n_raters
    if method == "staple" and classes is None and (
        soft or any(i.stored_dtype.kind == "f" or i.scaled for i in infos)
        or any((side := read_rater_sidecar(p)) is not None and side.scale is not None for p in paths)
    ):
        engine += _SOFT_STAPLE_BYTES_PER_RATER * n_raters
    total = sum(i.nbytes for i in infos) + n_vox * (converted * n_raters + engine)
    shape = " x ".join(map(str, infos[0].shape))
    check_memory(total, what=f"fusing {n_raters} raters of {shape} voxels ({method})")
    return n_vox * r


def run(args: argparse.Namespace) -> int:
    from softseg import __version__
    from softseg.dataset_json import class_file_path, class_list
    from softseg.fusion import SoftRatersError, fuse
    from softseg.io import is_nifti_path, nifti_image, sidecar_path
    from softseg.outputs import OutputSet
    from softseg.sidecar import RaterSidecar

    out = Path(args.output)
    if not is_nifti_path(out):
        raise InputError(f"{out}: output must end in .nii or .nii.gz")
    _check_options(args)
    classes = class_list(count=args.classes, dataset_json=args.dataset_json)
    spec = METHODS[args.method]
    if classes is not None and not spec.multiclass:
        raise InputError(
            f"--method {args.method} is defined for two classes; for label maps use one of "
            f"{', '.join(fusion_methods(multiclass=True))}"
        )
    class_files = (
        [class_file_path(out, k) for k in range(1, classes.k + 1)]
        if classes is not None and spec.output == "soft"
        else []
    )
    # every output checked (exists, folder writable) before any work
    outputs = OutputSet([out, sidecar_path(out), *class_files], overwrite=args.overwrite)

    n_vox = _check_inputs(args.raters, args.method, classes, bool(args.soft))
    show = args.progress == "always" or (args.progress == "auto" and n_vox >= LARGE_INPUT_VOXELS)
    bar = ProgressBar(len(args.raters) + 2, label="softseg fuse", enabled=show)

    options: dict[str, Any] = {"roi": args.roi, "margin": args.margin, "tol": args.tol}
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    if classes is None:
        volumes, arrays, kinds = load_label_maps(args.raters, progress=bar)
        raters = np.stack(arrays)
        del arrays
        names = [str(p) for p in args.raters]
        options.update(soft=bool(args.soft), ties=1 if args.ties == "foreground" else 0)
    else:
        volumes, raters, names, kinds, class_maps = _load_class_raters(args.raters, classes, bar)
        options.update(n_classes=classes.k, class_maps=class_maps)
    try:
        result = fuse(
            raters, args.method, names=names,
            progress=lambda frac, text: bar.note(text), **options,
        )
    except SoftRatersError as exc:
        if exc.method == "staple" and classes is None:
            raise InputError(
                f"binary STAPLE needs 0/1 raters but {', '.join(exc.names)} hold soft or "
                "confidence values; pass --soft for soft STAPLE, or binarise the maps"
            ) from None
        raise InputError(
            f"--method {args.method} needs {'one class per voxel' if classes else 'binary raters'}"
            f" but {', '.join(exc.names)} hold soft or confidence values; binarise them, or use "
            f"--method average{'' if classes else ' or --method staple --soft'}"
        ) from None
    del raters
    bar.step(f"{args.method} done")

    record = _record(args, result, names, kinds, classes, class_files)
    record["softseg_version"] = __version__
    sidecar = RaterSidecar(
        kind="labels" if result.fused.dtype.kind != "f" else "soft",
        software=f"softseg {__version__}",
        fusion=record,
    ).to_json()
    from softseg.compare import json_safe

    sidecar = json_safe(sidecar)
    with outputs:
        outputs.save_image(out, nifti_image(out, result.fused, like=volumes[0]))
        for k, path in enumerate(class_files, start=1):
            outputs.save_image(path, nifti_image(path, result.probability[k], like=volumes[0]))
        outputs.write_json(sidecar_path(out), sidecar)
    bar.step(f"wrote {out.name}")
    bar.close()

    if args.json:
        summary = {"output": str(out), "sidecar": str(sidecar_path(out)), **sidecar["fusion"]}
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(out, sidecar["fusion"], result.fused)
    return 0


def _record(
    args: argparse.Namespace,
    result: Any,
    names: Sequence[str],
    kinds: Sequence[str],
    classes: ClassList | None,
    class_files: Sequence[Path],
) -> dict[str, Any]:
    """The summary written to OUT.json (``fusion``) and printed by ``--json``:
    :meth:`softseg.fusion.FusionResult.summary` plus the command's inputs and options."""
    record: dict[str, Any] = {
        **result.summary(names),
        "inputs": [str(Path(p)) for p in args.raters],
        "input_kinds": list(kinds),
    }
    if result.roi is not None:
        region = record["roi"]
        record["roi"] = {
            "mode": "auto", "margin_voxels": args.margin, "box": region["box"],
            "voxels": region["voxels"],
        }
    if "staple" in record:
        record["staple"]["tol"] = args.tol
    if result.method == "majority" and classes is None:
        record["ties"] = args.ties
    for entry in record["raters"]:
        entry["path"] = entry.pop("name")
    if classes is not None:
        record["classes"] = ["background", *classes.names]
        record["class_maps"] = [str(p) for p in class_files]
    return record


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
        prior = st["prior"]
        prior_text = (
            f"{prior:.4g}" if isinstance(prior, float) else "[" + ", ".join(f"{p:.3g}" for p in prior) + "]"
        )
        lines.append(
            f"  STAPLE on {where}: prior {prior_text}, {st['iterations']} iterations ({state})"
        )
    if "n_classes" in record:
        for r in record["raters"]:
            diag = np.diag(np.asarray(r["confusion"], dtype=float))
            per_class = ", ".join(
                f"{c} {v:.4f}" for c, v in zip(record["classes"], diag)
            )
            lines.append(f"  {r['path']}: agreement per true class (confusion diagonal) {per_class}")
        for path in record["class_maps"]:
            lines.append(f"  class probability -> {path}")
    else:
        lines.append(f"  {'sensitivity':>11}  {'specificity':>11}  rater")
        for r in record["raters"]:
            lines.append(f"  {r['sensitivity']:11.4f}  {r['specificity']:11.4f}  {r['path']}")
    pair = np.asarray(record["pairwise_dice"])
    off = pair[~np.eye(len(pair), dtype=bool)]
    lines.append(
        f"  pairwise rater Dice: mean {off.mean():.4f}, min {off.min():.4f}, max {off.max():.4f}"
    )
    print("\n".join(lines))
