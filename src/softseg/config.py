"""The training configuration: one typed, frozen, validated schema (issue 12 item 5).

:class:`TrainConfig` holds everything that defines a training run. It is a frozen pydantic model
(:class:`softseg.schema.Schema`: unknown keys are errors, types are strict - ``"0.01"`` is not a
number) whose fields carry their ranges, so a configuration is checked **once**, where it enters
the product:

* ``softseg train --config FILE`` (:meth:`TrainConfig.from_json_file`) and the command-line flags
  (merged over the file, then validated together);
* the napari Train widget, which builds a :class:`TrainConfig` from its controls and hands the
  training child process a JSON file (:meth:`TrainConfig.to_json_file`);
* Python (``TrainConfig(optim=OptimConfig(epochs=2))``), the comparison protocol, and the model
  card (the configuration of a run is stored in its model file).

A wrong type, a value out of range or an unknown key is one :class:`~softseg.errors.InputError`
line naming the key path, e.g. ``config.json: optim.lr: Input should be a valid number``.

The JSON Schema of the file format is generated from the same classes (:func:`json_schema`) and
kept in ``docs/train-config.schema.json``.

Presets (:data:`PRESETS`): ``"paper"`` is the SoftSeg paper's recipe (Gros et al. 2021, Table 1,
spinal cord grey matter: U-Net depth 3, dropout 0.3, Adam lr 1e-3 with cosine annealing, batch 8,
crop 128 x 128, at most 200 epochs, early stopping patience 50 epochs with epsilon 0.001, random
affine rotation +-20 deg, translation +-3 %, scale +-10 %) and equals ``TrainConfig()``;
``"quick"`` is sized for a first run on a laptop CPU (minutes, not hours).

Importing this module does not import torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from softseg.device import DEVICE_PATTERN, check_device_name
from softseg.errors import InputError
from softseg.schema import Schema, load_json, parse

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PRESETS",
    "TrainConfig",
    "json_schema",
    "merge",
    "preset",
]

#: Smallest and largest voxel size (mm) accepted for training/prediction spacing: below 10 um
#: or above 10 cm a medical image is mis-labelled, and resampling would collapse or explode it.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 100.0

def _error(kind: str, message: str) -> PydanticCustomError:
    # a custom error: its message is shown as is (no "Value error, " prefix)
    return PydanticCustomError(kind, "{message}", {"message": message})


_Spacing = Annotated[float, Field(ge=MIN_SPACING_MM, le=MAX_SPACING_MM, allow_inf_nan=False)]
_CropSize = Annotated[int, Field(ge=8, le=4096)]
_Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class DataConfig(Schema):
    """Data of a run.

    Attributes
    ----------
    spacing : (S, H, W) mm or None
        Target voxel size along the display axes (slice, rows, cols); ``None`` for an axis keeps
        it native. Default ``None``: the median in-plane spacing of the training subjects, slices
        native. Each value in [0.01, 100] mm.
    crop : (rows, cols)
        Centre crop/pad of training slices, 8..4096 each (paper: 128 x 128 spinal cord,
        160 x 124 MS lesions).
    fusion : str
        How several raters become one training target (``softseg candidates`` lists them).
    val_fraction, test_fraction : float in [0, 1)
        Subject fractions for validation and test (:func:`softseg.data.split_subjects`); their
        sum must stay below 1.
    test_group : str, optional
        Hold out this ``dataset.json`` group as the test set.
    foreground_oversampling : float in [0, 1]
        Share of each epoch's training samples drawn from the slices that hold the structure
        (any rater's label of any class >= 0.5 in the cropped slice); the rest are drawn from all
        slices, with replacement (nnU-Net's ``oversample_foreground_percent``, 0.33 there;
        Isensee et al. 2021). Default 0: every slice once per epoch, shuffled (the paper's
        sampling). Small lesions, which leave most slices empty, are seen far more often with
        0.33 (issue 15).
    """

    spacing: tuple[_Spacing | None, _Spacing | None, _Spacing | None] | None = None
    crop: tuple[_CropSize, _CropSize] = (128, 128)
    fusion: str = "average"
    val_fraction: _Fraction = 0.2
    test_fraction: _Fraction = 0.0
    test_group: Annotated[str, Field(min_length=1)] | None = None
    foreground_oversampling: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0

    @field_validator("foreground_oversampling", mode="before")
    @classmethod
    def _snap_share(cls, value: Any) -> Any:
        # a share within floating-point rounding of [0, 1] (e.g. 1/3 * 3) is valid: snap it
        if isinstance(value, float) and (-1e-9 <= value < 0.0 or 1.0 < value <= 1.0 + 1e-9):
            return min(max(value, 0.0), 1.0)
        return value

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, value: str) -> str:
        from softseg.candidates import FUSIONS

        if value not in FUSIONS:
            raise _error("unknown_fusion", f"unknown fusion {value!r}; choose one of {', '.join(FUSIONS)}")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise _error(
                "fractions",
                f"val_fraction + test_fraction must stay below 1 (some subjects must train); got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self


class ModelConfig(Schema):
    """U-Net architecture (:class:`softseg.models.UNet2D`); paper: depth 3 or 4, dropout 0.3."""

    depth: Annotated[int, Field(ge=1, le=6)] = 3
    width: Annotated[int, Field(ge=1, le=512)] = 32
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.3
    batch_norm: bool = True


class OptimConfig(Schema):
    """Adam + cosine annealing over ``epochs``; early stopping on the validation loss.

    ``lr`` in (0, 10]; ``batch_size`` 1..4096 slices; ``epochs`` 1..100000 (the maximum);
    ``patience`` >= 1 epochs without an improvement larger than ``min_delta`` (>= 0).
    """

    lr: Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False)] = 1e-3
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 200
    patience: Annotated[int, Field(ge=1, le=100_000)] = 50
    min_delta: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.001


class AugmentConfig(Schema):
    """Random affine augmentation (:func:`softseg.augment.random_affine`).

    ``rotation`` in degrees [0, 180]; ``translation`` as a fraction of the slice size [0, 0.5];
    ``scale`` as a relative change [0, 0.9].
    """

    enabled: bool = True
    rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 20.0
    translation: Annotated[float, Field(ge=0.0, le=0.5)] = 0.03
    scale: Annotated[float, Field(ge=0.0, le=0.9)] = 0.1


class TrainConfig(Schema):
    """Everything that defines a training run (stored in the model card).

    Attributes
    ----------
    candidate : str
        A :data:`softseg.candidates.CANDIDATES` name.
    seed : int >= 0
        Seeds splits, initialisation, dropout, shuffling, augmentation and rater sampling.
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    amp : bool
        Mixed precision (``torch.autocast`` + ``GradScaler``), used on CUDA only.
    data, model, optim, augment
        The nested sections.

    Examples
    --------
    >>> TrainConfig(candidate="conventional", optim=OptimConfig(epochs=2)).optim.epochs
    2
    """

    candidate: str = "softseg"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    device: Annotated[str, Field(json_schema_extra={"pattern": DEVICE_PATTERN})] = "auto"
    amp: bool = True
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()

    @field_validator("candidate")
    @classmethod
    def _known_candidate(cls, value: str) -> str:
        from softseg.candidates import CANDIDATES, RENAMED

        if value in RENAMED:  # a retired name: the same recipe under its name now
            return RENAMED[value][0]
        if value not in CANDIDATES:
            raise _error("unknown_candidate", f"unknown candidate {value!r}; choose one of {', '.join(CANDIDATES)}")
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        try:
            return check_device_name(value)
        except InputError as exc:
            raise _error("device", str(exc)) from None

    # ------------------------------------------------------------------ boundaries
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config") -> TrainConfig:
        """Validate a nested dict (parsed JSON); one-line :class:`InputError` naming the key."""
        return parse(cls, data, source=source)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Read and validate a JSON configuration file (:func:`softseg.schema.load_json`)."""
        return cls.from_dict(load_json(path, what="training configuration"), source=str(path))

    def as_dict(self) -> dict[str, Any]:
        """Nested JSON-able dict (tuples as lists); :meth:`from_dict` gives the config back."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """The configuration as an indented JSON document."""
        return json.dumps(self.as_dict(), indent=2, allow_nan=False)

    def to_json_file(self, path: str | os.PathLike) -> Path:
        """Write the configuration as JSON (atomically) and return the path."""
        from softseg.io import atomic_path

        path = Path(path)
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def updated(self, overrides: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """A new configuration with ``overrides`` (a nested dict) merged in, validated again."""
        return type(self).from_dict(merge(self.as_dict(), overrides), source=source)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge: values of ``overrides`` replace those of ``base``, sections merge.

    Neither input is modified. A section given as a non-object in either is replaced whole
    (validation then reports the wrong type).
    """
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _presets() -> dict[str, TrainConfig]:
    paper = TrainConfig()
    quick = TrainConfig(
        model=ModelConfig(width=16),
        optim=OptimConfig(epochs=10, patience=10),
    )
    return {"quick": quick, "paper": paper}


#: Named starting points: ``"paper"`` (SoftSeg Table 1, == ``TrainConfig()``) and ``"quick"``
#: (width 16, 10 epochs: a first model on a CPU in minutes; the paper's recipe is one switch away).
PRESETS: dict[str, TrainConfig] = _presets()


def preset(name: str) -> TrainConfig:
    """A preset by name; an unknown name is an :class:`InputError` listing them."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the ``--config`` file, generated from :class:`TrainConfig`."""
    schema = TrainConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "softseg training configuration (softseg train --config FILE)"
    return schema
