"""A lock on a training output, so two runs never write the same model file (issue 13 #12).

:func:`output_lock` takes an exclusive, non-blocking lock (``filelock``: ``flock`` on POSIX, a
Windows lock elsewhere) on ``<model>.lock`` beside the model file; the lock file is removed when
the run ends. A second run on the same output is refused at once with a one-line
:class:`~softseg.errors.InputError`. The operating system drops the lock of a killed process, so a
crash never leaves the output locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from softseg.errors import InputError

__all__ = ["lock_path", "output_lock"]


def lock_path(out: str | os.PathLike) -> Path:
    """``m.safetensors`` -> ``m.safetensors.lock``."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


def _busy(out: Path) -> InputError:
    return InputError(
        f"{out}: another softseg train run is writing this model (lock {lock_path(out).name}); "
        "wait for it to finish or choose another --out"
    )


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``out`` for the duration of the block.

    Raises
    ------
    InputError
        Another process (or another run in this process) holds the lock.
    """
    import filelock

    out = Path(out)
    path = lock_path(out)
    held: list[tuple[int, int]] = []

    def identify(fd: int) -> None:
        st = os.fstat(fd)
        held.append((st.st_dev, st.st_ino))

    lock = filelock.FileLock(str(path), timeout=0, is_singleton=False, thread_local=False, on_acquired=identify)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise _busy(out) from None
    try:
        # A run that just ended removes the lock file while holding its lock; a descriptor
        # opened before that removal locks a file nobody else sees: refuse and let the user retry.
        try:
            st = os.stat(path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if held and current != held[-1]:
            raise _busy(out)
        yield path
    finally:
        try:
            if held:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == held[-1]:
                    path.unlink()
        except FileNotFoundError:
            pass
        finally:
            lock.release()
