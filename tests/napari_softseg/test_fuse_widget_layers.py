"""The Fuse widget on the path users take (issue 11): layers tracked by uid and role, outputs never
offered as raters, removed layers forgotten (also while a fusion runs), results updated in place,
saving never replaces a file without the user's "Replace", named notifications, a compact dock.

Every test runs through the Plugins menu (wrapped viewer) and, where it takes ``open_widget``,
directly as well.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from annotate_support import Dialogs, click
from qtpy.QtWidgets import QApplication

from napari_softseg._metadata import role
from napari_softseg._sample_data import phantom_layers

SHAPE = (36, 40, 16)  # phantom grid, file order
RATERS = ["rater-1", "rater-2", "rater-3", "rater-4"]
OUTPUT_ROLES = {"fused", "staple_probability", "disagreement"}


@pytest.fixture(scope="module")
def phantom_tuples():
    return phantom_layers(SHAPE, n_raters=4, seed=3)


def _add_phantom(viewer, tuples):
    for data, kwargs, kind in tuples:
        getattr(viewer, f"add_{kind}")(data.copy(), **{**kwargs, "metadata": dict(kwargs["metadata"])})
    return [viewer.layers[name] for name in RATERS]


def _offered(widget):
    """The names the Raters list shows (read from the Qt list, as a person sees it)."""
    native = widget._raters.native
    return [native.item(i).text() for i in range(native.count())]


def _selected(widget):
    return [item.text() for item in widget._raters.native.selectedItems()]


def _names(viewer):
    return [lyr.name for lyr in viewer.layers]


def _fuse(widget, qtbot, method):
    widget.method = method
    click(widget._run)  # the Fuse button, as a person presses it
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
    assert widget.last_output is not None and widget.last_output.method == method, widget._message.value


def _errors(start):
    from napari.utils.notifications import notification_manager

    return [n for n in notification_manager.records[start:] if str(n.severity) == "error"]


def _note_count():
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_outputs_are_never_offered_as_raters(make_napari_viewer, open_widget, qtbot, tmp_path, phantom_tuples):
    viewer = make_napari_viewer()
    raters = _add_phantom(viewer, phantom_tuples)
    widget = open_widget(viewer, "fuse")
    widget.set_raters(raters)
    first = set(_offered(widget))
    assert first == {"truth (soft)", *RATERS}  # the image is not a rater
    for method in ("average", "STAPLE", "majority vote", "STAPLE"):
        _fuse(widget, qtbot, method)
        assert set(_offered(widget)) == first, method
        outputs = [lyr for lyr in viewer.layers if lyr.name.startswith(("fused", "disagreement"))]
        assert {role(lyr) for lyr in outputs} == {"fused", "disagreement"}, method
        assert _selected(widget) == RATERS

    # saved and opened again through the plugin's reader: still not a rater
    path = tmp_path / "fused_staple.nii.gz"
    widget.save(path)
    (reopened,) = viewer.open(str(path), plugin="napari-softseg")
    assert reopened.name == "fused_staple"
    assert set(_offered(widget)) == first


def test_fusing_again_updates_the_same_layers(make_napari_viewer, open_widget, qtbot, phantom_tuples):
    from napari_softseg._metadata import layer_uid

    viewer = make_napari_viewer()
    raters = _add_phantom(viewer, phantom_tuples)
    colours = {lyr.name: lyr.colormap for lyr in raters}
    widget = open_widget(viewer, "fuse")
    widget.set_raters(raters)
    _fuse(widget, qtbot, "average")
    count = len(viewer.layers)
    fused = widget.result_layers["fused"]
    uid = layer_uid(fused)
    _fuse(widget, qtbot, "average")
    _fuse(widget, qtbot, "STAPLE")  # soft -> soft: the same layer, renamed
    assert len(viewer.layers) == count
    assert not [n for n in _names(viewer) if "[" in n]
    assert layer_uid(widget.result_layers["fused"]) == uid
    assert _names(viewer)[-2:] == ["disagreement (entropy)", "fused (STAPLE)"]
    _fuse(widget, qtbot, "majority vote")  # soft -> labels: replaced, still one fused layer
    assert len(viewer.layers) == count
    assert [n for n in _names(viewer) if n.startswith("fused")] == ["fused (majority vote)"]
    # overlays leave the anatomy visible where nobody voted; colour bars have titles
    _fuse(widget, qtbot, "STAPLE")
    for lyr in widget.result_layers.values():
        assert lyr.colormap.map(np.array([0.0]))[0, 3] == 0.0, lyr.name
        assert lyr.colorbar.visible and lyr.name_overlay.visible, lyr.name
        assert lyr.name_overlay.position == lyr.colorbar.position
    assert widget.result_layers["fused"].visible and not widget.result_layers["disagreement"].visible
    # raters keep their colours
    for lyr in raters:
        assert viewer.layers[lyr.name].colormap == colours[lyr.name]


@pytest.mark.parametrize(
    "order",
    [
        ("fused (average)", "rater-2", "disagreement (entropy)", "phantom image"),
        ("rater-2", "phantom image", "disagreement (entropy)", "fused (average)"),
        ("disagreement (entropy)", "fused (average)", "phantom image", "rater-2"),
    ],
    ids=["outputs-first", "inputs-first", "mixed"],
)
def test_removing_layers_in_any_order(make_napari_viewer, menu_widget, qtbot, phantom_tuples, order):
    viewer = make_napari_viewer()
    raters = _add_phantom(viewer, phantom_tuples)
    widget = menu_widget(viewer, "fuse")
    widget.set_raters(raters)
    start = _note_count()
    with qtbot.capture_exceptions() as exceptions:
        _fuse(widget, qtbot, "average")
        for name in order:
            viewer.layers.remove(name)
            QApplication.processEvents()
            present = set(_names(viewer))
            assert set(_offered(widget)) <= present and set(_selected(widget)) <= present
            assert all(lyr.name in present for lyr in widget.result_layers.values())
        assert not {"fused", "disagreement"} & set(widget.result_layers)
        assert _selected(widget) == ["rater-1", "rater-3", "rater-4"]
        _fuse(widget, qtbot, "average")  # the remaining raters, new result layers
        assert [n for n in _names(viewer) if n.startswith(("fused", "disagreement"))] == [
            "disagreement (entropy)", "fused (average)"]
        viewer.layers.select_all()
        viewer.layers.remove_selected()
        QApplication.processEvents()
        assert _offered(widget) == [] and widget.result_layers == {}
    assert not exceptions
    assert not _errors(start)


def test_removing_raters_while_a_fusion_runs(make_napari_viewer, open_widget, qtbot, phantom_tuples):
    viewer = make_napari_viewer()
    raters = _add_phantom(viewer, phantom_tuples)
    widget = open_widget(viewer, "fuse")
    widget.set_raters(raters)
    start = _note_count()
    with qtbot.capture_exceptions() as exceptions:
        _fuse(widget, qtbot, "STAPLE")
        # outputs removed while the next fusion runs: one new set, no "[1]" copies
        widget.method = "average"
        widget._run.native.click()
        viewer.layers.remove("fused (STAPLE)")
        viewer.layers.remove("disagreement (entropy)")
        qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
        assert [n for n in _names(viewer) if n.startswith(("fused", "disagreement"))] == [
            "disagreement (entropy)", "fused (average)"]
        # a rater (and the image) removed while the fusion runs: its result is never shown
        widget.method = "STAPLE"
        widget._run.native.click()  # the removals below come before any event is processed
        assert widget.busy
        viewer.layers.remove("rater-3")
        viewer.layers.remove("phantom image")
        qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
        QApplication.processEvents()
        assert "fused (STAPLE)" not in _names(viewer)
        assert "fused (average)" in _names(viewer)  # the last result stays as it was
        assert "'rater-3' was removed" in widget._message.value
        # select-all + delete while a fusion runs
        widget.set_raters([viewer.layers[n] for n in ("rater-1", "rater-2", "rater-4")])
        widget._run.native.click()
        viewer.layers.select_all()
        viewer.layers.remove_selected()
        qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
        QApplication.processEvents()
        assert len(viewer.layers) == 0 and widget.result_layers == {}
    assert not exceptions
    assert not _errors(start)


def test_save_asks_before_replacing_and_names_follow_the_content(make_napari_viewer, menu_widget, qtbot, tmp_path):
    """Rater files opened with the reader; the suggested file follows the method; an existing
    file (or its sidecar) is replaced only after "Replace"; "Cancel" leaves every byte as it was."""
    from softseg.io import save_volume
    from softseg.phantom import phantom

    ph = phantom(SHAPE, n_raters=3, seed=2)
    paths = []
    for r in range(3):
        paths.append(tmp_path / f"rater-{r + 1}.nii.gz")
        save_volume(paths[-1], ph.raters[r], affine=ph.affine, sidecar={"rater": str(r + 1), "kind": "labels"})
    viewer = make_napari_viewer()
    layers = [viewer.open(str(p), plugin="napari-softseg")[0] for p in paths]
    widget = menu_widget(viewer, "fuse")
    widget.set_raters(layers)
    _fuse(widget, qtbot, "average")
    assert widget._save_path.value == tmp_path / "fused_average.nii.gz"
    _fuse(widget, qtbot, "STAPLE")
    assert widget._save_path.value == tmp_path / "fused_staple.nii.gz"
    _fuse(widget, qtbot, "soft STAPLE")  # of binary raters: the same map as STAPLE, the same name
    assert widget._save_path.value == tmp_path / "fused_staple.nii.gz"

    target = tmp_path / "fused_staple.nii.gz"
    dialogs = Dialogs()  # no file there yet: no question
    click(widget._save)
    assert target.exists() and (tmp_path / "fused_staple.json").exists() and dialogs.seen == []
    before = {p.name: p.read_bytes() for p in (target, tmp_path / "fused_staple.json")}

    _fuse(widget, qtbot, "average")
    widget._save_path.value = target  # the user points the average at the STAPLE file
    dialogs = Dialogs("Cancel")
    click(widget._save)
    qtbot.waitUntil(lambda: dialogs.done, timeout=10000)
    assert "fused_staple.nii.gz" in dialogs.seen[0] and "fused_staple.json" in dialogs.seen[0]
    assert {p.name: p.read_bytes() for p in (target, tmp_path / "fused_staple.json")} == before
    assert "nothing was written" in widget._message.value

    dialogs = Dialogs("Replace")
    click(widget._save)
    qtbot.waitUntil(lambda: dialogs.done, timeout=10000)
    assert json.loads((tmp_path / "fused_staple.json").read_text())["fusion"]["method"] == "average"
    # a name the user typed stays when fusing again; the save asks again
    widget._save_path.value = tmp_path / "my fusion.nii.gz"
    _fuse(widget, qtbot, "STAPLE")
    assert widget._save_path.value == tmp_path / "my fusion.nii.gz"


def test_notifications_are_named_and_the_dock_is_compact(make_napari_viewer, menu_widget, qtbot, phantom_tuples):
    viewer = make_napari_viewer()
    raters = _add_phantom(viewer, phantom_tuples)
    widget = menu_widget(viewer, "fuse")
    start = _note_count()
    assert widget.run([raters[0]]) is None
    (note,) = _errors(start)
    assert note.source == "Fuse raters"
    assert "at least two rater layers" in note.message and "--" not in note.message
    assert not widget._save.enabled  # nothing fused yet
    # the dock asks for little height: its body scrolls, the options fold away
    from qtpy.QtWidgets import QScrollArea

    assert widget.native.findChildren(QScrollArea)
    assert widget.native.minimumSizeHint().height() <= 150
    assert widget.native.sizeHint().height() <= 400
