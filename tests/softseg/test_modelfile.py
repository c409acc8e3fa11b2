"""softseg.modelfile: safetensors weights + the typed model card; read once, never unpickled."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import stat
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from softseg.card import FORMAT_VERSION, ModelCard
from softseg.errors import InputError
from softseg.modelfile import load_model, read_card, save_model
from softseg.models import UNet2D


def card_for(net: UNet2D, **over) -> ModelCard:
    """A complete card for ``net`` (what a training run writes, minus the provenance)."""
    doc = {
        "thresholds": [0.35],
        "channels": [f"c{i}" for i in range(net.in_channels)] if net.in_channels > 1 else ["image"],
        "preprocessing": {"spacing": [None, 1.0, 1.0], "crop": [32, 32]},
        "candidate": {"name": "softseg", "title": "Soft-ReLU-Wing", "soft_gt": True,
                      "activation": {"name": "normalized_relu"}, "loss": "adaptive_wing"},
        "architecture": {"name": "UNet2D", "config": net.config},
        "validation": {"best_epoch": 1, "val_loss": 0.5, "val_dice": 0.7, "val_soft_dice": 0.6},
    }
    doc.update(over)
    return ModelCard.model_validate_json(json.dumps(doc))


@pytest.fixture()
def model_file(tmp_path):
    torch.manual_seed(0)
    net = UNet2D(1, 1, depth=2, width=4)
    path = save_model(tmp_path / "m.safetensors", net, card_for(net))
    return path, net


def _rewrite_card(path, out, mutate):
    """Copy a model file with its card document changed by ``mutate(doc)`` (tensors kept)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        doc = json.loads(fh.metadata()["softseg"])
    mutate(doc)
    save_file(tensors, str(out), metadata={"format": "pt", "softseg": json.dumps(doc)})
    return out


def test_round_trip(model_file):
    path, net = model_file
    loaded = load_model(path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0)
    assert not loaded.model.training
    assert loaded.threshold == 0.35 and loaded.card.thresholds == (0.35,)
    assert loaded.candidate_name == "softseg" and loaded.channels == ("image",)
    assert loaded.card.format_version == FORMAT_VERSION == 2
    assert loaded.card.architecture.config.model_dump() == net.config
    assert loaded.preprocessing.crop == (32, 32) and loaded.preprocessing.channels == ("image",)
    assert loaded.card == read_card(path)
    with pytest.raises(Exception):  # frozen
        loaded.card.thresholds = (0.5,)


