"""What the Soft annotation tests share: an image on disk, real mouse and key input, dialogs.

Fixtures ``recovery_root``, ``image_file`` and ``setup`` are imported by the test modules.

Dialogs (``QMessageBox.exec``) are answered as a person would: a timer finds the modal box that
opened and clicks the button with the given text; the box's text is recorded for assertions.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QMessageBox

from softseg.io import save_volume
from softseg.phantom import phantom

SHAPE = (40, 44, 18)  # file order (X, Y, Z); napari shows (18, 44, 40)
PLUGIN = "napari-softseg"


@pytest.fixture
def recovery_root(tmp_path, monkeypatch):
    """The fallback recovery root (``$SOFTSEG_RECOVERY_DIR``) inside the test's folder."""
    root = tmp_path / "fallback-cache"
    monkeypatch.setenv("SOFTSEG_RECOVERY_DIR", str(root))
    return root


@pytest.fixture
def image_file(tmp_path):
    """The phantom image at ``<tmp>/sub-01/image.nii.gz``."""
    return write_image(tmp_path / "sub-01")


@pytest.fixture
def setup(make_napari_viewer, image_file, recovery_root, open_widget):
    """A viewer with the phantom image opened by the plugin's reader and the Soft annotation
    dock (both ways of opening it: ``open_widget``); yields ``(viewer, widget)``."""
    viewer = make_napari_viewer()
    viewer.open(str(image_file), plugin=PLUGIN)
    widget = open_widget(viewer, "annotate")
    yield viewer, widget
    widget.close_autosave()


def write_image(folder, name="image.nii.gz", seed=1):
    """The phantom image (40 x 44 x 18, its own affine) in *folder*; returns the path."""
    ph = phantom(SHAPE, n_raters=2, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    save_volume(path, ph.image, affine=ph.affine)
    return path


def show(viewer, qtbot, size=(1000, 800)):
    """Show the viewer's window and return its canvas."""
    win = viewer.window._qt_window
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    QApplication.processEvents()
    return viewer.window._qt_viewer.canvas


def pixel(canvas, layer, index):
    """Canvas pixel of a data voxel (its slice must be the one shown)."""
    tf = canvas.view.transform * canvas.view.scene.transform
    w = layer.data_to_world(index)
    p = tf.map([w[2], w[1]])
    return QPoint(int(round(p[0])), int(round(p[1])))


def stroke(viewer, canvas, layer, z, y, x0, x1, steps=10):
    """A real left-button mouse stroke along row *y* of slice *z*, from column x0 to x1."""
    viewer.dims.current_step = (z, 0, 0)
    QApplication.processEvents()
    a, b = pixel(canvas, layer, (z, y, x0)), pixel(canvas, layer, (z, y, x1))
    native = canvas.native
    QTest.mousePress(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    for t in np.linspace(0, 1, steps):
        QTest.mouseMove(native, QPoint(int(a.x() + (b.x() - a.x()) * t), a.y()))
        QApplication.processEvents()
    QTest.mouseRelease(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
    QApplication.processEvents()


def key(canvas, qt_key, times=1, modifier=Qt.KeyboardModifier.NoModifier):
    """Real key presses on the canvas (with a modifier: Alt, Shift, Control)."""
    canvas.native.setFocus()
    QApplication.processEvents()
    for _ in range(times):
        QTest.keyClick(canvas.native, qt_key, modifier)
        QApplication.processEvents()


def row_strokes(viewer, canvas, layer, z, mask):
    """Paint the True voxels of a 2D *mask* on slice *z* with one real stroke per row run
    (brush size 1): what a rater does with a small brush, voxel for voxel."""
    layer.brush_size = 1
    for y in np.flatnonzero(mask.any(axis=1)):
        cols = np.flatnonzero(mask[y])
        runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
        for run in runs:
            stroke(viewer, canvas, layer, z, int(y), int(run[0]), int(run[-1]), steps=3)


def make_model(path, *, channels=("image",), n_classes=1, seed=0):
    """A softseg model file with a random (untrained) network: enough to run a prediction."""
    import torch

    from softseg.card import ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, UNetConfig
    from softseg.modelfile import save_model
    from softseg.models import UNet2D

    torch.manual_seed(seed)
    out = 1 if n_classes == 1 else n_classes + 1
    net = UNet2D(len(channels), out, depth=2, width=4)
    classes = ("foreground",) if n_classes == 1 else tuple(f"class{k}" for k in range(1, n_classes + 1))
    card = ModelCard(
        classes=classes, thresholds=tuple(0.5 for _ in classes), channels=tuple(channels),
        preprocessing=PreprocessingCard(spacing=(None, None, None), crop=(16, 16)),
        candidate=CandidateCard(name="softseg", activation=ActivationCard(name="normalized_relu")),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
    )
    return save_model(path, net, card)


def type_text(widget, text):
    """Type *text* into a magicgui LineEdit as keystrokes (replacing what is there)."""
    native = widget.native
    native.setFocus()
    native.selectAll()
    QTest.keyClick(native, Qt.Key.Key_Delete)
    QTest.keyClicks(native, text)
    QApplication.processEvents()


def click(button):
    """A real mouse click on a magicgui PushButton or a QPushButton."""
    native = getattr(button, "native", button)
    QTest.mouseClick(native, Qt.MouseButton.LeftButton)
    QApplication.processEvents()


class Dialogs:
    """Answers the next modal boxes with the given button texts, in order; records their texts."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.seen = []
        self._boxes = []
        QTimer.singleShot(0, self._answer)

    def _answer(self, tries=0):
        box = QApplication.activeModalWidget()
        if (
            not isinstance(box, QMessageBox)
            or not box.isVisible()
            or any(box is b for b in self._boxes)
        ):
            if tries < 500:
                QTimer.singleShot(20, lambda: self._answer(tries + 1))
            return
        self._boxes.append(box)
        self.seen.append(box.text() + "\n" + box.informativeText())
        label = self.answers.pop(0)
        (btn,) = [b for b in box.buttons() if b.text() == label]
        QTest.mouseClick(btn, Qt.MouseButton.LeftButton)
        if self.answers:
            QTimer.singleShot(0, self._answer)

    @property
    def done(self):
        return not self.answers
