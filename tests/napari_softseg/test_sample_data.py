"""Sample data "MNI brain (real T1, tissue classes)": layers, class tags, geometry, the cache."""

from __future__ import annotations

import os

import npe2
import numpy as np
import pytest

from softseg.anatomy import CACHE_ENV, TARGETS, cached_subject
from softseg.dataset_json import class_key
from softseg.io import load_volume

from napari_softseg._layers import SOURCE_KEY, save_layer_as_nifti
from napari_softseg._metadata import CLASS_KEY, RATER_KEY, role
from napari_softseg._sample_data import MNI_SAMPLE, mni_layers

CLASSES = TARGETS["tissue"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private subject cache holding the default sample (generated once for the module)."""
    root = tmp_path_factory.mktemp("softseg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        folder, hit = cached_subject(**MNI_SAMPLE)
        assert not hit
        yield folder


def test_manifest_offers_the_mni_sample_first():
    manifest = npe2.PluginManifest.from_distribution("napari-softseg")
    samples = [(s.key, s.display_name) for s in manifest.contributions.sample_data]
    assert samples[0] == ("mni", "MNI brain (real T1, tissue classes)")
    assert ("phantom", "SoftSeg phantom") in samples


def test_mni_layers_image_soft_truth_and_raters_per_class(cache, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(cache.parent.parent))
    layers = mni_layers()
    names = [kwargs["name"] for _, kwargs, _ in layers]
    expected = ["T1w"] + [f"truth · {c}" for c in CLASSES] + [
        f"rater-{r} · {c}" for r in range(1, 5) for c in CLASSES
    ]
    assert names == expected
    by_name = {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in layers}
    image, image_kwargs, kind = by_name["T1w"]
    assert kind == "image" and role(image_kwargs["metadata"]) == "image"
    assert image.shape == (90, 103, 85)  # display order: 90 axial slices of 103 x 85 at 2 mm
    assert list(image_kwargs["scale"]) == [2.0, 2.0, 2.0]
    truth = np.stack([by_name[f"truth · {c}"][0] for c in CLASSES])
    assert truth.min() >= 0 and truth.sum(axis=0).max() <= 1 + 1e-5
    for r in range(1, 5):
        masks = []
        for k, c in enumerate(CLASSES, start=1):
            data, kwargs, kind = by_name[f"rater-{r} · {c}"]
            meta = kwargs["metadata"]
            assert kind == "labels" and role(meta) == "rater"
            assert meta[RATER_KEY] == str(r) and meta[CLASS_KEY] == {"index": k, "name": c}
            assert meta[SOURCE_KEY] is None  # the cached files are never written back
            masks.append(data)
        assert np.stack(masks).sum(axis=0).max() == 1  # one class per voxel and rater
    visible = [name for name, (_, kwargs, _) in by_name.items() if kwargs.get("visible", True)]
    assert visible == ["T1w", "truth · grey matter", "rater-1 · white matter"]


def test_sample_opens_in_a_viewer_and_layers_save_back_in_file_geometry(
    cache, monkeypatch, make_napari_viewer, tmp_path
):
    monkeypatch.setenv(CACHE_ENV, str(cache.parent.parent))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-softseg", "mni")
    assert len(viewer.layers) == 1 + 3 + 12
    layer = viewer.layers["rater-2 · white matter"]
    out = save_layer_as_nifti(layer, tmp_path / "rater-2.nii.gz")
    saved = load_volume(out)
    original = load_volume(cache / f"rater-2_label-{class_key('white matter')}.nii.gz")
    np.testing.assert_array_equal(saved.array, original.array)
    np.testing.assert_allclose(saved.affine, original.affine)


def test_second_open_comes_from_the_cache(cache, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(cache.parent.parent))
    folder, hit = cached_subject(**MNI_SAMPLE)
    assert hit and folder == cache
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    mni_layers()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp  # nothing rewritten
    assert not [p for p in folder.parent.iterdir() if ".softseg-tmp" in p.name]
    assert os.environ[CACHE_ENV] == str(cache.parent.parent)
