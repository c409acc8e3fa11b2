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
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtWidgets import QMessageBox, QWidget

from softseg.autosave import (
    Recovery,
    discard_recovery,
    list_recoveries,
    load_snapshot,
    mark_recovery,
)
from softseg.confidence import MAX_LEVELS, ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry

from napari_softseg._metadata import RATER_KEY, find_layer, layer_uid
from napari_softseg._raters import geometry_of, hue_index_of_color, next_free_hue

from napari_softseg.widgets._common import ask, banner, notify

__all__ = [
    "RESTORE",
    "KEEP_BOTH",
    "DISCARD",
    "RecoveryBanner",
    "RecoveryController",
    "ask_pending",
    "confirm_discard",
    "describe",
]

RESTORE, KEEP_BOTH, DISCARD = "Restore", "Keep both", "Discard"


def describe(rec: Recovery) -> str:
    """``alice — saved 2025-05-02 14:03:12, 1234 voxels painted`` (+ classes, pre-annotation)."""
    voxels = f", {rec.nonzero} voxels painted" if rec.nonzero and rec.session != "legacy" else ""
    classes = f", {len(rec.classes)} classes" if rec.classes else ""
    pre = ""
    if rec.preannotated_by:
        changed = (rec.preannotation or {}).get("rater_changed_voxels")
        pre = f", pre-annotated by a model ({changed if changed is not None else '?'} voxels corrected)"
    return f"{rec.rater} — saved {rec.saved_at_text}{voxels}{classes}{pre}"


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
    classes: tuple[str, ...] | None = None
    preannotation: dict | None = None


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
    if rec.classes:
        scale = rec.scale or ConfidenceScale.binary()
    else:
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
    pre = None
    if rec.preannotated_by:
        pre = dict(rec.preannotation or {"model": rec.preannotated_by})
        pre.setdefault("rater_changed_voxels", 0)
    return Restoration(
        recovery=rec,
        levels=levels.astype(np.uint8 if int(levels.max(initial=0)) <= 255 else np.uint16),
        rater=name,
        scale=scale,
        as_copy=copy,
        hue=hue_index_of_color(rec.color),
        classes=rec.classes,
        preannotation=pre,
    )


