"""The napari reader and writers in a real viewer: orientation, scale, exact round trips, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from softseg.geometry import DisplayGeometry

PLUGIN = "napari-softseg"


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    return (
        np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
        @ np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
        @ np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    )


AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.array([[-1.0, 0, 0, 30.0], [0, -1.0, 0, 25.0], [0, 0, 1.0, -12.0], [0, 0, 0, 1]]),
    "anisotropic": np.diag([0.7, 0.8, 3.5, 1.0]),
    "oblique": np.vstack([np.hstack([_rotation(0.25, -0.2, 0.3) @ np.diag([0.9, 1.1, 2.5]),
                                     [[-90.3], [12.7], [44.1]]]), [0, 0, 0, 1]]),
    "coronal": np.array([[1.0, 0, 0, 0], [0, 0, 2.0, 0], [0, -1.2, 0, 0], [0, 0, 0, 1]]),
}
SHAPE = (10, 12, 6)


def _axial_axis(affine: np.ndarray) -> int:
    """The file axis that runs most along superior-inferior (independent of softseg)."""
    return int(np.argmax(np.abs(affine[2, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    nib.save(img, path)
    return path


def _same_file(a: Path, b: Path) -> None:
    ia, ib = nib.load(a), nib.load(b)
    assert ib.get_data_dtype() == ia.get_data_dtype()
    assert np.array_equal(np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj))
    assert ia.affine.tobytes() == ib.affine.tobytes()
    assert ia.header.binaryblock == ib.header.binaryblock


@pytest.fixture
def notes():
    """Messages shown as napari notifications during a test."""
    from napari.utils.notifications import notification_manager

    got: list[str] = []

    def keep(notification):
        got.append(str(notification.message))

    notification_manager.notification_ready.connect(keep)
    yield got
    notification_manager.notification_ready.disconnect(keep)


@pytest.mark.parametrize("orientation", sorted(AFFINES))
def test_image_opens_axial_and_round_trips(make_napari_viewer, tmp_path, orientation):
    affine = AFFINES[orientation]
    array = np.random.default_rng(0).normal(100, 30, size=SHAPE).astype(np.float32)
    src = _save(tmp_path / "t1.nii.gz", array, affine)
    viewer = make_napari_viewer()
    layers = viewer.open(src, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert type(layer).__name__ == "Image"
    axial = _axial_axis(affine)
    # the slice slider (axis 0) runs over the axial slices, with their physical spacing
    assert layer.data.shape[0] == SHAPE[axial]
    assert layer.scale[0] == pytest.approx(np.linalg.norm(affine[:3, axial]), rel=1e-6)
    assert viewer.dims.nsteps[0] == SHAPE[axial], (viewer.dims.range, layer.extent, layer.scale, layer.translate)
    assert layer.metadata["source_path"] == os.path.abspath(src)
    assert DisplayGeometry.from_metadata(layer.metadata).affine.tobytes() == nib.load(src).affine.tobytes()
    # three ways of saving, each reproduces the file bit for bit
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(tmp_path / "via_layerlist.nii.gz"), selected=True, plugin=PLUGIN)
    assert written == [str(tmp_path / "via_layerlist.nii.gz")]
    layer.save(str(tmp_path / "via_layer.nii"), plugin=PLUGIN)
    from napari_softseg._writer import write_image

    write_image(str(tmp_path / "via_function.nii.gz"), layer.data, layer.as_layer_data_tuple()[1])
    for name in ("via_layerlist.nii.gz", "via_layer.nii", "via_function.nii.gz"):
        _same_file(src, tmp_path / name)


@pytest.mark.parametrize("orientation", ["lps", "oblique", "coronal"])
def test_painted_labels_land_on_the_right_voxel(make_napari_viewer, tmp_path, orientation):
    affine = AFFINES[orientation]
    labels = np.zeros(SHAPE, np.int16)
    labels[2:5, 3:6, 1:3] = 2
    src = _save(tmp_path / "rater-3.nii.gz", labels, affine)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(src, plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    assert layer.data.dtype == np.int16
    assert layer.metadata["softseg_rater"] == "3"
    # paint the display voxel nearest to a world point, then check the file voxel at that point
    target_file_index = np.array([7, 1, 4])
    world = affine @ np.array([*target_file_index, 1.0])
    display_index = np.round(layer.world_to_data([world[2], -world[1], -world[0]])).astype(int)
    if orientation != "oblique":
        layer.data[tuple(display_index)] = 5
        out = tmp_path / "painted.nii.gz"
        layer.save(str(out), plugin=PLUGIN)
        saved = np.asanyarray(nib.load(out).dataobj)
        assert saved[tuple(target_file_index)] == 5
        assert (saved != labels).sum() == 1
        assert json.loads((tmp_path / "painted.json").read_text()) == {"kind": "labels", "rater": "3"}
    out2 = tmp_path / "unchanged.nii.gz"
    (viewer.open(src, plugin=PLUGIN)[0]).save(str(out2), plugin=PLUGIN)
    _same_file(src, out2)


def test_kinds_and_hints(make_napari_viewer, tmp_path):
    rng = np.random.default_rng(1)
    aff = AFFINES["ras"]
    soft = _save(tmp_path / "truth_soft.nii.gz", rng.random(SHAPE).astype(np.float32), aff)
    many = _save(tmp_path / "ct.nii.gz", rng.integers(-1000, 2000, SHAPE).astype(np.int16), aff)
    few = _save(tmp_path / "anything.nii.gz", rng.integers(0, 4, SHAPE).astype(np.uint8), aff)
    atlas = _save(tmp_path / "aseg.nii.gz", rng.integers(0, 200, SHAPE).astype(np.int16), aff)
    forced = _save(tmp_path / "forced.nii.gz", rng.integers(0, 4, SHAPE).astype(np.uint8), aff)
    (tmp_path / "forced.json").write_text(json.dumps({"kind": "image"}))
    viewer = make_napari_viewer()
    kinds = {}
    for path in (soft, many, few, atlas, forced):
        (layer,) = viewer.open(path, plugin=PLUGIN)
        kinds[layer.name] = (type(layer).__name__, layer.metadata["softseg_kind"])
    assert kinds == {
        "truth_soft": ("Image", "soft"),
        "ct": ("Image", "image"),
        "anything": ("Labels", "labels"),
        "aseg": ("Labels", "labels"),  # many values, but the name says labels
        "forced": ("Image", "image"),
    }
    assert viewer.layers["truth_soft"].data.dtype == np.float32
    viewer.layers["truth_soft"].save(str(tmp_path / "soft_out.nii.gz"), plugin=PLUGIN)
    _same_file(soft, tmp_path / "soft_out.nii.gz")


def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    ok = _save(tmp_path / "ok.nii.gz", np.ones((20, 20, 20), np.float32), np.eye(4))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(ok.read_bytes()[:120])
    text = tmp_path / "text.nii"
    text.write_text("hello")
    four = _save(tmp_path / "four.nii.gz", np.zeros((3, 3, 3, 2), np.float32), np.eye(4))
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 1, 1] = np.nan
    nan_label = _save(tmp_path / "rater-9.nii.gz", nan, np.eye(4))
    return {
        "truncated": (cut, "cut.nii.gz: truncated or corrupt"),
        "not nifti": (text, "text.nii: not a NIfTI file"),
        "4D": (four, "four.nii.gz: expected a 3D volume"),
        "NaN label": (nan_label, "rater-9.nii.gz: label contains 1 NaN/Inf voxels"),
    }


def test_bad_files_show_a_notification_and_open_nothing(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    for case, (path, message) in _broken_files(tmp_path).items():
        before = len(notes)
        layers = viewer.open(path, plugin=PLUGIN)
        assert layers == [], case
        assert len(notes) == before + 1, case
        assert message in notes[-1], (case, notes[-1])
        assert "\n" not in notes[-1]
    assert len(viewer.layers) == 0
    # napari itself refuses a missing path before any reader runs; our reader says it on one line
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        viewer.open(missing, plugin=PLUGIN)
    from napari_softseg._reader import read_nifti

    assert read_nifti(str(missing)) == [(None,)]
    assert "missing.nii.gz: no such file" in notes[-1]


def test_reader_ignores_other_files():
    from napari_softseg._reader import get_reader

    assert get_reader("image.png") is None
    assert get_reader(["a.nii.gz", "b.tif"]) is None
    assert callable(get_reader("A.NII.GZ"))


def test_writer_errors_are_notified_and_nothing_is_written(make_napari_viewer, tmp_path, notes):
    from napari_softseg._writer import write_image

    viewer = make_napari_viewer()
    src = _save(tmp_path / "img.nii.gz", np.ones(SHAPE, np.float32), AFFINES["lps"])
    (layer,) = viewer.open(src, plugin=PLUGIN)
    attrs = layer.as_layer_data_tuple()[1]
    assert write_image(str(tmp_path / "nowhere" / "x.nii.gz"), layer.data, attrs) == []
    assert "does not exist" in notes[-1]
    assert write_image(str(tmp_path / "cropped.nii.gz"), layer.data[:2], attrs) == []
    assert "was the layer resized?" in notes[-1]
    if os.path.isdir("/proc/1") and not os.access("/proc/1", os.W_OK):  # unwritable even for root
        assert write_image("/proc/1/x.nii.gz", layer.data, attrs) == []
        assert "is not writable" in notes[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz"]


def test_save_layer_as_nifti_refuses_overwrite_and_handles_plain_layers(make_napari_viewer, tmp_path):
    from napari_softseg._layers import save_layer_as_nifti
    from softseg.errors import InputError

    viewer = make_napari_viewer()
    data = np.random.default_rng(2).random((5, 6, 7)).astype(np.float32)
    layer = viewer.add_image(data, scale=(2.0, 0.5, 0.75), translate=(10.0, -3.0, 4.0), name="plain")
    out = save_layer_as_nifti(layer, tmp_path / "plain.nii.gz")
    with pytest.raises(InputError, match="already exists"):
        save_layer_as_nifti(layer, out)
    (reopened,) = viewer.open(out, plugin=PLUGIN)
    assert np.array_equal(reopened.data, data)
    assert np.allclose(reopened.scale, layer.scale)
    assert np.allclose(reopened.translate, layer.translate)


def test_sample_data_layers_match_the_engine_phantom(make_napari_viewer, tmp_path):
    from softseg.phantom import phantom

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "phantom")
    names = [layer.name for layer in viewer.layers]
    assert names[:2] == ["phantom image", "truth (soft)"]
    raters = [layer for layer in viewer.layers if type(layer).__name__ == "Labels"]
    assert len(raters) == 4
    ph = phantom(seed=0)
    assert viewer.layers["truth (soft)"].data.shape == (ph.shape[2], ph.shape[1], ph.shape[0])
    out = tmp_path / "rater-2.nii.gz"
    viewer.layers["rater-2"].save(str(out), plugin=PLUGIN)
    saved = nib.load(out)
    assert np.array_equal(np.asanyarray(saved.dataobj), ph.raters[1])
    assert np.allclose(saved.affine, ph.affine)
    assert json.loads((tmp_path / "rater-2.json").read_text())["rater"] == "2"


def test_confidence_scale_travels_through_the_sidecar(make_napari_viewer, tmp_path):
    from softseg.confidence import ConfidenceScale

    scale = ConfidenceScale.from_paper()
    levels = np.zeros(SHAPE, np.uint8)
    levels[2:6, 2:6, 1:4] = 3
    levels[3:5, 3:5, 2] = 1
    src = _save(tmp_path / "rater-A.nii.gz", levels, AFFINES["lps"])
    viewer = make_napari_viewer()
    (layer,) = viewer.open(src, plugin=PLUGIN)
    layer.metadata["softseg_confidence"] = scale.as_dict()
    out = tmp_path / "rater-A-painted.nii.gz"
    layer.save(str(out), plugin=PLUGIN)
    side = json.loads((tmp_path / "rater-A-painted.json").read_text())
    assert side["rater"] == "A" and side["kind"] == "labels"
    assert ConfidenceScale.from_dict(side["softseg_confidence"]) == scale
    (again,) = viewer.open(out, plugin=PLUGIN)
    assert type(again).__name__ == "Labels"
    assert again.metadata["softseg_rater"] == "A"
    assert ConfidenceScale.from_dict(again.metadata["softseg_confidence"]) == scale
    _same_file(src, out)


@pytest.mark.parametrize("orientation", ["lps", "oblique", "coronal"])
def test_every_opened_file_labels_the_slice_slider_with_its_anatomical_axis(make_napari_viewer, tmp_path, orientation):
    """Issue 11 #10: not only the demo; files in any orientation, images and rater maps alike."""
    from napari_softseg._layers import AXIS_LABELS

    affine = AFFINES[orientation]
    img = _save(tmp_path / "t2.nii.gz", np.random.default_rng(3).random(SHAPE).astype(np.float32) * 100, affine)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:4, 2:4, 1:3] = 1
    rater = _save(tmp_path / "rater-7.nii.gz", labels, affine)
    viewer = make_napari_viewer()
    (image_layer,) = viewer.open(img, plugin=PLUGIN)
    assert tuple(viewer.dims.axis_labels) == AXIS_LABELS == ("axial I→S", "coronal A→P", "sagittal R→L")
    assert tuple(image_layer.units) == ("mm", "mm", "mm") or all(str(u) in ("mm", "millimeter") for u in image_layer.units)
    (rater_layer,) = viewer.open(rater, plugin=PLUGIN)
    assert tuple(rater_layer.axis_labels) == AXIS_LABELS
    assert image_layer.metadata["softseg_role"] == "image" and rater_layer.metadata["softseg_role"] == "rater"
    # the slice slider runs along the axis closest to superior: its label says so
    axial = _axial_axis(affine)
    assert image_layer.data.shape[0] == SHAPE[axial] and viewer.dims.axis_labels[0].startswith("axial")


