"""The Train dock from open layers with K = 3 classes (issue 14): two raters' code layers
(one Labels layer each, codes ``(class - 1) * L + level``) or per-class layers of one rater (the
MNI sample's ``rater-<id> · <class>``) -> a 3-class model.

Tiny synthetic 3-tissue volume (display 12 x 16 x 16), width 8, depth 2, 1 epoch, CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg._metadata import CLASS_KEY, CONFIDENCE_KEY, RATER_KEY, set_role
from softseg.class_levels import class_level_maps
from softseg.confidence import ConfidenceScale
from softseg.modelfile import read_card

CLASSES = ["grey matter", "white matter", "csf"]
SCALE = ConfidenceScale((0.5, 1.0))  # two levels: L = 2
SHAPE = (12, 16, 16)


def _tissues():
    """Image and each voxel's tissue (0 background, 1..3) on concentric shells."""
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    r = np.sqrt((y - 7.5) ** 2 + (x - 7.5) ** 2)
    tissue = np.select([r < 3, r < 5, r < 7], [2, 1, 3], 0).astype(np.uint8)
    rng = np.random.default_rng(0)
    image = np.choose(tissue, [0.0, 0.6, 1.0, 0.3]).astype(np.float32) + 0.05 * rng.normal(size=SHAPE)
    return image.astype(np.float32), tissue


def _codes(tissue, seed):
    """A rater's codes: the tissue at level 2, level 1 on a random tenth of the voxels."""
    level = np.where(np.random.default_rng(seed).random(SHAPE) < 0.1, 1, 2)
    return np.where(tissue > 0, (tissue.astype(np.int64) - 1) * 2 + level, 0).astype(np.uint8)


def _add_code_raters(viewer):
    image, tissue = _tissues()
    viewer.add_image(image, name="T1")
    for i in (1, 2):
        meta = set_role({RATER_KEY: str(i), CLASS_KEY: list(CLASSES), CONFIDENCE_KEY: SCALE.as_dict()},
                        "rater")
        viewer.add_labels(_codes(tissue, i), name=f"rater-{i}", metadata=meta)
    return image, tissue


def _tiny(widget, tmp_path, targets):
    viewer = widget._viewer
    widget.set_layers([viewer.layers["T1"]], [viewer.layers[t] for t in targets])
    widget.fusion.value = "average"
    widget.epochs.value = 1
    widget.patience.value = 50
    widget.batch_size.value = 4
    widget.crop.value = 16
    widget.depth.value = 2
    widget.unet_width.value = 8
    widget.device.value = "cpu"
    widget.output.value = tmp_path / "model.safetensors"


@pytest.mark.slow
def test_three_class_code_layers_train_a_three_class_model(make_napari_viewer, open_widget,
                                                           qtbot, tmp_path):
    from softseg.data import load_subject, scan_dataset
    from softseg.predict import predict_volume

    viewer = make_napari_viewer()
    image, tissue = _add_code_raters(viewer)
    widget = open_widget(viewer, "train")
    _tiny(widget, tmp_path, ["rater-1", "rater-2"])
    with qtbot.waitSignal(widget.finished, timeout=300_000) as blocker:
        widget.train_button.clicked.emit()
    outcome = blocker.args[0]
    assert outcome.ok, (outcome.error_line, widget.process.stderr_tail if widget.process else "")
    model = tmp_path / "model.safetensors"
    card = read_card(model)
    assert tuple(card.classes) == tuple(CLASSES)
    assert len(card.thresholds) == 3

    # the training folder holds each rater's classes as the engine reads them: background first,
    # then level 2 -> 1.0 and level 1 -> 0.5 where the rater painted that tissue
    info = scan_dataset(card.dataset)
    assert info.classes == tuple(CLASSES)
    got = np.concatenate([load_subject(s).raters for s in info.subjects], axis=2)
    order = list(info.subjects[0].rater_ids)
    for i in (1, 2):
        codes = _codes(tissue, i)
        value = np.where(codes == 0, 0.0, np.where(codes % 2 == 1, 0.5, 1.0))
        expected = np.zeros((4, *SHAPE))
        for c in (1, 2, 3):
            expected[c] = np.where(tissue == c, value, 0.0)
        expected[0] = 1.0 - expected[1:].sum(0)
        np.testing.assert_allclose(got[order.index(f"rater-{i}")], expected, atol=1e-6)

    p = predict_volume(model, image, affine=np.eye(4), device="cpu")
    assert p.shape == (4, *SHAPE)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)

    # the Predict path of the dock: one soft layer per class and the argmax labels
    with qtbot.waitSignal(widget.predict_current().finished, timeout=120_000):
        pass
    names = [lyr.name for lyr in viewer.layers]
    for name in CLASSES:
        assert any(n.startswith("T1 · ") and n.endswith(f" · {name}") for n in names), names
    assert any(n.startswith("T1 · ") and n.endswith(" · labels") for n in names), names