def test_card_is_read_once_per_load(model_file, monkeypatch):
    """One safetensors open per read (metadata and weights from the same open), no other open."""
    path, _ = model_file
    import safetensors

    opened, python_opens = [], []
    original, real_open = safetensors.safe_open, builtins.open

    def counting_safe_open(name, *a, **k):
        opened.append(os.fspath(name))
        return original(name, *a, **k)

    def counting_open(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == os.fspath(path):
            python_opens.append(file)
        return real_open(file, *a, **k)

    monkeypatch.setattr(safetensors, "safe_open", counting_safe_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    load_model(path)
    assert opened == [str(path)] and python_opens == []
    opened.clear()
    read_card(path)
    assert opened == [str(path)] and python_opens == []


def test_read_card_does_not_import_torch(model_file):
    path, _ = model_file
    code = (
        "import sys, json\nfrom softseg.modelfile import read_card\n"
        f"c = read_card({str(path)!r})\n"
        "print(json.dumps([c.threshold, 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [0.35, False]


def test_existing_file_needs_overwrite(model_file):
    path, net = model_file
    with pytest.raises(InputError, match="already exists"):
        save_model(path, net, card_for(net))
    with pytest.raises(InputError, match="must end in .safetensors"):
        save_model(path.with_suffix(".pt"), net, card_for(net))
    with pytest.raises(ValueError, match="the card describes UNet2D"):
        save_model(path, UNet2D(1, 1, depth=2, width=6), card_for(net), overwrite=True)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_model_files_get_the_umask_mode(tmp_path, umask):
    """0644 under umask 022: safetensors' save_file would recreate the temporary file 0600."""
    net = UNet2D(1, 1, depth=1, width=2)
    old = os.umask(umask)
    try:
        path = save_model(tmp_path / "m.safetensors", net, card_for(net))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left


class _Boom:
    """Unpickling this creates a marker file: proof that a loader executed the pickle."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "unpickled"
    boom = _Boom()
    boom.marker = str(marker)
    raw = tmp_path / "evil.safetensors"
    raw.write_bytes(pickle.dumps(boom, protocol=2))
    with pytest.raises(InputError, match="looks like a PyTorch pickle; softseg only loads .safetensors"):
        load_model(raw)
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "boom": boom}, pt)
    for fn in (load_model, read_card):
        with pytest.raises(InputError, match="looks like a PyTorch pickle") as exc:
            fn(pt)
        assert "\n" not in str(exc.value)
    assert not marker.exists()


def test_foreign_safetensors_and_bad_versions(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(InputError, match="without softseg metadata"):
        load_model(foreign)
    # a training checkpoint (softseg.training.checkpoint) is named as one, with what to do
    from softseg.training.checkpoint import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "m.checkpoint.safetensors", {"w": torch.zeros(3)}, {"epoch": 1})
    for fn in (read_card, load_model):
        with pytest.raises(InputError, match=r"a training checkpoint, not a model file; finish the "
                                             r"training with softseg train --resume"):
            fn(ckpt)
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(3)}, str(future), metadata={"softseg": json.dumps({"format_version": 99})})
    with pytest.raises(InputError, match="format version 99 is not supported"):
        read_card(future)
    partial = tmp_path / "partial.safetensors"
    save_file({"w": torch.zeros(3)}, str(partial), metadata={"softseg": json.dumps({"format_version": 1})})
    with pytest.raises(InputError, match="lacks candidate"):
        read_card(partial)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 10**12) + b"xx")
    with pytest.raises(InputError, match="not a safetensors model file"):
        read_card(junk)
    with pytest.raises(InputError, match="no such file"):
        read_card(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="is a folder"):
        read_card(tmp_path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_card(fifo)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(thresholds=["abc"]), "thresholds.0: Input should be a valid number"),
        (lambda d: d.update(thresholds=[1.5]), "thresholds.0: Input should be less than or equal to 1"),
        (lambda d: d["preprocessing"].update(spacing=[None, 0.001, 1.0]),
         "preprocessing.spacing.1: Input should be greater than or equal to 0.01"),
        (lambda d: d["preprocessing"].update(spacing=[None, -1.0, 1.0]), "preprocessing.spacing.1"),
        (lambda d: d.update(classes=5), "classes: Input should be a valid"),
        (lambda d: d.update(surprise=1), "surprise: unknown key"),
        (lambda d: d["architecture"]["config"].update(width="4"), "architecture.config.width"),
        (lambda d: d["candidate"]["activation"].update(normalization="median_max"),  # not an option (yet)
         "candidate.activation: normalized ReLU normalisation 'median_max' is unknown"),
    ],
)
def test_bad_cards_are_one_line_errors_naming_the_key(model_file, tmp_path, mutate, message):
    path, _ = model_file
    bad = _rewrite_card(path, tmp_path / "bad.safetensors", mutate)
    with pytest.raises(InputError) as exc:
        read_card(bad)
    text = str(exc.value)
    assert message in text and text.startswith(f"{bad}: model card: ") and "\n" not in text


def test_architecture_is_checked_against_tensor_shapes_before_building(model_file, tmp_path, monkeypatch):
    """A 38 KB file claiming width 384 must not build a 4.6 GB network."""
    path, _ = model_file
    huge = _rewrite_card(path, tmp_path / "huge.safetensors",
                         lambda d: d["architecture"]["config"].update(width=384))
    built = []
    real_init = UNet2D.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        built.append(next(self.parameters()).device.type)

    monkeypatch.setattr(UNet2D, "__init__", spy)
    with pytest.raises(InputError, match=r"weights do not fit the stored architecture \(.*stored \[4, 1, 3, 3\], "
                                         r"architecture needs \[384, 1, 3, 3\]"):
        load_model(huge)
    assert built == ["meta"]  # only the memory-free skeleton was built


def test_weights_that_do_not_fit(model_file, tmp_path):
    path, net = model_file
    other = UNet2D(1, 1, depth=2, width=6)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(bad),
              metadata={"softseg": card_for(net).to_json()})
    with pytest.raises(InputError, match="weights do not fit the stored architecture"):
        load_model(bad)
    missing = tmp_path / "missing.safetensors"
    tensors = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("head.")}
    save_file(tensors, str(missing), metadata={"softseg": card_for(net).to_json()})
    with pytest.raises(InputError, match="missing tensor head"):
        load_model(missing)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused(model_file, tmp_path, value):
    path, net = model_file
    state = {k: v.clone().contiguous() for k, v in net.state_dict().items()}
    state["head.weight"].view(-1)[0] = value
    bad = tmp_path / "nan.safetensors"
    save_file(state, str(bad), metadata={"softseg": card_for(net).to_json()})
    with pytest.raises(InputError, match="weight head.weight holds NaN or infinite values"):
        load_model(bad)


@pytest.mark.parametrize("first_bytes", [b"\x80", b"PK"])
def test_valid_files_whose_header_length_looks_like_a_pickle_signature_load(
    model_file, tmp_path, first_bytes
):
    """The 8-byte header length of a safetensors file can start with any byte: 0x80 (a pickle's
    first byte) or "PK" (a zip's) must not be mistaken for torch.save output (found by the claims
    benchmark: about 1 model in 256 was refused)."""
    path, _net = model_file
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    target = int.from_bytes(first_bytes, "little")  # the low byte(s) the length must start with
    width = len(first_bytes)
    header["__metadata__"]["zz_pad"] = ""
    text = json.dumps(header, separators=(",", ":"))
    header["__metadata__"]["zz_pad"] = " " * ((target - len(text)) % (256**width))
    text = json.dumps(header, separators=(",", ":")).encode()
    assert text[:1] == b"{" and struct.pack("<Q", len(text))[: len(first_bytes)] == first_bytes
    fixed = tmp_path / "padded.safetensors"
    fixed.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    assert read_card(fixed).candidate == read_card(path).candidate
    loaded = load_model(fixed)
    reference = load_model(path)
    for (k, a), (_, b) in zip(loaded.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_is_refused(tmp_path, protocol):
    path = tmp_path / "x.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(InputError, match="looks like a PyTorch pickle"):
        read_card(path)


# ------------------------------------------------------------------ format version 1
def _v1_document(net: UNet2D) -> dict:
    """The metadata the previous release wrote (its Trainer.metadata, format 1)."""
    return {
        "format_version": 1,
        "candidate": {"name": "softseg", "title": "Soft-ReLU-Wing", "soft_gt": True,
                      "activation": "normalized_relu", "loss": "adaptive_wing",
                      "loss_params": {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}},
        "architecture": {"name": "UNet2D", "config": net.config},
        "preprocessing": {"spacing": [None, 0.8, 0.9], "crop": [32, 32], "channels": ["image"],
                          "normalization": "zscore", "orientation": "SPL"},
        "threshold": 0.45,
        "validation": {"best_epoch": 2, "val_loss": 0.2, "val_dice": 0.8, "val_soft_dice": 0.75,
                       "threshold_sweep": [[0.4, 0.7], [0.45, 0.8], [0.5, 0.79]],
                       "history": [{"epoch": 1, "loss": 0.5, "val_loss": 0.3, "val_dice": 0.6,
                                    "val_soft_dice": 0.55, "lr": 0.0005},
                                   {"epoch": 2, "loss": 0.4, "val_loss": 0.2, "val_dice": 0.8,
                                    "val_soft_dice": 0.75, "lr": 0.0}]},
        "provenance": {"dataset": "/data/ds", "subjects": {"train": ["a", "b"], "val": ["c"], "test": []},
                       "raters": ["1", "2"], "fusion": "staple", "classes": ["lesion"], "seed": 3,
                       "epochs": 2, "max_epochs": 2,
                       "config": {"candidate": "softseg", "seed": 3, "device": "cpu", "amp": True,
                                  "data": {"spacing": None, "crop": [32, 32], "fusion": "staple",
                                           "val_fraction": 0.34, "test_fraction": 0.0, "test_group": None},
                                  "model": {"depth": 2, "width": 4, "dropout": 0.3, "batch_norm": True},
                                  "optim": {"lr": 0.001, "batch_size": 4, "epochs": 2, "patience": 50,
                                            "min_delta": 0.001},
                                  "augment": {"enabled": True, "rotation": 20.0, "translation": 0.03,
                                              "scale": 0.1}},
                       "device": "cpu", "world_size": 1, "distributed": None,
                       "softseg_version": "0.1.0", "torch_version": "2.5.0",
                       "created": "2025-01-01T00:00:00+0000"},
    }


def test_format_version_1_files_load_and_predict_as_before(tmp_path):
    """A file as the current release writes it (format version 1) loads into the typed card, and
    the network + activation it states give the same output as before (same weights, sigmoid
    or normalized ReLU by name, per-slice maximum)."""
    from softseg.activations import normalized_relu

    torch.manual_seed(1)
    net = UNet2D(1, 1, depth=2, width=4).eval()
    doc = _v1_document(net)
    path = tmp_path / "v1.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"format": "pt", "softseg": json.dumps(doc)})
    card = read_card(path)
    assert card.format_version == 2 and card.classes == ("lesion",) and card.thresholds == (0.45,)
    assert card.channels == ("image",) and card.preprocessing.spacing == (None, 0.8, 0.9)
    assert card.candidate.activation.name == "normalized_relu"
    assert card.candidate.activation.normalization == "sample_max"
    assert card.candidate.loss_params == {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}
    assert card.fusion == "staple" and card.raters == ("1", "2") and card.split.val == ("c",)
    assert card.validation.curves[0].thresholds == (0.4, 0.45, 0.5)
    assert [h.epoch for h in card.history] == [1, 2] and card.history[1].lr == 0.0
    assert card.training.config is not None and card.training.config.model.width == 4
    assert card.training.epochs == 2 and card.software.torch == "2.5.0"
    loaded = load_model(path)
    x = torch.randn(3, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = normalized_relu(net(x), dim=1)
        got = loaded.activation(loaded.model(x))
    assert torch.equal(got, expected)


def test_format_version_1_minimal_and_odd_documents(tmp_path):
    net = UNet2D(2, 1, depth=1, width=2)
    minimal = {"format_version": 1, "candidate": {"name": "softseg", "activation": "sigmoid"},
               "architecture": {"name": "UNet2D", "config": net.config},
               "preprocessing": {"spacing": [None, 1, 1], "crop": [16, 16], "channels": ["flair", "t2"]},
               "threshold": 0.5, "validation": {}, "provenance": {"config": {"optim": {"lr": "old"}}}}
    path = tmp_path / "min.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"softseg": json.dumps(minimal)})
    card = read_card(path)
    assert card.channels == ("flair", "t2") and card.classes == ("foreground",)
    assert card.candidate.soft_gt is True and card.candidate.loss == "adaptive_wing"  # from the registry
    assert card.training.config is None  # a stored configuration that no longer validates is dropped
    minimal["threshold"] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(bad),
              metadata={"softseg": json.dumps(minimal)})
    with pytest.raises(InputError, match="NaN is not valid JSON"):
        read_card(bad)
    minimal["threshold"] = "abc"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(bad),
              metadata={"softseg": json.dumps(minimal)})
    with pytest.raises(InputError, match=r"model card: thresholds.0: Input should be a valid number"):
        read_card(bad)
