"""Rater ensembles in the protocol (``NAME:ensemble``, the label-fusion paper's Conv-STAPLE-QUBIQ):
one model per rater trained by ``softseg compare --train``, the unit's prediction the mean of the
members' predictions, its threshold the averaged map's optimum, resume after some members, and
the refusals. Numbers are recomputed here with plain numpy from the members loaded one by one.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from softseg import compare
from softseg.cli import main
from softseg.data import load_subject, scan_dataset
from softseg.errors import InputError
from softseg.io import save_volume
from softseg.modelfile import load_model, read_card
from softseg.phantom import write_dataset
from softseg.protocol import ProtocolConfig, ground_truth, predict_subject, run_protocol
from softseg.protocol.ensemble import (
    ensemble_raters,
    ensemble_thresholds,
    mean_prediction,
    rater_view,
)
from softseg.protocol.units import unit_prediction

TINY = ["--epochs", "1", "--crop", "24", "24", "--width", "4", "--depth", "2",
        "--batch-size", "4", "--device", "cpu", "--test-fraction", "0.25",
        "--val-fraction", "0.25"]
ENS = "conventional:ensemble"
STEM = "conventional_ensemble-r0"
THRESHOLDS = np.round(np.arange(1, 20) * 0.05, 2)


def _tiny_config(candidates, **over):
    base = dict(candidates=tuple(candidates), repeats=1, stats=False, reference=None,
                test_fraction=0.25, val_fraction=0.25, ground_truth="truth", epochs=1,
                batch_size=4, crop=(24, 24), width=4, depth=2, device="cpu")
    return ProtocolConfig(**{**base, **over})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "ds", n_subjects=4, shape=(24, 24, 8),
                         n_raters=3, seed=1)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """``softseg compare --train conventional conventional:ensemble --json`` (3 raters)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("run") / "report"
    argv = ["compare", "--train", "conventional", ENS, "--dataset", str(dataset), "--repeats",
            "1", "--no-stats", "--ground-truth", "truth", "--out", str(out), "--json", *TINY,
            "--epochs", "3", "--lr", "0.02"]  # trained enough for the members to differ
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, argv, json.loads(buf.getvalue())


def _dice(p, g):
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(p, g).sum() / s


