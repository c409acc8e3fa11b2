"""softseg.modelfile: safetensors + JSON metadata; never unpickles."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from softseg.errors import InputError
from softseg.modelfile import FORMAT_VERSION, REQUIRED_KEYS, load_model, read_metadata, save_model
from softseg.models import UNet2D


def _meta() -> dict:
    return {
        "candidate": {"name": "softseg", "title": "Soft-ReLU-Wing", "soft_gt": True,
                      "activation": "normalized_relu", "loss": "adaptive_wing", "loss_params": {}},
        "preprocessing": {"spacing": [None, 1.0, 1.0], "crop": [32, 32], "channels": ["image"],
                          "normalization": "zscore", "orientation": "SPL"},
        "threshold": 0.35,
        "validation": {"best_epoch": 1, "val_loss": 0.5, "val_dice": 0.7, "val_soft_dice": 0.6},
        "provenance": {"dataset": "ds", "seed": 0, "epochs": 1},
    }


@pytest.fixture()
def model_file(tmp_path):
    torch.manual_seed(0)
    net = UNet2D(1, 1, depth=2, width=4)
    path = save_model(tmp_path / "m.safetensors", net, _meta())
    return path, net


def test_round_trip(model_file):
    path, net = model_file
    loaded = load_model(path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0)
    assert not loaded.model.training
    assert loaded.threshold == 0.35
    assert loaded.candidate_name == "softseg" and loaded.channels == ("image",)
    meta = loaded.metadata
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["architecture"] == {"name": "UNet2D", "config": net.config}
    assert list(meta)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert loaded.preprocessing.crop == (32, 32)


def test_read_metadata_does_not_import_torch(model_file):
    path, _ = model_file
    code = (
        "import sys, json\nfrom softseg.modelfile import read_metadata\n"
        f"m = read_metadata({str(path)!r})\n"
        "print(json.dumps([m['threshold'], 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [0.35, False]


def test_existing_file_needs_overwrite(model_file):
    path, net = model_file
    with pytest.raises(InputError, match="already exists"):
        save_model(path, net, _meta())
    with pytest.raises(InputError, match="must end in .safetensors"):
        save_model(path.with_suffix(".pt"), net, _meta())


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
    for fn in (load_model, read_metadata):
        with pytest.raises(InputError, match="looks like a PyTorch pickle") as exc:
            fn(pt)
        assert "\n" not in str(exc.value)
    assert not marker.exists()


def test_foreign_safetensors_and_bad_versions(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(InputError, match="without softseg metadata"):
        load_model(foreign)
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(3)}, str(future), metadata={"softseg": json.dumps({"format_version": 99})})
    with pytest.raises(InputError, match="format version 99 is not supported"):
        read_metadata(future)
    partial = tmp_path / "partial.safetensors"
    save_file({"w": torch.zeros(3)}, str(partial), metadata={"softseg": json.dumps({"format_version": 1})})
    with pytest.raises(InputError, match="lacks candidate"):
        read_metadata(partial)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 10**12) + b"xx")
    with pytest.raises(InputError, match="not a safetensors model file"):
        read_metadata(junk)
    with pytest.raises(InputError, match="no such model file"):
        read_metadata(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit(model_file, tmp_path):
    path, net = model_file
    other = UNet2D(1, 1, depth=2, width=6)
    doc = read_metadata(path)
    bad = tmp_path / "bad.safetensors"
    tensors = {k: v.contiguous() for k, v in other.state_dict().items()}
    save_file(tensors, str(bad), metadata={"softseg": json.dumps(doc)})
    with pytest.raises(InputError, match="weights do not fit the stored architecture"):
        load_model(bad)
    assert os.path.getsize(bad) > 0


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
    assert text[:1] == b"{" and struct.pack("<Q", len(text))[:len(first_bytes)] == first_bytes
    fixed = tmp_path / "padded.safetensors"
    fixed.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    meta = read_metadata(fixed)
    assert meta["candidate"] == read_metadata(path)["candidate"]
    loaded = load_model(fixed)
    reference = load_model(path)
    for (k, a), (_, b) in zip(loaded.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_is_refused(tmp_path, protocol):
    path = tmp_path / "x.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(InputError, match="looks like a PyTorch pickle"):
        read_metadata(path)
