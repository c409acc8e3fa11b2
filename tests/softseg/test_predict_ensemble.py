"""``softseg predict -m A -m B ...`` (issue 15 #3, the rater ensemble outside the protocol): the mean
of the members' probability maps plus entropy and between-member variance files, checked against
the members predicted one by one and summarised with numpy; the threshold rule; one-line
refusals; the one ensemble mean shared with the protocol."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from softseg.card import ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, UNetConfig
from softseg.cli import main
from softseg.errors import InputError
from softseg.io import load_volume
from softseg.modelfile import load_model, save_model
from softseg.models import UNet2D
from softseg.predict import predict_volume

from test_cli_predict_uncertainty import _binary_entropy, _image, _run
from test_cli_predict_uncertainty import _read as _read_with_header


def _model_file(path, *, seed=0, classes=("foreground",), thresholds=None, channels=("image",),
                candidate="conventional", spacing=(None, None, None)):
    """A tiny untrained U-Net (depth 2, width 4) with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    k = len(classes)
    net = UNet2D(len(channels), 1 if k == 1 else k + 1, depth=2, width=4, dropout=0.0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 1.5)
    card = ModelCard(
        classes=tuple(classes), thresholds=tuple(thresholds or (0.5,) * k), channels=tuple(channels),
        preprocessing=PreprocessingCard(spacing=spacing, crop=(16, 16)),
        candidate=CandidateCard(name=candidate, soft_gt=False, loss="dice",
                                activation=ActivationCard(name="sigmoid" if k == 1 else "softmax")),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)


