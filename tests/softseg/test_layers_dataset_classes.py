"""softseg.layers_dataset with K >= 2 classes: per-class rater files read back by softseg.data.

The expected class probabilities are written out by hand from the painted codes
(code = (class - 1) * L + level, DESIGN decision 11) and the scale's values, not computed by the
product's own conversion.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from softseg.class_levels import class_level_maps
from softseg.confidence import ConfidenceScale
from softseg.data import load_subject, scan_dataset
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.layers_dataset import write_layers_dataset

CLASSES = ["grey matter", "white matter", "csf"]
VALUES = (0.25, 0.5, 1.0)  # level 1, 2, 3
SCALE = ConfidenceScale(VALUES)


def _geometry():
    # permuted and flipped axes, so display order differs from file order on every axis
    affine = np.array(
        [[0.0, 0.0, -1.5, 40.0],
         [-0.8, 0.0, 0.0, 30.0],
         [0.0, 2.0, 0.0, -20.0],
         [0.0, 0.0, 0.0, 1.0]]
    )
    return DisplayGeometry.from_affine(affine, (7, 9, 5))  # display shape (9, 7, 5)


def _codes(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, len(CLASSES) * len(VALUES) + 1, size=(9, 7, 5)).astype(np.uint8)


def _by_hand(codes):
    """(K+1, S, P, L): background, then each class's soft value, voxel by voxel."""
    out = np.zeros((len(CLASSES) + 1, *codes.shape))
    for idx in np.ndindex(codes.shape):
        code = int(codes[idx])
        if code == 0:
            out[(0, *idx)] = 1.0
            continue
        cls, level = (code - 1) // 3 + 1, (code - 1) % 3 + 1
        out[(cls, *idx)] = VALUES[level - 1]
        out[(0, *idx)] = 1.0 - VALUES[level - 1]
    return out


def test_code_layers_of_two_raters_read_back_as_their_class_probabilities(tmp_path):
    geo = _geometry()
    codes = {"alice": _codes(0), "bob": _codes(1)}
    image = np.random.default_rng(2).normal(size=geo.display_shape).astype(np.float32)
    targets = {r: class_level_maps(c, n_classes=3, n_levels=3) for r, c in codes.items()}
    sidecars = {r: {"softseg_confidence": SCALE.as_dict()} for r in codes}
    folder = write_layers_dataset(tmp_path / "ds", {"T1": image}, targets, geo,
                                  sidecars=sidecars, classes=CLASSES)

    files = sorted(p.name for p in (folder / "layers").glob("*.nii.gz"))
    assert files == sorted(["image.nii.gz"] + [
        f"rater-{r}_label-{k}.nii.gz" for r in codes for k in ("grey-matter", "white-matter", "csf")
    ])
    assert json.loads((folder / "dataset.json").read_text())["classes"] == CLASSES

    info = scan_dataset(folder)
    assert info.classes == tuple(CLASSES)
    (subject,) = info.subjects
    assert subject.rater_kinds == ("classes", "classes")
    data = load_subject(subject)
    assert data.raters.shape == (2, 4, 9, 7, 5)
    order = list(subject.rater_ids)
    for r, c in codes.items():
        np.testing.assert_allclose(data.raters[order.index(r)], _by_hand(c), atol=1e-6)
    np.testing.assert_array_equal(data.images[0], image)


def test_soft_class_maps_in_slabs_read_back_unchanged(tmp_path):
    geo = _geometry()
    rng = np.random.default_rng(3)
    raw = rng.random((4, *geo.display_shape))
    maps = (raw[1:] / raw.sum(0)).astype(np.float32)  # three classes + background sum to 1
    image = rng.normal(size=geo.display_shape).astype(np.float32)
    folder = write_layers_dataset(tmp_path / "ds", {"T1": image}, {"fused": maps}, geo,
                                  classes=["a/b", "c", "d"], n_subjects=3)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["classes"] == [{"name": "a/b", "key": "a-b"}, "c", "d"]
    info = scan_dataset(folder)
    assert info.classes == ("a/b", "c", "d") and len(info.subjects) == 3
    got = np.concatenate([load_subject(s).raters[0] for s in info.subjects], axis=1)
    np.testing.assert_allclose(got[1:], maps, atol=1e-6)
    np.testing.assert_allclose(got[0], 1.0 - maps.sum(0), atol=1e-5)


@pytest.mark.parametrize(
    ("target", "sidecar", "match"),
    [
        (np.ones((2, 9, 7, 5), np.uint8), None, r"3 class maps"),
        (np.zeros((3, 9, 7, 5), np.uint8), None, "empty"),
        (np.full((3, 9, 7, 5), 0.5, np.float32), None, "sum|above 1"),
        (np.full((3, 9, 7, 5), 2, np.uint8), None, "scale|level"),
    ],
)
def test_bad_class_targets_are_refused_before_writing(tmp_path, target, sidecar, match):
    geo = _geometry()
    with pytest.raises(InputError, match=match):
        write_layers_dataset(tmp_path / "ds", {"T1": np.zeros(geo.display_shape)},
                             {"r": target}, geo, classes=CLASSES,
                             sidecars={"r": sidecar} if sidecar else None)
    assert not (tmp_path / "ds").exists()


def test_duplicate_class_names_are_refused(tmp_path):
    geo = _geometry()
    with pytest.raises(InputError, match="unique"):
        write_layers_dataset(tmp_path / "ds", {"T1": np.zeros(geo.display_shape)},
                             {"r": np.ones((2, 9, 7, 5), np.uint8)}, geo, classes=["a", "a"])
