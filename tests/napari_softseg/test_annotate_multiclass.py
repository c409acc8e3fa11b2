"""Multi-class confidence painting in one rater layer (issue 14 #1): class keys, level keys, real
strokes, colours, status bar, per-class export and reopening, label maps with a dataset.json,
scale changes, recovery across two viewer runs.

Codes are checked against the contract by hand: class c at level l is ``(c - 1) * L + l``.
"""

import json

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtCore import Qt

from softseg.autosave import list_recoveries
from softseg.class_levels import class_level_maps, class_soft_maps
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import save_volume
from softseg.sidecar import read_rater_sidecar

from napari_softseg._metadata import CLASS_KEY, layer_uid
from annotate_support import PLUGIN, SHAPE, Dialogs, click, key, show, stroke, type_text
from annotate_support import image_file, recovery_root, setup  # noqa: F401 (pytest fixtures)

CLASSES = ("grey matter", "white matter", "csf")
ALT = Qt.KeyboardModifier.AltModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier



def _code(c, level, n_levels=3):
    return (c - 1) * n_levels + level


def test_paint_two_classes_with_confidence_keys_strokes_colours_status(setup, qtbot):
    viewer, widget = setup
    type_text(widget._rater_id, "AB")
    type_text(widget._classes, "grey matter, white matter, csf")
    click(widget._add)
    layer = viewer.layers["AB"]
    assert layer.metadata[CLASS_KEY] == list(CLASSES)
    assert layer.data.dtype == np.uint8 and not layer.data.any()
    assert len(widget._class_bar.buttons) == 3 and not widget._class_bar.isHidden()
    assert "Alt-1..Alt-3" in widget._levels_title.value
    canvas = show(viewer, qtbot)
    z = layer.data.shape[0] // 2
    layer.brush_size = 3

    # Alt-2 = white matter, 3 = high: a real stroke paints code (2-1)*3+3 = 6
    key(canvas, Qt.Key.Key_2, modifier=ALT)
    key(canvas, Qt.Key.Key_3)
    assert layer.selected_label == _code(2, 3) and widget._class_bar.buttons[1].isChecked()
    assert widget._level_bar.buttons[3].isChecked()
    stroke(viewer, canvas, layer, z, 10, 8, 30)
    # Alt-1 = grey matter keeps the level; 1 = low: code 1
    key(canvas, Qt.Key.Key_1, modifier=ALT)
    assert layer.selected_label == _code(1, 3)
    key(canvas, Qt.Key.Key_1)
    assert layer.selected_label == _code(1, 1)
    stroke(viewer, canvas, layer, z, 20, 8, 30)
    assert set(np.unique(layer.data).tolist()) == {0, _code(2, 3), _code(1, 1)}
    assert (layer.data[z, 10, 10:29] == _code(2, 3)).all()
    assert (layer.data[z, 20, 10:29] == _code(1, 1)).all()
    # C / Shift-C cycle the classes (wrapping), keeping the level; the eraser is 0 as before
    key(canvas, Qt.Key.Key_C)
    assert layer.selected_label == _code(2, 1)
    key(canvas, Qt.Key.Key_C, times=2)
    assert layer.selected_label == _code(1, 1)
    key(canvas, Qt.Key.Key_C, modifier=SHIFT)
    assert layer.selected_label == _code(3, 1)
    key(canvas, Qt.Key.Key_2)
    assert layer.selected_label == _code(3, 2) and widget._class_bar.buttons[2].isChecked()
    key(canvas, Qt.Key.Key_9, modifier=ALT)  # no class 9: nothing changes
    assert layer.selected_label == _code(3, 2)
    click(widget._class_bar.buttons[0])  # the class buttons do what Alt-<k> does
    assert layer.selected_label == _code(1, 2)
    key(canvas, Qt.Key.Key_0)
    assert layer.mode == "erase"

    # colours: each class its hue, colour strength by level
    cmap = layer.colormap.color_dict
    for c in (1, 2, 3):
        alphas = [cmap[_code(c, lv)][3] for lv in (1, 2, 3)]
        assert alphas[0] < alphas[1] < alphas[2] == 1.0
    assert not np.allclose(cmap[_code(1, 3)][:3], cmap[_code(2, 3)][:3])
    # the status bar names class, level and soft value under the cursor
    viewer.mouse_over_canvas = True
    for (y, x), text in (((10, 12), "6; class: white matter, confidence: high, soft value: 1"),
                         ((20, 12), "1; class: grey matter, confidence: low, soft value: 0.333")):
        viewer.cursor.position = tuple(layer.data_to_world((z, y, x)))
        viewer.update_status_from_cursor()
        assert text in str(viewer.status)