def test_sidecars_of_every_shape_are_read_through_the_one_schema(make_napari_viewer, tmp_path, notes):
    """Old prediction sidecars ("probability"/"mask"), autosave ones, and broken ones (issue 13 #6)."""
    rng = np.random.default_rng(4)
    aff = AFFINES["lps"]
    prob = _save(tmp_path / "pred.nii.gz", rng.random(SHAPE).astype(np.float32), aff)
    (tmp_path / "pred.json").write_text(json.dumps({"model": "m.safetensors", "threshold": 0.4, "kind": "probability"}))
    mask = _save(tmp_path / "pred_mask.nii.gz", (rng.random(SHAPE) > 0.5).astype(np.uint8), aff)
    (tmp_path / "pred_mask.json").write_text(json.dumps({"model": "m.safetensors", "kind": "mask"}))
    auto = _save(tmp_path / "snapshot.nii.gz", rng.integers(0, 3, SHAPE).astype(np.uint8), aff)
    (tmp_path / "snapshot.json").write_text(json.dumps({
        "format": "softseg-autosave/2", "rater": "dr.smith", "confidence_scale": {"values": [0.5, 1.0]},
    }))
    broken = _save(tmp_path / "rater-5.nii.gz", np.zeros(SHAPE, np.uint8), aff)
    (tmp_path / "rater-5.json").write_text(json.dumps(["not", "an", "object"]))
    viewer = make_napari_viewer()
    (p,) = viewer.open(prob, plugin=PLUGIN)
    (m,) = viewer.open(mask, plugin=PLUGIN)
    (a,) = viewer.open(auto, plugin=PLUGIN)
    assert (type(p).__name__, p.metadata["softseg_kind"]) == ("Image", "soft")
    assert type(m).__name__ == "Labels"
    assert type(a).__name__ == "Labels" and a.metadata["softseg_rater"] == "dr.smith"
    assert a.metadata["softseg_confidence"]["levels"][0]["value"] == 0.5
    assert viewer.open(broken, plugin=PLUGIN) == []
    assert "rater-5.json" in notes[-1] and "JSON object" in notes[-1] and "\n" not in notes[-1]
    # a save keeps what the sidecar said
    a.save(str(tmp_path / "again.nii.gz"), plugin=PLUGIN)
    side = json.loads((tmp_path / "again.json").read_text())
    assert side["rater"] == "dr.smith" and side["kind"] == "labels" and side["softseg_confidence"]["levels"][1]["value"] == 1.0


def test_rater_files_open_in_distinct_colours(make_napari_viewer, tmp_path):
    """Issue 11 #8: rater-1 .. rater-4 opened with File > Open, no widget needed."""
    viewer = make_napari_viewer()
    top = []
    for r in range(1, 5):
        lv = np.zeros(SHAPE, np.uint8)
        lv[1:4, 1:4, 1:3] = 1
        lv[2, 2, 2] = 3
        (layer,) = viewer.open(_save(tmp_path / f"rater-{r}.nii.gz", lv, AFFINES["lps"]), plugin=PLUGIN)
        cmap = layer.colormap.color_dict
        assert cmap[0][3] == 0 and cmap[1][3] < cmap[3][3] == 1.0  # stronger colour for a higher level
        top.append(tuple(np.round(cmap[3][:3], 3)))
    assert len(set(top)) == 4
