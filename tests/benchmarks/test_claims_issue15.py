"""benchmarks/softseg_claims.py, issue 15 part 4: the cpu-issue15 budget's shards, the
evaluation-only MC-dropout / TTA rows and their table (no training: a tiny untrained U-Net on a
small phantom subject)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

# the ``claims`` fixture (the benchmark as a module) is in conftest.py


def test_issue15_budget_has_the_cpu_settings_and_two_shards_of_similar_cost(claims):
    cpu, i15 = claims.BUDGETS["cpu"], claims.BUDGETS["cpu-issue15"]
    for f in ("n_subjects", "shape", "spacing", "repeats", "epochs", "patience", "batch_size",
              "lr", "crop", "width", "depth", "fusion", "seed", "test_fraction", "val_fraction"):
        assert getattr(i15, f) == getattr(cpu, f), f
    assert set(i15.candidates) == {"conventional", "softseg", "softseg-wing", "softseg-paper",
                                   "soft-relu-dice", "soft-relu-dml", "conventional:ensemble"}
    assert i15.evaluation_rows == ("conventional+mc-dropout", "conventional+tta")
    assert claims.EVALUATION_ROWS["conventional+mc-dropout"][1:] == ("mc_dropout", 10)
    assert claims.EVALUATION_ROWS["conventional+tta"][1:] == ("tta", 8)
    shards = i15.shard_lists()
    assert sorted(c for s in shards for c in s) == sorted(i15.candidates)
    costs = [sum(claims.training_cost(c) for c in s) for s in shards]
    assert sorted(costs) == [5, 5]  # the ensemble trains one model per rater (4)
    # the existing budgets keep their shards (their work folders resume)
    assert claims.BUDGETS["cpu-long"].shard_lists() == (("conventional", "soft-sig-bce"),
                                                        ("softseg", "soft-relu-dice"))
    assert claims.BUDGETS["cpu"].shard_lists() == claims.SHARDS[2]


def test_balanced_shards_give_each_shard_two_candidates(claims):
    cands = ("conventional", "softseg", "soft-relu-dml", "conventional:ensemble")
    a, b = claims.balanced_shards(cands)
    assert len(a) >= 2 and len(b) >= 2 and sorted(a + b) == sorted(cands)
    assert {sum(claims.training_cost(c) for c in s) for s in (a, b)} == {5, 2}
    b15 = replace(claims.BUDGETS["cpu-long"], candidates=cands)
    assert b15.shard_lists() == (a, b)
    with pytest.raises(SystemExit, match="at least 4 candidates"):
        claims.balanced_shards(("conventional", "conventional:ensemble"))


def test_foreground_oversampling_reaches_the_protocol_config(claims):
    if not claims.has_foreground_oversampling():
        pytest.skip("softseg.protocol.ProtocolConfig has no foreground_oversampling yet")
    b = replace(claims.BUDGETS["cpu-issue15"], foreground_oversampling=0.33)
    cfg = claims.protocol_config(b.shard_lists()[0], b)
    assert cfg.foreground_oversampling == pytest.approx(0.33)
    cmd = claims.shard_command(Path("d"), Path("o"), b.shard_lists()[0], b)
    assert cmd[cmd.index("--foreground-oversampling") + 1] == "0.33"
    assert claims.protocol_config(("a", "b"), claims.BUDGETS["cpu"]).foreground_oversampling == 0
    assert "--foreground-oversampling" not in claims.shard_command(
        Path("d"), Path("o"), ("a", "b"), claims.BUDGETS["cpu"])


def test_cli_refusals(claims, tmp_path):
    base = ["--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), "--report-only"]
    with pytest.raises(SystemExit) as exc:
        claims.main(["--budget", "cpu", "--candidates", "softseg", "conventional+tta", *base])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        claims.main(["--budget", "cpu", "--foreground-oversampling", "1.5", *base])
    assert exc.value.code == 2
    assert not (tmp_path / "o.json").exists()


def test_issue15_table_rows_only_when_asked(claims):
    assert claims.versus_conventional(claims.BUDGETS["cpu"]) == ()
    assert claims.versus_conventional(claims.BUDGETS["cpu-long"]) == ()
    rows = claims.versus_conventional(claims.BUDGETS["cpu-issue15"])
    assert rows[-2:] == ("conventional+mc-dropout", "conventional+tta") and len(rows) == 9


def test_issue15_markdown_every_row_has_mean_sd_and_p(claims):
    rng = np.random.default_rng(0)
    names = ("conventional", "softseg", "conventional+tta")
    rows = {c: [{"dice": float(v), "ece": float(w), "soft_rvd": 0.1, "entropy_error": 5.0,
                 "uncertainty_auroc": 0.8} for v, w in rng.uniform(0.5, 0.9, (6, 2))]
            for c in names}
    tab = claims.table(rows, "conventional")
    dice = {c: [r["dice"] for r in rows[c]] for c in names}
    assert tab["candidates"]["softseg"]["p"]["dice"] == pytest.approx(
        wilcoxon(dice["softseg"], dice["conventional"]).pvalue)
    assert tab["candidates"]["conventional+tta"]["std"]["dice"] == pytest.approx(
        np.std(dice["conventional+tta"], ddof=1))
    tab["rows"] = {"conventional": {"models": 1, "passes": 1},
                   "softseg": {"models": 1, "passes": 1},
                   "conventional+tta": {"models": 1, "passes": 8}}
    md = claims.markdown_issue15({"issue15": tab})
    body = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert [ln.split("`")[1] for ln in body] == list(names)
    for ln in body:
        assert ln.count(" ± ") >= 5
        if ln.startswith("| `conventional` "):
            assert "(reference)" in ln and "(p " not in ln
        else:
            assert ln.count("(p ") == 5  # the five metrics given; the others are n/a
    p = tab["candidates"]["softseg"]["p"]["dice"]
    assert f"(p {p:.3f})" in body[1]
    assert "| 1 × 8 |" in body[2]


# ------------------------------------------------------------------------------ evaluation rows
def _model_file(path, *, seed=0):
    """A tiny untrained U-Net with dropout (native spacing: no resampling)."""
    from softseg.card import (ActivationCard, ArchitectureCard, CandidateCard, ModelCard,
                              PreprocessingCard, UNetConfig)
    from softseg.modelfile import save_model
    from softseg.models import UNet2D

    torch.manual_seed(seed)
    net = UNet2D(1, 1, depth=2, width=4, dropout=0.3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    card = ModelCard(
        classes=("foreground",), thresholds=(0.5,), channels=("image",),
        preprocessing=PreprocessingCard(spacing=(None, None, None), crop=(16, 16)),
        candidate=CandidateCard(name="conventional", soft_gt=False,
                                activation=ActivationCard(name="sigmoid"), loss="dice"),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from softseg.phantom import write_dataset

    root = tmp_path_factory.mktemp("claims15")
    dataset = write_dataset(root / "dataset", n_subjects=2, shape=(40, 40, 8), seed=3)
    model = _model_file(root / "conv.safetensors")
    return dataset, model


def test_tta_with_one_pass_is_the_protocols_plain_prediction(claims, phantom):
    """Pass 0 of TTA is the untransformed slice: the uncertainty path must see the subject in
    the same geometry as softseg.protocol.predict_subject (fails on a transposed or flipped
    volume, a wrong affine or a lost channel)."""
    from softseg.data import load_subject, scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol import predict_subject

    dataset, model = phantom
    info = scan_dataset(dataset)
    data = load_subject(info.subject(info.subjects[0].name))
    loaded = load_model(model)
    plain = predict_subject(loaded, data)
    one = claims.uncertainty_prediction(loaded, data, "tta", 1)
    assert one.shape == plain.shape and one.dtype == np.float32
    np.testing.assert_allclose(one, plain, atol=1e-6)
    mc = claims.uncertainty_prediction(loaded, data, "mc_dropout", 4, seed=1)
    assert mc.shape == plain.shape and 0 <= mc.min() and mc.max() <= 1
    assert np.abs(mc - plain).max() > 1e-4  # dropout was on
    np.testing.assert_array_equal(
        mc, claims.uncertainty_prediction(loaded, data, "mc_dropout", 4, seed=1))


def test_uncertainty_units_evaluate_at_the_trained_units_threshold(claims, phantom, tmp_path):
    from softseg import compare
    from softseg.data import load_subject, scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol import ground_truth

    dataset, model = phantom
    info = scan_dataset(dataset)
    names = [s.name for s in info.subjects]
    units = {"conventional/r0": {"folder": str(model.parent), "model": model.name,
                                 "threshold": 0.3, "subjects": {n: {} for n in names},
                                 "train_seconds": 12.0},
             "softseg/r0": {"folder": str(model.parent), "model": model.name,
                            "threshold": 0.5, "subjects": {}}}
    cache = tmp_path / "unc.json"
    out = claims.uncertainty_units(units, ("conventional+tta",), dataset, cache, seed=0)
    assert set(out) == {"conventional+tta/r0"}
    rec = out["conventional+tta/r0"]
    assert rec["threshold"] == 0.3 and rec["passes"] == 8 and rec["method"] == "tta"
    assert set(rec["subjects"]) == set(names) and set(rec["extra"]) == set(names)
    loaded = load_model(model)
    for name in names:
        row = rec["subjects"][name]
        assert set(compare.METRICS) - {"accuracy"} <= set(row)  # accuracy: K classes only
        sub = info.subject(name)
        data = load_subject(sub)
        truth = ground_truth(sub, data, "truth")
        pred = claims.uncertainty_prediction(loaded, data, "tta", 8, seed=0)
        pb, gb = pred >= np.float32(0.3), truth >= 0.5
        dice = 2 * np.count_nonzero(pb & gb) / (np.count_nonzero(pb) + np.count_nonzero(gb))
        assert row["dice"] == pytest.approx(dice, abs=1e-12)
        assert row["threshold"] == pytest.approx(0.3)
        assert math.isfinite(row["uncertainty_auroc"]) and math.isfinite(row["entropy_error"])
    # the repeat table reads them like trained units
    rows = claims.repeat_rows(out, ("conventional+tta",), [0])["conventional+tta"][0]
    assert rows["dice"] == pytest.approx(np.mean([rec["subjects"][n]["dice"] for n in names]))
    assert rows["train_seconds"] == 12.0
    # cached: a second call does not predict again
    stamp = cache.stat().st_mtime_ns
    again = claims.uncertainty_units(units, ("conventional+tta",), dataset, cache, seed=0)
    assert cache.stat().st_mtime_ns == stamp
    assert json.dumps(again, sort_keys=True) == json.dumps(out, sort_keys=True)


def test_lesion_budget_shards_pairs_and_a_last_triple(claims):
    cpu = claims.LESION_BUDGETS["cpu"]
    assert cpu.candidates == ("conventional", "softseg", "softseg-wing", "softseg-paper", "soft-relu-dml")
    assert cpu.shard_lists() == (("conventional", "softseg"), ("softseg-wing", "softseg-paper", "soft-relu-dml"))
    four = replace(cpu, candidates=cpu.candidates[:4])
    assert four.shard_lists() == (("conventional", "softseg"), ("softseg-wing", "softseg-paper"))
    assert claims.LESION_BUDGETS["cpu-no-oversampling"].shard_lists() == (
        ("conventional", "softseg-wing"), ("softseg-paper", "softseg-floor"))
    # the GPU budget: the papers' training on the cpu budget's data and splits
    gpu = claims.LESION_BUDGETS["paper"]
    for f in ("n_subjects", "spacing", "seed", "test_fraction", "val_fraction", "fusion",
              "foreground_oversampling", "candidates", "study"):
        assert getattr(gpu, f) == getattr(cpu, f), f
    assert (gpu.width, gpu.epochs, gpu.patience, gpu.repeats, gpu.crop, gpu.device) == (
        claims.BUDGETS["paper"].width, 200, 50, 10, (128, 128), "auto")
    assert gpu.shard_lists() == (cpu.candidates,)


def test_reuse_renames_units_whose_recipe_moved_and_trains_nothing_twice(claims, tmp_path):
    """A real 1-epoch protocol run from before a rename (its ``softseg`` unit holds the recipe
    now called ``softseg-wing``): supersede_stale_shards moves the shard aside, reuse_units copies
    both units back (``softseg`` renamed ``softseg-wing``: files, records, the trainings'
    candidate), and the protocol resumed on them trains nothing and reports the same numbers. A
    unit whose recipe is the registry's for no candidate of the budget, or whose settings
    differ, is not copied."""
    from softseg.phantom import write_dataset
    from softseg.protocol import run_protocol

    b = replace(claims.BUDGETS["cpu"], n_subjects=3, shape=(40, 40, 8), repeats=1, epochs=1,
                patience=1, crop=(32, 32), width=4, depth=2, shards=1,
                candidates=("conventional", "softseg-wing"), test_fraction=0.34, val_fraction=0.34)
    work = tmp_path / "budget"
    work.mkdir()
    write_dataset(work / "dataset", n_subjects=3, shape=(40, 40, 8), seed=1)
    shard = work / "shard-0"
    first = run_protocol(work / "dataset", claims.protocol_config(b.candidates, b), out=shard)
    # what the previous release wrote: the same recipe under the name "softseg"
    state = json.loads((shard / "run_state.json").read_text())
    rec = claims._renamed_record(state["units"].pop("softseg-wing/r0"), "softseg", "", "")
    state["units"]["softseg/r0"] = rec
    state["config"]["candidates"] = ["conventional", "softseg"]
    (shard / "run_state.json").write_text(json.dumps(state))
    for f in ("softseg-wing-r0.safetensors", "softseg-wing-r0.history.csv"):
        (shard / "models" / f).rename(shard / "models" / f.replace("softseg-wing", "softseg"))
    (shard / "units" / "softseg-wing-r0.json").rename(shard / "units" / "softseg-r0.json")
    assert not claims.recipe_is_current(shard, rec)  # "softseg" names another recipe now

    moved = claims.supersede_stale_shards(work, b)
    assert [m.parent.name for m in moved] == ["superseded"] and not shard.exists()
    # a source with other settings (2 epochs) offers nothing
    other = replace(b, epochs=2)
    assert claims.reuse_units(work, moved, other) == [] and not shard.exists()
    assert claims.reuse_units(work, moved, b) == ["conventional/r0", "softseg-wing/r0"]
    assert sorted(p.name for p in (shard / "models").iterdir()) == [
        "conventional-r0.history.csv", "conventional-r0.safetensors",
        "softseg-wing-r0.history.csv", "softseg-wing-r0.safetensors"]
    copied = json.loads((shard / "units" / "softseg-wing-r0.json").read_text())
    assert copied["plan"]["trainings"][0]["config"]["candidate"] == "softseg-wing"
    assert claims.reuse_units(work, moved, b) == []  # a run state exists: untouched

    events = []
    stamps = {f.name: f.stat().st_mtime_ns for f in (shard / "models").iterdir()}
    again = run_protocol(work / "dataset", claims.protocol_config(b.candidates, b), out=shard,
                         resume=True, on_progress=events.append)
    assert not [e for e in events if e.stage in ("train", "evaluate", "finished")]
    assert {f.name: f.stat().st_mtime_ns for f in (shard / "models").iterdir()} == stamps
    for uid in ("conventional/r0", "softseg-wing/r0"):
        a = json.loads((moved[0] / "run_state.json").read_text())["units"]
        a = a[uid.replace("softseg-wing", "softseg")]["subjects"]
        assert json.loads((shard / "run_state.json").read_text())["units"][uid]["subjects"] == a
    assert again.report.exists() and first.report == again.report
