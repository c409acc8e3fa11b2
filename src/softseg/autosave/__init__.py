"""Autosave and recovery of painted rater layers: versioned snapshots that are never overwritten.

While a rater paints, snapshots of the level map are written, debounced, to a recovery folder
next to the image. Every snapshot is a **new file**; nothing the autosave wrote is ever
replaced::

    <image folder>/.softseg-recovery/<image stem>/<rater key>/
        20250502T140312.123Z_3f2a9c01d4e5.nii.gz   one snapshot: the level map in the image's
                                                    own orientation, affine and header; its
                                                    metadata also rides inside the file (a NIfTI
                                                    "comment" extension)
        20250502T140312.123Z_3f2a9c01d4e5.json     the same metadata, readable: rater id, session,
                                                    time, confidence scale, SHA-1, painted voxels
        20250502T140312.123Z_3f2a9c01d4e5.decision.json   the rater's decision on it, once made
                                                    ("restored", "kept" or "discarded")
        exported-<sha1>.json                        an export of exactly that content

``<rater key>`` is :func:`rater_key`: a readable slug of the rater id plus a hash of the exact id,
so ``dr.smith`` and ``dr smith`` never share a folder. A *session* is one rater layer's lifetime
in one viewer (a random id chosen by the caller); the newest snapshot of a session is its work.

**Pending work** (:func:`list_recoveries`): the newest snapshot of every session that holds
painted voxels, was not exported with that exact content, and on which the rater has not yet
decided. A pending snapshot is offered for restoring; it is never deleted by pruning.

**Versions**: :func:`prune_snapshots` (run by the writer after each save) keeps, per rater, the
:data:`KEEP` newest snapshots, the newest snapshot of every pending session, and the newest
snapshot of the :data:`KEEP` most recently decided sessions; so a wrong choice ("discard") can
still be undone from disk with :func:`list_snapshots` / :func:`load_snapshot` (or by opening the
file in the viewer: it is an ordinary rater file).

**Crash safety**: each file is written atomically (:func:`softseg.io.atomic_path`: temporary file,
``fsync``, rename), the image before its JSON. A writer killed between the two leaves a complete
image whose metadata is read from the image itself, so the snapshot is still listed.

When the folder next to the image cannot be written (read-only share, a file in the way) the
snapshots go to a fallback under the user's cache, ``~/.cache/softseg/recovery/<image stem>-<hash
of its folder>/`` (``$XDG_CACHE_HOME`` is honoured; ``$SOFTSEG_RECOVERY_DIR`` overrides the root),
with the same layout, and :class:`AutosaveWriter` reports the switch once.

Snapshots written by earlier releases (``<image stem>/<rater>.nii.gz`` + ``<rater>.json``, one
file per rater) are still listed and restorable; they are never modified or pruned.

The viewer side (``napari_softseg.widgets.annotate``) copies ``layer.data`` on the main thread
(a few ms) and hands the copy to :class:`AutosaveWriter`, whose own thread hashes, compresses and
writes it.
"""


from softseg.autosave.folders import (
    FOLDER_NAME,
    RecoveryTarget,
    choose_recovery_folder,
    default_fallback_root,
    fallback_folder,
    new_session_id,
    primary_folder,
    rater_file_stem,
    rater_key,
)
from softseg.autosave.recovery import list_recoveries, list_snapshots
from softseg.autosave.store import (
    DECISIONS,
    KEEP,
    Recovery,
    content_hash,
    discard_recovery,
    load_snapshot,
    mark_recovery,
    prune_snapshots,
    record_export,
    write_snapshot,
)
from softseg.autosave.writer import AutosaveWriter, SnapshotJob

__all__ = [
    "DECISIONS",
    "FOLDER_NAME",
    "KEEP",
    "AutosaveWriter",
    "Recovery",
    "RecoveryTarget",
    "SnapshotJob",
    "choose_recovery_folder",
    "content_hash",
    "default_fallback_root",
    "discard_recovery",
    "fallback_folder",
    "list_recoveries",
    "list_snapshots",
    "load_snapshot",
    "mark_recovery",
    "new_session_id",
    "primary_folder",
    "prune_snapshots",
    "rater_file_stem",
    "rater_key",
    "record_export",
    "write_snapshot",
]
