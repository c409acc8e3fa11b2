"""The "Soft annotation" widget in a real viewer: painting, keys, status, export, autosave, opening.

Most tests run twice (``open_widget``): through napari's Plugins menu (a wrapped viewer whose
layers are proxies) and built directly.
"""

import json

import nibabel as nib
import numpy as np
import pytest
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QPushButton

from softseg.autosave import list_recoveries, list_snapshots, load_snapshot
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import save_volume

from annotate_support import PLUGIN, SHAPE, click, key, show, stroke, type_text
from annotate_support import image_file, recovery_root, setup  # noqa: F401 (pytest fixtures)



def _centre(layer):
    return tuple(s // 2 for s in layer.data.shape)


def _paint_three_levels(layer):
    """One disc per level in the middle slice; returns {level: a voxel inside its disc}."""
    z, y, x = _centre(layer)
    layer.brush_size = 3
    spots = {1: (z, y, x - 10), 2: (z, y, x), 3: (z, y, x + 10)}
    for level, coord in spots.items():
        layer.paint(coord, level)
    return spots


def test_rater_layer_has_image_geometry_scale_colours_and_status(setup, image_file, qtbot):
    viewer, widget = setup
    image = viewer.layers["image"]
    layer = widget.add_rater_layer("alice")
    assert layer.data.shape == image.data.shape and layer.data.dtype == np.uint8
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)
    geom = DisplayGeometry.from_metadata(layer.metadata)
    np.testing.assert_array_equal(geom.affine, nib.load(image_file).affine)
    assert layer.metadata["softseg_rater"] == "alice" and layer.metadata["softseg_role"] == "rater"
    assert (
        ConfidenceScale.from_dict(layer.metadata["softseg_confidence"]) == ConfidenceScale.default()
    )
    # colour strength grows with confidence: alpha and saturation increase with the level
    rgba = [layer.colormap.color_dict[k] for k in (1, 2, 3)]
    alphas = [c[3] for c in rgba]
    sats = [max(c[:3]) - min(c[:3]) for c in rgba]
    assert alphas[0] < alphas[1] < alphas[2] == 1.0
    assert sats[0] < sats[1] < sats[2]
    assert layer.colormap.color_dict[0][3] == 0.0
    # a second rater gets another hue
    bob = widget.add_rater_layer("bob")
    assert not np.allclose(bob.colormap.color_dict[3][:3], layer.colormap.color_dict[3][:3])
    with pytest.raises(InputError, match="exists already"):
        widget.add_rater_layer("alice")
    # the soft value of the voxel under the mouse reaches napari's status bar
    spots = _paint_three_levels(layer)
    viewer.layers.selection.active = layer
    viewer.dims.current_step = (spots[2][0], 0, 0)
    show(viewer, qtbot)
    # what a mouse move over the canvas does (Xvfb sends no Enter event, and napari's status
    # thread only runs inside a running event loop): set the cursor, then update the status
    for level, text in (
        (1, "1; confidence: low, soft value: 0.333"),
        (2, "2; confidence: medium, soft value: 0.667"),
        (3, "3; confidence: high, soft value: 1"),
    ):
        viewer.mouse_over_canvas = True
        viewer.cursor.position = tuple(viewer.layers["alice"].data_to_world(spots[level]))
        viewer.update_status_from_cursor()
        assert text in str(viewer.status)


def test_rater_id_is_empty_and_required(setup, qtbot):
    viewer, widget = setup
    assert widget._rater_id.value == ""
    assert widget._rater_id.native.placeholderText()
    assert not widget._add.enabled and "rater id" in widget._add.tooltip
    with pytest.raises(InputError, match="type your rater id"):
        widget.add_rater_layer()
    type_text(widget._rater_id, "  ")
    assert not widget._add.enabled
    type_text(widget._rater_id, "AB")
    assert widget._add.enabled
    click(widget._add)
    assert viewer.layers["AB"].metadata["softseg_rater"] == "AB"


def test_default_brush_is_scaled_to_the_image(make_napari_viewer, recovery_root, open_widget):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "annotate")
    try:
        small = viewer.add_image(np.zeros((10, 44, 40), np.float32), name="small")
        assert widget.add_rater_layer("a", image=small).brush_size == 1
        big = viewer.add_image(np.zeros((10, 233, 189), np.float32), name="big")
        assert widget.add_rater_layer("b", image=big).brush_size == 5  # 2% of the larger side
        ct = viewer.add_image(np.zeros((4, 512, 512), np.float32), name="ct")
        assert widget.add_rater_layer("c", image=ct).brush_size == 10
    finally:
        widget.close_autosave()


