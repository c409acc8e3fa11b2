"""The trainer: a small skeleton of hooks that yields typed progress events.

:func:`train` runs one training of a candidate (:mod:`softseg.candidates`) on a dataset folder
(:mod:`softseg.data`) and yields :mod:`softseg.events` objects; the CLI prints them, the napari
widget reads them from the CLI's JSON lines. Everything candidate-specific goes through the
candidate's own methods (``prepare_target``, ``activate``, ``compute_loss``); the loop has no
candidate ``if``.

Recipe (SoftSeg paper, Table 1): Adam, cosine annealing of the learning rate over the maximum
number of epochs, random affine augmentation on the training device, validation every epoch
(loss, Dice at 0.5, soft Dice), early stopping on the validation loss (``patience`` epochs without
an improvement larger than ``min_delta``), the best model kept, and at the end the binarisation
threshold (0.05 .. 0.95, step 0.05) that maximises Dice on the training + validation slices
(:func:`softseg.metrics.optimal_threshold`), stored in the model file (:mod:`softseg.modelfile`).

Cancel and resume
-----------------
``cancel`` (anything with ``is_set()``, e.g. :class:`threading.Event`; the CLI sets it on
SIGINT/SIGTERM) is checked after every optimisation step. The run then writes a resumable
checkpoint ``<model>.checkpoint.safetensors`` (atomically) and ends with a ``done`` event whose
reason is ``"cancelled"``. ``resume=True`` restores weights, optimizer, scheduler, grad scaler,
best model, early-stopping counters and every random state, and continues at the exact step, so a
cancelled-and-resumed run gives the same weights as an uninterrupted one on CPU. Checkpoints are
safetensors (tensors) with a JSON document in the header (everything else); nothing is pickled.
A checkpoint is also written after every epoch; it is deleted when the model file is written.
Resuming requires the same configuration except the maximum number of epochs, which may change
(the cosine schedule then anneals towards the new maximum) and the device.

Reproducibility
---------------
Every random stream is seeded from ``config.seed`` (split, initialisation, dropout, shuffling,
augmentation, rater draws) and saved in checkpoints. On CPU the same seed gives bit-identical
weights for a fixed number of threads (tested); ``torch.use_deterministic_algorithms`` is not
switched on because it slowed CPU training by ~15-20% here without changing the CPU result. On
CUDA, cuDNN autotuning and atomics may still cause tiny run-to-run differences.

Multi-GPU
---------
Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) the trainer
initialises the process group (NCCL on CUDA, Gloo on CPU), wraps the model in
``DistributedDataParallel`` and shards each epoch with a ``DistributedSampler``; validation runs
on every rank (same data, same result), only rank 0 writes files and yields events.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from softseg import __version__
from softseg import events as ev
from softseg.data import (
    FUSIONS,
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
from softseg.errors import InputError
from softseg.io import atomic_path, check_writable

__all__ = [
    "AugmentConfig",
    "CHECKPOINT_VERSION",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PreparedData",
    "THRESHOLDS",
    "TrainConfig",
    "Trainer",
    "checkpoint_path",
    "fit",
    "prepare_data",
    "resolve_device",
    "train",
]

CHECKPOINT_VERSION = 1
_CKPT_KEY = "softseg_checkpoint"
#: Thresholds searched at the end of training (paper: 0.05 to 0.95, step 0.05).
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


# ============================================================================ configuration
@dataclass(frozen=True)
class DataConfig:
    """Data of a run.

    Attributes
    ----------
    spacing : tuple of 3 (float or None), optional
        Target voxel size (mm) along (slice, rows, cols) = display axes (S, P, L); ``None`` for
        an axis keeps it native. Default: the median in-plane spacing of the training subjects,
        slices native.
    crop : (rows, cols)
        Centre crop/pad of training slices (paper: 128x128 spinal cord, 160x124 MS).
    fusion : {'staple', 'average', 'majority', 'random'}
    val_fraction, test_fraction : float
        Subject fractions (:func:`softseg.data.split_subjects`).
    test_group : str, optional
        Leave this ``dataset.json`` group out as the test set.
    """

    spacing: tuple[float | None, float | None, float | None] | None = None
    crop: tuple[int, int] = (128, 128)
    fusion: str = "average"
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    test_group: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """U-Net architecture (:class:`softseg.models.UNet2D`); paper: depth 3 or 4, dropout 0.3."""

    depth: int = 3
    width: int = 32
    dropout: float = 0.3
    batch_norm: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation: Adam + cosine annealing over ``epochs``; early stopping on validation loss."""

    lr: float = 1e-3
    batch_size: int = 8
    epochs: int = 200
    patience: int = 50
    min_delta: float = 0.001


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine augmentation (:func:`softseg.augment.random_affine`)."""

    enabled: bool = True
    rotation: float = 20.0
    translation: float = 0.03
    scale: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the model file).

    Build from a nested dict with :meth:`from_dict` (unknown keys are an error) or directly,
    e.g. ``TrainConfig(candidate="softseg", optim=OptimConfig(epochs=2))``.

    Attributes
    ----------
    candidate : str
        A :data:`softseg.candidates.CANDIDATES` name.
    seed : int
        Seeds splits, initialisation, dropout, shuffling, augmentation and rater sampling.
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then CPU) or a torch device string.
    amp : bool
        Mixed precision (``torch.autocast`` + ``GradScaler``), used on CUDA only.
    data, model, optim, augment
        Nested configurations.
    """

    candidate: str = "softseg"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.data.fusion not in FUSIONS:
            raise InputError(f"unknown fusion {self.data.fusion!r}; choose one of {', '.join(FUSIONS)}")
        o = self.optim
        if not (o.lr > 0 and math.isfinite(o.lr)):
            raise InputError(f"learning rate must be a positive number; got {o.lr}")
        for name, value, low in (("batch size", o.batch_size, 1), ("epochs", o.epochs, 1), ("patience", o.patience, 1)):
            if int(value) != value or value < low:
                raise InputError(f"{name} must be an integer >= {low}; got {value}")
        if o.min_delta < 0:
            raise InputError(f"min_delta must be >= 0; got {o.min_delta}")
        if len(self.data.crop) != 2 or min(self.data.crop) < 8:
            raise InputError(f"crop must be two sizes >= 8 (rows, cols); got {list(self.data.crop)}")

    def as_dict(self) -> dict[str, Any]:
        """Nested JSON-able dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Parse a nested dict; unknown keys raise :class:`InputError` naming the valid ones."""
        return _from_dict(cls, data, "config")


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected an object; got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value, hint = data[name], hints[name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# ============================================================================ device
def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS, else CPU; other names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {name!r} requested but Apple MPS is not available; use --device cpu or auto")
    return device


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


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


# ============================================================================ data
@dataclass(frozen=True, eq=False)
class PreparedData:
    """Preprocessed slices of a run and where they came from."""

    info: DatasetInfo
    split: Split
    preprocessing: Preprocessing
    train: SliceSet
    val: SliceSet


def prepare_data(dataset: str | os.PathLike | DatasetInfo, config: TrainConfig) -> PreparedData:
    """Scan, split, load and preprocess a dataset for *config* (no network involved).

    Raises
    ------
    InputError
        Any dataset problem (see :func:`softseg.data.scan_dataset`, :func:`load_subject`).
    """
    info = dataset if isinstance(dataset, DatasetInfo) else scan_dataset(dataset)
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
    spacing = resolve_spacing(d.spacing, [loaded[n] for n in split.train])
    prep = Preprocessing(spacing=spacing, crop=tuple(int(c) for c in d.crop), channels=info.channels)  # type: ignore[arg-type]
    train_set = build_slices([loaded[n] for n in split.train], prep, fusion=d.fusion)
    # validation: the fused label; with random rater sampling, the rater average
    val_fusion = "average" if d.fusion == "random" else d.fusion
    val_set = build_slices([loaded[n] for n in split.val], prep, fusion=val_fusion)
    return PreparedData(info=info, split=split, preprocessing=prep, train=train_set, val=val_set)


def checkpoint_path(out: str | os.PathLike) -> Path:
    """The resumable checkpoint that belongs to a model file: ``m.safetensors`` ->
    ``m.checkpoint.safetensors``."""
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return out.with_name(stem + ".checkpoint.safetensors")


class _NonFiniteLoss(Exception):
    pass


# ============================================================================ trainer
class Trainer:
    """One training run as a skeleton of overridable hooks.

    ``run()`` drives: :meth:`setup` -> per epoch (:meth:`begin_epoch`, :meth:`train_step` per
    batch, :meth:`validate`, :meth:`end_epoch`) -> :meth:`finish`; it yields
    :mod:`softseg.events`. Subclasses change one hook (e.g. another optimizer in
    :meth:`build_optimizer`) without touching the loop.

    Parameters
    ----------
    dataset : path-like or DatasetInfo
    config : TrainConfig
    out : path-like
        The model file to write (``.safetensors``); checked writable before any work.
    resume : bool
        Continue from ``checkpoint_path(out)``.
    overwrite : bool
        Replace an existing model file / discard an existing checkpoint.
    cancel : object with ``is_set()``, optional
        Checked after every step.
    data : PreparedData, optional
        Already prepared data (skips reading the dataset; used by benchmarks).
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
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.out = Path(out)
        self.ckpt = checkpoint_path(self.out)
        self.resume = resume
        self.overwrite = overwrite
        self.cancel = cancel
        self.data = data
        self.dist = _dist_from_env()

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

    def build_model(self) -> torch.nn.Module:
        from softseg.models import UNet2D

        m = self.config.model
        return UNet2D(
            len(self.prepared.preprocessing.channels), 1,
            depth=m.depth, width=m.width, dropout=m.dropout, batch_norm=m.batch_norm,
        )

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.config.optim.lr)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.config.optim.epochs)

    def setup(self) -> None:
        from softseg.candidates import get_candidate

        cfg = self.config
        self.candidate = get_candidate(cfg.candidate)
        if self.dist.main:
            self.check_paths()
        self.device = resolve_device(cfg.device)
        if self.dist.enabled:
            import torch.distributed as tdist

            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.dist.local_rank)
                torch.cuda.set_device(self.device)
            if not tdist.is_initialized():
                tdist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.prepared = self.data if self.data is not None else prepare_data(self.dataset, cfg)
        torch.manual_seed(cfg.seed)
        self.net = self.build_model().to(self.device)
        self.model: torch.nn.Module = self.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = self.build_optimizer(self.net)
        self.scheduler = self.build_scheduler(self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
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
        self.best: dict[str, Any] = {"epoch": None, "val_loss": None, "val_dice": None, "val_soft_dice": None}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.last_epoch_done = 0
        if self.resume:
            self.load_checkpoint()
            if self.dist.rank > 0:  # the checkpoint holds rank 0's streams; keep ranks apart
                salt = 1_000_003 * self.dist.rank + 7919 * self.epoch + self.step
                self.generator.manual_seed(cfg.seed + 1 + salt)
                torch.manual_seed(cfg.seed + salt)

    # ------------------------------------------------------------------ epoch hooks
    def indices(self, epoch: int) -> list[int]:
        """This rank's shuffled slice indices for *epoch* (a seeded DistributedSampler)."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(len(self.prepared.train)), num_replicas=self.dist.world, rank=self.dist.rank,
            shuffle=True, seed=self.config.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

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

    def distance_map(self, target: torch.Tensor) -> torch.Tensor:
        """Signed distance maps of a prepared target batch (N, 1, H, W) for boundary losses."""
        from softseg.losses import signed_distance_map

        spacing = [s for s in self.prepared.preprocessing.spacing[1:]]
        spacing = None if any(s is None for s in spacing) else spacing
        arr = signed_distance_map(target.detach().float().cpu().numpy(), spacing=spacing, ndim=2)
        return torch.from_numpy(arr).to(target.device)

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
        dist_map = self.distance_map(target) if self.candidate.needs_distance_map else None
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.model(images)
        probs = self.candidate.activate(logits.float())
        loss = self.candidate.compute_loss(probs, target, epoch=self.epoch - 1, distance_map=dist_map)
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
        """Probabilities (N, 1, H, W) on CPU of preprocessed slices, eval mode."""
        self.net.eval()
        bs = batch_size or max(1, 2 * self.config.optim.batch_size)
        out = []
        for i in range(0, images.shape[0], bs):
            x = images[i : i + bs].to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.net(x)
            out.append(self.candidate.activate(logits.float()).cpu())
        return torch.cat(out) if out else torch.zeros((0, 1) + tuple(images.shape[-2:]))

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss (candidate loss on the prepared target), Dice at 0.5 and soft Dice."""
        probs = self.predict_slices(self.val_images)
        target = self.candidate.prepare_target(self.val_labels)
        dist_map = self.distance_map(target) if self.candidate.needs_distance_map else None
        loss = float(self.candidate.compute_loss(probs, target, epoch=self.epoch - 1, distance_map=dist_map))
        truth = self.val_labels
        hard_p, hard_t = probs >= 0.5, truth >= 0.5
        inter = float((hard_p & hard_t).sum())
        denom = float(hard_p.sum() + hard_t.sum())
        dice = 1.0 if denom == 0 else 2 * inter / denom
        s_denom = float(probs.sum() + truth.sum())
        soft = 1.0 if s_denom == 0 else 2 * float((probs * truth).sum()) / s_denom
        return {"val_loss": loss, "val_dice": dice, "val_soft_dice": soft}

    def end_epoch(self, metrics: Mapping[str, float]) -> bool:
        """Early stopping bookkeeping; returns True when this epoch is a new best."""
        best = self.best["val_loss"]
        improved = best is None or metrics["val_loss"] < best - self.config.optim.min_delta
        if improved:
            self.best = {"epoch": self.epoch, **{k: float(v) for k, v in metrics.items()}}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved

    # ------------------------------------------------------------------ the loop
    def run(self) -> Iterator[ev.Event]:
        """Run the training; yields events (on rank 0 only)."""
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
        finally:
            if self.dist.enabled:
                import torch.distributed as tdist

                if tdist.is_initialized():
                    tdist.destroy_process_group()

    def _loop(self) -> Iterator[ev.Event]:
        cfg, main = self.config, self.dist.main
        epochs = cfg.optim.epochs
        t0 = self._t0 = time.perf_counter()
        steps_done = 0
        reason = "completed"
        while self.epoch <= epochs:
            if self.bad_epochs >= cfg.optim.patience:
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
            mean_loss = self.loss_sum / max(1, self.loss_count)
            self.history.append({"epoch": self.epoch, "loss": mean_loss, **metrics, "lr": lr})
            elapsed = time.perf_counter() - t0
            done_epochs = self.epoch
            self.last_epoch_done = self.epoch
            self.epoch += 1
            self.step, self.loss_sum, self.loss_count = 0, 0.0, 0
            if main:
                yield ev.EpochEvent(
                    epoch=done_epochs, epochs=epochs, loss=mean_loss, lr=lr,
                    elapsed_s=round(self.elapsed_before + elapsed, 3),
                    eta_s=round(elapsed / max(1, steps_done) * (epochs - done_epochs) * self.steps, 2),
                    **metrics,
                )
                self.save_checkpoint()
                yield ev.CheckpointEvent(epoch=done_epochs, path=str(self.ckpt), reason="epoch")
            if self.epoch <= epochs and self._cancelled():
                if main:
                    yield self._done("cancelled", t0, path=None, threshold=None)
                return
        if self.bad_epochs >= cfg.optim.patience and self.epoch <= epochs:
            reason = "early_stopping"
        if main:
            threshold, sweep = self.find_threshold()
            self.finish(threshold, sweep)
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
    def find_threshold(self) -> tuple[float, list[list[float]]]:
        """Optimal threshold of the best model on the training + validation subjects.

        Dice of the binarised prediction against the label binarised at 0.5 is computed per
        subject on the preprocessed (unaugmented) slices and averaged over subjects
        (:func:`softseg.metrics.optimal_threshold`); the sweep (threshold, mean Dice) is kept.
        """
        from softseg.metrics import optimal_threshold, threshold_sweep

        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        probs, truths = [], []
        for part, images in ((self.prepared.train, self.train_images), (self.prepared.val, self.val_images)):
            p = self.predict_slices(images).numpy()[:, 0]
            t = part.label_array()[:, 0] >= 0.5
            for start, stop in part.subject_slices:
                probs.append(p[start:stop])
                truths.append(t[start:stop])
        thresholds = np.asarray(THRESHOLDS)
        threshold = optimal_threshold(probs, truths, thresholds=thresholds)
        mean = np.mean([threshold_sweep(p, t, thresholds=thresholds).dice for p, t in zip(probs, truths)], axis=0)
        sweep = [[float(a), float(b)] for a, b in zip(thresholds, mean)]
        return float(threshold), sweep

    def metadata(self, threshold: float, sweep: list[list[float]]) -> dict[str, Any]:
        """The model file's metadata (see :mod:`softseg.modelfile`)."""
        c = self.candidate
        p = self.prepared
        return {
            "candidate": {
                "name": c.name, "title": c.title, "soft_gt": bool(c.soft_gt), "activation": c.activation,
                "loss": c.loss, "loss_params": dict(c.loss_params or {}),
            },
            "preprocessing": p.preprocessing.as_dict(),
            "threshold": float(threshold),
            "validation": {
                "best_epoch": self.best["epoch"], "val_loss": self.best["val_loss"],
                "val_dice": self.best["val_dice"], "val_soft_dice": self.best["val_soft_dice"],
                "threshold_sweep": sweep, "history": self.history,
            },
            "provenance": {
                "dataset": str(p.info.root.resolve()),
                "subjects": p.split.as_dict(),
                "raters": list(p.info.rater_ids),
                "fusion": self.config.data.fusion,
                "classes": list(p.info.classes),
                "seed": self.config.seed,
                "epochs": self.last_epoch_done,
                "max_epochs": self.config.optim.epochs,
                "config": self.config.as_dict(),
                "device": str(self.device),
                "world_size": self.dist.world,
                "distributed": _backend() if self.dist.enabled else None,
                "softseg_version": __version__,
                "torch_version": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }

    def finish(self, threshold: float, sweep: list[list[float]]) -> Path:
        """Write the model file (best weights) and remove the checkpoint."""
        from softseg.modelfile import save_model

        meta = _finite(self.metadata(threshold, sweep))
        path = save_model(self.out, self.net, meta, overwrite=self.overwrite)
        if self.ckpt.exists():
            self.ckpt.unlink()
        return path

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write everything needed to resume at the current position (atomic)."""
        from safetensors.torch import save_file

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
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        doc = {
            "version": CHECKPOINT_VERSION,
            "config": self.config.as_dict(),
            "epoch": self.epoch, "step": self.step,
            "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "choice": self.choice, "best": self.best, "bad_epochs": self.bad_epochs,
            "history": self.history, "last_epoch_done": self.last_epoch_done,
            "numpy_rng": self.rng.bit_generator.state,
            "optimizer": opt_meta,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "split": self.prepared.split.as_dict(),
            "preprocessing": self.prepared.preprocessing.as_dict(),
            "elapsed_s": self.elapsed_before + time.perf_counter() - getattr(self, "_t0", time.perf_counter()),
        }
        text = json.dumps(doc, default=_json_default)
        with atomic_path(self.ckpt, overwrite=True, durable=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", _CKPT_KEY: text})
        return self.ckpt

    def load_checkpoint(self) -> None:
        """Restore the state written by :meth:`save_checkpoint`."""
        from safetensors import safe_open

        from softseg.modelfile import _read_header

        header = _read_header(self.ckpt)
        text = (header.get("__metadata__") or {}).get(_CKPT_KEY)
        if text is None:
            raise InputError(f"{self.ckpt}: not a softseg training checkpoint")
        doc = json.loads(text)
        if doc.get("version") != CHECKPOINT_VERSION:
            raise InputError(f"{self.ckpt}: checkpoint version {doc.get('version')!r} is not supported")
        self._check_resume_config(doc["config"])
        if doc["split"] != self.prepared.split.as_dict():
            raise InputError(f"{self.ckpt}: the dataset's subjects changed since the checkpoint; start over")
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(self.ckpt), framework="pt", device="cpu") as fh:
            for k in fh.keys():
                tensors[k] = fh.get_tensor(k)
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
        self.best = doc["best"]
        self.bad_epochs = int(doc["bad_epochs"])
        self.history = list(doc["history"])
        self.last_epoch_done = int(doc["last_epoch_done"])
        self.elapsed_before = float(doc["elapsed_s"])

    def _check_resume_config(self, saved: Mapping[str, Any]) -> None:
        now = self.config.as_dict()
        diffs = []
        for section, value in saved.items():
            if isinstance(value, Mapping):
                for key, v in value.items():
                    if (section, key) == ("optim", "epochs"):
                        continue
                    if now.get(section, {}).get(key) != v:
                        diffs.append(f"{section}.{key}: {v!r} -> {now.get(section, {}).get(key)!r}")
            elif section not in ("device",) and now.get(section) != value:
                diffs.append(f"{section}: {value!r} -> {now.get(section)!r}")
        if diffs:
            raise InputError(
                f"{self.ckpt}: --resume with different settings ({'; '.join(diffs)}); "
                "use the original settings or start over with --overwrite"
            )


def _finite(obj: Any) -> Any:
    """Replace NaN/Inf floats (e.g. a diverged validation loss in the history) by None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _backend() -> str | None:
    import torch.distributed as tdist

    return str(tdist.get_backend()) if tdist.is_available() and tdist.is_initialized() else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, types.MappingProxyType):
        return dict(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable in a checkpoint: {type(obj).__name__}")


# ============================================================================ entry points
def train(
    dataset: str | os.PathLike | DatasetInfo,
    config: TrainConfig,
    *,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    cancel: CancelFlag | None = None,
) -> Iterator[ev.Event]:
    """Train a model and yield progress events (see :class:`Trainer`).

    Parameters
    ----------
    dataset : path-like or DatasetInfo
        Dataset folder (:mod:`softseg.data` layout).
    config : TrainConfig
    out : path-like
        Model file (``.safetensors``) written at the end.
    resume, overwrite, cancel
        See :class:`Trainer`.

    Yields
    ------
    softseg.events.Event
        ``step``, ``val``, ``best``, ``lr``, ``epoch``, ``checkpoint`` ..., then ``done`` or
        ``error`` (the last event).
    """
    return Trainer(dataset, config, out=out, resume=resume, overwrite=overwrite, cancel=cancel).run()


def fit(
    dataset: str | os.PathLike | DatasetInfo,
    config: TrainConfig,
    *,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    cancel: CancelFlag | None = None,
    on_event: Any = None,
) -> ev.DoneEvent:
    """Run :func:`train` to the end; returns the ``done`` event.

    Raises
    ------
    InputError
        With the ``error`` event's one-line message (NaN loss, out of memory).
    """
    done = None
    for event in train(dataset, config, out=out, resume=resume, overwrite=overwrite, cancel=cancel):
        if on_event is not None:
            on_event(event)
        if isinstance(event, ev.ErrorEvent):
            raise InputError(event.message)
        if isinstance(event, ev.DoneEvent):
            done = event
    if done is None:  # a non-zero rank of a distributed run yields nothing
        raise RuntimeError("training ended without a done event (not rank 0?)")
    return done
