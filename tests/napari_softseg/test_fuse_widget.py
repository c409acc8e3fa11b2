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
    # table: sensitivity/specificity of each rater against the fused map >= 0.5 inside the region
    ref = (fusion.average(stack) >= 0.5)[roi]
    rows = widget.table_rows()
    for name, r in zip([lyr.name for lyr in raters], stack):
        assert rows[name][0] == pytest.approx(metrics.recall(r[roi], ref), abs=1e-4)
        assert rows[name][1] == pytest.approx(metrics.specificity(r[roi], ref), abs=1e-4)
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

    out = _fuse(widget, qtbot, "STAPLE")
    expected = fusion.staple(stack, roi=roi)
    np.testing.assert_array_equal(widget.result_layers["fused"].data, expected.binary())
    np.testing.assert_allclose(widget.result_layers["probability"].data, expected.probability, atol=1e-6)
    rows = widget.table_rows()
    for i, lyr in enumerate(raters):
        assert rows[lyr.name] == pytest.approx([expected.sensitivity[i], expected.specificity[i]], abs=1e-4)
    assert "STAPLE estimates inside the region" in widget._caption.value

    # the whole volume gives SimpleITK's convention (a different prior, hence a different result)
    _fuse(widget, qtbot, "STAPLE", roi="whole volume")
    whole = fusion.staple(stack)
    np.testing.assert_allclose(widget.result_layers["probability"].data, whole.probability, atol=1e-6)
    assert out.staple.prior != pytest.approx(whole.prior)
    # results replace the previous ones instead of piling up
    names = [lyr.name for lyr in viewer.layers]
    assert names.count("disagreement (entropy)") == 1 and names.count("STAPLE probability") == 1

    # save: NIfTI in the phantom's own geometry + sidecar with the method and the table
    path = widget.save(tmp_path / "fused.nii.gz")
    img = nib.load(path)
    geom = DisplayGeometry.from_metadata(raters[0].metadata)
    np.testing.assert_array_equal(img.affine, geom.affine)
    np.testing.assert_array_equal(geom.to_display(np.asarray(img.dataobj)), whole.binary())
    side = json.loads((tmp_path / "fused.json").read_text())
    assert side["fusion"]["method"] == "STAPLE" and side["fusion"]["raters"] == [lyr.name for lyr in raters]
    assert side["fusion"]["region"] == "whole volume"


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
