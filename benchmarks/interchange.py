"""Benchmark: BIDS import of 100 subjects, and ONNX (onnxruntime, CPU) vs PyTorch prediction.

1. **Import.** A synthetic ivadomed-style BIDS tree (100 subjects, T1w + T2w, two raters as
   ``derivatives/labels`` and ``derivatives/labels-rater2``, 96 x 96 x 48 volumes, gzip) is
   imported with ``plan_bids_import`` + ``execute_plan`` (links, the default) and with
   ``copy=True`` (the reference, same run, same files). Reported: seconds (pybids indexing +
   header checks = plan; links = execute), the ratio copy time / link time, and the proof that
   no image bytes are copied by default: every file of the new dataset is a symbolic link, and
   the bytes the new dataset occupies (``lstat`` sizes + folder entries, what ``du`` counts)
   against the source's image bytes.
2. **ONNX vs PyTorch.** A default SoftSeg U-Net (depth 3, width 32, normalized ReLU, random
   weights, channels: 1) predicts a 197 x 233 x 189 volume at 1 mm (no resampling) through
   ``predict_volume``: once with PyTorch (the default path), once with the exported ONNX file in
   onnxruntime on CPU (``forward=onnx_forward(...)``), the same number of threads for both, the
   same batch size, interleaved repeats. Reported: whole-prediction seconds, forward-only seconds,
   ratio PyTorch / ONNX (> 1: onnxruntime faster), max |difference| of the probability maps.

Run:  .venv/bin/python benchmarks/interchange.py   (writes benchmarks/results/interchange.json)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "softseg"))  # the synthetic trees of the tests

from interchange_trees import make_bids  # noqa: E402

from softseg.interchange.bids import plan_bids_import  # noqa: E402
from softseg.interchange.plan import execute_plan  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "interchange.json"
N_SUBJECTS = 100
IMPORT_SHAPE = (96, 96, 48)
VOLUME = (197, 233, 189)
REPEATS = 3
THREADS = max(1, min(4, os.cpu_count() or 1))


def _du(folder: Path) -> int:
    """Bytes a folder tree occupies as written: lstat sizes of files, links and folders."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def bench_import(tmp: Path) -> dict:
    src = tmp / "bids"
    t = time.perf_counter()
    make_bids(src, subjects=tuple(f"{i:03d}" for i in range(N_SUBJECTS)), shape=IMPORT_SHAPE, extras=True)
    build_s = time.perf_counter() - t
    source_bytes = sum(p.stat().st_size for p in src.rglob("*.nii.gz"))
    t = time.perf_counter()
    plan = plan_bids_import(src)
    plan_s = time.perf_counter() - t
    linked_bytes = sum(link.source.stat().st_size for link in plan.links)
    t = time.perf_counter()
    dst = execute_plan(plan, tmp / "ds")
    link_s = time.perf_counter() - t
    t = time.perf_counter()
    copied = execute_plan(plan, tmp / "ds_copy", copy=True)
    copy_s = time.perf_counter() - t
    files = [p for p in dst.rglob("*") if not p.is_dir() and p.suffix == ".gz"]
    links = sum(1 for p in files if p.is_symlink())
    dst_bytes, copy_bytes = _du(dst), _du(copied)
    return {
        "subjects": len(plan.subjects), "files_linked": len(plan.links), "unmatched": len(plan.unmatched),
        "shape": IMPORT_SHAPE, "tree_build_s": build_s,
        "plan_s": plan_s, "link_s": link_s, "import_s": plan_s + link_s, "copy_s": copy_s,
        "copy_over_link_ratio": copy_s / link_s,
        "nifti_files_in_dataset": len(files), "nifti_files_that_are_links": links,
        "source_image_bytes_linked": linked_bytes, "source_bytes_total": source_bytes,
        "dataset_bytes_linked": dst_bytes, "dataset_bytes_copied": copy_bytes,
        "bytes_ratio_linked_over_source": dst_bytes / linked_bytes,
        "no_image_bytes_copied": links == len(files) and dst_bytes < 0.01 * linked_bytes,
    }


