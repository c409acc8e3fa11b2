"""``softseg train``: train a candidate on a dataset folder and write a model file.

The configuration (:class:`softseg.config.TrainConfig`) is built once: a preset (``--preset``,
default ``paper``), then a JSON file (``--config``), then the options given on the command line,
each overriding the one before; the result is validated as a whole (a wrong type, a value out of
range or an unknown key is one line naming the key, exit 2).

Progress goes to stderr as a progress line by default; with ``--json-progress`` every
:mod:`softseg.events` event is printed as one JSON line on stdout (flushed), which is what the
napari Train widget reads. Every run writes ``<model>.history.csv``; ``--tensorboard DIR`` adds
TensorBoard scalars. SIGINT/SIGTERM stop the run after the current step and leave a resumable
checkpoint (``--resume`` continues it); the command then exits with 128 + the signal number (130
for Ctrl-C), the convention of every ``softseg`` command (:mod:`softseg.cli`). A second run on the
same ``--out`` is refused while the first runs. Under ``torchrun`` only rank 0 prints.

Fine-tuning (``--init PARENT``, :mod:`softseg.training.finetune`): the run starts from PARENT's
weights; its base configuration is PARENT's own (stored in its card) instead of the preset, so
the candidate, the network and the preprocessing are the parent's; ``--config`` and the options
then override it (typically ``--epochs`` and ``--lr``). A different class list, different
channels, another candidate or network, or another ``--spacing`` is refused with one line.

Multi-class datasets (dataset.json ``"classes"``, DESIGN decision 11) train a K-class model of the
chosen candidate (:meth:`softseg.candidates.Candidate.for_classes`). Rater files that a model
pre-annotated and nobody corrected are refused unless ``--allow-preannotated``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from softseg.errors import InputError
from softseg.events import format_seconds

__all__ = ["HELP", "add_arguments", "build_config", "parse_crop", "parse_spacing", "run"]

HELP = "train a SoftSeg (or conventional) model on a dataset folder; writes MODEL.safetensors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from softseg.config import PRESETS

    parser.add_argument("dataset", metavar="DATASET", help="dataset folder: DATASET/<subject>/image.nii.gz + rater-<id>.nii.gz")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.safetensors); MODEL.history.csv is written beside it")
    parser.add_argument("--candidate", metavar="NAME", help="training candidate (see `softseg candidates`), e.g. softseg (default), conventional")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="paper",
                        help="starting configuration: paper (SoftSeg Table 1, default) or quick (a first model on a CPU in minutes)")
    parser.add_argument("--config", metavar="JSON", help="TrainConfig as a JSON file (nested: data/model/optim/augment; schema in docs/train-config.schema.json); overrides the preset, options below override it")
    parser.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard scalars into DIR")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs (default 200)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 50)")
    parser.add_argument("--min-delta", type=float, help="minimum validation-loss improvement (default 0.001)")
    parser.add_argument("--batch-size", type=int, help="slices per batch (default 8)")
    parser.add_argument("--lr", type=float, help="initial learning rate of Adam (default 0.001)")
    parser.add_argument("--crop", metavar="R[,C]", help="training slice size, e.g. 128 or 160,124 (default 128)")
    parser.add_argument(
        "--spacing", metavar="X,Y[,Z]",
        help="target voxel size in mm in RAS order as in the paper's Table 1 (x left-right, y "
        "posterior-anterior, z = axial slice axis); one value = isotropic in-plane; Z omitted keeps "
        "the native slices (default: median in-plane spacing of the training subjects)",
    )
    parser.add_argument("--depth", type=int, help="U-Net depth (default 3)")
    parser.add_argument("--width", type=int, help="filters of the first U-Net level (default 32)")
    parser.add_argument("--dropout", type=float, help="dropout probability (default 0.3)")
    parser.add_argument("--fusion", metavar="NAME", help="rater fusion for training: staple, average (default), majority, random (see `softseg candidates`)")
    parser.add_argument("--val-fraction", type=float, help="fraction of subjects for validation (default 0.2)")
    parser.add_argument("--test-fraction", type=float, help="fraction of subjects held out for testing (default 0)")
    parser.add_argument("--test-group", metavar="GROUP", help="hold out this dataset.json group as the test set")
    parser.add_argument("--foreground-oversampling", type=float, metavar="F",
                        help="share of training samples drawn from slices that hold the structure, with "
                        "replacement (nnU-Net: 0.33; default 0: every slice once per epoch)")
    parser.add_argument("--no-augment", action="store_true", help="no random affine augmentation")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--device", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run of MODEL from its checkpoint")
    parser.add_argument("--init", metavar="PARENT",
                        help="fine-tune: start from the weights of this model file (same candidate, network, "
                        "classes, channels and spacing; its settings are the base configuration)")
    parser.add_argument("--allow-preannotated", action="store_true",
                        help="accept rater files that a model pre-annotated and no rater corrected (refused by default)")
    parser.add_argument("--json-progress", action="store_true", help="one JSON event per line on stdout (for supervisors)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model file / discard its checkpoint")


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--{what}: expected comma-separated numbers; got {text!r}") from None
    if not values:
        raise InputError(f"--{what}: expected comma-separated numbers; got {text!r}")
    return values


def parse_crop(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"160,124"`` -> (160, 124) (rows, cols)."""
    values = _floats(text, "crop")
    if len(values) not in (1, 2) or any(v != int(v) or v < 8 for v in values):
        raise InputError(f"--crop: give one or two whole sizes >= 8 (e.g. 128 or 160,124); got {text!r}")
    rows = int(values[0])
    return rows, int(values[-1])