def test_per_class_layers_of_a_rater_are_grouped_like_its_code_layer(make_napari_viewer):
    """The MNI sample's layout (``rater-<id> · <class>``, CLASS_KEY {"index", "name"}) gives
    each rater the same K maps as one code layer painted with the same levels."""
    from napari_softseg.widgets.train._inputs import snapshot
    from napari_softseg._metadata import layer_uid

    viewer = make_napari_viewer()
    _image, tissue = _add_code_raters(viewer)
    parts = []
    for i in (1, 2):
        levels = class_level_maps(_codes(tissue, i), n_classes=3, n_levels=2)
        for c in (3, 1, 2):  # layer order is not class order
            meta = {RATER_KEY: f"r{i}", CLASS_KEY: {"index": c, "name": CLASSES[c - 1]},
                    CONFIDENCE_KEY: SCALE.as_dict()}
            parts.append(viewer.add_labels(levels[c - 1], name=f"reader-{i} · {CLASSES[c - 1]}",
                                           metadata=meta))
    image_uid = [layer_uid(viewer.layers["T1"])]
    snap = snapshot(viewer.layers, image_uid, [layer_uid(p) for p in parts], candidate="softseg")
    assert snap.classes == tuple(CLASSES)
    assert list(snap.targets) == ["reader-1", "reader-2"]
    for i in (1, 2):
        expected = np.zeros((3, *SHAPE), np.uint8)
        codes = _codes(tissue, i)
        for c in (1, 2, 3):
            expected[c - 1] = np.where(tissue == c, np.where(codes % 2 == 1, 1, 2), 0)
        np.testing.assert_array_equal(snap.targets[f"reader-{i}"], expected)
        assert snap.sidecars[f"reader-{i}"][CONFIDENCE_KEY] == SCALE.as_dict()
    coded = snapshot(viewer.layers, image_uid,
                     [layer_uid(viewer.layers[f"rater-{i}"]) for i in (1, 2)], candidate="softseg")
    assert coded.classes == tuple(CLASSES)
    for i in (1, 2):
        np.testing.assert_array_equal(coded.targets[f"rater-{i}"], snap.targets[f"reader-{i}"])


def test_mixed_or_unequal_class_targets_are_one_line_refusals(make_napari_viewer, open_widget,
                                                              tmp_path):
    viewer = make_napari_viewer()
    _image, tissue = _add_code_raters(viewer)
    viewer.add_labels((tissue > 0).astype(np.uint8), name="whole head")  # one structure
    two = set_role({RATER_KEY: "3", CLASS_KEY: CLASSES[:2], CONFIDENCE_KEY: SCALE.as_dict()}, "rater")
    viewer.add_labels(np.minimum(_codes(tissue, 3), 4), name="rater-3", metadata=two)
    widget = open_widget(viewer, "train")
    _tiny(widget, tmp_path, ["rater-1", "whole head"])
    widget.train_button.clicked.emit()
    assert not widget.running
    status = widget.status.value
    assert "mix one-structure layers (whole head)" in status and "\n" not in status
    _tiny(widget, tmp_path, ["rater-1", "rater-3"])
    widget.train_button.clicked.emit()
    assert not widget.running
    assert "rater-3 holds the classes grey matter, white matter but rater-1 holds grey matter, " \
        "white matter, csf" in widget.status.value
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.training-data").exists()


def test_the_mni_sample_raters_become_four_three_class_targets(make_napari_viewer, tmp_path):
    """The demo's layers (``rater-<id> · <class>``, binary per class) as the Train dock gathers
    and writes them: 4 raters x 3 classes, read back by the engine with the sample's classes."""
    from napari_softseg._metadata import layer_uid
    from napari_softseg._sample_data import mni_layers
    from napari_softseg.widgets.train._inputs import snapshot
    from softseg.data import scan_dataset
    from softseg.layers_dataset import write_layers_dataset

    viewer = make_napari_viewer()
    for data, kwargs, kind in mni_layers():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    raters = [lyr for lyr in viewer.layers if lyr.name.startswith("rater-")]
    snap = snapshot(viewer.layers, [layer_uid(viewer.layers["T1w"])],
                    [layer_uid(lyr) for lyr in raters], candidate="softseg")
    assert snap.classes == ("grey matter", "white matter", "csf")
    assert list(snap.targets) == ["rater-1", "rater-2", "rater-3", "rater-4"]
    for lyr in raters:
        k = lyr.metadata[CLASS_KEY]["index"]
        np.testing.assert_array_equal(snap.targets[lyr.name.split(" · ")[0]][k - 1], lyr.data)
    folder = write_layers_dataset(tmp_path / "ds", snap.channels, snap.targets, snap.geometry,
                                  sidecars=snap.sidecars, classes=snap.classes)
    info = scan_dataset(folder)
    assert info.classes == snap.classes
    assert info.subjects[0].rater_kinds == ("classes",) * 4
