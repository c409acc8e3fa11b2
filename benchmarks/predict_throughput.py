"""Whole-volume prediction against a bare forward pass, and peak memory, in the same run.

Issue 4 targets, for a 197 x 233 x 189 volume:

* ``softseg.predict.predict_volume`` >= 0.9x the throughput of a bare forward pass over the same
  slices (same network, same batch size, activation included), i.e. reorientation, z-score,
  batching, resampling back and reorientation cost <= ~10 %;
* peak memory <= 1.5 GB on CPU (``VmHWM`` of a fresh child process that imports softseg, loads
  the model, makes the volume and predicts it once; the imports' own footprint is reported too).

The volume has 1 mm voxels. ``native`` uses a model trained at 1 mm (no resampling); ``resampled``
uses a model trained at 1.25 mm in-plane, so the image is resampled (spline order 2) to the model
grid and the prediction back (linear) — its bare reference is the forward pass over the
resampled slices. Predict and bare runs alternate; the ratio is the median of adjacent pairs.
On CPU (``--threads 1``) the process CPU time is the primary clock (immune to other users of a
shared machine), on CUDA the wall clock after synchronize. CPU default width is 16 to keep the
run short; the memory child uses the default architecture (width 32, depth 3).

Run: ``.venv/bin/python benchmarks/predict_throughput.py``; writes
``benchmarks/results/predict_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from softseg.card import ModelCard
from softseg.data import preprocess_image
from softseg.geometry import DisplayGeometry
from softseg.io import Volume
from softseg.modelfile import load_model, save_model
from softseg.models import UNet2D
from softseg.predict import auto_batch_size, predict_volume
from softseg.device import resolve_device

SHAPE = (197, 233, 189)


def make_volume(shape=SHAPE, *, seed: int = 0) -> Volume:
    """A smooth MR-like 1 mm volume in RAS file order."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    small = rng.normal(size=tuple(s // 8 + 1 for s in shape)).astype(np.float32)
    arr = ndimage.zoom(small, [s / n for s, n in zip(shape, small.shape)], order=1)[: shape[0], : shape[1], : shape[2]]
    arr = (arr * 30 + 300).astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms((1.0, 1.0, 1.0))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-98.0, -116.0, -94.0]
    return Volume(array=np.ascontiguousarray(arr), affine=affine, header=header)


def make_model(path: Path, *, width: int, depth: int, spacing: float, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = UNet2D(1, 1, depth=depth, width=width)
    card = ModelCard(
        thresholds=(0.5,), channels=("image",),
        preprocessing={"spacing": (None, spacing, spacing), "crop": (128, 128)},
        candidate={"name": "softseg", "title": "Soft-ReLU-Wing", "soft_gt": True,
                   "activation": {"name": "normalized_relu"}, "loss": "adaptive_wing"},
        architecture={"name": "UNet2D", "config": net.config},
        dataset="benchmark model, random weights",
    )
    return save_model(path, net, card, overwrite=True)


def bare_forward(model, slices: torch.Tensor, batch: int, device: torch.device) -> np.ndarray:
    """The reference: network + activation over preprocessed slices (N, 1, H, W), nothing else."""
    from softseg.activations import get_activation

    act = get_activation("normalized_relu")
    net = model.model.to(device).eval()
    out = np.empty((slices.shape[0],) + tuple(slices.shape[2:]), np.float32)
    with torch.inference_mode():
        for i in range(0, slices.shape[0], batch):
            x = slices[i : i + batch].to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                logits = net(x)
            out[i : i + batch] = act(logits.float())[:, 0].cpu().numpy()
    return out


def timed(fn, device):
    w, c = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w, time.process_time() - c


def compare(model_path: Path, vol: Volume, device: torch.device, repeats: int) -> dict:
    model = load_model(model_path)
    prep = model.preprocessing
    geom = DisplayGeometry.from_affine(vol.affine, vol.shape)
    pre = preprocess_image(geom.to_display(vol.array[None]), geom.scale, prep, crop=False)  # (1, S, H, W)
    slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(pre, 0, 1)))
    width = model.card.architecture.config.width
    batch = auto_batch_size(slices.shape[2:], width, device=device)
    pairs = []
    for _ in range(repeats):
        tp = timed(lambda: predict_volume(model, vol, device=device, batch_size=batch), device)
        tb = timed(lambda: bare_forward(model, slices, batch, device), device)
        pairs.append((tp, tb))
    wall = [b[0] / p[0] for p, b in pairs]
    cpu = [b[1] / p[1] for p, b in pairs]
    return {
        "network_grid": list(pre.shape[1:]), "batch_size": batch,
        "predict_s_wall": [p[0] for p, _ in pairs], "bare_s_wall": [b[0] for _, b in pairs],
        "predict_s_cpu": [p[1] for p, _ in pairs], "bare_s_cpu": [b[1] for _, b in pairs],
        "ratio_wall": statistics.median(wall), "ratio_cpu": statistics.median(cpu),
        "slices_per_s_predict_cpu": pre.shape[1] / statistics.median(p[1] for p, _ in pairs),
        "slices_per_s_bare_cpu": pre.shape[1] / statistics.median(b[1] for _, b in pairs),
    }


