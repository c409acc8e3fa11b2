"""Sample data "SoftSeg phantom": image, soft truth and one label layer per rater.

Rendered by :func:`softseg.phantom.phantom` (a partial-volume phantom, see there) and shown in
display order with the phantom's geometry, so every layer can be saved back as NIfTI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from softseg.phantom import DEFAULT_SHAPE, phantom
from softseg.geometry import DisplayGeometry

from napari_softseg._layers import RATER_KEY, layer_data_tuple

__all__ = ["phantom_layers", "softseg_phantom"]


def phantom_layers(
    shape: Sequence[int] = DEFAULT_SHAPE, *, n_raters: int = 4, seed: int = 0
) -> list[tuple[Any, dict[str, Any], str]]:
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


def softseg_phantom() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample-data command: the default phantom (seed 0, four raters)."""
    return phantom_layers()
