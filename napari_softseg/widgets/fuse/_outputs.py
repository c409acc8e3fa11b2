"""The layers a fusion shows, and showing them again in place.

Every output layer has a *slot* (``"fused"``, ``"disagreement"``, ``"probability-<k>"``,
``"disagreement-<k>"``) and a role (:data:`~napari_softseg.widgets.fuse._inputs.OUTPUT_ROLES`):

======================== ============================================== =====================
slot                     layer                                          role
======================== ============================================== =====================
fused                    two classes: ``fused (<method>)``, Labels      ``fused``
                         (0/1) or a transparent-to-colour Image (soft);
                         K classes: ``fused labels (<method>)``,
                         Labels in the class colours
probability-<k>          K classes, STAPLE / average: the class's       ``staple_probability``
                         probability (STAPLE) or rater fraction         / ``fused``
                         (average), transparent to the class colour
disagreement             entropy (nats) of the raters' votes            ``disagreement``
disagreement-<k>         K classes: binary entropy of class k's votes   ``disagreement``
======================== ============================================== =====================

Soft layers fade to transparent at 0 (the anatomy shows where nobody voted, #9 of issue 11),
carry a colour bar titled with the layer name (the name overlay above the bar), and only the
fused map is visible at first. :func:`show_outputs` updates the layers of an earlier fusion in
place (same layer, new data and name) instead of adding "… [1]" copies, and removes the slots a
new fusion does not fill. Layers are found by :func:`~napari_softseg._metadata.layer_uid`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from softseg.geometry import DisplayGeometry

from napari_softseg._layers import add_volume_layer
from napari_softseg._metadata import CLASS_KEY, find_layer, layer_uid, set_role
from napari_softseg._raters import PALETTE, soft_colormap
from napari_softseg.widgets.fuse._run import FusionOutput

__all__ = ["OutputLayer", "class_colour", "output_layers", "show_outputs"]

#: Colour of a two-class fused map (a green that no rater hue uses).
FUSED_HUE = (0.15, 0.95, 0.35)
_LN2 = float(np.log(2.0))


@functools.lru_cache(maxsize=1)
def entropy_colormap() -> Any:
    """inferno, fading to transparent at 0 so full agreement leaves the image visible."""
    from matplotlib import colormaps
    from napari.utils.colormaps import Colormap

    t = np.linspace(0.0, 1.0, 64)
    rgba = colormaps["inferno"](0.15 + 0.85 * t)
    rgba[:, 3] = np.clip(t / 0.15, 0.0, 1.0)
    return Colormap(colors=rgba, controls=t, name="softseg-disagreement", display_name="disagreement")


def class_colour(name: str, index: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of class ``index`` (1..K): the sample data's tissue colours for known class
    names, else a palette hue."""
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_softseg._sample_data import CLASS_COLOURS

    known = CLASS_COLOURS.get(name)
    if known is not None:
        return tuple(float(c) for c in transform_color(known[0])[0][:3])
    return PALETTE[(index - 1) % len(PALETTE)]


def _label_colormap(colours: Mapping[int, tuple[float, float, float]]) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    table: dict[int | None, np.ndarray] = {None: np.zeros(4), 0: np.zeros(4)}
    for value, rgb in colours.items():
        table[value] = np.array([*rgb, 1.0])
    return DirectLabelColormap(color_dict=table)


@dataclass(frozen=True, eq=False)
class OutputLayer:
    """One layer to show: slot, name, role, ``"labels"``/``"soft"``, data, style, metadata."""

    slot: str
    name: str
    role: str
    kind: str
    data: np.ndarray
    style: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    visible: bool = False

    @property
    def has_colorbar(self) -> bool:
        return self.kind == "soft"


def _soft(slot: str, name: str, role: str, data: np.ndarray, hue: Any, limit: float = 1.0,
          *, visible: bool = False, metadata: dict | None = None, colormap: Any = None) -> OutputLayer:
    cmap = colormap if colormap is not None else soft_colormap(hue, f"softseg-{slot}")
    style = {"colormap": cmap, "contrast_limits": (0.0, float(limit)), "blending": "translucent", "opacity": 0.9}
    return OutputLayer(slot, name, role, "soft", data, style, dict(metadata or {}), visible)


