"""Settings and results of the repeated-training protocol (:func:`softseg.protocol.run_protocol`).

:class:`ProtocolConfig` holds what a run is (stored in ``run_state.json``; a run resumes only
with the same settings), :class:`Progress` what the caller is told while it runs,
:class:`ProtocolResult` what it returns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from softseg import compare
from softseg.errors import InputError
from softseg.protocol.reference import GROUND_TRUTHS, parse_candidate

__all__ = ["Progress", "ProtocolConfig", "ProtocolResult"]


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of a repeated-training comparison (stored in ``run_state.json``).

    Attributes
    ----------
    candidates : tuple of str
        ``NAME`` or ``NAME:FUSION`` (fusion of the raters for training, e.g. ``softseg:staple``;
        ``NAME:ensemble``: one model per rater, predictions averaged — a rater ensemble,
        :mod:`softseg.protocol.ensemble`).
    repeats : int
        Trainings per candidate (one split each).
    groups : bool
        Leave-one-group-out splits cycling through the ``dataset.json`` groups (SCGM protocol).
    reference : str or None
        Candidate the Wilcoxon test compares every other one with.
    stats : bool
        Run the Wilcoxon test (needs ``repeats >= min_wilcoxon_pairs(alpha)``).
    alpha : float
    test_fraction, val_fraction : float
        Random splits (``groups=False``).
    seed : int
        Repeat *k* uses seed ``seed + k`` (split, initialisation, augmentation).
    ground_truth : str
        Key of :data:`GROUND_TRUTHS` for evaluation.
    epochs, patience, batch_size, crop, width, depth, lr, fusion, device
        Training settings (:class:`softseg.config.TrainConfig`); ``fusion`` is the default for
        candidates without ``:FUSION``.
    foreground_oversampling : float in [0, 1]
        :attr:`softseg.config.DataConfig.foreground_oversampling` of every training (default 0:
        every slice once per epoch).
    """

    candidates: tuple[str, ...]
    repeats: int
    groups: bool = False
    reference: str | None = "softseg"
    stats: bool = True
    alpha: float = 0.05
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    ground_truth: str = "staple"
    epochs: int = 200
    patience: int = 50
    batch_size: int = 8
    crop: tuple[int, int] = (128, 128)
    width: int = 32
    depth: int = 3
    lr: float = 1e-3
    fusion: str = "average"
    device: str = "auto"
    foreground_oversampling: float = 0.0

    def __post_init__(self) -> None:
        f = self.foreground_oversampling
        if not (isinstance(f, (int, float)) and -1e-9 <= f <= 1.0 + 1e-9):
            raise InputError(f"--foreground-oversampling must be a share in [0, 1] (nnU-Net uses "
                             f"0.33); got {f}")
        object.__setattr__(self, "foreground_oversampling", min(max(float(f), 0.0), 1.0))
        if len(self.candidates) < 2:
            raise InputError(
                f"comparing needs at least two candidates; got {len(self.candidates)} "
                f"({', '.join(self.candidates) or 'none'})")
        # a retired name (softseg.candidates.RENAMED) is its recipe's name now: one unit each
        given = tuple(self.candidates)
        object.__setattr__(self, "candidates", tuple(_current_name(c) for c in given))
        if self.reference is not None:
            object.__setattr__(self, "reference", _current_name(self.reference))
        if len(set(self.candidates)) != len(self.candidates):
            renamed = [f"{g} is another name of {c}" for g, c in zip(given, self.candidates) if g != c]
            raise InputError(f"a candidate is listed twice: {', '.join(given)}"
                             + (f" ({'; '.join(renamed)})" if renamed else ""))
        for spec in self.candidates:
            parse_candidate(spec)
        if self.ground_truth not in GROUND_TRUTHS:
            raise InputError(f"unknown ground truth {self.ground_truth!r}; choose one of "
                             f"{', '.join(GROUND_TRUTHS)}")
        if int(self.repeats) != self.repeats or self.repeats < 1:
            raise InputError(f"--repeats must be a positive integer; got {self.repeats}")
        if self.stats:
            need = compare.min_wilcoxon_pairs(self.alpha)
            if self.repeats < need:
                raise InputError(
                    f"--repeats {self.repeats} is too few for the Wilcoxon test: with n paired "
                    f"repeats the smallest two-sided exact p-value is 2/2^n, which is below "
                    f"{self.alpha} only from n = {need} (n = {need - 1} gives "
                    f"{2 / 2 ** (need - 1):.4g}); use --repeats {need} or more, or --no-stats")
            if self.reference is None:
                raise InputError("the Wilcoxon test needs a reference candidate (--reference)")
            if self.reference not in self.candidates:
                raise InputError(
                    f"reference candidate {self.reference!r} is not among the candidates "
                    f"({', '.join(self.candidates)}); pick one of them with --reference")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = list(self.candidates)
        d["crop"] = list(self.crop)
        if not self.foreground_oversampling:  # runs recorded before the option resume as before
            del d["foreground_oversampling"]
        return d

    def fusion_of(self, candidate: str) -> str:
        """The candidate's fusion: its ``:FUSION``, else :attr:`fusion`; ``ensemble`` for a rater
        ensemble (:mod:`softseg.protocol.ensemble`)."""
        return parse_candidate(candidate)[1] or self.fusion

    def train_config(self, candidate: str, repeat: int, *, test_group: str | None) -> Any:
        """The :class:`softseg.config.TrainConfig` of one repeat of ``candidate`` (for a rater
        ensemble: of each member, whose one rater is its target)."""
        from softseg.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
        from softseg.protocol.ensemble import ENSEMBLE, MEMBER_FUSION

        name, _ = parse_candidate(candidate)
        fusion = self.fusion_of(candidate)
        return TrainConfig(
            candidate=name,
            seed=self.seed + repeat,
            device=self.device,
            data=DataConfig(crop=tuple(self.crop),
                            fusion=MEMBER_FUSION if fusion == ENSEMBLE else fusion,
                            val_fraction=self.val_fraction,
                            test_fraction=0.0 if test_group else self.test_fraction,
                            test_group=test_group,
                            foreground_oversampling=self.foreground_oversampling),
            model=ModelConfig(depth=self.depth, width=self.width),
            optim=OptimConfig(lr=self.lr, batch_size=self.batch_size, epochs=self.epochs,
                              patience=self.patience),
        )


