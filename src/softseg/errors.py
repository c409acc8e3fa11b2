"""Errors and warnings that the user acts on.

* :class:`InputError` — "the user gave us something we cannot use". The CLI turns it into a
  one-line message and exit code 2; the napari plugin shows it as a notification.
* :class:`OutputError` — an output could not be written (disk full, I/O error, read-only file
  system). Also one line naming the path and exit code 2; nothing of the output set was left
  behind (:mod:`softseg.outputs`).
* :class:`SoftsegWarning` — valid input that deserves a remark (e.g. :class:`GeometryWarning`:
  the header's pixdim and its affine give different voxel sizes). Emitted through
  :mod:`warnings`; the CLI prints each distinct warning once, on one line.

Anything else escaping the engine is an internal failure (exit code 1, with a traceback).
"""

__all__ = ["GeometryWarning", "InputError", "OutputError", "SoftsegWarning"]


class InputError(ValueError):
    """Bad input: the message says what was wrong and how to fix it, on one line."""


class OutputError(InputError, OSError):
    """An output could not be written (``ENOSPC``, ``EIO``, ``EROFS``, ...).

    The message names the file and the reason on one line; the output set it belonged to was
    rolled back, so nothing half-written remains. Also an :class:`OSError` (with ``errno`` and
    ``filename`` of the failure), so code that catches OS errors around a write still does.
    """

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None) -> None:
        InputError.__init__(self, message)
        self.errno = errno
        self.filename = filename
        self.strerror = None

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SoftsegWarning(UserWarning):
    """Base class of the product's warnings (the CLI prints each distinct one once)."""


class GeometryWarning(SoftsegWarning):
    """A file's geometry is valid but ambiguous (e.g. pixdim disagrees with the sform)."""
