"""Painted work is never lost (issue 11 #1, #2, #8, #10): two viewer runs on the same image.

Run 1 paints rater A with real mouse strokes through the widget opened from the Plugins menu and
closes the viewer without exporting. Run 2 opens the same image: the offer is at the top of the
dock (banner, with the snapshot's real time) and as a notification with a *Restore* button;
adding a layer for A asks Restore / Keep both / Discard. Whatever the answer, the strokes of
run 1 are still on disk afterwards, also after the new layer autosaved many times.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QApplication

from softseg.autosave import KEEP, list_recoveries, list_snapshots, load_snapshot
from softseg.geometry import DisplayGeometry

from annotate_support import PLUGIN, Dialogs, click, show, stroke, type_text
from annotate_support import image_file, recovery_root  # noqa: F401 (pytest fixtures)
from conftest import open_widget_by


def _open(make_napari_viewer, qtbot, image_file):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = open_widget_by("plugin_menu", viewer, "annotate")
    canvas = show(viewer, qtbot)
    return viewer, widget, canvas


def _add_rater(widget, rater, *answers):
    type_text(widget._rater_id, rater)
    dialogs = Dialogs(*answers) if answers else None
    click(widget._add)
    if dialogs is not None:
        assert dialogs.done, "the dialog was not shown"
    return dialogs


def _run_one(make_napari_viewer, qtbot, image_file):
    """Paint two strokes for rater A, close the viewer without exporting; return A's levels."""
    viewer, widget, canvas = _open(make_napari_viewer, qtbot, image_file)
    assert not widget._banner.visible
    _add_rater(widget, "A")
    layer = viewer.layers["A"]
    z, y = layer.data.shape[0] // 2, layer.data.shape[1] // 2
    layer.brush_size = 3
    widget.select_level(3)
    stroke(viewer, canvas, layer, z, y, 8, 30)
    widget.select_level(1)
    stroke(viewer, canvas, layer, z + 2, y + 5, 10, 20)
    painted = np.array(layer.data, copy=True)
    assert (painted == 3).sum() > 10 and (painted == 1).sum() > 5
    colour = layer.colormap.color_dict[3].copy()
    viewer.close()  # debounce still running: closing must write the strokes
    QApplication.processEvents()
    return painted, colour


def _geometry(viewer):
    return DisplayGeometry.from_metadata(viewer.layers["image"].metadata)


@pytest.mark.parametrize("choice", ["Restore", "Keep both", "Discard"])
def test_work_survives_a_second_viewer_run_whatever_the_rater_chooses(
    make_napari_viewer, qtbot, image_file, recovery_root, choice
):
    painted, colour = _run_one(make_napari_viewer, qtbot, image_file)
    (old,) = list_recoveries(image_file)
    assert old.rater == "A"

    notes = []
    notification_manager.notification_ready.connect(notes.append)
    try:
        viewer, widget, canvas = _open(make_napari_viewer, qtbot, image_file)
    finally:
        notification_manager.notification_ready.disconnect(notes.append)
    geom = _geometry(viewer)
    np.testing.assert_array_equal(load_snapshot(old, geometry=geom), painted)

    # the offer is where the eye is: the top of the dock, with the snapshot's own time ...
    assert widget._banner.visible
    assert (
        widget.native.findChild(type(widget._banner.widget), "softsegBanner")
        is widget._banner.widget
    )
    assert "A" in widget._banner.text and old.saved_at_text in widget._banner.text
    # ... and a notification with a Restore button, from a named source
    (offer,) = [n for n in notes if "Unsaved rater work" in str(n.message)]
    assert [label for label, _ in offer.actions] == ["Restore"]
    assert offer.source == "Soft annotation"

    answers = {
        "Restore": ("Restore",),
        "Keep both": ("Keep both",),
        "Discard": ("Discard", "Discard"),
    }[choice]
    dialogs = _add_rater(widget, "A", *answers)
    assert (
        "'A' has work that was never exported" in dialogs.seen[0]
        and old.saved_at_text in dialogs.seen[0]
    )

    layer = viewer.layers["A"]
    if choice == "Restore":
        np.testing.assert_array_equal(layer.data, painted)
        np.testing.assert_allclose(layer.colormap.color_dict[3], colour)  # same colour as before
        assert [lyr.name for lyr in viewer.layers] == ["image", "A"]
    elif choice == "Keep both":
        assert not layer.data.any()
        (copy,) = [lyr for lyr in viewer.layers if lyr.name.startswith("A (recovered ")]
        np.testing.assert_array_equal(copy.data, painted)
        np.testing.assert_allclose(copy.colormap.color_dict[3], colour)
        assert not np.allclose(layer.colormap.color_dict[3], colour)  # two layers, two colours
    else:
        assert not layer.data.any()
        assert "Discard this work?" in dialogs.seen[1]
    assert not widget._banner.visible
    assert list_recoveries(image_file, exclude_sessions=widget.autosave.live_sessions()) == []

    # the new layer autosaves many times: run 1's strokes stay on disk, untouched
    session = widget.autosave_for(layer)
    z, y = layer.data.shape[0] // 2, layer.data.shape[1] // 2
    for i in range(KEEP + 2):
        layer.paint((z - 3, y - 6, 5 + 3 * i), 2)
        session.snapshot_now()
        assert session.flush()
    on_disk = [r for r in list_snapshots(image_file, rater="A") if r.path == old.path]
    assert (
        on_disk
        and on_disk[0].decision
        == {"Restore": "restored", "Keep both": "kept", "Discard": "discarded"}[choice]
    )
    np.testing.assert_array_equal(load_snapshot(old.path, geometry=geom), painted)
    widget.close_autosave()


