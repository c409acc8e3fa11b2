"""``softseg compare``: candidates side by side, as an HTML report with figures, CSV and JSON.

Two forms::

    softseg compare MODEL.safetensors MODEL.safetensors ... --dataset DATASET [--out REPORT]
    softseg compare --train CANDIDATE CANDIDATE ... --dataset DATASET --repeats N [--groups]
                    [--reference softseg] [--epochs E ...] [--resume]
                    [--executor serial|local|slurm [--gpus-per-job N] [--cpus-per-job N]
                     [--timeout-min M] [--array-parallelism P] [--slurm-partition NAME]
                     [--slurm-param KEY=VALUE ...]]

The first evaluates trained models on the dataset's test subjects (mean ± std over subjects);
the second runs the papers' protocol: N trainings per candidate on paired random (or
leave-one-group-out) splits, mean ± std over repeats and a two-sided Wilcoxon signed-rank test
against a reference candidate. ``--resume`` continues an interrupted protocol run.
``NAME:ensemble`` (e.g. ``conventional:ensemble``) trains one model per rater and evaluates the
mean of their predictions (:mod:`softseg.protocol.ensemble`).
``--executor local|slurm`` runs each training as a submitit job (docs/cluster.md); Ctrl-C
cancels the jobs in flight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "compare candidates: trained models on a dataset, or the repeated-training protocol"

__all__ = ["HELP", "add_arguments", "run"]


def _crop(tokens: list[str]) -> tuple[int, int]:
    """``--crop`` tokens -> (rows, cols): ``128``, ``160,124`` (``softseg train``'s form) or the
    older ``160 124``; one parser for both commands (:func:`softseg.cli.train.parse_crop`)."""
    from softseg.cli.train import parse_crop

    return parse_crop(",".join(tokens))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="two or more model files (.safetensors) to evaluate")
    parser.add_argument("--train", nargs="+", metavar="CANDIDATE",
                        help="train these candidates (NAME or NAME:FUSION, e.g. softseg:staple) "
                             "--repeats times each instead of evaluating model files; "
                             "NAME:ensemble is a rater ensemble: one NAME model per rater, "
                             "predictions averaged (conventional:ensemble = the label-fusion "
                             "paper's Conv-STAPLE-QUBIQ baseline; needs >= 2 raters)")
    parser.add_argument("--dataset", required=True, help="dataset folder (DESIGN.md layout)")
    parser.add_argument("--out", default="compare-report", metavar="REPORT_DIR",
                        help="report folder (default: %(default)s)")
    from softseg.fusion import METHODS, training_fusions

    parser.add_argument("--ground-truth", default="staple",
                        choices=[*(f for f in training_fusions() if METHODS[f].fuses), "truth"],
                        help="reference of the overlap metrics (default: %(default)s; 'truth' "
                             "reads each subject's truth_soft.nii.gz)")
    parser.add_argument("--reference", default=None, metavar="CANDIDATE",
                        help="candidate the Wilcoxon test compares the others with "
                             "(default with --train: softseg)")
    parser.add_argument("--no-stats", action="store_true",
                        help="skip the Wilcoxon test (allows fewer repeats, e.g. a smoke run)")
    parser.add_argument("--subjects", nargs="+", metavar="SUBJECT",
                        help="MODEL form: evaluate these subjects (default: the models' test "
                             "subjects)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="MODEL form: one common threshold (default: each model's optimum)")
    g = parser.add_argument_group("--train protocol")
    g.add_argument("--repeats", type=int, default=None, help="trainings per candidate")
    g.add_argument("--groups", action="store_true",
                   help="leave-one-group-out splits over the dataset.json groups")
    g.add_argument("--test-fraction", type=float, default=0.2)
    g.add_argument("--val-fraction", type=float, default=0.2)
    g.add_argument("--seed", type=int, default=0, help="repeat k uses seed SEED+k")
    g.add_argument("--epochs", type=int, default=200)
    g.add_argument("--patience", type=int, default=50)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--crop", nargs="+", default=["128"], metavar="R[,C]",
                   help="training slice size as in softseg train: 128 or 160,124 (the older "
                        "form 160 124 still works; default 128)")
    g.add_argument("--width", type=int, default=32)
    g.add_argument("--depth", type=int, default=3)
    g.add_argument("--fusion", default="average",
                   help="rater fusion for candidates without :FUSION (default: %(default)s)")
    g.add_argument("--device", default="auto")
    g.add_argument("--foreground-oversampling", type=float, default=0.0, metavar="F",
                   help="share of training samples drawn from slices that hold the structure "
                        "(nnU-Net: 0.33; default 0: every slice once per epoch)")
    g.add_argument("--resume", action="store_true", help="continue the run in REPORT_DIR")
    j = parser.add_argument_group(
        "--train executors (docs/cluster.md)",
        "where the trainings run: serial (one after another in this process), local (each a "
        "submitit job on this machine) or slurm (one Slurm job array through submitit); every "
        "executor gives the same table and a run may be resumed with another one")
    j.add_argument("--executor", default="serial", choices=["serial", "local", "slurm"],
                   help="(default: %(default)s)")
    j.add_argument("--gpus-per-job", type=int, default=None, metavar="N",
                   help="GPUs of each job (default: 1 unless --device cpu; local: if a GPU "
                        "is visible)")
    j.add_argument("--cpus-per-job", type=int, default=None, metavar="N",
                   help="CPUs of each job, also its torch threads (Slurm --cpus-per-task)")
    j.add_argument("--timeout-min", type=int, default=None, metavar="MIN",
                   help="job time limit in minutes (default: Slurm 1440, local 10080); a job "
                        "that reaches it is requeued and continues from its checkpoint")
    j.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                   help="jobs running at once (Slurm: the array's %%N; local: default one per "
                        "GPU, or CPUs / --cpus-per-job)")
    j.add_argument("--slurm-partition", default=None, metavar="PARTITION")
    j.add_argument("--slurm-param", action="append", default=None, metavar="KEY=VALUE",
                   help="another submitit Slurm parameter, repeatable: account=lab, mem=32G, "
                        "qos=high, constraint=a100, 'setup=[\"module load cuda\"]'")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report/run")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON on stdout")


class _Bar:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self._last = ""

    def update(self, fraction: float, text: str) -> None:
        filled = int(round(self.width * fraction))
        elapsed = time.perf_counter() - self.t0
        eta = f" ETA {elapsed * (1 - fraction) / fraction:,.0f}s" if 0 < fraction < 1 else ""
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * fraction:5.1f}% {text}{eta}"
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last)))
        elif text != self._last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = text if not self.tty else line

    def note(self, text: str) -> None:
        """A line that stays (a failure, a resubmission), printed above the bar."""
        if self.tty:
            self.stream.write("\r" + " " * len(self._last) + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty and self._last:
            self.stream.write(self._last)
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from softseg import compare, protocol
    from softseg.errors import InputError

    out = Path(args.out)
    if args.train and args.models:
        raise InputError("give either model files or --train CANDIDATE..., not both")
    if not args.train and len(args.models) < 2:
        raise InputError(
            f"comparing needs at least two candidates; got {len(args.models)} model file(s). "
            "Give two or more MODEL files, or --train CANDIDATE CANDIDATE ...")
    if not Path(args.dataset).is_dir():
        raise InputError(f"{args.dataset}: no such dataset folder")
    bar = _Bar()
    executor = _executor(args)
    if args.train:
        if args.repeats is None:
            raise InputError("--train needs --repeats N (trainings per candidate)")
        config = protocol.ProtocolConfig(
            candidates=tuple(args.train), repeats=args.repeats, groups=args.groups,
            reference=args.reference or ("softseg" if not args.no_stats else None),
            stats=not args.no_stats, test_fraction=args.test_fraction,
            val_fraction=args.val_fraction, seed=args.seed, ground_truth=args.ground_truth,
            epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
            crop=_crop(args.crop), width=args.width, depth=args.depth, lr=args.lr,
            fusion=args.fusion, device=args.device,
            foreground_oversampling=args.foreground_oversampling)

        def on_progress(p: protocol.Progress) -> None:
            unit = f"{p.candidate} repeat {p.repeat}"
            if p.stage in ("failed", "resubmit", "attach"):
                what = {"failed": "failed", "resubmit": "run again",
                        "attach": "waiting for the job of the interrupted run"}[p.stage]
                bar.note(f"{unit}: {what} ({p.message})")
                return
            if p.stage == "jobs":
                bar.update(p.fraction, f"{p.done}/{p.total} done, {p.message}")
                return
            what = {"train": f"training, epoch {p.epoch}/{p.epochs}", "evaluate": "evaluating",
                    "finished": "done",
                    "submitted": f"submitted ({p.message})"}.get(p.stage, p.stage)
            bar.update(p.fraction, f"{p.done}/{p.total} {unit}: {what}")

        try:
            result = protocol.run_protocol(args.dataset, config, out=out, executor=executor,
                                           resume=args.resume, overwrite=args.overwrite,
                                           on_progress=on_progress)
        finally:
            bar.close()
        comparison, summary, report = result.comparison, result.summary, result.report
    else:
        if executor.kind != "serial" or args.resume:
            raise InputError(
                f"{'--resume' if args.resume else '--executor'} applies to --train (the MODEL "
                "form evaluates model files in this process)")
        if (out / "index.html").exists() and not args.overwrite:
            raise InputError(
                f"{out} already holds a report; add --overwrite or choose another --out")
        seen = []

        def on_subject(cand: str, subject: str) -> None:
            seen.append((cand, subject))
            bar.update(0.0, f"{subject}: predicting with {cand}")

        comparison, meta = protocol.evaluate_models(
            args.models, args.dataset, subjects=args.subjects,
            ground_truth_method=args.ground_truth, thresholds=args.threshold,
            on_subject=on_subject)
        bar.update(1.0, "writing the report")
        bar.close()
        summary = compare.summarize(comparison.rows, reference=args.reference)
        if args.reference and not args.no_stats:
            need = compare.min_wilcoxon_pairs(summary.alpha)
            n = len(meta["subjects"])
            if n < need:
                raise InputError(
                    f"{n} test subject(s) are too few for the Wilcoxon test against "
                    f"{args.reference!r} (needs at least {need}); drop --reference or add subjects")
        report = compare.write_report(
            out, comparison, summary=summary, title="SoftSeg model comparison",
            meta={"dataset": meta["dataset"], "subjects": ", ".join(meta["subjects"]),
                  "models": ", ".join(f"{k}: {v}" for k, v in meta["models"].items()),
                  "thresholds": ", ".join(f"{k}: {_thresholds(v)}"
                                          for k, v in meta["thresholds"].items()),
                  "ground truth": protocol.GROUND_TRUTHS[meta["ground_truth"]]},
            overwrite=True)

    if args.json:
        payload = {"report": str(report), **summary.as_dict()}
        if comparison.per_class:
            payload["classes"] = {
                c: compare.summarize(sub.rows, reference=summary.reference, alpha=summary.alpha,
                                     unit=summary.unit).as_dict()
                for c, sub in comparison.per_class.items()}
        print(json.dumps(compare.json_safe(payload)))
    else:
        _print_table(comparison, summary)
        print(f"report: {report}")
    return 0


def _executor(args: argparse.Namespace):
    """The :class:`softseg.protocol.ExecutorConfig` of the command line (checked at once)."""
    from softseg.protocol import ExecutorConfig, parse_slurm_param

    params = tuple(parse_slurm_param(t) for t in (args.slurm_param or ()))
    return ExecutorConfig(
        kind=args.executor, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
        timeout_min=args.timeout_min, array_parallelism=args.array_parallelism,
        slurm_partition=args.slurm_partition, slurm_params=params)


def _thresholds(value) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(f"{v:.2f}" for v in value)
    return f"{value:.2f}"


def _print_table(comparison, summary) -> None:
    from softseg import compare

    title = "multi-class summary" if comparison.per_class else ""
    if title:
        print(title)
    print(compare.text_table(comparison, summary, level=2 if comparison.per_class else 1))
    for cname, sub in comparison.per_class.items():
        print(f"\nclass: {cname}")
        sub_summary = compare.summarize(sub.rows, reference=summary.reference,
                                        alpha=summary.alpha, unit=summary.unit)
        print(compare.text_table(sub, sub_summary))
    if summary.reference:
        print(f"** p < {summary.alpha} (two-sided Wilcoxon signed-rank vs {summary.reference}, "
              f"paired by {summary.unit}; [k inf] = k infinite values, see the report)")
