"""Where an image's autosave snapshots go: the folder next to the image, or a fallback.

``<image folder>/.softseg-recovery/<image stem>/`` when it can be written, else
``<cache>/softseg/recovery/<image stem>-<hash of its folder>/`` (``$XDG_CACHE_HOME`` honoured,
``$SOFTSEG_RECOVERY_DIR`` overrides the root). Each rater's snapshots live in a subfolder named
by :func:`rater_key`, injective in the exact rater id.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from softseg.errors import InputError

__all__ = [
    "FOLDER_NAME",
    "RecoveryTarget",
    "choose_recovery_folder",
    "default_fallback_root",
    "fallback_folder",
    "new_session_id",
    "primary_folder",
    "rater_file_stem",
    "rater_key",
]

#: Name of the hidden recovery folder created next to the image.
FOLDER_NAME = ".softseg-recovery"


def _image_stem(image: str | os.PathLike) -> str:
    name = Path(image).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def rater_file_stem(rater: str) -> str:
    """A readable file stem for a rater id: letters, digits, ``-`` and ``_`` only.

    Readable but **not** injective (``dr.smith`` and ``dr smith`` both give ``dr_smith``): used
    for file names a person chooses from (the export's default name), never to keep two
    raters' work apart (that is :func:`rater_key`).

    Raises
    ------
    InputError
        Empty rater id, or one with no usable character.
    """
    text = str(rater).strip()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if not stem:
        raise InputError(f"rater id {rater!r} is empty; type a name such as your initials")
    return stem


def rater_key(rater: str) -> str:
    """The folder name of a rater's snapshots: a readable slug plus 10 hex digits of a hash.

    ``rater_key("dr.smith") == "dr_smith-<sha256("dr.smith")[:10]>"``: the hash is taken of the
    exact id, so ids that differ only in punctuation, spaces or case get different folders (also
    on case-insensitive file systems, the hash being lower-case hex). The slug keeps up to 40
    characters of ``[A-Za-z0-9_-]`` so a person can find the folder.

    Raises
    ------
    InputError
        Empty (or blank) rater id.
    """
    text = str(rater)
    if not text.strip():
        raise InputError(f"rater id {rater!r} is empty; type a name such as your initials")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_")[:40] or "rater"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def new_session_id() -> str:
    """A random id for one autosave session (one rater layer's lifetime), 12 hex digits."""
    return uuid.uuid4().hex[:12]


def default_fallback_root() -> Path:
    """Root of the fallback recovery folders: ``$SOFTSEG_RECOVERY_DIR`` or ``<cache>/softseg/recovery``."""
    env = os.environ.get("SOFTSEG_RECOVERY_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "softseg" / "recovery"


def primary_folder(image: str | os.PathLike) -> Path:
    """``<image folder>/.softseg-recovery/<image stem>``."""
    image = Path(image).expanduser().absolute()
    return image.parent / FOLDER_NAME / _image_stem(image)


def fallback_folder(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """The fallback folder of an image: ``<root>/<stem>-<10 hex of its absolute folder>``.

    Parameters
    ----------
    image : path-like or None
        The image file; None for an image that has no file (sample data, a numpy array).
    name : str, optional
        Used instead of the file stem (required when *image* is None), e.g. the layer name.
    root : path-like, optional
        Defaults to :func:`default_fallback_root`.
    """
    root = default_fallback_root() if root is None else Path(root)
    if image is None:
        if not name:
            raise InputError("an image without a file needs a name for its recovery folder")
        return root / f"{rater_file_stem(name)}-unsaved"
    image = Path(image).expanduser().absolute()
    digest = hashlib.sha1(str(image.parent).encode("utf-8")).hexdigest()[:10]
    return root / f"{rater_file_stem(name or _image_stem(image))}-{digest}"


@dataclass(frozen=True)
class RecoveryTarget:
    """Where snapshots of one image go.

    Attributes
    ----------
    folder : Path
        The image's recovery folder actually used (created, and a probe file written and
        removed); each rater gets a subfolder :func:`rater_key`.
    is_fallback : bool
        True when the folder next to the image could not be used.
    problem : str or None
        Why the folder next to the image was not used (one line), when it was not.
    """

    folder: Path
    is_fallback: bool = False
    problem: str | None = None


def _probe(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}-{threading.get_ident()}"
    with open(probe, "wb") as fh:
        fh.write(b"ok")
    probe.unlink()


def choose_recovery_folder(
    image: str | os.PathLike | None,
    *,
    name: str | None = None,
    fallback_root: str | os.PathLike | None = None,
) -> RecoveryTarget:
    """The recovery folder of an image: next to it when writable, else the fallback.

    The folder is created. Raises :class:`InputError` only when the fallback is unusable too.
    """
    problem = None
    if image is not None:
        folder = primary_folder(image)
        try:
            _probe(folder)
            return RecoveryTarget(folder=folder)
        except OSError as exc:
            problem = f"cannot write {folder} ({exc.strerror or type(exc).__name__})"
    else:
        problem = "the image has no file on disk"
    folder = fallback_folder(image, name=name, root=fallback_root)
    try:
        _probe(folder)
    except OSError as exc:
        raise InputError(
            f"cannot write autosave snapshots: {problem}, and the fallback {folder} fails too "
            f"({exc.strerror or type(exc).__name__}); set the environment variable "
            "SOFTSEG_RECOVERY_DIR to a writable folder"
        ) from None
    return RecoveryTarget(folder=folder, is_fallback=True, problem=problem)