def parse_spacing(text: str) -> tuple[float | None, float, float]:
    """``X,Y[,Z]`` mm in RAS order -> display order (S, P, L) = (Z or None, Y, X)."""
    values = _floats(text, "spacing")
    if len(values) not in (1, 2, 3) or any(v <= 0 for v in values):
        raise InputError(f"--spacing: give 1, 2 or 3 positive sizes in mm (X,Y[,Z]); got {text!r}")
    if len(values) == 1:
        values = [values[0], values[0]]
    x, y = values[0], values[1]
    z = values[2] if len(values) == 3 else None
    return (z, y, x)


def build_config(args: argparse.Namespace) -> Any:
    """The run's :class:`~softseg.config.TrainConfig`: preset < ``--config`` file < options.

    Raises
    ------
    InputError
        One line naming the file or option and the key (``cfg.json: optim.lr: Input should be a
        valid number``).
    """
    from softseg.config import preset

    config = preset(args.preset) if getattr(args, "init", None) is None else _parent_config(args.init)
    if args.config:
        config = config.updated(_file_values(args.config), source=str(args.config))
    over: dict[str, Any] = {"data": {}, "model": {}, "optim": {}, "augment": {}}

    def put(section: str | None, key: str, value: Any) -> None:
        if value is None:
            return
        (over if section is None else over[section])[key] = value

    put(None, "candidate", args.candidate)
    put(None, "seed", args.seed)
    put(None, "device", args.device)
    if args.no_amp:
        over["amp"] = False
    put("optim", "epochs", args.epochs)
    put("optim", "patience", args.patience)
    put("optim", "min_delta", args.min_delta)
    put("optim", "batch_size", args.batch_size)
    put("optim", "lr", args.lr)
    put("data", "crop", list(parse_crop(args.crop)) if args.crop else None)
    put("data", "spacing", list(parse_spacing(args.spacing)) if args.spacing else None)
    put("data", "fusion", args.fusion)
    put("data", "val_fraction", args.val_fraction)
    put("data", "test_fraction", args.test_fraction)
    put("data", "test_group", args.test_group)
    put("data", "foreground_oversampling", args.foreground_oversampling)
    put("model", "depth", args.depth)
    put("model", "width", args.width)
    put("model", "dropout", args.dropout)
    if args.no_augment:
        over["augment"]["enabled"] = False
    return config.updated(over, source="command-line options")


def _parent_config(path: str) -> Any:
    """The configuration a fine-tuning starts from: the parent's own (its card), else its
    candidate and network on the paper preset."""
    from softseg.config import preset
    from softseg.modelfile import read_card

    card = read_card(path)
    if card.training.config is not None:
        return card.training.config
    arch = card.architecture.config
    return preset("paper").updated({
        "candidate": card.candidate.name,
        "model": {"depth": arch.depth, "width": arch.width, "dropout": arch.dropout, "batch_norm": arch.batch_norm},
    }, source=f"{path}: model card")


