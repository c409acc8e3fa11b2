"""Benchmark: the real-anatomy generator (``softseg.anatomy``) — speed, memory, and its numbers.

Every measurement runs in a fresh child process, so a time is what a user waits for and the peak
memory (``ru_maxrss``) is that process's own. References measured in the same run:

* **template load** — ``import nilearn.datasets`` and nilearn's own three loaders
  (``load_mni152_template``, ``load_mni152_gm_template``, ``load_mni152_wm_template``): the
  floor of any use of the template;
* **phantom** — ``softseg.phantom.phantom()`` (default 96 x 96 x 32) in the same child as one
  MNI subject;
* **demo with the phantom** — ``softseg demo --data phantom`` beside ``softseg demo`` (MNI),
  cold (empty cache) and cached: "first frame" is the time the demo itself reports (viewer
  created, layers opened, widgets docked, events processed), wall is the whole command.

Numbers (written to the JSON as well): per-class volume of each subject relative to
``scale**3`` x the template's volume computed directly from nilearn's images, the local
deformation's Jacobian range, every rater's Dice against the truth's argmax per class, and for
the lesion target the lesion count, the share of lesion-free axial slices and the raters' Dice.

Run:  .venv/bin/python benchmarks/anatomy.py [--subjects 10] [--no-demo]
      (writes benchmarks/results/anatomy.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "anatomy.json"

_HEADER = """
import json, resource, sys, time
t0 = time.perf_counter()
"""
_FOOTER = """
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

TEMPLATE_LOAD = """
from nilearn import datasets
t1 = time.perf_counter()
imgs = [datasets.load_mni152_template(resolution=1), datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1)]
[i.get_fdata() for i in imgs]
out = {"import_s": t1 - t0, "load_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0}
"""

ONE_SUBJECT = """
from softseg.anatomy import load_template, make_subject
from softseg.phantom import phantom
load_template()
t1 = time.perf_counter()
s = make_subject(seed=0, target=TARGET)
t2 = time.perf_counter()
phantom()
t3 = time.perf_counter()
out = {"template_s": t1 - t0, "subject_s": t2 - t1, "phantom_s": t3 - t2, "shape": list(s.shape),
       "voxels": int(s.image.size)}
"""

DATASET = """
from softseg.anatomy import write_dataset
write_dataset(FOLDER, n_subjects=N, target=TARGET)
out = {"total_s": time.perf_counter() - t0}
"""


