"""All-or-nothing output sets: an image and its sidecar (or a whole dataset) appear together or not at all.

Why our own code: POSIX gives one atomic step, ``rename`` of one file. A set of files (an image
and its JSON sidecar, the predictions of several inputs, a dataset folder) needs a small commit
protocol on top of it; no well-kept Python library offers one for plain files (``atomicwrites``
is unmaintained and single-file, ``filelock`` only locks).

Protocol of :class:`OutputSet` (one folder or several):

1. **Validate before the work.** The constructor checks every target (folder exists and is
   writable, or ``make_dirs``; not a folder; an existing file is an :class:`~softseg.errors.InputError`
   unless ``overwrite``) and writes nothing. It first cleans up after killed runs in those
   folders (:func:`recover`).
2. **Write temporaries.** Each target is written to a temporary file next to it, with a
   recognisable name ``.<name>.softseg-tmp-<host>-<pid>-<token><suffix>`` (the suffix is kept, so
   ``.nii.gz`` is still compressed).
3. **Commit.** With every temporary written (and fsynced when ``durable``): hard-link each file
   that will be replaced to a backup (``.<name>.softseg-old-...``), write a journal
   (``.<primary>.softseg-commit-...``) listing the renames, rename the secondary files first and
   the **primary** (``targets[0]``, the image) **last**, then delete the journal and backups.
   The primary's rename is the commit point: an image never appears without its sidecar.
4. **Failure.** An exception before the commit removes the temporaries; a failed rename rolls
   back what was renamed (restoring the backups). A process killed at any point leaves the
   journal and temporaries: the next :class:`OutputSet` (or :func:`recover`) in that folder
   rolls the interrupted set back to the files as they were, or — when the primary had already
   been renamed — finishes it. Either way every set is old-or-new, never a mix.

A set with one target needs no journal: its one rename is atomic (this is
:func:`softseg.io.atomic_path`). :func:`output_folder` writes a whole new folder under a
temporary name and renames it into place.

OS errors while writing (``ENOSPC`` disk full, ``EIO``, ``EROFS``, quota) become one-line
:class:`~softseg.errors.OutputError` messages naming the target.

Example
-------
>>> outs = OutputSet([out, sidecar_path(out)], overwrite=False)   # refuses before the work
>>> fused = ...                                                   # the work
>>> with outs:
...     outs.save_image(out, nifti_image(out, fused, like=reference))   # softseg.io
...     outs.write_json(sidecar_path(out), record)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError, OutputError

__all__ = [
    "OutputSet",
    "atomic_path",
    "check_writable",
    "is_softseg_temp",
    "json_text",
    "output_folder",
    "recover",
    "write_json",
]

#: OS errors that mean "the output could not be written" (reported as OutputError, one line).
WRITE_ERRNOS = frozenset(
    e
    for e in (
        errno.ENOSPC,
        errno.EIO,
        errno.EROFS,
        errno.EFBIG,
        getattr(errno, "EDQUOT", None),
        errno.EACCES,
        errno.EPERM,
    )
    if e is not None
)
#: Temporaries of another host (network file systems) are removed only when older than this.
FOREIGN_STALE_SECONDS = 24 * 3600

_HOST = hashlib.blake2s(socket.gethostname().encode("utf-8", "replace"), digest_size=3).hexdigest()
_NAME_RE = re.compile(
    r"^\.(?P<name>.+)\.softseg-(?P<kind>tmp|old|commit)-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-"
    r"(?P<token>[0-9a-z]{8})(?P<suffix>(?:\.[A-Za-z0-9_]+)*)$"
)

#: Test hook: called as ``hook(stage, path)`` at ``"write"`` (before a temporary is written by
#: :meth:`OutputSet.save_image` / :meth:`OutputSet.write_json`), ``"journal"`` (before the
#: journal is written), ``"rename"`` (before each rename of a commit) and ``"swap"`` (an
#: :func:`output_folder` replacing a folder: the old one moved aside, the new one not yet in).
#: Tests make it raise ``OSError(ENOSPC)`` or kill the process to check that every set stays
#: all-or-nothing.
_fault_hook: Callable[[str, Path], None] | None = None


def _hook(stage: str, path: Path) -> None:
    if _fault_hook is not None:
        _fault_hook(stage, path)


def _suffix(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return name[-7:]
    return Path(name).suffix if re.fullmatch(r"\.[A-Za-z0-9_]+", Path(name).suffix or "-") else ""


def _aux_name(target: Path, kind: str, *, keep_suffix: bool = True) -> Path:
    token = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    suffix = _suffix(target.name) if keep_suffix else ""
    return target.with_name(f".{target.name}.softseg-{kind}-{_HOST}-{os.getpid()}-{token}{suffix}")


def is_softseg_temp(path: str | os.PathLike) -> bool:
    """True for the temporary, backup and journal files of :class:`OutputSet` (by name)."""
    return _NAME_RE.match(Path(path).name) is not None


def _alive(host: str, pid: int, path: Path) -> bool:
    """Whether the run that owns an auxiliary file may still be running."""
    if host != _HOST:  # another machine on a shared file system: trust only old age
        try:
            return time.time() - path.lstat().st_mtime < FOREIGN_STALE_SECONDS
        except OSError:
            return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported (Windows) or gone
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    if path.is_dir():
        return
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


# ----------------------------------------------------------------------------- recovery
def _rollback(journal: Path) -> list[Path]:
    """Undo (or finish) the interrupted commit described by *journal*; returns touched targets."""
    folder = journal.parent
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
        entries = [
            (folder / e["target"], folder / e["temp"], None if e.get("backup") is None else folder / e["backup"])
            for e in data["entries"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        # a journal cut short while being written: no rename had started (renames follow a
        # complete journal); the temporaries are removed as those of a dead run
        _remove(journal)
        return []
    touched: list[Path] = []
    primary_temp = entries[-1][1]
    complete = not os.path.lexists(primary_temp)  # the primary (last) rename happened
    for target, temp, backup in entries:
        if complete:
            if backup is not None:
                _remove(backup)
            continue
        if backup is not None:
            if os.path.lexists(backup):
                os.replace(backup, target)  # restore the previous file
                if os.path.lexists(backup):  # same inode: rename was a no-op
                    backup.unlink()
                touched.append(target)
        elif not os.path.lexists(temp) and os.path.lexists(target):
            _remove(target)  # renamed into place by the killed run: did not exist before
            touched.append(target)
        if os.path.lexists(temp):
            _remove(temp)
    _fsync_dir(folder)
    journal.unlink(missing_ok=True)
    return touched


def recover(folder: str | os.PathLike) -> list[Path]:
    """Clean up after killed runs in *folder*: roll back interrupted commits, remove temporaries.

    Only auxiliary files of :class:`OutputSet` (recognised by name) whose process is gone are
    touched; those of a run still in progress are left alone.

    Parameters
    ----------
    folder : path-like
        A folder that holds outputs (a missing folder is fine: nothing to do).

    Returns
    -------
    list of Path
        Targets restored to their previous state (or completed) by rolled-back commits.
    """
    folder = Path(folder)
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return []
    aux = []
    for name in names:
        m = _NAME_RE.match(name)
        if m and not _alive(m["host"], int(m["pid"]), folder / name):
            aux.append((m["kind"], folder / name))
    touched: list[Path] = []
    for kind, path in aux:  # journals first: they decide what the temporaries were
        if kind == "commit":
            touched.extend(_rollback(path))
    for kind, path in aux:  # a backup whose target is gone: the run died mid-swap; put it back
        target = folder / _NAME_RE.match(path.name)["name"]
        if kind == "old" and os.path.lexists(path) and not os.path.lexists(target):
            os.replace(path, target)
            touched.append(target)
    for kind, path in aux:
        if kind != "commit" and os.path.lexists(path):
            _remove(path)
    return touched


# ----------------------------------------------------------------------------- checks
def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check, before any work is done, that *path* can be written.

    Also importable as :func:`softseg.io.check_writable`.

    Raises :class:`InputError` when the folder does not exist or is not writable, or when the
    file exists and ``overwrite`` is false. Interrupted output sets of killed runs in that
    folder are rolled back first (:func:`recover`), so a file half-committed by a killed run does
    not block the rerun.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    recover(folder)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: folder {folder} is not writable; choose another output folder")
    return path


def _check_target(target: Path, *, overwrite: bool, make_dirs: bool, companions: Sequence[Path]) -> None:
    folder = target.parent
    if make_dirs and not folder.exists():
        ancestor = folder
        while not ancestor.exists():
            if ancestor.parent == ancestor:
                break
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise InputError(f"{target}: {ancestor} is not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise InputError(f"{target}: folder {ancestor} is not writable; choose another output folder")
        return
    try:
        check_writable(target, overwrite=overwrite)
    except InputError:
        missing = [c for c in companions if c != target and not os.path.lexists(c)]
        if os.path.isfile(target) and not overwrite and missing:
            raise InputError(
                f"{target}: already exists without {', '.join(str(m) for m in missing)} (an "
                "incomplete output, e.g. from an interrupted run of an older version); pass "
                "overwrite=True (--overwrite) to replace it"
            ) from None
        raise


def _as_output_error(exc: OSError, target: Path) -> OutputError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {
        errno.ENOSPC: "free some space or choose another output folder",
        errno.EROFS: "choose an output folder on a writable disk",
        errno.EIO: "the disk or network file system failed; check it and run again",
        errno.EFBIG: "the file is too large for this file system",
    }.get(exc.errno or 0, "check the output folder and run again")
    if getattr(errno, "EDQUOT", None) == exc.errno:
        hint = "your disk quota is full; free some space or choose another output folder"
    return OutputError(
        f"{target}: could not write it ({reason}); nothing was written; {hint}", errno=exc.errno, filename=str(target)
    )


# ----------------------------------------------------------------------------- the set
class OutputSet:
    """Files written together: all of them appear, or none (see the module docstring).

    Parameters
    ----------
    targets : sequence of path-like
        The files of the set. ``targets[0]`` is the primary (an image): renamed last, so it
        appears only once every other file is in place.
    overwrite : bool
        Replace existing targets (otherwise an existing target is an :class:`InputError`, raised
        here, before any work).
    durable : bool
        fsync every file before the commit and the folders after it (survives a power cut).
    make_dirs : bool
        Create missing folders (removed again when the set is abandoned).

    Raises
    ------
    InputError
        A target is given twice, is a folder, exists (without ``overwrite``), or its folder is
        missing (without ``make_dirs``) or not writable.

    Notes
    -----
    Use as a context manager: the ``with`` block writes the files (:meth:`save_image`,
    :meth:`write_json`, or any writer given :meth:`path`), a normal exit commits, an exception
    abandons the set. :class:`OutputError` replaces disk-full and I/O errors (one line naming the
    target).
    """

    def __init__(
        self,
        targets: Sequence[str | os.PathLike],
        *,
        overwrite: bool = False,
        durable: bool = False,
        make_dirs: bool = False,
    ) -> None:
        paths = [Path(t) for t in targets]
        if not paths:
            raise ValueError("an OutputSet needs at least one target")
        seen: set[str] = set()
        for p in paths:
            key = os.path.abspath(p)
            if key in seen:
                raise InputError(f"{p}: given twice as an output; choose different names")
            seen.add(key)
        self.targets: tuple[Path, ...] = tuple(paths)
        self.overwrite = bool(overwrite)
        self.durable = bool(durable)
        self.make_dirs = bool(make_dirs)
        for p in paths:  # (check_writable first recovers each folder from killed runs)
            _check_target(p, overwrite=self.overwrite, make_dirs=self.make_dirs, companions=paths)
        self._temps: dict[Path, Path] = {}
        self._created_dirs: list[Path] = []
        self._done = False

    # ------------------------------------------------------------------ writing
    def _key(self, target: str | os.PathLike) -> Path:
        target = Path(target)
        if target not in self.targets:
            raise ValueError(f"{target} is not a target of this output set ({[str(t) for t in self.targets]})")
        return target

    def _ensure_dir(self, folder: Path) -> None:
        if folder.is_dir() or not self.make_dirs:
            return
        missing = []
        f = folder
        while not f.exists():
            missing.append(f)
            f = f.parent
        for d in reversed(missing):
            d.mkdir()
            self._created_dirs.append(d)

    def path(self, target: str | os.PathLike) -> Path:
        """The temporary file to write *target* into (created empty, with the target's mode).

        Write it with any writer (``nib.save``, ``torch.save``, ``open(..., "wb")``); it is
        renamed onto *target* at the commit.
        """
        if self._done:
            raise RuntimeError("this output set was already committed or abandoned")
        target = self._key(target)
        if target in self._temps:
            return self._temps[target]
        self._ensure_dir(target.parent)
        tmp = _aux_name(target, "tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise _as_output_error(exc, target) from None
            raise
        os.close(fd)
        self._temps[target] = tmp
        try:
            mode = target.stat().st_mode & 0o7777  # replacing a file keeps its mode
        except OSError:
            pass
        else:
            os.chmod(tmp, mode)
        return tmp

    def save_image(self, target: str | os.PathLike, img: Any) -> Path:
        """Write a nibabel image into a target.

        A NIfTI volume: ``outs.save_image(target, softseg.io.nifti_image(target, data, like=...))``
        (what :func:`softseg.io.save_volume` does: float32 soft maps, the reference's header).
        """
        import nibabel as nib

        target = self._key(target)
        tmp = self.path(target)
        with self._writing(target):
            _hook("write", target)
            nib.save(img, tmp)
        return target

    def write_json(self, target: str | os.PathLike, obj: Any) -> Path:
        """Write *obj* as pretty JSON into a target (:func:`json_text`)."""
        target = self._key(target)
        text = json_text(obj)
        tmp = self.path(target)
        with self._writing(target):
            _hook("write", target)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        return target

    @contextlib.contextmanager
    def _writing(self, target: Path) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise _as_output_error(exc, target) from None
            raise

    # ------------------------------------------------------------------ commit / abort
    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
            return None
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno in WRITE_ERRNOS:
            target = self._target_of(exc)
            raise _as_output_error(exc, target) from None
        return None

    def _target_of(self, exc: OSError) -> Path:
        name = exc.filename
        for target, tmp in self._temps.items():
            if name is not None and os.path.abspath(str(name)) in (os.path.abspath(tmp), os.path.abspath(target)):
                return target
        return self.targets[0]

    def abort(self) -> None:
        """Abandon the set: remove the temporaries and the folders this set created."""
        if self._done:
            return
        self._done = True
        for tmp in self._temps.values():
            _remove(tmp)
        for d in reversed(self._created_dirs):
            try:
                d.rmdir()
            except OSError:
                pass

    def commit(self) -> list[Path]:
        """Make every target appear (primary last); see the module docstring.

        Raises
        ------
        OutputError
            A rename failed (the set was rolled back: nothing changed).
        InputError
            A target appeared meanwhile and ``overwrite`` is false (nothing changed).
        RuntimeError
            A target was never written (a bug in the caller; nothing changed).
        """
        if self._done:
            raise RuntimeError("this output set was already committed or abandoned")
        missing = [str(t) for t in self.targets if t not in self._temps]
        if missing:
            self.abort()
            raise RuntimeError(f"output set committed without writing {', '.join(missing)}")
        try:
            if not self.overwrite:
                for t in self.targets:
                    if os.path.lexists(t):
                        raise InputError(f"{t}: already exists (appeared while writing); pass overwrite=True (--overwrite) to replace it")
            if self.durable:
                for tmp in self._temps.values():
                    _fsync_file(tmp)
        except BaseException:
            self.abort()
            raise
        order = list(self.targets[1:]) + [self.targets[0]]  # primary last
        if len(order) == 1:
            self._commit_one(order[0])
        else:
            self._commit_many(order)
        self._done = True
        if self.durable:
            for folder in dict.fromkeys(t.parent for t in self.targets):
                _fsync_dir(folder)
        return list(self.targets)

    def _commit_one(self, target: Path) -> None:
        tmp = self._temps[target]
        try:
            _hook("rename", target)
            os.replace(tmp, target)
        except OSError as exc:
            self.abort()
            if exc.errno in WRITE_ERRNOS:
                raise _as_output_error(exc, target) from None
            raise
        except BaseException:
            self.abort()
            raise

    def _commit_many(self, order: list[Path]) -> None:
        primary = order[-1]
        backups: dict[Path, Path] = {}
        journal = _aux_name(primary, "commit", keep_suffix=False)
        journal = journal.with_name(journal.name + ".json")
        renamed: list[Path] = []
        renaming = False
        try:
            for target in order:
                if os.path.isfile(target):
                    backup = _aux_name(target, "old")
                    try:
                        os.link(target, backup)
                    except OSError:  # no hard links on this file system: copy
                        shutil.copy2(target, backup)
                    backups[target] = backup
            _hook("journal", primary)
            entries = [
                {
                    "target": os.path.relpath(t, journal.parent),
                    "temp": os.path.relpath(self._temps[t], journal.parent),
                    "backup": None if t not in backups else os.path.relpath(backups[t], journal.parent),
                }
                for t in order
            ]
            fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"version": 1, "entries": entries}))
                if self.durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            if self.durable:
                _fsync_dir(journal.parent)
            renaming = True
            for target in order:
                _hook("rename", target)
                os.replace(self._temps[target], target)
                renamed.append(target)
        except BaseException as exc:
            # alive: undo what was renamed (restore backups), remove everything of ours
            if os.path.lexists(journal):
                _rollback(journal)
            else:
                for target in renamed:  # pragma: no cover - renames only follow the journal
                    _remove(target)
            for b in backups.values():
                _remove(b)
            self.abort()
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                bad = order[len(renamed)] if renaming and len(renamed) < len(order) else primary
                raise _as_output_error(exc, bad) from None
            raise
        journal.unlink(missing_ok=True)
        for b in backups.values():
            _remove(b)


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a new folder under a temporary name; on success rename it into place.

    Parameters
    ----------
    folder : path-like
        Must not exist, or be an empty folder (or, with *overwrite*, any folder); its parent must
        exist and be writable.
    overwrite : bool
        Replace an existing folder, only once the new one is complete: the old folder is moved
        aside (``.<name>.softseg-old-...``), the new one renamed into place, then the old one
        deleted. A run killed between the two renames leaves the old folder aside; the next
        :func:`recover` of the parent (every output of softseg runs it) puts it back. Deleting
        the old folder removes the links in it, never what they point at. Callers check first
        that the folder is theirs to replace.

    Yields
    ------
    Path
        The temporary folder (``.<name>.softseg-tmp-...`` next to *folder*) to fill.

    Raises
    ------
    InputError
        *folder* exists and is not a folder, is a non-empty folder (without *overwrite*), or
        its parent is missing or not writable.
    OutputError
        Disk full / I/O error while writing (the temporary folder is removed; an old folder is
        left as it was).
    """
    folder = Path(folder)
    parent = folder.parent if str(folder.parent) else Path(".")
    recover(parent)
    if os.path.lexists(folder) and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if not overwrite and folder.is_dir() and any(os.scandir(folder)):
        raise InputError(f"{folder}: folder is not empty; choose a new folder or pass overwrite=True (--overwrite)")
    if not parent.is_dir():
        raise InputError(f"{folder}: parent folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: parent folder {parent} is not writable; choose another output folder")
    tmp = _aux_name(folder, "tmp", keep_suffix=False)
    try:
        tmp.mkdir()
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise _as_output_error(exc, folder) from None
        raise
    try:
        yield tmp
        _hook("rename", folder)
        if folder.is_dir() and any(os.scandir(folder)):
            if not overwrite:
                raise InputError(f"{folder}: folder filled up while writing; choose a new folder")
            _swap_in(tmp, folder)
        else:
            os.replace(tmp, folder)  # an empty folder is replaced atomically
    except OutputError as exc:  # a file inside: name it by its final path
        _remove(tmp)
        raise OutputError(str(exc).replace(str(tmp), str(folder)), errno=exc.errno, filename=str(folder)) from None
    except OSError as exc:
        _remove(tmp)
        if exc.errno in WRITE_ERRNOS:
            raise _as_output_error(exc, folder) from None
        raise
    except BaseException:
        _remove(tmp)
        raise


def _swap_in(new: Path, folder: Path) -> None:
    """Replace the folder *folder* by the complete folder *new*: old aside, new in, old deleted."""
    old = _aux_name(folder, "old", keep_suffix=False)
    os.replace(folder, old)  # from here until the next rename a kill leaves it aside (recover)
    try:
        _hook("swap", folder)
        os.replace(new, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    _remove(old)


# ----------------------------------------------------------------------------- one-file sets
@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, overwrite: bool = False, durable: bool = False
) -> Iterator[Path]:
    """Yield a temporary path next to *path*; on success it is renamed over *path*.

    A one-file :class:`OutputSet` (also importable as :func:`softseg.io.atomic_path`): the
    temporary keeps *path*'s suffix (so ``.nii.gz`` is still compressed by nibabel) and has a
    recognisable name, removed by the next run if this one is killed. On any exception it is
    removed and *path* is left as it was.

    The rename makes the write *atomic*: a killed or crashed process leaves either the old file
    or the new one, never a mix. ``durable=True`` also flushes the data to the disk (fsync)
    before the rename, so the new file survives a power cut; that costs about a quarter of the
    write time on uncompressed volumes, so it is used where losing work is expensive and the
    write is off the user's path (autosave, training checkpoints), not for every save.

    Raises
    ------
    InputError
        The file exists (without ``overwrite``), the folder is missing or not writable.
    OutputError
        Disk full, I/O error, read-only file system (one line naming *path*).
    """
    outs = OutputSet([path], overwrite=overwrite, durable=durable)
    with outs:
        yield outs.path(path)


def json_text(obj: Any) -> str:
    """Pretty JSON text of *obj* as :func:`write_json` writes it.

    numpy scalars and arrays become Python numbers and lists, paths strings. Also importable as
    :func:`softseg.io.json_text`.
    """
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(
    path: str | os.PathLike, obj: Any, *, overwrite: bool = False, durable: bool = False
) -> Path:
    """Write *obj* as pretty JSON (:func:`json_text`), atomically (``durable``: fsync first, see
    :func:`atomic_path`). Also importable as :func:`softseg.io.write_json`."""
    path = Path(path)
    outs = OutputSet([path], overwrite=overwrite, durable=durable)
    with outs:
        outs.write_json(path, obj)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
