"""``softseg info MODEL``: print a model file's card (issue 16).

The text comes from :func:`softseg.card.render_card` (the one rendering, also used by the napari
Predict widget); ``--json`` prints the card itself (:class:`softseg.card.ModelCard` as JSON).
Reading the card does not import torch and loads no weights.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "show a model file's card: candidate, classes, thresholds, preprocessing, data, metrics, versions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model file written by softseg train (.safetensors)")
    parser.add_argument("--json", action="store_true", help="print the card as JSON")


def run(args: argparse.Namespace) -> int:
    from softseg.card import render_card
    from softseg.modelfile import read_card

    card = read_card(args.model)
    if args.json:
        sys.stdout.write(card.to_json(indent=2) + "\n")
    else:
        sys.stdout.write(render_card(card, path=str(args.model)) + "\n")
    return 0