@dataclass(frozen=True)
class Progress:
    """One progress report of :func:`run_protocol`.

    ``done``/``total`` count (candidate, repeat) units. Stages:

    * serial executor: ``"train"`` (``epoch`` of ``epochs``), ``"evaluate"``, ``"finished"``;
    * job executors: ``"submitted"`` (``message``: the job id), ``"jobs"`` (a summary of the
      jobs in flight: ``running`` is the sum of their fractions, ``message`` says which units
      run), ``"finished"``, ``"failed"`` (``message``: why, and where the log is);
    * both: ``"resubmit"`` (a unit whose earlier job failed or died is run again; ``message``:
      what happened to it) and ``"attach"`` (a job of an interrupted run still runs: waited for).

    ``fraction`` also counts the epochs of the units in progress, so a progress bar moves
    smoothly over the whole run.
    """

    done: int
    total: int
    candidate: str
    repeat: int
    stage: str
    epoch: int = 0
    epochs: int = 0
    message: str = ""
    running: float = 0.0

    @property
    def fraction(self) -> float:
        if not self.total:
            return 1.0
        if self.stage == "jobs":
            within = self.running
        elif self.stage == "evaluate":
            within = 0.9  # training counts for 90% of a unit, evaluation for the rest
        elif self.stage == "train" and self.epochs:
            within = 0.9 * self.epoch / self.epochs
        else:
            within = 0.0
        return min(1.0, (self.done + within) / self.total)


@dataclass(frozen=True, eq=False)
class ProtocolResult:
    """Result of :func:`run_protocol`: the per-repeat comparison, its summary, the report, and the
    run state (``run_state.json``: settings, finished units, jobs, failures)."""

    comparison: compare.Comparison
    summary: compare.Summary
    report: Path
    state: dict[str, Any] = field(default_factory=dict)


def _current_name(spec: str) -> str:
    """``NAME[:FUSION]`` with a retired NAME (:data:`softseg.candidates.RENAMED`) replaced by
    its recipe's name now; anything else unchanged (checked later)."""
    from softseg.candidates import RENAMED

    if not isinstance(spec, str):
        return spec
    name, sep, fusion = spec.partition(":")
    return RENAMED[name][0] + sep + fusion if name in RENAMED else spec
