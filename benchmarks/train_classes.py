"""Training throughput of a K = 3 class model against K = 1, same network size (issue 14, Measure).

Issue 14 target: the multi-class head and loss cost <= 10 % of training throughput. Both sides
are the real :class:`softseg.training.Trainer` on the same in-memory slices, same U-Net (depth,
width, dropout, batch norm), batch, optimizer and augmentation; what differs is exactly what K
changes:

* the output layer: K+1 = 4 channels (background first) instead of 1;
* the labels: 3 foreground class maps warped by the augmentation instead of 1 map, and the
  K-class target (``prepare_target``: background ``1 - sum`` or one-hot argmax);
* the activation and loss: the candidate's K-class form (:meth:`Candidate.for_classes`:
  SoftSeg = multi-class normalized ReLU + Adaptive Wing on the 4 channels; conventional =
  softmax + Dice per foreground class).

The two trainers run **alternately, one epoch each** (the order flips every epoch), so load
changes on a shared machine hit both. An epoch is timed from its first step to its last (the
first step of each epoch is excluded; validation, thresholds and checkpoints are outside the
window), with the process CPU time (torch single-threaded, ``--threads 1``; not counting time
other processes take on a shared machine) and the wall clock. The ratio is the median over
epochs of the K=3 / K=1 throughput of the same epoch index (first epoch = warm-up, dropped);
overhead = 1 - ratio.

A second, isolated measure times only what K changes per step (``prepare_target`` +
activation + loss, forward and backward, on the batch's logits) with :class:`_common.Timer`,
against the whole step it belongs to.

Run: ``.venv/bin/python benchmarks/train_classes.py`` (CPU defaults: 64x64 slices, width 16,
depth 3, batch 8, 6 steps per epoch, 15 epochs, candidates softseg and conventional); writes
``benchmarks/results/train_classes.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from _common import Timer, load_average, machine, save_result
from softseg import events as ev
from softseg.augment import AffineAugment, random_affine
from softseg.candidates import get_candidate
from softseg.config import TrainConfig
from softseg.data import DatasetInfo, Preprocessing, SliceSet, Split, Subject
from softseg.device import resolve_device
from softseg.models import UNet2D
from softseg.training import PreparedData, Trainer

K = 3


def tissue_slices(n: int, size: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images (N, 1, S, S) and K = 3 soft class maps (K, N, S, S) that sum to at
    most 1: three intensity bands of the image, each mask smoothed (partial volume)."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 3, 3))
    img = ((img - img.mean()) / img.std()).astype(np.float32)
    bands = [(0.3, 0.9), (0.9, 1.5), (1.5, np.inf)]
    maps = np.stack([ndimage.gaussian_filter(((img >= lo) & (img < hi)).astype(np.float32), sigma=(0, 0.7, 0.7))
                     for lo, hi in bands])
    return img[:, None], np.clip(maps, 0, 1).astype(np.float32)


def prepared(n_train: int, size: int, *, k: int, seed: int = 0) -> PreparedData:
    """In-memory data: K = 3 class maps, or for K = 1 their union (one map, same images)."""
    img, maps = tissue_slices(n_train + 8, size, seed=seed)
    labels = maps if k > 1 else np.clip(maps.sum(axis=0), 0, 1)

    def part(name: str, a: int, b: int) -> SliceSet:
        return SliceSet(images=img[a:b], labels=(labels[None, ..., a:b, :, :],), subject_slices=((0, b - a),),
                        subjects=(name,), raters_per_subject=(1,))

    classes = {"classes": ("band 1", "band 2", "band 3")} if k > 1 else {}
    info = DatasetInfo(root=Path("in-memory"), channels=("image",), **classes,
                       subjects=(Subject("train", (), (Path("r"),), ("1",)), Subject("val", (), (Path("r"),), ("1",))))
    prep = Preprocessing(spacing=(None, 1.0, 1.0), crop=(size, size), channels=("image",))
    return PreparedData(info=info, split=Split(train=("train",), val=("val",)), preprocessing=prep,
                        train=part("train", 0, n_train), val=part("val", n_train, n_train + 8))


def config(args: argparse.Namespace, candidate: str, device: torch.device) -> TrainConfig:
    return TrainConfig.from_dict({
        "candidate": candidate, "seed": 0, "device": str(device),
        "model": {"depth": args.depth, "width": args.width},
        "optim": {"epochs": args.epochs, "batch_size": args.batch, "patience": 100_000},
        "data": {"crop": [args.size, args.size]},
    })


def epoch_rates(run, batch: int, sync) -> tuple[float, float] | None:
    """Consume one epoch of a trainer's events; slices/s (wall, CPU) from its first to its last
    step, or None when the run ended."""
    for event in run:
        if isinstance(event, ev.StepEvent):
            sync()
            if event.step == 1:
                t0, c0 = time.perf_counter(), time.process_time()
            if event.step == event.steps:
                n = (event.steps - 1) * batch
                return n / (time.perf_counter() - t0), n / (time.process_time() - c0)
        if isinstance(event, ev.ErrorEvent):
            raise RuntimeError(event.message)
    return None


def measure_training(args: argparse.Namespace, candidate: str, device: torch.device) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="softseg-bench-classes-"))
    cfg = config(args, candidate, device)
    runs = {k: Trainer(None, cfg, out=tmp / f"k{k}.safetensors", data=prepared(args.steps * args.batch, args.size, k=k)).run()
            for k in (1, K)}
    rates: dict[int, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in runs}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for epoch in range(args.epochs):
        order = (1, K) if epoch % 2 == 0 else (K, 1)
        for k in order:
            wall, cpu = epoch_rates(runs[k], args.batch, sync)
            rates[k]["wall"].append(wall)
            rates[k]["cpu"].append(cpu)
    for run in runs.values():  # let the trainers finish (threshold search, model file)
        for _ in run:
            pass

    out: dict = {}
    for clock in ("cpu", "wall"):
        one, many = rates[1][clock][1:], rates[K][clock][1:]  # first epoch = warm-up
        ratios = [b / a for a, b in zip(one, many)]
        out[clock] = {
            "k1_median_slices_per_s": statistics.median(one), f"k{K}_median_slices_per_s": statistics.median(many),
            "ratio_paired_median": statistics.median(ratios), "ratios": ratios,
            "k1_per_epoch": rates[1][clock], f"k{K}_per_epoch": rates[K][clock],
        }
    primary = "wall" if device.type == "cuda" else "cpu"
    out["primary"] = primary
    out["ratio"] = out[primary]["ratio_paired_median"]
    out["overhead"] = 1.0 - out["ratio"]
    return out


def measure_head_and_loss(args: argparse.Namespace, candidate: str, device: torch.device) -> dict:
    """CPU seconds per step of what K changes (target + activation + loss, forward and backward)
    and of the whole step (augmentation, network forward/backward, Adam), K = 1 and K = 3."""
    timed = Timer()
    out: dict = {}
    for k in (1, K):
        c = get_candidate(candidate).for_classes(k)
        data = prepared(args.batch, args.size, k=k)
        x = torch.from_numpy(data.train.images).to(device)
        y = torch.from_numpy(data.train.label_array()).to(device)
        torch.manual_seed(0)
        net = c.init_network(UNet2D(1, c.out_channels, depth=args.depth, width=args.width)).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator(device=device).manual_seed(1)
        logits = net(x).detach()

        def head_and_loss() -> None:
            z = logits.clone().requires_grad_(True)
            c.compute_loss(c.activate(z), c.prepare_target(y), epoch=0).backward()

        def step() -> None:
            xa, ya = random_affine(x, y, params=AffineAugment(), generator=gen)
            loss = c.compute_loss(c.activate(net(xa)), c.prepare_target(ya), epoch=0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        timed(head_and_loss, 3)  # warm-up
        timed(step, 2)
        timed(head_and_loss, args.repeat, f"head_loss_k{k}")
        timed(step, args.repeat, f"step_k{k}")
        out[f"k{k}"] = {"head_and_loss_cpu_s": timed.cpu[f"head_loss_k{k}"], "step_cpu_s": timed.cpu[f"step_k{k}"],
                        "head_and_loss_share_of_step": timed.cpu[f"head_loss_k{k}"] / timed.cpu[f"step_k{k}"]}
    out["step_time_ratio_k3_over_k1"] = out[f"k{K}"]["step_cpu_s"] / out["k1"]["step_cpu_s"]
    out["extra_head_and_loss_over_k1_step"] = (
        (out[f"k{K}"]["head_and_loss_cpu_s"] - out["k1"]["head_and_loss_cpu_s"]) / out["k1"]["step_cpu_s"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--repeat", type=int, default=15, help="repeats of the isolated head+loss timing")
    p.add_argument("--candidates", nargs="+", default=["softseg", "conventional"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable timings on a shared machine)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_classes.json"))
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {
        "benchmark": "train_classes",
        "machine": machine(torch=torch.__version__, threads=torch.get_num_threads(), device=str(device)),
        "load_average_start": load_average(),
        "size": args.size, "width": args.width, "depth": args.depth, "batch": args.batch,
        "steps_per_epoch": args.steps, "epochs": args.epochs, "classes": K,
        "target": f"K={K} training throughput >= 0.9x K=1 (overhead of the multi-class head and loss <= 10 %): "
                  "median over epochs of the K=3 / K=1 throughput, trainers interleaved one epoch each; "
                  "CPU: process CPU time, GPU: wall clock",
        "candidates": {},
    }
    for name in args.candidates:
        training = measure_training(args, name, device)
        isolated = measure_head_and_loss(args, name, device)
        result["candidates"][name] = {"training": training, "isolated": isolated}
        print(f"[{name}] K=1 {training[training['primary']]['k1_median_slices_per_s']:.1f} slices/s, "
              f"K={K} {training[training['primary']][f'k{K}_median_slices_per_s']:.1f} slices/s -> ratio "
              f"{training['ratio']:.3f} (overhead {100 * training['overhead']:.1f} %); isolated: head+loss "
              f"{1e3 * isolated['k1']['head_and_loss_cpu_s']:.1f} ms (K=1) vs "
              f"{1e3 * isolated[f'k{K}']['head_and_loss_cpu_s']:.1f} ms (K={K}) of a "
              f"{1e3 * isolated['k1']['step_cpu_s']:.0f} ms step", flush=True)
    result["load_average_end"] = load_average()
    result["ratio"] = min(c["training"]["ratio"] for c in result["candidates"].values())
    result["overhead"] = 1.0 - result["ratio"]
    result["meets_target"] = bool(result["ratio"] >= 0.9)
    if device.type != "cuda":
        result["note"] = "no GPU lent to this task: CPU only (process CPU time, torch single-threaded)"
    path = save_result(Path(args.out), result)
    print(f"ratio (worst candidate) {result['ratio']:.3f}, meets target: {result['meets_target']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
