"""The "Fuse raters" dock widget: several rater layers -> one fused map, STAPLE, disagreement.

Pick two or more rater layers (confidence-level or binary Labels layers, or soft Image layers),
a method and a region, press **Fuse**. The work runs in a napari ``thread_worker`` on copies of
the layers' data; each layer goes through the one conversion
(:func:`softseg.confidence.as_rater_values`, with the layer's own confidence scale) and the one
fusion engine, :func:`softseg.fusion.iter_fuse` -- the engine ``softseg fuse``, training and the
protocol use, so the numbers are the same as on the command line. The results come back as
layers:

* ``fused (<method>)``: a Labels layer for binary results (majority vote, union, intersection),
  an Image layer with a transparent-to-colour colormap for soft ones (average, and STAPLE: its
  probability, the same map ``softseg fuse`` writes);
* ``disagreement (entropy)``: entropy of the rater average, 0 where all agree, ln 2 at a 50/50 split;

and a table with each rater's sensitivity and specificity (one definition for every method and
path, :data:`softseg.fusion.RATER_STATISTICS`: soft counts against the fused map inside the
region; STAPLE's own estimates for STAPLE) and the pairwise Dice between raters. **Save fused
map** writes the fused layer as NIfTI in the raters' geometry with a JSON sidecar
(:class:`softseg.sidecar.RaterSidecar`: method, raters, region, table).

Region: STAPLE's foreground prior is global, so the amount of background in the volume changes
its result. By default STAPLE (and the table) uses :func:`softseg.fusion.default_roi`, the
bounding box of the raters' union grown by a margin; "whole volume" uses every voxel (as
SimpleITK does).

The method list comes from :data:`softseg.fusion.METHODS` (each method's title, plus "soft
STAPLE" for STAPLE's soft variant). All math is :mod:`softseg.fusion`; this module only moves data.
"""

from __future__ import annotations

import datetime as _dt
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
    Table,
)
from napari.layers import Image, Labels, Layer
from napari.qt.threading import thread_worker
from napari.utils.colormaps import Colormap, DirectLabelColormap
from napari.utils.notifications import show_error, show_info

from softseg import __version__, fusion
from softseg.confidence import ConfidenceScale, as_rater_values
from softseg.errors import InputError
from softseg.fusion import SoftRatersError
from softseg.geometry import DisplayGeometry, save_display_array
from softseg.sidecar import RaterSidecar

from napari_softseg._layers import KIND_KEY, add_volume_layer
from napari_softseg._raters import geometry_of, is_rater_layer, layer_scale, soft_colormap

__all__ = [
    "METHODS",
    "ROI_MODES",
    "FuseWidget",
    "FusionOutput",
    "RaterInput",
    "SoftRatersError",
    "collect_raters",
    "iter_fusion",
    "run_fusion",
]


def _choices() -> dict[str, tuple[str, bool | None]]:
    """Combo entry -> (method of softseg.fusion.METHODS, soft option), from the registry."""
    out: dict[str, tuple[str, bool | None]] = {}
    for name in fusion.fusion_methods():
        spec = fusion.METHODS[name]
        out[spec.title] = (name, False if spec.soft_variant else None)
        if spec.soft_variant:
            out[f"soft {spec.title}"] = (name, True)
    return out


#: Combo entry -> (fusion method, soft option): derived from :data:`softseg.fusion.METHODS`.
METHODS: dict[str, tuple[str, bool | None]] = _choices()
ROI_AROUND = "around the raters' union"
ROI_WHOLE = "whole volume"
ROI_MODES = (ROI_AROUND, ROI_WHOLE)
_FUSED_HUE = (0.15, 0.95, 0.35)
_LN2 = float(np.log(2.0))


@functools.lru_cache(maxsize=1)
def _entropy_colormap() -> Colormap:
    """inferno, fading to transparent at 0 so full agreement leaves the image visible."""
    from matplotlib import colormaps

    t = np.linspace(0.0, 1.0, 64)
    rgba = colormaps["inferno"](0.15 + 0.85 * t)
    rgba[:, 3] = np.clip(t / 0.15, 0.0, 1.0)
    return Colormap(colors=rgba, controls=t, name="softseg-disagreement", display_name="disagreement")


_FUSED_LABELS = DirectLabelColormap(
    color_dict={None: np.zeros(4), 0: np.zeros(4), 1: np.array([*_FUSED_HUE, 1.0])}
)


