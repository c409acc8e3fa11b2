"""The model card's activation options (issue 15): normalisation of the normalized ReLU.

Old model files (card ``normalization: "sample_max"``, no ``tau``) must predict exactly as before;
an option this softseg does not know is one line; the card binds its options to the activation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from softseg.card import NORMALIZATIONS, card_from_document, ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, UNetConfig
from softseg.errors import InputError
from softseg.modelfile import METADATA_KEY, load_model, read_card, write_tensors
from softseg.models import UNet2D


def _net(seed=0):
    torch.manual_seed(seed)
    net = UNet2D(1, 1, depth=2, width=4)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _card_doc(net, activation):
    card = ModelCard(
        thresholds=(0.5,), channels=("image",),
        preprocessing=PreprocessingCard(spacing=(None, 0.9, 0.8), crop=(16, 16)),
        candidate=CandidateCard(name="softseg", soft_gt=True, activation=ActivationCard(name="normalized_relu"),
                                loss="adaptive_wing"),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    doc = json.loads(card.to_json())
    doc["candidate"]["activation"] = activation
    return doc


def _write(path, net, doc):
    return write_tensors(path, net.state_dict(), {"format": "pt", METADATA_KEY: json.dumps(doc)})


def test_names_match_the_activation_registry():
    from softseg.activations import NORMALIZATIONS as REGISTRY

    assert tuple(REGISTRY) == NORMALIZATIONS


def test_a_current_release_file_predicts_exactly_as_before(tmp_path):
    """The card the current release writes (``{"name": ..., "normalization": "sample_max"}``): the
    prediction is ``relu / max`` of each whole slice, computed here by hand from the network."""
    from softseg.predict import predict_volume

    net = _net()
    path = _write(tmp_path / "old.safetensors", net,
                  _card_doc(net, {"name": "normalized_relu", "normalization": "sample_max"}))
    loaded = load_model(path)
    assert loaded.card.candidate.activation == ActivationCard(name="normalized_relu")
    rng = np.random.default_rng(1)
    arr = rng.normal(100, 20, (21, 18, 5)).astype(np.float32)
    arr[5:12, 4:10] += 60
    out = predict_volume(loaded, arr, affine=np.diag([0.8, 0.9, 2.0, 1.0]), device="cpu", batch_size=2)
    disp = np.flip(arr.transpose(2, 1, 0), axis=(1, 2)).astype(np.float64)
    z = (disp - disp.mean()) / disp.std()
    with torch.no_grad():
        r = torch.relu(net(torch.from_numpy(z[:, None].astype(np.float32))))[:, 0].numpy()
    peak = r.reshape(r.shape[0], -1).max(axis=1)
    expected = r / np.maximum(peak, 1e-6)[:, None, None]
    assert (expected.reshape(len(peak), -1).max(axis=1) == 1).sum() >= 4  # slices do reach 1
    np.testing.assert_allclose(out, np.flip(expected, axis=(1, 2)).transpose(2, 1, 0), atol=2e-5)
    # a version-1 style card without the key means the same
    path2 = _write(tmp_path / "nokey.safetensors", net, _card_doc(net, {"name": "normalized_relu"}))
    assert read_card(path2).candidate.activation.normalization == "sample_max"


def test_unknown_option_is_one_line(tmp_path):
    net = _net()
    path = _write(tmp_path / "new.safetensors", net,
                  _card_doc(net, {"name": "normalized_relu", "normalization": "median_of_means", "tau": 1.0}))
    with pytest.raises(InputError) as exc:
        read_card(path)
    msg = str(exc.value)
    assert "\n" not in msg and "candidate.activation" in msg and "'median_of_means' is unknown to this softseg" in msg
    assert "upgrade softseg" in msg


@pytest.mark.parametrize(("activation", "message"), [
    ({"name": "normalized_relu", "normalization": "fixed"}, "normalisation 'fixed' needs tau"),
    ({"name": "normalized_relu", "normalization": "sample_max", "tau": 1.0}, "takes no tau"),
    ({"name": "sigmoid", "normalization": "fixed", "tau": 1.0}, "sigmoid has no normalisation options"),
    ({"name": "normalized_relu", "normalization": "floor", "tau": 0.0}, "greater than 0"),
])
def test_inconsistent_options_are_refused(activation, message):
    with pytest.raises(InputError, match=message):
        card_from_document(_card_doc(_net(), activation), source="m")


def test_the_card_binds_its_options():
    x = torch.tensor([[[[-1.0, 0.25, 0.5, 3.0]]]])
    fixed = ActivationCard(name="normalized_relu", normalization="fixed", tau=2.0)
    torch.testing.assert_close(fixed.function()(x), torch.tensor([[[[0.0, 0.125, 0.25, 1.0]]]]))
    assert fixed.window == "none" and fixed.describe() == "normalized_relu (fixed, tau 2)"
    paper = ActivationCard(name="normalized_relu")
    torch.testing.assert_close(paper.function()(x), torch.tensor([[[[0.0, 0.25 / 3, 0.5 / 3, 1.0]]]]))
    assert paper.window == "sample"
    vol = ActivationCard(name="multiclass_normalized_relu", normalization="volume_max")
    assert vol.window == "volume"
    two = torch.tensor([[[[1.0]], [[3.0]]]])
    torch.testing.assert_close(vol.function()(two, divisor=6.0)[0, :, 0, 0], torch.tensor([0.25, 0.75]))
    assert ActivationCard(name="sigmoid").window == "none"
    torch.testing.assert_close(ActivationCard(name="sigmoid").function()(x), torch.sigmoid(x))
