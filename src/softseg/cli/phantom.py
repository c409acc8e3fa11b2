"""``softseg phantom``: write a partial-volume phantom dataset folder (DESIGN.md layout)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "write a phantom dataset (images, raters, partial-volume truth) to try every command on"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="FOLDER", help="dataset folder (new or empty)")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects (default 4)")
    parser.add_argument("--raters", type=int, default=4, help="raters per subject (default 4)")
    parser.add_argument(
        "--shape", metavar=("X", "Y", "Z"), type=int, nargs=3, default=None,
        help="grid in file order (default 96 96 32; Z is the axial slice axis)",
    )
    parser.add_argument(
        "--spacing", metavar=("SX", "SY", "SZ"), type=float, nargs=3, default=None,
        help="voxel size in mm (default 1 1 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace files in an existing folder"
    )
    parser.add_argument("--json", action="store_true", help="print dataset.json on stdout")


def run(args: argparse.Namespace) -> int:
    from softseg.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, write_dataset

    folder = write_dataset(
        args.out,
        n_subjects=args.subjects,
        shape=tuple(args.shape) if args.shape else DEFAULT_SHAPE,
        n_raters=args.raters,
        seed=args.seed,
        spacing=tuple(args.spacing) if args.spacing else DEFAULT_SPACING,
        overwrite=args.overwrite,
    )
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(
            f"softseg phantom: wrote {len(meta['subjects'])} subjects x "
            f"{len(meta['raters'])} raters "
            f"to {folder}",
            file=sys.stderr,
        )
    return 0
