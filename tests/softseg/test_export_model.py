"""softseg export-model: ONNX (onnxruntime) and TorchScript files match predict_volume to 1e-4,
carry the final activation and the model card, accept any batch and slice size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interchange_trees import model_file

from softseg.activations import multiclass_normalized_relu, normalized_relu
from softseg.cli import main
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.interchange import export_model as em
from softseg.io import Volume
from softseg.modelfile import load_model, read_card
from softseg.predict import predict_volume

pytest.importorskip("onnxruntime")
CHANNELS = ("T1w", "T2w")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model (2 channels, depth 2, normalized ReLU) exported once to each format."""
    folder = tmp_path_factory.mktemp("export")
    model = model_file(folder / "m.safetensors", channels=CHANNELS, depth=2, width=4, spacing=(None, 1.0, 1.0),
                       split={"train": ["a"], "val": ["b"]}, fusion="staple")
    onnx_path = em.export_model(model, folder / "m.onnx", format="onnx")
    ts_path = em.export_model(model, folder / "m.pt", format="torchscript")
    return model, onnx_path, ts_path


def _volumes(shape=(37, 29, 7), spacing=(0.8, 0.9, 2.0), seed=3):
    """Two channels in RAS file order, resampled by the model (0.8/0.9 mm -> 1.0 mm in-plane)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    vols = []
    for c in range(2):
        arr = rng.normal(100 + 30 * c, 15, shape).astype(np.float32)
        arr[10:25, 8:20, 2:6] += 70
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_zooms(spacing)
        vols.append(Volume(array=arr, affine=np.diag([*spacing, 1.0]), header=header))
    return vols


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_file_matches_predict_volume(exported, fmt):
    model, onnx_path, ts_path = exported
    loaded = load_model(model)
    vols = _volumes()
    reference = predict_volume(loaded, vols, device="cpu", batch_size=3)
    forward = em.onnx_forward(onnx_path) if fmt == "onnx" else em.torchscript_forward(ts_path)
    got = predict_volume(loaded, vols, device="cpu", batch_size=3, forward=forward)
    assert got.shape == vols[0].shape and reference.std() > 0.01
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=0)
    # the network saw slices whose size needs padding to a multiple of 2**depth (resampled in-plane)
    disp = DisplayGeometry.from_affine(vols[0].affine, vols[0].shape).display_shape
    assert any(round(n * s) % 4 for n, s in zip(disp[1:], (0.9, 0.8)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_dynamic_batch_and_slice_size_with_the_activation_included(exported, fmt):
    model, onnx_path, ts_path = exported
    loaded = load_model(model)
    forward = em.onnx_forward(onnx_path) if fmt == "onnx" else em.torchscript_forward(ts_path)
    gen = torch.Generator().manual_seed(7)
    for shape in [(1, 2, 8, 8), (5, 2, 37, 23), (2, 2, 13, 64), (1, 2, 3, 5)]:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            logits = loaded.model(x)
            expected = normalized_relu(logits).numpy()  # the papers' formula, on this sample's logits
        got = forward(x.numpy())
        assert got.shape == (shape[0], 1, shape[2], shape[3])
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert got.min() >= 0 and np.all(np.abs(got.reshape(shape[0], -1).max(axis=1) - 1) < 1e-6)  # per-sample max 1


def test_onnx_graph_declares_named_dynamic_dims_and_card(exported):
    import onnx

    model, onnx_path, _ = exported
    proto = onnx.load(str(onnx_path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "height", "width"] and proto.graph.input[0].name == "slices"
    out = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out == ["batch", 1, "height", "width"] and proto.graph.output[0].name == "probabilities"
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["softseg.channels"]) == list(CHANNELS)
    assert json.loads(props["softseg.thresholds"]) == [0.5] and props["softseg.activation"] == "normalized_relu"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_card_travels_with_the_file(exported, fmt):
    model, onnx_path, ts_path = exported
    card = em.read_exported_card(onnx_path if fmt == "onnx" else ts_path)
    export = card.pop("export")
    assert card == read_card(model).model_dump(mode="json")
    assert card["split"] == {"train": ["a"], "val": ["b"], "test": []} and card["fusion"] == "staple"
    assert export["format"] == fmt and export["input"]["shape"] == ["batch", 2, "height", "width"]
    assert export["source_model"] == str(model)


def test_multiclass_torchscript_via_cli(tmp_path, capsys):
    model = model_file(tmp_path / "mc.safetensors", channels=("image",), out_channels=3,
                       activation="multiclass_normalized_relu", depth=2, width=4)
    out = tmp_path / "mc.pt"
    code = main(["export-model", str(model), "--format", "torchscript", "-o", str(out)])
    text, err = capsys.readouterr()
    assert code == 0, err and "checked against PyTorch" in text
    x = torch.randn(4, 1, 19, 21, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = multiclass_normalized_relu(load_model(model).model(x)).numpy()
    got = em.torchscript_forward(out)(x.numpy())
    assert got.shape == (4, 3, 19, 21)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    sums = got.sum(axis=1)
    assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))  # classes sum to 1 (0 where no evidence)


def test_a_file_that_disagrees_with_pytorch_is_never_written(tmp_path, monkeypatch):
    model = model_file(tmp_path / "m.safetensors", depth=2, width=4)
    monkeypatch.setattr(em, "torchscript_forward", lambda path: (lambda x: np.zeros((x.shape[0], 1) + x.shape[2:], np.float32)))
    with pytest.raises(RuntimeError, match="disagrees with PyTorch"):
        em.export_model(model, tmp_path / "m.pt", format="torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# ----------------------------------------------------------------------------- bad input
def _bad(capsys, tmp_path, argv, *needles):
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: an invalid choice is a usage error (exit 2 + usage line)
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    for needle in needles:
        assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    model = model_file(tmp_path / "m.safetensors", depth=2, width=4)
    _bad(capsys, tmp_path, ["export-model", str(model), "--format", "onnx", "-o", str(tmp_path / "m.pt")], ".onnx")
    _bad(capsys, tmp_path, ["export-model", str(model), "--format", "torchscript", "-o", str(tmp_path / "m.onnx")], ".pt")
    _bad(capsys, tmp_path, ["export-model", str(model), "--format", "tflite", "-o", str(tmp_path / "m.x")], "invalid choice")
    (tmp_path / "exists.onnx").write_bytes(b"old")
    _bad(capsys, tmp_path, ["export-model", str(model), "--format", "onnx", "-o", str(tmp_path / "exists.onnx")], "--overwrite")
    assert (tmp_path / "exists.onnx").read_bytes() == b"old"
    pickle = tmp_path / "weights.pth"
    pickle.write_bytes(b"\x80\x04K\x01.")
    _bad(capsys, tmp_path, ["export-model", str(pickle), "--format", "torchscript", "-o", str(tmp_path / "w.pt")], "pickle")
    _bad(capsys, tmp_path, ["export-model", str(tmp_path / "none.safetensors"), "--format", "onnx", "-o", str(tmp_path / "n.onnx")], "none.safetensors")


def test_reading_a_card_from_a_foreign_file(tmp_path):
    plain = tmp_path / "plain.pt"
    with em._quiet():
        torch.jit.save(torch.jit.trace(torch.nn.ReLU(), torch.zeros(1)), str(plain))
    with pytest.raises(InputError, match="no softseg model card"):
        em.read_exported_card(plain)
    with pytest.raises(InputError, match="no such file"):
        em.read_exported_card(tmp_path / "missing.onnx")
