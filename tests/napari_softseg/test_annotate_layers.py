"""Soft annotation: layers tracked by uid (issue 11 #3), labels off the scale (#5), exports (#6).

* exactly one autosave thread per rater layer, also through the Plugins menu (where napari hands
  out a new proxy object for a layer at every access), stopped when the layer is removed, in
  every order, with the work on disk and no crash;
* napari's label spin box, its *new label* button and the ``M`` key cannot pick a level the
  confidence scale does not have, and a stroke of such a value is undone;
* exports never replace a file without an explicit *Replace*, and the name follows the content.
"""

from __future__ import annotations

import itertools
import json
import threading

import nibabel as nib
import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QPushButton

from softseg.autosave import list_recoveries, list_snapshots, load_snapshot
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry

from annotate_support import PLUGIN, Dialogs, click, key, show, stroke
from annotate_support import image_file, recovery_root  # noqa: F401 (pytest fixtures)


@pytest.fixture
def notes():
    got = []
    notification_manager.notification_ready.connect(got.append)
    yield got
    notification_manager.notification_ready.disconnect(got.append)


def _writer_threads():
    return [
        t for t in threading.enumerate() if t.name.startswith("softseg-autosave") and t.is_alive()
    ]


def _open(make_napari_viewer, image_file, opener, *, shown=False, qtbot=None):
    viewer = make_napari_viewer(show=shown)
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = opener(viewer, "annotate")
    if shown:
        show(viewer, qtbot)
    return viewer, widget


# ---------------------------------------------------------------------------- threads by uid
def test_exactly_one_autosave_thread_per_rater_layer(
    make_napari_viewer, image_file, recovery_root, open_widget
):
    before = len(_writer_threads())
    viewer, widget = _open(make_napari_viewer, image_file, open_widget)
    a = widget.add_rater_layer("A")
    b = widget.add_rater_layer("B")
    # everything that used to attach a second session: picking the layer, re-applying a scale,
    # new layers arriving, the active layer changing
    for _ in range(3):
        for lyr in (a, b):
            viewer.layers.selection.active = lyr
            widget.apply_scale(layer=lyr)
        viewer.add_points(np.zeros((0, 3)), name="other")
        viewer.layers.remove("other")
    assert len(_writer_threads()) == before + 2
    assert len(widget.autosave.sessions) == 2
    a.paint((9, 22, 20), 2)
    assert widget.flush_autosave()
    sessions = {r.session for r in list_snapshots(image_file, rater="A")}
    assert len(sessions) == 1  # one stream of snapshots for the layer
    widget.close_autosave()
    assert len(_writer_threads()) == before


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))) + ["select all"])
def test_deleting_rater_layers_in_every_order_stops_autosave_and_keeps_the_work(
    make_napari_viewer, image_file, recovery_root, menu_widget, qtbot, order
):
    before = len(_writer_threads())
    viewer, widget = _open(make_napari_viewer, image_file, menu_widget, shown=True, qtbot=qtbot)
    layers = [widget.add_rater_layer(r) for r in ("A", "B", "C")]
    for i, lyr in enumerate(layers):
        lyr.paint((9, 20 + 3 * i, 20), 1 + i)  # painted, the debounce still running
    painted = {r: np.array(lyr.data, copy=True) for r, lyr in zip("ABC", layers)}
    assert len(_writer_threads()) == before + 3
    if order == "select all":
        viewer.layers.select_all()
        viewer.layers.remove_selected()  # the image too
    else:
        for i in order:
            viewer.layers.selection.active = viewer.layers[
                "ABC"[i]
            ]  # in paint mode, as a rater has it
            QApplication.processEvents()
            viewer.layers.remove("ABC"[i])
            QApplication.processEvents()
            assert len(_writer_threads()) == before + 3 - (list(order).index(i) + 1)
    for _ in range(3):
        QApplication.processEvents()
    assert _writer_threads()[before:] == [] and widget.autosave.sessions == {}
    # the canvas keeps drawing new layers (napari crashed here when a layer in paint mode went)
    viewer.add_labels(np.zeros((18, 44, 40), np.uint8), name="after")
    for _ in range(3):
        QApplication.processEvents()
    # every removed layer's strokes are on disk, offered for recovery
    geom = DisplayGeometry.from_affine(nib.load(image_file).affine, nib.load(image_file).shape)
    got = {r.rater: load_snapshot(r, geometry=geom) for r in list_recoveries(image_file)}
    assert set(got) == set("ABC")
    for r in "ABC":
        np.testing.assert_array_equal(got[r], painted[r])
    widget.close_autosave()


# ------------------------------------------------------------------------ labels off the scale
def _controls(viewer, layer):
    return viewer.window._qt_viewer.controls.widgets[layer]


