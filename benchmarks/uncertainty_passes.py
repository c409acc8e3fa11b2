"""Prediction time with MC dropout (N = 10) and test-time augmentation (N = 8), against one pass.

Issue 15 #3 target: ``N`` passes cost at most ``1.1 x N`` single passes (the passes are batched:
:func:`softseg.uncertainty.predict_with_uncertainty` runs them as one stack per batch, in chunks of
the single-pass batch size, so memory stays that of one pass).

Measured in the same run, alternating, on one volume:

* ``one``: :func:`softseg.predict.predict_volume` (one pass; the reference);
* ``mc_dropout``: ``predict_with_uncertainty(method="mc_dropout", n=10)`` (mean, variance,
  entropy);
* ``tta``: ``predict_with_uncertainty(method="tta", n=8)`` (flips + the training affine family,
  mapped back);
* ``single_passes``: ``N`` separate ``predict_volume`` calls in a loop (what an unbatched
  implementation costs), once per repeat for ``N = 10``.

Ratios: ``t / t_one`` and ``t / (N * t_one)`` (goal <= 1.1), from the medians of the process CPU
time (``--threads 1``: immune to other users of the shared 2-core machine); wall-clock medians are
recorded too. The volume is sized for this CPU (default 96 x 96 x 48 voxels of 1 mm, model at
1 mm: no resampling); the network is the default U-Net depth 3 with ``--width`` 16 and dropout 0.3,
random weights (timing does not depend on training).

Run: ``.venv/bin/python benchmarks/uncertainty_passes.py``; writes
``benchmarks/results/uncertainty_passes.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from _common import Timer, load_average, machine, save_result
from softseg.card import ModelCard
from softseg.io import Volume
from softseg.modelfile import load_model, save_model
from softseg.models import UNet2D
from softseg.predict import predict_volume
from softseg.uncertainty import predict_with_uncertainty


def make_volume(shape: tuple[int, int, int], *, seed: int = 0) -> Volume:
    """A smooth MR-like 1 mm volume (RAS file order)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    small = rng.normal(size=tuple(s // 8 + 1 for s in shape)).astype(np.float32)
    arr = ndimage.zoom(small, [s / n for s, n in zip(shape, small.shape)], order=1)[: shape[0], : shape[1], : shape[2]]
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms((1.0, 1.0, 1.0))
    return Volume(array=np.ascontiguousarray(arr * 30 + 300, dtype=np.float32), affine=np.eye(4), header=header)


def make_model(path: Path, *, width: int, depth: int, dropout: float) -> Path:
    torch.manual_seed(0)
    net = UNet2D(1, 1, depth=depth, width=width, dropout=dropout)
    card = ModelCard(
        thresholds=(0.5,), channels=("image",),
        preprocessing={"spacing": (None, 1.0, 1.0), "crop": (128, 128)},
        candidate={"name": "conventional", "title": "Hard-Sig-Dice", "soft_gt": False,
                   "activation": {"name": "sigmoid"}, "loss": "dice"},
        architecture={"name": "UNet2D", "config": net.config},
        dataset="benchmark model, random weights",
    )
    return save_model(path, net, card, overwrite=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=(96, 96, 48), metavar=("X", "Y", "Z"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--mc", type=int, default=10, help="MC dropout passes")
    p.add_argument("--tta", type=int, default=8, help="test-time augmentation passes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "uncertainty_passes.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vol = make_volume(tuple(args.shape))
    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(make_model(Path(tmp) / "m.safetensors", width=args.width, depth=args.depth, dropout=0.3))
        runs = {
            "one": lambda: predict_volume(model, vol, device="cpu"),
            "mc_dropout": lambda: predict_with_uncertainty(model, vol, method="mc_dropout", n=args.mc, device="cpu"),
            "tta": lambda: predict_with_uncertainty(model, vol, method="tta", n=args.tta, device="cpu"),
            "single_passes": lambda: [predict_volume(model, vol, device="cpu") for _ in range(args.mc)],
        }
        runs["one"]()  # warm-up (allocator, first-call overheads)
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        wall: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):  # alternate, so load changes hit every measurement alike
            for label, fn in runs.items():
                w, c, _out = timer.medians(fn, 1)
                cpu[label].append(c)
                wall[label].append(w)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    one = med["one"]
    passes = {"mc_dropout": args.mc, "tta": args.tta}
    result = {
        "benchmark": "uncertainty_passes",
        "issue": "15 #3: N passes <= 1.1 x N single passes",
        "volume_shape": list(args.shape),
        "spacing_mm": [1.0, 1.0, 1.0],
        "network": {"name": "UNet2D", "depth": args.depth, "width": args.width, "dropout": 0.3},
        "device": "cpu",
        "threads": args.threads,
        "repeats": args.repeats,
        "clock": "process CPU time (median of repeats); wall-clock medians in wall_s",
        "cpu_s": {k: round(v, 4) for k, v in med.items()},
        "wall_s": {k: round(v, 4) for k, v in med_wall.items()},
        "passes": passes,
        "ratio_to_one_pass": {k: round(med[k] / one, 3) for k in passes},
        "ratio_to_n_single_passes": {k: round(med[k] / (n * one), 3) for k, n in passes.items()},
        "ratio_to_n_separate_calls": {
            k: round(med[k] / (n * med["single_passes"] / args.mc), 3) for k, n in passes.items()},
        "goal": "ratio_to_n_single_passes <= 1.1",
        "goal_met": {k: med[k] / (n * one) <= 1.1 for k, n in passes.items()},
        "load_average": load_average(),
        "machine": machine(torch=torch.__version__),
    }
    path = save_result(Path(args.out), result)
    print(f"one pass {one:.2f} s CPU; MC dropout x{args.mc}: {result['ratio_to_one_pass']['mc_dropout']}x one "
          f"({result['ratio_to_n_single_passes']['mc_dropout']}x N passes); TTA x{args.tta}: "
          f"{result['ratio_to_one_pass']['tta']}x one ({result['ratio_to_n_single_passes']['tta']}x N passes) -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
