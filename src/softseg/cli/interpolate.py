"""``softseg interpolate``: fill the slices between a rater's painted slices.

RATER is a confidence level map (whole numbers 0..K, 0 = background; a binary mask is K = 1)
with its JSON sidecar giving the confidence scale (:mod:`softseg.sidecar`), or, with
``--classes K`` / ``--dataset-json FILE``, a multi-class integer label map (0 = background,
classes 1..K). The slices between painted slices are filled by shape-based interpolation
(:func:`softseg.interpolate.interpolate_levels` / :func:`~softseg.interpolate.interpolate_labels`,
the engine the viewer uses); painted slices are written back bit for bit.

The slice axis defaults to the viewer's slice axis: the file axis closest to superior-inferior
(axial slices, :data:`softseg.geometry.DISPLAY_AXCODES`), whatever order the file stores its
voxels in. The painted slices are the slices holding paint, unless ``--slices`` lists them
(then a listed slice without paint is an *empty painted slice*: the structure ends there).

OUT gets RATER's geometry (affine and header) and dtype, and OUT.json the input's sidecar
(scale, rater, class, pre-annotation, every other key) with an ``"interpolation"`` record:
method, file axis, painted and interpolated slices (file indices along that axis), voxels
changed, source file and software. OUT and OUT.json appear together or not at all
(:class:`softseg.outputs.OutputSet`); an existing OUT is refused without ``--overwrite``.

Refused (one line, exit 2, nothing written): a soft map (fractional values or a sidecar of kind
"soft"); confidence levels without a scale; levels above the sidecar's scale (those slices were
painted with another, larger scale; the message names them); fewer than two painted slices; a
label above the classes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from softseg.errors import InputError

__all__ = ["HELP", "add_arguments", "parse_slices", "run", "slice_axis"]

HELP = "fill the slices between a rater's painted slices (shape-based, per confidence level)"

_ORIENTATION = {
    "S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "rater",
        metavar="RATER",
        help="painted confidence level map (.nii/.nii.gz) with its JSON sidecar (the scale), "
        "or a binary mask; with --classes/--dataset-json a multi-class label map",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.nii.gz", help="filled map to write"
    )
    parser.add_argument(
        "--axis",
        choices=("auto", "0", "1", "2"),
        default="auto",
        help="slice axis in the file's voxel order; auto (default) = the viewer's slice axis, "
        "the file axis closest to superior-inferior (axial slices)",
    )
    parser.add_argument(
        "--slices",
        default=None,
        metavar="LIST",
        help="the painted slices along the axis, e.g. 10,15,20-22 (default: the slices that hold "
        "paint); a listed slice without paint is painted empty: the structure ends there",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        metavar="K",
        help="RATER is a multi-class label map with classes 1..K (0 = background)",
    )
    parser.add_argument(
        "--dataset-json",
        default=None,
        metavar="FILE",
        help="a dataset.json whose \"classes\" (or nnU-Net \"labels\") name the classes of a "
        "multi-class label map (instead of --classes)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT and its sidecar if they exist"
    )
    parser.add_argument("--json", action="store_true", help="print the record as JSON on stdout")


def parse_slices(text: str) -> list[int]:
    """``"10,15,20-22"`` -> ``[10, 15, 20, 21, 22]`` (indices >= 0, ranges inclusive).

    Raises
    ------
    InputError
        Anything else (the message shows the expected form).
    """
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if m is None:
            raise InputError(
                f"--slices: {part!r} is not a slice index or range; give e.g. 10,15,20-22"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError(f"--slices: range {part!r} runs backwards; write it as {hi}-{lo}")
        out.extend(range(lo, hi + 1))
    return out


def slice_axis(volume: Any) -> int:
    """The file axis that the viewer puts on its slice slider (closest to superior-inferior).

    Parameters
    ----------
    volume : softseg.io.Volume

    Returns
    -------
    int
        0, 1 or 2.
    """
    from softseg.geometry import display_geometry

    transform = display_geometry(volume).transform
    return next(i for i, (display_axis, _flip) in enumerate(transform) if int(display_axis) == 0)


def run(args: argparse.Namespace) -> int:
    from softseg import __version__
    from softseg.confidence import detect_label_kind
    from softseg.dataset_json import class_list
    from softseg.fusion import as_label_maps
    from softseg.geometry import display_geometry, voxel_size
    from softseg.interpolate import interpolate_labels, interpolate_levels
    from softseg.io import is_nifti_path, load_volume, nifti_image, sidecar_path
    from softseg.outputs import OutputSet
    from softseg.sidecar import RaterSidecar, read_rater_sidecar

    rater, out = Path(args.rater), Path(args.output)
    if not is_nifti_path(out):
        raise InputError(f"{out}: output must end in .nii or .nii.gz")
    classes = class_list(count=args.classes, dataset_json=args.dataset_json)
    painted = parse_slices(args.slices) if args.slices is not None else None
    # every output checked (exists, folder writable) before any work
    outputs = OutputSet([out, sidecar_path(out)], overwrite=args.overwrite)

    side = read_rater_sidecar(rater)
    vol = load_volume(rater, label=True, what="rater map")
    name = str(rater)
    if side is not None and side.kind == "soft":
        raise InputError(
            f"{name}: its sidecar says it is a soft map (kind \"soft\"); interpolation fills "
            "painted confidence levels: give the level map the rater painted"
        )
    axis = slice_axis(vol) if args.axis == "auto" else int(args.axis)
    spacing = voxel_size(vol)
    if classes is None:
        scale = side.scale if side is not None else None
        kind = detect_label_kind(vol.array, name=name)
        if kind == "levels" and scale is None:
            raise InputError(
                f"{name}: holds confidence levels up to {int(vol.array.max())} but has no "
                f"confidence scale ({sidecar_path(rater).name} with \"softseg_confidence\"); the "
                "scale is needed to check the levels and is carried to the output: save the rater "
                "with its sidecar (Soft annotation's Export) or write the sidecar"
            )
        result = interpolate_levels(
            vol.array, axis=axis, painted=painted, spacing=spacing,
            n_levels=None if scale is None else scale.n_levels, name=name,
        )
    else:
        (labels,), _k = as_label_maps(vol.array[None], min_raters=1, what="softseg interpolate", names=[name])
        classes.check_label_values(labels, name)
        result = interpolate_labels(
            labels, axis=axis, painted=painted, spacing=spacing, n_classes=classes.k, name=name
        )
    code = display_geometry(vol).file_axcodes[axis]
    record = {
        **result.as_record(),
        "axis_code": code,
        "orientation": _ORIENTATION.get(code, "oblique"),
        "source": str(rater),
        "software": f"softseg {__version__}",
    }
    if classes is not None:
        record["classes"] = ["background", *classes.names]
    base = side if side is not None else RaterSidecar(kind="labels")
    sidecar = base.with_(extra={**base.extra, "interpolation": record}).to_json()
    filled = result.filled
    if filled.dtype != vol.array.dtype:  # a label map checked into uint8: keep the file's dtype
        filled = filled.astype(vol.array.dtype)
    with outputs:
        outputs.save_image(out, nifti_image(out, filled, like=vol))
        outputs.write_json(sidecar_path(out), sidecar)

    if args.json:
        summary = {"output": str(out), "sidecar": str(sidecar_path(out)), **record}
        print(json.dumps(summary, indent=2))
    else:
        n_fill, n_paint = len(result.interpolated), len(result.painted)
        what = (
            f"filled {n_fill} slice{'s' if n_fill != 1 else ''} between {n_paint} painted slices"
            if n_fill
            else f"nothing to fill: the {n_paint} painted slices are contiguous"
        )
        print(
            f"softseg interpolate: {what} along file axis {axis} ({record['orientation']}, "
            f"{code}), {result.n_changed} voxels changed -> {out} ({filled.dtype})"
        )
    return 0
