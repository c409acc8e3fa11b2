"""The recovery offer: a coloured banner at the top of the widget, and the questions it asks.

Pending work (:func:`softseg.autosave.list_recoveries`) is offered where the eye is: an amber
banner at the very top of the *Soft annotation* dock ("Unsaved work for image: alice, saved
14:03:12, 1 234 voxels"), with *Restore* and *Discard…*, plus a napari notification with a
*Restore* button. Adding a layer for a rater who has pending work asks first: *Restore* (the new
layer is that work), *Keep both* (that work comes back as its own layer beside a new empty one)
or *Discard* (asks again; nothing is deleted, see :func:`softseg.autosave.prune_snapshots`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import QMessageBox, QWidget

from softseg.autosave import Recovery, load_snapshot
from softseg.confidence import MAX_LEVELS, ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry

from napari_softseg._raters import hue_index_of_color

from napari_softseg.widgets._common import ask, banner

__all__ = [
    "RESTORE",
    "KEEP_BOTH",
    "DISCARD",
    "RecoveryBanner",
    "ask_pending",
    "confirm_discard",
    "describe",
]

RESTORE, KEEP_BOTH, DISCARD = "Restore", "Keep both", "Discard"


def describe(rec: Recovery) -> str:
    """``alice — saved 2025-05-02 14:03:12, 1234 voxels painted``."""
    voxels = f", {rec.nonzero} voxels painted" if rec.nonzero and rec.session != "legacy" else ""
    return f"{rec.rater} — saved {rec.saved_at_text}{voxels}"


def ask_pending(parent: QWidget | None, rater: str, recs: Sequence[Recovery]) -> str | None:
    """Ask what to do with *rater*'s pending work before adding a new layer for them.

    Returns ``"Restore"``, ``"Keep both"``, ``"Discard"`` or None (cancelled).
    """
    lines = "\n".join(describe(r) for r in recs)
    answer = ask(
        parent,
        "Unsaved work found",
        f"Rater {rater!r} has work that was never exported:\n{lines}",
        ["Cancel", DISCARD, KEEP_BOTH, RESTORE],
        informative=(
            "Restore: continue that work in the new layer.\n"
            "Keep both: bring that work back as its own layer and start a new empty one.\n"
            "Discard: start empty and set that work aside (it stays on disk for a while)."
        ),
        default=RESTORE,
    )
    return None if answer in (None, "Cancel") else answer


def confirm_discard(parent: QWidget | None, recs: Sequence[Recovery], folder: str) -> bool:
    """Second question before discarding: True only on an explicit *Discard*."""
    lines = "\n".join(describe(r) for r in recs)
    answer = ask(
        parent,
        "Discard unsaved work?",
        f"Discard this work?\n{lines}",
        ["Cancel", DISCARD],
        informative=(
            "It will no longer be offered. Its snapshots stay on disk until newer ones replace "
            f"them (the last 5 per rater are kept) in\n{folder}"
        ),
        default="Cancel",
        icon=QMessageBox.Icon.Warning,
    )
    return answer == DISCARD


class RecoveryBanner:
    """The amber banner; ``show(image_name, recs)`` / ``hide()``; its buttons call back."""

    def __init__(self, on_restore: Callable[[], object], on_discard: Callable[[], object]) -> None:
        self.widget = banner()
        self.restore_button = self.widget.add_button(
            RESTORE, on_restore, tooltip="Bring this work back as rater layers"
        )
        self.discard_button = self.widget.add_button(
            "Discard…",
            on_discard,
            tooltip="Set this work aside (asks first; it stays on disk for a while)",
        )
        self.recoveries: list[Recovery] = []

    @property
    def visible(self) -> bool:
        return not self.widget.isHidden()

    @property
    def text(self) -> str:
        return self.widget.label.text()

    def show(self, image_name: str, recs: Sequence[Recovery]) -> None:
        self.recoveries = list(recs)
        lines = "\n".join(f"• {describe(r)}" for r in recs)
        self.widget.set_text(f"Unsaved work found for {image_name}:\n{lines}")
        self.widget.setVisible(True)

    def hide(self) -> None:
        self.recoveries = []
        self.widget.setVisible(False)


@dataclass(frozen=True, eq=False)
class Restoration:
    """What restoring one snapshot makes: a rater layer's levels, name, scale and colour.

    ``as_copy``: the work comes back beside an open layer of the rater ("keep both"), under
    ``rater`` = ``"<id> (recovered HH:MM)"``; ``hue``: the palette index it had, when known.
    """

    recovery: Recovery
    levels: np.ndarray
    rater: str
    scale: ConfidenceScale
    as_copy: bool
    hue: int | None


def plan_restore(
    rec: Recovery,
    *,
    geometry: DisplayGeometry,
    shape: tuple[int, ...],
    taken: Collection[str],
    as_copy: bool = False,
    image_name: str = "the image",
) -> Restoration:
    """Read a snapshot for restoring into an image of display *shape* (no layer touched).

    A rater id in *taken* (an open layer has it) always comes back as a copy, so an existing
    layer's data is never replaced.

    Raises
    ------
    InputError
        The snapshot cannot be read or belongs to another image (shapes named).
    """
    levels = load_snapshot(rec, geometry=geometry if rec.order == "file" else None)
    if tuple(levels.shape) != tuple(shape):
        raise InputError(
            f"snapshot {rec.path.name} has shape {levels.shape}, {image_name} has {tuple(shape)}; "
            "it belongs to another image"
        )
    scale = rec.scale or ConfidenceScale.linear(max(1, min(MAX_LEVELS, int(levels.max()))))
    copy = as_copy or rec.rater in taken
    name = rec.rater
    if copy:
        same_day = time.localtime(rec.saved_at)[:3] == time.localtime()[:3]
        stamp = time.strftime(
            "%H:%M" if same_day else "%Y-%m-%d %H:%M", time.localtime(rec.saved_at)
        )
        name, k = f"{rec.rater} (recovered {stamp})", 2
        while name in taken:
            name, k = f"{rec.rater} (recovered {stamp}, {k})", k + 1
    return Restoration(
        recovery=rec,
        levels=levels.astype(np.uint8),
        rater=name,
        scale=scale,
        as_copy=copy,
        hue=hue_index_of_color(rec.color),
    )
