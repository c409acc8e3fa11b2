"""The "Fuse raters" widget in a real viewer: layers equal the engine's results, table, errors, save."""

import json

import nibabel as nib
import numpy as np
import pytest

from softseg import fusion, metrics
from softseg.confidence import ConfidenceScale
from softseg.geometry import DisplayGeometry

from napari_softseg._sample_data import phantom_layers
from napari_softseg.widgets.fuse import FuseWidget

SHAPE = (36, 40, 16)  # phantom grid, file order


@pytest.fixture(scope="module")
def phantom_tuples():
    return phantom_layers(SHAPE, n_raters=4, seed=3)


@pytest.fixture
def setup(make_napari_viewer, qtbot, phantom_tuples):
    viewer = make_napari_viewer()
    for data, kwargs, kind in phantom_tuples:
        getattr(viewer, f"add_{kind}")(data.copy(), **{**kwargs, "metadata": dict(kwargs["metadata"])})
    widget = FuseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fuse raters")
    raters = [lyr for lyr in viewer.layers if lyr.name.startswith("rater-")]
    return viewer, widget, raters


def _fuse(widget, qtbot, method, layers=None, roi=None):
    widget.method = method
    if roi is not None:
        widget._roi.value = roi
    worker = widget.run(layers)
    assert worker is not None, widget._message.value
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert widget.last_output is not None and widget.last_output.method == method, widget._message.value
    return widget.last_output


def test_every_method_equals_the_engine_on_phantom_raters(setup, qtbot, tmp_path):
    viewer, widget, raters = setup
    widget.set_raters(raters)
    widget._margin.value = 2  # small phantom: a 10-voxel margin would cover the whole volume
    stack = np.stack([np.asarray(r.data) for r in raters])
    roi = fusion.default_roi(stack, margin=2)
    assert roi.sum() < roi.size
    dis = fusion.disagreement(stack)

    out = _fuse(widget, qtbot, "average")
    fused = widget.result_layers["fused"]
    assert type(fused).__name__ == "Image" and fused.name == "fused (average)"
    np.testing.assert_array_equal(fused.data, fusion.average(stack))
    assert fused.colormap.colors[0][3] == 0.0 and fused.colormap.colors[-1][3] == 1.0  # transparent -> colour
    np.testing.assert_array_equal(widget.result_layers["disagreement"].data, dis)
    # table: each rater against the (soft) fused map inside the region, soft counts, by hand
    w = fusion.average(stack)[roi].astype(np.float64)
    rows = widget.table_rows()
    for name, r in zip([lyr.name for lyr in raters], stack):
        d = r[roi].astype(np.float64)
        assert rows[name][0] == pytest.approx((w * d).sum() / w.sum(), abs=1e-4)
        assert rows[name][1] == pytest.approx(((1 - w) * (1 - d)).sum() / (1 - w).sum(), abs=1e-4)
    np.testing.assert_allclose(widget.dice_matrix(), metrics.pairwise_dice(stack), atol=1e-3)

    for method, engine in (
        ("majority vote", fusion.majority_vote),
        ("union", fusion.union),
        ("intersection", fusion.intersection),
    ):
        _fuse(widget, qtbot, method)
        layer = widget.result_layers["fused"]
        assert type(layer).__name__ == "Labels" and layer.name == f"fused ({method})"
        np.testing.assert_array_equal(layer.data, engine(stack))

    # STAPLE's fused map is its probability (what softseg fuse writes), float32
    out = _fuse(widget, qtbot, "STAPLE")
    expected = fusion.staple(stack, roi=roi)
    fused = widget.result_layers["fused"]
    assert type(fused).__name__ == "Image" and fused.name == "fused (STAPLE)"
    np.testing.assert_array_equal(fused.data, expected.probability.astype(np.float32))
    assert "probability" not in widget.result_layers
    rows = widget.table_rows()
    for i, lyr in enumerate(raters):
        assert rows[lyr.name] == pytest.approx([expected.sensitivity[i], expected.specificity[i]], abs=1e-4)
    assert "STAPLE's estimates inside the region" in widget._caption.value

    # the whole volume gives SimpleITK's convention (a different prior, hence a different result)
    _fuse(widget, qtbot, "STAPLE", roi="whole volume")
    whole = fusion.staple(stack)
    np.testing.assert_array_equal(widget.result_layers["fused"].data, whole.probability.astype(np.float32))
    assert out.staple.prior != pytest.approx(whole.prior)
    # results replace the previous ones instead of piling up
    names = [lyr.name for lyr in viewer.layers]
    assert names.count("disagreement (entropy)") == 1 and names.count("fused (STAPLE)") == 1

    # save: NIfTI in the phantom's own geometry + sidecar with the method and the table
    path = widget.save(tmp_path / "fused.nii.gz")[0]
    img = nib.load(path)
    geom = DisplayGeometry.from_metadata(raters[0].metadata)
    np.testing.assert_array_equal(img.affine, geom.affine)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(geom.to_display(np.asarray(img.dataobj)), whole.probability.astype(np.float32))
    side = json.loads((tmp_path / "fused.json").read_text())
    assert side["kind"] == "soft" and side["fusion"]["method"] == "staple"
    assert side["fusion"]["choice"] == "STAPLE" and side["fusion"]["region"] == "whole volume"
    assert [r["name"] for r in side["fusion"]["raters"]] == [lyr.name for lyr in raters]
    np.testing.assert_allclose([r["sensitivity"] for r in side["fusion"]["raters"]], whole.sensitivity)
    # the sidecar reader reads it back as a fused map
    from softseg.sidecar import read_rater_sidecar

    assert read_rater_sidecar(path).written_by == "fuse"