def _file_values(path: str) -> dict[str, Any]:
    """The ``--config`` file as a validated dict (errors name the file and the key)."""
    from softseg.config import TrainConfig

    return TrainConfig.from_json_file(path).model_dump(mode="json", exclude_unset=True)


class _ProgressPrinter:
    """Human progress on stderr: a live step line on a terminal, one line per epoch always."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.width = 0

    def _line(self, text: str) -> None:
        pad = " " * max(0, self.width - len(text))
        self.stream.write("\r" + text + pad)
        self.width = len(text)
        self.stream.flush()

    def _print(self, text: str) -> None:
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: Any) -> None:
        t = event.type
        if t == "step" and self.live:
            frac = event.step / max(1, event.steps)
            bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
            self._line(
                f"epoch {event.epoch}/{event.epochs} [{bar}] {event.step}/{event.steps} "
                f"loss {event.loss:.4f}  eta {format_seconds(event.eta_s)}"
            )
        elif t == "epoch":
            self._print(
                f"epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}  val loss {event.val_loss:.4f}  "
                f"val Dice {event.val_dice:.3f}  soft Dice {event.val_soft_dice:.3f}  lr {event.lr:.2e}  "
                f"eta {format_seconds(event.eta_s)}"
            )
        elif t == "best":
            pass
        elif t == "checkpoint" and event.reason == "cancel":
            self._print(f"checkpoint saved: {event.path} (continue with --resume)")
        elif t == "done":
            if event.reason == "cancelled":
                self._print(f"stopped after epoch {event.epoch}; resume with --resume")
            else:
                why = "early stopping" if event.reason == "early_stopping" else "maximum epochs"
                threshold = ("per-class thresholds in the card" if event.threshold is None
                             else f"threshold {event.threshold:.2f}")
                self._print(
                    f"done ({why}) after {event.epoch} epochs in {format_seconds(event.elapsed_s)}: best epoch "
                    f"{event.best_epoch}, {threshold} -> {event.path}"
                )


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 when the model was written, 128 + N when signal N stopped the run."""
    from softseg import events as ev
    from softseg.training import Trainer

    json_out = bool(args.json_progress)
    cancel = threading.Event()
    pipe = {"open": json_out}
    stopped_by: list[int] = []

    def emit(event: Any) -> None:
        if not pipe["open"]:
            return
        try:
            sys.stdout.write(ev.to_json(event) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # the supervisor is gone: stop and checkpoint
            pipe["open"] = False
            stopped_by.append(signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 13)
            cancel.set()
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more goes out

    try:
        config = build_config(args)
    except InputError as exc:
        emit(ev.ErrorEvent(epoch=0, kind="input", message=" ".join(str(exc).split())))
        raise
    printer = None if json_out else _ProgressPrinter(sys.stderr)

    def on_signal(signum: int, _frame: Any) -> None:
        if cancel.is_set():  # second signal: stop now
            raise KeyboardInterrupt
        stopped_by.append(int(signum))
        cancel.set()
        if not json_out:
            print(f"\nsoftseg train: {signal.Signals(signum).name}: stopping after this step and "
                  "saving a checkpoint (again to abort)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    trainer = Trainer(args.dataset, config, out=args.out, resume=args.resume, overwrite=args.overwrite,
                      cancel=cancel, tensorboard=args.tensorboard, init=args.init,
                      allow_preannotated=args.allow_preannotated)
    error = done = None
    try:
        for event in trainer.run():
            while trainer.notes and not json_out:  # set up by now (the first event)
                print(f"softseg train: {trainer.notes.pop(0)}", file=sys.stderr, flush=True)
            emit(event)
            if printer is not None:
                printer(event)
            if isinstance(event, ev.ErrorEvent):
                error = event
            elif isinstance(event, ev.DoneEvent):
                done = event
    except InputError as exc:
        emit(ev.ErrorEvent(epoch=0, kind="input", message=" ".join(str(exc).split())))
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        emit(ev.ErrorEvent(epoch=getattr(trainer, "epoch", 0), kind="internal", message=" ".join(str(exc).split()) or type(exc).__name__))
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if error is not None:
        raise InputError(error.message)
    if done is not None and done.reason == "cancelled":
        # interrupted runs exit 128 + signal (softseg.cli): the checkpoint is saved, nothing else
        return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)
    return 0
