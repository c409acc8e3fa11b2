"""softseg.config: the one typed training configuration, its presets and its JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from softseg.config import (
    PRESETS,
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    json_schema,
    merge,
    preset,
)
from softseg.errors import InputError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_defaults_are_the_papers_recipe():
    """SoftSeg Table 1 (spinal cord grey matter)."""
    c = TrainConfig()
    assert c == PRESETS["paper"] == preset("paper")
    assert (c.model.depth, c.model.dropout, c.model.batch_norm) == (3, 0.3, True)
    assert (c.optim.lr, c.optim.batch_size, c.optim.epochs, c.optim.patience, c.optim.min_delta) == (
        1e-3, 8, 200, 50, 0.001)
    assert c.data.crop == (128, 128)
    assert (c.augment.rotation, c.augment.translation, c.augment.scale) == (20.0, 0.03, 0.1)
    quick = preset("quick")
    assert quick.optim.epochs < 20 and quick.model.width < c.model.width
    with pytest.raises(InputError, match="unknown preset 'fast'; choose one of quick, paper"):
        preset("fast")


def test_frozen_round_trip_and_overrides():
    c = TrainConfig(candidate="conventional", optim=OptimConfig(epochs=2), data=DataConfig(crop=(32, 48)))
    assert TrainConfig.from_dict(c.as_dict()) == c
    assert json.loads(c.to_json()) == c.as_dict()
    with pytest.raises(Exception):
        c.seed = 4
    d = c.updated({"optim": {"lr": 0.01}, "model": {"width": 8}})
    assert (d.optim.lr, d.optim.epochs, d.model.width, d.candidate) == (0.01, 2, 8, "conventional")
    assert c.optim.lr == 1e-3  # unchanged
    with pytest.raises(InputError, match="^flags: optim.lr: Input should be greater than 0$"):
        c.updated({"optim": {"lr": -1.0}}, source="flags")
    assert merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}, "c": 4}) == {"a": {"x": 1, "y": 3}, "b": 1, "c": 4}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"optim": {"lr": "0.01"}}, "optim.lr: Input should be a valid number"),
        ({"optim": {"lr": float("inf")}}, "not representable as JSON"),
        ({"optim": {"batch_size": True}}, "optim.batch_size: Input should be a valid integer"),
        ({"optim": {"epochs": 0}}, "optim.epochs: Input should be greater than or equal to 1"),
        ({"optim": {"patience": -1}}, "optim.patience: Input should be greater than or equal to 1"),
        ({"optim": {"min_delta": -0.1}}, "optim.min_delta: Input should be greater than or equal to 0"),
        ({"model": {"width": 0}}, "model.width: Input should be greater than or equal to 1"),
        ({"model": {"batch_norm": 1}}, "model.batch_norm: Input should be a valid boolean"),
        ({"data": {"crop": [7, 128]}}, "data.crop.0: Input should be greater than or equal to 8"),
        ({"data": {"crop": [64, 64, 64]}}, "data.crop: Tuple should have at most 2 items"),
        ({"data": {"spacing": [None, 1.0, 300.0]}}, "data.spacing.2: Input should be less than or equal to 100"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction: Input should be less than 1"),
        ({"data": {"test_group": ""}}, "data.test_group: String should have at least 1 character"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"augment": {"translation": 0.8}}, "augment.translation: Input should be less than or equal to 0.5"),
        ({"augment": {"flip": True}}, "augment.flip: unknown key"),
        ({"device": "cuda:x"}, "device: unknown device 'cuda:x'"),
    ],
)
def test_types_ranges_and_unknown_keys_are_one_line_errors(doc, message):
    with pytest.raises(InputError) as exc:
        TrainConfig.from_dict(doc, source="run.json")
    text = str(exc.value)
    assert text.startswith("run.json: ") and message in text and "\n" not in text


def test_python_construction_validates_too():
    with pytest.raises(Exception, match="greater than 0"):
        OptimConfig(lr=0.0)
    with pytest.raises(Exception, match="less than or equal to 6"):
        ModelConfig(depth=7)
    with pytest.raises(Exception, match="unknown candidate"):
        TrainConfig(candidate="nope")
    assert AugmentConfig(enabled=False).enabled is False


def test_json_file_round_trip(tmp_path):
    c = PRESETS["quick"].updated({"candidate": "soft-sig-bce", "data": {"spacing": [None, 0.5, 0.5]}})
    path = c.to_json_file(tmp_path / "c.json")
    assert TrainConfig.from_json_file(path) == c
    (tmp_path / "deep.json").write_text("[" * 200 + "]" * 200)
    with pytest.raises(InputError, match="nested deeper than"):
        TrainConfig.from_json_file(tmp_path / "deep.json")
    (tmp_path / "latin1.json").write_bytes(b'{"candidate": "caf\xe9"}')
    with pytest.raises(InputError, match="not UTF-8"):
        TrainConfig.from_json_file(tmp_path / "latin1.json")


def test_docs_schema_is_generated_from_the_model_and_validates_like_it():
    """docs/train-config.schema.json is json_schema() (regenerate it when the config changes);
    an independent validator (jsonschema) accepts and refuses the same documents on types and
    ranges."""
    committed = json.loads((DOCS / "train-config.schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema(), "regenerate docs/train-config.schema.json (see docs/training.md)"
    validator = jsonschema.Draft202012Validator(committed)
    for cfg in PRESETS.values():
        validator.validate(cfg.as_dict())
    for bad in ({"optim": {"lr": "0.01"}}, {"optim": {"lr": 0}}, {"model": {"depth": 9}}, {"epochs": 3},
                {"data": {"crop": [4, 4]}}, {"device": "gpu"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)
        with pytest.raises(InputError):
            TrainConfig.from_dict(bad)
    assert "train-config.schema.json" in (DOCS / "training.md").read_text(encoding="utf-8")