def test_one_model_per_rater_each_on_its_rater(trained, dataset):
    out, _, payload = trained
    members = sorted((out / "models").glob(f"{STEM}-rater-*.safetensors"))
    assert [p.name for p in members] == [f"{STEM}-rater-{r}.safetensors" for r in ("1", "2", "3")]
    assert sorted(p.name for p in (out / "models").glob("*.safetensors")) == sorted(
        ["conventional-r0.safetensors", *(p.name for p in members)])
    state = json.loads((out / "run_state.json").read_text())
    single, unit = state["units"]["conventional/r0"], state["units"][f"{ENS}/r0"]
    assert unit["members"] == 3 and unit["member_raters"] == ["1", "2", "3"]
    assert single["members"] == 1 and single["member_raters"] == []
    assert unit["split"] == single["split"]  # paired with the other candidate
    for rater, path in zip(("1", "2", "3"), members):
        card = read_card(path)
        assert card.raters == (rater,) and card.fusion == "average"
        assert card.candidate.name == "conventional"
        assert list(card.split.test) == unit["split"]["test"]
    # the report and the --json summary show the candidate and its member count
    html = (out / "index.html").read_text()
    assert "rater ensemble of 3 models per repeat (raters 1, 2, 3)" in html
    assert ENS in json.dumps(payload)
    with open(out / "summary.csv", newline="") as fh:
        rows = {r["candidate"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"conventional", ENS}
    dice = [s["dice"] for s in unit["subjects"].values()]
    assert float(rows[ENS]["dice_mean"]) == pytest.approx(np.mean(dice))


def test_unit_prediction_is_the_mean_of_the_members(trained, dataset):
    out, _, _ = trained
    state = json.loads((out / "run_state.json").read_text())
    unit = state["units"][f"{ENS}/r0"]
    info = scan_dataset(dataset)
    members = [load_model(out / m) for m in unit["models"]]
    assert len(members) == 3

    # threshold: recomputed with numpy, mean Dice over (train/val subject, rater) pairs
    scores = np.zeros(THRESHOLDS.size)
    for name in unit["split"]["train"] + unit["split"]["val"]:
        data = load_subject(info.subject(name))
        preds = [predict_subject(load_model(out / m), data) for m in unit["models"]]
        mean = np.mean(np.stack(preds).astype(np.float64), axis=0)
        for r in data.raters:
            scores += [_dice(mean >= np.float32(t), r >= 0.5) for t in THRESHOLDS]
    best = float(THRESHOLDS[int(np.argmax(scores))])
    assert unit["threshold"] == pytest.approx(best)
    assert best > THRESHOLDS[0]  # not the lowest threshold by default (a degenerate search)

    for name in unit["split"]["test"]:
        subject = info.subject(name)
        data = load_subject(subject)
        # each member loaded on its own, predicted, averaged by hand
        by_hand = np.mean([predict_subject(load_model(out / m), data).astype(np.float64)
                           for m in unit["models"]], axis=0)
        pred = unit_prediction(members, data)
        assert pred.dtype == np.float32 and pred.shape == by_hand.shape
        np.testing.assert_allclose(pred, by_hand, atol=1e-6, rtol=0)
        first = predict_subject(members[0], data)
        assert np.abs(first - by_hand).max() > 0.01  # the members differ: a real average
        # the record's metrics are those of that mean at that threshold
        ref = ground_truth(subject, data, "truth")
        row, _ = compare.evaluate_subject(by_hand.astype(np.float32), ref,
                                          threshold=unit["threshold"], raters=data.raters,
                                          spacing=data.spacing)
        rec = unit["subjects"][name]
        assert rec["dice"] == pytest.approx(row["dice"], abs=1e-6)
        assert rec["ece"] == pytest.approx(row["ece"], abs=1e-6)
        assert rec["dice"] == pytest.approx(
            _dice(by_hand >= np.float32(unit["threshold"]), ref >= 0.5), abs=1e-6)


def test_resume_trains_only_the_missing_members(trained):
    out, argv, _ = trained
    state_path = out / "run_state.json"
    state = json.loads(state_path.read_text())
    first, *rest = sorted((out / "models").glob(f"{STEM}-rater-*.safetensors"))
    kept = {p: os.stat(p).st_mtime_ns for p in (first, out / "models" / "conventional-r0.safetensors")}
    # as if the run had stopped after the ensemble's first member
    del state["units"][f"{ENS}/r0"]
    state_path.write_text(json.dumps(state))
    (out / "units" / f"{STEM}.json").unlink()
    for p in rest:
        p.unlink()
    assert main([*argv, "--resume"]) == 0
    for p, mtime in kept.items():
        assert os.stat(p).st_mtime_ns == mtime, p  # not retrained
    assert all(p.exists() for p in rest)
    state = json.loads(state_path.read_text())
    assert state["units"][f"{ENS}/r0"]["members"] == 3


def test_single_rater_dataset_is_refused_in_one_line(tmp_path, capsys):
    ds = write_dataset(tmp_path / "one", n_subjects=4, shape=(24, 24, 8), n_raters=1, seed=0)
    out = tmp_path / "report"
    argv = ["compare", "--train", "conventional", ENS, "--dataset", str(ds), "--repeats", "1",
            "--no-stats", "--out", str(out), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "conventional:ensemble needs >= 2 raters" in err and "the dataset has 1" in err
    assert not out.exists()  # nothing written


def test_subject_without_one_rater_is_refused_before_training(dataset, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    for f in (ds / "sub-02").glob("rater-3*"):
        f.unlink()
    with pytest.raises(InputError, match=r"subject 'sub-02' has no rater 3 \(dataset raters: "
                                         r"1, 2, 3\)"):
        run_protocol(ds, _tiny_config(["conventional", ENS]), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_fusion_names_the_ensemble(dataset, tmp_path):
    with pytest.raises(InputError, match=r"unknown fusion 'ensembl'.*or ensemble"):
        run_protocol(dataset, _tiny_config(["conventional", "conventional:ensembl"]),
                     out=tmp_path / "out")


def test_rater_view_keeps_one_rater_and_every_subject(dataset):
    info = scan_dataset(dataset)
    view = rater_view(info, "2")
    assert view.names == info.names and view.rater_ids == ("2",)
    for s, v in zip(info.subjects, view.subjects):
        assert v.raters == (s.raters[s.rater_ids.index("2")],)
        data = load_subject(v)
        np.testing.assert_array_equal(data.raters[0], load_subject(s).raters[1])
    assert ensemble_raters(info, ENS) == ("1", "2", "3")


def test_mean_prediction_of_class_maps_and_bad_shapes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 2, 5, 6))  # 3 members, K+1 = 4 class maps
    maps = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean = mean_prediction([m.astype(np.float32) for m in maps])
    assert mean.shape == (4, 2, 5, 6) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, maps.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(InputError, match=r"different shapes: \(2, 3\), \(3, 3\)"):
        mean_prediction([np.zeros((3, 3)), np.zeros((2, 3))])


def test_k_class_thresholds_by_hand():
    rng = np.random.default_rng(4)
    k, shape = 2, (3, 6, 7)
    preds, stacks = [], []
    for _ in range(2):  # two subjects, three raters each (integer labels as class maps)
        logits = rng.normal(size=(k + 1, *shape))
        preds.append((np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32))
        labels = rng.integers(0, k + 1, size=(3, *shape))
        stacks.append(np.stack([np.stack([lab == c for c in range(k + 1)]) for lab in labels])
                      .astype(np.float32))
    got = ensemble_thresholds(preds, stacks, n_classes=k)
    for c in (1, 2):
        scores = np.zeros(THRESHOLDS.size)
        for pred, stack in zip(preds, stacks):
            for r in stack:
                lab = np.argmax(r, axis=0)
                scores += [_dice(pred[c] >= np.float32(t), lab == c) for t in THRESHOLDS]
        assert got[c - 1] == pytest.approx(float(THRESHOLDS[int(np.argmax(scores))]))


def _k_class_dataset(root, n_subjects=4, shape=(20, 20, 4)):
    """Two classes (a bright and a dark square) as integer label maps of two raters."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"classes": ["bright", "dark"]}))
    for s in range(n_subjects):
        rng = np.random.default_rng(10 + s)
        lab = np.zeros(shape, np.uint8)
        lab[3 + s:9 + s, 4:10] = 1
        lab[11:16, 10 + s % 3:16 + s % 3] = 2
        img = np.where(lab == 1, 2.0, np.where(lab == 2, -1.5, 0.0)) + rng.normal(0, 0.3, shape)
        sub = root / f"sub-{s + 1}"
        sub.mkdir()
        save_volume(sub / "image.nii.gz", img.astype(np.float32), affine=np.eye(4))
        for r in (1, 2):
            save_volume(sub / f"rater-{r}.nii.gz", np.roll(lab, r - 1, axis=1),
                        affine=np.eye(4))
    return root


def test_k_class_ensemble_averages_the_class_maps(tmp_path):
    ds = _k_class_dataset(tmp_path / "k")
    out = tmp_path / "out"
    config = _tiny_config(["conventional", ENS], ground_truth="staple", crop=(16, 16))
    result = run_protocol(ds, config, out=out)
    unit = result.state["units"][f"{ENS}/r0"]
    assert unit["members"] == 2 and set(unit["classes"]) == {"bright", "dark"}
    assert len(unit["thresholds"]) == 2
    info = scan_dataset(ds)
    members = [load_model(out / m) for m in unit["models"]]
    assert [m.card.raters for m in members] == [("1",), ("2",)]
    data = load_subject(info.subject(unit["split"]["test"][0]))
    by_hand = np.mean([predict_subject(m, data).astype(np.float64) for m in members], axis=0)
    pred = unit_prediction(members, data)
    assert pred.shape[0] == 3  # background + 2 classes
    np.testing.assert_allclose(pred, by_hand, atol=1e-6, rtol=0)
    np.testing.assert_allclose(pred.sum(axis=0), 1.0, atol=1e-5)


def test_candidates_and_compare_help_describe_the_ensemble(capsys):
    assert main(["candidates"]) == 0
    text = capsys.readouterr().out
    assert "NAME:ensemble" in text and "Conv-STAPLE-QUBIQ" in text
    assert main(["candidates", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in payload["protocol_fusions"]] == ["ensemble"]
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "NAME:ensemble is a rater ensemble" in " ".join(capsys.readouterr().out.split())
