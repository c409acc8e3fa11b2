"""The model card: what a model file says about its model, as one typed, frozen document.

A model file (:mod:`softseg.modelfile`) carries its card as JSON in the safetensors header
metadata (key ``"softseg"``, DESIGN.md decision 4). The card is parsed **once**, when the file is
read (:func:`softseg.modelfile.read_card`, :func:`softseg.modelfile.load_model`), into
:class:`ModelCard`; everything downstream (prediction, the CLI, the napari widgets, the comparison
protocol) reads the typed card, never the raw JSON.

Layout (format version :data:`FORMAT_VERSION`)
-----------------------------------------------
``classes``        class names, index 1..K (one class for today's models; DESIGN.md decision 11)
``thresholds``     optimal binarisation threshold per class, in (0, 1] (Dice on the training +
                   validation images, SoftSeg paper section 2.5)
``channels``       input channel (contrast) names, in order
``preprocessing``  spacing (S, H, W) mm or null = native, crop (rows, cols), normalisation, orientation
``candidate``      name, title, ground-truth mode, final activation with its options, loss
``architecture``   network name and constructor arguments
``raters``, ``fusion``   rater ids of the training data and how they were fused
``dataset``, ``split``   dataset folder and the subjects of each split
``validation``     best epoch and its validation metrics, threshold-vs-Dice curve per class
``history``        one row per epoch: the ``epoch`` progress events (also ``<model>.history.csv``)
``training``       the configuration, epochs done / maximum, why it stopped, seconds, device, seed
``software``       softseg, Python, torch, numpy and safetensors versions

Files written by softseg 0.x before the card (format version 1: ``threshold``, ``provenance``,
...) are read through :func:`card_from_document`, which maps them onto this layout without
changing anything that affects predictions (a version-1 model predicts exactly as before).

Importing this module does not import torch.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from softseg.config import MAX_SPACING_MM, MIN_SPACING_MM, TrainConfig
from softseg.events import format_seconds
from softseg.errors import InputError
from softseg.normalization import _NEEDS_TAU, inference_window
from softseg.normalization import NORMALIZATIONS as _NORMALIZATIONS
from softseg.schema import Schema, parse

__all__ = [
    "FORMAT_VERSION",
    "NORMALIZATIONS",
    "ActivationCard",
    "ArchitectureCard",
    "CandidateCard",
    "HistoryRow",
    "ModelCard",
    "ParentCard",
    "PreprocessingCard",
    "SoftwareCard",
    "SplitCard",
    "ThresholdCurve",
    "TrainingCard",
    "UNetConfig",
    "ValidationCard",
    "card_from_document",
    "render_card",
    "software_versions",
]

#: Version of the card layout written by this softseg (1 = the untyped layout of softseg 0.x).
FORMAT_VERSION = 2

_Spacing = Annotated[float, Field(ge=MIN_SPACING_MM, le=MAX_SPACING_MM, allow_inf_nan=False)]
_Threshold = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Name = Annotated[str, Field(min_length=1, max_length=256)]


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "{message}", {"message": message})


class PreprocessingCard(Schema):
    """How images are prepared for the network (:mod:`softseg.data`).

    ``spacing``: target voxel size (mm) along display axes (S, H, W) = (slice, rows, cols), each in
    [0.01, 100] mm, ``null`` = native; ``crop``: training slice size (prediction sees whole
    slices); ``normalization``: ``"zscore"`` per volume and channel; ``orientation``: axis codes
    of the arrays the network sees (``"SPL"``, :mod:`softseg.geometry`).
    """

    spacing: tuple[_Spacing | None, _Spacing | None, _Spacing | None]
    crop: tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]]
    normalization: Literal["zscore"] = "zscore"
    orientation: Literal["SPL"] = "SPL"


#: Normalisation options of the normalized ReLU (:data:`softseg.normalization.NORMALIZATIONS`;
#: that module does not import torch).
NORMALIZATIONS = tuple(_NORMALIZATIONS)
_RELU = ("normalized_relu", "multiclass_normalized_relu")


class ActivationCard(Schema):
    """The final activation (logits -> probabilities) and its options.

    ``name``: a :data:`softseg.activations.ACTIVATIONS` name. ``normalization``: what the
    normalized ReLU divides by (:data:`softseg.activations.NORMALIZATIONS`); the default
    ``"sample_max"`` (the maximum of each slice) is what every model written before issue 15
    was trained and predicts with, so a card without the key means it. ``tau``: the divisor floor
    (``floor``) or the constant divisor (``fixed``; ``running_max``: the running statistic at the
    end of training), required by those options. Both are meaningless for sigmoid/softmax and
    must keep their defaults there.

    An option this softseg does not know (a file written by a newer release) is refused with one
    line instead of being predicted with the wrong divisor.
    """

    name: Literal["sigmoid", "normalized_relu", "multiclass_normalized_relu", "softmax"]
    normalization: str = "sample_max"
    tau: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _options(self) -> ActivationCard:
        if self.normalization not in NORMALIZATIONS:
            raise _error(
                "normalization",
                f"normalized ReLU normalisation {self.normalization!r} is unknown to this softseg "
                f"(it knows {', '.join(NORMALIZATIONS)}); the model was written by a newer softseg: "
                "upgrade softseg to predict with it",
            )
        if self.name not in _RELU and (self.normalization != "sample_max" or self.tau is not None):
            raise _error(
                "normalization",
                f"{self.name} has no normalisation options (got normalization "
                f"{self.normalization!r}, tau {self.tau!r})",
            )
        if self.normalization in _NEEDS_TAU and self.tau is None:
            raise _error("tau", f"normalisation {self.normalization!r} needs tau (its divisor); none given")
        if self.normalization not in _NEEDS_TAU and self.tau is not None:
            raise _error("tau", f"normalisation {self.normalization!r} takes no tau (got {self.tau!r})")
        return self

    @property
    def window(self) -> str:
        """What prediction normalises over (:func:`softseg.activations.inference_window`):
        ``"sample"``, ``"volume"`` or ``"none"``; ``"none"`` for sigmoid/softmax."""
        if self.name not in _RELU:
            return "none"
        return inference_window(self.normalization)

    def function(self) -> Any:
        """``f(logits, *, divisor=None) -> probabilities`` for tensors (N, C, H, W), with this
        card's options bound; imports torch. ``divisor`` (a ``"volume"`` window's maximum of
        ``relu(logits)`` over the whole volume) is accepted by the normalized ReLU forms only."""
        import functools

        from softseg.activations import get_activation

        fn = get_activation(self.name)
        if self.name not in _RELU:
            return fn
        return functools.partial(fn, normalization=self.normalization, tau=self.tau)

    def describe(self) -> str:
        """``"normalized_relu (fixed, tau 1)"``; the name alone for sigmoid/softmax."""
        if self.name not in _RELU:
            return self.name
        return self.name + f" ({self.normalization}" + (f", tau {self.tau:g})" if self.tau is not None else ")")


class CandidateCard(Schema):
    """The training recipe (:class:`softseg.candidates.Candidate`) as it was used."""

    name: _Name
    title: str = ""
    description: str = ""
    soft_gt: bool | None = None
    activation: ActivationCard
    loss: str | None = None
    loss_params: dict[str, float | int | bool | str] = {}
    boundary_schedule: tuple[_Finite, _Finite, _Finite] | None = None
    #: training only: the ReLU's backward slope below 0 (softseg.activations; 0 = the paper)
    negative_slope: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class UNetConfig(Schema):
    """Constructor arguments of :class:`softseg.models.UNet2D`."""

    in_channels: Annotated[int, Field(ge=1, le=256)]
    out_channels: Annotated[int, Field(ge=1, le=256)] = 1
    depth: Annotated[int, Field(ge=1, le=6)] = 3
    width: Annotated[int, Field(ge=1, le=1024)] = 32
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.3
    batch_norm: bool = True


class ArchitectureCard(Schema):
    """The network: its registry name and constructor arguments."""

    name: Literal["UNet2D"] = "UNet2D"
    config: UNetConfig


class SplitCard(Schema):
    """Subject names of each split."""

    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()


class ThresholdCurve(Schema):
    """Mean Dice over subjects of ``probability >= t`` for each threshold t, for one class."""

    thresholds: tuple[_Threshold, ...]
    dice: tuple[_Finite | None, ...]

    @model_validator(mode="after")
    def _same_length(self) -> ThresholdCurve:
        if len(self.thresholds) != len(self.dice):
            raise _error("curve", f"{len(self.thresholds)} thresholds but {len(self.dice)} Dice values")
        return self


class ValidationCard(Schema):
    """The kept (best) epoch and its validation metrics; ``curves``: one per class."""

    best_epoch: Annotated[int, Field(ge=1)] | None = None
    val_loss: _Finite | None = None
    val_dice: _Finite | None = None
    val_soft_dice: _Finite | None = None
    curves: tuple[ThresholdCurve, ...] = ()
    argmax_dice: tuple[_Finite | None, ...] = ()  # K classes: per-class Dice of the argmax labels


class ParentCard(Schema):
    """The model a fine-tuned model started from (``softseg train --init``)."""

    path: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    candidate: _Name
    created: str | None = None


class HistoryRow(Schema):
    """One epoch, as the ``epoch`` progress event reported it (NaN/Inf stored as null)."""

    epoch: Annotated[int, Field(ge=1)]
    loss: _Finite | None = None
    val_loss: _Finite | None = None
    val_dice: _Finite | None = None
    val_soft_dice: _Finite | None = None
    lr: _Finite | None = None
    elapsed_s: _Finite | None = None


class TrainingCard(Schema):
    """How the model was trained.

    ``config`` is the run's :class:`~softseg.config.TrainConfig` (``None`` for a version-1 file
    whose stored configuration no longer validates); ``epochs`` completed of ``max_epochs``;
    ``stop_reason``: ``"completed"`` or ``"early_stopping"``; ``seconds``: training time.
    """

    config: TrainConfig | None = None
    epochs: Annotated[int, Field(ge=0)] | None = None
    max_epochs: Annotated[int, Field(ge=1)] | None = None
    stop_reason: str | None = None
    seconds: _Finite | None = None
    seed: int | None = None
    device: str | None = None
    world_size: Annotated[int, Field(ge=1)] = 1
    distributed: str | None = None
    created: str | None = None


class SoftwareCard(Schema):
    """Versions of the software that wrote the file (``None`` = not recorded)."""

    softseg: str | None = None
    python: str | None = None
    torch: str | None = None
    numpy: str | None = None
    safetensors: str | None = None


class ModelCard(Schema):
    """A model file's card (see the module docstring). Frozen; build with keyword arguments or
    read with :func:`softseg.modelfile.read_card`."""

    format_version: Literal[2] = FORMAT_VERSION
    classes: Annotated[tuple[_Name, ...], Field(min_length=1)] = ("foreground",)
    thresholds: Annotated[tuple[_Threshold, ...], Field(min_length=1)]
    channels: Annotated[tuple[_Name, ...], Field(min_length=1)]
    preprocessing: PreprocessingCard
    candidate: CandidateCard
    architecture: ArchitectureCard
    raters: tuple[str, ...] = ()
    fusion: str | None = None
    dataset: str | None = None
    split: SplitCard = SplitCard()
    validation: ValidationCard = ValidationCard()
    history: tuple[HistoryRow, ...] = ()
    training: TrainingCard = TrainingCard()
    software: SoftwareCard = SoftwareCard()
    class_keys: tuple[_Name, ...] = ()  # file keys of the classes (dataset.json's); () = names
    parent: ParentCard | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.class_keys and len(self.class_keys) != len(self.classes):
            raise _error("class_keys", f"{len(self.class_keys)} class key(s) for {len(self.classes)} class(es)")
        if len(self.thresholds) != len(self.classes):
            raise _error(
                "thresholds",
                f"{len(self.thresholds)} threshold(s) for {len(self.classes)} class(es); give one per class",
            )
        config = self.architecture.config
        if config.in_channels != len(self.channels):
            raise _error(
                "channels",
                f"the network takes {config.in_channels} input channel(s) but {len(self.channels)} "
                f"channel name(s) are given ({', '.join(self.channels)})",
            )
        k = len(self.classes)
        if config.out_channels not in (k, k + 1):
            raise _error(
                "classes",
                f"the network has {config.out_channels} output channel(s) for {k} class(es) "
                "(expected one per class, or one more for the background)",
            )
        return self

    @property
    def threshold(self) -> float:
        """The optimal threshold of a single-class model.

        Raises
        ------
        InputError
            The model has several classes (use :attr:`thresholds`).
        """
        if len(self.thresholds) != 1:
            raise InputError(
                f"this model has {len(self.classes)} classes ({', '.join(self.classes)}); "
                "pick a class's threshold from card.thresholds"
            )
        return float(self.thresholds[0])

    def preprocessing_steps(self) -> Any:
        """The :class:`softseg.data.Preprocessing` that prediction applies."""
        from softseg.data import Preprocessing

        p = self.preprocessing
        return Preprocessing(spacing=p.spacing, crop=p.crop, channels=self.channels,
                             normalization=p.normalization, orientation=p.orientation)

    def to_json(self, *, indent: int | None = None) -> str:
        """The card as strict JSON (what the model file stores)."""
        return json.dumps(self.model_dump(mode="json"), allow_nan=False, indent=indent)


# ============================================================================ reading
def card_from_document(doc: Any, *, source: str) -> ModelCard:
    """The card of a parsed ``"softseg"`` metadata document (format version 1 or 2).

    Parameters
    ----------
    doc : Any
        The parsed JSON (:func:`softseg.schema.loads_json`).
    source : str
        Named in error messages (e.g. ``"m.safetensors: model card"``).

    Raises
    ------
    InputError
        Not an object, an unknown format version, or a value of the wrong type or out of range
        (one line naming the key path).
    """
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a JSON object; got {type(doc).__name__}")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"{source}: format_version {version!r} is not a model-card version; the file is damaged")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{source}: model file format version {version} is not supported by this softseg "
            f"(reads versions 1..{FORMAT_VERSION}); upgrade softseg"
        )
    if version == 1:
        doc = _upgrade_v1(doc, source=source)
    return parse(ModelCard, doc, source=source)


_V1_REQUIRED = ("candidate", "architecture", "preprocessing", "threshold")


def _upgrade_v1(doc: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Map a version-1 document onto the version-2 layout (nothing that affects predictions
    changes: activation name, architecture, preprocessing and threshold are carried over)."""
    missing = [k for k in _V1_REQUIRED if k not in doc]
    if missing:
        raise InputError(f"{source}: softseg metadata lacks {', '.join(missing)}; the file is incomplete")

    def section(key: str) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InputError(f"{source}: {key}: expected a JSON object; got {type(value).__name__}")
        return value

    cand, prep, val, prov = section("candidate"), section("preprocessing"), section("validation"), section("provenance")
    known = _registry_candidate(cand.get("name"))
    candidate = {
        "name": cand.get("name"),
        "title": cand.get("title", known.get("title", "")),
        "soft_gt": cand.get("soft_gt", known.get("soft_gt")),
        "activation": {"name": cand.get("activation")},
        "loss": cand.get("loss", known.get("loss")),
        "loss_params": cand.get("loss_params", known.get("loss_params", {})),
    }
    classes = [c for c in (prov.get("classes") or ["foreground"])]
    sweep = val.get("threshold_sweep") or []
    curves = []
    if isinstance(sweep, list) and sweep and all(isinstance(p, list) and len(p) == 2 for p in sweep):
        curves = [{"thresholds": [p[0] for p in sweep], "dice": [p[1] for p in sweep]}]
    history = [
        {k: row.get(k) for k in ("epoch", "loss", "val_loss", "val_dice", "val_soft_dice", "lr") if k in row}
        for row in (val.get("history") or []) if isinstance(row, dict)
    ]
    subjects = prov.get("subjects") or {}
    config = prov.get("config")
    typed_config = None
    if isinstance(config, dict):
        try:
            typed_config = TrainConfig.from_dict(config).as_dict()
        except InputError:
            typed_config = None  # a stored configuration of an older release: not needed to predict
    return {
        "format_version": FORMAT_VERSION,
        "classes": classes,
        "thresholds": [doc.get("threshold")],
        "channels": prep.get("channels"),
        "preprocessing": {k: prep[k] for k in ("spacing", "crop", "normalization", "orientation") if k in prep},
        "candidate": candidate,
        "architecture": doc.get("architecture"),
        "raters": prov.get("raters") or [],
        "fusion": prov.get("fusion"),
        "dataset": prov.get("dataset"),
        "split": {k: subjects.get(k) or [] for k in ("train", "val", "test")} if isinstance(subjects, dict) else {},
        "validation": {
            "best_epoch": val.get("best_epoch"),
            "val_loss": val.get("val_loss"),
            "val_dice": val.get("val_dice"),
            "val_soft_dice": val.get("val_soft_dice"),
            "curves": curves,
        },
        "history": history,
        "training": {
            "config": typed_config,
            "epochs": prov.get("epochs"),
            "max_epochs": prov.get("max_epochs"),
            "seed": prov.get("seed"),
            "device": prov.get("device"),
            "world_size": prov.get("world_size") or 1,
            "distributed": prov.get("distributed"),
            "created": prov.get("created"),
        },
        "software": {"softseg": prov.get("softseg_version"), "torch": prov.get("torch_version")},
    }


