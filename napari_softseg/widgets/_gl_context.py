"""Layer removal without a segmentation fault: the canvas's OpenGL context is current.

The crash (issue 11 #4)
-----------------------
napari 0.9 cleans up after a layer removal in ``VispyCanvas._remove_layer`` (or, for a batch
such as *select all + delete*, at the end of the batch): it collects the removed visual's
garbage (``gc.collect()``, whose finalisers queue vispy GLIR ``DELETE`` commands for the
layer's program, textures and buffers) and then calls ``SceneCanvas.context.finish()``, which
executes those queued commands and a ``glFinish`` **at once, outside the canvas's paint
event**. vispy assumes the canvas's context is current whenever it executes commands; under
Qt's ``QOpenGLWidget`` it is only guaranteed to be current inside ``paintGL``. After a paint,
Qt leaves its own compositing context of the main window current, so the deletions run in the
wrong context, and a later ``glDrawArrays`` of the canvas dies with SIGSEGV (Mesa llvmpipe and
softpipe, napari 0.9.2, vispy 0.17, PyQt6). Measured here, without any plugin:

* two image layers, remove the lower one, change anything that redraws -> segfault (3 of 3);
* removing the upper one, or the lower of three, does not crash (what is freed differs);
* ``gc.collect()`` alone or ``finish()`` alone does not crash; both together do;
* a Labels layer removed in paint mode crashes the same way (the annotate engineer's finding).

Every case stops crashing when the canvas's context is current before napari's cleanup
(``QOpenGLWidget.makeCurrent()``), which is what :class:`RemovalGuard` does: it listens to
``viewer.layers.events.removing``, which napari emits before each removal (also inside a batch,
before the batch's final clean-up), and makes the canvas's context current. It needs no private
napari attribute: the canvas is found through Qt (:func:`_common.canvas_widget`).

One guard per viewer (:func:`install_removal_guard` is idempotent); every SoftSeg dock that lets
a user remove layers while it holds them installs it. A handler connected after it must not
repaint the canvas (a paint hands the current context back to Qt's compositor).

Removing a dock's own layers when a user removes theirs
-------------------------------------------------------
A dock that shows layers derived from a user's layer (an overlay of a prediction) removes them
in its ``layers.events.removed`` handler, before napari draws again. Inside napari's
*select all + delete* (``LayerList.remove_selected``, a batch that iterates over a snapshot of
the selection), removing a layer that is also selected makes napari's own loop fail on it, so
:meth:`RemovalGuard.remove_layers` hides such layers at once and removes them when the batch
ends (``layers.events.end_batch``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QWidget

from napari_softseg._metadata import find_layer
from napari_softseg.widgets._common import canvas_widget

__all__ = ["Connections", "RemovalGuard", "install_removal_guard"]

#: viewer.layers (the real LayerList, unwrapped from the Plugins-menu proxy) -> its guard
_GUARDS: weakref.WeakKeyDictionary[Any, RemovalGuard] = weakref.WeakKeyDictionary()


class RemovalGuard:
    """Makes napari's canvas context current before every layer removal (see the module).

    A plain object kept alive by the viewer's layer list (not a child of one dock widget, so
    closing the dock that installed it does not end it).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (or its Plugins-menu proxy).
    anchor : QWidget
        A widget docked in the viewer's window (to find the canvas through Qt).
    """

    def __init__(self, viewer: Any, anchor: QWidget) -> None:
        self._layers = weakref.ref(_key(viewer))  # no strong reference back to the viewer
        self._anchors: list[weakref.ref[QWidget]] = [weakref.ref(anchor)]
        #: removals seen (for tests and diagnostics)
        self.removals = 0
        #: removals that found the canvas and made its context current
        self.made_current = 0
        self._batch = 0
        self._deferred: list[str] = []
        viewer.layers.events.removing.connect(self._before_removal)
        viewer.layers.events.begin_batch.connect(self._begin_batch)
        viewer.layers.events.end_batch.connect(self._end_batch)

    def add_anchor(self, anchor: QWidget) -> None:
        """Another docked widget that can lead to the canvas (the first may be closed)."""
        self._anchors.append(weakref.ref(anchor))

    def _canvas(self) -> QWidget | None:
        for ref in list(self._anchors):
            anchor = ref()
            if anchor is None:
                self._anchors.remove(ref)
                continue
            canvas = canvas_widget(anchor)
            if canvas is not None:
                return canvas
        return None

    def _before_removal(self, event: Any = None) -> None:
        self.removals += 1
        canvas = self._canvas()
        if canvas is None or not canvas.isValid():  # not shown yet: nothing was drawn
            return
        canvas.makeCurrent()
        self.made_current += 1

    @property
    def in_batch(self) -> bool:
        """True while napari removes (or inserts) several layers in one batch."""
        return self._batch > 0

    def remove_layers(self, uids: list[str] | tuple[str, ...]) -> None:
        """Remove the layers with these uids now, or, inside napari's batch, hide them now and
        remove them when the batch ends (see the module docstring). Missing uids are skipped."""
        layers = self._layers()
        if layers is None:
            return
        for uid in uids:
            layer = find_layer(layers, uid)
            if layer is None:
                continue
            if self._batch:
                layer.visible = False
                if uid not in self._deferred:
                    self._deferred.append(uid)
            else:
                layers.remove(layer)

    def _begin_batch(self, event: Any = None) -> None:
        self._batch += 1

    def _end_batch(self, event: Any = None) -> None:
        self._batch = max(self._batch - 1, 0)
        if self._batch == 0 and self._deferred:
            pending, self._deferred = self._deferred, []
            self.remove_layers(pending)

    def close(self) -> None:
        """Stop listening (the viewer is closing)."""
        layers = self._layers()
        if layers is not None:
            layers.events.removing.disconnect(self._before_removal)
            layers.events.begin_batch.disconnect(self._begin_batch)
            layers.events.end_batch.disconnect(self._end_batch)


def _key(viewer: Any) -> Any:
    layers = viewer.layers
    return getattr(layers, "__wrapped__", layers)  # the Plugins-menu proxy wraps the LayerList


def install_removal_guard(viewer: Any, anchor: QWidget) -> RemovalGuard:
    """The viewer's :class:`RemovalGuard`, created on first use (one per viewer).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer or its Plugins-menu proxy (both give the same guard).
    anchor : QWidget
        The calling dock widget (it need not be docked yet).
    """
    key = _key(viewer)
    guard = _GUARDS.get(key)
    if guard is not None:
        guard.add_anchor(anchor)
        return guard
    guard = RemovalGuard(viewer, anchor)
    _GUARDS[key] = guard
    return guard


class Connections:
    """The connections a dock makes to the viewer's events, all undone when the dock's Qt
    object is deleted (its handlers must not run on a deleted widget).

    Parameters
    ----------
    dock : QWidget
        The dock; ``dock.destroyed`` disconnects everything (the closure keeps no reference
        to the dock).
    """

    def __init__(self, dock: QWidget) -> None:
        self.alive = {"alive": True}  # a worker's late result checks it
        self._pairs: list[tuple[Any, Callable]] = []
        pairs, alive = self._pairs, self.alive

        def close(*_: Any) -> None:
            alive["alive"] = False
            for emitter, callback in pairs:
                try:
                    emitter.disconnect(callback)
                except (TypeError, ValueError, RuntimeError):
                    pass

        dock.destroyed.connect(close)

    def connect(self, emitter: Any, callback: Callable) -> None:
        """``emitter.connect(callback)``, undone when the dock goes."""
        emitter.connect(callback)
        self._pairs.append((emitter, callback))

    def disconnect(self, emitter: Any, callback: Callable) -> None:
        """Undo one connection now (nothing happens when it is not connected)."""
        try:
            emitter.disconnect(callback)
        except (TypeError, ValueError, RuntimeError):
            pass
        self._pairs[:] = [(e, c) for e, c in self._pairs if not (e is emitter and c is callback)]
