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


# ----------------------------------------------------------- one table on every path
TINY = ["--epochs", "1", "--crop", "24", "24", "--width", "4", "--depth", "2",
        "--batch-size", "4", "--device", "cpu", "--test-fraction", "0.25",
        "--val-fraction", "0.25"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny trained models on a phantom dataset, and softseg compare's samples.csv on one
    of their test subjects (the MODEL form of the command)."""
    import json

    from softseg.cli import main
    from softseg.phantom import write_dataset

    root = tmp_path_factory.mktemp("paths")
    dataset = write_dataset(root / "ds", n_subjects=4, shape=(24, 24, 8), n_raters=3, seed=0)
    run = root / "run"
    assert main(["compare", "--train", "conventional", "softseg", "--dataset", str(dataset),
                 "--repeats", "1", "--no-stats", "--ground-truth", "truth", "--out", str(run),
                 *TINY]) == 0
    models = [str(run / "models" / f"{c}-r0.safetensors") for c in ("conventional", "softseg")]
    subject = json.loads((run / "run_state.json").read_text())["units"]["softseg/r0"]["split"][
        "test"][0]
    report = root / "report"
    assert main(["compare", *models, "--dataset", str(dataset), "--out", str(report),
                 "--ground-truth", "majority", "--subjects", subject]) == 0
    with open(report / "samples.csv", newline="") as fh:
        samples = {r["candidate"]: r for r in csv.DictReader(fh)}
    return dataset, models, subject, samples, root


def test_same_numbers_on_every_path(trained, make_napari_viewer, open_widget, qtbot, capsys):
    """softseg evaluate --json, softseg compare's CSV, the Compare widget's table and the
    Threshold widget's readout give the same numbers for the same prediction (issue 12)."""
    import json

    from softseg.cli import main
    from softseg.data import load_subject, scan_dataset
    from softseg.io import save_volume
    from softseg.modelfile import load_model
    from softseg.protocol import _predict, ground_truth

    dataset, models, subject, samples, root = trained
    info = scan_dataset(dataset)
    data = load_subject(info.subject(subject))
    ref = ground_truth(info.subject(subject), data, "majority")
    geom = data.geometry
    preds, cards = {}, {}
    for path, cand in zip(models, ("conventional", "softseg")):
        loaded = load_model(path)
        preds[cand] = _predict(loaded, data)
        cards[cand] = float(loaded.card.threshold)

    # softseg evaluate on files in the subject's own geometry (voxel size from the affine)
    folder = root / f"files-{open_widget.path}"
    folder.mkdir()
    save_volume(folder / "pred.nii.gz", geom.from_display(preds["softseg"]), affine=geom.affine)
    save_volume(folder / "ref.nii.gz", geom.from_display(ref).astype(np.uint8),
                affine=geom.affine)
    rater_files = []
    for i, r in enumerate(data.raters):
        rater_files.append(str(folder / f"rater-{i}.nii.gz"))
        save_volume(rater_files[-1], geom.from_display(r).astype(np.uint8), affine=geom.affine)
    capsys.readouterr()
    assert main(["evaluate", str(folder / "pred.nii.gz"), str(folder / "ref.nii.gz"),
                 "--threshold", repr(cards["softseg"]), "--raters", *rater_files,
                 "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)

    # the widgets, opened as users open them, on layers in display order
    viewer = make_napari_viewer()
    kw = {"scale": geom.scale}
    viewer.add_image(data.images[0], name="image", **kw)
    viewer.add_image(ref.astype(np.float32), name="reference", **kw)
    for i, r in enumerate(data.raters):
        viewer.add_labels(r.astype(np.uint8), name=f"rater-{i}", **kw)
    for cand, p in preds.items():
        viewer.add_image(p, name=cand, metadata=prediction_metadata(cards[cand], candidate=cand),
                         **kw)
    cw = open_widget(viewer, "compare")
    cw.choose(image="image", reference="reference", predictions=list(preds),
              raters=[f"rater-{i}" for i in range(len(data.raters))])
    cw.own_optimum.setChecked(True)
    _run(cw, qtbot)
    table = cw.table_values()["softseg"]
    tw = open_widget(viewer, "threshold")
    tw.reference_combo.setCurrentText("reference")
    tw.select_layers(["softseg"])  # the slider goes to the layer's optimal threshold
    tw.update_readouts()
    readout = tw.last_readouts["softseg"]

    csv_row = samples["softseg"]
    counts = ("dice", "precision", "recall", "specificity", "rvd", "avd", "ltpr", "lfdr",
              "binary_volume_ml", "threshold")
    checked = 0
    for key in table:
        want = cli[key]
        want = float("nan") if want is None else float(want)
        # exact for counts; soft sums differ only by float64 summation order (display vs file
        # axis order), Hausdorff by the order of the per-axis terms
        tol = {} if key in counts else {"rel": 1e-9, "abs": 1e-12}
        assert table[key] == pytest.approx(want, nan_ok=True, **tol), key
        assert float(csv_row[key]) == pytest.approx(want, nan_ok=True, **tol), key
        checked += 1
    assert checked >= 20
    for key, value in readout.items():
        tol = {} if key in counts else {"rel": 1e-9}
        assert value == pytest.approx(cli[key], **tol), key
    assert set(readout) == {"dice", "precision", "recall", "binary_volume_ml", "soft_volume_ml"}


def test_healthy_subject_all_zero_layers(make_napari_viewer, qtbot):
    """A lesion-free subject: both models output exact zeros, the reference is empty; the table
    shows the empty-mask policy's values instead of an error."""
    from napari_softseg.widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    z = np.zeros((6, 12, 12), dtype=np.float32)
    viewer.add_image(z, name="image")
    viewer.add_labels(z.astype(np.uint8), name="reference")
    for name in ("softseg", "conventional"):
        viewer.add_image(z.copy(), name=name, metadata=prediction_metadata(0.5, candidate=name))
    widget = CompareWidget(viewer)
    widget.choose(image="image", reference="reference", predictions=["softseg", "conventional"])
    _run(widget, qtbot)
    assert widget.last_error == ""
    values = widget.table_values()["softseg"]
    assert (values["dice"], values["rvd"], values["hausdorff_mm"], values["ece"]) == (1.0, 0.0,
                                                                                    0.0, 0.0)