class RecoveryController:
    """The dock's recovery logic: what is pending for an image, restore, discard.

    Parameters
    ----------
    dock : AnnotateWidget
        Its viewer, autosave sessions, banner, layer factory and messages.
    source : str
        Names the notifications' source ("Soft annotation").
    """

    def __init__(self, dock: Any, *, source: str) -> None:
        self.dock = dock
        self.source = source
        self.offered: set[str] = set()

    def _place(self, image: Any) -> tuple[Any, str]:
        from napari_softseg.widgets.annotate._export import source_of

        return source_of(image), image.name

    def pending(self, image: Any) -> list[Recovery]:
        src, name = self._place(image)
        return list_recoveries(src, name=name, exclude_sessions=self.dock.autosave.live_sessions())

    def settle_pending(self, rater: str, image: Any, on_pending: str = "ask") -> tuple[bool, Any]:
        """Before a new layer for *rater*: what to do with their pending work on *image*.

        ``on_pending="ask"`` asks (:func:`ask_pending`); ``"Restore"``, ``"Keep both"`` or
        ``"Discard"`` answer from code. Returns ``(go_on, restored)``: go on adding an empty
        layer, or stop and return ``restored`` (the restored layer, or None when cancelled).
        """
        dock = self.dock
        pending = [r for r in self.pending(image) if r.rater == rater]
        if not pending:
            return True, None
        choice = ask_pending(dock.native, rater, pending) if on_pending == "ask" else on_pending
        if choice not in (RESTORE, KEEP_BOTH, DISCARD):
            dock._set_status(f"Nothing added: {rater}'s unsaved work is still offered above")
            return False, None
        if choice == RESTORE:
            return False, self.restore(pending, image=image)[0]
        if choice == KEEP_BOTH:
            self.restore(pending, image=image, as_copies=True)
        if choice == DISCARD:
            if on_pending == "ask" and not confirm_discard(dock.native, pending, str(pending[0].path.parent)):
                dock._set_status(f"Nothing added: {rater}'s unsaved work is still offered above")
                return False, None
            self.discard(pending)
        return True, None

    def check(self, image: Any = None, *, notify_user: bool = True) -> list[Recovery]:
        """Pending work of *image*'s raters (newest first); shows the banner (and once per image
        a notification with a *Restore* button) when there is any, hides it otherwise."""
        dock = self.dock
        banner_ = dock._banner
        image = image or dock.image_layer
        if image is None:
            banner_.hide()
            return []
        found = self.pending(image)
        if not found:
            banner_.hide()
            return []
        banner_.show(image.name, found)
        src, _name = self._place(image)
        key = f"offer:{src or image.name}"
        if notify_user and key not in self.offered:
            self.offered.add(key)
            what = "; ".join(describe(r) for r in found)
            uid, me = layer_uid(image), weakref.ref(dock)  # napari keeps notifications forever

            def restore_from_notification(*_args: Any) -> None:
                widget = me()
                if widget is not None and not widget._closed:
                    widget._guard(lambda: widget.restore(image=find_layer(widget.viewer.layers, uid)))

            notify(
                f"Unsaved rater work found for {image.name}: {what}",
                severity="warning",
                source=self.source,
                actions=[(RESTORE, restore_from_notification)],
            )
        return found

    def restore(
        self, recoveries: Sequence[Recovery] | None = None, *, image: Any = None, as_copies: bool = False
    ) -> list[Any]:
        """Bring pending work back as rater layers, each in its rater's colour when that is free,
        with its classes, scale and pre-annotation record.

        A rater without an open layer gets it back as their layer; otherwise (or with
        ``as_copies``, "keep both") the work comes back beside it as ``"<rater> (recovered
        HH:MM)"``. An existing layer's data is never replaced. The restored layers autosave at
        once, then the snapshots are marked restored (or kept), so the work is never unaccounted
        for.

        Raises
        ------
        InputError
            No image, or a snapshot of another image.
        """
        dock = self.dock
        image = image or dock.image_layer
        if image is None:
            raise InputError("pick the image whose work should be restored")
        recs = list(recoveries) if recoveries is not None else self.pending(image)
        geom = geometry_of(image)
        out: list[Any] = []
        for rec in sorted(recs, key=lambda r: r.saved_at, reverse=True):
            taken = {str(lyr.metadata.get(RATER_KEY)) for lyr in dock.viewer.layers if RATER_KEY in lyr.metadata}
            plan = plan_restore(
                rec, geometry=geom, shape=tuple(np.shape(image.data)), taken=taken,
                as_copy=as_copies, image_name=f"image {image.name!r}",
            )
            layer = dock.raters.add(
                plan.levels, rater=plan.rater, scale=plan.scale, geometry=geom, image=image,
                hue=next_free_hue(dock.viewer.layers, prefer=plan.hue), classes=plan.classes,
                preannotation=plan.preannotation,
            )
            session = dock.autosave.for_layer(layer)
            if session is not None:  # the work now lives in the new layer's session
                session.snapshot_now()
                session.flush()
            mark_recovery(rec, "kept" if plan.as_copy else "restored")
            out.append(layer)
        self.check(image, notify_user=False)
        if out:
            dock._message(f"Restored {', '.join(lyr.name for lyr in out)}")
        return out

    def discard(self, recoveries: Sequence[Recovery] | None = None, *, image: Any = None) -> None:
        """Set pending work aside (marked discarded, never deleted; no question asked)."""
        dock = self.dock
        image = image or dock.image_layer
        recs = list(recoveries) if recoveries is not None else (self.pending(image) if image is not None else [])
        for rec in recs:
            discard_recovery(rec)
        if recs:
            dock._message(
                f"Set aside {', '.join(r.rater for r in recs)}'s unsaved work; it stays on disk for "
                f"a while in {recs[0].path.parent.parent}"
            )
        self.check(image, notify_user=False)

    def discard_clicked(self) -> None:
        dock = self.dock
        image = dock.image_layer
        recs = self.pending(image) if image is not None else []
        if recs and confirm_discard(dock.native, recs, str(recs[0].path.parent.parent)):
            self.discard(recs, image=image)
