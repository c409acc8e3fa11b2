"""softseg.predict.predict_volume: native geometry, reference pipeline, batching, progress/cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from softseg.card import ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, UNetConfig
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import Volume, load_volume, save_volume
from softseg.modelfile import load_model, save_model
from softseg.models import UNet2D
from softseg.predict import PredictionCancelled, auto_batch_size, class_labels, predict_volume


def _model_file(path, *, channels=("image",), spacing=(None, 1.0, 1.0), candidate="softseg", seed=0):
    torch.manual_seed(seed)
    net = UNet2D(len(channels), 1, depth=2, width=4)
    # non-trivial batch-norm statistics so eval mode matters
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    card = ModelCard(
        thresholds=(0.5,), channels=tuple(channels),
        preprocessing=PreprocessingCard(spacing=tuple(spacing), crop=(16, 16)),
        candidate=CandidateCard(name=candidate, soft_gt=True, activation=ActivationCard(name="sigmoid"), loss="dice"),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)


def _volume(shape=(21, 18, 5), spacing=(0.8, 0.9, 2.0), seed=1):
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 20, shape).astype(np.float32)
    arr[5:12, 4:10] += 60
    return Volume(array=arr, affine=np.diag([*spacing, 1.0]), header=_header(shape, spacing))


def _header(shape, spacing):
    import nibabel as nib

    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_zooms(spacing)
    return h


def test_native_shape_range_and_resampling(tmp_path):
    model = load_model(_model_file(tmp_path / "m.safetensors"))
    vol = _volume()
    out = predict_volume(model, vol, device="cpu")
    assert out.shape == vol.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1 and out.std() > 0


def test_matches_a_hand_written_pipeline(tmp_path):
    """No resampling needed (model spacing = native): z-score, slice-wise forward, activation."""
    model = load_model(_model_file(tmp_path / "m.safetensors", spacing=(None, 0.9, 0.8)))
    vol = _volume(spacing=(0.8, 0.9, 2.0))
    out = predict_volume(model, vol, device="cpu", batch_size=2)
    # identity-like affine with positive diagonal: display (S, P, L) = array.T flipped on P and L
    disp = np.flip(vol.array.transpose(2, 1, 0), axis=(1, 2)).astype(np.float64)
    z = (disp - disp.mean()) / disp.std()
    with torch.no_grad():
        logits = model.model(torch.from_numpy(z[:, None].astype(np.float32)))
        prob = torch.sigmoid(logits)[:, 0].numpy()
    expected = np.flip(prob, axis=(1, 2)).transpose(2, 1, 0)
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_orientation_equivariance(tmp_path):
    """The same voxels stored in LPS order give the same prediction, flipped back exactly."""
    path = _model_file(tmp_path / "m.safetensors", spacing=(None, 1.2, 1.2))
    ras = _volume()
    save_volume(tmp_path / "ras.nii.gz", ras.array, affine=ras.affine)
    lps_aff = ras.affine.copy()
    lps_aff[0, 0] *= -1
    lps_aff[1, 1] *= -1
    lps_aff[0, 3] = (ras.shape[0] - 1) * ras.affine[0, 0]
    lps_aff[1, 3] = (ras.shape[1] - 1) * ras.affine[1, 1]
    save_volume(tmp_path / "lps.nii.gz", ras.array[::-1, ::-1], affine=lps_aff)
    a = predict_volume(path, load_volume(tmp_path / "ras.nii.gz"), device="cpu")
    b = predict_volume(path, load_volume(tmp_path / "lps.nii.gz"), device="cpu")
    np.testing.assert_allclose(b[::-1, ::-1], a, atol=1e-6)


def test_batch_size_does_not_change_the_result(tmp_path):
    model = load_model(_model_file(tmp_path / "m.safetensors"))
    vol = _volume()
    one = predict_volume(model, vol, device="cpu", batch_size=1)
    many = predict_volume(model, vol, device="cpu", batch_size=7)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_array_input_and_channels(tmp_path):
    two = load_model(_model_file(tmp_path / "two.safetensors", channels=("flair", "t2")))
    vol = _volume()
    with pytest.raises(InputError, match=r"expects 2 input channel\(s\) \(flair, t2\) but got 1"):
        predict_volume(two, vol)
    out = predict_volume(two, [vol, Volume(vol.array * 2 + 1, vol.affine, vol.header)], device="cpu")
    assert out.shape == vol.shape
    arr_out = predict_volume(two, np.stack([vol.array, vol.array * 2 + 1]), affine=vol.affine, device="cpu")
    np.testing.assert_allclose(arr_out, out, atol=1e-6)
    with pytest.raises(InputError, match="affine"):
        predict_volume(two, vol.array)
    bad = vol.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_volume(two, [Volume(bad, vol.affine, vol.header)] * 2)


def test_progress_and_cancel(tmp_path):
    model = load_model(_model_file(tmp_path / "m.safetensors", spacing=(None, 0.9, 0.8)))
    vol = _volume()
    calls = []
    predict_volume(model, vol, device="cpu", batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    flag = threading.Event()

    def progress(done, total):
        flag.set()  # cancel after the first batch

    with pytest.raises(PredictionCancelled):
        predict_volume(model, vol, device="cpu", batch_size=2, progress=progress, cancel=flag)
    with pytest.raises(PredictionCancelled):
        predict_volume(model, vol, device="cpu", cancel=lambda: True)


def test_auto_batch_size_bounds_memory():
    small = auto_batch_size((64, 64), 8)
    big = auto_batch_size((233, 197), 32)
    assert 1 <= big < small <= 64
    # the estimated activation memory of a batch stays inside the CPU budget
    assert big * 233 * 197 * 32 * 32 <= 384 * 1024**2
    assert auto_batch_size((4000, 4000), 64) == 1


def test_geometry_round_trip_of_output(tmp_path):
    """The prediction saved 'like' the input has the input's affine and shape."""
    path = _model_file(tmp_path / "m.safetensors", spacing=(1.0, 1.5, 1.5))
    vol = _volume()
    src = save_volume(tmp_path / "img.nii.gz", vol.array, affine=vol.affine)
    loaded = load_volume(src)
    out = predict_volume(path, loaded, device="cpu")
    written = load_volume(save_volume(tmp_path / "pred.nii.gz", out, like=loaded))
    np.testing.assert_array_equal(written.affine, loaded.affine)
    np.testing.assert_array_equal(written.array, out)
    geom = DisplayGeometry.from_affine(loaded.affine, loaded.shape)
    assert geom.to_display(out).shape == geom.display_shape


