"""Benchmark: filling the slices between painted slices (softseg.interpolate) on 197 x 233 x 189.

Measures, in one run:

1. **Speed** of :func:`softseg.interpolate.interpolate_levels` on three-level confidence maps
   (level k where the partial-volume fraction / probability is >= k/4) painted on every 5th
   axial slice, in the viewer's display order (slice axis first, ``layer.scale`` spacing):
   the analytic phantom's rim (a 2.5 mm cortex-like shell, ``softseg.phantom``) and the grey
   matter of the MNI ICBM152 2009a template (``softseg.anatomy.load_template``, 1 mm, exactly
   197 x 233 x 189). Goal: <= 1 s on 2 cores. References measured in the same run: one
   ``scipy.ndimage.distance_transform_edt`` of the whole volume; the same shape-based method
   written the textbook way (two full-slice distance transforms per level and painted slice,
   no components, no holes); ITK's MorphologicalContourInterpolator (Zukic et al. 2016, the
   method of 3D Slicer's "fill between slices") on the level >= 1 mask, in a child process
   (ITK 5.4.7's filter corrupts the heap on the rim: glibc aborts that process at exit).
2. **Accuracy** of each against the full (every-slice) map: Dice per level on the slices
   between the first and last painted slice.
3. **A rater's effort** to label the phantom's rim on 30 axial slices: a scripted rater covers
   every rim voxel of a slice with a circular brush (greedy set cover: each dab is centred on a
   rim voxel and covers the most rim voxels not yet painted; the brush paints its whole disc,
   overpaint included). Each connected piece of paint is one stroke (one drag of the mouse),
   whose brush path is the minimum spanning tree of its dabs.
   Painting all 30 slices vs every 5th slice (and the last) + one interpolation: strokes, dabs,
   path length and Dice against the truth (fraction >= 0.5) for both.

Run:  .venv/bin/python benchmarks/interpolation.py
(prints a summary and writes benchmarks/results/interpolation.json)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import cKDTree

from _common import Timer, machine, save_result

SHAPE = (197, 233, 189)
STEP = 5
RESULT = Path(__file__).resolve().parent / "results" / "interpolation.json"
timed = Timer()
CPU = timed.cpu  # label -> median process CPU seconds


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if denom == 0 else float(2.0 * np.count_nonzero(a & b) / denom)


def three_levels(fraction: np.ndarray) -> np.ndarray:
    f = np.asarray(fraction)
    return ((f >= 0.25).astype(np.uint8) + (f >= 0.5) + (f >= 0.75)).astype(np.uint8)


def structures() -> dict[str, tuple[np.ndarray, tuple[float, float, float], np.ndarray]]:
    """name -> (level map in display order, layer scale, fraction in display order)."""
    from softseg.anatomy import load_template
    from softseg.geometry import DisplayGeometry
    from softseg.phantom import phantom

    out = {}
    ph = phantom(SHAPE, spacing=(1.0, 1.0, 1.0), n_raters=1, n_lesions=0, supersample=2, seed=0)
    geo = DisplayGeometry.from_affine(ph.affine, ph.truth.shape)
    out["phantom_rim"] = (
        geo.to_display(three_levels(ph.truth)), geo.scale, geo.to_display(ph.truth)
    )
    tpl = load_template()
    geo = DisplayGeometry.from_affine(tpl.affine, tpl.gm.shape)
    out["mni_grey_matter"] = (
        geo.to_display(three_levels(tpl.gm)), geo.scale, geo.to_display(tpl.gm)
    )
    return out


# ------------------------------------------------------------------------- references
def textbook(sparse: np.ndarray, painted: np.ndarray, spacing, n_levels: int) -> np.ndarray:
    """Shape-based interpolation as usually written: full-slice signed distance maps (two
    distance transforms per level and painted slice), linear mix, nested levels; no component
    matching, no holes (an empty painted slice is +inf everywhere: the region vanishes)."""
    sampling = tuple(spacing[1:])
    h = 0.5 * min(sampling)
    out = sparse.copy()

    def sd(mask):
        if not mask.any():
            return np.full(mask.shape, np.inf)
        inside = ndimage.distance_transform_edt(mask, sampling=sampling)
        outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
        return np.where(mask, h - inside, outside - h)

    maps = {(s, k): sd(sparse[s] >= k) for s in painted for k in range(1, n_levels + 1)}
    for a, b in zip(painted[:-1], painted[1:]):
        prev = None
        level = np.zeros((b - a - 1, *sparse.shape[1:]), np.uint8)
        ts = ((np.arange(a + 1, b) - a) / (b - a))[:, None, None]
        for k in range(1, n_levels + 1):
            with np.errstate(invalid="ignore"):
                inside = (1 - ts) * maps[a, k] + ts * maps[b, k] < -1e-6
            if prev is not None:
                inside &= prev
            level += inside
            prev = inside
        out[a + 1 : b] = level
    return out


_MCI_CHILD = """
import sys, time
import numpy as np
import itk