def test_level_layers_use_their_own_scales_and_soft_staple(setup, qtbot):
    viewer, widget, raters = setup
    a, b = raters[0], raters[1]
    # rater a painted with the paper's scale (levels 1..3), rater b with 5 equal steps
    levels_a = np.asarray(a.data) * 3
    levels_a[np.asarray(raters[2].data) > np.asarray(a.data)] = 1
    levels_b = np.asarray(b.data) * 4
    pa, pb = ConfidenceScale.from_paper(), ConfidenceScale.linear(5)
    la = viewer.add_labels(levels_a, name="A levels", metadata={"softseg_confidence": pa.as_dict(), **a.metadata})
    lb = viewer.add_labels(levels_b, name="B levels", metadata={"softseg_confidence": pb.as_dict(), **b.metadata})
    soft_a, soft_b = pa.to_soft(levels_a), pb.to_soft(levels_b)
    stack = np.stack([soft_a, soft_b])

    widget.set_raters([la, lb])
    out = _fuse(widget, qtbot, "average")
    np.testing.assert_array_equal(widget.result_layers["fused"].data, fusion.average(stack))

    # binary STAPLE refuses confidence levels and offers soft STAPLE
    widget.method = "STAPLE"
    widget.run([la, lb])
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert "needs binary (0/1) raters" in widget._message.value and "soft STAPLE" in widget._message.value
    assert not widget._switch.native.isHidden()
    widget._switch.native.click()
    assert widget.method == "soft STAPLE"
    out = _fuse(widget, qtbot, "soft STAPLE", [la, lb])
    expected = fusion.staple(stack, soft=True, roi=fusion.default_roi(stack, margin=10))
    fused = widget.result_layers["fused"]
    assert type(fused).__name__ == "Image"
    np.testing.assert_allclose(fused.data, expected.probability.astype(np.float32))
    np.testing.assert_allclose(out.sensitivity, expected.sensitivity)


def test_bad_input_is_explained(setup, qtbot):
    viewer, widget, raters = setup
    assert widget.run([raters[0]]) is None
    assert "at least two rater layers; 1 selected" in widget._message.value
    odd = viewer.add_labels(np.zeros((5, 6, 7), np.uint8), name="odd")
    assert widget.run([raters[0], odd]) is None
    msg = widget._message.value
    assert "'odd' has shape (5, 6, 7)" in msg and f"has {tuple(raters[0].data.shape)}" in msg
    assert widget.result_layers == {}
    with pytest.raises(ValueError, match="choose one of"):
        widget.method = "median"