def test_paint_levels_then_export_soft_and_levels_with_image_affine(setup, image_file):
    viewer, widget = setup
    layer = widget.add_rater_layer("alice")
    widget.set_scale(ConfidenceScale.from_paper())  # 0.25 / 0.5 / 1
    spots = _paint_three_levels(layer)
    # napari's data_setitem (used by the fill/polygon paths) works as well
    z, y, x = _centre(layer)
    layer.data_setitem((np.array([z]), np.array([y + 8]), np.array([x])), 2)

    out = widget.export_rater(image_file.parent / "rater-alice.nii.gz")
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.affine, nib.load(image_file).affine)
    soft_file = np.asarray(img.dataobj)
    assert soft_file.shape == SHAPE
    geom = DisplayGeometry.from_metadata(layer.metadata)
    soft = geom.to_display(soft_file)
    for level, value in zip((1, 2, 3), (0.25, 0.5, 1.0)):
        assert soft[spots[level]] == np.float32(value)
    assert soft[z, y + 8, x] == np.float32(0.5)
    assert set(np.unique(soft_file).tolist()) == {0.0, 0.25, 0.5, 1.0}
    side = json.loads((image_file.parent / "rater-alice.json").read_text())
    assert side["rater"] == "alice" and side["kind"] == "soft"
    assert ConfidenceScale.from_dict(side["softseg_confidence"]) == ConfidenceScale.from_paper()
    assert side["source_image"] == str(image_file) and "exported_at" in side

    lv = widget.export_rater(image_file.parent / "rater-alice_levels.nii.gz", as_levels=True)
    levels_file = nib.load(lv)
    assert levels_file.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(geom.to_display(np.asarray(levels_file.dataobj)), layer.data)
    # exported work is not offered for recovery
    widget.flush_autosave()
    assert list_recoveries(image_file) == []


def test_mouse_stroke_and_keyboard_levels(setup, qtbot):
    viewer, widget = setup
    layer = widget.add_rater_layer("alice")
    canvas = show(viewer, qtbot)
    # keys 1..K pick a level on the rater layer, 0 the eraser; napari's own E still erases
    for qt_key, level in ((Qt.Key.Key_3, 3), (Qt.Key.Key_1, 1)):
        key(canvas, qt_key)
        assert layer.selected_label == level and layer.mode == "paint"
        assert widget._level_bar.buttons[level].isChecked()
    key(canvas, Qt.Key.Key_0)
    assert layer.mode == "erase" and widget._level_bar.buttons[0].isChecked()
    key(canvas, Qt.Key.Key_2)
    assert layer.selected_label == 2 and layer.mode == "paint"
    key(canvas, Qt.Key.Key_7)  # beyond the scale: level unchanged
    assert layer.selected_label == 2
    # the level bar buttons do the same as the keys
    click(widget._level_bar.buttons[3])
    assert layer.selected_label == 3
    key(canvas, Qt.Key.Key_2)

    # a real mouse stroke across the middle slice paints level 2
    z, y, _ = _centre(layer)
    layer.brush_size = 3
    history = len(layer._undo_history)
    stroke(viewer, canvas, layer, z, y, 8, 30)
    painted = np.argwhere(layer.data == 2)
    assert len(layer._undo_history) == history + 1  # one stroke = one undo step
    assert set(painted[:, 0]) == {z}
    assert painted[:, 2].min() <= 10 and painted[:, 2].max() >= 28


def test_every_stroke_and_undo_is_autosaved(setup, image_file, qtbot):
    viewer, widget = setup
    layer = widget.add_rater_layer("alice")
    session = widget.autosave_for(layer)
    session.timer.setInterval(50)  # debounce shortened for the test
    geom = DisplayGeometry.from_metadata(layer.metadata)

    def snapshot():
        recs = list_recoveries(image_file)
        return load_snapshot(recs[0], geometry=geom) if recs else None

    spots = _paint_three_levels(layer)
    qtbot.waitUntil(lambda: (s := snapshot()) is not None and s[spots[3]] == 3, timeout=10000)
    np.testing.assert_array_equal(snapshot(), layer.data)
    assert session.folder == image_file.parent / ".softseg-recovery" / "image"

    layer.undo()  # napari emits only set_data for undo/redo
    assert layer.data[spots[3]] == 0
    qtbot.waitUntil(lambda: snapshot()[spots[3]] == 0, timeout=10000)
    np.testing.assert_array_equal(snapshot(), layer.data)
    layer.redo()
    qtbot.waitUntil(lambda: snapshot()[spots[3]] == 3, timeout=10000)
    # each save is a new version; the older ones stay on disk
    assert len(list_snapshots(image_file, rater="alice")) >= 3
    # the main thread only copies the array
    assert session.snapshot_ms and max(session.snapshot_ms) < 200


