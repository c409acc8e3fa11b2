"""softseg.layers_dataset: layers -> dataset folder, with native geometry, checked with nibabel."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.layers_dataset import safe_name, write_layers_dataset


def _geometry():
    # A file stored LPS-like and sagittal-first: axis 0 = A->P? Use a permuted, flipped affine
    # so display order differs from file order on every axis.
    affine = np.array(
        [[0.0, 0.0, -1.5, 40.0],   # file axis 2 -> x decreasing (L)
         [-0.8, 0.0, 0.0, 30.0],   # file axis 0 -> y decreasing (P)
         [0.0, 2.0, 0.0, -20.0],   # file axis 1 -> z increasing (S)
         [0.0, 0.0, 0.0, 1.0]]
    )
    return DisplayGeometry.from_affine(affine, (7, 9, 5))


def test_round_trip_native_orientation_and_world_positions(tmp_path):
    geo = _geometry()
    rng = np.random.default_rng(0)
    file_img = rng.normal(size=geo.file_shape).astype(np.float32)
    file_tgt = (rng.random(geo.file_shape) > 0.7).astype(np.uint8)
    disp_img, disp_tgt = geo.to_display(file_img), geo.to_display(file_tgt)
    assert disp_img.shape == (9, 7, 5)

    folder = write_layers_dataset(tmp_path / "ds", {"T1": disp_img}, {"rater 1": disp_tgt}, geo,
                                  source={"image": "T1"})
    img = nib.load(folder / "layers" / "image.nii.gz")
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), file_img)
    np.testing.assert_allclose(img.affine, geo.affine)
    tgt = nib.load(folder / "layers" / "rater-rater-1.nii.gz")
    np.testing.assert_array_equal(np.asarray(tgt.dataobj), file_tgt)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channels"] == ["T1"] and meta["targets"] == ["rater 1"]


def test_slabs_keep_world_positions(tmp_path):
    geo = _geometry()
    file_img = np.arange(np.prod(geo.file_shape), dtype=np.float32).reshape(geo.file_shape)
    disp = geo.to_display(file_img)
    soft = np.clip(disp / disp.max(), 0, 1).astype(np.float32)
    folder = write_layers_dataset(tmp_path / "ds", {"a": disp, "b": -disp}, {"soft": soft}, geo,
                                  n_subjects=3)
    subs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert subs == ["layers-01", "layers-02", "layers-03"]
    world_of_value = {}
    for i in np.ndindex(geo.file_shape):
        world_of_value[float(file_img[i])] = geo.affine @ np.array([*i, 1.0])
    total = 0
    for sub in subs:
        files = sorted(p.name for p in (folder / sub).iterdir())
        assert files == ["image_0-a.nii.gz", "image_1-b.nii.gz", "rater-soft.nii.gz"]
        im = nib.load(folder / sub / "image_0-a.nii.gz")
        data = im.get_fdata(dtype=np.float32)
        total += data.size
        # every voxel of every slab sits at the same world position as in the full volume
        for i in np.ndindex(data.shape):
            np.testing.assert_allclose(im.affine @ np.array([*i, 1.0]), world_of_value[float(data[i])])
    assert total == file_img.size


@pytest.mark.parametrize(
    ("channels", "targets", "match"),
    [
        ({}, {"r": np.ones((9, 7, 5))}, "at least one image"),
        ({"i": np.zeros((9, 7, 5))}, {}, "choose a target"),
        ({"i": np.zeros((9, 7, 4))}, {"r": np.ones((9, 7, 5))}, "shape"),
        ({"i": np.zeros((9, 7, 5))}, {"r": np.full((9, 7, 5), 1.5)}, r"\[0, 1\]"),
        ({"i": np.zeros((9, 7, 5))}, {"r": np.zeros((9, 7, 5), np.uint8)}, "empty"),
    ],
)
def test_bad_input_is_refused_before_writing(tmp_path, channels, targets, match):
    with pytest.raises(InputError, match=match):
        write_layers_dataset(tmp_path / "ds", channels, targets, _geometry())
    assert not (tmp_path / "ds").exists()


def test_safe_name():
    assert safe_name("T1 · rater 2") == "T1-rater-2"
    assert safe_name("///") == "layer"