def output_layers(out: FusionOutput, *, per_class_disagreement: bool = False,
                  provenance: Mapping[str, Any] | None = None) -> list[OutputLayer]:
    """The layers of one fusion, bottom to top (see the module table).

    Parameters
    ----------
    out : FusionOutput
    per_class_disagreement : bool
        Multi-class: also one binary-entropy layer per class.
    provenance : mapping, optional
        Stored on the fused layer (``softseg_fusion``).
    """
    res = out.result
    layers: list[OutputLayer] = []
    fused_meta = {"softseg_fusion": dict(provenance or {})}
    if not out.multiclass:
        layers.append(_soft("disagreement", "disagreement (entropy)", "disagreement",
                            res.disagreement.astype(np.float32, copy=False), None, _LN2,
                            colormap=entropy_colormap()))
        if out.fused_kind == "labels":
            style = {"colormap": _label_colormap({1: FUSED_HUE}), "opacity": 0.8}
            layers.append(OutputLayer("fused", f"fused ({out.method})", "fused", "labels", res.fused, style,
                                      fused_meta, True))
        else:
            layers.append(_soft("fused", f"fused ({out.method})", "fused", res.fused, FUSED_HUE,
                                visible=True, metadata=fused_meta))
        return layers

    k = int(res.n_classes)
    names = out.classes or tuple(f"class {c}" for c in range(1, k + 1))
    colours = {c: class_colour(names[c - 1], c) for c in range(1, k + 1)}
    n_raters = res.n_raters
    top = float(np.log(min(n_raters, k + 1)))
    layers.append(_soft("disagreement", "disagreement (entropy)", "disagreement",
                        res.disagreement.astype(np.float32, copy=False), None, top, colormap=entropy_colormap()))
    if per_class_disagreement and res.class_disagreement is not None:
        for c in range(1, k + 1):
            layers.append(_soft(f"disagreement-{c}", f"disagreement · {names[c - 1]}", "disagreement",
                                res.class_disagreement[c], None, _LN2, colormap=entropy_colormap(),
                                metadata={CLASS_KEY: {"index": c, "name": names[c - 1]}}))
    if res.probability is not None:
        staple = res.method == "staple"
        title, role = ("STAPLE probability", "staple_probability") if staple else ("average", "fused")
        for c in range(1, k + 1):
            layers.append(_soft(f"probability-{c}", f"{title} · {names[c - 1]}", role, res.probability[c],
                                colours[c], metadata={CLASS_KEY: {"index": c, "name": names[c - 1]}}))
    style = {"colormap": _label_colormap(colours), "opacity": 0.5}
    meta = {**fused_meta, CLASS_KEY: list(names)}
    layers.append(OutputLayer("fused", f"fused labels ({out.method})", "fused", "labels", res.fused, style, meta, True))
    return layers


def _same_grid(layer: Any, spec: OutputLayer, geometry: DisplayGeometry) -> bool:
    return (
        tuple(np.shape(layer.data)) == tuple(spec.data.shape)
        and np.allclose(np.asarray(layer.scale)[-3:], geometry.scale)
        and np.allclose(np.asarray(layer.translate)[-3:], geometry.translate)
    )


def _update(layer: Any, spec: OutputLayer, geometry: DisplayGeometry) -> bool:
    """Put ``spec`` into an existing layer of the same type and grid; False when it cannot."""
    from napari.layers import Image, Labels

    wanted = Labels if spec.kind == "labels" else Image
    if not isinstance(layer, wanted) or not _same_grid(layer, spec, geometry):
        return False
    if spec.kind == "labels" and np.asarray(layer.data).dtype != spec.data.dtype:
        return False
    meta = dict(layer.metadata)
    meta.update(spec.metadata)
    meta.update(geometry.as_metadata())
    set_role(meta, spec.role)
    layer.metadata = meta
    layer.data = spec.data
    if "colormap" in spec.style:
        layer.colormap = spec.style["colormap"]
    if "contrast_limits" in spec.style:
        layer.contrast_limits = spec.style["contrast_limits"]
    layer.name = spec.name
    return True


def show_outputs(viewer: Any, specs: list[OutputLayer], geometry: DisplayGeometry,
                 slots: Mapping[str, str]) -> dict[str, str]:
    """Show ``specs`` (bottom to top) above every other layer; returns ``{slot: layer uid}``.

    ``slots`` maps the slots of the previous fusion to their layers' uids: a layer still in the
    viewer is updated in place when its type and grid allow it (else replaced); the previous
    slots a new fusion does not fill are removed.
    """
    shown: dict[str, str] = {}
    wanted = {s.slot for s in specs}
    for slot, uid in slots.items():  # slots of the last fusion that this one does not fill
        old = find_layer(viewer.layers, uid)
        if old is not None and slot not in wanted:
            viewer.layers.remove(old)
    for spec in specs:
        old = find_layer(viewer.layers, slots.get(spec.slot))
        if old is not None and _update(old, spec, geometry):
            layer = old
        else:
            if old is not None:
                viewer.layers.remove(old)
            meta = set_role(dict(spec.metadata), spec.role)
            layer = add_volume_layer(viewer, spec.data, geometry, kind=spec.kind, name=spec.name, metadata=meta,
                                     visible=spec.visible, **spec.style)
            if spec.has_colorbar:
                layer.colorbar.visible = True
                layer.name_overlay.visible = True  # the colour bar's title
                layer.name_overlay.position = layer.colorbar.position
        shown[spec.slot] = layer_uid(layer)
    # the new results on top, in the given order (one move: each move redraws the canvas)
    uids = [layer_uid(lyr) for lyr in viewer.layers]
    wanted_order = [shown[spec.slot] for spec in specs]
    if uids[-len(wanted_order):] != wanted_order:
        viewer.layers.move_multiple([uids.index(u) for u in wanted_order], len(uids))
    return shown