def test_empty_images_nan_output_and_memory_are_refused(tmp_path, monkeypatch):
    """Issue 13 #7/#9: a zero-size dimension, a network that outputs NaN and a resampled volume
    larger than the memory never end as a 'probability' map."""
    import softseg.io

    model = load_model(_model_file(tmp_path / "m.safetensors"))
    with pytest.raises(InputError, match=r"the image is empty \(shape \(0, 18, 5\)\)"):
        predict_volume(model, np.zeros((0, 18, 5), np.float32), affine=np.eye(4), device="cpu")
    with pytest.raises(InputError, match=r"the network produced NaN/Inf for (\d+) of \1 voxels; the model .*m.safetensors"):
        predict_volume(model, _volume(), device="cpu", forward=lambda x: np.full((x.shape[0], 1) + x.shape[2:], np.nan, np.float32))
    monkeypatch.setattr(softseg.io, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"resampling to the model's spacing \(native, 1, 1\) mm .* needs .* of memory"):
        predict_volume(model, _volume(), device="cpu")


def test_forward_replaces_network_and_activation(tmp_path):
    """``forward=`` (exported models, issue 16) runs inside the same geometry pipeline."""
    loaded = load_model(_model_file(tmp_path / "m.safetensors"))
    vol = _volume()
    seen = []

    def forward(x):
        seen.append(x.shape)
        with torch.no_grad():
            return torch.sigmoid(loaded.model(torch.from_numpy(x))).numpy()

    np.testing.assert_array_equal(predict_volume(loaded, vol, device="cpu", forward=forward),
                                  predict_volume(loaded, vol, device="cpu"))
    assert seen and all(len(s) == 4 and s[1] == 1 for s in seen)


