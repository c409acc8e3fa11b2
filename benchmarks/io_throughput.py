"""Benchmark: softseg.io load/save throughput against plain nibabel on a 197 x 233 x 189 volume.

Same run, same files, interleaved repeats (so machine load hits both sides alike):

* load:  ``softseg.io.load_volume(path)``  vs  ``nib.load(path).get_fdata()``
* save:  ``softseg.io.save_volume(path, data, like=vol, overwrite=True)`` (validation, atomic
  temp file + rename)  vs  ``nib.save(nib.Nifti1Image(data, affine), path)``; and the durable
  variant ``save_volume(..., durable=True)`` (fsync before the rename, used by autosave and
  checkpoints)  vs  ``nib.save`` + ``os.fsync``

for a float32 soft map, compressed (``.nii.gz``) and uncompressed (``.nii``). The ratio is
nibabel time / softseg time (>= 1 means softseg is at least as fast; goal >= 0.9).

Two more numbers explain the save ratio: ``check_nifti`` alone (the header validation every load
does before reading; issue 13), and ``nib.save`` into a new file + ``os.replace`` over the old one
(what any atomic write costs: replacing a file frees the old one's pages, which overwriting in
place does not), so ``save_ratio_vs_atomic_nib`` is softseg's own overhead over an atomic write.
Also times the display reorientation round trip (``to_display`` + ``from_display``) of an LPS
volume and one render of the default phantom.

Run:  .venv/bin/python benchmarks/io_throughput.py   (prints, writes benchmarks/results/io_throughput.json)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from softseg.phantom import phantom  # noqa: E402
from softseg.geometry import display_geometry  # noqa: E402
from softseg.io import check_nifti, load_volume, save_volume  # noqa: E402

SHAPE = (197, 233, 189)
REPEATS = 7
TARGET_RATIO = 0.9
RESULT = Path(__file__).resolve().parent / "results" / "io_throughput.json"


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _nib_save_fsync(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Plain nibabel save followed by fsync: the durability save_volume adds, without atomicity."""
    nib.save(nib.Nifti1Image(array, affine), path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _nib_save_atomic(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Plain nibabel save into a new file renamed over *path*: the cost of atomicity alone."""
    tmp = path.with_name(".tmp-" + path.name)
    nib.save(nib.Nifti1Image(array, affine), tmp)
    os.replace(tmp, path)


def main() -> int:
    rng = np.random.default_rng(0)
    # a soft map: mostly 0 with a smooth blob, like the maps the product saves
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = np.sqrt(((z - 98) / 60.0) ** 2 + ((y - 116) / 70.0) ** 2 + ((x - 94) / 55.0) ** 2)
    data = np.clip(1.2 - r, 0, 1).astype(np.float32) + rng.normal(0, 1e-3, SHAPE).astype(np.float32) * (r < 1.2)
    affine = np.array([[-1.0, 0, 0, 98.0], [0, -1.0, 0, 134.0], [0, 0, 1.0, -72.0], [0, 0, 0, 1]])
    mbytes = data.nbytes / 2**20
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="softseg-io-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        for suffix in (".nii.gz", ".nii"):
            src = tmp / f"src{suffix}"
            nib.save(nib.Nifti1Image(data, affine), src)
            vol = load_volume(src)
            out_ref, out_ours = tmp / f"ref{suffix}", tmp / f"ours{suffix}"
            times: dict[str, list[float]] = {
                "nib_load": [], "softseg_load": [], "nib_save": [], "nib_save_fsync": [], "softseg_save": [],
                "softseg_save_durable": [], "softseg_check_nifti": [], "nib_save_atomic": [],
            }
            for _ in range(REPEATS):
                times["nib_load"].append(_time(lambda: nib.load(src).get_fdata()))
                times["softseg_load"].append(_time(lambda: load_volume(src)))
                times["softseg_check_nifti"].append(_time(lambda: check_nifti(src)))
                times["nib_save"].append(_time(lambda: nib.save(nib.Nifti1Image(vol.array, affine), out_ref)))
                times["nib_save_fsync"].append(_time(lambda: _nib_save_fsync(vol.array, affine, out_ref)))
                times["nib_save_atomic"].append(_time(lambda: _nib_save_atomic(vol.array, affine, out_ref)))
                times["softseg_save"].append(
                    _time(lambda: save_volume(out_ours, vol.array, like=vol, overwrite=True))
                )
                times["softseg_save_durable"].append(
                    _time(lambda: save_volume(out_ours, vol.array, like=vol, overwrite=True, durable=True))
                )
            med = {k: statistics.median(v) for k, v in times.items()}
            assert np.array_equal(np.asanyarray(nib.load(out_ours).dataobj), data)
            results[suffix] = {
                "median_s": med,
                "all_s": times,
                "load_ratio": med["nib_load"] / med["softseg_load"],
                "save_ratio": med["nib_save"] / med["softseg_save"],
                "durable_save_ratio_vs_nib_fsync": med["nib_save_fsync"] / med["softseg_save_durable"],
                "save_ratio_vs_atomic_nib": med["nib_save_atomic"] / med["softseg_save"],
                "check_nifti_share_of_load": med["softseg_check_nifti"] / med["softseg_load"],
                "softseg_load_MBps": mbytes / med["softseg_load"],
                "softseg_save_MBps": mbytes / med["softseg_save"],
            }
    geom_vol = display_geometry(
        type("V", (), {"affine": affine, "shape": SHAPE, "header": nib.Nifti1Header()})()
    )
    reorient = statistics.median(
        _time(lambda: geom_vol.from_display(geom_vol.to_display(data))) for _ in range(REPEATS)
    )
    phantom(seed=0)  # warm-up (imports, caches)
    render = statistics.median(_time(lambda: phantom(seed=s)) for s in range(3))
    cpu0 = time.process_time()
    phantom(seed=7)
    render_cpu = time.process_time() - cpu0
    worst = min(min(r["load_ratio"], r["save_ratio"]) for r in results.values())
    summary = {
        "benchmark": "io_throughput",
        "shape": SHAPE,
        "dtype": "float32",
        "megabytes": mbytes,
        "repeats": REPEATS,
        "python": sys.version.split()[0],
        "nibabel": nib.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "target_ratio": TARGET_RATIO,
        "worst_ratio": worst,
        "meets_target": worst >= TARGET_RATIO,
        "formats": results,
        "display_round_trip_s": reorient,
        "phantom_default_render_s": render,
        "phantom_default_render_cpu_s": render_cpu,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"volume {SHAPE} float32 ({mbytes:.1f} MiB), median of {REPEATS} interleaved repeats")
    print(
        f"{'format':8s} {'nib load':>9s} {'ours':>8s} {'ratio':>6s} | {'nib save':>9s} {'+fsync':>8s} "
        f"{'ours':>8s} {'ratio':>6s} {'durable':>8s}"
    )
    for suffix, r in results.items():
        m = r["median_s"]
        print(
            f"{suffix:8s} {m['nib_load']:9.3f} {m['softseg_load']:8.3f} {r['load_ratio']:6.2f} | "
            f"{m['nib_save']:9.3f} {m['nib_save_fsync']:8.3f} {m['softseg_save']:8.3f} {r['save_ratio']:6.2f} "
            f"{r['durable_save_ratio_vs_nib_fsync']:8.2f}"
        )
    for suffix, r in results.items():
        m = r["median_s"]
        print(
            f"{suffix:8s} header check {m['softseg_check_nifti'] * 1e3:.2f} ms "
            f"({100 * r['check_nifti_share_of_load']:.1f} % of a load); save vs nib.save + rename "
            f"(atomic) {r['save_ratio_vs_atomic_nib']:.2f}"
        )
    print(f"display reorientation round trip: {reorient:.3f} s; default phantom render: {render:.3f} s wall, {render_cpu:.3f} s CPU")
    print(f"worst ratio {worst:.2f} (target >= {TARGET_RATIO}) -> {'OK' if worst >= TARGET_RATIO else 'MISSED'}")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
