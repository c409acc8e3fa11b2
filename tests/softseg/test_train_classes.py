"""K-class training (issue 14 #3) and fine-tuning (issue 17 #3): the card's per-class thresholds
recomputed here with numpy, random-rater sampling per subject, a 3-class MNI run through
``softseg train`` -> ``softseg predict`` -> ``softseg evaluate``, ``--init``, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from softseg.candidates import hard_target
from softseg.cli import main
from softseg.config import TrainConfig
from softseg.errors import InputError
from softseg.io import save_volume
from softseg.modelfile import load_model, read_card
from softseg.phantom import write_dataset
from softseg.sidecar import RaterSidecar, write_rater_sidecar
from softseg.training import THRESHOLDS, Trainer, fit, history_path, prepare_data
from softseg.training.finetune import check_parent, file_sha256, load_parent

SHAPE = (24, 24, 6)  # file order (x, y, z); z is the axial slice axis (identity affine)


def _config(**over) -> TrainConfig:
    base = {"candidate": "conventional", "seed": 2, "device": "cpu",
            "data": {"crop": [16, 16], "val_fraction": 0.34, "fusion": "average"},
            "model": {"depth": 2, "width": 4}, "optim": {"epochs": 2, "batch_size": 4, "lr": 0.01}}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(base)


def _k_class_dataset(root, *, n_subjects=3, n_raters=2):
    """Two tissue classes in a bright (class 1) and a dark (class 2) disc; raters shift them."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"classes": ["grey matter", {"name": "white matter", "key": "WM"}]}))
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for s in range(n_subjects):
        rng = np.random.default_rng(s)
        sub = root / f"sub-{s + 1}"
        sub.mkdir()
        c1 = (xx - 8 - s) ** 2 + (yy - 9) ** 2 < 25
        c2 = ((xx - 16) ** 2 + (yy - 14 + s) ** 2 < 16) & ~c1
        img = (2.0 * c1 - 1.5 * c2)[..., None] + rng.normal(0, 0.3, SHAPE)
        save_volume(sub / "image.nii.gz", img.astype(np.float32), affine=np.eye(4))
        for r in range(1, n_raters + 1):
            lab = np.where(np.roll(c1, r - 1, axis=0), 1, np.where(c2, 2, 0))
            lab = np.repeat(lab[..., None], SHAPE[2], axis=2).astype(np.uint8)
            save_volume(sub / f"rater-{r}.nii.gz", lab, affine=np.eye(4))
    return root


@pytest.fixture(scope="module")
def classes_dataset(tmp_path_factory):
    return _k_class_dataset(tmp_path_factory.mktemp("kclass") / "ds")


