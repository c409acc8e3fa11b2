"""Benchmark: how long ``import napari_softseg`` takes in a fresh interpreter, and what it pulls in.

napari imports the plugin package to read its manifest, so it must stay cheap (goal <= 0.3 s)
and must not import torch. Each repeat is a fresh ``python`` process; the time is measured inside
it around the import statement (interpreter start-up excluded). For context the same is measured
for ``import numpy`` and for the modules napari imports when it opens a file or the sample data
(``napari_softseg._reader``, ``napari_softseg._sample_data``), and ``python -X importtime``
gives the cumulative microseconds nibabel/numpy would add.

Run:  .venv/bin/python benchmarks/import_time.py   (prints, writes benchmarks/results/import_time.json)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "import_time.json"
REPEATS = 9
TARGET_S = 0.3
HEAVY = ("torch", "PyQt6", "PyQt5", "PySide6", "napari", "magicgui", "nibabel", "scipy")

_PROBE = """
import sys, time, json
t = time.perf_counter()
import {module}
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(module: str) -> dict:
    """Median/min/max import time of *module* over fresh processes (interleaved by the caller)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def importtime_top(module: str, n: int = 8) -> list[dict]:
    """The largest cumulative entries of ``python -X importtime -c 'import module'``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        self_us, cum_us, name = (part.strip() for part in line[len("import time:"):].split("|", 2))
        rows.append({"module": name, "cumulative_us": int(cum_us), "self_us": int(self_us)})
    rows.sort(key=lambda r: -r["cumulative_us"])
    return rows[:n]


def main() -> int:
    modules = ["napari_softseg", "numpy", "napari_softseg._reader", "napari_softseg._sample_data"]
    runs: dict[str, list[dict]] = {m: [] for m in modules}
    for _ in range(REPEATS):  # interleaved, so machine load affects all alike
        for module in modules:
            runs[module].append(measure(module))
    summary = {}
    for module, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        summary[module] = {
            "median_s": statistics.median(secs),
            "min_s": min(secs),
            "max_s": max(secs),
            "imports_heavy": sorted({h for r in rs for h in r["heavy"]}),
        }
    main_mod = summary["napari_softseg"]
    result = {
        "benchmark": "import_time",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "repeats": REPEATS,
        "target_s": TARGET_S,
        "napari_softseg_median_s": main_mod["median_s"],
        "torch_imported": "torch" in main_mod["imports_heavy"],
        "meets_target": main_mod["median_s"] <= TARGET_S and "torch" not in main_mod["imports_heavy"],
        "modules": summary,
        "importtime_top_reader": importtime_top("napari_softseg._reader"),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'module':32s} {'median s':>9s} {'min s':>8s} {'max s':>8s}  heavy modules imported")
    for module, s in summary.items():
        print(f"{module:32s} {s['median_s']:9.4f} {s['min_s']:8.4f} {s['max_s']:8.4f}  {', '.join(s['imports_heavy']) or '-'}")
    print(
        f"import napari_softseg: {main_mod['median_s']:.4f} s (target <= {TARGET_S} s), "
        f"torch imported: {result['torch_imported']} -> {'OK' if result['meets_target'] else 'MISSED'}"
    )
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
