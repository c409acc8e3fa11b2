"""The Compare candidates dock widget in a real napari viewer (Xvfb)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage

from prediction_support import prediction_metadata
from softseg import compare
from softseg.phantom import phantom

SCALE = (2.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def arrays():
    ph = phantom((40, 40, 10), n_raters=3, seed=2)
    truth = np.moveaxis(ph.truth, 2, 0)
    return {
        "image": np.moveaxis(ph.image, 2, 0),
        "truth": truth,
        "raters": np.moveaxis(ph.raters, 3, 1),
        "smooth": np.clip(ndimage.gaussian_filter(truth, 1.0), 0, 1).astype(np.float32),
        "sharp": np.clip(ndimage.gaussian_filter(truth, 0.4), 0, 1).astype(np.float32),
        "hard": (truth >= 0.5).astype(np.float32),
    }


@pytest.fixture
def setup(make_napari_viewer, qtbot, arrays):
    from napari_softseg.widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    viewer.add_image(arrays["image"], name="image", scale=SCALE)
    viewer.add_image(arrays["truth"], name="truth", scale=SCALE)
    for i, r in enumerate(arrays["raters"]):
        viewer.add_labels(r, name=f"rater-{i + 1}", scale=SCALE)
    for name, t in (("smooth", 0.3), ("sharp", 0.5), ("hard", 0.5)):
        viewer.add_image(arrays[name], name=name, scale=SCALE,
                         metadata=prediction_metadata(t, candidate=name))
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare")
    return viewer, widget, qtbot


def _run(widget, qtbot):
    widget.comparison = None
    widget.run()
    qtbot.waitUntil(lambda: widget.comparison is not None and widget._worker is None,
                    timeout=20000)


def test_table_equals_engine_and_figures_are_drawn(setup, arrays, tmp_path):
    viewer, widget, qtbot = setup
    widget.choose(image="image", reference="truth", predictions=["smooth", "sharp", "hard"],
                  raters=["rater-1", "rater-2", "rater-3"])
    widget.own_optimum.setChecked(True)
    _run(widget, qtbot)
    expected = compare.compare_predictions(
        {k: arrays[k] for k in ("smooth", "sharp", "hard")}, arrays["truth"],
        thresholds={"smooth": 0.3, "sharp": 0.5, "hard": 0.5},
        raters=arrays["raters"].astype(np.float32), spacing=SCALE)
    shown = widget.table_values()
    assert set(shown) == {"smooth", "sharp", "hard"}
    for cand, values in shown.items():
        assert "dice" in values and "ece" in values and "entropy_error" in values
        for metric, value in values.items():
            want = expected.rows[cand][0][metric]
            assert value == pytest.approx(want, nan_ok=True), (cand, metric)
    # every figure of the papers, the entropy plot included (raters chosen), really drawn
    titles = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
    assert titles == [compare.FIGURES[k][0] for k in compare.FIGURES]
    for canvas in widget._canvases.values():
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())
        assert pixels[..., :3].std() > 10

    # sortable: by Dice, descending
    cols = widget.table_columns(widget.comparison)
    dice_col = 1 + cols.index("dice")
    widget.table.sortItems(dice_col, Qt.SortOrder.DescendingOrder)
    dices = [widget.table.item(r, dice_col).data(Qt.ItemDataRole.UserRole) for r in range(3)]
    assert dices == sorted(dices, reverse=True)
    assert widget.table_values() == shown  # same numbers whatever the order

    path = widget.export_csv(tmp_path / "table.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["candidate"] for r in rows} == set(shown)
    for r in rows:
        assert float(r["dice"]) == pytest.approx(expected.rows[r["candidate"]][0]["dice"])


def test_common_threshold_reruns_and_grid_view(setup, arrays):
    viewer, widget, qtbot = setup
    widget.choose(image="image", reference="truth", predictions=["smooth", "sharp"])
    widget.slider.setValue(0.4)
    _run(widget, qtbot)
    assert widget.thresholds_used == {"smooth": 0.4, "sharp": 0.4}
    assert "entropy" not in widget._canvases  # no raters chosen: no entropy plot
    n_before = len(viewer.layers)

    widget.grid_check.setChecked(True)
    assert viewer.grid.enabled and viewer.grid.stride == 3
    assert len(viewer.layers) == n_before + 6
    offered = [lst.item(i).text() for lst in (widget.prediction_list, widget.rater_list)
               for i in range(lst.count())]
    assert not any("(binarised)" in t or "(soft)" in t for t in offered)  # grid views hidden
    grid = viewer.layers[:6]
    assert [ly.metadata["softseg_compare_grid"] for ly in grid] == ["smooth"] * 3 + ["sharp"] * 3
    assert all(ly.visible for ly in grid) and not any(ly.visible for ly in viewer.layers[6:])
    assert grid[0].data is viewer.layers["image"].data  # image views share the data
    np.testing.assert_array_equal(grid[2].data.astype(bool), arrays["smooth"] >= np.float32(0.4))
    widget.slider.setValue(0.6)  # the grid overlays follow the one threshold control
    np.testing.assert_array_equal(grid[5].data.astype(bool), arrays["sharp"] >= np.float32(0.6))
    qtbot.waitUntil(lambda: widget.thresholds_used.get("sharp") == pytest.approx(0.6)
                    and widget._worker is None, timeout=20000)

    widget.grid_check.setChecked(False)
    assert not viewer.grid.enabled and len(viewer.layers) == n_before
    assert all(ly.visible for ly in viewer.layers)


def test_bad_input_is_explained(setup):
    viewer, widget, qtbot = setup
    viewer.add_labels(np.zeros((3, 4, 5), dtype=np.uint8), name="small")
    viewer.add_image((viewer.layers["truth"].data >= 0.5).astype(np.uint8), name="mask")
    cases = [
        (["smooth"], "truth", "at least two"),
        (["smooth", "image"], "truth", "must lie in [0, 1]"),
        (["smooth", "mask"], "truth", "not a soft prediction"),
        (["smooth", "sharp"], "small", "shape (3, 4, 5)"),
    ]
    viewer.add_image(viewer.layers["smooth"].data, name="plain", scale=SCALE)  # no model card
    widget.own_optimum.setChecked(True)
    widget.choose(image="image", reference="truth", predictions=["smooth", "plain"])
    widget.run()
    assert "'plain' is not a model's prediction" in widget.last_error
    widget.own_optimum.setChecked(False)
    for predictions, reference, message in cases:
        widget.choose(image="image", reference=reference, predictions=predictions)
        widget.run()  # shapes and dtypes are refused at once, value ranges by the worker
        qtbot.waitUntil(lambda: widget._worker is None, timeout=20000)
        assert message in widget.status.text() and message in widget.last_error
        assert widget.comparison is None


def test_nan_cells_sort_last():
    from napari_softseg.widgets.compare import _NumericItem

    a, b = _NumericItem("1"), _NumericItem("n/a")
    a.setData(Qt.ItemDataRole.UserRole, 1.0)
    b.setData(Qt.ItemDataRole.UserRole, math.nan)
    assert a < b and not b < a
