"""The ``softseg`` command.

Each sub-command lives in its own module of this package and exposes three names:

``HELP``                 one line shown in ``softseg --help``
``add_arguments(p)``     adds its options to an :class:`argparse.ArgumentParser`
``run(args) -> int``     does the work and returns the exit code

Exit codes (DESIGN.md): 0 success, 2 bad usage or bad input (one line on stderr, no traceback),
1 internal failure. Modules import heavy dependencies (torch, ...) inside ``run`` so that
``softseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from softseg import __version__
from softseg.cli import candidates, demo
from softseg.cli import phantom as phantom_cmd
from softseg.cli import evaluate as evaluate_cmd
from softseg.cli import export as export_cmd
from softseg.cli import export_model as export_model_cmd
from softseg.cli import import_ as import_cmd
from softseg.cli import fuse as fuse_cmd
from softseg.cli import compare as compare_cmd
from softseg.cli import predict as predict_cmd
from softseg.cli import train as train_cmd
from softseg.errors import InputError

__all__ = ["main", "COMMANDS"]

#: sub-command name -> module (a plain dict, STYLE.md 6).
COMMANDS = {
    "demo": demo,
    "phantom": phantom_cmd,
    "fuse": fuse_cmd,
    "evaluate": evaluate_cmd,
    "candidates": candidates,
    "train": train_cmd,
    "predict": predict_cmd,
    "compare": compare_cmd,
    "import": import_cmd,
    "export": export_cmd,
    "export-model": export_model_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softseg",
        description="Soft segmentation of medical images: fuse raters, train SoftSeg models, "
        "predict and compare soft segmentations. The napari plugin calls the same engine.",
    )
    parser.add_argument("--version", action="version", version=f"softseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (InputError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError) as exc:
        print(f"softseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `softseg ... | head`: the reader went away, not our failure
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(f"softseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal failure: keep the traceback for bug reports
        traceback.print_exc()
        print(f"softseg {args.command}: internal error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