# ------------------------------------------------------------------ one engine, every path
# Same rater files -> identical fused maps, probabilities and rater statistics through the Python
# API, `softseg fuse --json`, the Fuse widget (Plugins menu and direct) and the training data.
CROSS_SHAPE = (30, 34, 22)  # file order
# a permuted, flipped affine: display order differs from file order on every path that reorients
CROSS_AFFINE = np.array(
    [[0.0, 0.0, -1.5, 20.0], [1.1, 0.0, 0.0, -15.0], [0.0, -0.9, 0.0, 12.0], [0.0, 0.0, 0.0, 1.0]]
)
PAPER = ConfidenceScale.from_paper()
#: case -> (method, widget choice, extra CLI args, raters used: indices into rater-1..4)
CROSS_CASES = {
    "staple": ("staple", "STAPLE", [], (1, 2, 3)),
    "soft-staple": ("staple", "soft STAPLE", ["--soft"], (0, 1, 2, 3)),
    "average": ("average", "average", [], (0, 1, 2, 3)),
    "majority": ("majority", "majority vote", [], (1, 2, 3)),
}
CROSS_PATHS = ("api", "cli", "training", "plugin_menu", "direct")


@pytest.fixture(scope="module")
def cross_dataset(tmp_path_factory):
    """DATASET/sub-01: an image, rater-1 painted with the paper's levels (export sidecar),
    rater-2..4 binary (phantom-style sidecars)."""
    from scipy import ndimage

    from softseg.io import save_volume

    root = tmp_path_factory.mktemp("cross")
    folder = root / "sub-01"
    folder.mkdir()
    z = np.indices(CROSS_SHAPE, sparse=True)
    centre = (13.0, 17.0, 10.0)
    r2 = sum(((zi - c) / r) ** 2 for zi, c, r in zip(z, centre, (5.0, 6.0, 4.0)))
    rng = np.random.default_rng(7)
    blobs = [r2 < 1.0 + d for d in (0.0, 0.35, -0.25, 0.1)]
    blobs[3] = np.roll(blobs[3], 1, axis=1)
    image = (100 * (r2 < 1.2) + rng.normal(0, 5, CROSS_SHAPE)).astype(np.float32)
    save_volume(folder / "image.nii.gz", image, affine=CROSS_AFFINE)
    levels = np.where(ndimage.binary_erosion(blobs[0]), 3, np.where(blobs[0], 2, 0)).astype(np.uint8)
    levels[blobs[2] & ~blobs[0]] = 1
    side = {"rater": "1", "kind": "labels", "softseg_confidence": PAPER.as_dict(), "software": "napari-softseg test"}
    save_volume(folder / "rater-1.nii.gz", levels, affine=CROSS_AFFINE, sidecar=side)
    for i in range(1, 4):
        save_volume(
            folder / f"rater-{i + 1}.nii.gz", blobs[i].astype(np.uint8), affine=CROSS_AFFINE,
            sidecar={"rater": str(i + 1), "kind": "labels"},
        )
    values = [PAPER.to_soft(levels)] + [b.astype(np.float32) for b in blobs[1:]]
    return root, [folder / f"rater-{i}.nii.gz" for i in range(1, 5)], np.stack(values)


def _api(paths, method, soft):
    """The Python API on the files: the one sidecar reader, the one conversion, fuse."""
    from softseg.confidence import as_rater_values
    from softseg.io import load_volume
    from softseg.sidecar import read_rater_sidecar

    arrays = []
    for p in paths:
        side = read_rater_sidecar(p)
        arrays.append(as_rater_values(load_volume(p, label=True).array, scale=side.scale, name=str(p))[0])
    return fusion.fuse(np.stack(arrays), method, soft=soft)


def _by_hand(values, method):
    """Independent reference: region, fused map and statistics by hand (SimpleITK for STAPLE)."""
    union = np.any(values > 0, axis=0)
    idx = np.nonzero(union)
    box = tuple(slice(max(int(i.min()) - 10, 0), int(i.max()) + 11) for i in idx)
    crop = values[(slice(None), *box)]
    if method == "average":
        fused = values.mean(axis=0)
        w = crop.mean(axis=0).astype(np.float64)
    elif method == "majority":
        fused = (values.sum(axis=0) > values.shape[0] / 2).astype(np.uint8)
        w = fused[box].astype(np.float64)
    else:
        sitk = pytest.importorskip("SimpleITK")
        filt = sitk.STAPLEImageFilter()
        prob = sitk.GetArrayFromImage(filt.Execute([sitk.GetImageFromArray(c.astype(np.uint8)) for c in crop]))
        fused = np.zeros(values.shape[1:])
        fused[box] = prob
        return fused, np.array(filt.GetSensitivity()), np.array(filt.GetSpecificity())
    d = crop.reshape(len(crop), -1).astype(np.float64)
    w = w.reshape(-1)
    sens = (d * w).sum(axis=1) / w.sum()
    spec = ((1 - d) * (1 - w)).sum(axis=1) / (1 - w).sum()
    return fused, sens, spec