def bench_onnx(tmp: Path) -> dict:
    import torch

    from softseg.card import ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, UNetConfig
    from softseg.interchange.export_model import export_model, onnx_forward
    from softseg.io import Volume
    from softseg.modelfile import load_model, save_model
    from softseg.models import UNet2D
    from softseg.predict import predict_volume

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    net = UNet2D(1, 1, depth=3, width=32)
    card = ModelCard(thresholds=(0.5,), channels=("image",),
                     preprocessing=PreprocessingCard(spacing=(None, 1.0, 1.0), crop=(128, 128)),
                     candidate=CandidateCard(name="softseg", activation=ActivationCard(name="normalized_relu")),
                     architecture=ArchitectureCard(config=UNetConfig(**net.config)))
    model_path = save_model(tmp / "m.safetensors", net, card)
    t = time.perf_counter()
    onnx_path = export_model(model_path, tmp / "m.onnx", format="onnx")
    export_s = time.perf_counter() - t
    loaded = load_model(model_path)
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, VOLUME).astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_shape(VOLUME)
    header.set_zooms((1.0, 1.0, 1.0))
    vol = Volume(array=arr, affine=np.eye(4), header=header)
    ort_forward = onnx_forward(onnx_path, threads=THREADS)
    activate = loaded.activation
    torch_net = loaded.model.eval()
    clock = {"torch": 0.0, "onnx": 0.0}

    def timed_torch(x: np.ndarray) -> np.ndarray:  # what predict_volume does on CPU, timed
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = activate(torch_net(torch.from_numpy(x)).float()).numpy()
        clock["torch"] += time.perf_counter() - t0
        return y

    def timed_onnx(x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        y = ort_forward(x)
        clock["onnx"] += time.perf_counter() - t0
        return y

    batch = 8
    totals: dict[str, list[float]] = {"torch": [], "onnx": []}
    forwards: dict[str, list[float]] = {"torch": [], "onnx": []}
    outputs = {}
    predict_volume(loaded, vol, device="cpu", batch_size=batch, forward=timed_onnx)  # warm-up both
    predict_volume(loaded, vol, device="cpu", batch_size=batch, forward=timed_torch)
    for _ in range(REPEATS):
        for name, fwd in (("torch", timed_torch), ("onnx", timed_onnx)):
            clock[name] = 0.0
            t = time.perf_counter()
            outputs[name] = predict_volume(loaded, vol, device="cpu", batch_size=batch, forward=fwd)
            totals[name].append(time.perf_counter() - t)
            forwards[name].append(clock[name])
    default = predict_volume(loaded, vol, device="cpu", batch_size=batch)  # the untimed default path
    med = {k: statistics.median(v) for k, v in totals.items()}
    fmed = {k: statistics.median(v) for k, v in forwards.items()}
    return {
        "volume": VOLUME, "network": net.config, "threads": THREADS, "batch_size": batch, "repeats": REPEATS,
        "onnx_export_s": export_s,
        "predict_s": {"torch": med["torch"], "onnx": med["onnx"]},
        "forward_s": {"torch": fmed["torch"], "onnx": fmed["onnx"]},
        "all_predict_s": totals, "all_forward_s": forwards,
        "predict_ratio_torch_over_onnx": med["torch"] / med["onnx"],
        "forward_ratio_torch_over_onnx": fmed["torch"] / fmed["onnx"],
        "max_abs_diff_onnx_vs_torch": float(np.max(np.abs(outputs["onnx"] - outputs["torch"]))),
        "max_abs_diff_torch_forward_vs_default_path": float(np.max(np.abs(outputs["torch"] - default))),
    }


def main() -> int:
    import onnxruntime
    import torch

    with tempfile.TemporaryDirectory(prefix="softseg-interchange-bench-") as tmp:
        tmp = Path(tmp)
        imp = bench_import(tmp)
        shutil.rmtree(tmp / "ds_copy", ignore_errors=True)
        onnx = bench_onnx(tmp)
    summary = {
        "benchmark": "interchange",
        "import_100_subjects": imp,
        "onnx_vs_predict_volume": onnx,
        "python": sys.version.split()[0], "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"import of {imp['subjects']} subjects: {imp['import_s']:.2f} s (pybids + headers {imp['plan_s']:.2f} s, "
          f"links {imp['link_s']:.2f} s); --copy {imp['copy_s']:.2f} s ({imp['copy_over_link_ratio']:.1f}x the links); "
          f"{imp['nifti_files_that_are_links']}/{imp['nifti_files_in_dataset']} files are links, dataset "
          f"{imp['dataset_bytes_linked'] / 1024:.0f} KiB vs {imp['source_image_bytes_linked'] / 2**20:.1f} MiB of images")
    print(f"197x233x189 predict_volume: PyTorch {onnx['predict_s']['torch']:.1f} s, ONNX {onnx['predict_s']['onnx']:.1f} s "
          f"(ratio {onnx['predict_ratio_torch_over_onnx']:.2f}; forward only {onnx['forward_ratio_torch_over_onnx']:.2f}); "
          f"max |diff| {onnx['max_abs_diff_onnx_vs_torch']:.2e}")
    print(f"-> {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
