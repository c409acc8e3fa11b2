"""``DATASET/dataset.json``: the typed schema of a dataset folder's optional description.

Read once (:func:`read_dataset_json`) through :func:`softseg.schema.load_json` (regular file,
size, UTF-8, depth, no NaN) and :func:`softseg.schema.parse` (pydantic: types checked, unknown
keys refused, one-line errors naming the key). Every writer in the product (the phantom, the
MNI anatomy generator, BIDS / nnU-Net import, the layers-to-dataset action) writes a subset of
these keys::

    {
      "name": "...", "description": "...",
      "channels": ["T1w", "FLAIR"],                     input channel names, in order
      "classes": ["grey matter", "white matter"],       foreground classes, index 1..K
      "labels": {"background": 0, "GM": 1, "WM": 2},    nnU-Net v2 label values of label maps
      "groups": {"sub-01": "centre-A", ...},            or {"centre-A": ["sub-01", ...]}
      "subjects": [...], "raters": [...], "truth": ..., "targets": [...],
      "source": {...}, "generator": {...}               provenance (free-form objects)
    }

``classes`` entries are class names, or ``{"name": "grey matter", "key": "GM"}`` with a short
key used in file names (``rater-<id>_label-<key>.nii.gz``; default: the name with spaces as
``-``; DESIGN decision 11). nnU-Net-v1 style ``{"0": "background", "1": "lesion"}`` is read too.
A leading ``"background"`` entry of a list is dropped (index 0 is always background).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from softseg.errors import InputError
from softseg.schema import Schema, load_json, parse

__all__ = ["ClassEntry", "DatasetJson", "read_dataset_json"]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")


def _fail(text: str) -> PydanticCustomError:
    return PydanticCustomError("dataset_json", text)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class ClassEntry(Schema):
    """One foreground class: its name and the short key used in file names."""

    name: str
    key: str

    @property
    def file_key(self) -> str:
        """The ``<class>`` of ``rater-<id>_label-<class>.nii.gz``."""
        return self.key


def _class_entry(item: Any, index: int) -> dict[str, str]:
    if isinstance(item, str):
        name, key = item, None
    elif isinstance(item, dict):
        unknown = sorted(set(item) - {"name", "key"})
        if unknown or not isinstance(item.get("name"), str):
            raise _fail(
                f"entry {index} must be a class name or {{\"name\": ..., \"key\": ...}}; got keys {sorted(item)}"
            )
        name, key = item["name"], item.get("key")
        if key is not None and not isinstance(key, str):
            raise _fail(f"entry {index}: 'key' must be a string; got {_kind(key)}")
    else:
        raise _fail(f"entry {index} must be a class name (a string); got {_kind(item)} {item!r}")
    name = name.strip()
    if not name:
        raise _fail(f"entry {index} is an empty class name")
    key = name.replace(" ", "-") if key is None else key.strip()
    if not _KEY_RE.match(key):
        raise _fail(
            f"class {name!r}: its file-name key {key!r} may hold only letters, digits, '.' and '-'; "
            "give a short key: {\"name\": ..., \"key\": \"GM\"}"
        )
    return {"name": name, "key": key}


class DatasetJson(Schema):
    """The parsed ``dataset.json`` (frozen; unknown keys are an error).

    Attributes
    ----------
    channels : tuple of str or None
    classes : tuple of ClassEntry or None
        Foreground classes, index 1..K (background excluded).
    labels : dict str -> int or None
        nnU-Net v2 label values (``"background": 0``, classes 1..K).
    groups : dict subject -> group or None
        Normalised from either form.
    """

    name: str | None = None
    description: str | None = None
    channels: tuple[str, ...] | None = None
    classes: tuple[ClassEntry, ...] | None = None
    labels: dict[str, int] | None = None
    groups: dict[str, str] | None = None
    subjects: tuple[str | dict[str, Any], ...] | None = None
    raters: tuple[str, ...] | None = None
    truth: str | dict[str, str] | None = None
    targets: tuple[str, ...] | None = None
    source: dict[str, Any] | None = None
    generator: dict[str, Any] | None = None

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
            raise _fail(f"expected a list of channel names, e.g. [\"T1w\"]; got {_kind(value)} {value!r}"[:200])
        if len(set(value)) != len(value):
            raise _fail(f"channel names must be unique; got {value}")
        return tuple(value)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, dict):  # nnU-Net v1 style {"0": "background", "1": "lesion"}
            try:
                items = sorted((int(k), v) for k, v in value.items())
            except ValueError:
                raise _fail(
                    "as an object, classes must map label values to names, e.g. {\"1\": \"lesion\"}; "
                    f"got keys {sorted(value)}"
                ) from None
            if [k for k, _ in items if k != 0] != list(range(1, 1 + sum(k != 0 for k, _ in items))):
                raise _fail(f"label values must be 1..K without gaps; got {[k for k, _ in items]}")
            value = [v for k, v in items if k != 0]
        elif isinstance(value, list):
            if value and isinstance(value[0], str) and value[0].strip().lower() == "background":
                value = value[1:]
        else:
            raise _fail(f"expected a list of class names, e.g. [\"lesion\"]; got {_kind(value)} {value!r}"[:200])
        if not value:
            raise _fail("lists no foreground class; give at least one, e.g. [\"lesion\"]")
        entries = [_class_entry(item, i) for i, item in enumerate(value)]
        names = [e["name"] for e in entries]
        keys = [e["key"] for e in entries]
        if any(n.lower() == "background" for n in names):
            raise _fail("'background' is index 0, not a foreground class; list it first or not at all")
        for what, seq in (("class names", names), ("class keys", keys)):
            dupes = sorted({s for s in seq if seq.count(s) > 1})
            if dupes:
                raise _fail(f"{what} must be unique; {dupes} repeat")
        return tuple(ClassEntry(**e) for e in entries)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, dict):
            raise _fail(f"expected an object like {{\"background\": 0, \"lesion\": 1}}; got {_kind(value)}")
        for name, v in value.items():
            if isinstance(v, list):
                raise _fail(f"{name!r}: region-based labels (lists of values) are not supported")
            if not isinstance(v, int) or isinstance(v, bool):
                raise _fail(f"{name!r}: label values must be whole numbers; got {_kind(v)} {v!r}")
        if value.get("background") != 0:
            raise _fail("needs \"background\": 0 (nnU-Net convention)")
        fg = sorted(v for k, v in value.items() if k != "background")
        if fg != list(range(1, len(fg) + 1)):
            raise _fail(f"foreground label values must be 1..K without gaps or repeats; got {fg}")
        return value

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, dict):
            raise _fail(
                "must map subject -> group or group -> [subjects]; got " + _kind(value)
            )
        out: dict[str, str] = {}
        for key, item in value.items():
            if isinstance(item, list):  # group -> [subjects]
                for subject in item:
                    if not isinstance(subject, str):
                        raise _fail(f"group {key!r}: subjects must be names; got {_kind(subject)} {subject!r}")
                    if subject in out and out[subject] != key:
                        raise _fail(f"subject {subject!r} is in two groups ({out[subject]!r}, {key!r})")
                    out[subject] = key
            elif isinstance(item, str):  # subject -> group
                if key in out and out[key] != item:
                    raise _fail(f"subject {key!r} is in two groups ({out[key]!r}, {item!r})")
                out[key] = item
            else:
                raise _fail(f"{key!r}: expected a group name or a list of subjects; got {_kind(item)} {item!r}")
        return out

    @model_validator(mode="after")
    def _classes_match_labels(self) -> DatasetJson:
        if self.classes is not None and self.labels is not None:
            k = len(self.labels) - 1
            if k != len(self.classes):
                raise _fail(f"'classes' lists {len(self.classes)} classes but 'labels' has {k} foreground values")
        return self

    # ------------------------------------------------------------------ normalised views
    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Foreground class names in index order (from ``classes``, else ``labels``), or None."""
        if self.classes is not None:
            return tuple(c.name for c in self.classes)
        if self.labels is not None:
            return tuple(k for k, _v in sorted(self.labels.items(), key=lambda kv: kv[1]) if k != "background")
        return None

    @property
    def class_keys(self) -> tuple[str, ...] | None:
        """Short keys of the classes (``rater-<id>_label-<key>.nii.gz``), or None."""
        if self.classes is not None:
            return tuple(c.key for c in self.classes)
        names = self.class_names
        return None if names is None else tuple(n.replace(" ", "-") for n in names)


def read_dataset_json(root: str | os.PathLike) -> DatasetJson | None:
    """Parse ``root/dataset.json``, or None when the folder has none.

    Raises
    ------
    InputError
        Not a regular file, not UTF-8 JSON, too deep, not an object, a wrong type or value, an
        unknown key: one line naming the file and the key path, e.g.
        ``DATASET/dataset.json: classes: expected a list of class names, e.g. ["lesion"]; got a number 5``.
    """
    path = Path(root) / "dataset.json"
    if not os.path.lexists(path):
        return None
    data = load_json(path, what="dataset.json")
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a JSON object with channels/classes/groups; got {_kind(data)}; fix or delete it"
        )
    return parse(DatasetJson, data, source=str(path))
