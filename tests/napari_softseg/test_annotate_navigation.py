"""Navigation a rater expects (issue 11 #10): letters on the canvas, slice keys, annotated slices."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_softseg._layers import AXIS_LABELS
from napari_softseg.widgets.annotate._navigation import PAGE_STEP, orientation_letters

from annotate_support import PLUGIN, click, key, show, write_image
from annotate_support import recovery_root  # noqa: F401 (pytest fixtures)


@pytest.fixture
def shown(make_napari_viewer, tmp_path, recovery_root, menu_widget, qtbot):
    image_file = write_image(tmp_path / "sub-01")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = menu_widget(viewer, "annotate")
    canvas = show(viewer, qtbot)
    qtbot.waitUntil(lambda: widget.orientation_letters.canvas is not None, timeout=5000)
    yield viewer, widget, canvas
    widget.close_autosave()


def test_orientation_letters_by_hand():
    # display axes point superior, posterior, left (softseg.geometry): an axial slice shows
    # anterior at the top and the patient's right on the left of the screen (radiological)
    assert orientation_letters((1, 2)) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert orientation_letters((0, 2)) == {
        "top": "I",
        "bottom": "S",
        "left": "R",
        "right": "L",
    }  # coronal
    assert orientation_letters((0, 1)) == {
        "top": "I",
        "bottom": "S",
        "left": "A",
        "right": "P",
    }  # sagittal
    assert orientation_letters((1, 2), flip_vertical=True)["top"] == "P"
    assert orientation_letters((1, 2), flip_horizontal=True)["left"] == "L"


def test_letters_on_the_canvas_follow_the_view(shown):
    viewer, widget, canvas = shown
    labels = widget.orientation_letters.labels

    def on_canvas():
        return {edge: lab.text() for edge, lab in labels.items() if lab.isVisible()}

    assert on_canvas() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    # positions: at the edges of the canvas
    w, h = canvas.native.width(), canvas.native.height()
    assert labels["top"].y() < h * 0.1 and labels["bottom"].y() > h * 0.8
    assert labels["left"].x() < w * 0.1 and labels["right"].x() > w * 0.8
    viewer.dims.order = (1, 0, 2)  # coronal slices
    QApplication.processEvents()
    assert on_canvas() == {"top": "I", "bottom": "S", "left": "R", "right": "L"}
    viewer.dims.order = (0, 1, 2)
    viewer.camera.orientation2d = ("up", "right")
    QApplication.processEvents()
    assert on_canvas()["top"] == "P"
    viewer.camera.orientation2d = ("down", "right")
    viewer.dims.ndisplay = 3
    QApplication.processEvents()
    assert on_canvas() == {}
    viewer.dims.ndisplay = 2
    QApplication.processEvents()
    assert on_canvas()["top"] == "A"


def test_slider_is_labelled_with_the_anatomical_axis(shown):
    viewer, widget, canvas = shown
    assert tuple(viewer.dims.axis_labels) == AXIS_LABELS
    assert viewer.dims.axis_labels[0] == "axial I→S"


def test_up_down_page_up_page_down_change_slice(shown):
    viewer, widget, canvas = shown
    n = viewer.dims.nsteps[0]
    viewer.dims.set_current_step(0, 5)
    key(canvas, Qt.Key.Key_Up)
    assert viewer.dims.current_step[0] == 6
    key(canvas, Qt.Key.Key_Down, times=2)
    assert viewer.dims.current_step[0] == 4
    key(canvas, Qt.Key.Key_PageUp)
    assert viewer.dims.current_step[0] == 4 + PAGE_STEP
    key(canvas, Qt.Key.Key_PageDown, times=3)
    assert viewer.dims.current_step[0] == 0  # clamped at the first slice
    key(canvas, Qt.Key.Key_PageUp, times=10)
    assert viewer.dims.current_step[0] == n - 1  # and at the last
    # also with a rater layer active in paint mode
    layer = widget.add_rater_layer("A")
    viewer.layers.selection.active = viewer.layers["A"]
    key(canvas, Qt.Key.Key_Down)
    assert viewer.dims.current_step[0] == n - 2 and layer.mode == "paint"


def test_next_and_previous_annotated_slice(shown):
    viewer, widget, canvas = shown
    layer = widget.add_rater_layer("A")
    nav = widget._slices
    assert not nav.next_btn.isEnabled() and "no slice annotated" in nav.summary.text()
    for z in (3, 8, 14):
        layer.paint((z, 20, 20), 2)
    layer.brush_size = 1
    nav.refresh()
    assert nav.annotated() == [3, 8, 14] and nav.next_btn.isEnabled()
    viewer.dims.set_current_step(0, 0)
    for expected in (3, 8, 14, 3):  # wraps around
        click(nav.next_btn)
        assert viewer.dims.current_step[0] == expected
    for expected in (14, 8):
        click(nav.previous_btn)
        assert viewer.dims.current_step[0] == expected
    assert "3 annotated (3–14)" in nav.summary.text() and "this one" in nav.summary.text()
    # undo the last stroke: the list follows (debounced)
    layer.undo()
    nav.refresh()
    assert nav.annotated() == [3, 8]
    # clicking the bar jumps to that slice
    bar = nav.bar
    x = bar._x(3)
    QTest.mouseClick(
        bar, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(x, bar.height() // 2)
    )
    assert viewer.dims.current_step[0] == 3
    # another rater's slices are their own
    b = widget.add_rater_layer("B")
    b.paint((10, 20, 20), 1)
    nav.refresh()
    assert nav.annotated() == [10]
