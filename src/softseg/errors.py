"""Errors that mean "the user gave us something we cannot use".

The CLI turns :class:`InputError` into a one-line message and exit code 2; the napari plugin shows
it as a notification. Anything else escaping the engine is an internal failure (exit code 1).
"""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: the message says what was wrong and how to fix it, on one line."""
