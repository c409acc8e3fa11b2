"""``softseg predict``: soft predictions of images with a model file, in their native geometry.

Inputs are NIfTI files (single-channel models), subject folders (``image.nii.gz`` or
``image_<contrast>.nii.gz``, channels sorted by contrast name as in training) or dataset folders
(one prediction per subject). Each prediction is written as ``OUTDIR/<name>_pred.nii.gz``
(float32 probabilities, or uint8 0/1 with ``--binarize`` at the model's optimal threshold) with the
input's affine and header, plus a JSON sidecar (threshold, candidate, model file, sources).

A K-class model (DESIGN decision 11; contract in docs/training.md) writes, per input,
``OUTDIR/<name>_label-<class>.nii.gz`` for each class (float32 probabilities; background +
classes sum to 1 within 1e-5 at every voxel; with ``--binarize`` uint8 0/1 at each class's own
optimal threshold, or ``--threshold``) and ``OUTDIR/<name>_labels.nii.gz``, the argmax label map
(uint8, 0 = background, k = class k), **always**: it is the decision of a K-class model, and the
one file a label-map tool reads. ``<class>`` is the class's file key (the dataset.json short key
recorded in the card, else the name with spaces as ``-``). Each file has a JSON sidecar.

With ``--mc-dropout N`` (MC dropout, Gal & Ghahramani 2016: dropout kept on, N passes) or
``--tta N`` (test-time augmentation, Wang et al. 2019: pass 0 untransformed, the others random
flips and the model's training affine family, mapped back), the prediction is the **mean** of the
N passes (:func:`softseg.uncertainty.predict_with_uncertainty`), and two per-voxel maps are
written beside it (float32, the input's geometry, with sidecars): ``<name>_entropy.nii.gz``, the
predictive entropy of the mean in **nats** (binary entropy for one class, in [0, ln 2]; over the
K+1 classes of a K-class model, in [0, ln(K+1)]), and ``<name>_variance.nii.gz``, the population
variance of the N passes' probabilities (K classes: ``<name>_label-<class>_variance.nii.gz`` per
class). The two options exclude each other.

With several model files given as ``-m/--model MODEL`` (repeated: ``softseg predict -m A -m B
IMAGE... -o OUTDIR``; one ``-m`` is the same as the plain ``softseg predict MODEL IMAGE...``), the
models are an **ensemble** (Lakshminarayanan et al. 2017; the label-fusion paper's rater ensemble,
one model per rater): every member predicts each input in its native geometry and the prediction
is the **mean** of their probability maps (:func:`softseg.uncertainty.predict_ensemble`, the
mean the protocol's ``NAME:ensemble`` candidates use), written with the same ``_entropy`` (nats,
of the mean) and ``_variance`` (between-member population variance) files as above, all in the
same output set. The members must have the same classes, input channels and network outputs
(otherwise one line naming two files and what differs, exit 2, nothing written); their training
spacing may differ (each predicts in native geometry). The ensemble's threshold (``--binarize``,
sidecars) is the **mean of the members' optimal thresholds** (per class), unless ``--threshold``
gives one. ``--mc-dropout`` / ``--tta`` are refused with an ensemble (its uncertainty is the
members' spread).

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
from typing import Any

from softseg.errors import InputError

__all__ = ["HELP", "add_arguments", "collect_inputs", "run"]

HELP = "predict soft segmentations of NIfTI images with a model file (native geometry, float32)"

_IMAGE_RE = re.compile(r"^image(?:_(?P<contrast>.+))?\.nii(?:\.gz)?$", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # MODEL is optional so that `-m A -m B IMAGE...` reads its first positional as an image
    parser.add_argument("model", metavar="MODEL", nargs="?", help="model file written by softseg train (.safetensors); leave it out when the models are given with -m")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="NIfTI image, subject folder or dataset folder")
    parser.add_argument("-m", "--model", dest="models", action="append", metavar="MODEL", help="a model file; repeat for an ensemble (-m A -m B IMAGE...): the prediction is the mean of the models' probability maps, written with <name>_entropy (nats) and <name>_variance (between models) maps; threshold: the mean of the models' thresholds unless --threshold")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder (created if its parent exists)")
    parser.add_argument("--binarize", action="store_true", help="write 0/1 masks at the model's optimal threshold instead of probabilities (K classes: each class at its own threshold; the argmax label map is always written)")
    parser.add_argument("--threshold", type=float, help="binarisation threshold (default: the model's optimal threshold; K classes: for every class)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default adapts to memory)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    parser.add_argument("--json", action="store_true", help="print a JSON summary of the written files on stdout")
    parser.add_argument("--mc-dropout", type=int, metavar="N", help="MC dropout (Gal & Ghahramani 2016): N passes with dropout kept on; writes the mean as the prediction plus <name>_entropy (nats) and <name>_variance maps")
    parser.add_argument("--tta", type=int, metavar="N", help="test-time augmentation (Wang et al. 2019): N passes (the first untransformed, the others random flips and the model's training affine family, mapped back); writes the mean plus <name>_entropy (nats) and <name>_variance maps")


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


def output_files(outdir: Path, name: str, card: Any) -> dict[str, Path]:
    """The prediction files of one input: ``{"": <name>_pred}`` for one class; K classes:
    ``{<class name>: <name>_label-<key>, ..., "labels": <name>_labels}`` (all ``.nii.gz``)."""
    from softseg.dataset_json import class_file_path, class_key

    if len(card.classes) == 1:
        return {"": outdir / f"{name}_pred.nii.gz"}
    keys = card.class_keys or tuple(class_key(c) for c in card.classes)
    files = {c: class_file_path(outdir / f"{name}.nii.gz", key) for c, key in zip(card.classes, keys)}
    files["labels"] = outdir / f"{name}_labels.nii.gz"
    return files


def uncertainty_files(outdir: Path, name: str, card: Any) -> dict[str, Path]:
    """The uncertainty maps of one input: ``{"entropy": <name>_entropy, "variance": <name>_variance}``
    for one class; K classes: the entropy and ``<name>_label-<key>_variance`` per class name."""
    from softseg.dataset_json import class_key

    files = {"entropy": outdir / f"{name}_entropy.nii.gz"}
    if len(card.classes) == 1:
        files["variance"] = outdir / f"{name}_variance.nii.gz"
        return files
    keys = card.class_keys or tuple(class_key(c) for c in card.classes)
    for cls, key in zip(card.classes, keys):
        files[cls] = outdir / f"{name}_label-{key}_variance.nii.gz"
    return files


def _uncertainty_option(args: argparse.Namespace) -> tuple[str, int] | None:
    """``(method, passes)`` from ``--mc-dropout`` / ``--tta``, or None; one-line refusals."""
    chosen = [(flag, method, n) for flag, method, n in (
        ("--mc-dropout", "mc_dropout", getattr(args, "mc_dropout", None)),
        ("--tta", "tta", getattr(args, "tta", None))) if n is not None]
    if len(chosen) > 1:
        raise InputError("--mc-dropout and --tta exclude each other; choose one uncertainty method")
    if not chosen:
        return None
    flag, method, n = chosen[0]
    if n < 1:
        raise InputError(f"{flag} needs the number of passes, a whole number >= 1 (e.g. 10); got {n}")
    return method, n


def model_arguments(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``(model files, inputs)`` from the positional MODEL and the repeated ``-m/--model``.

    Without ``-m`` the first positional is the model (``softseg predict MODEL IMAGE...``); with
    ``-m`` every positional is an input. One-line refusals: no model, no input, a model file
    among the inputs when ``-m`` is used.
    """
    inputs = ([args.model] if args.model is not None else []) + list(args.inputs or [])
    models = list(getattr(args, "models", None) or [])
    if not models:
        if len(inputs) < 2:
            raise InputError("give a model file and the image(s) to predict: softseg predict MODEL "
                             "IMAGE... (or -m MODEL [-m MODEL ...] IMAGE...)")
        return [inputs[0]], inputs[1:]
    for text in inputs:
        if str(text).lower().endswith(".safetensors"):
            raise InputError(f"{text}: a model file among the images; with -m give every model "
                             f"with its own -m (-m {text})")
    if not inputs:
        raise InputError("give the image(s) to predict after the -m models")
    return models, inputs


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from softseg import __version__
    from softseg.io import check_nifti, load_volume, sidecar_path
    from softseg.modelfile import load_model, read_card
    from softseg.outputs import OutputSet
    from softseg.predict import class_labels, predict_volume
    from softseg.uncertainty import ENSEMBLE, ENSEMBLE_DESCRIPTION, check_members, ensemble_card
    from softseg.uncertainty import METHODS as UNCERTAINTY_METHODS
    from softseg.uncertainty import predict_ensemble, predict_with_uncertainty, uncertainty_forward

    models, inputs = model_arguments(args)
    # refuses pickles / foreign files / bad cards before anything else
    cards = [read_card(m) for m in models]
    card = cards[0]
    ensemble = len(models) > 1
    if ensemble:
        check_members(cards, models)
    card_out = ensemble_card(cards) if ensemble else card  # the ensemble's name and thresholds
    channels = list(card.channels)
    if args.threshold is None:
        thresholds = [float(t) for t in card_out.thresholds]
    else:
        value = float(args.threshold)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InputError(f"--threshold must lie in [0, 1]; got {args.threshold}")
        thresholds = [value] * len(card.classes)
    threshold = thresholds[0]
    uncertainty = _uncertainty_option(args)
    if ensemble and uncertainty:
        flag = "--mc-dropout" if uncertainty[0] == "mc_dropout" else "--tta"
        raise InputError(f"{flag} and an ensemble of {len(models)} models exclude each other: the "
                         f"ensemble's uncertainty is the spread of its models; use {flag} with one model")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1; got {args.batch_size}")
    jobs = collect_inputs(inputs)
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
    targets = [output_files(outdir, name, card) for name, _ in jobs]
    extras = [uncertainty_files(outdir, name, card) if uncertainty or ensemble else {} for name, _ in jobs]
    members = [load_model(m) for m in models]
    loaded = members[0]
    if uncertainty:  # refused here (no dropout layers, ...) before anything is written
        uncertainty_forward(loaded, *uncertainty)
    model_paths = [str(Path(m).resolve()) for m in models]
    # one output set over every prediction and its sidecar: all appear, or none (a bad later
    # input, Ctrl-C or a full disk leave nothing, not even the output folder)
    paths = [f for t in (*targets, *extras) for p in t.values() for f in (p, sidecar_path(p))]
    outs = OutputSet(paths, overwrite=args.overwrite, make_dirs=True)
    written = []
    with outs:
        for (name, files), target, extra in zip(jobs, targets, extras):
            vols = [load_volume(f) for f in files]
            try:
                if ensemble:
                    maps = predict_ensemble(members, vols, device=args.device,
                                            batch_size=args.batch_size)
                    prob = maps.mean
                elif uncertainty:
                    maps = predict_with_uncertainty(loaded, vols, method=uncertainty[0],
                                                    n=uncertainty[1], device=args.device,
                                                    batch_size=args.batch_size)
                    prob = maps.mean
                else:
                    prob = predict_volume(loaded, vols, device=args.device,
                                          batch_size=args.batch_size)
            except InputError as exc:  # the engine sees arrays: name the file(s) here
                raise InputError(f"{', '.join(str(f) for f in files)}: {exc}") from None
            side = {
                "model": " + ".join(model_paths),
                "candidate": card.candidate.name,
                "candidate_title": card.candidate.title,
                "threshold": threshold,
                "binarized": bool(args.binarize),
                "kind": "mask" if args.binarize else "probability",
                "sources": [str(f.resolve()) for f in files],
                "softseg_version": __version__,
            }
            if ensemble:
                side.update(candidate=card_out.candidate.name, candidate_title=card_out.candidate.title,
                            models=model_paths)
            unc_items: dict[str, str] = {}
            if uncertainty or ensemble:
                if ensemble:
                    info = {"method": ENSEMBLE, "passes": len(models), "seed": None,
                            "description": ENSEMBLE_DESCRIPTION,
                            "threshold_rule": ("--threshold" if args.threshold is not None
                                               else "mean of the models' optimal thresholds")}
                else:
                    method, n = uncertainty
                    info = {"method": method, "passes": n, "seed": 0, "description": UNCERTAINTY_METHODS[method]}
                side["uncertainty"] = {**info, **{key: str(p) for key, p in extra.items()}}
                base = {k: v for k, v in side.items() if k not in ("threshold", "binarized", "uncertainty")}
                ent_side = {**base, **info, "kind": "entropy", "unit": "nats",
                            "definition": "predictive entropy of the mean probability (natural log)"}
                unc_items["entropy"] = _save(outs, extra["entropy"], maps.entropy, None, False, ent_side,
                                             like=vols[0])["path"]
                var_side = {**base, **info, "kind": "variance", "unit": "probability squared",
                            "definition": ("population variance of the models' probabilities" if ensemble
                                           else "population variance of the passes' probabilities")}
                if len(card.classes) == 1:
                    unc_items["variance"] = _save(outs, extra["variance"], maps.variance, None, False, var_side,
                                                  like=vols[0])["path"]
                else:
                    for k, cls in enumerate(card.classes, start=1):
                        unc_items[f"variance {cls}"] = _save(outs, extra[cls], maps.variance[k], None, False,
                                                             {**var_side, "class": cls}, like=vols[0])["path"]
            if len(card.classes) == 1:
                item = _save(outs, target[""], prob, threshold, args.binarize, side, like=vols[0])
                written.append({"name": name, **item, **unc_items})
                continue
            classes = list(card.classes)
            per_class = []
            for k, (cls, t) in enumerate(zip(classes, thresholds), start=1):
                extra = {"threshold": t, "class": cls, "classes": classes}
                per_class.append({"class": cls, **_save(outs, target[cls], prob[k], t, args.binarize,
                                                        {**side, **extra}, like=vols[0])})
            labels = class_labels(prob)
            label_side = {**side, "threshold": None, "binarized": True, "kind": "labels", "classes": classes,
                          "decision": "argmax (0 = background, k = class k; ties to the lower index)"}
            item = _save(outs, target["labels"], labels, None, False, label_side, like=vols[0])
            written.append({"name": name, **item, "labels": item["path"], "classes": per_class, **unc_items})
    if not args.json:
        for item in written:
            print(item["path"], file=sys.stderr)
            for key in item:
                if key == "entropy" or key.startswith("variance"):
                    print(item[key], file=sys.stderr)
    if args.json:
        doc = {"model": str(models[0]) if not ensemble else None, "threshold": threshold, "outputs": written}
        if ensemble:
            doc["models"] = [str(m) for m in models]
        if len(card.classes) > 1:
            doc.update(threshold=None, thresholds=dict(zip(card.classes, thresholds)))
        print(json.dumps(doc))
    return 0


def _save(outs: Any, target: Path, data: Any, threshold: float | None, binarize: bool,
          side: dict[str, Any], *, like: Any) -> dict[str, str]:
    """Write one prediction map (thresholded when asked) and its sidecar into the output set."""
    import numpy as np

    from softseg.io import nifti_image, sidecar_path

    if binarize and threshold is not None:
        data = (data >= threshold).astype(np.uint8)
    outs.save_image(target, nifti_image(target, data, like=like))
    outs.write_json(sidecar_path(target), side)
    return {"path": str(target), "sidecar": str(sidecar_path(target))}

