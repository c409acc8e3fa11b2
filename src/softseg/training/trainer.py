"""The trainer: a small skeleton of hooks that yields typed progress events.

:class:`Trainer` runs one training of a candidate (:mod:`softseg.candidates`) on a dataset folder
(:mod:`softseg.data`) with a :class:`~softseg.config.TrainConfig`, and yields
:mod:`softseg.events` objects; the CLI prints them, the napari widget reads them from the CLI's
JSON lines, callbacks (:mod:`softseg.training.callbacks`) write the history CSV and TensorBoard
scalars. The shape is nnU-Net's ``run_training``: ``setup`` -> per epoch (``begin_epoch``,
``train_step`` per batch, ``validate``, ``end_epoch``) -> ``find_threshold`` -> ``finish``; a
variant overrides one hook, never the loop. Everything candidate-specific goes through the
candidate (``prepare_target``, ``activate``, ``compute_loss``): the loop has no candidate ``if``.

K classes (a dataset.json with K >= 2 classes, DESIGN decision 11): the candidate becomes its
K-class form (:meth:`softseg.candidates.Candidate.for_classes`: K+1 output channels, background
first), the slices hold the K foreground class maps, and validation, the threshold search and the
card are per class: ``val_dice`` / ``val_soft_dice`` are means over the classes, one optimal
threshold and one threshold-vs-Dice curve per class, plus the Dice of the argmax labels per class
(``validation.argmax_dice``). With one class everything is exactly the single-class run.

Fine-tuning (``init=``, ``softseg train --init``): the run starts from a model file's weights
(:mod:`softseg.training.finetune`: same candidate, network, classes, channels and spacing).

Recipe (SoftSeg paper, Table 1): Adam, cosine annealing of the learning rate over the maximum
number of epochs, random affine augmentation on the training device, validation every epoch
(candidate loss, Dice at 0.5 and soft Dice from :mod:`softseg.metrics`), early stopping on the
validation loss (:class:`~softseg.training.early_stopping.EarlyStopping`), the best model kept,
and at the end the binarisation threshold (0.05 .. 0.95, step 0.05) that maximises the mean Dice
over the training + validation subjects (:func:`softseg.metrics.optimal_threshold`), stored in the
model card (:mod:`softseg.card`) of the model file.

Outputs
-------
``out`` (``m.safetensors``) the model file, written at the end; ``m.history.csv`` one row per
epoch (rewritten after every epoch); ``m.checkpoint.safetensors`` while the run is unfinished;
``m.safetensors.lock`` while it runs (a second run on the same output is refused).

Cancel and resume
-----------------
``cancel`` (anything with ``is_set()``; the CLI sets it on SIGINT/SIGTERM) is checked after every
optimisation step. The run then writes a resumable checkpoint (:mod:`softseg.training.checkpoint`)
and ends with a ``done`` event whose reason is ``"cancelled"``. ``resume=True`` restores weights,
optimizer, scheduler, grad scaler, best model, early-stopping state and every random state, and
continues at the exact step, so a cancelled-and-resumed run gives the same weights as an
uninterrupted one on CPU. A checkpoint is also written after every epoch; it is deleted when the
model file is written. Resuming requires the same configuration except the maximum number of
epochs and the device. The checkpoint records the candidate's recipe, and a resumed run finishes
with it even if the registry has since given that name another recipe
(:func:`softseg.candidates.checkpoint_recipe`).

Reproducibility
---------------
Every random stream is seeded from ``config.seed`` (split, initialisation, dropout, shuffling,
augmentation, rater draws) and saved in checkpoints. On CPU the same seed gives bit-identical
weights for a fixed number of threads (tested). On CUDA, cuDNN autotuning and atomics may still
cause tiny run-to-run differences.

Multi-GPU
---------
Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) the trainer
initialises the process group (NCCL on CUDA, Gloo on CPU), wraps the model in
``DistributedDataParallel`` and shards each epoch with a ``DistributedSampler``; validation runs
on every rank (same data, same result), only rank 0 writes files and yields events.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from softseg import events as ev
from softseg.config import TrainConfig
from softseg.data import (
    DatasetInfo,
    Preprocessing,
    SliceSet,
    Split,
    build_slices,
    load_subject,
    resolve_spacing,
    scan_dataset,
    split_subjects,
)
from softseg.device import resolve_device
from softseg.errors import InputError
from softseg.io import check_writable
from softseg.metrics.thresholds import DEFAULT_THRESHOLDS
from softseg.training.callbacks import Callback, HistoryCSV, TensorBoardScalars, history_path, history_row
from softseg.training.checkpoint import check_resume_config, checkpoint_path, read_checkpoint, write_checkpoint
from softseg.training.early_stopping import EarlyStopping
from softseg.training.finetune import Parent, check_parent, load_parent
from softseg.training.lock import output_lock

__all__ = ["THRESHOLDS", "CancelFlag", "PreparedData", "Trainer", "fit", "prepare_data", "train"]

#: Thresholds searched at the end of training (paper: 0.05 to 0.95, step 0.05): the metrics
#: engine's grid (:data:`softseg.metrics.DEFAULT_THRESHOLDS`), as a tuple of floats.
THRESHOLDS = tuple(float(t) for t in DEFAULT_THRESHOLDS)


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return _Dist()
    return _Dist(
        rank=int(os.environ["RANK"]),
        world=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        enabled=True,
    )


# ============================================================================ data
@dataclass(frozen=True, eq=False)
class PreparedData:
    """Preprocessed slices of a run and where they came from."""

    info: DatasetInfo
    split: Split
    preprocessing: Preprocessing
    train: SliceSet
    val: SliceSet


def prepare_data(
    dataset: str | os.PathLike | DatasetInfo,
    config: TrainConfig,
    *,
    allow_preannotated: bool = False,
    spacing: Sequence[float | None] | None = None,
    check: Any = None,
) -> PreparedData:
    """Scan, split, load and preprocess a dataset for *config* (no network involved).

    Parameters
    ----------
    dataset : path-like or DatasetInfo
    config : TrainConfig
    allow_preannotated : bool, keyword-only
        Passed to :func:`softseg.data.scan_dataset` (uncorrected model pre-annotations).
    spacing : 3 x (float or None), keyword-only
        Target spacing (S, H, W) mm that overrides ``config.data.spacing`` (a fine-tuning uses
        its parent's).
    check : callable(DatasetInfo), keyword-only
        Called after scanning, before any image is read (a fine-tuning checks the classes and
        channels against its parent there).

    Raises
    ------
    InputError
        Any dataset problem (see :func:`softseg.data.scan_dataset`, :func:`load_subject`).
    """
    info = dataset if isinstance(dataset, DatasetInfo) else scan_dataset(
        dataset, allow_preannotated=allow_preannotated)
    if check is not None:
        check(info)
    d = config.data
    split = split_subjects(
        info.names,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        groups={s.name: s.group for s in info.subjects},
        test_group=d.test_group,
        seed=config.seed,
    )
    if not split.val:
        raise InputError("no validation subject; use a validation fraction > 0 (validation runs every epoch)")
    loaded = {name: load_subject(info.subject(name)) for name in split.train + split.val}
    spacing = resolve_spacing(d.spacing if spacing is None else spacing, [loaded[n] for n in split.train])
    prep = Preprocessing(spacing=spacing, crop=tuple(int(c) for c in d.crop), channels=info.channels)  # type: ignore[arg-type]
    train_set = build_slices([loaded[n] for n in split.train], prep, fusion=d.fusion)
    # validation: the fused label; with random rater sampling, the rater average
    val_fusion = "average" if d.fusion == "random" else d.fusion
    val_set = build_slices([loaded[n] for n in split.val], prep, fusion=val_fusion)
    return PreparedData(info=info, split=split, preprocessing=prep, train=train_set, val=val_set)


class _NonFiniteLoss(Exception):
    pass


# ============================================================================ trainer
class Trainer:
    """One training run as a skeleton of overridable hooks.

    ``run()`` drives: :meth:`setup` -> per epoch (:meth:`begin_epoch`, :meth:`train_step` per
    batch, :meth:`validate`, :meth:`end_epoch`) -> :meth:`find_threshold` -> :meth:`finish`; it
    yields :mod:`softseg.events` and hands each to the callbacks. Subclasses change one hook
    (e.g. another optimizer in :meth:`build_optimizer`) without touching the loop.

    Parameters
    ----------
    dataset : path-like or DatasetInfo
    config : TrainConfig
    out : path-like
        The model file to write (``.safetensors``); checked writable before any work.
    resume : bool
        Continue from ``checkpoint_path(out)``.
    overwrite : bool
        Replace an existing model file / history / discard an existing checkpoint.
    cancel : object with ``is_set()``, optional
        Checked after every step.
    data : PreparedData, optional
        Already prepared data (skips reading the dataset; used by benchmarks).
    callbacks : sequence of Callback
        Extra event consumers (the history CSV is always written).
    tensorboard : path-like, optional
        Write TensorBoard scalars into this folder.
    init : path-like, optional
        Start from this model file's weights (fine-tuning, :mod:`softseg.training.finetune`).
    allow_preannotated : bool
        Train on rater files a model pre-annotated and nobody corrected (refused by default).
    """

    def __init__(
        self,
        dataset: str | os.PathLike | DatasetInfo | None,
        config: TrainConfig,
        *,
        out: str | os.PathLike,
        resume: bool = False,
        overwrite: bool = False,
        cancel: CancelFlag | None = None,
        data: PreparedData | None = None,
        callbacks: Sequence[Callback] = (),
        tensorboard: str | os.PathLike | None = None,
        init: str | os.PathLike | None = None,
        allow_preannotated: bool = False,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a softseg.config.TrainConfig; got {type(config).__name__}")
        self.dataset = dataset
        self.config = config
        self.out = Path(out)
        self.ckpt = checkpoint_path(self.out)
        self.history_csv = history_path(self.out)
        self.tensorboard = None if tensorboard is None else Path(tensorboard)
        self.resume = resume
        #: one-line notes for the user (a resumed run that keeps its checkpoint's older recipe)
        self.notes: list[str] = []
        self.overwrite = overwrite
        self.cancel = cancel
        self.data = data
        self.callbacks: list[Callback] = [HistoryCSV(self.history_csv), *callbacks]
        if self.tensorboard is not None:
            self.callbacks.append(TensorBoardScalars(self.tensorboard))
        self.dist = _dist_from_env()
        self.init = None if init is None else Path(init)
        self.allow_preannotated = bool(allow_preannotated)
        self.parent: Parent | None = None

    # ------------------------------------------------------------------ setup hooks
    def check_paths(self) -> None:
        """Refuse unwritable outputs and inconsistent resume/overwrite requests up front."""
        if not self.out.name.endswith(".safetensors"):
            raise InputError(f"{self.out}: the model file must end in .safetensors")
        check_writable(self.out, overwrite=self.overwrite)
        if self.resume:
            if not self.ckpt.exists():
                raise InputError(f"{self.ckpt}: no checkpoint to resume from; start without --resume")
        elif self.ckpt.exists() and not self.overwrite:
            raise InputError(
                f"{self.ckpt}: a checkpoint of an interrupted run exists; pass --resume to continue it "
                "or --overwrite to start over"
            )
        check_writable(self.ckpt, overwrite=True)
        check_writable(self.history_csv, overwrite=self.overwrite or self.resume)
        if self.tensorboard is not None and self.tensorboard.exists() and not self.tensorboard.is_dir():
            raise InputError(f"{self.tensorboard}: --tensorboard must be a folder; this is a file")

    def build_model(self) -> torch.nn.Module:
        from softseg.models import UNet2D

        m = self.config.model
        net = UNet2D(
            len(self.prepared.preprocessing.channels), self.candidate.out_channels,
            depth=m.depth, width=m.width, dropout=m.dropout, batch_norm=m.batch_norm,
        )
        return self.candidate.init_network(net)  # K-class normalized ReLU: output bias (activations)

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.config.optim.lr)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.config.optim.epochs)

    def build_early_stopping(self) -> EarlyStopping:
        o = self.config.optim
        return EarlyStopping(o.patience, o.min_delta, monitor="val_loss")

    def setup(self) -> None:
        """Device, data, network, optimizer, random streams; restore a checkpoint on resume."""
        from softseg.candidates import get_candidate

        cfg = self.config
        candidate = get_candidate(cfg.candidate)
        if self.init is not None and not self.resume:
            self.parent = load_parent(self.init)
        self.device = resolve_device(cfg.device)
        if self.dist.enabled:
            import torch.distributed as tdist

            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.dist.local_rank)
                torch.cuda.set_device(self.device)
            if not tdist.is_initialized():
                tdist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.prepared = self.data if self.data is not None else self.prepare()
        self.n_classes = self.prepared.info.n_classes
        self.candidate = candidate.for_classes(self.n_classes)
        spacing = self.prepared.preprocessing.spacing[1:]
        #: in-plane pixel size (rows, cols) mm of the slices, for distance maps (None: pixels)
        self.pixel_spacing = None if any(s is None for s in spacing) else tuple(float(s) for s in spacing)
        torch.manual_seed(cfg.seed)
        self.net = self.build_model().to(self.device)
        if self.parent is not None:
            try:
                self.net.load_state_dict(self.parent.state_dict)
            except RuntimeError as exc:  # e.g. an old card's output channels: one line, no traceback
                detail = " ".join(str(exc).split())[:160]
                raise InputError(f"--init {self.parent.path.name}: its weights do not fit this run's network "
                                 f"({detail}); train a new model") from None
        self.model: torch.nn.Module = self.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = self.build_optimizer(self.net)
        self.scheduler = self.build_scheduler(self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.stopper = self.build_early_stopping()
        # random streams of the run (STYLE.md 8): augmentation on the device, rater draws in numpy
        # (ranks > 0 of a distributed run get their own augmentation/dropout streams)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 1 + 1_000_003 * self.dist.rank)
        if self.dist.rank > 0:
            torch.manual_seed(cfg.seed + 1_000_003 * self.dist.rank)
        self.rng = np.random.default_rng(cfg.seed + 2)
        self.train_images = torch.from_numpy(self.prepared.train.images)
        self.val_images = torch.from_numpy(self.prepared.val.images)
        self.val_labels = torch.from_numpy(self.prepared.val.label_array())
        self.steps = math.ceil(
            math.ceil(len(self.prepared.train) / self.dist.world) / cfg.optim.batch_size
        )
        # progress state (restored by resume)
        self.epoch = 1  # epoch in progress (1-based)
        self.step = 0  # steps done in it
        self.loss_sum = 0.0
        self.loss_count = 0
        self.choice: list[int] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.last_epoch_done = 0
        if self.resume:
            self.load_checkpoint()
            if self.dist.rank > 0:  # the checkpoint holds rank 0's streams; keep ranks apart
                salt = 1_000_003 * self.dist.rank + 7919 * self.epoch + self.step
                self.generator.manual_seed(cfg.seed + 1 + salt)
                torch.manual_seed(cfg.seed + salt)

    def prepare(self) -> PreparedData:
        """The run's data (:func:`prepare_data`); a fine-tuning checks and uses its parent's
        classes, channels, candidate, network and spacing first."""
        parent = self.parent
        if parent is None:
            return prepare_data(self.dataset, self.config, allow_preannotated=self.allow_preannotated)

        def check(info: DatasetInfo) -> None:
            check_parent(parent, config=self.config, classes=info.classes, channels=info.channels,
                         dataset=str(info.root))

        return prepare_data(self.dataset, self.config, allow_preannotated=self.allow_preannotated,
                            spacing=parent.card.preprocessing.spacing, check=check)

    @property
    def best(self) -> dict[str, Any]:
        """Metrics of the best epoch so far (``epoch``, ``val_loss``, ``val_dice``, ``val_soft_dice``)."""
        keys = ("epoch", "val_loss", "val_dice", "val_soft_dice")
        return {k: self.stopper.best.get(k) for k in keys}

    # ------------------------------------------------------------------ epoch hooks
    def indices(self, epoch: int) -> list[int]:
        """This rank's slice indices for *epoch*: every slice once, shuffled (a seeded
        DistributedSampler), or with ``data.foreground_oversampling`` f > 0, N draws with
        replacement of which each is a slice holding the structure with probability f and any
        slice otherwise (nnU-Net's foreground oversampling). Both depend only on the seed and the
        epoch, so a resumed run draws what the uninterrupted one would."""
        from torch.utils.data import DistributedSampler

        share = float(self.config.data.foreground_oversampling)
        if share > 0.0:
            return self._oversampled(epoch, share)
        sampler = DistributedSampler(
            range(len(self.prepared.train)), num_replicas=self.dist.world, rank=self.dist.rank,
            shuffle=True, seed=self.config.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def _oversampled(self, epoch: int, share: float) -> list[int]:
        n = len(self.prepared.train)
        if getattr(self, "_foreground", None) is None:
            self._foreground = np.flatnonzero(self.prepared.train.foreground_slices())
        fg = self._foreground
        world = self.dist.world
        total = -(-n // world) * world  # as DistributedSampler pads: equal shares per rank
        g = torch.Generator().manual_seed(self.config.seed + 7_919 * (epoch + 1))
        picks = torch.randint(0, n, (total,), generator=g)
        if fg.size:
            from_fg = torch.rand(total, generator=g) < share
            fg_picks = torch.from_numpy(fg)[torch.randint(0, fg.size, (total,), generator=g)]
            picks = torch.where(from_fg, fg_picks, picks)
        return picks[self.dist.rank::world].tolist()

    def begin_epoch(self) -> None:
        """Draw the rater of each subject for this epoch (random fusion; a no-op choice else)."""
        from softseg.fusion import sample_rater

        if self.step == 0:
            self.choice = [
                int(sample_rater(stack, rng=self.rng, return_index=True)[1]) if stack.shape[0] > 1 else 0
                for stack in self.prepared.train.labels
            ]
        self.epoch_labels = torch.from_numpy(self.prepared.train.label_array(self.choice))
        self.model.train()

    def loss(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The candidate's loss at the current epoch (distance maps, if any, on the device)."""
        return self.candidate.compute_loss(probs, target, epoch=self.epoch - 1, spacing=self.pixel_spacing)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimisation step on a batch; returns the loss."""
        from softseg.augment import AffineAugment, random_affine

        a = self.config.augment
        if a.enabled:
            images, labels = random_affine(
                images, labels,
                params=AffineAugment(rotation=a.rotation, translation=a.translation, scale=a.scale),
                generator=self.generator,
            )
        target = self.candidate.prepare_target(labels)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.model(images)
        loss = self.loss(self.candidate.activate(logits.float(), training=True), target)
        bad = not bool(torch.isfinite(loss.detach()))
        if self._any_rank(bad):
            raise _NonFiniteLoss()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    @torch.no_grad()
    def predict_slices(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Probabilities (N, C, H, W) on CPU of preprocessed slices, eval mode (C = the
        candidate's output channels: 1, or K+1 with background first)."""
        self.net.eval()
        bs = batch_size or max(1, 2 * self.config.optim.batch_size)
        out = []
        for i in range(0, images.shape[0], bs):
            x = images[i : i + bs].to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.net(x)
            out.append(self.candidate.activate(logits.float()).cpu())
        return torch.cat(out) if out else torch.zeros((0, self.candidate.out_channels) + tuple(images.shape[-2:]))

    def class_truth(self, labels: torch.Tensor) -> np.ndarray:
        """The binary reference of each class, (N, K, H, W) bool, of slice labels (N, K, H, W):
        ``label >= 0.5`` for one class, the most probable class for K
        (:func:`softseg.candidates.hard_target`)."""
        from softseg.candidates import hard_target

        return hard_target(labels, self.n_classes)[:, -self.n_classes:].numpy() > 0.5

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss (candidate loss on the prepared target), and from :mod:`softseg.metrics`
        the Dice of ``probability >= 0.5`` against the reference (:meth:`class_truth`) and the
        soft Dice, over all validation slices together; K classes: their means over the classes."""
        from softseg.metrics import dice

        probs = self.predict_slices(self.val_images)
        target = self.candidate.prepare_target(self.val_labels)
        loss = float(self.loss(probs, target))
        k = self.n_classes
        p, t = probs.numpy()[:, -k:], self.val_labels.numpy()
        if not np.isfinite(p).all():  # a diverged network: reported as NaN, never a metrics error
            return {"val_loss": loss, "val_dice": math.nan, "val_soft_dice": math.nan}
        truth = self.class_truth(self.val_labels)
        hard = [dice(p[:, c] >= 0.5, truth[:, c]) for c in range(k)]
        soft = [dice(p[:, c], t[:, c]) for c in range(k)]
        return {"val_loss": loss, "val_dice": float(np.mean(hard)), "val_soft_dice": float(np.mean(soft))}

    def end_epoch(self, metrics: Mapping[str, float]) -> bool:
        """Early stopping bookkeeping; returns True when this epoch is a new best (kept)."""
        improved = self.stopper.update(self.epoch, metrics)
        if improved:
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return improved

    # ------------------------------------------------------------------ the loop
    def run(self) -> Iterator[ev.Event]:
        """Run the training; yields events (on rank 0 only) and hands them to the callbacks."""
        main = self.dist.main
        lock = output_lock(self.out) if main else contextlib.nullcontext()
        try:
            if main:
                self.check_paths()
            with lock:
                if main:
                    self.check_paths()  # again: another run may have finished while we started
                try:
                    for event in self._guarded():
                        for cb in self.callbacks:
                            cb.on_event(self, event)
                        yield event
                finally:
                    for cb in self.callbacks:
                        cb.close(self)
        finally:
            if self.dist.enabled:
                import torch.distributed as tdist

                if tdist.is_initialized():
                    tdist.destroy_process_group()

    def _guarded(self) -> Iterator[ev.Event]:
        main = self.dist.main
        try:
            self.setup()
            yield from self._loop()
        except _NonFiniteLoss:
            ckpt = str(self.ckpt) if self.ckpt.exists() else None
            where = (
                f"the last good checkpoint (epoch {self.last_epoch_done}) is kept at {ckpt}; "
                f"lower --lr (now {self.config.optim.lr:g}) and --resume"
                if ckpt else "no checkpoint was written yet; lower --lr and start again"
            )
            if main:
                yield ev.ErrorEvent(
                    epoch=self.epoch, kind="nan", checkpoint=ckpt,
                    message=f"training loss became NaN/Inf at epoch {self.epoch} step {self.step + 1}; "
                    f"stopped. {where}",
                )
        except torch.cuda.OutOfMemoryError:
            bs = self.config.optim.batch_size
            if main:
                yield ev.ErrorEvent(
                    epoch=self.epoch, kind="oom", checkpoint=str(self.ckpt) if self.ckpt.exists() else None,
                    message=f"CUDA out of memory at batch size {bs}; lower the batch size "
                    f"(--batch-size {max(1, bs // 2)}) or the crop size",
                )

    def _loop(self) -> Iterator[ev.Event]:
        cfg, main = self.config, self.dist.main
        epochs = cfg.optim.epochs
        t0 = self._t0 = time.perf_counter()
        steps_done = 0
        reason = "completed"
        while self.epoch <= epochs:
            if self.stopper.should_stop:
                reason = "early_stopping"
                break
            self.begin_epoch()
            idx = self.indices(self.epoch)
            bs = cfg.optim.batch_size
            batches = [idx[i : i + bs] for i in range(0, len(idx), bs)]
            while self.step < len(batches):
                b = torch.as_tensor(batches[self.step])
                loss = self.train_step(
                    self.train_images[b].to(self.device, non_blocking=True),
                    self.epoch_labels[b].to(self.device, non_blocking=True),
                )
                self.step += 1
                steps_done += 1
                self.loss_sum += loss
                self.loss_count += 1
                remaining = (epochs - self.epoch) * self.steps + (len(batches) - self.step)
                elapsed = time.perf_counter() - t0
                if main:
                    yield ev.StepEvent(
                        epoch=self.epoch, epochs=epochs, step=self.step, steps=len(batches), loss=loss,
                        eta_s=round(elapsed / steps_done * remaining, 2),
                    )
                if self._cancelled():
                    if main:
                        self.save_checkpoint()
                        yield ev.CheckpointEvent(epoch=self.last_epoch_done, path=str(self.ckpt), reason="cancel")
                        yield self._done("cancelled", t0, path=None, threshold=None)
                    return
            metrics = self.validate()
            if main:
                yield ev.ValEvent(epoch=self.epoch, **metrics)
            improved = self.end_epoch(metrics)
            if main and improved:
                yield ev.BestEvent(epoch=self.epoch, val_loss=metrics["val_loss"], val_dice=metrics["val_dice"])
            self.scheduler.step()
            lr = float(self.optimizer.param_groups[0]["lr"])
            if main:
                yield ev.LrEvent(epoch=self.epoch, lr=lr)
            elapsed = time.perf_counter() - t0
            epoch_event = ev.EpochEvent(
                epoch=self.epoch, epochs=epochs, loss=self.loss_sum / max(1, self.loss_count), lr=lr,
                elapsed_s=round(self.elapsed_before + elapsed, 3),
                eta_s=round(elapsed / max(1, steps_done) * (epochs - self.epoch) * self.steps, 2),
                **metrics,
            )
            self.history.append(history_row(epoch_event))
            self.last_epoch_done = self.epoch
            self.epoch += 1
            self.step, self.loss_sum, self.loss_count = 0, 0.0, 0
            if main:
                yield epoch_event
                self.save_checkpoint()
                yield ev.CheckpointEvent(epoch=self.last_epoch_done, path=str(self.ckpt), reason="epoch")
            if self.epoch <= epochs and self._cancelled():
                if main:
                    yield self._done("cancelled", t0, path=None, threshold=None)
                return
        if self.stopper.should_stop and self.epoch <= epochs:
            reason = "early_stopping"
        if main:
            thresholds, curves = self.find_threshold()
            self.stop_reason = reason
            self.finish(thresholds, curves)
            # the done event carries the single class's threshold (K classes: see the card)
            threshold = thresholds[0] if len(thresholds) == 1 else None
            yield self._done(reason, t0, path=str(self.out), threshold=threshold)

    def _done(self, reason: str, t0: float, *, path: str | None, threshold: float | None) -> ev.DoneEvent:
        return ev.DoneEvent(
            epoch=self.last_epoch_done, epochs=self.config.optim.epochs, reason=reason,
            best_epoch=self.best["epoch"], best_val_loss=self.best["val_loss"], threshold=threshold,
            path=path, checkpoint=str(self.ckpt) if self.ckpt.exists() else None,
            elapsed_s=round(self.elapsed_before + time.perf_counter() - t0, 3),
        )

    def _any_rank(self, flag: bool) -> bool:
        if not self.dist.enabled:
            return flag
        import torch.distributed as tdist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _cancelled(self) -> bool:
        flag = bool(self.cancel is not None and self.cancel.is_set())
        return self._any_rank(flag)

    # ------------------------------------------------------------------ end of training
    @torch.no_grad()
    def find_threshold(self) -> tuple[tuple[float, ...], list[list[float]]]:
        """Optimal threshold of each class of the best model on the training + validation subjects.

        Per subject, the preprocessed (unaugmented) slices are predicted and each class compared
        with its reference (:meth:`class_truth`: the label binarised at 0.5; K classes: the most
        probable class). A class's threshold is the metrics engine's search
        (:func:`softseg.metrics.optimal_threshold`: highest mean Dice over subjects among
        :data:`THRESHOLDS`, the lowest among ties); the curve kept in the card is the mean over
        subjects of :func:`softseg.metrics.threshold_sweep`. K classes: the per-class Dice of the
        argmax labels (mean over subjects) is kept in :attr:`argmax_dice`.

        Returns
        -------
        thresholds : tuple of float, one per class
        curves : list of list of float, one Dice curve per class
        """
        from softseg.metrics import class_argmax, dice, optimal_threshold, threshold_sweep

        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        k = self.n_classes
        probs, truths, labels = [], [], []
        for part, images in ((self.prepared.train, self.train_images), (self.prepared.val, self.val_images)):
            full = self.predict_slices(images).numpy()
            t = self.class_truth(torch.from_numpy(part.label_array()))
            for start, stop in part.subject_slices:
                probs.append(full[start:stop, -k:])
                truths.append(t[start:stop])
                if k > 1:  # the argmax labels of the K+1 class maps (background first)
                    labels.append(class_argmax(np.moveaxis(full[start:stop], 1, 0))[0])
        thresholds = np.asarray(THRESHOLDS)
        best, curves = [], []
        for c in range(k):
            p_c, t_c = [p[:, c] for p in probs], [t[:, c] for t in truths]
            best.append(float(optimal_threshold(p_c, t_c, thresholds=thresholds)))
            curve = np.mean([threshold_sweep(p, t, thresholds=thresholds).dice for p, t in zip(p_c, t_c)], axis=0)
            curves.append([float(d) for d in curve])
        self.argmax_dice = tuple(
            float(np.mean([dice(lab == c + 1, t[:, c]) for lab, t in zip(labels, truths)])) for c in range(k)
        ) if k > 1 else ()
        return tuple(best), curves

    def build_card(self, thresholds: Sequence[float], curves: Sequence[Sequence[float]]) -> Any:
        """The model card of the finished run (:class:`softseg.card.ModelCard`)."""
        from softseg import card as mc

        c, p, cfg = self.candidate, self.prepared, self.config
        best = self.best
        return mc.ModelCard(
            classes=tuple(p.info.classes),
            class_keys=tuple(p.info.keys) if len(p.info.classes) > 1 else (),
            parent=None if self.parent is None else self.parent.record(),
            thresholds=tuple(float(t) for t in thresholds),
            channels=tuple(p.preprocessing.channels),
            preprocessing=mc.PreprocessingCard(
                spacing=p.preprocessing.spacing, crop=p.preprocessing.crop,
                normalization=p.preprocessing.normalization, orientation=p.preprocessing.orientation,
            ),
            candidate=mc.CandidateCard(
                name=c.name, title=c.title, description=c.description, soft_gt=bool(c.soft_gt),
                activation=mc.ActivationCard(name=c.activation, normalization=c.normalization, tau=c.tau),
                loss=c.loss, negative_slope=c.negative_slope,
                loss_params=dict(c.loss_params), boundary_schedule=c.boundary_schedule,
            ),
            architecture=mc.ArchitectureCard(name=type(self.net).__name__,
                                             config=mc.UNetConfig(**self.net.config)),
            raters=tuple(p.info.rater_ids),
            fusion=cfg.data.fusion,
            dataset=str(p.info.root.resolve()),
            split=mc.SplitCard(train=p.split.train, val=p.split.val, test=p.split.test),
            validation=mc.ValidationCard(
                best_epoch=best["epoch"], val_loss=_finite(best["val_loss"]),
                val_dice=_finite(best["val_dice"]), val_soft_dice=_finite(best["val_soft_dice"]),
                curves=tuple(mc.ThresholdCurve(thresholds=THRESHOLDS, dice=tuple(_finite(d) for d in curve))
                             for curve in curves),
                argmax_dice=tuple(_finite(d) for d in getattr(self, "argmax_dice", ())),
            ),
            history=tuple(mc.HistoryRow(**{k: _finite(v) if isinstance(v, float) else v for k, v in row.items()})
                          for row in self.history),
            training=mc.TrainingCard(
                config=cfg, epochs=self.last_epoch_done, max_epochs=cfg.optim.epochs,
                stop_reason=getattr(self, "stop_reason", None),
                seconds=round(self.elapsed_before + time.perf_counter() - self._t0, 3),
                seed=cfg.seed, device=str(self.device), world_size=self.dist.world,
                distributed=_backend() if self.dist.enabled else None,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            ),
            software=mc.software_versions(),
        )

    def finish(self, thresholds: Sequence[float], curves: Sequence[Sequence[float]]) -> Path:
        """Write the model file (best weights) and remove the checkpoint."""
        from softseg.modelfile import save_model

        path = save_model(self.out, self.net, self.build_card(thresholds, curves), overwrite=self.overwrite)
        if self.ckpt.exists():
            self.ckpt.unlink()
        return path

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write everything needed to resume at the current position (atomic)."""
        tensors: dict[str, torch.Tensor] = {}
        for k, v in self.net.state_dict().items():
            tensors[f"model/{k}"] = v
        if self.best_state is not None:
            for k, v in self.best_state.items():
                tensors[f"best/{k}"] = v
        opt = self.optimizer.state_dict()
        opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
        for pid, state in opt["state"].items():
            plain = {}
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{pid}/{key}"] = value
                else:
                    plain[key] = value
            opt_meta["state"][str(pid)] = plain
        tensors["rng/torch"] = torch.get_rng_state()
        tensors["rng/generator"] = self.generator.get_state()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        doc = {
            "config": self.config.as_dict(),
            # the recipe itself: a resumed run keeps it even if the registry renames it since
            "recipe": self.candidate.as_dict(),
            "epoch": self.epoch, "step": self.step,
            "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "choice": self.choice, **self.stopper.state_dict(),
            "history": self.history, "last_epoch_done": self.last_epoch_done,
            "numpy_rng": self.rng.bit_generator.state,
            "optimizer": opt_meta,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "split": self.prepared.split.as_dict(),
            "preprocessing": self.prepared.preprocessing.as_dict(),
            "elapsed_s": self.elapsed_before + time.perf_counter() - getattr(self, "_t0", time.perf_counter()),
            "parent": None if self.parent is None else self.parent.record().model_dump(mode="json"),
        }
        return write_checkpoint(self.ckpt, tensors, doc)

    def load_checkpoint(self) -> None:
        """Restore the state written by :meth:`save_checkpoint`."""
        tensors, doc = read_checkpoint(self.ckpt)
        check_resume_config(doc["config"], self.config.as_dict(), path=self.ckpt)
        from softseg.candidates import checkpoint_recipe

        now = self.candidate
        self.candidate = checkpoint_recipe(doc["config"]["candidate"], doc.get("recipe"), self.n_classes)
        if self.candidate.recipe_key() != now.recipe_key():
            self.notes.append(
                f"resuming with the recipe this run started with ({self.candidate.name}: "
                f"{self.candidate.loss} {dict(self.candidate.loss_params)}), not the one "
                f"{now.name!r} has in this version")
        if doc["split"] != self.prepared.split.as_dict():
            raise InputError(f"{self.ckpt}: the dataset's subjects changed since the checkpoint; start over")
        self.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
        self.best_state = best or None
        opt_meta = doc["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for pid, plain in opt_meta["state"].items():
            state[int(pid)] = dict(plain)
        for k, v in tensors.items():
            if k.startswith("optim/"):
                _, pid, key = k.split("/", 2)
                state.setdefault(int(pid), {})[key] = v.to(self.device)
        self.optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
        self.scheduler.load_state_dict(doc["scheduler"])
        if hasattr(self.scheduler, "T_max"):  # --epochs may change on resume: anneal to the new end
            self.scheduler.T_max = self.config.optim.epochs
        self.scaler.load_state_dict(doc["scaler"])
        torch.set_rng_state(tensors["rng/torch"])
        self.generator.set_state(tensors["rng/generator"])
        if self.device.type == "cuda" and "rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        self.rng.bit_generator.state = doc["numpy_rng"]
        self.epoch, self.step = int(doc["epoch"]), int(doc["step"])
        self.loss_sum, self.loss_count = float(doc["loss_sum"]), int(doc["loss_count"])
        self.choice = [int(c) for c in doc["choice"]]
        self.stopper.load_state_dict(doc)
        self.history = list(doc["history"])
        self.last_epoch_done = int(doc["last_epoch_done"])
        self.elapsed_before = float(doc["elapsed_s"])
        if doc.get("parent") is not None:  # a resumed fine-tuning records its parent too
            from softseg.card import ParentCard

            record = ParentCard(**doc["parent"])
            self.parent = _RecordedParent(record)


class _RecordedParent:
    """The parent of a resumed fine-tuning (its weights are in the checkpoint already)."""

    def __init__(self, record: Any) -> None:
        self._record = record

    def record(self) -> Any:
        return self._record


def _finite(x: Any) -> float | None:
    """A finite float, or None (NaN/Inf: strict JSON in the card)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _backend() -> str | None:
    import torch.distributed as tdist

    return str(tdist.get_backend()) if tdist.is_available() and tdist.is_initialized() else None


# ============================================================================ entry points
def train(
    dataset: str | os.PathLike | DatasetInfo,
    config: TrainConfig,
    *,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    cancel: CancelFlag | None = None,
    tensorboard: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    allow_preannotated: bool = False,
) -> Iterator[ev.Event]:
    """Train a model and yield progress events (see :class:`Trainer`).

    Parameters
    ----------
    dataset : path-like or DatasetInfo
        Dataset folder (:mod:`softseg.data` layout).
    config : TrainConfig
    out : path-like
        Model file (``.safetensors``) written at the end.
    resume, overwrite, cancel, tensorboard, init, allow_preannotated
        See :class:`Trainer`.

    Yields
    ------
    softseg.events.Event
        ``step``, ``val``, ``best``, ``lr``, ``epoch``, ``checkpoint`` ..., then ``done`` or
        ``error`` (the last event).
    """
    return Trainer(dataset, config, out=out, resume=resume, overwrite=overwrite, cancel=cancel,
                   tensorboard=tensorboard, init=init, allow_preannotated=allow_preannotated).run()


def fit(
    dataset: str | os.PathLike | DatasetInfo,
    config: TrainConfig,
    *,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    cancel: CancelFlag | None = None,
    on_event: Any = None,
    tensorboard: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    allow_preannotated: bool = False,
) -> ev.DoneEvent:
    """Run :func:`train` to the end; returns the ``done`` event.

    Raises
    ------
    InputError
        With the ``error`` event's one-line message (NaN loss, out of memory).
    """
    done = None
    for event in train(dataset, config, out=out, resume=resume, overwrite=overwrite, cancel=cancel,
                       tensorboard=tensorboard, init=init, allow_preannotated=allow_preannotated):
        if on_event is not None:
            on_event(event)
        if isinstance(event, ev.ErrorEvent):
            raise InputError(event.message)
        if isinstance(event, ev.DoneEvent):
            done = event
    if done is None:  # a non-zero rank of a distributed run yields nothing
        raise RuntimeError("training ended without a done event (not rank 0?)")
    return done
