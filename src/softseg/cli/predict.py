"""``softseg predict``: soft predictions of images with a model file, in their native geometry.

Inputs are NIfTI files (single-channel models), subject folders (``image.nii.gz`` or
``image_<contrast>.nii.gz``, channels sorted by contrast name as in training) or dataset folders
(one prediction per subject). Each prediction is written as ``OUTDIR/<name>_pred.nii.gz``
(float32 probabilities, or uint8 0/1 with ``--binarize`` at the model's optimal threshold) with the
input's affine and header, plus a JSON sidecar (threshold, candidate, model file, sources).
Every input and output is checked before the first prediction, and all the outputs of a run are
one :class:`softseg.outputs.OutputSet`: they appear together at the end, or not at all.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from softseg.errors import InputError

__all__ = ["HELP", "add_arguments", "collect_inputs", "run"]

HELP = "predict soft segmentations of NIfTI images with a model file (native geometry, float32)"

_IMAGE_RE = re.compile(r"^image(?:_(?P<contrast>.+))?\.nii(?:\.gz)?$", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model file written by softseg train (.safetensors)")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="NIfTI image, subject folder or dataset folder")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder (created if its parent exists)")
    parser.add_argument("--binarize", action="store_true", help="write 0/1 masks at the model's optimal threshold instead of probabilities")
    parser.add_argument("--threshold", type=float, help="binarisation threshold (default: the model's optimal threshold)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default adapts to memory)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    parser.add_argument("--json", action="store_true", help="print a JSON summary of the written files on stdout")


def _subject_images(folder: Path) -> list[Path]:
    found = {}
    for f in sorted(folder.iterdir()):
        m = _IMAGE_RE.match(f.name)
        if m and f.is_file():
            found[m.group("contrast") or ""] = f
    if "" in found and len(found) > 1:
        raise InputError(f"{folder}: mixes image.nii.gz with image_<contrast> files; use one naming scheme")
    return [found[k] for k in sorted(found)]


def collect_inputs(paths: list[str]) -> list[tuple[str, list[Path]]]:
    """``(name, [channel files])`` for each prediction to make, in order."""
    from softseg.io import check_regular_file, is_nifti_path

    out: list[tuple[str, list[Path]]] = []
    for text in paths:
        p = Path(text)
        if not p.is_dir():  # FIFO, device, link loop, broken link: refused with their own message
            check_regular_file(p, what="image")
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_file():
            if not is_nifti_path(p):
                raise InputError(f"{p}: not a NIfTI file (.nii or .nii.gz)")
            name = p.name[: -len(".nii.gz")] if p.name.lower().endswith(".nii.gz") else p.name[: -len(".nii")]
            out.append((p.parent.name if _IMAGE_RE.match(p.name) else name, [p]))
            continue
        images = _subject_images(p)
        if images:
            out.append((p.name, images))
            continue
        subs = [s for s in sorted(p.iterdir()) if s.is_dir() and not s.name.startswith(".")]
        found = [(s.name, _subject_images(s)) for s in subs]
        found = [(n, imgs) for n, imgs in found if imgs]
        if found:
            out.extend(found)
            continue
        files = [f for f in sorted(p.iterdir()) if f.is_file() and is_nifti_path(f)]
        if not files:
            raise InputError(f"{p}: no NIfTI images found (expected image.nii.gz, subject folders or .nii.gz files)")
        for f in files:
            name = f.name[: -len(".nii.gz")] if f.name.lower().endswith(".nii.gz") else f.name[: -len(".nii")]
            out.append((name, [f]))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"several inputs would be written as {', '.join(dupes)}; predict them into different folders")
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from softseg import __version__
    from softseg.io import check_nifti, load_volume, nifti_image, sidecar_path
    from softseg.modelfile import load_model, read_card
    from softseg.outputs import OutputSet
    from softseg.predict import predict_volume

    card = read_card(args.model)  # refuses pickles / foreign files / bad cards before anything else
    channels = list(card.channels)
    if args.threshold is None:
        threshold = card.threshold
    else:
        threshold = float(args.threshold)
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise InputError(f"--threshold must lie in [0, 1]; got {args.threshold}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1; got {args.batch_size}")
    jobs = collect_inputs(args.inputs)
    for name, files in jobs:
        if len(files) != len(channels):
            raise InputError(
                f"{name}: {len(files)} image(s) but the model expects {len(channels)} channel(s) "
                f"({', '.join(channels)}); give a subject folder with image_<contrast>.nii.gz files"
            )
        shapes = {check_nifti(f).shape for f in files}  # headers only: nothing allocated
        if len(shapes) > 1:
            raise InputError(f"{name}: channel images have different shapes {sorted(shapes)}")
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: exists and is not a folder")
    if not outdir.exists():
        parent = outdir.parent if str(outdir.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"{outdir}: parent folder {parent} does not exist; create it first")
    targets = [outdir / f"{name}_pred.nii.gz" for name, _ in jobs]
    # one output set over every prediction and its sidecar: all appear, or none (a bad later
    # input, Ctrl-C or a full disk leave nothing, not even the output folder)
    outs = OutputSet([f for t in targets for f in (t, sidecar_path(t))], overwrite=args.overwrite, make_dirs=True)
    loaded = load_model(args.model)
    written = []
    with outs:
        for (name, files), target in zip(jobs, targets):
            vols = [load_volume(f) for f in files]
            prob = predict_volume(loaded, vols, device=args.device, batch_size=args.batch_size)
            data = (prob >= threshold).astype(np.uint8) if args.binarize else prob
            side = {
                "model": str(Path(args.model).resolve()),
                "candidate": card.candidate.name,
                "candidate_title": card.candidate.title,
                "threshold": threshold,
                "binarized": bool(args.binarize),
                "kind": "mask" if args.binarize else "probability",
                "sources": [str(f.resolve()) for f in files],
                "softseg_version": __version__,
            }
            outs.save_image(target, nifti_image(target, data, like=vols[0]))
            outs.write_json(sidecar_path(target), side)
            written.append({"name": name, "path": str(target), "sidecar": str(sidecar_path(target))})
    if not args.json:
        for item in written:
            print(item["path"], file=sys.stderr)
    if args.json:
        print(json.dumps({"model": str(args.model), "threshold": threshold, "outputs": written}))
    return 0

