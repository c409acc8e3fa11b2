"""Sample data: "MNI brain (real T1, tissue classes)" and "SoftSeg phantom".

**MNI brain** (:func:`softseg_mni`): a subject made by :mod:`softseg.anatomy` from the MNI ICBM152
2009a template shipped in nilearn — the T1w image, the partial-volume truth of each tissue class
as a soft layer (``truth · grey matter`` ...) and, per rater and class, a Labels layer
(``rater-1 · grey matter`` ...). The annotate widget paints one class per layer this round, so
each rater's classes are separate layers (metadata: rater id, and the class as
``{"index": k, "name": ...}`` under :data:`~napari_softseg._metadata.CLASS_KEY`). The subject is
generated once and kept in the user cache (:func:`softseg.anatomy.cached_subject`), so it opens
in about a second after the first time.

**Phantom** (:func:`softseg_phantom`): rendered by :func:`softseg.phantom.phantom` (a
partial-volume phantom, see there) and shown in display order with the phantom's geometry, so
every layer can be saved back as NIfTI.

Importing this module imports neither napari nor Qt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from softseg.phantom import DEFAULT_SHAPE, phantom
from softseg.geometry import DisplayGeometry

from napari_softseg._layers import RATER_KEY, SOURCE_KEY, layer_data_tuple
from napari_softseg._metadata import CLASS_KEY

__all__ = [
    "CLASS_COLOURS",
    "MNI_SAMPLE",
    "mni_layers",
    "phantom_layers",
    "softseg_mni",
    "softseg_phantom",
    "subject_layers",
]

LayerData = tuple[Any, dict[str, Any], str]

#: The subject the sample (and ``softseg demo``) shows by default.
MNI_SAMPLE: dict[str, Any] = {"seed": 0, "target": "tissue", "spacing": 2.0, "n_raters": 4}
#: class -> (Labels colour of the raters' layers, colormap of the soft truth layer).
CLASS_COLOURS: dict[str, tuple[str, str]] = {
    "grey matter": ("#ff9d2e", "bop orange"),
    "white matter": ("#3d9df2", "bop blue"),
    "csf": ("#f5e642", "yellow"),
    "lesion": ("#ff2e63", "red"),
}
_FALLBACK_COLOURS = ("#b07cff", "magenta")
_SEPARATOR = " · "


def _class_files(folder: Path, classes: Sequence[str], n_raters: int) -> list[tuple[str, Path, int, str]]:
    """(kind, path, class index, rater id) of a subject folder, in layer order."""
    from softseg.dataset_json import class_key

    single = len(classes) == 1
    out = [("image", folder / "image.nii.gz", 0, "")]
    for k, name in enumerate(classes, start=1):
        stem = "truth_soft" if single else f"truth_label-{class_key(name)}"
        out.append(("truth", folder / f"{stem}.nii.gz", k, ""))
    for r in range(1, n_raters + 1):
        for k, name in enumerate(classes, start=1):
            stem = f"rater-{r}" if single else f"rater-{r}_label-{class_key(name)}"
            out.append(("rater", folder / f"{stem}.nii.gz", k, str(r)))
    return out


def subject_layers(
    folder: str | os.PathLike,
    *,
    classes: Sequence[str],
    n_raters: int,
    keep_source: bool = True,
) -> list[LayerData]:
    """Layer-data tuples of a generated subject folder (:func:`softseg.anatomy.write_subject`).

    Layers: ``T1w`` (image), ``truth · <class>`` (soft, one per class; the first visible),
    ``rater-<id> · <class>`` (Labels in the class colour; rater 1's second class visible, so
    the first view shows grey-matter partial volume beside a rater's white matter).
    Each file is read by the plugin's reader (geometry, sidecar, roles), then named and tagged
    with its class.

    Parameters
    ----------
    folder : path-like
        The subject's files.
    classes : sequence of str
        Class names, index 1..K (``dataset.json`` ``"classes"``).
    n_raters : int
    keep_source : bool
        Record each file as the layer's source path (False for the cached sample files, which
        must not be written back).
    """
    from napari_softseg._reader import read_volume_layers

    folder = Path(folder)
    layers: list[LayerData] = []
    for kind, path, k, rater in _class_files(folder, classes, n_raters):
        ((data, kwargs, layer_type),) = read_volume_layers(path)
        meta = kwargs["metadata"]
        if not keep_source:
            meta[SOURCE_KEY] = None
        if kind == "image":
            kwargs["name"] = "T1w"
        else:
            name = classes[k - 1]
            labels_colour, soft_colormap = CLASS_COLOURS.get(name, _FALLBACK_COLOURS)
            meta[CLASS_KEY] = {"index": k, "name": name}
            if kind == "truth":
                # translucent, so the T1 stays readable under the partial-volume map
                kwargs.update(name=f"truth{_SEPARATOR}{name}", colormap=soft_colormap,
                              opacity=0.55, visible=k == 1)
            else:
                meta[RATER_KEY] = rater
                kwargs.update(
                    name=f"rater-{rater}{_SEPARATOR}{name}",
                    colormap={None: "transparent", 0: "transparent", 1: labels_colour},
                    # one rater's second class shown beside the first class's soft truth
                    visible=(rater == "1" and k == min(2, len(classes))),
                )
        layers.append((data, kwargs, layer_type))
    return layers


def mni_layers(
    *,
    seed: int = MNI_SAMPLE["seed"],
    target: str = MNI_SAMPLE["target"],
    spacing: float | Sequence[float] = MNI_SAMPLE["spacing"],
    n_raters: int = MNI_SAMPLE["n_raters"],
) -> list[LayerData]:
    """Layer-data tuples of a cached MNI subject (generated on first use; see
    :func:`softseg.anatomy.make_subject` for the parameters)."""
    from softseg.anatomy import TARGETS, cached_subject

    folder, _hit = cached_subject(seed=seed, target=target, spacing=spacing, n_raters=n_raters)
    return subject_layers(folder, classes=TARGETS[target], n_raters=n_raters, keep_source=False)


def softseg_mni() -> list[LayerData]:
    """npe2 sample-data command: the default MNI subject (seed 0, three tissues, four raters)."""
    return mni_layers()


def phantom_layers(
    shape: Sequence[int] = DEFAULT_SHAPE, *, n_raters: int = 4, seed: int = 0
) -> list[LayerData]:
    """Layer-data tuples of a phantom: ``image``, ``truth (soft)``, ``rater-1`` .. ``rater-R``.

    Parameters
    ----------
    shape : tuple of 3 int
        Phantom grid (X, Y, Z) in file order (see :func:`softseg.phantom.phantom`).
    n_raters : int
    seed : int
    """
    ph = phantom(shape, n_raters=n_raters, seed=seed)
    geometry = DisplayGeometry.from_affine(ph.affine, ph.shape)
    layers = [
        layer_data_tuple(
            geometry.to_display(ph.image), geometry, kind="image", name="phantom image"
        ),
        layer_data_tuple(geometry.to_display(ph.truth), geometry, kind="soft", name="truth (soft)"),
    ]
    for r in range(ph.n_raters):
        rid = str(r + 1)
        layers.append(
            layer_data_tuple(
                geometry.to_display(ph.raters[r]),
                geometry,
                kind="labels",
                name=f"rater-{rid}",
                metadata={RATER_KEY: rid},
                visible=r == 0,
            )
        )
    return layers


def softseg_phantom() -> list[LayerData]:
    """npe2 sample-data command: the default phantom (seed 0, four raters)."""
    return phantom_layers()