#: loss options that change a published recipe (issue 15), shown by :func:`describe`
_SHOWN_LOSS_OPTIONS = ("balance", "dice_semimetric_weight", "weight_map")


def _recipe_options(c: CandidateCard) -> str:
    """`` (balance 0.1, dice_semimetric_weight 1, leaky gradient 0.1)``: what sets a recipe
    apart from the published loss and ReLU; empty when nothing does."""
    parts = [f"{k} {c.loss_params[k]:g}" for k in _SHOWN_LOSS_OPTIONS
             if isinstance(c.loss_params.get(k), (int, float)) and c.loss_params.get(k)]
    if c.negative_slope:
        parts.append(f"leaky gradient {c.negative_slope:g}")
    return f" ({', '.join(parts)})" if parts else ""


def _registry_candidate(name: Any) -> dict[str, Any]:
    from softseg.candidates import CANDIDATES

    c = CANDIDATES.get(name) if isinstance(name, str) else None
    if c is None:
        return {}
    return {"title": c.title, "soft_gt": c.soft_gt, "loss": c.loss, "loss_params": dict(c.loss_params)}


def software_versions() -> SoftwareCard:
    """The versions of this process's softseg, Python, torch, numpy and safetensors."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from softseg import __version__

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            return None

    return SoftwareCard(softseg=__version__, python=platform.python_version(), torch=ver("torch"),
                        numpy=ver("numpy"), safetensors=ver("safetensors"))


# ============================================================================ text
def _num(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def render_card(card: ModelCard, *, path: str | None = None) -> str:
    """The card as readable text, one topic per line (``softseg info``; the Predict widget).

    Parameters
    ----------
    card : ModelCard
    path : str, optional
        The model file, shown on the first line.

    Returns
    -------
    str
        Lines ``"<topic>  <text>"`` separated by newlines, without a trailing newline.
    """
    c = card.candidate
    act = c.activation.describe()
    gt = {True: "soft ground truth", False: "ground truth binarised at 0.5", None: "ground truth ?"}[c.soft_gt]
    p = card.preprocessing
    spacing = " x ".join("native" if s is None else f"{s:g}" for s in p.spacing)
    a = card.architecture.config
    v = card.validation
    t = card.training
    split = card.split
    rows = [
        ("Model", path or "(unsaved)"),
        ("Candidate", f"{c.name}" + (f" ({c.title})" if c.title else "") +
         f": {gt}, {act}, {c.loss or '?'} loss" + _recipe_options(c)),
        ("Classes", ", ".join(f"{name} (threshold {thr:.2f})" for name, thr in zip(card.classes, card.thresholds))),
        ("Channels", ", ".join(card.channels)),
        ("Preprocessing", f"spacing (S, H, W) {spacing} mm; crop {p.crop[0]} x {p.crop[1]}; "
         f"{p.normalization} normalisation; orientation {p.orientation}"),
        ("Network", f"{card.architecture.name} depth {a.depth}, width {a.width}, dropout {a.dropout:g}, "
         f"{'batch norm' if a.batch_norm else 'no batch norm'}; {a.in_channels} -> {a.out_channels} channel(s)"),
        ("Raters", (", ".join(card.raters) or "–") + (f"; fusion {card.fusion}" if card.fusion else "")),
        ("Data", f"{card.dataset or '?'}: {len(split.train)} training, {len(split.val)} validation, "
         f"{len(split.test)} test subject(s)"),
        ("Validation", f"best epoch {v.best_epoch if v.best_epoch is not None else '–'}: loss "
         f"{_num(v.val_loss, '.4f')}, Dice {_num(v.val_dice)}, soft Dice {_num(v.val_soft_dice)}"),
        ("Training", f"{t.epochs if t.epochs is not None else '?'} of "
         f"{t.max_epochs if t.max_epochs is not None else '?'} epochs"
         + (f" ({t.stop_reason.replace('_', ' ')})" if t.stop_reason else "")
         + f" in {format_seconds(t.seconds)} on {t.device or '?'}"
         + (f" x {t.world_size}" if t.world_size > 1 else "")
         + f", seed {t.seed if t.seed is not None else '?'}"
         + (f", {t.created}" if t.created else "")),
        *([("Parent", f"fine-tuned from {card.parent.path} ({card.parent.candidate})")] if card.parent else []),
        ("Software", ", ".join(f"{k} {val}" for k, val in card.software.model_dump().items() if val) or "–"),
        ("Format", f"model card version {card.format_version}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {text}" for k, text in rows)
