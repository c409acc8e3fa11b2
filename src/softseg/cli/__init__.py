"""The ``softseg`` command.

Each sub-command lives in its own module of this package and exposes three names:

``HELP``                 one line shown in ``softseg --help``
``add_arguments(p)``     adds its options to an :class:`argparse.ArgumentParser`
``run(args) -> int``     does the work and returns the exit code

Exit codes (DESIGN.md): 0 success; 2 bad usage or bad input, or an output that could not be
written (disk full, I/O error, read-only disk) — one line on stderr naming the file, no
traceback, nothing written; 1 internal failure (a traceback for the bug report; running out of
memory is also 1, on one line). Warnings of the engine (:class:`~softseg.errors.SoftsegWarning`)
are printed once each, on one line: ``softseg CMD: warning: ...``. Modules import heavy
dependencies (torch, ...) inside ``run`` so that ``softseg --help`` stays fast.

Interrupted runs (one convention for every command): a run stopped by a signal exits with
128 + the signal number, as shells report it: 130 for Ctrl-C (SIGINT), 143 for SIGTERM. It
cleans up first (no half-written output); ``softseg train`` also saves a resumable checkpoint
and reports a ``done`` event with reason ``"cancelled"`` (continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from softseg import __version__
from softseg.cli import candidates, demo
from softseg.cli import phantom as phantom_cmd
from softseg.cli import sample_data as sample_data_cmd
from softseg.cli import evaluate as evaluate_cmd
from softseg.cli import export as export_cmd
from softseg.cli import export_model as export_model_cmd
from softseg.cli import import_ as import_cmd
from softseg.cli import info as info_cmd
from softseg.cli import interpolate as interpolate_cmd
from softseg.cli import fuse as fuse_cmd
from softseg.cli import compare as compare_cmd
from softseg.cli import predict as predict_cmd
from softseg.cli import train as train_cmd
from softseg.errors import InputError, SoftsegWarning

__all__ = ["main", "COMMANDS"]

#: sub-command name -> module (a plain dict, STYLE.md 6).
COMMANDS = {
    "demo": demo,
    "phantom": phantom_cmd,
    "sample-data": sample_data_cmd,
    "fuse": fuse_cmd,
    "interpolate": interpolate_cmd,
    "evaluate": evaluate_cmd,
    "candidates": candidates,
    "train": train_cmd,
    "predict": predict_cmd,
    "compare": compare_cmd,
    "import": import_cmd,
    "export": export_cmd,
    "export-model": export_model_cmd,
    "info": info_cmd,
}


class _Parser(argparse.ArgumentParser):
    """argparse with the product's one-line errors (an unknown option or choice: one line, exit 2,
    instead of argparse's usage block before the error)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


#: OS errors that mean "this output (or input) could not be written / read": one line, exit 2.
_ENVIRONMENT_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", None)) if e is not None
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("once", SoftsegWarning)
        warnings.showwarning = _warning_printer(args.command)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except (
        InputError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError
    ) as exc:
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
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            return _internal(args, exc)
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(
            f"softseg {args.command}: error: {where}{exc.strerror or _one_line(exc)}; "
            "check the disk and run again",
            file=sys.stderr,
        )
        return 2
    except MemoryError:
        print(
            f"softseg {args.command}: error: out of memory; use smaller inputs (crop or downsample) "
            "or a machine with more memory",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # internal failure: keep the traceback for bug reports
        return _internal(args, exc)


def _internal(args: argparse.Namespace, exc: BaseException) -> int:
    traceback.print_exc()
    print(f"softseg {args.command}: internal error: {_one_line(exc)}", file=sys.stderr)
    return 1


def _warning_printer(command: str):  # noqa: ANN202 - the signature of warnings.showwarning
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, SoftsegWarning):
            print(f"softseg {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def _one_line(exc: BaseException) -> str:
    if not isinstance(exc, InputError) and isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
