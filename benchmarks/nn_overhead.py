"""Cost of augmentation, target preparation, activation and loss next to a bare training step.

The trainer must reach >= 0.9x the throughput of a bare PyTorch loop (issue 4). This measures the
pieces owned by the networks modules on the same batches, in the same run:

* ``bare``: U-Net forward + ``F.binary_cross_entropy_with_logits`` + backward + Adam step;
* ``candidate[NAME]``: ``random_affine`` -> ``prepare_target`` -> U-Net -> ``activate`` ->
  ``compute_loss`` -> backward -> Adam step, as the trainer runs it (for gdl-boundary the
  candidate computes the signed distance maps of the augmented target on the training device,
  :func:`softseg.losses.signed_distance_map_2d`: scipy on CPU, torch on CUDA);
* the augmentation and each candidate's activation + loss (forward and backward) alone.

Run: ``.venv/bin/python benchmarks/nn_overhead.py [--size 128 --batch 8 --depth 3 --width 32]``;
writes ``benchmarks/results/nn_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from softseg.augment import AffineAugment, random_affine
from softseg.candidates import CANDIDATES
from softseg.losses import signed_distance_map
from softseg.models import UNet2D


#: The clock of every timing: wall clock on CUDA (after synchronize); on CPU with one torch thread
#: the process's CPU time, which does not count time stolen by other processes of a shared
#: machine (as benchmarks/train_throughput.py).
CLOCK = time.perf_counter


def _timeit(fn, *, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK()
        fn()
        best = min(best, CLOCK() - start)
    return best


def _interleaved(fn_a, fn_b, *, repeats: int) -> tuple[float, float]:
    """Best time of ``fn_a`` and of ``fn_b``, run alternately so that load drift hits both."""
    fn_a(), fn_b()
    best_a = best_b = float("inf")
    for _ in range(repeats):
        for fn, which in ((fn_a, "a"), (fn_b, "b")):
            start = CLOCK()
            fn()
            elapsed = CLOCK() - start
            if which == "a":
                best_a = min(best_a, elapsed)
            else:
                best_b = min(best_b, elapsed)
    return best_a, best_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "nn_overhead.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    global CLOCK
    CLOCK = time.process_time if device.type == "cpu" and args.threads == 1 else time.perf_counter

    n, s = args.batch, args.size
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(n, 1, s, s, device=device)
    yy, xx = torch.meshgrid(
        torch.arange(s, device=device), torch.arange(s, device=device), indexing="ij"
    )
    disc = (((yy - s / 2) ** 2 + (xx - s / 2.3) ** 2) < (s / 6) ** 2).float()
    labels = disc.expand(n, 1, s, s).contiguous()
    dmaps = torch.from_numpy(signed_distance_map(labels.cpu().numpy(), ndim=2)).to(device)
    params = AffineAugment()

    def make():
        model = UNet2D(1, depth=args.depth, width=args.width).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    model, opt = make()

    def bare_step():
        logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    def aug_only():
        random_affine(images, labels, params=params, generator=gen, distance_maps=dmaps)
        sync()

    results: dict = {
        "device": str(device),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "batch": n,
        "size": s,
        "depth": args.depth,
        "width": args.width,
        "repeats": args.repeats,
        "timing": "best of repeats, seconds per batch; candidate and bare steps alternate",
        "clock": "process CPU time" if CLOCK is time.process_time else "wall clock",
        "load_average_start": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    bare = _timeit(bare_step, repeats=args.repeats)
    results["bare_step_s"] = bare
    results["augment_s"] = _timeit(aug_only, repeats=args.repeats * 4)
    results["augment_fraction_of_bare_step"] = results["augment_s"] / bare
    print(f"bare step {bare * 1e3:.1f} ms; augment {results['augment_s'] * 1e3:.2f} ms", flush=True)
    results["candidates"] = {}
    for name, cand in CANDIDATES.items():
        logits = torch.randn(n, 1, s, s, device=device, requires_grad=True)

        def loss_only(cand=cand, logits=logits):
            target = cand.prepare_target(labels)
            loss = cand.compute_loss(cand.activate(logits), target, epoch=10, distance_map=dmaps)
            loss.backward()
            sync()

        def full_step(cand=cand):
            img, lab = random_affine(images, labels, params=params, generator=gen)
            target = cand.prepare_target(lab)
            probs = cand.activate(model(img))
            loss = cand.compute_loss(probs, target, epoch=10)  # maps (if any) made on the device
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()

        loss_s = _timeit(loss_only, repeats=args.repeats * 4)
        step_s, bare_s = _interleaved(full_step, bare_step, repeats=args.repeats)
        results["candidates"][name] = {
            "activation_and_loss_s": loss_s,
            "step_s": step_s,
            "bare_step_s": bare_s,
            "throughput_ratio_vs_bare": bare_s / step_s,
            # robust to load drift: the measured extra work over the best bare step
            "overhead_fraction": (results["augment_s"] + loss_s) / min(bare, bare_s),
        }
        print(
            f"{name:16s} step {step_s * 1e3:8.1f} ms  (bare {bare_s * 1e3:8.1f} ms)  "
            f"ratio {bare_s / step_s:5.3f}  "
            f"activation+loss {loss_s * 1e3:6.2f} ms",
            flush=True,
        )
    # re-measure the bare step at the end: machine load drifts over the run
    bare_end = _timeit(bare_step, repeats=args.repeats)
    results["bare_step_end_s"] = bare_end
    results["load_average_end"] = os.getloadavg()[0]
    print(
        f"augment {results['augment_s'] * 1e3:.2f} ms per batch = "
        f"{results['augment_fraction_of_bare_step']:.1%} "
        f"of a bare step; bare step {bare * 1e3:.1f} ms (start) / {bare_end * 1e3:.1f} ms (end)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