def child(code: str, **values) -> dict:
    for key, value in values.items():
        code = code.replace(key, repr(value))
    done = subprocess.run([sys.executable, "-c", _HEADER + code + _FOOTER], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _dice(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return float(2 * np.count_nonzero(a & b) / total) if total else 1.0


def dataset_numbers(folder: Path) -> dict:
    """Volumes vs the template, Jacobians, raters' Dice per class, lesions, read from the files."""
    import nibabel as nib
    import numpy as np
    from nilearn import datasets

    from softseg.dataset_json import class_key

    t1 = datasets.load_mni152_template(resolution=1).get_fdata()
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    head = t1 > 0
    template_ml = {"grey matter": gm[head].sum() / 1000, "white matter": wm[head].sum() / 1000,
                   "csf": (1 - gm - wm)[head].sum() / 1000}
    meta = json.loads((folder / "dataset.json").read_text())
    classes = meta["classes"]
    single = len(classes) == 1
    rows = []
    for name in meta["subjects"]:
        record = meta["generator"]["subjects"][name]
        sub = folder / name
        truth_files = [meta["truth"]] if single else [meta["truth"][c] for c in classes]
        truth = np.stack([np.asarray(nib.load(sub / f).dataobj) for f in truth_files])
        voxel_ml = float(np.prod(nib.load(sub / "image.nii.gz").header.get_zooms()[:3])) / 1000
        labels = np.concatenate([1 - truth.sum(0, keepdims=True), truth]).argmax(0)
        row = {"subject": name, "scale": record["scale"], "jacobian_range": record["jacobian_range"]}
        ratios = {}
        for k, c in enumerate(classes):
            if c in template_ml:
                ratios[c] = float(truth[k].sum(dtype=np.float64) * voxel_ml
                                  / (template_ml[c] * record["scale"] ** 3))
        row["volume_ratio"] = ratios
        dice = {}
        for k, c in enumerate(classes, start=1):
            per = []
            for r in meta["raters"]:
                f = f"rater-{r}.nii.gz" if single else f"rater-{r}_label-{class_key(c)}.nii.gz"
                per.append(_dice(np.asarray(nib.load(sub / f).dataobj), labels == k))
            dice[c] = per
        row["rater_dice"] = dice
        if (sub / "lesions.nii.gz").exists():
            lesion = truth[classes.index("lesion")]
            row["n_lesions"] = record["n_lesions"]
            row["lesion_ml"] = float(lesion.sum(dtype=np.float64) * voxel_ml)
            row["lesion_free_slices"] = float(1 - (lesion > 0).any(axis=(0, 1)).mean())
            row["missed_lesions"] = record["missed_lesions"]
        rows.append(row)

    def summary(values):
        values = [v for v in values if v is not None]
        return {"mean": float(np.mean(values)), "min": float(np.min(values)),
                "max": float(np.max(values))} if values else None

    out = {"subjects": rows, "template_ml": template_ml}
    out["volume_ratio"] = {c: summary([r["volume_ratio"].get(c) for r in rows])
                           for c in classes if c in template_ml}
    out["jacobian_min"] = summary([r["jacobian_range"][0] for r in rows])
    out["jacobian_max"] = summary([r["jacobian_range"][1] for r in rows])
    out["rater_dice"] = {c: summary([d for r in rows for d in r["rater_dice"][c]]) for c in classes}
    if "lesion" in classes:
        out["lesion_free_slices"] = summary([r["lesion_free_slices"] for r in rows])
        out["n_lesions"] = summary([r["n_lesions"] for r in rows])
        out["lesion_ml"] = summary([r["lesion_ml"] for r in rows])
    return out


def demo(args: list[str], cache: Path, png: Path) -> dict:
    env = {**os.environ, "SOFTSEG_CACHE_DIR": str(cache)}
    t = time.perf_counter()
    done = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "softseg", "demo",
         "--screenshot", str(png), *args],
        capture_output=True, text=True, env=env, timeout=900,
    )
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    m = re.search(r"first frame after ([0-9.]+) s", done.stderr)
    return {"first_frame_s": float(m.group(1)) if m else None, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--lesion-subjects", type=int, default=6)
    parser.add_argument("--no-demo", action="store_true")
    args = parser.parse_args()
    result: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_start": os.getloadavg()},
        "note": "shared 2-core machine: times vary with the load of other processes; ratios are "
                "against references measured in the same run",
    }
    tmp = Path(tempfile.mkdtemp(prefix="softseg-bench-anatomy-"))
    try:
        print("template load (nilearn, reference) ...", file=sys.stderr)
        result["template_load"] = child(TEMPLATE_LOAD)
        print("one subject ...", file=sys.stderr)
        one = {t: child(ONE_SUBJECT, TARGET=t) for t in ("tissue", "tissue-lesion")}
        result["one_subject"] = one
        result["one_subject"]["subject_over_phantom"] = one["tissue"]["subject_s"] / one["tissue"]["phantom_s"]
        result["one_subject"]["subject_over_template_load"] = (
            one["tissue"]["subject_s"] / result["template_load"]["total_s"])
        print(f"{args.subjects}-subject dataset ...", file=sys.stderr)
        ds = child(DATASET, FOLDER=str(tmp / "tissue"), N=args.subjects, TARGET="tissue")
        ds["per_subject_s"] = ds["total_s"] / args.subjects
        ds["size_mib"] = sum(p.stat().st_size for p in (tmp / "tissue").rglob("*") if p.is_file()) / 2**20
        result["dataset_tissue"] = ds
        result["numbers_tissue"] = dataset_numbers(tmp / "tissue")
        print("lesion datasets ...", file=sys.stderr)
        for target in ("tissue-lesion", "lesion"):
            info = child(DATASET, FOLDER=str(tmp / target), N=args.lesion_subjects, TARGET=target)
            result[f"dataset_{target}"] = info
            result[f"numbers_{target}"] = dataset_numbers(tmp / target)
        if not args.no_demo and shutil.which("xvfb-run"):
            print("demo: cold, cached, phantom ...", file=sys.stderr)
            cache = tmp / "cache"
            result["demo"] = {
                "mni_cold": demo([], cache, tmp / "cold.png"),
                "mni_cached": demo([], cache, tmp / "cached.png"),
                "phantom": demo(["--data", "phantom"], cache, tmp / "phantom.png"),
                "mni_cached_no_widgets": demo(["--no-widgets"], cache, tmp / "nw.png"),
                "phantom_no_widgets": demo(["--data", "phantom", "--no-widgets"], cache, tmp / "pnw.png"),
            }
            d = result["demo"]
            d["cached_over_phantom_first_frame"] = d["mni_cached"]["first_frame_s"] / d["phantom"]["first_frame_s"]
            d["cold_over_cached_first_frame"] = d["mni_cold"]["first_frame_s"] / d["mni_cached"]["first_frame_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_average_end"] = os.getloadavg()
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    brief = {
        "subject_s": result["one_subject"]["tissue"]["subject_s"],
        "phantom_s": result["one_subject"]["tissue"]["phantom_s"],
        "template_load_s": result["template_load"]["total_s"],
        "dataset_10_s": result["dataset_tissue"]["total_s"],
        "peak_rss_mib": result["one_subject"]["tissue"]["peak_rss_mib"],
        "template_load_rss_mib": result["template_load"]["peak_rss_mib"],
        "volume_ratio": result["numbers_tissue"]["volume_ratio"],
        "rater_dice": result["numbers_tissue"]["rater_dice"],
        "demo": result.get("demo"),
    }
    print(json.dumps(brief, indent=2))
    print(f"wrote {RESULT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