def _read(path):
    return _read_with_header(path)[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    return {
        "a": _model_file(root / "a.safetensors", seed=0, thresholds=(0.2,)),
        "b": _model_file(root / "b.safetensors", seed=1, thresholds=(0.4,)),
        # another training spacing: still voxel-aligned (every member predicts in native geometry)
        "c": _model_file(root / "c.safetensors", seed=2, thresholds=(0.9,), spacing=(None, 1.2, 1.2)),
        "k2a": _model_file(root / "k2a.safetensors", seed=3, classes=("grey matter", "csf"),
                           thresholds=(0.3, 0.6)),
        "k2b": _model_file(root / "k2b.safetensors", seed=4, classes=("grey matter", "csf"),
                           thresholds=(0.5, 0.2)),
        "k2other": _model_file(root / "k2other.safetensors", seed=5, classes=("grey matter", "wm")),
        "two_channels": _model_file(root / "t1t2.safetensors", seed=6, channels=("t1", "t2")),
        "image": _image(root / "img.nii.gz"),
    }


def test_ensemble_writes_mean_entropy_variance_of_the_members_by_numpy(files, tmp_path, capsys):
    out = tmp_path / "ens"
    members = [files["a"], files["b"], files["c"]]
    proc = _run(capsys, "predict", "-m", members[0], "-m", members[1], "--model", members[2],
                files["image"], "-o", out, "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"img_{s}.{e}" for s in ("pred", "entropy", "variance") for e in ("nii.gz", "json"))
    summary = json.loads(proc.stdout)
    assert summary["models"] == [str(m) for m in members] and summary["model"] is None
    assert summary["threshold"] == pytest.approx(0.5)  # mean of 0.2, 0.4, 0.9
    mean, ent, var = (_read(out / f"img_{s}.nii.gz") for s in ("pred", "entropy", "variance"))
    src = nib.load(files["image"])
    assert mean.shape == ent.shape == var.shape == src.shape
    np.testing.assert_array_equal(nib.load(out / "img_entropy.nii.gz").affine, src.affine)
    # the members predicted one by one (the single-model path), summarised by numpy
    vol = load_volume(files["image"])
    each = np.stack([predict_volume(load_model(m), vol, device="cpu") for m in members]).astype(np.float64)
    assert each.std(axis=0).max() > 1e-3  # the members really differ
    np.testing.assert_allclose(mean, each.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(var, each.var(axis=0), atol=1e-6)  # population variance
    np.testing.assert_allclose(ent, _binary_entropy(each.mean(axis=0)), atol=2e-6)
    assert var.max() <= 0.25 and np.all(var <= mean * (1 - mean) + 1e-6)  # Bhatia-Davis bound
    side = json.loads((out / "img_pred.json").read_text())
    assert side["models"] == [str(m.resolve()) for m in members]
    assert side["model"] == " + ".join(side["models"])
    assert side["threshold"] == pytest.approx(0.5)
    assert side["candidate"] == "conventional:ensemble" and side["candidate_title"] == "ensemble of 3 conventional models"
    assert side["uncertainty"]["method"] == "ensemble" and side["uncertainty"]["passes"] == 3
    assert side["uncertainty"]["threshold_rule"] == "mean of the models' optimal thresholds"
    ent_side = json.loads((out / "img_entropy.json").read_text())
    assert (ent_side["kind"], ent_side["unit"], ent_side["method"]) == ("entropy", "nats", "ensemble")
    var_side = json.loads((out / "img_variance.json").read_text())
    assert "models'" in var_side["definition"]

    # --binarize at the mean threshold, or at --threshold when given
    proc = _run(capsys, "predict", "-m", members[0], "-m", members[1], "-m", members[2], files["image"],
                "-o", tmp_path / "bin", "--device", "cpu", "--binarize")
    assert proc.returncode == 0, proc.stderr
    mask = np.asarray(nib.load(tmp_path / "bin" / "img_pred.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, (mean >= 0.5).astype(np.uint8))
    proc = _run(capsys, "predict", "-m", members[0], "-m", members[1], files["image"],
                "-o", tmp_path / "thr", "--device", "cpu", "--binarize", "--threshold", "0.45")
    assert proc.returncode == 0, proc.stderr
    side = json.loads((tmp_path / "thr" / "img_pred.json").read_text())
    assert side["threshold"] == 0.45 and side["uncertainty"]["threshold_rule"] == "--threshold"
    two = each[:2].mean(axis=0)
    mask = np.asarray(nib.load(tmp_path / "thr" / "img_pred.nii.gz").dataobj)
    sure = np.abs(two - 0.45) > 1e-5  # away from float32 rounding at the threshold
    np.testing.assert_array_equal(mask[sure], (two[sure] >= 0.45).astype(np.uint8))


def test_one_model_with_m_is_the_plain_prediction(files, tmp_path, capsys):
    for args, out in ((["-m", files["a"]], tmp_path / "m"), ([files["a"]], tmp_path / "plain")):
        proc = _run(capsys, "predict", *args, files["image"], "-o", out, "--device", "cpu")
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["img_pred.json", "img_pred.nii.gz"]
    np.testing.assert_array_equal(_read(tmp_path / "m" / "img_pred.nii.gz"),
                                  _read(tmp_path / "plain" / "img_pred.nii.gz"))
    side = json.loads((tmp_path / "m" / "img_pred.json").read_text())
    assert side["model"] == str(files["a"].resolve()) and "models" not in side
    assert side["threshold"] == pytest.approx(0.2)


def test_k_class_ensemble_per_class_variance_and_entropy_by_hand(files, tmp_path, capsys):
    out = tmp_path / "k2"
    proc = _run(capsys, "predict", "-m", files["k2a"], "-m", files["k2b"], files["image"], "-o", out,
                "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz"))
    assert names == sorted(["img_label-grey-matter.nii.gz", "img_label-csf.nii.gz", "img_labels.nii.gz",
                            "img_entropy.nii.gz", "img_label-grey-matter_variance.nii.gz",
                            "img_label-csf_variance.nii.gz"])
    summary = json.loads(proc.stdout)
    assert summary["thresholds"] == {"grey matter": pytest.approx(0.4), "csf": pytest.approx(0.4)}
    vol = load_volume(files["image"])
    each = np.stack([predict_volume(load_model(files[m]), vol, device="cpu") for m in ("k2a", "k2b")])
    each = each.astype(np.float64)  # (2, K+1, X, Y, Z)
    mean = each.mean(axis=0)
    for k, key in ((1, "grey-matter"), (2, "csf")):
        np.testing.assert_allclose(_read(out / f"img_label-{key}.nii.gz"), mean[k], atol=1e-6)
        np.testing.assert_allclose(_read(out / f"img_label-{key}_variance.nii.gz"), each[:, k].var(axis=0),
                                   atol=1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        by_hand = -np.where(mean > 0, mean * np.log(mean), 0.0).sum(axis=0)
    np.testing.assert_allclose(_read(out / "img_entropy.nii.gz"), by_hand, atol=1e-5)
    labels = np.asarray(nib.load(out / "img_labels.nii.gz").dataobj)
    clear = np.sort(mean, axis=0)[-1] - np.sort(mean, axis=0)[-2] > 1e-5
    np.testing.assert_array_equal(labels[clear], mean.argmax(axis=0)[clear])


@pytest.mark.parametrize("args, words", [
    (["-m", "{a}", "-m", "{k2a}"], ["a.safetensors and ", "k2a.safetensors", "classes differ",
                                     "foreground vs grey matter, csf"]),
    (["-m", "{k2a}", "-m", "{k2other}"], ["k2a.safetensors and ", "k2other.safetensors", "classes differ"]),
    (["-m", "{a}", "-m", "{two_channels}"], ["t1t2.safetensors", "input channels differ", "image vs t1, t2"]),
    (["-m", "{a}", "-m", "{b}", "--tta", "4"], ["--tta and an ensemble of 2 models exclude each other"]),
    (["-m", "{a}", "-m", "{b}", "--mc-dropout", "4"], ["--mc-dropout and an ensemble"]),
    (["-m", "{a}", "{b}"], ["b.safetensors: a model file among the images", "-m "]),
    (["{a}"], ["give a model file and the image(s)"]),
])
def test_refusals_are_one_line_exit_2_nothing_written(files, tmp_path, capsys, args, words):
    out = tmp_path / "bad"
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    if argv != [str(files["a"])]:
        argv.append(str(files["image"]))
    proc = _run(capsys, "predict", *argv, "-o", out, "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists()


# --------------------------------------------------------------------------- the engine functions
def test_summarize_members_is_numpy_mean_variance_entropy_in_blocks(monkeypatch):
    from softseg import uncertainty
    from softseg.protocol import ensemble

    assert ensemble.mean_prediction is uncertainty.mean_prediction  # one ensemble mean
    rng = np.random.default_rng(0)
    single = rng.random((4, 5, 6, 7)).astype(np.float32)  # 4 members of a (5, 6, 7) map
    logits = rng.normal(size=(3, 4, 5, 6, 7))  # 3 members, K + 1 = 4 class maps
    classes = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    for chunk in (1 << 21, 37):  # one block; many blocks with a ragged last one
        monkeypatch.setattr(uncertainty, "_MEMBER_CHUNK", chunk)
        maps = uncertainty.summarize_members(list(single))
        s64 = single.astype(np.float64)
        np.testing.assert_allclose(maps.mean, s64.mean(0), atol=1e-7)
        np.testing.assert_allclose(maps.variance, s64.var(0), atol=1e-7)
        np.testing.assert_allclose(maps.entropy, _binary_entropy(s64.mean(0)), atol=1e-6)
        maps = uncertainty.summarize_members(list(classes))
        c64 = classes.astype(np.float64)
        m = c64.mean(0)
        assert maps.mean.shape == (4, 5, 6, 7) and maps.entropy.shape == (5, 6, 7)
        np.testing.assert_allclose(maps.mean, m, atol=1e-7)
        np.testing.assert_allclose(maps.variance, c64.var(0), atol=1e-7)
        np.testing.assert_allclose(maps.entropy, -(m * np.log(m)).sum(0), atol=1e-6)
        np.testing.assert_allclose(maps.mean.sum(0), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="at least one member"):
        uncertainty.summarize_members([])


def test_engine_refusals_and_threshold_rule(files):
    from softseg.modelfile import read_card
    from softseg.uncertainty import check_members, ensemble_threshold, predict_ensemble

    cards = [read_card(files[m]) for m in ("a", "b", "c")]
    assert ensemble_threshold(cards) == pytest.approx((0.5,))
    assert ensemble_threshold([read_card(files["k2a"]), read_card(files["k2b"])]) == pytest.approx((0.4, 0.4))
    check_members(cards)  # a different training spacing is fine
    with pytest.raises(InputError, match="at least 2 model files"):
        check_members(cards[:1])
    with pytest.raises(InputError, match=r"^member 1 and member 2 cannot be averaged: their classes"):
        check_members([cards[0], read_card(files["k2a"])])
    with pytest.raises(InputError, match="at least 2 model files"):
        predict_ensemble([files["a"]], load_volume(files["image"]))


def test_ensemble_card_names_and_thresholds(files, tmp_path):
    from softseg.modelfile import read_card
    from softseg.uncertainty import ensemble_card

    same = ensemble_card([read_card(files[m]) for m in ("a", "b", "c")])
    assert (same.candidate.name, same.candidate.title) == ("conventional:ensemble",
                                                          "ensemble of 3 conventional models")
    assert same.thresholds == pytest.approx((0.5,)) and same.classes == ("foreground",)
    other = _model_file(tmp_path / "soft.safetensors", candidate="softseg", thresholds=(0.6,))
    mixed = ensemble_card([read_card(files["a"]), read_card(other)])
    assert (mixed.candidate.name, mixed.candidate.title) == ("ensemble",
                                                            "ensemble of 2 models (conventional, softseg)")
    assert mixed.thresholds == pytest.approx((0.4,))