def test_crash_mid_save_keeps_previous_snapshot_and_a_new_viewer_restores_it(
    make_napari_viewer, image_file, recovery_root, monkeypatch, menu_widget
):
    viewer = make_napari_viewer()
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = menu_widget(viewer, "annotate")
    layer = widget.add_rater_layer("alice")
    spots = _paint_three_levels(layer)
    assert widget.flush_autosave()
    saved = np.array(layer.data, copy=True)

    # the next save dies after the temporary file was started (disk full, process killed ...)
    import softseg.autosave.store as autosave_mod

    real = autosave_mod.save_volume

    def dying_save(path, data, **kwargs):
        real(path.with_name(".partial.tmp.nii.gz"), data, **kwargs)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(autosave_mod, "save_volume", dying_save)
    layer.paint((spots[1][0], spots[1][1] + 6, spots[1][2]), 3)
    assert widget.flush_autosave()
    monkeypatch.undo()
    widget.close_autosave()

    # "restart napari": a new viewer opens the same image and is offered the saved work
    from napari.utils.notifications import notification_manager

    notes = []
    notification_manager.notification_ready.connect(notes.append)
    try:
        viewer2 = make_napari_viewer()
        viewer2.open(str(image_file), plugin=PLUGIN)
        widget2 = menu_widget(viewer2, "annotate")
    finally:
        notification_manager.notification_ready.disconnect(notes.append)
    try:
        assert widget2._banner.visible and "alice" in widget2._banner.text
        (offer,) = [n for n in notes if "Unsaved rater work found" in str(n.message)]
        ((label, action),) = offer.actions
        assert label == "Restore" and "alice" in offer.message
        action(None)  # what the notification's button does
        restored = viewer2.layers["alice"]
        np.testing.assert_array_equal(restored.data, saved)
        assert (
            ConfidenceScale.from_dict(restored.metadata["softseg_confidence"])
            == ConfidenceScale.default()
        )
    finally:
        widget2.close_autosave()


def test_open_rater_files_binary_levels_soft_distinct_colours_and_wrong_shape(setup, image_file):
    viewer, widget = setup
    image = viewer.layers["image"]
    geom = DisplayGeometry.from_metadata(image.metadata)
    folder = image_file.parent
    vol_affine = nib.load(image_file).affine
    binary = np.zeros(SHAPE, np.uint8)
    binary[10:20, 10:20, 5:9] = 1
    save_volume(folder / "rater-b.nii.gz", binary, affine=vol_affine)
    levels = binary * 2
    levels[12:14, 12:14, 6] = 4
    scale = ConfidenceScale.linear(4)
    save_volume(
        folder / "rater-c.nii.gz",
        levels,
        affine=vol_affine,
        sidecar={"rater": "carol", "softseg_confidence": scale.as_dict()},
    )
    soft = binary.astype(np.float32) * 0.4
    save_volume(folder / "rater-d.nii.gz", soft, affine=vol_affine)
    save_volume(folder / "other.nii.gz", np.zeros((8, 8, 8), np.uint8), affine=vol_affine)

    b = widget.open_rater_file(folder / "rater-b.nii.gz")
    assert b.metadata["softseg_rater"] == "b" and isinstance(b, Labels)
    assert ConfidenceScale.from_dict(b.metadata["softseg_confidence"]) == ConfidenceScale.binary()
    np.testing.assert_array_equal(b.data, geom.to_display(binary))
    c = widget.open_rater_file(folder / "rater-c.nii.gz")
    assert c.metadata["softseg_rater"] == "carol"
    assert ConfidenceScale.from_dict(c.metadata["softseg_confidence"]) == scale
    d = widget.open_rater_file(folder / "rater-d.nii.gz")
    assert isinstance(d, Image) and d.metadata["softseg_kind"] == "soft"
    np.testing.assert_array_equal(d.data, geom.to_display(soft))
    # three files, three colours
    hues = [lyr.metadata["softseg_hue"] for lyr in (b, c, d)]
    assert len(set(hues)) == 3
    top = [
        tuple(np.round(b.colormap.color_dict[1][:3], 3)),
        tuple(np.round(c.colormap.color_dict[4][:3], 3)),
        tuple(np.round(d.colormap.colors[-1][:3], 3)),
    ]
    assert len(set(top)) == 3
    with pytest.raises(
        InputError, match=r"shape \(8, 8, 8\) differs from image 'image' shape \(18, 44, 40\)"
    ):
        widget.open_rater_file(folder / "other.nii.gz")


