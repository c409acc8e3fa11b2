"""The Compare dock's grid view: one viewbox per candidate, titled with the candidate.

Each viewbox holds the image (its layer name is the candidate's label, shown as the view's
title by napari's layer-name overlay), the soft prediction (transparent at 0, in the
candidate's colour, with a colour bar titled "<candidate> probability") and its binarised
contour at the candidate's threshold; a K-class candidate shows its argmax classes instead.
napari's grid mode links the dims and the camera across viewboxes; entering and leaving the
grid refits the camera (``viewer.reset_view``). The views carry role ``compare_view`` and the
candidate's key as owner, so no dock offers them as inputs and a removed candidate takes its
views with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg import metrics

from napari_softseg._metadata import OWNER_KEY, layer_uid, layers_with_role, set_role
from napari_softseg.widgets._candidates import Candidate, class_color
from napari_softseg.widgets._gl_context import RemovalGuard

__all__ = ["GridView", "VIEWS_PER_CANDIDATE"]

#: Layers per viewbox: image, soft map, binarised contour.
VIEWS_PER_CANDIDATE = 3


@dataclass
class _Binarised:
    uid: str  # the contour layer
    data: np.ndarray  # the soft map it binarises
    label: str


class GridView:
    """Builds, updates and removes the grid views (state: the uids of the layers it added)."""

    def __init__(self, viewer: Any, guard: RemovalGuard) -> None:
        self.viewer = viewer
        self._guard = guard
        self.uids: list[str] = []
        self._hidden: list[str] = []  # the user's layers hidden while the grid is on
        self._binarised: list[_Binarised] = []
        self.depends_on: set[str] = set()  # uids whose removal ends the grid

    @property
    def on(self) -> bool:
        return bool(self.uids)

    def show(self, image: Any, chosen: Sequence[Candidate], labels: dict[str, str],
             thresholds: dict[str, float | None]) -> None:
        """Hide the user's layers and add one viewbox per candidate (see the module)."""
        from napari.layers import Image, Labels

        from napari_softseg._raters import soft_colormap

        self.clear()
        layers = self.viewer.layers
        self._hidden = [layer_uid(ly) for ly in layers if ly.visible]
        for ly in list(layers):
            ly.visible = False
        self.depends_on = {layer_uid(image)}
        index = 0
        for cand in chosen:
            soft_layers = cand.layers(layers)
            self.depends_on |= set(cand.uids)
            label = labels[cand.key]
            meta = lambda: set_role({}, "compare_view", owner=cand.key)  # noqa: E731
            views = [Image(image.data, name=label, scale=image.scale, translate=image.translate,
                           colormap=image.colormap.name, contrast_limits=image.contrast_limits,
                           metadata=meta())]
            views[0].name_overlay.visible = True  # the view's title: the candidate
            if cand.classes is None:
                soft = soft_layers[0]
                data = np.asarray(soft.data)
                views.append(Image(data, name=f"{label} probability", scale=soft.scale,
                                   translate=soft.translate,
                                   colormap=soft_colormap(cand.rgb, f"softseg-{cand.name}"),
                                   contrast_limits=(0.0, 1.0), metadata=meta()))
                views[1].colorbar.visible = True
                views[1].name_overlay.visible = True  # the colour bar's title
                views[1].name_overlay.position = views[1].colorbar.position
                contour = Labels(np.zeros(data.shape, dtype=np.uint8), name=f"{label} binarised",
                                 scale=soft.scale, translate=soft.translate, opacity=0.9,
                                 colormap={0: "transparent", 1: cand.color, None: "transparent"},
                                 metadata=meta())
                contour.contour = 1
                contour.editable = False
                views.append(contour)
                self._binarised.append(_Binarised(layer_uid(contour), data, label))
            else:
                stack = np.stack([np.asarray(ly.data) for ly in soft_layers])
                argmax = metrics.class_argmax(
                    metrics.class_probabilities(stack, classes=cand.classes))[0]
                colours = {k: class_color(ly, k) for k, ly in enumerate(soft_layers, start=1)}
                views.append(Labels(argmax, name=f"{label} classes", scale=soft_layers[0].scale,
                                    translate=soft_layers[0].translate, opacity=0.6,
                                    colormap={0: "transparent", None: "transparent", **colours},
                                    metadata=meta()))
                views[-1].editable = False
                views.append(Labels(np.zeros(argmax.shape, np.uint8), name=f"{label} (empty)",
                                    scale=soft_layers[0].scale, visible=False, metadata=meta()))
            for view in views:
                layers.insert(index, view)
                self.uids.append(layer_uid(view))
                index += 1
        self.viewer.canvas.grid.stride = VIEWS_PER_CANDIDATE
        self.viewer.canvas.grid.enabled = True
        self.update(thresholds)
        self.viewer.reset_view()  # the viewboxes are smaller: refit the camera

    def update(self, thresholds: dict[str, float | None]) -> None:
        """Binarise each contour at its candidate's threshold (in place)."""
        from napari_softseg._metadata import find_layer

        for b in self._binarised:
            layer = find_layer(self.viewer.layers, b.uid)
            t = thresholds.get(b.label)
            if layer is None or t is None:
                continue
            metrics.binarize(b.data, t, out=layer.data.view(np.bool_), checked=True)
            layer.refresh()

    def clear(self) -> None:
        """Remove the views, show the user's layers again, leave the grid, refit the camera."""
        from napari_softseg._metadata import find_layer

        was_on = self.on or self.viewer.canvas.grid.enabled
        # also views a previous dock (or run) left behind
        leftovers = [layer_uid(ly) for ly in layers_with_role(self.viewer.layers, "compare_view")]
        self._guard.remove_layers(list(dict.fromkeys(self.uids + leftovers)))
        for uid in self._hidden:
            layer = find_layer(self.viewer.layers, uid)
            if layer is not None:
                layer.visible = True
        self.uids, self._hidden, self._binarised, self.depends_on = [], [], [], set()
        if was_on:
            self.viewer.canvas.grid.enabled = False
            if not self._guard.in_batch:
                self.viewer.reset_view()

    def owners(self) -> set[str]:
        """The candidate keys shown."""
        return {(ly.metadata or {}).get(OWNER_KEY)
                for ly in layers_with_role(self.viewer.layers, "compare_view")}