# ------------------------------------------------------------------ K classes (issue 14)
def _k_model_file(path, *, k=3, activation="softmax", spacing=(None, 0.9, 0.8), seed=0):
    torch.manual_seed(seed)
    net = UNet2D(1, k + 1, depth=2, width=4)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    classes = tuple(f"class {c}" for c in range(1, k + 1))
    card = ModelCard(
        classes=classes, thresholds=(0.5,) * k, channels=("image",),
        preprocessing=PreprocessingCard(spacing=tuple(spacing), crop=(16, 16)),
        candidate=CandidateCard(name="conventional", soft_gt=False, activation=ActivationCard(name=activation),
                                loss="dice"),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)


def test_k_class_prediction_matches_a_hand_written_pipeline_and_sums_to_one(tmp_path):
    """No resampling (model spacing = native): z-score, slice-wise forward, softmax by hand."""
    model = load_model(_k_model_file(tmp_path / "k.safetensors"))
    vol = _volume(spacing=(0.8, 0.9, 2.0))
    out = predict_volume(model, vol, device="cpu", batch_size=2)
    assert out.shape == (4, *vol.shape) and out.dtype == np.float32
    disp = np.flip(vol.array.transpose(2, 1, 0), axis=(1, 2)).astype(np.float64)
    z = (disp - disp.mean()) / disp.std()
    with torch.no_grad():
        logits = model.model(torch.from_numpy(z[:, None].astype(np.float32))).double().numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft = e / e.sum(axis=1, keepdims=True)  # (S, 4, P, L)
    expected = np.flip(np.moveaxis(soft, 1, 0), axis=(2, 3)).transpose(0, 3, 2, 1)
    np.testing.assert_allclose(out[1:], expected[1:], atol=2e-6)
    np.testing.assert_allclose(out[0], 1 - expected[1:].sum(axis=0), atol=2e-6)
    np.testing.assert_allclose(out.sum(axis=0, dtype=np.float64), 1.0, atol=1e-5)
    labels = class_labels(out)
    assert labels.dtype == np.uint8 and labels.shape == vol.shape
    np.testing.assert_array_equal(labels, np.argmax(out, axis=0))


def test_k_class_prediction_resampled_sums_to_one_and_dead_voxels_are_background(tmp_path):
    """Resampled back to native (linear, per class): background + classes still sum to 1 within
    1e-5; with the multi-class normalized ReLU a voxel whose classes are all 0 is background."""
    model = load_model(_k_model_file(tmp_path / "k.safetensors", activation="multiclass_normalized_relu",
                                     spacing=(None, 1.7, 1.3)))
    vol = _volume(shape=(23, 19, 4), spacing=(0.8, 0.9, 2.0))
    out = predict_volume(model, vol, device="cpu")
    assert out.shape == (4, *vol.shape)
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.sum(axis=0, dtype=np.float64), 1.0, atol=1e-5)

    def dead(x):  # classes 1..3 all zero: no evidence for any class
        return np.zeros((x.shape[0], 4, *x.shape[2:]), np.float32)

    out = predict_volume(model, vol, device="cpu", forward=dead)
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1:], 0.0)


def test_k_class_forward_with_or_without_background_and_channel_mismatch(tmp_path):
    model = load_model(_k_model_file(tmp_path / "k.safetensors", k=2))
    vol = _volume()
    ref = predict_volume(model, vol, device="cpu")

    def with_bg(x):
        with torch.no_grad():
            return torch.softmax(model.model(torch.from_numpy(x)), dim=1).numpy()

    np.testing.assert_array_equal(predict_volume(model, vol, device="cpu", forward=with_bg), ref)
    np.testing.assert_allclose(predict_volume(model, vol, device="cpu", forward=lambda x: with_bg(x)[:, 1:]),
                               ref, atol=1e-6)
    with pytest.raises(InputError, match=r"the network gives 1 output channel\(s\) but the model card lists 2 "
                       r"class\(es\) \(class 1, class 2\); expected 3 \(background first\) or 2"):
        predict_volume(model, vol, device="cpu", forward=lambda x: with_bg(x)[:, :1])
    with pytest.raises(InputError, match=r"class_labels: expected class maps \(K\+1, \*spatial\)"):
        class_labels(ref[:1])  # one map: background only, no class
