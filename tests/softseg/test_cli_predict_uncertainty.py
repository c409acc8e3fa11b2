"""``softseg predict --mc-dropout N`` / ``--tta N`` (issue 15 #3): mean + entropy + variance files,
checked against the engine hooks run directly and against passes recomputed by hand."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch

from softseg.card import ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, UNetConfig
from softseg.cli import main
from softseg.io import load_volume, save_volume
from softseg.modelfile import load_model, save_model
from softseg.models import UNet2D
from softseg.predict import predict_volume
from softseg.uncertainty import predict_with_uncertainty, tta_forward, tta_params


def _model_file(path, *, dropout=0.3, k=1, seed=0):
    """A tiny untrained U-Net with non-trivial batch-norm statistics; native spacing (no resampling)."""
    torch.manual_seed(seed)
    out = 1 if k == 1 else k + 1
    net = UNet2D(1, out, depth=2, width=4, dropout=dropout)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    classes = ("foreground",) if k == 1 else tuple(f"class {c}" for c in range(1, k + 1))
    card = ModelCard(
        classes=classes, thresholds=(0.5,) * k, channels=("image",),
        preprocessing=PreprocessingCard(spacing=(None, None, None), crop=(16, 16)),
        candidate=CandidateCard(name="conventional", soft_gt=False,
                                activation=ActivationCard(name="sigmoid" if k == 1 else "softmax"), loss="dice"),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)


def _image(path, shape=(20, 16, 6), seed=1):
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 20, shape).astype(np.float32)
    arr[5:12, 4:10] += 60
    affine = np.diag([0.9, 0.8, 2.0, 1.0])
    save_volume(path, arr, affine=affine)
    return path


def _run(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, cap.out, cap.err)


def _read(path):
    img = nib.load(path)
    assert img.get_data_dtype() == np.float32
    return np.asarray(img.dataobj), img


def _binary_entropy(p):
    p = p.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
    return h


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("unc")
    return {
        "model": _model_file(root / "drop.safetensors"),
        "plain": _model_file(root / "plain.safetensors", dropout=0.0),
        "k2": _model_file(root / "k2.safetensors", k=2),
        "image": _image(root / "img.nii.gz"),
    }


def test_mc_dropout_writes_mean_entropy_variance_as_the_engine_and_by_hand(files, tmp_path, capsys):
    n = 6
    out = tmp_path / "mc"
    proc = _run(capsys, "predict", files["model"], files["image"], "-o", out, "--mc-dropout", n,
                "--device", "cpu", "--batch-size", 64, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["outputs"][0]
    assert summary["entropy"] == str(out / "img_entropy.nii.gz")
    assert summary["variance"] == str(out / "img_variance.nii.gz")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"img_{s}.{e}" for s in ("pred", "entropy", "variance") for e in ("nii.gz", "json"))
    src = nib.load(files["image"])
    mean, img = _read(out / "img_pred.nii.gz")
    ent, ent_img = _read(out / "img_entropy.nii.gz")
    var, _ = _read(out / "img_variance.nii.gz")
    for a, i in ((mean, img), (ent, ent_img)):
        assert a.shape == src.shape
        np.testing.assert_array_equal(i.affine, src.affine)
    side = json.loads((out / "img_entropy.json").read_text())
    assert (side["kind"], side["unit"], side["method"], side["passes"]) == ("entropy", "nats", "mc_dropout", n)
    pred_side = json.loads((out / "img_pred.json").read_text())
    assert pred_side["uncertainty"]["passes"] == n and pred_side["uncertainty"]["entropy"].endswith("img_entropy.nii.gz")

    # the engine run directly through Python gives the same three maps
    loaded = load_model(files["model"])
    vol = load_volume(files["image"])
    direct = predict_with_uncertainty(loaded, vol, method="mc_dropout", n=n, device="cpu", batch_size=64)
    np.testing.assert_array_equal(mean, direct.mean)
    np.testing.assert_array_equal(ent, direct.entropy)
    np.testing.assert_array_equal(var, direct.variance)
    # entropy: the binary entropy (nats) of the mean, by hand (no resampling: native spacing)
    np.testing.assert_allclose(ent, _binary_entropy(mean), atol=2e-6)
    assert ent.max() <= np.log(2) + 1e-6
    # mean and variance: the n dropout passes recomputed by hand, one after the other from torch
    # seed 0 (the CLI runs the stack in chunks of one batch: pass i = the i-th network call)
    net, act = loaded.model, loaded.activation

    def by_hand(x):
        net.eval()
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout2d | torch.nn.Dropout):
                m.train()
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(0)
            p = np.stack([act(net(torch.from_numpy(x))).numpy() for _ in range(n)]).astype(np.float64)
        net.eval()
        return np.stack([p.mean(0)[:, 0], p.var(0)[:, 0]], axis=1).astype(np.float32)

    hand = predict_volume(loaded, vol, device="cpu", batch_size=64, maps=2, forward=by_hand)
    np.testing.assert_allclose(mean, hand[0], atol=1e-6)
    np.testing.assert_allclose(var, hand[1], atol=1e-6)
    assert var.max() > 1e-4  # dropout made the passes differ


def test_tta_mean_is_the_engine_hook_and_entropy_by_hand(files, tmp_path, capsys):
    n = 4
    out = tmp_path / "tta"
    proc = _run(capsys, "predict", files["plain"], files["image"], "-o", out, "--tta", n,
                "--device", "cpu", "--batch-size", 64)
    assert proc.returncode == 0, proc.stderr
    assert "img_entropy.nii.gz" in proc.stderr and "img_variance.nii.gz" in proc.stderr
    mean, _ = _read(out / "img_pred.nii.gz")
    ent, _ = _read(out / "img_entropy.nii.gz")
    var, _ = _read(out / "img_variance.nii.gz")
    loaded = load_model(files["plain"])
    direct = predict_volume(loaded, load_volume(files["image"]), device="cpu", batch_size=64, maps=3,
                            forward=tta_forward(loaded.model, loaded.activation, n=n, seed=0, max_slices=64,
                                                params=tta_params(loaded.card)))
    np.testing.assert_allclose(mean, direct[0], atol=1e-6)
    np.testing.assert_allclose(var, direct[1], atol=1e-6)
    np.testing.assert_allclose(ent, _binary_entropy(mean), atol=2e-6)
    assert var.max() > 0 and var.max() <= 0.25 + 1e-6


def test_k_class_mc_dropout_writes_per_class_variance(files, tmp_path, capsys):
    out = tmp_path / "k2"
    proc = _run(capsys, "predict", files["k2"], files["image"], "-o", out, "--mc-dropout", 3,
                "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz"))
    assert names == sorted(["img_label-class-1.nii.gz", "img_label-class-2.nii.gz", "img_labels.nii.gz",
                            "img_entropy.nii.gz", "img_label-class-1_variance.nii.gz",
                            "img_label-class-2_variance.nii.gz"])
    p1, _ = _read(out / "img_label-class-1.nii.gz")
    p2, _ = _read(out / "img_label-class-2.nii.gz")
    ent, _ = _read(out / "img_entropy.nii.gz")
    assert np.all(p1 + p2 <= 1 + 1e-5)
    p = np.stack([1 - p1 - p2, p1, p2]).astype(np.float64).clip(0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        by_hand = -np.where(p > 0, p * np.log(p), 0.0).sum(0)
    np.testing.assert_allclose(ent, by_hand, atol=1e-5)
    assert ent.max() <= np.log(3) + 1e-6


@pytest.mark.parametrize("args, text", [
    (["--tta", "0"], "--tta needs the number of passes"),
    (["--tta", "-3"], "--tta needs the number of passes"),
    (["--mc-dropout", "0"], "--mc-dropout needs the number of passes"),
    (["--mc-dropout", "4", "--tta", "4"], "exclude each other"),
])
def test_bad_counts_are_one_line_exit_2_nothing_written(files, tmp_path, capsys, args, text):
    out = tmp_path / "bad"
    proc = _run(capsys, "predict", files["model"], files["image"], "-o", out, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr
    assert not out.exists()


def test_mc_dropout_on_a_model_without_dropout_is_refused(files, tmp_path, capsys):
    out = tmp_path / "nodrop"
    proc = _run(capsys, "predict", files["plain"], files["image"], "-o", out, "--mc-dropout", 5)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no dropout layers" in lines[0] and "test-time augmentation" in lines[0]
    assert not out.exists()
