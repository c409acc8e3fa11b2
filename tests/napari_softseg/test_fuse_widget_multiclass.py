"""The Fuse widget's multi-class face (issue 14): four raters paint three classes with confidence
in one Labels layer each (codes ``(class - 1) * L + level``); the widget's label map, class
probabilities and confusion matrices equal ``softseg fuse --classes 3 --json`` on the same
raters' files, SimpleITK's MultiLabelSTAPLE and LabelVoting (independent references) and the
class fractions computed by hand; its saved files are the ones the command writes; integer label
maps opened from files take their classes from a dataset.json.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from annotate_support import click
from scipy import ndimage

from softseg.class_levels import class_level_maps, encode, label_map
from softseg.confidence import ConfidenceScale
from softseg.geometry import DisplayGeometry
from softseg.io import save_volume

from napari_softseg._layers import layer_data_tuple
from napari_softseg._metadata import CLASS_KEY, CONFIDENCE_KEY, RATER_KEY, role

sitk = pytest.importorskip("SimpleITK")

SHAPE = (26, 30, 18)  # file order
AFFINE = np.array([[0.0, 0.0, -1.5, 20.0], [1.1, 0.0, 0.0, -15.0], [0.0, -0.9, 0.0, 12.0], [0.0, 0.0, 0.0, 1.0]])
CLASSES = ("grey matter", "white matter", "csf")
SCALE = ConfidenceScale.default()  # levels 1..3 -> 1/3, 2/3, 1
N_RATERS = 4


def _painting() -> tuple[np.ndarray, np.ndarray]:
    """(labels (R, *SHAPE) 0..3, codes (R, *SHAPE)): nested shells that each rater draws a bit
    larger or smaller and a bit off, with a few stray voxels; level 1 on a class's border, 2 one
    voxel in, 3 deeper."""
    rng = np.random.default_rng(11)
    z = np.indices(SHAPE, sparse=True)
    r2 = sum(((zi - s / 2) / (s / 3)) ** 2 for zi, s in zip(z, SHAPE))
    labels, codes = [], []
    for j, shift in enumerate((0.0, 0.1, -0.08, 0.05)):
        lab = np.zeros(SHAPE, np.uint8)
        lab[r2 < 1.0 + shift] = 3
        lab[r2 < 0.6 + shift] = 1
        lab[r2 < 0.25 + shift] = 2
        lab = np.roll(lab, j % 2, axis=0)
        stray = rng.random(SHAPE) < 0.01
        lab[stray] = rng.integers(0, 4, int(stray.sum()))
        level = np.zeros(SHAPE, np.uint8)
        for c in (1, 2, 3):
            mask = lab == c
            inner = ndimage.binary_erosion(mask)
            level[mask] = 1
            level[inner] = 2
            level[ndimage.binary_erosion(inner)] = 3
        code = np.zeros(SHAPE, np.uint8)
        for c in (1, 2, 3):
            for lv in (1, 2, 3):
                code[(lab == c) & (level == lv)] = encode(c, lv, n_levels=3)
        labels.append(lab)
        codes.append(code)
    return np.stack(labels), np.stack(codes)


@pytest.fixture(scope="module")
def painted(tmp_path_factory):
    """The raters' codes, and their files: integer label maps ``rater-<j>.nii.gz`` and per-class
    level files ``rater-<j>_label-<k>.nii.gz`` (scale and class in the sidecar), a dataset.json."""
    labels, codes = _painting()
    folder = tmp_path_factory.mktemp("classes")
    label_files, class_files = [], []
    for j in range(N_RATERS):
        assert np.array_equal(label_map(codes[j], n_classes=3, n_levels=3), labels[j])
        label_files.append(folder / "labels" / f"rater-{j + 1}.nii.gz")
        label_files[-1].parent.mkdir(exist_ok=True)
        save_volume(label_files[-1], labels[j], affine=AFFINE)
        for k, level_map in enumerate(class_level_maps(codes[j], n_classes=3, n_levels=3), start=1):
            class_files.append(folder / "levels" / f"rater-{j + 1}_label-{k}.nii.gz")
            class_files[-1].parent.mkdir(exist_ok=True)
            side = {"rater": str(j + 1), "kind": "labels", "softseg_confidence": SCALE.as_dict(), "class": CLASSES[k - 1]}
            save_volume(class_files[-1], level_map, affine=AFFINE, sidecar=side)
    (folder / "labels" / "dataset.json").write_text(json.dumps({"classes": list(CLASSES)}))
    return {"labels": labels, "codes": codes, "label_files": label_files, "class_files": class_files,
            "folder": folder}


def _code_layers(viewer, codes):
    """One Labels layer per rater holding its class codes, the classes and scale in its metadata."""
    geometry = DisplayGeometry.from_affine(AFFINE, SHAPE)
    layers = []
    for j, code in enumerate(codes):
        meta = {CLASS_KEY: list(CLASSES), CONFIDENCE_KEY: SCALE.as_dict(), RATER_KEY: str(j + 1)}
        data, kwargs, _kind = layer_data_tuple(geometry.to_display(code), geometry, kind="labels",
                                               name=f"rater-{j + 1}", metadata=meta)
        layers.append(viewer.add_labels(data, **kwargs))
    return geometry, layers


def _cli(files, method, out, capsys, *extra):
    from softseg.cli import main

    capsys.readouterr()  # what the viewer printed before
    classes = [] if "--dataset-json" in extra else ["--classes", "3"]
    assert main(["fuse", *map(str, files), *classes, "--method", method, "-o", str(out), "--json", *extra]) == 0
    summary = json.loads(capsys.readouterr().out)
    fused = np.asarray(nib.load(out).dataobj)
    probs = [np.asarray(nib.load(p).dataobj) for p in summary.get("class_maps", [])]
    return summary, fused, probs


def _fuse(widget, qtbot, method):
    widget.method = method
    click(widget._run)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
    out = widget.last_output
    assert out is not None and out.method == method and out.multiclass, widget._message.value
    return out


def _layer_file(viewer, name, geometry):
    return geometry.from_display(np.asarray(viewer.layers[name].data))


def test_classes_painted_in_one_layer_equal_the_command_and_simpleitk(
        make_napari_viewer, open_widget, qtbot, tmp_path, capsys, painted):
    viewer = make_napari_viewer()
    geometry, layers = _code_layers(viewer, painted["codes"])
    widget = open_widget(viewer, "fuse")
    widget.set_raters(layers)
    assert widget._classes.value == 3 and widget.class_names() == CLASSES  # from the layers
    assert widget._method.choices == ("STAPLE", "average", "majority vote")
    labels = painted["labels"]

    # STAPLE with painted confidence: one class per voxel is needed; the widget offers the classes
    widget.method = "STAPLE"
    click(widget._run)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
    assert "needs one class per voxel" in widget._message.value
    assert not widget._switch.native.isHidden()
    click(widget._switch)
    assert widget._confidence.value is False

    # multi-label STAPLE of the painted classes == softseg fuse --classes 3 on the label maps
    out = _fuse(widget, qtbot, "STAPLE")
    summary, fused, probs = _cli(painted["label_files"], "staple", tmp_path / "cli.nii.gz", capsys)
    np.testing.assert_array_equal(_layer_file(viewer, "fused labels (STAPLE)", geometry), fused)
    for k, name in enumerate(CLASSES, start=1):
        layer = viewer.layers[f"STAPLE probability · {name}"]
        assert role(layer) == "staple_probability"
        np.testing.assert_array_equal(geometry.from_display(np.asarray(layer.data)), probs[k - 1])
    for j, rater in enumerate(summary["raters"]):
        np.testing.assert_allclose(out.result.confusion[j], rater["confusion"], rtol=1e-12, atol=0)
        shown = widget.confusion_matrix(f"rater-{j + 1}")
        np.testing.assert_allclose(shown, np.round(rater["confusion"], 4), atol=1e-12)
        np.testing.assert_allclose(widget.table_rows()[f"rater-{j + 1}"], np.round(np.diag(rater["confusion"]), 4))
    np.testing.assert_allclose(out.result.pairwise_dice, summary["pairwise_dice"], rtol=1e-12)
    assert [lyr.name for lyr in viewer.layers][-1] == "fused labels (STAPLE)"
    assert role(viewer.layers["fused labels (STAPLE)"]) == "fused"
    assert not widget._confusion.native.isHidden()

    # the whole volume == SimpleITK's MultiLabelSTAPLE (labels; confusion within 1e-6)
    widget._roi.value = "whole volume"
    out = _fuse(widget, qtbot, "STAPLE")
    filt = sitk.MultiLabelSTAPLEImageFilter()
    ref = sitk.GetArrayFromImage(filt.Execute([sitk.GetImageFromArray(r) for r in labels]))
    np.testing.assert_array_equal(_layer_file(viewer, "fused labels (STAPLE)", geometry), np.where(ref == 4, 0, ref))
    for j in range(N_RATERS):
        itk = np.array(filt.GetConfusionMatrix(j)).reshape(5, 4)  # rows: rater's label (+ undecided)
        np.testing.assert_allclose(out.result.confusion[j], itk[:4].T, atol=1e-6)
        np.testing.assert_allclose(out.result.confusion[j].sum(axis=1), 1.0, atol=1e-12)  # rows = true class

    # label vote == SimpleITK's LabelVoting where it is not tied (ties -> background)
    _fuse(widget, qtbot, "majority vote")
    vote = sitk.GetArrayFromImage(sitk.LabelVotingImageFilter().Execute([sitk.GetImageFromArray(r) for r in labels]))
    np.testing.assert_array_equal(_layer_file(viewer, "fused labels (majority vote)", geometry), np.where(vote == 4, 0, vote))
    assert not [lyr.name for lyr in viewer.layers if "probability" in lyr.name]  # a vote has none
    summary, fused, _ = _cli(painted["label_files"], "majority", tmp_path / "vote.nii.gz", capsys, "--roi", "none")
    np.testing.assert_array_equal(_layer_file(viewer, "fused labels (majority vote)", geometry), fused)


def test_class_average_of_painted_confidence(make_napari_viewer, menu_widget, qtbot, tmp_path, capsys, painted):
    """The average uses each level's value: by hand, and == softseg fuse on the per-class level files."""
    viewer = make_napari_viewer()
    geometry, layers = _code_layers(viewer, painted["codes"])
    widget = menu_widget(viewer, "fuse")
    widget.set_raters(layers)
    widget._roi.value = "whole volume"
    out = _fuse(widget, qtbot, "average")
    assert out.use_confidence
    # by hand: class c of rater j = the scale's value of its level there; background = 1 - that
    lut = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    probs = np.zeros((N_RATERS, 4, *SHAPE))
    for j, code in enumerate(painted["codes"]):
        cls, level = np.where(code > 0, (code.astype(int) - 1) // 3 + 1, 0), np.where(code > 0, (code.astype(int) - 1) % 3 + 1, 0)
        for c in (1, 2, 3):
            probs[j, c] = np.where(cls == c, lut[level], 0.0)
        probs[j, 0] = 1.0 - probs[j, 1:].sum(axis=0)
    mean = probs.mean(axis=0)
    for k, name in enumerate(CLASSES, start=1):
        layer = viewer.layers[f"average · {name}"]
        assert role(layer) == "fused"
        np.testing.assert_allclose(geometry.from_display(np.asarray(layer.data)), mean[k], atol=1e-6)
    # the label map: the class of the largest fraction; ties -> background, also where float32
    # rounding of 1 - 1/3 against 2/3 separates an exact tie (fusion.TIE_TOLERANCE)
    best = mean.max(axis=0)
    tied = (np.abs(mean - best) < 1e-6).sum(axis=0) > 1
    assert tied.any()  # the painted raters hold such 50/50 voxels
    shown = _layer_file(viewer, "fused labels (average)", geometry)
    np.testing.assert_array_equal(shown, np.where(tied, 0, mean.argmax(axis=0)))
    # soft confusion by hand: share of true class t (the fractions) that rater j gives class s
    for j in range(N_RATERS):
        theta = np.einsum("tv,sv->ts", mean.reshape(4, -1), probs[j].reshape(4, -1)) / mean.reshape(4, -1).sum(axis=1)[:, None]
        np.testing.assert_allclose(out.result.confusion[j], theta, atol=1e-6)
    # the command on the per-class level files gives the same maps and numbers
    summary, fused, cli_probs = _cli(painted["class_files"], "average", tmp_path / "avg.nii.gz", capsys, "--roi", "none")
    np.testing.assert_array_equal(_layer_file(viewer, "fused labels (average)", geometry), fused)
    for k, name in enumerate(CLASSES, start=1):
        np.testing.assert_array_equal(_layer_file(viewer, f"average · {name}", geometry), cli_probs[k - 1])
    for j, rater in enumerate(summary["raters"]):
        np.testing.assert_allclose(out.result.confusion[j], rater["confusion"], rtol=1e-12, atol=0)

    # the same raters as per-class layers (one class of one rater each, as the MNI sample opens)
    per_class = []
    for j, code in enumerate(painted["codes"]):
        for k, level_map in enumerate(class_level_maps(code, n_classes=3, n_levels=3), start=1):
            meta = {CLASS_KEY: {"index": k, "name": CLASSES[k - 1]}, CONFIDENCE_KEY: SCALE.as_dict(),
                    RATER_KEY: str(j + 1)}
            data, kwargs, _kind = layer_data_tuple(geometry.to_display(level_map), geometry, kind="labels",
                                                   name=f"rater-{j + 1} · {CLASSES[k - 1]}", metadata=meta)
            per_class.append(viewer.add_labels(data, **kwargs))
    widget.set_raters(per_class[:3])  # one rater's three classes
    assert widget._classes.value == 3
    widget.set_raters(per_class[::3])  # every rater's grey matter: one structure
    assert widget._classes.value == 1
    widget.set_raters(per_class)
    assert widget._classes.value == 3 and widget.class_names() == CLASSES
    again = _fuse(widget, qtbot, "average")
    assert again.names == tuple(f"rater-{j}" for j in range(1, 5))
    np.testing.assert_array_equal(again.result.probability, out.result.probability)
    np.testing.assert_array_equal(again.result.fused, out.result.fused)
    for extra in per_class:
        viewer.layers.remove(extra)
    widget.set_raters(layers)
    out = _fuse(widget, qtbot, "average")

    # Save writes the command's files; none of them is offered as a rater when opened again
    widget._save_path.value = tmp_path / "widget" / "fused_average.nii.gz"
    (tmp_path / "widget").mkdir()
    written = widget.save()
    assert [p.name for p in written] == ["fused_average.nii.gz", "fused_average.json"] + [
        f"fused_average_label-{k}.nii.gz" for k in (1, 2, 3)]
    np.testing.assert_array_equal(np.asarray(nib.load(written[0]).dataobj), fused)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(np.asarray(nib.load(written[1 + k]).dataobj), cli_probs[k - 1])
    side = json.loads(written[1].read_text())["fusion"]
    assert side["classes"] == ["background", *CLASSES] and side["n_classes"] == 3
    # (the widget sums in display order, the command in file order: equal to rounding)
    np.testing.assert_allclose([r["confusion"] for r in side["raters"]], [r["confusion"] for r in summary["raters"]],
                               rtol=1e-12, atol=1e-15)
    for path in (written[0], *written[2:]):
        viewer.open(str(path), plugin="napari-softseg")
    offered = widget.offered_raters()
    assert offered == [f"rater-{j}" for j in range(1, 5)]
    widget._classes.value = 1  # one structure: soft Image layers are offered, the class maps are not
    assert widget.offered_raters() == offered


def test_label_maps_from_files_with_a_dataset_json(make_napari_viewer, menu_widget, qtbot, tmp_path, capsys, painted):
    viewer = make_napari_viewer()
    layers = [viewer.open(str(p), plugin="napari-softseg")[0] for p in painted["label_files"]]
    widget = menu_widget(viewer, "fuse")
    widget.set_raters(layers)
    assert widget._classes.value == 1
    # as one structure, label maps 0..3 are refused with what to do
    widget.method = "average"
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
    assert "number of classes" in widget._message.value and "--" not in widget._message.value
    assert widget.load_dataset_json(painted["folder"] / "labels" / "dataset.json") == CLASSES
    assert widget._classes.value == 3 and "1 grey matter" in widget._class_names.value
    widget._per_class.value = True  # one disagreement layer per class too
    out = _fuse(widget, qtbot, "STAPLE")
    for k, name in enumerate(CLASSES, start=1):
        layer = viewer.layers[f"disagreement · {name}"]
        assert role(layer) == "disagreement" and not layer.visible
        np.testing.assert_array_equal(np.asarray(layer.data), out.result.class_disagreement[k])
        votes = np.mean([np.asarray(lyr.data) == k for lyr in layers], axis=0)  # share of raters voting k
        by_hand = -(votes * np.log(np.where(votes > 0, votes, 1)) + (1 - votes) * np.log(np.where(votes < 1, 1 - votes, 1)))
        np.testing.assert_allclose(np.asarray(layer.data), by_hand, atol=1e-6)
    summary, fused, probs = _cli(painted["label_files"], "staple", tmp_path / "cli.nii.gz", capsys,
                                 "--dataset-json", str(painted["folder"] / "labels" / "dataset.json"))
    geometry = DisplayGeometry.from_metadata(layers[0].metadata)
    np.testing.assert_array_equal(_layer_file(viewer, "fused labels (STAPLE)", geometry), fused)
    np.testing.assert_array_equal(_layer_file(viewer, "STAPLE probability · csf", geometry), probs[2])
    for j, rater in enumerate(summary["raters"]):
        np.testing.assert_allclose(out.result.confusion[j], rater["confusion"], rtol=1e-12, atol=0)
    # a label beyond the classes is refused naming the layer
    widget._classes.value = 2
    widget.set_raters(layers)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
    assert "'rater-1'" in widget._message.value and "0..3" in widget._message.value
