"""Foreground oversampling (issue 15 #1, nnU-Net's ``oversample_foreground_percent``): which slices
hold the structure, the epoch's draws (share, determinism, ranks), the option's checks in the
configuration, the protocol and the command line, and a training that records it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from softseg.cli import main
from softseg.config import DataConfig, TrainConfig
from softseg.data import DatasetInfo, Preprocessing, SliceSet, Split, Subject
from softseg.errors import InputError
from softseg.protocol import ProtocolConfig
from softseg.training import PreparedData, Trainer

N, SIZE = 40, 16
FOREGROUND = (3, 7, 21, 30)  # the slices that hold the structure (4 of 40: small lesions)


def _prepared() -> PreparedData:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(N, 1, SIZE, SIZE)).astype(np.float32)
    lab = np.zeros((1, N, SIZE, SIZE), np.float32)
    for z in FOREGROUND:
        lab[0, z, 6:9, 6:9] = 1.0
    lab[0, 11, 2, 2] = 0.4  # a faint partial-volume voxel: below 0.5, not the structure
    train = SliceSet(images=img, labels=(lab,), subject_slices=((0, N),), subjects=("train",),
                     raters_per_subject=(1,))
    val = SliceSet(images=img[:4], labels=(lab[:, :4],), subject_slices=((0, 4),), subjects=("val",),
                   raters_per_subject=(1,))
    info = DatasetInfo(root=Path("in-memory"), channels=("image",),
                       subjects=tuple(Subject(s, (), (Path("r"),), ("1",)) for s in ("train", "val")))
    return PreparedData(info=info, split=Split(train=("train",), val=("val",)), train=train, val=val,
                        preprocessing=Preprocessing(spacing=(None, 1.0, 1.0), crop=(SIZE, SIZE),
                                                    channels=("image",)))


def _trainer(tmp_path, share: float, seed: int = 3) -> Trainer:
    cfg = TrainConfig.from_dict({
        "candidate": "conventional", "seed": seed, "device": "cpu",
        "data": {"crop": [SIZE, SIZE], "foreground_oversampling": share},
        "model": {"depth": 1, "width": 2}, "augment": {"enabled": False},
        "optim": {"epochs": 1, "batch_size": 8}})
    trainer = Trainer(None, cfg, out=tmp_path / f"m{share}-{seed}.safetensors", data=_prepared())
    trainer.setup()
    return trainer


def test_foreground_slices_any_rater_any_class_at_one_half():
    one = np.zeros((2, 5, 4, 4), np.float32)  # (R, S, H, W): two raters
    one[1, 2, 0, 0] = 0.5  # only the second rater marks slice 2
    one[0, 4, 1, 1] = 0.49  # partial volume below one half
    two = np.zeros((1, 2, 4, 4), np.float32)
    two[0, 1] = 1.0
    s = SliceSet(images=np.zeros((7, 1, 4, 4), np.float32), labels=(one, two),
                 subject_slices=((0, 5), (5, 7)), subjects=("a", "b"))
    assert s.foreground_slices().tolist() == [False, False, True, False, False, False, True]
    multi = np.zeros((1, 3, 4, 4, 4), np.float32)  # (R, K, S, H, W)
    multi[0, 2, 1, 3, 3] = 0.9  # class 3 in slice 1
    k = SliceSet(images=np.zeros((4, 1, 4, 4), np.float32), labels=(multi,), subject_slices=((0, 4),),
                 subjects=("c",))
    assert k.foreground_slices().tolist() == [False, True, False, False]
    assert k.foreground_slices(level=0.95).tolist() == [False] * 4


def test_no_oversampling_is_every_slice_once(tmp_path):
    idx = _trainer(tmp_path, 0.0).indices(2)
    assert sorted(idx) == list(range(N)) and idx != list(range(N))


def test_all_foreground_draws_only_slices_with_the_structure(tmp_path):
    t = _trainer(tmp_path, 1.0)
    for epoch in (1, 2, 3):
        idx = t.indices(epoch)
        assert len(idx) == N and set(idx) <= set(FOREGROUND)
    assert len(set(t.indices(1) + t.indices(2))) == len(FOREGROUND)  # all four are drawn


def test_share_of_foreground_draws_matches_nnunet_semantics(tmp_path):
    """Each draw is a foreground slice with probability f, else any slice (itself foreground with
    probability 4/40): P(foreground) = f + (1 - f) * 0.1. 200 epochs x 40 draws: within 5 sd."""
    f = 0.33
    t = _trainer(tmp_path, f)
    draws = np.concatenate([t.indices(e) for e in range(1, 201)])
    p = f + (1 - f) * len(FOREGROUND) / N
    observed = np.isin(draws, FOREGROUND).mean()
    assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / draws.size), (observed, p)
    # without oversampling the share is the slices' own: 0.1
    plain = np.concatenate([_trainer(tmp_path, 0.0).indices(e) for e in range(1, 4)])
    assert np.isin(plain, FOREGROUND).mean() == pytest.approx(0.1)


def test_draws_depend_only_on_seed_and_epoch(tmp_path):
    """A resumed run (a new Trainer) draws what the uninterrupted one would."""
    a, b = _trainer(tmp_path, 0.33), _trainer(tmp_path, 0.33)
    assert a.indices(5) == b.indices(5)
    assert a.indices(5) != a.indices(6)
    assert _trainer(tmp_path, 0.33, seed=4).indices(5) != a.indices(5)


def test_ranks_share_the_epoch_equally(tmp_path):
    t = _trainer(tmp_path, 0.5)
    parts = []
    for rank in range(3):
        t.dist = dataclasses.replace(t.dist, rank=rank, world=3)
        parts.append(t.indices(7))
        assert t.indices(7) == parts[-1]
    assert [len(p) for p in parts] == [14, 14, 14]  # 40 padded to 42, as DistributedSampler
    assert len({tuple(p) for p in parts}) == 3
    assert all(0 <= i < N for p in parts for i in p)


def test_configuration_checks():
    assert DataConfig().foreground_oversampling == 0.0
    assert TrainConfig.from_dict({"data": {"foreground_oversampling": 1 + 1e-12}}).data.foreground_oversampling == 1.0
    with pytest.raises(InputError, match=r"data\.foreground_oversampling.*less than or equal to 1"):
        TrainConfig.from_dict({"data": {"foreground_oversampling": 1.5}})
    with pytest.raises(InputError, match=r"data\.foreground_oversampling"):
        TrainConfig.from_dict({"data": {"foreground_oversampling": "0.3"}})


def test_protocol_option_and_old_run_states():
    base = dict(candidates=("conventional", "softseg"), repeats=1, stats=False, reference=None)
    plain = ProtocolConfig(**base)
    assert "foreground_oversampling" not in plain.as_dict()  # runs recorded before resume as before
    over = ProtocolConfig(**base, foreground_oversampling=0.33)
    assert over.as_dict()["foreground_oversampling"] == 0.33
    assert over.train_config("softseg", 0, test_group=None).data.foreground_oversampling == 0.33
    assert ProtocolConfig(**base, foreground_oversampling=-1e-12).foreground_oversampling == 0.0
    with pytest.raises(InputError, match=r"--foreground-oversampling must be a share in \[0, 1\]"):
        ProtocolConfig(**base, foreground_oversampling=1.2)


def test_train_cli_records_the_share_and_refuses_a_bad_one(tmp_path, capsys):
    from softseg.modelfile import read_card
    from softseg.phantom import write_dataset

    data = write_dataset(tmp_path / "ds", n_subjects=3, shape=(24, 24, 8), seed=0)
    common = [str(data), "--candidate", "conventional", "--epochs", "1", "--crop", "16", "--depth", "1",
              "--width", "2", "--device", "cpu", "--val-fraction", "0.34"]
    assert main(["train", *common, "--out", str(tmp_path / "bad.safetensors"),
                 "--foreground-oversampling", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "foreground_oversampling" in err[0] and "less than or equal to 1" in err[0]
    assert not (tmp_path / "bad.safetensors").exists()
    assert main(["train", *common, "--out", str(tmp_path / "m.safetensors"),
                 "--foreground-oversampling", "0.33"]) == 0
    card = read_card(tmp_path / "m.safetensors")
    assert card.training.config.data.foreground_oversampling == 0.33
    assert json.loads(card.training.config.to_json())["data"]["foreground_oversampling"] == 0.33
