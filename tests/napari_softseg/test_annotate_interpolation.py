"""Fill between slices from the Soft annotation dock (issue 17 #1, GUI): real strokes on every 4th
slice of a sphere, the shortcut, the worker, one undo step, the main thread never blocked long,
the slices the rater touched passed as painted, the overview, refusals.
"""

import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from softseg.interpolate import interpolate_class_levels, interpolate_levels

from annotate_support import click, key, row_strokes, show, stroke
from annotate_support import recovery_root  # noqa: F401 (pytest fixture)

SHAPE = (41, 48, 47)
CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


def ball(shape=SHAPE, centre=(20, 24, 23.5), radius=16.0) -> np.ndarray:
    z, y, x = np.indices(shape, dtype=float)
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2)


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture
def setup(make_napari_viewer, recovery_root, open_widget):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(SHAPE, np.float32), name="image")
    widget = open_widget(viewer, "annotate")
    yield viewer, widget
    widget.close_autosave()


def _wait_fill(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.interpolator.busy, timeout=60000)


def test_sphere_painted_every_4th_slice_by_strokes_filled_undone_in_one_step(setup, qtbot):
    viewer, widget = setup
    layer = widget.add_rater_layer("AB")
    canvas = show(viewer, qtbot)
    truth = ball()
    key(canvas, Qt.Key.Key_1)  # level 1 ("low") everywhere
    painted = list(range(8, 33, 4))
    for z in painted:
        row_strokes(viewer, canvas, layer, z, truth[z])
    np.testing.assert_array_equal(layer.data[painted] > 0, truth[painted])
    # slice 36: the rater paints a dab and erases it again — "nothing here" (an empty painted slice)
    layer.brush_size = 3
    stroke(viewer, canvas, layer, 36, 24, 20, 26)
    key(canvas, Qt.Key.Key_0)
    layer.brush_size = 7
    stroke(viewer, canvas, layer, 36, 24, 16, 30)
    assert not layer.data[36].any()
    key(canvas, Qt.Key.Key_1)
    before = np.array(layer.data, copy=True)

    # the probe: event-loop gaps while the fill runs and is applied. The main thread's own CPU
    # time between two ticks is what blocked it (on this shared 2-core machine the wall-clock
    # gap also holds the time other processes had the CPU); both are reported.
    ticks: list[tuple[float, float]] = []
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(lambda: ticks.append((time.perf_counter(), time.thread_time())))
    probe.start()
    viewer.dims.current_step = (20, 0, 0)
    key(canvas, Qt.Key.Key_I, modifier=SHIFT)  # Shift-I = Fill between slices
    assert widget.interpolator.busy
    _wait_fill(qtbot, widget)
    probe.stop()
    wall, cpu = (np.diff(np.array(ticks)[:, i]) * 1000.0 for i in (0, 1))
    assert len(ticks) >= 3 and cpu.max() <= 50.0, f"main thread busy {cpu.max():.0f} ms (wall {wall.max():.0f} ms)"
    assert max(ms for _what, ms in widget.interpolator.main_thread_ms) <= 50.0

    # the same as the engine with the slices the rater touched (36: erased = painted empty)
    expected = interpolate_levels(before, axis=0, painted=painted + [36], spacing=layer.scale, n_levels=3)
    np.testing.assert_array_equal(layer.data, expected.filled)
    assert widget.interpolator.last.painted == tuple(painted + [36])
    assert dice(layer.data > 0, truth) >= 0.95
    np.testing.assert_array_equal(layer.data[painted], before[painted])  # painted slices unchanged
    assert not layer.data[[34, 35]].any() and layer.data[33].any()  # ends between 32 and 36
    assert not layer.data[:8].any()  # before the first painted slice: nothing filled
    assert "Ctrl+Z undoes the whole fill" in widget._status.value

    # the overview: interpolated slices apart from painted ones
    widget._slices.set_layer(layer)
    widget._slices.refresh()
    kinds = widget._slices.kinds
    assert {i for i, k in kinds.items() if k == "painted"} == set(painted)
    assert {i for i, k in kinds.items() if k == "interpolated"} == set(range(9, 34)) - set(painted)
    assert "interpolated" in widget._slices.summary.text()

    # ONE Ctrl+Z restores the whole fill; Ctrl+Shift+Z brings it back
    key(canvas, Qt.Key.Key_Z, modifier=CTRL)
    np.testing.assert_array_equal(layer.data, before)
    widget._slices.refresh()
    assert "interpolated" not in widget._slices.kinds.values()
    key(canvas, Qt.Key.Key_Z, modifier=CTRL | SHIFT)
    np.testing.assert_array_equal(layer.data, expected.filled)
    widget._slices.refresh()
    assert widget._slices.kinds[10] == "interpolated"
    # a stroke on an interpolated slice makes it painted (the rater corrected it)
    stroke(viewer, canvas, layer, 10, 24, 1, 4)  # outside the disc: new paint
    widget._slices.refresh()
    assert widget._slices.kinds[10] == "painted" and widget._slices.kinds[11] == "interpolated"


def test_multiclass_layer_is_filled_per_class(setup, qtbot):
    viewer, widget = setup
    layer = widget.add_rater_layer("AB", classes=("grey matter", "white matter"))
    show(viewer, qtbot)
    truth = ball(radius=12)
    inner = ball(radius=7)
    codes = np.where(inner, 3 + 3, np.where(truth, 1 + 1, 0)).astype(np.uint8)  # wm high, gm medium
    for z in (12, 18, 24, 30):
        idx = np.nonzero(codes[z])
        layer.data_setitem((np.full(idx[0].size, z), *idx), codes[z][idx])
    before = np.array(layer.data, copy=True)
    assert widget.interpolate() is not None
    _wait_fill(qtbot, widget)
    expected = interpolate_class_levels(
        before, n_classes=2, n_levels=3, axis=0, painted=(12, 18, 24, 30), spacing=layer.scale
    )
    np.testing.assert_array_equal(layer.data, expected.filled)
    # both classes between slices where both are painted; white matter (absent on 12) shrinks
    # from 18 towards 12
    assert set(np.unique(layer.data[21]).tolist()) == {0, 2, 6}
    wm = [int(np.count_nonzero(layer.data[z] == 6)) for z in (13, 15, 17, 18)]
    assert wm == sorted(wm) and wm[0] < wm[-1]


def test_refusals_leave_the_layer_unchanged(setup, qtbot):
    viewer, widget = setup
    show(viewer, qtbot)
    assert widget.interpolate() is None
    assert "add or pick a rater layer" in widget._status.value
    layer = widget.add_rater_layer("AB")
    layer.paint((10, 20, 20), 2)
    before = np.array(layer.data, copy=True)
    assert widget.interpolate() is not None  # the engine says why, from the worker
    _wait_fill(qtbot, widget)
    assert "at least two painted slices" in widget._status.value
    np.testing.assert_array_equal(layer.data, before)
    assert widget._fill.enabled
    viewer.dims.ndisplay = 3
    click(widget._fill)
    assert "switch to the 2D view" in widget._status.value
    viewer.dims.ndisplay = 2
    # the layer changes while the worker computes: nothing is applied
    layer.paint((20, 20, 20), 2)
    before = np.array(layer.data, copy=True)
    assert widget.interpolate() is not None
    layer.paint((15, 5, 5), 1)
    before[15, 4:7, 4:7] = layer.data[15, 4:7, 4:7]
    _wait_fill(qtbot, widget)
    assert "changed while filling; nothing changed" in widget._status.value
    np.testing.assert_array_equal(layer.data, before)
