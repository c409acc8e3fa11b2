"""``softseg compare``: the --train protocol with the real trainer (tiny), resume, the MODEL
form on the models it trained, and bad input (exit 2, one line)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from matplotlib.image import imread

from softseg import metrics
from softseg.cli import main
from softseg.phantom import write_dataset

TINY = ["--epochs", "1", "--crop", "24", "24", "--width", "4", "--depth", "2",
        "--batch-size", "4", "--device", "cpu", "--test-fraction", "0.25",
        "--val-fraction", "0.25"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "ds", n_subjects=4, shape=(24, 24, 8),
                         n_raters=3, seed=0)


@pytest.fixture(scope="module")
def protocol_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    argv = ["compare", "--train", "conventional", "softseg", "--dataset", str(dataset),
            "--repeats", "1", "--no-stats", "--ground-truth", "truth", "--out", str(out), *TINY]
    assert main(argv) == 0
    return out, argv


def _not_blank(png):
    return imread(png)[..., :3].std() > 0.05


def test_train_protocol_writes_the_report(protocol_run):
    out, _ = protocol_run
    state = json.loads((out / "run_state.json").read_text())
    assert set(state["units"]) == {"conventional/r0", "softseg/r0"}
    # paired: both candidates were tested on the same split
    assert state["units"]["conventional/r0"]["split"] == state["units"]["softseg/r0"]["split"]
    with open(out / "summary.csv", newline="") as fh:
        rows = {r["candidate"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"conventional", "softseg"}
    for cand, unit in (("softseg", state["units"]["softseg/r0"]),):
        dice = [s["dice"] for s in unit["subjects"].values()]
        assert float(rows[cand]["dice_mean"]) == pytest.approx(np.mean(dice))
    for name in ("reliability", "histogram", "dice_threshold", "volume_threshold", "entropy"):
        assert _not_blank(out / "figures" / f"{name}.png"), name
    html = (out / "index.html").read_text()
    assert "Statistics disabled" in html and "conventional" in html
    assert (out / "models" / "softseg-r0.safetensors").exists()


def test_resume_retrains_only_the_missing_unit(protocol_run, capsys):
    out, argv = protocol_run
    state_path = out / "run_state.json"
    state = json.loads(state_path.read_text())
    kept = out / "models" / "conventional-r0.safetensors"
    kept_mtime = os.stat(kept).st_mtime_ns
    del state["units"]["softseg/r0"]  # as if the run had been interrupted during this unit
    state_path.write_text(json.dumps(state))
    (out / "models" / "softseg-r0.safetensors").unlink()

    # without --resume the folder is protected
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    state = json.loads(state_path.read_text())
    assert set(state["units"]) == {"conventional/r0", "softseg/r0"}
    assert os.stat(kept).st_mtime_ns == kept_mtime  # the finished unit was not retrained
    assert (out / "models" / "softseg-r0.safetensors").exists()
    # other settings cannot resume this run
    assert main([*argv, "--resume", "--seed", "3"]) == 2
    assert "seed" in capsys.readouterr().err


def test_model_form_on_the_trained_models(protocol_run, dataset, tmp_path, capsys):
    from softseg.data import load_subject, scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol import predict_subject

    out, _ = protocol_run
    models = [str(out / "models" / f"{c}-r0.safetensors") for c in ("conventional", "softseg")]
    report = tmp_path / "models-report"
    code = main(["compare", *models, "--dataset", str(dataset), "--out", str(report),
                 "--ground-truth", "majority", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["mean"]) == {"conventional", "softseg"}
    with open(report / "samples.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    # the models' own test subjects (recorded in the model files)
    test = json.loads((out / "run_state.json").read_text())["units"]["softseg/r0"]["split"]["test"]
    assert sorted({s["sample"] for s in samples}) == sorted(test)
    # one number checked by hand: Dice of softseg on the first test subject (plain numpy)
    info = scan_dataset(dataset)
    data = load_subject(info.subject(test[0]))
    loaded = load_model(models[1])
    pred = predict_subject(loaded, data) >= np.float32(loaded.threshold)
    votes = (data.raters >= 0.5).sum(axis=0)
    ref = votes * 2 > data.raters.shape[0]
    dice = 2 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())
    row = next(s for s in samples if s["candidate"] == "softseg" and s["sample"] == test[0])
    assert float(row["dice"]) == pytest.approx(dice)
    assert float(row["dice"]) == pytest.approx(metrics.dice(pred, ref))
    for name in ("reliability", "histogram", "dice_threshold", "volume_threshold", "entropy"):
        assert _not_blank(report / "figures" / f"{name}.png")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train", "conventional", "softseg", "--repeats", "5"], "at least|from n = 6"),
        (["--train", "conventional", "softseg", "--repeats", "6", "--reference", "gdl-boundary"],
         "not among the candidates"),
        (["--train", "softseg", "--repeats", "6"], "at least two candidates"),
        (["only-one.safetensors"], "at least two candidates"),
        (["--train", "conventional", "softseg"], "--repeats"),
        (["--train", "conventional", "softseg", "--repeats", "6", "--crop", "64", "64", "64"],
         "--crop: give one or two whole sizes"),
        (["--train", "conventional", "softseg", "--repeats", "6", "--crop", "4"],
         "--crop: give one or two whole sizes >= 8"),
    ],
)
def test_bad_input_exits_2_with_one_line(dataset, tmp_path, capsys, extra, message):
    import re

    code = main(["compare", *extra, "--dataset", str(dataset), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "index.html").exists()


def test_repeats_message_names_the_minimum(dataset, tmp_path, capsys):
    code = main(["compare", "--train", "conventional", "softseg", "--repeats", "3",
                 "--dataset", str(dataset), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--repeats 6 or more" in err and "2/2^n" in err and len(err.strip().splitlines()) == 1


def test_reference_of_another_shape_is_named(protocol_run, dataset, tmp_path, capsys):
    import shutil

    import nibabel as nib

    out, _ = protocol_run
    bad = tmp_path / "ds"
    shutil.copytree(dataset, bad)
    truth = bad / "sub-01" / "truth_soft.nii.gz"
    img = nib.load(truth)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :20], img.affine), truth)
    models = [str(out / "models" / f"{c}-r0.safetensors") for c in ("conventional", "softseg")]
    code = main(["compare", *models, "--dataset", str(bad), "--ground-truth", "truth",
                 "--subjects", "sub-01", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "shape (24, 20, 8)" in err and "(24, 24, 8)" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("tokens", "expected"),
                         [(["64"], (64, 64)), (["160,124"], (160, 124)), (["160", "124"], (160, 124))])
def test_crop_takes_train_s_form_and_the_older_one(tokens, expected):
    """``softseg compare --crop`` reads ``softseg train``'s form (128, 160,124) and the older
    ``160 124``; both commands parse it with the same function."""
    from softseg.cli import compare, train

    assert compare._crop(tokens) == expected == train.parse_crop(",".join(tokens))
    parser = __import__("argparse").ArgumentParser()
    compare.add_arguments(parser)
    args = parser.parse_args(["--dataset", "d", "--crop", *tokens])
    assert compare._crop(args.crop) == expected