@dataclass(frozen=True, eq=False)
class RaterInput:
    """A snapshot of one rater layer, taken on the main thread.

    Attributes
    ----------
    name : str
        Layer name (shown in the table).
    data : ndarray, shape (S, P, L)
        A private copy of the layer's data (levels, 0/1 or soft).
    scale : ConfidenceScale or None
        Level -> soft mapping of a level map; None for binary and soft maps.
    """

    name: str
    data: np.ndarray
    scale: ConfidenceScale | None = None

    def soft(self) -> np.ndarray:
        """The rater as values in [0, 1] (:func:`softseg.confidence.as_rater_values`, the one
        conversion): uint8 0/1 for binary maps, float32 for levels and soft maps."""
        values, _kind = as_rater_values(self.data, scale=self.scale, name=f"layer {self.name!r}")
        return values


@dataclass(frozen=True, eq=False)
class FusionOutput:
    """What the worker hands back to the main thread: the engine's result and the layer names."""

    choice: str
    names: tuple[str, ...]
    result: fusion.FusionResult
    roi_mode: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The combo entry ("STAPLE", "soft STAPLE", "majority vote", ...)."""
        return self.choice

    @property
    def fused(self) -> np.ndarray:
        return self.result.fused

    @property
    def fused_kind(self) -> str:
        return "soft" if self.result.fused.dtype.kind == "f" else "binary"

    @property
    def disagreement(self) -> np.ndarray:
        return self.result.disagreement

    @property
    def sensitivity(self) -> np.ndarray:
        return self.result.sensitivity

    @property
    def specificity(self) -> np.ndarray:
        return self.result.specificity

    @property
    def pairwise_dice(self) -> np.ndarray:
        return self.result.pairwise_dice

    @property
    def staple(self) -> fusion.StapleResult | None:
        return self.result.staple


def collect_raters(layers: Sequence[Layer]) -> list[RaterInput]:
    """Copy the chosen layers' data (main thread) after checking count and shapes.

    Raises
    ------
    InputError
        Fewer than two layers, layers of different shapes, or a layer that is not a rater map.
    """
    layers = list(layers)
    if len(layers) < 2:
        raise InputError(
            f"fusion needs at least two rater layers; {len(layers)} selected. "
            "Select two or more in the 'Raters' list (Ctrl/Shift-click)"
        )
    first = layers[0]
    for lyr in layers:
        if not (isinstance(lyr, Labels) or is_rater_layer(lyr) or isinstance(lyr, Image)):
            raise InputError(f"layer {lyr.name!r} is not a rater map (a Labels layer or a soft Image layer)")
        if tuple(np.shape(lyr.data)) != tuple(np.shape(first.data)):
            raise InputError(
                f"rater layer {lyr.name!r} has shape {tuple(np.shape(lyr.data))} but {first.name!r} has "
                f"{tuple(np.shape(first.data))}; fuse raters of the same image only"
            )
    return [
        RaterInput(
            name=lyr.name,
            data=np.array(lyr.data, copy=True),
            scale=layer_scale(lyr) if isinstance(lyr, Labels) else None,
        )
        for lyr in layers
    ]


def run_fusion(
    raters: Sequence[RaterInput],
    *,
    method: str,
    roi_mode: str = ROI_AROUND,
    margin: int = 10,
    progress: Callable[[float, str], None] | None = None,
) -> FusionOutput:
    """Fuse rater snapshots with the engine (runs in the worker thread).

    Same parameters as :func:`iter_fusion`; *progress* receives its ``(fraction, text)`` steps.
    """
    steps = iter_fusion(raters, method=method, roi_mode=roi_mode, margin=margin)
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(*item)


def iter_fusion(
    raters: Sequence[RaterInput],
    *,
    method: str,
    roi_mode: str = ROI_AROUND,
    margin: int = 10,
) -> Any:
    """Generator: yields ``(fraction, text)`` progress steps, returns a :class:`FusionOutput`.

    The layers are converted (:meth:`RaterInput.soft`) and fused by
    :func:`softseg.fusion.iter_fuse`; nothing else happens here.

    Parameters
    ----------
    raters : sequence of RaterInput
    method : str
        A key of :data:`METHODS` (a method's title, or "soft STAPLE").
    roi_mode : str
        One of :data:`ROI_MODES`.
    margin : int
        Voxels added around the raters' union for the default region.

    Returns
    -------
    FusionOutput
        As the generator's return value (``StopIteration.value``).

    Raises
    ------
    SoftRatersError
        A binary method (majority vote, union, intersection, STAPLE) with soft raters.
    """
    if method not in METHODS:
        raise InputError(f"unknown fusion method {method!r}; choose one of {list(METHODS)}")
    if roi_mode not in ROI_MODES:
        raise InputError(f"unknown region {roi_mode!r}; choose one of {list(ROI_MODES)}")
    t0 = time.perf_counter()
    name, soft = METHODS[method]
    yield 0.02, "converting levels to soft values"
    maps = [r.soft() for r in raters]
    if any(m.dtype.kind == "f" for m in maps):
        maps = [m.astype(np.float32, copy=False) for m in maps]
    stack = np.stack(maps)
    del maps
    result = yield from fusion.iter_fuse(
        stack,
        name,
        roi="auto" if roi_mode == ROI_AROUND else None,
        margin=margin,
        soft=soft,
        names=[f"layer {r.name!r}" for r in raters],
    )
    return FusionOutput(
        choice=method,
        names=tuple(r.name for r in raters),
        result=result,
        roi_mode=roi_mode,
        seconds=time.perf_counter() - t0,
        extra={"roi_voxels": int(result.roi.sum()) if result.roi is not None else int(stack[0].size)},
    )


def _reference_text(out: FusionOutput) -> str:
    """What the rater table is measured against, in words (one definition for every method)."""
    region = " inside the region" if out.result.roi is not None else ""
    if out.result.method == "staple":
        return f"STAPLE estimates{region}"
    return f"soft counts against the fused map{region}"


class FuseWidget(Container):
    """"Fuse raters": method, region, background fusion, result layers and table, save."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.last_output: FusionOutput | None = None
        self.result_layers: dict[str, Layer] = {}
        self.worker: Any = None
        self._geometry: DisplayGeometry | None = None
        self._t_click = 0.0
        self.click_to_layers_s: float | None = None

        self._raters = Select(label="Raters", choices=self._rater_choices, allow_multiple=True)
        self._raters.tooltip = "Ctrl/Shift-click to select two or more rater layers"
        self._method = ComboBox(label="Method", choices=list(METHODS), value="average")
        self._roi = ComboBox(label="Region", choices=list(ROI_MODES), value=ROI_AROUND)
        self._roi.tooltip = (
            "STAPLE's prior is global: the amount of background changes its result. "
            "'around the raters' union' estimates inside the union's box grown by the margin."
        )
        self._margin = SpinBox(label="Margin (voxels)", min=0, max=200, value=10)
        self._run = PushButton(text="Fuse")
        self._progress = ProgressBar(label="Progress", min=0, max=100, value=0, visible=False)
        self._message = Label(value="")
        self._switch = PushButton(text="Use soft STAPLE instead", visible=False)
        self._caption = Label(value="")
        self._raters.max_height = 120
        self._table = Table(value={"data": [], "index": [], "columns": []})
        self._table.min_height = 90
        self._table.max_height = 190
        self._dice_caption = Label(value="")
        self._dice = Table(value={"data": [], "index": [], "columns": []})
        self._dice.min_height = 90
        self._dice.max_height = 190
        self._save_path = FileEdit(label="Save to", mode="w", filter="NIfTI (*.nii.gz *.nii)")
        self._overwrite = CheckBox(label="Overwrite", value=True)
        self._save = PushButton(text="Save fused map", enabled=False)
        form = Container(widgets=[self._raters, self._method, self._roi, self._margin], labels=True)
        save_box = Container(widgets=[self._save_path, self._overwrite], labels=True)
        super().__init__(
            widgets=[
                form,
                self._run,
                self._progress,
                self._message,
                self._switch,
                self._caption,
                self._table,
                self._dice_caption,
                self._dice,
                save_box,
                self._save,
            ],
            labels=False,
        )
        self._run.changed.connect(lambda: self.run())
        self._switch.changed.connect(self._switch_to_soft)
        self._save.changed.connect(lambda: self._guard(self.save))
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_choices)
        layers.events.removed.connect(self._refresh_choices)
        layers.events.removed.connect(self._forget_result_layer)

    # ------------------------------------------------------------------ choices
    def _rater_choices(self, _w: Any = None) -> list[tuple[str, Layer]]:
        ours = set(map(id, self.result_layers.values()))
        return [
            (lyr.name, lyr)
            for lyr in self.viewer.layers
            if id(lyr) not in ours
            and (isinstance(lyr, Labels) or (isinstance(lyr, Image) and lyr.metadata.get(KIND_KEY) == "soft"))
            and np.ndim(lyr.data) == 3
        ]

    def _refresh_choices(self, event: Any = None) -> None:
        self._raters.reset_choices()

    def _forget_result_layer(self, event: Any) -> None:
        for key, lyr in list(self.result_layers.items()):
            if lyr is event.value:
                del self.result_layers[key]

    def set_raters(self, layers: Sequence[Layer]) -> None:
        """Select these layers in the 'Raters' list."""
        self._raters.reset_choices()
        self._raters.value = list(layers)

    @property
    def method(self) -> str:
        return str(self._method.value)

    @method.setter
    def method(self, value: str) -> None:
        if value not in METHODS:
            raise InputError(f"unknown fusion method {value!r}; choose one of {list(METHODS)}")
        self._method.value = value

    def _guard(self, func: Callable[[], Any]) -> Any:
        try:
            return func()
        except InputError as exc:
            self._say(str(exc), error=True)
            return None

    def _say(self, text: str, *, error: bool = False) -> None:
        self._message.value = text
        self._message.native.setWordWrap(True)
        self._message.native.setStyleSheet("color: #ff8080;" if error else "")
        if error:
            show_error(text)

    def _switch_to_soft(self) -> None:
        self._method.value = "soft STAPLE"
        self._switch.visible = False
        self._say("switched to soft STAPLE; press Fuse")

    # ------------------------------------------------------------------ run
    def run(self, layers: Sequence[Layer] | None = None) -> Any:
        """Start the fusion in a background worker; returns the worker (None on bad input).

        The result layers and the table appear when the worker returns (main thread).
        """
        self._t_click = time.perf_counter()
        self._switch.visible = False
        layers = list(layers) if layers is not None else list(self._raters.value or [])
        method = self.method
        try:
            raters = collect_raters(layers)
        except InputError as exc:
            self._say(str(exc), error=True)
            return None
        self._geometry = geometry_of(layers[0])
        self._say(f"fusing {len(raters)} raters with {method} ...")
        self._progress.visible = True
        self._progress.value = 0
        self._run.enabled = False
        roi_mode, margin = str(self._roi.value), int(self._margin.value)

        @thread_worker(ignore_errors=True)  # errors are shown by _on_error, inline and as a notification
        def work():
            return (yield from iter_fusion(raters, method=method, roi_mode=roi_mode, margin=margin))

        worker = work()
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    @property
    def busy(self) -> bool:
        """True while a fusion runs (from the click until its layers are shown)."""
        return not self._run.enabled

    def _on_finished(self) -> None:
        self._run.enabled = True

    def _on_progress(self, item: tuple[float, str]) -> None:
        frac, text = item
        self._progress.value = int(round(100 * frac))
        self._message.value = text

    def _on_error(self, exc: BaseException) -> None:
        self._progress.visible = False
        if isinstance(exc, SoftRatersError) and self.method == "STAPLE":
            self._switch.visible = True  # offer soft STAPLE
        if isinstance(exc, InputError):
            self._say(str(exc), error=True)
        else:
            self._say(f"fusion failed: {type(exc).__name__}: {exc}", error=True)

    def _on_result(self, out: FusionOutput) -> None:
        self.last_output = out
        geom = self._geometry
        # bottom to top: disagreement, fused map (STAPLE: its probability, as softseg fuse writes)
        dis = self._set_layer(
            "disagreement",
            "disagreement (entropy)",
            out.disagreement.astype(np.float32),
            geom,
            kind="soft",
            style={"colormap": _entropy_colormap(), "contrast_limits": (0.0, _LN2), "blending": "translucent", "visible": False},
            meta={},
        )
        fused = self._set_layer(
            "fused",
            f"fused ({out.method})",
            out.fused,
            geom,
            kind="labels" if out.fused_kind == "binary" else "soft",
            style={"colormap": _FUSED_LABELS, "opacity": 0.8} if out.fused_kind == "binary" else {"colormap": soft_colormap(_FUSED_HUE, "softseg-fused"), "blending": "translucent", "opacity": 0.9},
            meta={"softseg_fusion": self._provenance(out)},
        )
        # legends: a colour bar on the soft maps (0..1, and 0..ln 2 for the entropy)
        for layer in (fused, dis):
            if layer is not None and hasattr(layer, "colorbar"):
                layer.colorbar.visible = True
        # keep the fused map on top of the other results
        for key in ("disagreement", "fused"):
            layer = self.result_layers.get(key)
            if layer is not None:
                self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
        self._fill_table(out)
        self._progress.value = 100
        self._progress.visible = False
        self._save.enabled = True
        self._suggest_save_path(out)
        self.click_to_layers_s = time.perf_counter() - self._t_click
        self._say(f"{out.method} of {len(out.names)} raters in {self.click_to_layers_s:.2f} s")
        self._raters.reset_choices()

    def _set_layer(self, key: str, name: str, data: np.ndarray, geom: DisplayGeometry, *, kind: str, style: dict, meta: dict) -> Layer:
        old = self.result_layers.get(key)
        if old is not None and old in self.viewer.layers:
            wanted = Labels if kind == "labels" else Image
            if isinstance(old, wanted):
                old.data = data
                old.name = name
                old.metadata.update(meta)
                return old
            self.viewer.layers.remove(old)
        layer = add_volume_layer(self.viewer, data, geom, kind=kind, name=name, metadata=meta, **style)
        self.result_layers[key] = layer
        return layer

    def _fill_table(self, out: FusionOutput) -> None:
        names = list(out.names)
        rows = [[round(float(s), 4), round(float(q), 4)] for s, q in zip(out.sensitivity, out.specificity)]
        self._table.value = {"data": rows, "index": names, "columns": ["sensitivity", "specificity"]}
        dice = [[round(float(d), 3) for d in row] for row in out.pairwise_dice]
        self._dice.value = {"data": dice, "index": names, "columns": names}
        for table in (self._table, self._dice):
            table.native.resizeColumnsToContents()
        region = "" if out.roi_mode == ROI_WHOLE else f" ({out.extra.get('roi_voxels', 0)} voxels)"
        self._caption.value = f"Each rater's sensitivity / specificity ({_reference_text(out)}{region}):"
        self._caption.native.setWordWrap(True)
        self._dice_caption.value = "Pairwise Dice between raters (1 = identical):"

    def table_rows(self) -> dict[str, list]:
        """The rater table as ``{rater: [sensitivity, specificity]}`` (for tests/scripts)."""
        return dict(zip(self._table.row_headers, self._table.data.to_list()))

    def dice_matrix(self) -> np.ndarray:
        """The pairwise Dice table as shown (3 decimals)."""
        return np.array(self._dice.data.to_list(), dtype=float)

    # ------------------------------------------------------------------ save
    def _provenance(self, out: FusionOutput) -> dict[str, Any]:
        """The engine's summary (as ``softseg fuse`` records it) plus the widget's choices."""
        info = out.result.summary(out.names)
        info["choice"] = out.choice
        info["region"] = out.roi_mode
        info["margin_voxels"] = int(self._margin.value)
        return info

    def _suggest_save_path(self, out: FusionOutput) -> None:
        src = None
        for name in out.names:
            lyr = next((lyr for lyr in self.viewer.layers if lyr.name == name), None)
            if lyr is not None and lyr.metadata.get("source_path"):
                src = Path(lyr.metadata["source_path"])
                break
        if src is not None:
            tag = out.method.replace(" ", "-").lower()
            self._save_path.value = src.parent / f"fused_{tag}.nii.gz"

    def save(self, path: str | Path | None = None, *, overwrite: bool | None = None) -> Path:
        """Write the fused map (NIfTI, the raters' geometry) with a JSON sidecar."""
        out, layer = self.last_output, self.result_layers.get("fused")
        if out is None or layer is None or self._geometry is None:
            raise InputError("nothing to save yet: press Fuse first")
        path = path if path is not None else self._save_path.value
        if path is None or str(path) in ("", "."):
            raise InputError("choose a file name (.nii.gz) to save the fused map")
        overwrite = bool(self._overwrite.value) if overwrite is None else overwrite
        sidecar = RaterSidecar(
            kind="labels" if out.fused_kind == "binary" else "soft",
            fusion=self._provenance(out),
            software=f"napari-softseg {__version__}",
            extra={"saved_at": _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds")},
        ).to_json()
        written = save_display_array(path, np.asarray(layer.data), self._geometry, overwrite=overwrite, sidecar=sidecar)
        show_info(f"saved fused map ({out.method}) to {written}")
        self._say(f"saved {written}")
        return Path(written)