t0 = time.perf_counter()
itk.MorphologicalContourInterpolator  # ITK loads its wrappers on first use
load_s = time.perf_counter() - t0
data = np.load(sys.argv[1])
image = itk.image_from_array(np.ascontiguousarray(data["mask"], dtype=np.uint8))
image.SetSpacing([float(s) for s in data["spacing"][::-1]])  # ITK index order is reversed
c0, t0 = time.process_time(), time.perf_counter()
mci = itk.MorphologicalContourInterpolator.New(image)
mci.SetAxis(data["mask"].ndim - 1)  # numpy axis 0
mci.SetLabel(1)
mci.Update()
out = itk.array_from_image(mci.GetOutput())
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
np.savez(sys.argv[2], out=out, wall=wall, cpu=cpu, load=load_s)
"""


def itk_mci(binary: np.ndarray, spacing, workdir: Path) -> dict | None:
    """ITK's MorphologicalContourInterpolator on a binary map, in a child process.

    A child because ITK 5.4.7's filter corrupts the heap on some inputs (the phantom's rim:
    glibc aborts the process at exit with "malloc_consolidate(): unaligned fastbin chunk"), which
    would kill this benchmark. Returns its output, time (wall, CPU; ITK's own thread pool), ITK's
    load time and the child's exit status; None when ITK is not installed.
    """
    import subprocess

    src, dst = workdir / "mci_in.npz", workdir / "mci_out.npz"
    np.savez(src, mask=np.asarray(binary, np.uint8), spacing=np.asarray(spacing, float))
    proc = subprocess.run(
        [sys.executable, "-c", _MCI_CHILD, str(src), str(dst)], capture_output=True, text=True
    )
    if not dst.exists():
        if "No module named 'itk'" in proc.stderr:
            return None
        raise RuntimeError(f"ITK child failed ({proc.returncode}): {proc.stderr[-500:]}")
    with np.load(dst) as res:
        out = {k: res[k] for k in res.files}
    dst.unlink()
    out["returncode"] = proc.returncode
    out["stderr_tail"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
    return out


# ------------------------------------------------------------------------- brush model
def brush_cover(region: np.ndarray, radius_mm: float, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Greedy cover of a slice's region by brush dabs centred on region voxels.

    Returns (centres (n, 2) voxel indices, painted mask = union of the discs).
    """
    pts = np.argwhere(region)
    if pts.size == 0:
        return np.zeros((0, 2), int), np.zeros(region.shape, bool)
    scale = np.asarray(spacing, float)
    tree = cKDTree(pts * scale)
    neigh = tree.query_ball_point(pts * scale, r=radius_mm)
    uncovered = np.ones(len(pts), bool)
    gains = np.array([len(n) for n in neigh])
    import heapq

    heap = [(-int(g), i) for i, g in enumerate(gains)]
    heapq.heapify(heap)
    chosen = []
    while uncovered.any():
        neg, i = heapq.heappop(heap)
        gain = int(uncovered[neigh[i]].sum())
        if gain == 0:
            continue
        if heap and gain < -heap[0][0]:
            heapq.heappush(heap, (-gain, i))
            continue
        chosen.append(i)
        uncovered[neigh[i]] = False
    centres = pts[chosen]
    painted = np.zeros(region.shape, bool)
    rr = int(np.ceil(radius_mm / min(scale)))
    oy, ox = np.mgrid[-rr : rr + 1, -rr : rr + 1]
    disc = (oy * scale[0]) ** 2 + (ox * scale[1]) ** 2 <= radius_mm**2
    offs = np.column_stack([oy[disc], ox[disc]])
    for c in centres:
        p = c + offs
        ok = (p >= 0).all(1) & (p < region.shape).all(1)
        painted[p[ok, 0], p[ok, 1]] = True
    return centres, painted


def strokes(centres: np.ndarray, painted: np.ndarray, spacing) -> tuple[int, float]:
    """(number of strokes, brush path in mm) for one slice: each connected piece of paint
    (8-connected union of the dabs) is one drag, whose path is the minimum spanning tree of
    its dabs (the shortest network joining them)."""
    if len(centres) == 0:
        return 0, 0.0
    pieces, n_pieces = ndimage.label(painted, structure=np.ones((3, 3), bool))
    owner = pieces[tuple(centres.T)]
    pos = centres * np.asarray(spacing, float)
    path = 0.0
    for piece in range(1, n_pieces + 1):
        p = pos[owner == piece]
        if len(p) > 1:
            dist = np.linalg.norm(p[:, None] - p[None], axis=-1)
            path += float(minimum_spanning_tree(dist).sum())
    return int(n_pieces), path


def rater_effort(fraction: np.ndarray, spacing, first: int, radius_mm: float) -> dict:
    from softseg.interpolate import interpolate_levels

    truth = fraction[first : first + 30] >= 0.5
    sp = tuple(spacing[1:])
    plans = {"every_slice": list(range(30)), "every_5th_and_interpolate": [*range(0, 30, 5), 29]}
    out = {}
    for name, slices in plans.items():
        painted = np.zeros(truth.shape, np.uint8)
        n_dabs = n_strokes = 0
        path = 0.0
        for s in slices:
            centres, mask = brush_cover(truth[s], radius_mm, sp)
            painted[s] = mask
            st, length = strokes(centres, mask, sp)
            n_dabs += len(centres)
            n_strokes += st
            path += length
        t0 = time.perf_counter()
        if len(slices) < 30:
            painted = interpolate_levels(painted, painted=slices, spacing=spacing).filled
        elapsed = time.perf_counter() - t0
        out[name] = {
            "painted_slices": slices,
            "strokes": n_strokes,
            "dabs": n_dabs,
            "brush_path_mm": round(path, 1),
            "interpolate_s": round(elapsed, 4) if len(slices) < 30 else 0.0,
            "dice_vs_truth": round(dice(painted, truth), 4),
            "dice_painted_slices_only": round(dice(painted[slices], truth[slices]), 4),
        }
    full, sparse = out["every_slice"], out["every_5th_and_interpolate"]
    out["stroke_ratio"] = round(sparse["strokes"] / full["strokes"], 3)
    out["dice_loss"] = round(full["dice_vs_truth"] - sparse["dice_vs_truth"], 4)
    return out


# ------------------------------------------------------------------------------- main
def main() -> int:
    from softseg.interpolate import interpolate_levels

    t0 = time.perf_counter()
    data = structures()
    print(f"structures ready in {time.perf_counter() - t0:.1f} s")
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="softseg-bench-"))
    itk_load_s = None
    itk_version = None

    report: dict = {
        "benchmark": "interpolation",
        "shape_display_order": None,
        "step": STEP,
        "goal_s": 1.0,
        "structures": {},
    }
    for name, (levels, scale, fraction) in data.items():
        n = levels.shape[0]
        painted = np.arange(0, n, STEP)
        sparse = np.zeros_like(levels)
        sparse[painted] = levels[painted]
        inner = slice(int(painted[0]), int(painted[-1]) + 1)
        report["shape_display_order"] = list(levels.shape)

        ours_t, res = timed(
            lambda: interpolate_levels(sparse, axis=0, painted=painted, spacing=scale, n_levels=3),
            5, f"{name}_softseg",
        )
        edt_t, _ = timed(
            lambda: ndimage.distance_transform_edt(levels == 0, sampling=scale), 2, f"{name}_edt"
        )
        book_t, book = timed(lambda: textbook(sparse, painted, scale, 3), 1, f"{name}_textbook")
        entry = {
            "painted_slices": int(painted.size),
            "filled_slices": len(res.interpolated),
            "voxels_level_ge_1": int(np.count_nonzero(levels)),
            "softseg_s": ours_t,
            "softseg_median_s": statistics.median(ours_t),
            "softseg_median_cpu_s": CPU[f"{name}_softseg"],
            "full_volume_edt_median_s": statistics.median(edt_t),
            "textbook_full_slice_edt_s": book_t[0],
            "textbook_full_slice_edt_cpu_s": CPU[f"{name}_textbook"],
            "full_volume_edt_median_cpu_s": CPU[f"{name}_edt"],
            "ratio_softseg_to_one_edt": statistics.median(ours_t) / statistics.median(edt_t),
            "speedup_vs_textbook": book_t[0] / statistics.median(ours_t),
            "speedup_vs_textbook_cpu": CPU[f"{name}_textbook"] / CPU[f"{name}_softseg"],
            "dice_per_level": {
                str(k): round(dice(res.filled[inner] >= k, levels[inner] >= k), 4)
                for k in (1, 2, 3)
            },
            "dice_per_level_textbook": {
                str(k): round(dice(book[inner] >= k, levels[inner] >= k), 4) for k in (1, 2, 3)
            },
            "pass_cpu": CPU[f"{name}_softseg"] <= 1.0,
            "pass_wall": statistics.median(ours_t) <= 1.0,
        }
        child = itk_mci(sparse >= 1, scale, workdir)
        if child is not None:
            mci = child["out"]
            itk_load_s = float(child["load"])
            entry["itk_mci_level1_s"] = float(child["wall"])
            entry["itk_mci_level1_cpu_s"] = float(child["cpu"])
            entry["itk_child_exit_status"] = int(child["returncode"])
            entry["itk_child_stderr"] = child["stderr_tail"]
            entry["dice_level1_itk_mci"] = round(dice(mci[inner] > 0, levels[inner] >= 1), 4)
            entry["dice_level1_softseg_vs_itk_mci"] = round(
                dice(mci[inner] > 0, res.filled[inner] >= 1), 4
            )
        report["structures"][name] = entry
        print(
            f"{name}: softseg {entry['softseg_median_s']:.3f} s wall / "
            f"{entry['softseg_median_cpu_s']:.3f} s CPU (goal 1 s); one full EDT "
            f"{entry['full_volume_edt_median_s']:.3f} s; textbook {book_t[0]:.2f} s; "
            + (f"ITK MCI {entry['itk_mci_level1_s']:.2f} s; " if child is not None else "")
            + f"Dice per level {entry['dice_per_level']} "
            + f"(textbook {entry['dice_per_level_textbook']}"
            + (f", ITK level 1 {entry['dice_level1_itk_mci']}" if child is not None else "") + ")"
        )

    levels, scale, fraction = data["phantom_rim"]
    first = levels.shape[0] // 2 - 15
    report["rater_effort_phantom_rim_30_slices"] = {
        "slices_display_order": [first, first + 29],
        "truth": "partial-volume fraction >= 0.5",
        "by_brush_radius_mm": {
            str(r): rater_effort(fraction, scale, first, r) for r in (1.0, 2.0)
        },
    }
    for r, eff in report["rater_effort_phantom_rim_30_slices"]["by_brush_radius_mm"].items():
        a, b = eff["every_slice"], eff["every_5th_and_interpolate"]
        print(
            f"rim, 30 slices, brush radius {r} mm: every slice {a['strokes']} strokes "
            f"({a['dabs']} dabs, Dice {a['dice_vs_truth']}); every 5th + interpolate "
            f"{b['strokes']} strokes ({b['dabs']} dabs, Dice {b['dice_vs_truth']})"
        )
    import scipy

    try:
        from importlib.metadata import version

        itk_version = version("itk-core")
    except Exception:  # noqa: BLE001 - not installed
        itk_version = None
    report["itk_load_s"] = itk_load_s
    report["load_average_at_end"] = list(os.getloadavg())
    report["note"] = (
        "wall-clock medians on a 2-core machine shared with other jobs (see load_average_at_end); "
        "softseg_median_cpu_s is this process's CPU time (single-threaded code, so it is the "
        "wall time on an idle core). ITK's filter runs on ITK's thread pool (CPU may exceed wall)."
    )
    report["machine"] = machine(scipy=scipy.__version__, itk=itk_version)
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    save_result(RESULT, report)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