def test_codes_beyond_the_classes_are_refused(setup):
    viewer, widget = setup
    layer = widget.add_rater_layer("AB", classes=CLASSES)
    layer.selected_label = 10  # 3 classes x 3 levels: codes 1..9
    assert layer.selected_label == 9
    with pytest.raises(InputError, match="must be unique"):
        widget.add_rater_layer("CD", classes=("lesion", "lesion"))
    with pytest.raises(InputError, match="file-name key"):
        widget.add_rater_layer("CD", classes=("a/b", "c"))
    with pytest.raises(InputError, match="exists already"):
        widget.add_rater_layer("AB", classes=CLASSES)


def _paint_codes(layer):
    """Voxels of every class at several levels on two slices (napari's own paint)."""
    layer.brush_size = 3
    z = layer.data.shape[0] // 2
    spots = {}
    for i, (c, lv) in enumerate(((1, 1), (1, 3), (2, 2), (3, 3))):
        layer.paint((z, 8 + 8 * i, 10), _code(c, lv))
        layer.paint((z - 2, 8 + 8 * i, 25), _code(c, lv))
        spots[(c, lv)] = (z, 8 + 8 * i, 10)
    return spots


def test_per_class_export_reopen_and_replace_dialog(setup, image_file, qtbot):
    viewer, widget = setup
    layer = widget.add_rater_layer("AB", classes=CLASSES)
    _paint_codes(layer)
    codes = np.array(layer.data, copy=True)
    geom = DisplayGeometry.from_metadata(layer.metadata)
    folder = image_file.parent
    expected = class_level_maps(codes, n_classes=3, n_levels=3)
    names = [folder / f"rater-AB_label-{k}.nii.gz" for k in ("grey-matter", "white-matter", "csf")]

    written = widget.export_rater(folder / "rater-AB_levels.nii.gz", as_levels=True)
    assert written == names
    for c, path in enumerate(names):
        img = nib.load(path)
        assert img.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(img.affine, nib.load(image_file).affine)
        np.testing.assert_array_equal(geom.to_display(np.asarray(img.dataobj)), expected[c])
        side = read_rater_sidecar(path)
        assert side.rater == "AB" and side.class_name == CLASSES[c] and side.kind == "labels"
        assert side.scale == ConfidenceScale.default() and side.extra["classes"] == list(CLASSES)
    assert expected[0].max() == 3 and expected[1].max() == 2  # levels, not codes

    # re-open: the three files become one layer with the same codes
    (back,) = widget.open_rater_files(names)
    # "AB" is open already: the file's layer is named after the file too
    assert back.metadata[CLASS_KEY] == list(CLASSES)
    assert back.metadata["softseg_rater"] == "AB (rater-AB_label-grey-matter.nii.gz)"
    np.testing.assert_array_equal(back.data, codes)
    assert ConfidenceScale.from_dict(back.metadata["softseg_confidence"]) == ConfidenceScale.default()

    # soft export: each class's soft values; asking before replacing lists every file
    widget._layer.value = layer_uid(layer)
    widget._export_kind.value = "soft map (float32)"
    assert widget.files.path.value == folder / "rater-AB.nii.gz"
    before = {p: p.read_bytes() for p in names}
    dialogs = Dialogs("Cancel")
    assert widget.files._export_clicked() is None
    assert dialogs.done and all(p.name in dialogs.seen[0] for p in names)
    assert all(p.read_bytes() == before[p] for p in names)
    written = widget.export_rater(folder / "rater-AB.nii.gz", layer=layer, overwrite=True)
    soft = class_soft_maps(codes, scale=ConfidenceScale.default(), n_classes=3)
    for c, path in enumerate(written):
        img = nib.load(path)
        assert img.get_data_dtype() == np.float32
        np.testing.assert_array_equal(geom.to_display(np.asarray(img.dataobj)), soft[c])


