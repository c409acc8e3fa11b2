"""``softseg compare --train ... --resume`` across a release that gave a candidate's name another
recipe (issue 15: ``softseg`` became Adaptive Wing + the Dice semimetric; the old recipe is
``softseg-wing``). A finished unit is kept only if its model card's recipe is the one its name
has now; a stale one is trained again, with the reason shown, and the others are not touched."""

from __future__ import annotations

import json

import pytest

from softseg.candidates import get_candidate
from softseg.cli import main
from softseg.modelfile import read_card
from softseg.phantom import write_dataset
from softseg.protocol import stale_units

TINY = ["--epochs", "1", "--crop", "24", "24", "--width", "4", "--depth", "2",
        "--batch-size", "4", "--device", "cpu", "--test-fraction", "0.25",
        "--val-fraction", "0.25", "--no-stats", "--ground-truth", "truth", "--repeats", "1"]


def _as_previous_release(out):
    """Rename the finished ``softseg-wing`` unit to ``softseg``, as the release before the
    change wrote it (same recipe, then called softseg): state, record, model files."""
    state = json.loads((out / "run_state.json").read_text())
    rec = json.loads(json.dumps(state["units"].pop("softseg-wing/r0")).replace(
        "models/softseg-wing-r0", "models/softseg-r0"))
    rec["candidate"] = rec["plan"]["candidate"] = "softseg"
    rec["plan"]["trainings"][0]["config"]["candidate"] = "softseg"
    state["units"]["softseg/r0"] = rec
    state["config"]["candidates"] = ["conventional", "softseg"]
    (out / "run_state.json").write_text(json.dumps(state))
    (out / "units" / "softseg-wing-r0.json").unlink()
    (out / "units" / "softseg-r0.json").write_text(json.dumps(rec))
    for suffix in (".safetensors", ".history.csv"):
        (out / "models" / f"softseg-wing-r0{suffix}").rename(out / "models" / f"softseg-r0{suffix}")
    return state["units"]


def test_resume_trains_again_only_the_unit_whose_recipe_changed(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "ds", n_subjects=4, shape=(24, 24, 8), n_raters=2, seed=0)
    out = tmp_path / "report"
    assert main(["compare", "--train", "conventional", "softseg-wing", "--dataset", str(dataset),
                 "--out", str(out), *TINY]) == 0
    units = _as_previous_release(out)
    old_card = read_card(out / "models" / "softseg-r0.safetensors")
    assert old_card.candidate.loss_params == get_candidate("softseg-wing").loss_params
    assert list(stale_units(out, units)) == ["softseg/r0"]
    conventional = out / "models" / "conventional-r0.safetensors"
    stamp = conventional.stat().st_mtime_ns
    capsys.readouterr()

    assert main(["compare", "--train", "conventional", "softseg", "--dataset", str(dataset),
                 "--out", str(out), *TINY, "--resume"]) == 0
    text = capsys.readouterr()
    assert "trained with another recipe than 'softseg'" in text.out + text.err
    assert conventional.stat().st_mtime_ns == stamp  # not trained again
    card = read_card(out / "models" / "softseg-r0.safetensors")
    assert card.candidate.loss_params == get_candidate("softseg").loss_params
    assert card.candidate.loss_params != old_card.candidate.loss_params
    state = json.loads((out / "run_state.json").read_text())
    assert sorted(state["units"]) == ["conventional/r0", "softseg/r0"] and not state["failures"]
    assert stale_units(out, state["units"]) == {}


def test_stale_units_counts_an_unreadable_model_as_stale(tmp_path):
    rec = {"candidate": "softseg", "model": "models/x.safetensors", "models": ["models/x.safetensors"]}
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.safetensors").write_bytes(b"not a model")
    assert "cannot be read" in stale_units(tmp_path, {"softseg/r0": rec})["softseg/r0"]
    with pytest.raises(KeyError):
        stale_units(tmp_path, {"softseg/r0": {"candidate": "softseg"}})


def test_a_unit_checkpoint_of_the_old_recipe_is_started_over_not_resumed(tmp_path):
    """The protocol resumes a unit's interrupted training only if the checkpoint's recipe is
    its candidate's now (recorded in the checkpoint, or, for a checkpoint of the previous
    release that does not record it, what the name meant then)."""
    import threading

    from softseg import events as ev
    from softseg.config import TrainConfig
    from softseg.protocol.units import _stale_checkpoint
    from softseg.training import checkpoint_path, train
    from softseg.training.checkpoint import read_checkpoint, write_checkpoint

    dataset = write_dataset(tmp_path / "ds", n_subjects=3, shape=(24, 24, 8), n_raters=2, seed=0)
    cfg = TrainConfig.from_dict({"candidate": "softseg-wing", "seed": 0, "device": "cpu",
                                 "data": {"crop": [24, 24], "val_fraction": 0.34},
                                 "model": {"depth": 2, "width": 4}, "optim": {"epochs": 2, "batch_size": 4}})
    out = tmp_path / "m.safetensors"
    cancel = threading.Event()
    for e in train(dataset, cfg, out=out, cancel=cancel):
        if isinstance(e, ev.StepEvent):
            cancel.set()
    ckpt = checkpoint_path(out)
    assert not _stale_checkpoint(ckpt, "softseg-wing")
    assert _stale_checkpoint(ckpt, "softseg")  # the recorded recipe is not softseg's now
    tensors, doc = read_checkpoint(ckpt)
    doc["config"]["candidate"] = "softseg"
    del doc["recipe"]  # the previous release: "softseg" meant today's softseg-wing
    write_checkpoint(ckpt, tensors, doc)
    assert _stale_checkpoint(ckpt, "softseg")
    doc["config"]["candidate"] = "softseg-dml"  # the previous release's name of today's softseg
    write_checkpoint(ckpt, tensors, doc)
    assert not _stale_checkpoint(ckpt, "softseg")


def test_a_retired_name_is_its_recipe_s_name_in_a_comparison(capsys):
    """``softseg-dml`` (this recipe's name for one release) means ``softseg`` everywhere: a
    comparison lists it once, takes it as the reference, and ``softseg candidates`` says so."""
    from softseg.errors import InputError
    from softseg.protocol import ProtocolConfig

    cfg = ProtocolConfig(candidates=("softseg-wing", "softseg-dml:staple"), repeats=6,
                         reference="softseg-dml:staple")
    assert cfg.candidates == ("softseg-wing", "softseg:staple") and cfg.reference == "softseg:staple"
    with pytest.raises(InputError, match=r"^a candidate is listed twice: softseg, softseg-dml "
                                         r"\(softseg-dml is another name of softseg\)$"):
        ProtocolConfig(candidates=("softseg", "softseg-dml"), repeats=6, reference="softseg")
    assert main(["candidates", "softseg-dml", "softseg"]) == 0
    out = capsys.readouterr().out
    assert out.count("Soft-ReLU-Wing+DML") == 1 and "adaptive_wing + dice_semimetric" in out
    assert "(softseg-dml is another name of softseg:" in out