def test_labels_off_the_scale_are_refused_at_paint_time(
    make_napari_viewer, image_file, recovery_root, menu_widget, qtbot, notes
):
    viewer, widget = _open(make_napari_viewer, image_file, menu_widget, shown=True, qtbot=qtbot)
    layer = widget.add_rater_layer("A")  # 3 levels
    raw = viewer.layers["A"]
    ctrl = _controls(viewer, raw)
    # napari's label spin box, as a rater would use it
    spin = ctrl._label_control.selection_spinbox
    spin.setValue(5)
    QApplication.processEvents()
    assert layer.selected_label == 3 and spin.value() == 3
    assert "label 5 is not on the confidence scale (levels 1..3)" in widget._status.value
    assert any("label 5" in str(n.message) and n.source == "Soft annotation" for n in notes)
    # the "new label" button (max + 1 = 4 once level 3 is painted)
    layer.paint((9, 22, 20), 3)
    new_button = ctrl.findChild(QPushButton, "newLabelButton")
    click(new_button)
    assert layer.selected_label == 3
    # napari's keys: M (new label) and = (next label)
    canvas = show(viewer, qtbot)
    viewer.layers.selection.active = raw
    key(canvas, Qt.Key.Key_M)
    key(canvas, Qt.Key.Key_Equal)
    assert layer.selected_label == 3
    # what the level bar says is what is painted
    assert widget._level_bar.buttons[3].isChecked()
    z, y = 9, 30
    layer.brush_size = 2
    stroke(viewer, canvas, raw, z, y, 5, 15)
    assert set(np.unique(layer.data).tolist()) <= {0, 1, 2, 3}
    # a script painting a value off the scale: the stroke is undone
    before = np.array(layer.data, copy=True)
    layer.paint((5, 10, 10), 7)
    qtbot.waitUntil(lambda: int(layer.data.max()) <= 3, timeout=3000)
    np.testing.assert_array_equal(layer.data, before)
    assert "was undone" in widget._status.value
    # more levels on the scale make 5 paintable
    widget._n_levels.value = 5
    widget.apply_scale()
    spin.setValue(5)
    assert layer.selected_label == 5
    widget.close_autosave()


# ---------------------------------------------------------------------------------- exports
def test_export_name_follows_the_content(
    make_napari_viewer, image_file, recovery_root, open_widget
):
    viewer, widget = _open(make_napari_viewer, image_file, open_widget)
    widget.add_rater_layer("dr.smith")
    folder = image_file.parent
    assert widget._export_path.value == folder / "rater-dr_smith.nii.gz"
    widget._export_kind.value = "levels (integer)"
    assert widget._export_path.value == folder / "rater-dr_smith_levels.nii.gz"
    widget._export_kind.value = "soft map (float32)"
    assert widget._export_path.value == folder / "rater-dr_smith.nii.gz"
    # a name the rater typed follows too
    widget._export_path.value = folder / "mine.nii"
    widget._export_kind.value = "levels (integer)"
    assert widget._export_path.value == folder / "mine_levels.nii"
    widget.close_autosave()


def _file_state(path):
    return path.read_bytes() if path.exists() else None


def test_export_never_overwrites_without_an_explicit_replace(
    make_napari_viewer, image_file, recovery_root, menu_widget, qtbot
):
    viewer, widget = _open(make_napari_viewer, image_file, menu_widget, shown=True, qtbot=qtbot)
    layer = widget.add_rater_layer("alice")
    layer.paint((9, 22, 20), 3)
    folder = image_file.parent
    target = folder / "rater-alice.nii.gz"
    side = folder / "rater-alice.json"
    # yesterday's export
    assert widget.files._export_clicked() == target  # nothing there: no question
    old_img, old_side = _file_state(target), _file_state(side)
    layer.paint((9, 10, 10), 2)

    dialogs = Dialogs("Cancel")
    click(widget._export)
    assert (
        dialogs.done
        and "rater-alice.nii.gz" in dialogs.seen[0]
        and "rater-alice.json" in dialogs.seen[0]
    )
    assert _file_state(target) == old_img and _file_state(side) == old_side
    assert "Not exported" in widget._status.value

    # the Python API refuses too, with a GUI sentence (no command-line words)
    with pytest.raises(InputError) as err:
        widget.export_rater(target)
    assert (
        "exists already" in str(err.value)
        and "--" not in str(err.value)
        and "overwrite=" not in str(err.value)
    )
    assert _file_state(target) == old_img

    # the sidecar alone is enough to ask
    target.unlink()
    dialogs = Dialogs("Cancel")
    click(widget._export)
    assert dialogs.done and _file_state(side) == old_side and not target.exists()

    dialogs = Dialogs("Replace")
    click(widget._export)
    assert dialogs.done
    soft = DisplayGeometry.from_metadata(layer.metadata).to_display(
        np.asarray(nib.load(target).dataobj)
    )
    assert soft[9, 10, 10] == np.float32(2 / 3)
    assert json.loads(side.read_text())["rater"] == "alice"

    # switching to levels changes the name: a new file, no question
    widget._export_kind.value = "levels (integer)"
    assert widget.files._export_clicked() == folder / "rater-alice_levels.nii.gz"
    assert nib.load(folder / "rater-alice_levels.nii.gz").get_data_dtype() == np.uint8
    assert _file_state(target) is not None  # the soft map is still there
    widget.close_autosave()
