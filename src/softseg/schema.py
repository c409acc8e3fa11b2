"""JSON read safely and parsed into typed, frozen models with one-line errors.

Every JSON document the product reads (``dataset.json``, rater and fusion sidecars, the training
``--config``, model-file metadata) goes through two steps:

1. :func:`load_json` / :func:`loads_json`: bytes -> Python objects, refusing what is not JSON we
   can use: a missing or non-regular file (a FIFO would block forever), more than ``max_bytes``,
   bytes that are not UTF-8, invalid JSON, nesting deeper than :data:`MAX_DEPTH` (Python's
   parser would raise RecursionError), NaN/Infinity literals;
2. :func:`parse`: Python objects -> a pydantic model (``frozen``, ``extra="forbid"``), turning a
   :class:`pydantic.ValidationError` into one :class:`~softseg.errors.InputError` line that names
   the source and the key path (``config.json: optim.lr: Input should be a valid number``).

Models are declared with :class:`Schema` as the base class (frozen, unknown keys forbidden,
strict types: ``"0.01"`` is not a number). Validation of types and ranges is pydantic's job, a
well-kept library (STYLE.md 7 asks for typed, frozen configuration parsed at one boundary).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

from softseg.errors import InputError

__all__ = ["MAX_DEPTH", "MAX_JSON_BYTES", "Schema", "load_json", "loads_json", "parse", "validation_message"]

#: Deepest nesting accepted (our documents are at most ~6 levels deep).
MAX_DEPTH = 64
#: Largest JSON document read (sidecars and configs are a few KB; model cards < 1 MB).
MAX_JSON_BYTES = 16 * 1024 * 1024

M = TypeVar("M")


def _schema_base() -> type:
    from pydantic import BaseModel, ConfigDict

    class Schema(BaseModel):
        """Base of every typed document: frozen, unknown keys are an error, strict types."""

        model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    return Schema


Schema = _schema_base()


def _depth_ok(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def loads_json(text: str | bytes, *, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text; every failure is a one-line :class:`InputError` naming ``source``.

    Parameters
    ----------
    text : str or bytes
        The document (bytes must be UTF-8; a UTF-8 byte-order mark is accepted).
    source : str
        File name or description used in error messages.
    max_depth : int
        Deepest nesting of objects/arrays accepted.

    Raises
    ------
    InputError
        Not UTF-8, not JSON, NaN/Infinity literals, or nested deeper than ``max_depth``.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(f"{source}: not UTF-8 text (byte {exc.start}); save the JSON as UTF-8") from None
    # cheap pre-check so a 100k-deep document never reaches the recursive parser
    depth = best = 0
    in_str = escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > max_depth:
                    raise InputError(f"{source}: JSON nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{source}: not valid JSON: {msg}{where}") from None
    if not _depth_ok(obj, max_depth):  # pragma: no cover - the scan above already refused it
        raise InputError(f"{source}: JSON nested deeper than {max_depth} levels")
    return obj


def load_json(
    path: str | os.PathLike,
    *,
    what: str = "JSON file",
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Read a JSON file safely (see the module docstring).

    Parameters
    ----------
    path : path-like
    what : str
        What the file is (``"rater sidecar"``), used in messages.
    max_bytes : int
        Largest file accepted.
    max_depth : int
        Deepest nesting accepted.

    Returns
    -------
    The parsed JSON value (dict, list, str, number, bool or None).

    Raises
    ------
    InputError
        Missing file, not a regular file (FIFO, device, directory), symlink loop, larger than
        ``max_bytes``, unreadable, not UTF-8, not JSON, too deep.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: {what} not found") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise InputError(f"{p}: symbolic link loop; point the link at a real file") from None
        raise InputError(f"{p}: cannot read {what} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: {what} is not a regular file (a folder, FIFO or device)")
    if st.st_size > max_bytes:
        raise InputError(f"{p}: {what} is {st.st_size} bytes; at most {max_bytes} are read")
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read {what} ({exc.strerror})") from None
    return loads_json(data, source=str(p), max_depth=max_depth)


def validation_message(exc: Any, *, source: str) -> str:
    """One line from a :class:`pydantic.ValidationError`: ``source: key.path: message``."""
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        msg = " ".join(str(err.get("msg", "invalid value")).split())
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def parse(model: type[M], data: Any, *, source: str) -> M:
    """Validate ``data`` into ``model`` (a :class:`Schema` subclass).

    Parameters
    ----------
    model : type
        A pydantic model class.
    data : Any
        Parsed JSON (a dict for object schemas); validated in pydantic's JSON mode, so
        arrays fill tuple fields.
    source : str
        File name or description, used in the error message.

    Returns
    -------
    An instance of ``model``.

    Raises
    ------
    InputError
        One line naming ``source`` and the key path of the first problems, e.g.
        ``config.json: optim.lr: Input should be a valid number``.
    """
    from pydantic import ValidationError

    try:
        # JSON mode: arrays are accepted for tuple fields, and strict types still hold
        # ("0.01" is not a number, true is not an integer)
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: not representable as JSON ({exc})") from None
    try:
        return model.model_validate_json(text)  # type: ignore[attr-defined]
    except ValidationError as exc:
        raise InputError(validation_message(exc, source=source)) from None