@pytest.fixture(scope="module")
def classes_model(classes_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("kmodel") / "m.safetensors"
    done = fit(classes_dataset, _config(), out=out)
    return out, done


# ------------------------------------------------------------------ the K-class run
def test_k_class_card(classes_model, classes_dataset):
    out, done = classes_model
    card = read_card(out)
    assert card.classes == ("grey matter", "white matter") and card.class_keys == ("grey-matter", "WM")
    assert card.candidate.activation.name == "softmax" and card.candidate.loss == "dice"
    assert card.candidate.loss_params == {"smooth": 1.0, "include_background": False}
    assert card.architecture.config.out_channels == 3
    assert len(card.thresholds) == 2 and all(t in THRESHOLDS for t in card.thresholds)
    assert len(card.validation.curves) == 2 and len(card.validation.argmax_dice) == 2
    assert done.threshold is None  # K classes: the card holds one threshold per class
    with pytest.raises(InputError, match="this model has 2 classes"):
        card.threshold
    assert card.parent is None and history_path(out).is_file()


def _dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def test_per_class_thresholds_and_argmax_dice_recomputed_with_numpy(classes_model, classes_dataset):
    """The trainer's per-class search == this test's: per subject, Dice of prob_c >= t against the
    most probable class of the (average-fused) labels; mean over subjects; best t, lowest on ties."""
    out, _done = classes_model
    card = read_card(out)
    prepared = prepare_data(classes_dataset, _config())
    net = load_model(out).model.eval()
    probs, truths = [], []
    for part in (prepared.train, prepared.val):
        with torch.no_grad():
            p = torch.softmax(net(torch.from_numpy(part.images)), dim=1).numpy()
        lab = part.label_array()  # (N, 2, H, W) foreground maps
        maps = np.concatenate([1.0 - lab.sum(axis=1, keepdims=True), lab], axis=1)
        winner = np.argmax(maps, axis=1)
        for start, stop in part.subject_slices:
            probs.append(p[start:stop])
            truths.append(winner[start:stop])
    for c in (1, 2):
        curve = [np.mean([_dice(p[:, c] >= t, w == c) for p, w in zip(probs, truths)]) for t in THRESHOLDS]
        best = THRESHOLDS[int(np.argmax(curve))]  # np.argmax: the first (lowest) among ties
        assert card.thresholds[c - 1] == best
        np.testing.assert_allclose(card.validation.curves[c - 1].dice, curve, atol=1e-12)
        argmax = np.mean([_dice(np.argmax(p, axis=1) == c, w == c) for p, w in zip(probs, truths)])
        assert card.validation.argmax_dice[c - 1] == pytest.approx(argmax, abs=1e-12)


def test_random_rater_sampling_draws_one_rater_per_subject(classes_dataset, tmp_path):
    trainer = Trainer(classes_dataset, _config(data={"fusion": "random"}), out=tmp_path / "r.safetensors")
    trainer.setup()
    train = trainer.prepared.train
    assert [lab.shape[:2] for lab in train.labels] == [(2, 2)] * len(train.labels)
    draws = []
    for epoch in range(6):
        trainer.step = 0
        trainer.begin_epoch()
        draws.append(tuple(trainer.choice))
        expected = np.concatenate([np.moveaxis(lab[r], 0, 1) for lab, r in zip(train.labels, trainer.choice)])
        np.testing.assert_array_equal(trainer.epoch_labels.numpy(), expected)
    assert len(set(draws)) > 1 and all(set(d) <= {0, 1} for d in draws)
    # validation: the rater average of each subject's class maps
    np.testing.assert_allclose(trainer.val_labels.numpy(), trainer.prepared.val.label_array(), atol=0)
    val = trainer.prepared.val.labels[0]
    assert val.shape[0] == 1


def test_hard_reference_of_k_classes():
    lab = torch.tensor([[0.2, 0.5, 0.0], [0.6, 0.5, 0.0]]).reshape(1, 2, 1, 3)
    ref = hard_target(lab, 2)
    assert ref[0, :, 0].tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


# ------------------------------------------------------------------ MNI, 3 classes, end to end
@pytest.fixture(scope="module")
def mni(tmp_path_factory):
    pytest.importorskip("nilearn")
    from softseg.anatomy import write_dataset as write_mni

    root = tmp_path_factory.mktemp("mni") / "ds"
    write_mni(root, n_subjects=3, n_raters=2, spacing=(8.0, 8.0, 8.0), seed=0)
    return root


def test_mni_three_classes_train_predict_evaluate(mni, tmp_path, capsys):
    model = tmp_path / "mni.safetensors"
    code = main(["train", str(mni), "--out", str(model), "--candidate", "softseg", "--epochs", "1",
                 "--crop", "16", "--width", "4", "--depth", "2", "--batch-size", "8", "--val-fraction", "0.34",
                 "--device", "cpu", "--no-augment"])
    assert code == 0, capsys.readouterr().err
    assert "per-class thresholds in the card" in capsys.readouterr().err
    card = read_card(model)
    assert card.classes == ("grey matter", "white matter", "csf")
    assert card.candidate.activation.name == "multiclass_normalized_relu"
    assert len(card.thresholds) == 3 and all(0 < t <= 1 for t in card.thresholds)

    outdir = tmp_path / "pred"
    assert main(["predict", str(model), str(mni / "sub-01"), "-o", str(outdir), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["thresholds"] == dict(zip(card.classes, card.thresholds))
    keys = ("grey-matter", "white-matter", "csf")
    assert sorted(p.name for p in outdir.iterdir()) == sorted(
        [f"sub-01_label-{k}.{e}" for k in keys for e in ("nii.gz", "json")] + ["sub-01_labels.nii.gz", "sub-01_labels.json"])
    image = nib.load(mni / "sub-01" / "image.nii.gz")
    maps = []
    for key in keys:
        img = nib.load(outdir / f"sub-01_label-{key}.nii.gz")
        assert img.get_data_dtype() == np.float32 and img.shape == image.shape
        np.testing.assert_array_equal(img.affine, image.affine)
        maps.append(np.asarray(img.dataobj))
    fg = np.stack(maps)
    assert fg.min() >= 0 and fg.max() <= 1
    total = fg.sum(axis=0, dtype=np.float64)
    assert total.max() <= 1 + 1e-5  # background = 1 - sum >= 0: background + classes sum to 1
    labels = nib.load(outdir / "sub-01_labels.nii.gz")
    assert labels.get_data_dtype() == np.uint8
    expected = np.argmax(np.concatenate([(1 - total)[None], fg]), axis=0)  # ties: the lower index
    np.testing.assert_array_equal(np.asarray(labels.dataobj), expected)
    side = json.loads((outdir / "sub-01_label-csf.json").read_text())
    assert side["class"] == "csf" and side["threshold"] == card.thresholds[2] and side["kind"] == "probability"
    assert json.loads((outdir / "sub-01_labels.json").read_text())["kind"] == "labels"

    # the reference: the most probable class of the subject's partial-volume truth, as a label map
    truth = np.stack([np.asarray(nib.load(mni / "sub-01" / f"truth_label-{k}.nii.gz").dataobj) for k in keys])
    ref = np.argmax(np.concatenate([1 - truth.sum(axis=0, keepdims=True), truth]), axis=0).astype(np.uint8)
    nib.save(nib.Nifti1Image(ref, image.affine), tmp_path / "ref.nii.gz")
    assert main(["evaluate", str(outdir / "sub-01_labels.nii.gz"), str(tmp_path / "ref.nii.gz"),
                 "--dataset-json", str(mni / "dataset.json"), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(card.classes) <= set(json.dumps(table).replace('\\"', '"').split('"'))


def test_predict_binarize_k_classes(classes_model, classes_dataset, tmp_path, capsys):
    model, _ = classes_model
    card = read_card(model)
    soft, hard = tmp_path / "soft", tmp_path / "hard"
    sub = classes_dataset / "sub-1"
    assert main(["predict", str(model), str(sub), "-o", str(soft), "--device", "cpu"]) == 0
    assert main(["predict", str(model), str(sub), "-o", str(hard), "--device", "cpu", "--binarize"]) == 0
    for cls, key, t in zip(card.classes, ("grey-matter", "WM"), card.thresholds):
        p = np.asarray(nib.load(soft / f"sub-1_label-{key}.nii.gz").dataobj)
        m = nib.load(hard / f"sub-1_label-{key}.nii.gz")
        assert m.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(m.dataobj), (p >= t).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(nib.load(soft / "sub-1_labels.nii.gz").dataobj),
                                  np.asarray(nib.load(hard / "sub-1_labels.nii.gz").dataobj))


# ------------------------------------------------------------------ fine-tuning (--init)
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft") / "ds"
    write_dataset(root, n_subjects=3, shape=(40, 40, 8), n_raters=2, seed=4)
    return root


@pytest.fixture(scope="module")
def parent(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("parent") / "parent.safetensors"
    fit(phantom, _config(optim={"epochs": 8}, data={"crop": [32, 32]}), out=out)
    return out


def test_fine_tuning_starts_from_the_parent(parent, phantom, tmp_path):
    """First-epoch loss from the parent's weights is lower than from scratch on the same data."""
    cfg = _config(optim={"epochs": 1}, data={"crop": [32, 32]})
    tuned = fit(phantom, cfg, out=tmp_path / "tuned.safetensors", init=parent)
    scratch = fit(phantom, cfg, out=tmp_path / "scratch.safetensors")
    first = {name: read_card(tmp_path / f"{name}.safetensors").history[0] for name in ("tuned", "scratch")}
    assert first["tuned"].loss < first["scratch"].loss
    assert first["tuned"].val_loss < first["scratch"].val_loss
    card = read_card(tmp_path / "tuned.safetensors")
    assert card.parent.path == str(parent) and card.parent.sha256 == file_sha256(parent)
    assert card.parent.candidate == "conventional" and card.parent.created == read_card(parent).training.created
    assert card.preprocessing.spacing == read_card(parent).preprocessing.spacing
    assert tuned.path == str(tmp_path / "tuned.safetensors")


def test_fine_tuning_refuses_what_does_not_fit(parent, phantom):
    p = load_parent(parent)
    card = read_card(parent)
    ok = dict(config=_config(), classes=card.classes, channels=card.channels, dataset="DS")
    check_parent(p, **ok)  # the parent's own settings pass
    cases = [
        ({"classes": ("grey matter", "white matter")}, r"--init parent.safetensors: the model predicts the classes "
         r"\(target\) but DS has \(grey matter, white matter\); fine-tuning keeps the class list"),
        ({"channels": ("T1w", "T2w")}, r"the model takes the channels \(image\) but DS has \(T1w, T2w\)"),
        ({"config": _config(candidate="softseg")},
         r"trained as candidate 'conventional', this run asks for 'softseg'; fine-tune with --candidate conventional"),
        ({"config": _config(model={"depth": 3, "width": 8})},
         r"the network differs from the model's \(depth 2 -> 3; width 4 -> 8\)"),
        ({"config": _config(data={"spacing": [None, 0.5, 0.5]})},
         r"trained at spacing \(native, 1, 1\) mm \(S, H, W\), this run asks for \(native, 0.5, 0.5\)"),
    ]
    for change, message in cases:
        with pytest.raises(InputError, match=message) as exc:
            check_parent(p, **{**ok, **change})
        assert "\n" not in str(exc.value)
    # dropout has no weights: it may change
    check_parent(p, **{**ok, "config": _config(model={"dropout": 0.1})})


def test_cli_init_uses_the_parent_settings_and_refuses_another_class_list(parent, phantom, classes_dataset,
                                                                          tmp_path, capsys):
    out = tmp_path / "ft.safetensors"
    code = main(["train", str(phantom), "--init", str(parent), "--out", str(out), "--epochs", "1",
                 "--device", "cpu", "--json-progress"])
    assert code == 0, capsys.readouterr().err
    card, parent_card = read_card(out), read_card(parent)
    # the parent's configuration is the base (candidate, network, crop, fusion ...), --epochs overrides
    assert card.candidate.name == "conventional" and card.architecture.config == parent_card.architecture.config
    assert card.preprocessing == parent_card.preprocessing and card.training.config.optim.epochs == 1
    assert card.parent.sha256 == file_sha256(parent)
    capsys.readouterr()
    bad = tmp_path / "bad.safetensors"
    code = main(["train", str(classes_dataset), "--init", str(parent), "--out", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "the model predicts the classes (target) but" in err and "(grey matter, white matter)" in err
    assert not bad.exists() and not history_path(bad).exists()


def test_uncorrected_preannotation_refused_by_softseg_train(phantom, tmp_path, capsys):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantom, ds)
    rater = ds / "sub-01" / "rater-2.nii.gz"
    record = {"model": "m.safetensors", "source": "file", "rule": "nearest level", "model_voxels": 30,
              "rater_changed_voxels": 0}
    write_rater_sidecar(rater, RaterSidecar(rater="2", kind="labels", preannotated_by="m.safetensors",
                                            extra={"preannotation": record}), overwrite=True)
    out = tmp_path / "m.safetensors"
    code = main(["train", str(ds), "--out", str(out), "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{rater}: pre-annotated by m.safetensors and not corrected by the rater" in err
    assert "--allow-preannotated" in err and not out.exists() and not history_path(out).exists()
    code = main(["train", str(ds), "--out", str(out), "--epochs", "1", "--device", "cpu", "--allow-preannotated",
                 "--crop", "16", "--width", "4", "--depth", "2"])
    assert code == 0 and out.exists()
    assert math.isfinite(read_card(out).history[0].loss)


# ------------------------------------------------------------------ K-class SoftSeg learns
def _tissue_slices(n, size, *, seed, k=3, up=4):
    """n synthetic slices (n, 1, S, S) with k discs of their own intensity (0 background, 1, 2,
    -1.5) and noise, and their partial-volume fractions (k, n, S, S): each disc drawn on a grid
    ``up`` times finer and block-averaged (later discs overwrite earlier ones)."""
    rng = np.random.default_rng(seed)
    fine = size * up
    yy, xx = np.mgrid[:fine, :fine] + 0.5
    labels = np.zeros((n, fine, fine), np.int64)
    for i in range(n):
        for c in range(1, k + 1):
            cy, cx = rng.uniform(0.2 * fine, 0.8 * fine, 2)
            r = rng.uniform(0.12, 0.22) * fine
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
    frac = np.stack([(labels == c).reshape(n, size, up, size, up).mean(axis=(2, 4)) for c in range(k + 1)])
    intensity = np.array([0.0, 1.0, 2.0, -1.5])[: k + 1]
    img = np.tensordot(intensity, frac, axes=1) + rng.normal(0, 0.3, (n, size, size))
    return img[:, None].astype(np.float32), frac[1:].astype(np.float32)


def _in_memory(n_train=24, n_val=8, size=32, *, k=3):
    """Prepared in-memory data of :func:`_tissue_slices` (k = 1: the first disc only)."""
    from softseg.data import DatasetInfo, Preprocessing, SliceSet, Split, Subject
    from softseg.training import PreparedData

    img, fg = _tissue_slices(n_train + n_val, size, seed=0)
    fg = fg if k > 1 else fg[0]
    sets = [SliceSet(images=img[a:b], labels=(fg[None, ..., a:b, :, :],), subject_slices=((0, b - a),),
                     subjects=(s,), raters_per_subject=(1,))
            for s, a, b in (("train", 0, n_train), ("val", n_train, n_train + n_val))]
    classes = {"classes": ("one", "two", "three")} if k > 1 else {}
    info = DatasetInfo(root=Path("in-memory"), channels=("image",), **classes,
                       subjects=tuple(Subject(s, (), (Path("r"),), ("1",)) for s in ("train", "val")))
    return PreparedData(info=info, split=Split(train=("train",), val=("val",)), train=sets[0], val=sets[1],
                        preprocessing=Preprocessing(spacing=(None, 1.0, 1.0), crop=(size, size), channels=("image",)))


def _tiny_config(candidate, epochs):
    return TrainConfig.from_dict({
        "candidate": candidate, "seed": 2, "device": "cpu", "data": {"crop": [32, 32]},
        "model": {"depth": 2, "width": 8}, "augment": {"enabled": False},
        "optim": {"epochs": epochs, "batch_size": 8, "lr": 0.01, "patience": 1000}})


def test_trainer_starts_k_class_relu_networks_with_the_output_bias(tmp_path):
    """A new K-class normalized-ReLU network starts with output bias 0.5 (softseg.activations);
    softmax and single-class networks are exactly PyTorch's default start (unchanged runs)."""
    from softseg.models import UNet2D

    for k, candidate, bias in ((3, "softseg", 0.5), (3, "conventional", None), (1, "softseg", None)):
        trainer = Trainer(None, _tiny_config(candidate, 1), out=tmp_path / f"{candidate}{k}.safetensors",
                          data=_in_memory(n_train=8, n_val=8, k=k))
        trainer.setup()
        channels = k + 1 if k > 1 else 1
        torch.manual_seed(2)
        plain = UNet2D(1, channels, depth=2, width=8).state_dict()
        for key, value in trainer.net.state_dict().items():
            expected = torch.full((channels,), 0.5) if (bias is not None and key == "head.bias") else plain[key]
            assert torch.equal(value, expected), (candidate, k, key)


@pytest.mark.parametrize("candidate", ["softseg-paper", "hard-relu-wing", "softseg"])
def test_k_class_softseg_learns_three_tissues(candidate, tmp_path):
    """10 epochs x 3 steps on 24 synthetic 3-class slices (32 x 32): the training loss falls and
    every class's soft Dice on held-out slices beats chance, the best soft Dice of any constant
    map (c = 1 everywhere: 2 G / (N + G), G = the class's soft volume, N = the voxels). Seed 2:
    with PyTorch's default start (no output bias) every foreground class ends at soft Dice
    <= 0.003 for both candidates (measured: the test fails without the fix)."""
    from softseg import events as ev

    data = _in_memory()
    trainer = Trainer(None, _tiny_config(candidate, 10), out=tmp_path / "m.safetensors", data=data)
    losses = [e.loss for e in trainer.run() if isinstance(e, ev.EpochEvent)]
    # the published loss falls by 40 %; softseg's (each class's 5 % share of its Adaptive Wing
    # mean, issue 15) starts lower and falls less in 30 steps, so it is judged by Dice alone
    assert len(losses) == 10 and max(losses[-3:]) < (0.95 if candidate == "softseg" else 0.6) * losses[0]
    p = trainer.predict_slices(torch.from_numpy(data.val.images)).numpy()  # (N, 4, H, W), background first
    fg = data.val.labels[0][0]  # (3, N, H, W)
    g = np.concatenate([1.0 - fg.sum(axis=0, keepdims=True), fg]).transpose(1, 0, 2, 3)
    dice = 2 * (p * g).sum(axis=(0, 2, 3)) / (p.sum(axis=(0, 2, 3)) + g.sum(axis=(0, 2, 3)))
    volume = g.sum(axis=(0, 2, 3))
    chance = 2 * volume / (g[:, 0].size + volume)
    assert (dice[1:] > chance[1:] + 0.05).all(), (dice, chance)
