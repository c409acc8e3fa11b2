"""``softseg export nnunet DATASET DST``: a softseg dataset as an nnU-Net v2 raw dataset.

Fused labels (the training path's fusion), the images linked (``--copy`` copies them), and with
``--model`` the model's train/validation split as ``splits_final.json`` (fold 0) and its test
subjects in ``imagesTs``/``labelsTs``, so an nnU-Net baseline trains on exactly the same split.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "export a softseg dataset as an nnU-Net v2 raw dataset (fused labels, the model's split)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    n = sub.add_parser(
        "nnunet", help="nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json, splits_final.json)",
        description="Write DST (named DatasetNNN_Name) as an nnU-Net v2 raw dataset: images linked, "
        "raters fused into labelsTr, dataset.json, and with --model the model's split.",
    )
    n.add_argument("dataset", metavar="DATASET", help="softseg dataset folder (DATASET/<subject>/image.nii.gz + rater-<id>.nii.gz)")
    n.add_argument("dst", metavar="DST", help="nnU-Net dataset folder to create, e.g. $nnUNet_raw/Dataset501_SpinalCord")
    n.add_argument("--fusion", metavar="METHOD", help="rater fusion: staple, average (cut at 0.5) or majority (default: the model's, else staple)")
    n.add_argument("--model", metavar="MODEL", help="softseg model file whose train/val/test split is written (splits_final.json, imagesTs)")
    n.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    n.add_argument("--overwrite", action="store_true", help="replace DST if it is an earlier export")
    n.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args: argparse.Namespace) -> int:
    from softseg.interchange.export_nnunet import export_nnunet

    report = export_nnunet(args.dataset, args.dst, fusion=args.fusion, model=args.model,
                           copy=args.copy, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({
            "path": str(report.path), "fusion": report.fusion, "labels": report.labels,
            "train": list(report.train), "val": list(report.val), "test": list(report.test),
            "unsplit": list(report.unsplit),
        }, indent=2))
    else:
        split = f"; split: {len(report.train)} train, {len(report.val)} val, {len(report.test)} test" if args.model else ""
        print(f"{report.path}: {len(report.train) + len(report.val) + len(report.unsplit)} training case(s), "
              f"labels fused with {report.fusion}{split}")
        if report.unsplit:
            print(f"  not in the model's split (in imagesTr, not in splits_final.json): {', '.join(report.unsplit)}")
    return 0
