"""``softseg candidates``: list the training candidates and the rater-fusion choices."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "list the training candidates (softseg, conventional, ...) and the rater-fusion choices"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="show only these candidates")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of a table"
    )


def run(args: argparse.Namespace) -> int:
    from softseg.candidates import CANDIDATES, FUSION_DESCRIPTIONS, FUSIONS, RENAMED, get_candidate
    from softseg.protocol.ensemble import DESCRIPTION as ENSEMBLE_DESCRIPTION
    from softseg.protocol.ensemble import ENSEMBLE

    chosen = list({get_candidate(n).name: get_candidate(n) for n in args.names}.values()) \
        if args.names else list(CANDIDATES.values())
    aliases = {n: RENAMED[n] for n in dict.fromkeys(args.names) if n in RENAMED}
    if args.json:
        payload = {
            "candidates": [c.as_dict() for c in chosen],
            "fusions": [{"name": f, "description": FUSION_DESCRIPTIONS[f]} for f in FUSIONS],
            "protocol_fusions": [{"name": ENSEMBLE, "description": ENSEMBLE_DESCRIPTION}],
        }
        if aliases:
            payload["aliases"] = {n: new for n, (new, _) in aliases.items()}
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width_name = max(len(c.name) for c in chosen)
    width_title = max(len(c.title) for c in chosen)
    print("Candidates (softseg train --candidate NAME):")
    for c in chosen:
        gt = "soft" if c.soft_gt else "hard"
        loss = c.loss + (" + dice_semimetric" if c.loss_params.get("dice_semimetric_weight") else "")
        print(
            f"  {c.name:<{width_name}}  {c.title:<{width_title}}  "
            f"[{gt} GT, {c.activation}, {loss}]"
        )
        print(f"  {'':<{width_name}}  {c.description}")
    for old, (new, why) in aliases.items():
        print(f"  ({old} is another name of {new}: {why})")
    if not args.names:
        print()
        print("Rater fusion for multi-rater datasets (softseg train --fusion NAME):")
        width = max(len(f) for f in FUSIONS)
        for f in FUSIONS:
            print(f"  {f:<{width}}  {FUSION_DESCRIPTIONS[f]}")
        print()
        print("Rater ensemble (softseg compare --train NAME:ensemble, e.g. conventional:ensemble):")
        print(f"  {ENSEMBLE:<{width}}  {ENSEMBLE_DESCRIPTION}")
    return 0