def child_memory(args: argparse.Namespace) -> int:
    """Run in a fresh process: peak RSS of import + model + volume + one prediction."""

    def status() -> dict:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
        return out

    after_imports = status()
    vol = make_volume()
    model = load_model(args.model)
    before = status()
    t = time.perf_counter()
    prob = predict_volume(model, vol, device="cpu")
    seconds = time.perf_counter() - t
    peak = status()
    print(json.dumps({
        "after_imports_rss_bytes": after_imports["VmRSS"], "before_predict_rss_bytes": before["VmRSS"],
        "peak_rss_bytes": peak["VmHWM"], "predict_s": seconds, "output_shape": list(prob.shape),
        "output_dtype": str(prob.dtype), "output_range": [float(prob.min()), float(prob.max())],
    }))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--width", type=int)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-width", type=int, default=32)
    p.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "predict_throughput.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        return child_memory(args)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    width = args.width or (32 if gpu else 16)
    tmp = Path(tempfile.mkdtemp(prefix="softseg-bench-"))
    vol = make_volume()
    result = {
        "benchmark": "predict_throughput",
        "device": torch.cuda.get_device_name(device) if gpu else str(device),
        "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "load_average_start": os.getloadavg(),
        "volume_shape": list(SHAPE), "volume_spacing_mm": [1.0, 1.0, 1.0], "width": width, "depth": args.depth,
        "targets": {"ratio": ">= 0.9 (predict_volume vs bare forward over the same slices)",
                    "peak_memory": "<= 1.5 GB on CPU (VmHWM of a fresh process)"},
        "primary_clock": "wall" if gpu else "cpu",
        "runs": {},
    }
    for name, spacing in (("native", 1.0), ("resampled", 1.25)):
        path = make_model(tmp / f"{name}.safetensors", width=width, depth=args.depth, spacing=spacing)
        r = compare(path, vol, device, args.repeats)
        result["runs"][name] = r
        print(f"[{name}] grid {r['network_grid']} batch {r['batch_size']}: ratio cpu {r['ratio_cpu']:.3f}, "
              f"wall {r['ratio_wall']:.3f}", flush=True)
    primary = "ratio_wall" if gpu else "ratio_cpu"
    result["ratio"] = result["runs"]["native"][primary]
    mem_model = make_model(tmp / "memory.safetensors", width=args.memory_width, depth=args.depth, spacing=1.0)
    child = subprocess.run(
        [sys.executable, __file__, "--child-memory", "--model", str(mem_model), "--threads", str(args.threads)],
        capture_output=True, text=True, check=True,
    )
    mem = json.loads(child.stdout.strip().splitlines()[-1])
    mem["width"] = args.memory_width
    mem["peak_rss_gb"] = mem["peak_rss_bytes"] / 1e9
    result["memory_cpu"] = mem
    print(f"[memory] peak RSS {mem['peak_rss_gb']:.3f} GB (after imports {mem['after_imports_rss_bytes'] / 1e9:.3f} GB)")
    result["load_average_end"] = os.getloadavg()
    result["meets_target"] = {"ratio": bool(result["ratio"] >= 0.9), "peak_memory": bool(mem["peak_rss_gb"] <= 1.5)}
    if not gpu:
        result["note"] = "no GPU lent to this task: CPU only; the script runs unchanged on CUDA (wall clock, AMP)"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratio": result["ratio"], "peak_rss_gb": mem["peak_rss_gb"], "meets_target": result["meets_target"]}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
