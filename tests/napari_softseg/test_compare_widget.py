"""The Compare candidates dock in a real napari viewer (Xvfb): the engine's numbers, the columns
that matter first, the grid view, the reference default, the report, one table on every path."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage

from annotate_support import Dialogs
from napari_softseg._metadata import OWNER_KEY, role, set_role
from prediction_support import prediction_metadata
from softseg import compare
from softseg.metrics import METRICS
from softseg.phantom import phantom

SCALE = (2.0, 1.0, 1.0)
CANDS = ("softseg", "conventional", "soft-sig-wing")


@pytest.fixture(scope="module")
def arrays():
    ph = phantom((40, 40, 10), n_raters=3, seed=2)
    truth = np.moveaxis(ph.truth, 2, 0)
    return {
        "image": np.moveaxis(ph.image, 2, 0),
        "truth": truth,
        "raters": np.moveaxis(ph.raters, 3, 1),
        "softseg": np.clip(ndimage.gaussian_filter(truth, 1.0), 0, 1).astype(np.float32),
        "conventional": np.clip(ndimage.gaussian_filter(truth, 0.4), 0, 1).astype(np.float32),
        "soft-sig-wing": (truth >= 0.5).astype(np.float32),
    }


def add_layers(viewer, arrays):
    viewer.add_image(arrays["image"], name="image", scale=SCALE, metadata=set_role({}, "image"))
    viewer.add_image(arrays["truth"], name="truth", scale=SCALE)
    for i, r in enumerate(arrays["raters"]):
        viewer.add_labels(r, name=f"rater-{i + 1}", scale=SCALE,
                          metadata=set_role({}, "rater"))
    for name, t in zip(CANDS, (0.3, 0.5, 0.5)):
        viewer.add_image(arrays[name], name=f"image · {name}", scale=SCALE,
                         metadata=prediction_metadata(t, candidate=name))


@pytest.fixture
def setup(make_napari_viewer, open_widget, qtbot, arrays):
    viewer = make_napari_viewer()
    add_layers(viewer, arrays)
    widget = open_widget(viewer, "compare")
    return viewer, widget, qtbot


def _run(widget, qtbot):
    widget.comparison = None
    widget.run()
    qtbot.waitUntil(lambda: widget.comparison is not None and widget._worker is None,
                    timeout=30000)


def _titles(cands):
    return [f"image · {c}" for c in cands]


def test_table_equals_engine_shows_headline_metrics_first_and_figures_are_drawn(
        setup, arrays, tmp_path):
    viewer, widget, qtbot = setup
    # the reference defaults to the truth, not the MR image (which is not even offered)
    refs = [widget.reference_combo.itemText(i) for i in range(widget.reference_combo.count())]
    assert widget.reference_combo.currentText() == "truth" and "image" not in refs
    widget.choose(reference="truth", predictions=_titles(CANDS),
                  raters=["rater-1", "rater-2", "rater-3"])
    widget.own_optimum.setChecked(True)
    _run(widget, qtbot)
    expected = compare.compare_predictions(
        {k: arrays[k] for k in CANDS}, arrays["truth"],
        thresholds={"softseg": 0.3, "conventional": 0.5, "soft-sig-wing": 0.5},
        raters=arrays["raters"].astype(np.float32), spacing=SCALE)
    shown = widget.table_values()
    # rows are candidates, not repeated layer names
    assert set(shown) == set(CANDS)
    # the headline metrics first, in the registry's order, Dice first, threshold last
    cols = widget.table_columns()
    assert cols[:3] == ["dice", "precision", "recall"] and cols[-1] == "threshold"
    assert set(cols) == {k for k, s in METRICS.items() if s.level == 1}
    header = [widget.table.horizontalHeaderItem(i).text() for i in range(1, len(cols) + 1)]
    assert header == [METRICS[k].header for k in cols]
    for cand, values in shown.items():
        for metric, value in values.items():
            assert value == pytest.approx(expected.rows[cand][0][metric], nan_ok=True), metric
    # more columns on demand: every metric with a value, equal to the engine
    widget.set_columns(list(METRICS))
    every = widget.table_values()
    assert {"hausdorff_mm", "entropy_error", "soft_dice"} <= set(every["softseg"])
    for metric, value in every["softseg"].items():
        assert value == pytest.approx(expected.rows["softseg"][0][metric], nan_ok=True), metric
    # the columns menu holds every metric of the registry
    assert set(widget._column_actions) == set(METRICS)
    widget._column_actions["hausdorff_mm"].setChecked(False)
    assert "hausdorff_mm" not in widget.table_columns()
    # every figure of the papers, the entropy plot included (raters chosen), really drawn
    titles = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
    assert titles == [compare.FIGURES[k][0] for k in compare.FIGURES]
    for canvas in widget._canvases.values():
        canvas.draw()
        assert np.asarray(canvas.buffer_rgba())[..., :3].std() > 10
        assert canvas.figure.axes[0].get_legend() is not None  # plots have legends

    # sortable: by Dice, descending; same numbers whatever the order
    widget.set_columns(["dice", "ece"])
    dice_col = 1 + widget.table_columns().index("dice")
    widget.table.sortItems(dice_col, Qt.SortOrder.DescendingOrder)
    dices = [widget.table.item(r, dice_col).data(Qt.ItemDataRole.UserRole) for r in range(3)]
    assert dices == sorted(dices, reverse=True)


def test_save_report_writes_the_engine_report_and_asks_before_replacing(setup, arrays, tmp_path):
    viewer, widget, qtbot = setup
    widget.choose(reference="truth", predictions=_titles(CANDS[:2]))
    widget.own_optimum.setChecked(True)
    _run(widget, qtbot)
    out = tmp_path / "report"
    index = widget.save_report(out)
    assert index == out / "index.html" and (out / "samples.csv").exists()
    with open(out / "samples.csv", newline="") as fh:
        rows = {r["candidate"]: r for r in csv.DictReader(fh)}
    table = widget.table_values()
    for cand in CANDS[:2]:
        assert float(rows[cand]["dice"]) == pytest.approx(table[cand]["dice"])
    before = (out / "samples.csv").read_bytes()
    dialogs = Dialogs("Cancel")
    assert widget.save_report(out) is None
    assert dialogs.done and "index.html" in dialogs.seen[0]
    assert (out / "samples.csv").read_bytes() == before


def test_common_threshold_reruns_and_grid_view_titles_each_candidate(setup, arrays):
    viewer, widget, qtbot = setup
    widget.choose(reference="truth", predictions=_titles(CANDS[:2]), image="image")
    widget.slider.setValue(0.4)
    _run(widget, qtbot)
    assert widget.thresholds_used == {"softseg": 0.4, "conventional": 0.4}
    assert "entropy" not in widget._canvases  # no raters chosen: no entropy plot
    n_before = len(viewer.layers)
    viewer.scene.camera.zoom = 40.0  # far off: the grid must refit it

    widget.grid_check.setChecked(True)
    assert viewer.canvas.grid.enabled and viewer.canvas.grid.stride == 3
    assert len(viewer.layers) == n_before + 6
    grid = viewer.layers[:6]
    assert all(role(ly) == "compare_view" for ly in grid)
    # each view is titled with its candidate, names are not repeated
    assert [ly.name for ly in grid] == ["softseg", "softseg probability", "softseg binarised",
                                        "conventional", "conventional probability",
                                        "conventional binarised"]
    assert grid[0].name_overlay.visible and grid[3].name_overlay.visible
    assert grid[1].colorbar.visible and grid[1].name_overlay.visible  # titled colour bar
    assert viewer.scene.camera.zoom < 40.0  # refitted
    offered = [widget.prediction_list.item(i).text() for i in range(widget.prediction_list.count())]
    assert offered == ["truth", *_titles(CANDS)]  # grid views are never offered
    refs = [widget.reference_combo.itemText(i) for i in range(widget.reference_combo.count())]
    assert not [r for r in refs if "softseg" in r and "image" not in r]
    assert all(ly.visible for ly in grid) and not any(ly.visible for ly in viewer.layers[6:])
    assert grid[0].data is viewer.layers["image"].data  # image views share the data
    np.testing.assert_array_equal(grid[2].data.astype(bool), arrays["softseg"] >= np.float32(0.4))
    widget.slider.setValue(0.6)  # the grid overlays follow the one threshold control
    np.testing.assert_array_equal(grid[5].data.astype(bool),
                                  arrays["conventional"] >= np.float32(0.6))
    qtbot.waitUntil(lambda: widget.thresholds_used.get("conventional") == pytest.approx(0.6)
                    and widget._worker is None, timeout=30000)

    widget.grid_check.setChecked(False)
    assert not viewer.canvas.grid.enabled and len(viewer.layers) == n_before
    assert all(ly.visible for ly in viewer.layers)
    assert viewer.scene.camera.zoom < 40.0


def test_bad_input_is_explained(setup, arrays):
    viewer, widget, qtbot = setup
    viewer.add_labels(np.zeros((3, 4, 5), dtype=np.uint8), name="small")
    viewer.add_image(arrays["image"], name="float image", scale=SCALE)
    viewer.add_image(arrays["softseg"], name="plain", scale=SCALE)  # no model card
    widget.own_optimum.setChecked(True)
    widget.choose(reference="truth", predictions=["image · softseg", "plain"])
    widget.run()
    assert "'plain' is not a model's prediction" in widget.last_error
    widget.own_optimum.setChecked(False)
    cases = [
        (["image · softseg"], "truth", "at least two"),
        (["image · softseg", "float image"], "truth", "must lie in [0, 1]"),
        (["image · softseg", "image · conventional"], "small", "shape (3, 4, 5)"),
    ]
    for predictions, reference, message in cases:
        widget.choose(reference=reference, predictions=predictions)
        widget.run()  # shapes are refused at once, value ranges by the worker
        qtbot.waitUntil(lambda: widget._worker is None, timeout=30000)
        assert message in widget.status.text() and message in widget.last_error
        assert "--" not in widget.last_error and "softseg predict" not in widget.last_error
        assert widget.comparison is None


def test_nan_cells_sort_last():
    from napari_softseg.widgets.compare._table import NumericItem

    a, b = NumericItem("1"), NumericItem("n/a")
    a.setData(Qt.ItemDataRole.UserRole, 1.0)
    b.setData(Qt.ItemDataRole.UserRole, math.nan)
    assert a < b and not b < a


def test_healthy_subject_all_zero_layers(make_napari_viewer, qtbot):
    """A lesion-free subject: both models output exact zeros, the reference is empty; the table
    shows the empty-mask policy's values instead of an error."""
    from napari_softseg.widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    z = np.zeros((6, 12, 12), dtype=np.float32)
    viewer.add_image(z, name="image", metadata=set_role({}, "image"))
    viewer.add_labels(z.astype(np.uint8), name="reference")
    for name in ("softseg", "conventional"):
        viewer.add_image(z.copy(), name=name, metadata=prediction_metadata(0.5, candidate=name))
    widget = CompareWidget(viewer)
    widget.choose(reference="reference", predictions=["softseg", "conventional"])
    _run(widget, qtbot)
    assert widget.last_error == ""
    values = widget.table_values()["softseg"]
    assert (values["dice"], values["rvd"], values["ece"]) == (1.0, 0.0, 0.0)
    widget.set_columns(["hausdorff_mm"])
    assert widget.table_values()["softseg"]["hausdorff_mm"] == 0.0


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
    viewer.add_image(data.images[0], name="image", metadata=set_role({}, "image"), **kw)
    viewer.add_image(ref.astype(np.float32), name="reference", **kw)
    for i, r in enumerate(data.raters):
        viewer.add_labels(r.astype(np.uint8), name=f"rater-{i}", **kw)
    for cand, p in preds.items():
        viewer.add_image(p, name=cand, metadata=prediction_metadata(cards[cand], candidate=cand),
                         **kw)
    cw = open_widget(viewer, "compare")
    cw.choose(reference="reference", predictions=list(preds),
              raters=[f"rater-{i}" for i in range(len(data.raters))])
    cw.own_optimum.setChecked(True)
    _run(cw, qtbot)
    cw.set_columns(list(METRICS))
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
    # the grid views' owner is the candidate, not a Python object
    cw.choose(reference="reference", predictions=list(preds), image="image")
    cw.grid_check.setChecked(True)
    owners = {ly.metadata[OWNER_KEY] for ly in viewer.layers if role(ly) == "compare_view"}
    assert len(owners) == 2
    cw.grid_check.setChecked(False)