def test_overlapping_class_files_and_mixed_scales_are_refused(setup, image_file):
    viewer, widget = setup
    folder = image_file.parent
    affine = nib.load(image_file).affine
    a = np.zeros(SHAPE, np.uint8)
    a[5:10, 5:10, 5] = 1
    b = np.zeros(SHAPE, np.uint8)
    b[8:12, 8:12, 5] = 1  # overlaps a
    for name, data in (("gm", a), ("wm", b)):
        save_volume(folder / f"rater-x_label-{name}.nii.gz", data, affine=affine,
                    sidecar={"rater": "x", "kind": "labels", "class": name})
    n = len(viewer.layers)
    with pytest.raises(InputError, match="also painted for another class"):
        widget.open_rater_files([folder / "rater-x_label-gm.nii.gz", folder / "rater-x_label-wm.nii.gz"])
    assert len(viewer.layers) == n
    # apart: fine, class order as given (no list, no dataset.json)
    b[8:12, 8:12, 5] = 0
    b[20:24, 20:24, 5] = 1
    save_volume(folder / "rater-x_label-wm.nii.gz", b, affine=affine, overwrite=True,
                sidecar={"rater": "x", "kind": "labels", "class": "wm"})
    (lyr,) = widget.open_rater_files([folder / "rater-x_label-gm.nii.gz", folder / "rater-x_label-wm.nii.gz"])
    assert lyr.metadata[CLASS_KEY] == ["gm", "wm"]
    geom = DisplayGeometry.from_metadata(lyr.metadata)
    np.testing.assert_array_equal(lyr.data, geom.to_display(a + 2 * b))  # binary: code = class


def test_label_map_opens_with_the_dataset_json_classes(setup, image_file):
    viewer, widget = setup
    folder = image_file.parent
    (folder.parent / "dataset.json").write_text(json.dumps({"classes": list(CLASSES)}))
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:10, 5:10, 4:8] = 1
    labels[20:25, 5:10, 4:8] = 2
    labels[5:10, 20:30, 4:8] = 3
    save_volume(folder / "rater-lm.nii.gz", labels, affine=nib.load(image_file).affine)
    lyr = widget.open_rater_file(folder / "rater-lm.nii.gz")
    assert lyr.metadata[CLASS_KEY] == list(CLASSES)
    assert ConfidenceScale.from_dict(lyr.metadata["softseg_confidence"]) == ConfidenceScale.binary()
    geom = DisplayGeometry.from_metadata(lyr.metadata)
    np.testing.assert_array_equal(lyr.data, geom.to_display(labels))  # one level: code = class
    # a value above the classes is refused, naming the file
    labels[0, 0, 0] = 4
    save_volume(folder / "rater-bad.nii.gz", labels, affine=nib.load(image_file).affine)
    with pytest.raises(InputError, match="rater-bad.nii.gz: holds value 4"):
        widget.open_rater_file(folder / "rater-bad.nii.gz")


def test_changing_the_number_of_levels_keeps_classes_and_levels(setup):
    viewer, widget = setup
    layer = widget.add_rater_layer("AB", classes=CLASSES)
    spots = _paint_codes(layer)
    widget.set_scale(ConfidenceScale.linear(4))
    for (c, lv), where in spots.items():
        assert layer.data[where] == _code(c, lv, 4)
    assert max(k for k in layer.colormap.color_dict if k is not None) == 12
    with pytest.raises(InputError, match="level 3 but the new scale has 2"):
        widget.set_scale(ConfidenceScale.linear(2))
    assert ConfidenceScale.from_dict(layer.metadata["softseg_confidence"]) == ConfidenceScale.linear(4)


def test_multiclass_recovery_across_two_viewer_runs(make_napari_viewer, image_file, recovery_root, menu_widget):
    viewer = make_napari_viewer()
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = menu_widget(viewer, "annotate")
    layer = widget.add_rater_layer("AB", classes=CLASSES)
    _paint_codes(layer)
    saved = np.array(layer.data, copy=True)
    assert widget.flush_autosave()
    widget.close_autosave()
    (rec,) = list_recoveries(image_file)
    assert rec.classes == CLASSES
    record = json.loads(rec.path.with_name(rec.path.name.replace(".nii.gz", ".json")).read_text())
    assert record["classes"] == list(CLASSES)

    viewer2 = make_napari_viewer()
    viewer2.open(str(image_file), plugin=PLUGIN)
    widget2 = menu_widget(viewer2, "annotate")
    try:
        assert widget2._banner.visible and "3 classes" in widget2._banner.text
        (restored,) = widget2.restore()
        assert restored.name == "AB" and restored.metadata[CLASS_KEY] == list(CLASSES)
        np.testing.assert_array_equal(restored.data, saved)
        assert max(k for k in restored.colormap.color_dict if k is not None) == 9
        # the snapshot file itself opens as a multi-class layer (its JSON lists the classes)
        again = widget2.open_rater_file(rec.path)
        assert again.metadata[CLASS_KEY] == list(CLASSES)
        np.testing.assert_array_equal(again.data, saved)
    finally:
        widget2.close_autosave()