@pytest.mark.parametrize("case", sorted(CROSS_CASES))
@pytest.mark.parametrize("path", CROSS_PATHS)
def test_same_numbers_on_every_path(path, case, cross_dataset, tmp_path, capsys, request):
    method, choice, cli_extra, used = CROSS_CASES[case]
    root, all_paths, values = cross_dataset
    paths = [all_paths[i] for i in used]
    soft = True if case == "soft-staple" else None
    reference = _api(paths, method, soft)
    if case != "soft-staple":  # the API itself against an independent computation
        fused, sens, spec = _by_hand(values[list(used)], method)
        np.testing.assert_allclose(reference.fused, fused, atol=1e-6)
        np.testing.assert_allclose(reference.sensitivity, sens, atol=1e-6)
        np.testing.assert_allclose(reference.specificity, spec, atol=1e-6)

    if path == "api":
        got = reference
        fused = got.fused
    elif path == "cli":
        from softseg.cli import main
        from softseg.io import load_volume

        out = tmp_path / "fused.nii.gz"
        assert main(["fuse", *map(str, paths), "--method", method, *cli_extra, "-o", str(out), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        fused = load_volume(out).array
        assert fused.dtype == reference.fused.dtype
        sens = np.array([r["sensitivity"] for r in summary["raters"]])
        spec = np.array([r["specificity"] for r in summary["raters"]])
        np.testing.assert_array_equal(fused, reference.fused)
        np.testing.assert_allclose(sens, reference.sensitivity, rtol=1e-12, atol=0)
        np.testing.assert_allclose(spec, reference.specificity, rtol=1e-12, atol=0)
        np.testing.assert_allclose(summary["pairwise_dice"], reference.pairwise_dice, rtol=1e-12)
        return
    elif path == "training":
        from softseg import data

        info = data.scan_dataset(root)
        sub = data.load_subject(info.subjects[0])
        raters = sub.raters[list(used)]
        got = fusion.fuse(raters, method, soft=soft)
        fused = sub.geometry.from_display(got.fused)
        # what the trainer fits is that result's target (STAPLE: its consensus)
        target = data.fuse_raters(raters, method)
        np.testing.assert_array_equal(target[0], got.target.astype(np.float32))
        if method == "staple":
            np.testing.assert_array_equal(
                sub.geometry.from_display(target[0]), (reference.probability >= 0.5).astype(np.float32)
            )
    else:  # the Fuse widget, opened from the Plugins menu or directly, on layers from the reader
        from conftest import open_widget_by

        from softseg.geometry import DisplayGeometry

        qtbot = request.getfixturevalue("qtbot")
        viewer = request.getfixturevalue("make_napari_viewer")()
        layers = []
        for p in paths:
            layers.extend(viewer.open(str(p), plugin="napari-softseg"))
        widget = open_widget_by(path, viewer, "fuse")
        widget.method = choice
        worker = widget.run(layers)
        assert worker is not None, widget._message.value
        qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
        assert widget.last_output is not None, widget._message.value
        got = widget.last_output.result
        geom = DisplayGeometry.from_metadata(layers[0].metadata)
        fused = geom.from_display(np.asarray(widget.result_layers["fused"].data))
        rows = widget.table_rows()
        for j, lyr in enumerate(layers):
            assert rows[lyr.name] == pytest.approx([reference.sensitivity[j], reference.specificity[j]], abs=5e-5)
    np.testing.assert_array_equal(fused, reference.fused)
    if reference.probability is not None:
        np.testing.assert_array_equal(fused, reference.probability)  # STAPLE: its probability
    assert got.method == reference.method and got.soft == reference.soft
    np.testing.assert_allclose(got.sensitivity, reference.sensitivity, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.specificity, reference.specificity, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.pairwise_dice, reference.pairwise_dice, rtol=1e-12)