def test_rater_files_opened_with_file_open_get_distinct_colours(setup, image_file):
    viewer, widget = setup
    folder = image_file.parent
    affine = nib.load(image_file).affine
    for name in ("rater-1", "rater-2", "rater-3"):
        lv = np.zeros(SHAPE, np.uint8)
        lv[5:9, 5:9, 3:5] = 2
        save_volume(
            folder / f"{name}.nii.gz",
            lv,
            affine=affine,
            sidecar={"rater": name[-1], "softseg_confidence": ConfidenceScale.default().as_dict()},
        )
        viewer.open(str(folder / f"{name}.nii.gz"), plugin=PLUGIN)
    raters = [lyr for lyr in viewer.layers if lyr.metadata.get("softseg_rater")]
    assert len(raters) == 3
    colours = {tuple(np.round(lyr.colormap.color_dict[3][:3], 3)) for lyr in raters}
    assert len(colours) == 3
    assert all(widget.autosave_for(lyr) is not None for lyr in raters)


def test_scale_editor_levels_and_refusals(setup):
    viewer, widget = setup
    layer = widget.add_rater_layer("alice")
    widget._n_levels.value = 5
    assert widget._table.shape == (5, 2)
    scale = widget.apply_scale()
    np.testing.assert_allclose(scale.values, [0.2, 0.4, 0.6, 0.8, 1.0])
    assert len(widget._level_bar.buttons) == 6  # eraser + 5 levels
    shown = widget._level_bar.findChildren(QPushButton)
    assert len(shown) == 6 and [b.text().split()[0] for b in shown] == [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    assert layer.features["soft value"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    layer.paint(_centre(layer), 5)
    widget._n_levels.value = 3
    with pytest.raises(InputError, match="level 5 but the new scale has 3 levels"):
        widget.apply_scale()
    # a value typed in the table is used, and bad ones are refused with the reason
    widget._n_levels.value = 5
    widget._table.data[4] = ["sure", 0.9]
    widget._table.data[3] = ["likely", 0.95]
    with pytest.raises(InputError, match="increase strictly"):
        widget.apply_scale()
    widget._table.data[3] = ["likely", 0.85]
    assert widget.apply_scale().values[3:] == (0.85, 0.9)


def test_unwritable_recovery_folder_warns_once_and_saves_to_fallback(
    make_napari_viewer, image_file, recovery_root, monkeypatch, open_widget
):
    from napari.utils.notifications import notification_manager

    (image_file.parent / ".softseg-recovery").write_text("a file where the folder should be")
    viewer = make_napari_viewer()
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = open_widget(viewer, "annotate")
    notes = []
    notification_manager.notification_ready.connect(notes.append)
    try:
        a = widget.add_rater_layer("alice")
        widget.add_rater_layer("bob")
        warnings = [str(n.message) for n in notes if str(n.severity) == "warning"]
        assert len(warnings) == 1  # once, not per rater
        assert str(recovery_root) in warnings[0] and "autosaving to" in warnings[0]
        session = widget.autosave_for(a)
        assert session.folder.parent == recovery_root
        a.paint(_centre(a), 3)
        assert widget.flush_autosave()
        (rec,) = [r for r in list_recoveries(image_file) if r.rater == "alice"]
        assert rec.is_fallback
        np.testing.assert_array_equal(
            load_snapshot(rec, geometry=DisplayGeometry.from_metadata(a.metadata)), a.data
        )
    finally:
        notification_manager.notification_ready.disconnect(notes.append)
        widget.close_autosave()


def test_foreign_label_layer_becomes_a_rater_layer_only_when_a_scale_is_applied(setup):
    viewer, widget = setup
    image = viewer.layers["image"]
    binary = np.zeros(image.data.shape, np.uint8)
    binary[5:8, 10:20, 10:20] = 1
    foreign = viewer.add_labels(binary, name="rater-x", metadata={"softseg_rater": "x"})
    widget._layer.value = widget._rater_choices()[-1][1]
    assert widget.autosave_for(foreign) is None and "softseg_confidence" not in foreign.metadata
    assert "no confidence scale" in widget._status.value
    widget.set_scale(ConfidenceScale.binary())
    assert widget.autosave_for(foreign) is not None
    assert (
        ConfidenceScale.from_dict(foreign.metadata["softseg_confidence"])
        == ConfidenceScale.binary()
    )
    np.testing.assert_array_equal(foreign.data, binary)


def test_notifications_name_their_source(setup):
    from napari.utils.notifications import notification_manager

    viewer, widget = setup
    notes = []
    notification_manager.notification_ready.connect(notes.append)
    try:
        widget._guard(lambda: widget.add_rater_layer(""))
    finally:
        notification_manager.notification_ready.disconnect(notes.append)
    (note,) = notes
    assert note.source == "Soft annotation" and "rater id" in note.message
    assert "--" not in note.message and "overwrite=" not in note.message
