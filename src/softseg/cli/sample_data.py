"""``softseg sample-data``: write a sample dataset folder to try every command on.

``softseg sample-data mni DIR``      real anatomy: subjects made from the MNI ICBM152 template
                                     (nilearn), tissue classes and/or MS-like lesions, raters per
                                     class (:mod:`softseg.anatomy`)
``softseg sample-data phantom DIR``  the analytic partial-volume phantom (= ``softseg phantom``)
"""

from __future__ import annotations

import argparse
import json
import sys

from softseg.cli import phantom as phantom_cmd
from softseg.errors import InputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "write a sample dataset: real anatomy from the MNI template (mni) or the phantom"

#: target -> what it holds, for --help (the classes come from softseg.anatomy.TARGETS).
_TARGET_HELP = {
    "tissue": "grey matter, white matter, csf (3 classes)",
    "tissue-lesion": "the three tissues + MS-like lesions (4 classes)",
    "lesion": "MS-like lesions only (single class, the phantom's layout)",
}


def _add_mni(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="FOLDER", help="dataset folder (new or empty)")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects (default 4)")
    parser.add_argument("--raters", type=int, default=4, help="raters per subject (default 4)")
    parser.add_argument(
        "--target", choices=list(_TARGET_HELP), default="tissue",
        help="what the raters label: " + "; ".join(f"{k}: {v}" for k, v in _TARGET_HELP.items())
        + " (default tissue)",
    )
    parser.add_argument(
        "--lesions", action="store_true",
        help="add MS-like lesions as a fourth class (same as --target tissue-lesion)",
    )
    parser.add_argument(
        "--lesion-count", metavar=("LOW", "HIGH"), type=int, nargs=2, default=None,
        help="lesions per subject, drawn uniformly in LOW..HIGH (default 3 8; 6 12 leaves about "
        "three quarters of the axial slices lesion-free)",
    )
    parser.add_argument(
        "--spacing", metavar="MM", type=float, nargs="+", default=None,
        help="output voxel size in mm: one value (isotropic) or three (R A S); default 2",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace a dataset previously written by softseg sample-data mni in FOLDER",
    )
    parser.add_argument("--json", action="store_true", help="print dataset.json on stdout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    mni = sub.add_parser(
        "mni", help="real anatomy from the MNI ICBM152 template (needs the anatomy extra)",
        description="Subjects made from the MNI ICBM152 2009a template shipped in nilearn: "
        "random smooth deformation, partial volume, bias field, Rician noise, simulated raters "
        "per class. Needs nilearn: pip install 'napari-softseg[anatomy]'.",
    )
    _add_mni(mni)
    ph = sub.add_parser("phantom", help=phantom_cmd.HELP, description=phantom_cmd.HELP)
    phantom_cmd.add_arguments(ph)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "phantom":
        return phantom_cmd.run(args)
    from softseg.anatomy import DEFAULT_SPACING, LESION, TARGETS, write_dataset

    target = args.target
    if args.lesions:
        if target == "lesion":
            raise InputError("--lesions adds a lesion class to the tissues; with --target lesion "
                             "the lesions are already the only class: drop --lesions")
        target = "tissue-lesion"
    if args.spacing is not None and len(args.spacing) not in (1, 3):
        raise InputError(f"--spacing takes one value or three (mm); got {len(args.spacing)}")
    if args.subjects < 1:
        raise InputError(f"--subjects must be >= 1; got {args.subjects}")
    if args.raters < 1:
        raise InputError(f"--raters must be >= 1; got {args.raters}")
    spacing = DEFAULT_SPACING if args.spacing is None else tuple(args.spacing)
    options = {}
    if args.lesion_count is not None:
        if LESION not in TARGETS[target]:
            raise InputError("--lesion-count needs lesions: add --lesions or --target lesion")
        options["n_lesions"] = tuple(args.lesion_count)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"softseg sample-data mni: subject {done}/{total}", file=sys.stderr)

    folder = write_dataset(
        args.out, n_subjects=args.subjects, target=target, n_raters=args.raters,
        seed=args.seed, spacing=spacing, overwrite=args.overwrite, progress=progress, **options,
    )
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        classes = TARGETS[target]
        print(
            f"softseg sample-data mni: wrote {len(meta['subjects'])} subjects x "
            f"{len(meta['raters'])} raters x {len(classes)} "
            f"class{'es' if len(classes) > 1 else ''} ({', '.join(classes)}) to {folder}",
            file=sys.stderr,
        )
    return 0
