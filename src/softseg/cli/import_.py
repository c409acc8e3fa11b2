"""``softseg import bids|nnunet SRC DST``: a softseg dataset folder from a BIDS or nnU-Net dataset.

The new folder links the source files (symbolic links; ``--copy`` copies their bytes) and never
rewrites an image; ``--dry-run`` prints the mapping (and every file not imported, with the reason)
without writing anything. Bad input is one line on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "build a softseg dataset folder from a BIDS or nnU-Net/MSD dataset (links, never rewrites images)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dst", metavar="DST", help="the softseg dataset folder to create")
    p.add_argument("--dry-run", action="store_true", help="print the mapping and the files not imported; write nothing")
    p.add_argument("--copy", action="store_true", help="copy the files instead of linking them (symbolic links by default)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it is an earlier import")
    p.add_argument("--json", action="store_true", help="print the mapping as JSON on stdout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    b = sub.add_parser(
        "bids", help="BIDS dataset; labels from derivatives/<pipeline>/ (ivadomed style)",
        description="Import a BIDS dataset: raw images of one datatype as channels, labels from the "
        "derivatives pipeline folders (label-, desc-, rater- entities, ivadomed <what>-manual names, "
        "mask/dseg/probseg/seg suffixes). Every pipeline folder and every desc/rater value is a rater.",
    )
    b.add_argument("src", metavar="SRC", help="top folder of the BIDS dataset (with dataset_description.json)")
    _common(b)
    b.add_argument("--derivatives", nargs="+", metavar="PIPELINE", help="pipeline folders under derivatives/ to read labels from (default: all)")
    b.add_argument("--label", nargs="+", metavar="CLASS", help="classes to import: label- values, ivadomed keys (seg, gmseg, lesion) or suffixes")
    b.add_argument("--desc", nargs="+", metavar="VALUE", help="keep labels whose desc-, rater- value or ivadomed origin is one of these")
    b.add_argument("--contrast", nargs="+", metavar="CONTRAST", help="channels to import, e.g. T2w or acq-sag_T2w (default: all)")
    b.add_argument("--subject", nargs="+", metavar="SUB", help="subjects to import (01 or sub-01)")
    b.add_argument("--datatype", default="anat", help="BIDS datatype folder of the images (default anat)")
    b.add_argument("--group-by", metavar="COLUMN", help="participants.tsv column written as dataset.json groups (e.g. institution_id)")
    b.set_defaults(_plan=_plan_bids)
    n = sub.add_parser(
        "nnunet", help="nnU-Net v2 raw dataset or Medical Segmentation Decathlon task",
        description="Import an nnU-Net v2 / MSD dataset: imagesTr/<case>_<XXXX> channels, labelsTr "
        "integer label maps (one rater), dataset.json labels as classes.",
    )
    n.add_argument("src", metavar="SRC", help="the dataset folder (DatasetNNN_Name) with dataset.json")
    _common(n)
    n.add_argument("--rater", default="1", metavar="ID", help="rater id of the label maps (default 1)")
    n.set_defaults(_plan=_plan_nnunet)


def _plan_bids(args: argparse.Namespace):  # noqa: ANN202 - ImportPlan, imported lazily
    from softseg.interchange.bids import plan_bids_import

    return plan_bids_import(
        args.src, derivatives=args.derivatives, labels=args.label, descs=args.desc,
        contrasts=args.contrast, subjects=args.subject, datatype=args.datatype, group_by=args.group_by,
    )


def _plan_nnunet(args: argparse.Namespace):  # noqa: ANN202
    from softseg.interchange.nnunet import plan_nnunet_import

    return plan_nnunet_import(args.src, rater=args.rater)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from softseg.interchange.plan import check_destination, execute_plan, format_plan

    # the destination is checked before the (possibly slow) scan of the source
    check_destination(args.dst, sources=(Path(args.src),), overwrite=args.overwrite)
    plan = args._plan(args)
    if args.json:
        print(json.dumps({**plan.as_dict(), "dst": str(Path(args.dst).absolute()), "dry_run": bool(args.dry_run)}, indent=2))
    elif args.dry_run:
        print(format_plan(plan, dst=args.dst, dry_run=True))
    if args.dry_run:
        return 0
    dst = execute_plan(plan, args.dst, copy=args.copy, overwrite=args.overwrite)
    if not args.json:
        how = "copied" if args.copy else "linked"
        print(
            f"{dst}: {len(plan.subjects)} subject(s), {len(plan.links)} file(s) {how}; channels "
            f"{', '.join(plan.channels)}; classes {', '.join(plan.classes)}; raters {', '.join(plan.raters)}"
        )
        if plan.unmatched:
            print(f"not imported ({len(plan.unmatched)} file(s); --dry-run lists the mapping):", file=sys.stderr)
            for u in plan.unmatched:
                print(f"  {u.path}: {u.reason}", file=sys.stderr)
    return 0