def test_cancel_adds_nothing_and_the_offer_stays(
    make_napari_viewer, qtbot, image_file, recovery_root
):
    painted, _ = _run_one(make_napari_viewer, qtbot, image_file)
    viewer, widget, canvas = _open(make_napari_viewer, qtbot, image_file)
    _add_rater(widget, "A", "Cancel")
    assert [lyr.name for lyr in viewer.layers] == ["image"]
    assert widget._banner.visible
    # discard asks again; saying no there keeps everything as it was
    _add_rater(widget, "A", "Discard", "Cancel")
    assert [lyr.name for lyr in viewer.layers] == ["image"] and widget._banner.visible
    # the banner's Restore button brings it back
    click(widget._banner.restore_button)
    np.testing.assert_array_equal(viewer.layers["A"].data, painted)
    assert not widget._banner.visible
    widget.close_autosave()


def test_banner_discard_asks_and_the_work_stays_on_disk(
    make_napari_viewer, qtbot, image_file, recovery_root
):
    painted, _ = _run_one(make_napari_viewer, qtbot, image_file)
    viewer, widget, canvas = _open(make_napari_viewer, qtbot, image_file)
    dialogs = Dialogs("Discard")
    click(widget._banner.discard_button)
    assert dialogs.done and "stay on disk" in dialogs.seen[0]
    assert not widget._banner.visible and list_recoveries(image_file) == []
    (snap,) = [r for r in list_snapshots(image_file) if r.is_latest]
    assert snap.decision == "discarded"
    np.testing.assert_array_equal(load_snapshot(snap, geometry=_geometry(viewer)), painted)
    widget.close_autosave()


def test_a_never_painted_layer_is_not_offered(make_napari_viewer, qtbot, image_file, recovery_root):
    viewer, widget, canvas = _open(make_napari_viewer, qtbot, image_file)
    _add_rater(widget, "B")
    widget.set_scale(widget.scale_from_editor())  # applying a scale is not painting
    assert widget.flush_autosave()
    viewer.close()
    assert list_snapshots(image_file) == []
    viewer2, widget2, _ = _open(make_napari_viewer, qtbot, image_file)
    assert not widget2._banner.visible
    widget2.close_autosave()


def test_deleting_a_painted_layer_offers_its_work_in_the_banner(
    make_napari_viewer, qtbot, image_file, recovery_root
):
    viewer, widget, canvas = _open(make_napari_viewer, qtbot, image_file)
    _add_rater(widget, "C")
    layer = viewer.layers["C"]
    layer.paint((9, 22, 20), 2)
    painted = np.array(layer.data, copy=True)
    viewer.layers.remove("C")  # the debounce had not fired yet
    assert widget._banner.visible and "C" in widget._banner.text
    click(widget._banner.restore_button)
    np.testing.assert_array_equal(viewer.layers["C"].data, painted)
    widget.close_autosave()
