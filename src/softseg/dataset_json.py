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

The class name -> file key rule is :func:`class_key` (the one implementation: the anatomy
generator, imports, ``softseg fuse`` / ``evaluate`` / ``interpolate`` all call it), and the
classes of a multi-class run (from a dataset.json, a count K or names) are a :class:`ClassList`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from softseg.errors import InputError
from softseg.schema import Schema, load_json, parse

__all__ = [
    "ClassEntry",
    "ClassList",
    "DatasetJson",
    "class_file_path",
    "class_key",
    "class_list",
    "read_class_list",
    "read_dataset_json",
]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")


def class_key(name: str) -> str:
    """The default file-name key of a class name: THE rule (DESIGN decision 11).

    The name without leading/trailing blanks, each space replaced by ``-``:
    ``"grey matter"`` -> ``"grey-matter"``, ``"grey  matter"`` -> ``"grey--matter"`` (every
    space counts). The key names the class in file names, ``rater-<id>_label-<key>.nii.gz``
    and ``<image>_label-<key>.nii.gz``. A ``dataset.json`` may give a short key instead
    (``{"name": "grey matter", "key": "GM"}``); :class:`DatasetJson` refuses keys that hold
    other characters than letters, digits, ``.`` and ``-`` (e.g. a name with ``/``: give such a
    class a short key).

    Parameters
    ----------
    name : str
        A class name.

    Returns
    -------
    str
    """
    return str(name).strip().replace(" ", "-")


def class_file_path(path: str | os.PathLike, key: str | int) -> Path:
    """The per-class file of a NIfTI path: ``x.nii.gz`` -> ``x_label-<key>.nii.gz`` (``.nii`` too).

    The multi-class file names of DESIGN decision 11: a rater's per-class files
    (``rater-1`` -> ``rater-1_label-grey-matter``), a K-class prediction's class maps, the
    class probabilities ``softseg fuse`` writes next to a fused label map (key = class index).

    Parameters
    ----------
    path : path-like
        A ``.nii.gz`` or ``.nii`` file name (any other suffix is kept as it is: ``x.y`` ->
        ``x_label-<key>.y``).
    key : str or int
        The class's file key (:func:`class_key`) or its index 1..K.
    """
    path = Path(path)
    name = path.name
    suffix = name[-7:] if name.lower().endswith(".nii.gz") else path.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f"{stem}_label-{key}{suffix}")


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
    key = class_key(name) if key is None else key.strip()
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
        return None if names is None else tuple(class_key(n) for n in names)


@dataclass(frozen=True)
class ClassList:
    """The foreground classes of a multi-class run: names and file keys, index 1..K.

    Label value k (1..K) of an integer label map is class k; 0 is background. Made by
    :meth:`numbered` (a count K: names and keys ``"1"..."K"``), :meth:`from_names` or
    :func:`read_class_list` (a dataset.json file). ``softseg fuse``, ``softseg interpolate``
    and ``softseg evaluate`` take their ``--classes`` / ``--dataset-json`` through it.

    Attributes
    ----------
    names : tuple of str
        Class names 1..K.
    keys : tuple of str
        Their file keys (:func:`class_key`, or the short keys of a dataset.json).
    source : str
        Where the classes came from (``"--classes"``, a dataset.json path), named in messages.
    """

    names: tuple[str, ...]
    keys: tuple[str, ...]
    source: str = "the class list"

    def __post_init__(self) -> None:
        if not self.names or len(self.keys) != len(self.names):
            raise InputError(
                f"{self.source}: a class list needs one name and one key per class (1..K); got "
                f"names {list(self.names)} and keys {list(self.keys)}"
            )

    @property
    def k(self) -> int:
        """K, the number of foreground classes."""
        return len(self.names)

    @classmethod
    def numbered(cls, k: int, *, source: str = "--classes") -> ClassList:
        """Classes 1..K known only by their index (names and keys ``"1"``..``"K"``).

        Raises
        ------
        InputError
            K is not a whole number >= 1 (the message starts with *source*).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"{source} must be a whole number >= 1; got {k!r}")
        if k < 1:
            raise InputError(f"{source} must be >= 1; got {k}")
        names = tuple(str(i) for i in range(1, int(k) + 1))
        return cls(names, names, source)

    @classmethod
    def from_names(cls, names: Sequence[str], *, source: str = "--classes") -> ClassList:
        """Classes named in order 1..K; keys by :func:`class_key`, checked as a dataset.json's
        ``"classes"`` are (unique names and keys, no "background", file-name characters).

        Raises
        ------
        InputError
            One line starting with *source*, e.g. a name that makes no file-name key.
        """
        meta = parse(DatasetJson, {"classes": [str(n) for n in names]}, source=source)
        return cls(meta.class_names or (), meta.class_keys or (), source)

    def describe(self) -> str:
        """``"0 = background, 1 = GM, 2 = WM"``: the label values of the classes, for messages."""
        return "0 = background, " + ", ".join(f"{i} = {n}" for i, n in enumerate(self.names, start=1))

    def index(self, token: str, path: str | os.PathLike) -> int:
        """Class index 1..K of the ``<class>`` of a file ``..._label-<class>.nii.gz``.

        *token* may be the index, the key, or the name with spaces as ``-``.

        Raises
        ------
        InputError
            *token* names no class of the list (the message names *path* and the classes).
        """
        token = str(token)
        if token.isdigit() and 1 <= int(token) <= self.k:
            return int(token)
        for i, (name, key) in enumerate(zip(self.names, self.keys), start=1):
            if token in (key, class_key(name)):
                return i
        raise InputError(
            f"{path}: class {token!r} is not a class of {self.source} (classes "
            f"{', '.join(f'{i}={n}' for i, n in enumerate(self.names, start=1))}); name per-class "
            "files <rater>_label-<class>.nii.gz with one of them"
        )

    def check_label_values(self, labels: np.ndarray, path: str | os.PathLike) -> None:
        """Refuse an integer label map holding values above K.

        Parameters
        ----------
        labels : ndarray of non-negative integers
            Already checked as a label map (e.g. :func:`softseg.fusion.as_label_maps`).
        path : path-like or str
            The file (or layer) named in the message.

        Raises
        ------
        InputError
            ``"<path>: holds label value 3, not a class of <source> (0 = background, 1 = GM,
            2 = WM); fix the label map or the class list"``.
        """
        labels = np.asarray(labels)
        if labels.size == 0 or int(labels.max()) <= self.k:
            return
        bad = np.unique(labels[labels > self.k])
        raise InputError(
            f"{path}: holds label value{'s' if bad.size > 1 else ''} "
            f"{', '.join(map(str, bad[:5].tolist()))}, not a class of {self.source} "
            f"({self.describe()}); fix the label map or the class list"
        )


def read_class_list(path: str | os.PathLike) -> ClassList:
    """The classes a dataset.json FILE names (``"classes"``, or nnU-Net ``"labels"``).

    Parsed with :class:`DatasetJson` (the one schema). nnU-Net ``"labels"`` are 0 (background)
    and 1..K without gaps (checked), so a label map's values are the class indices either way.

    Raises
    ------
    InputError
        Everything :func:`read_dataset_json` refuses, or a document that names no class.
    """
    source = str(path)
    meta = _read(path)
    if not meta.class_names:
        raise InputError(
            f"{source}: lists no \"classes\" (or nnU-Net \"labels\"); name the classes, e.g. "
            "\"classes\": [\"grey matter\", \"white matter\"]"
        )
    return ClassList(meta.class_names, meta.class_keys or (), source)


def class_list(
    *, count: int | None = None, dataset_json: str | os.PathLike | None = None
) -> ClassList | None:
    """The classes of a multi-class run, given as a count K or by a dataset.json file.

    What ``softseg fuse`` and ``softseg interpolate`` do with ``--classes K`` / ``--dataset-json
    FILE`` (messages name those options).

    Returns
    -------
    ClassList or None
        :meth:`ClassList.numbered` (count), :func:`read_class_list` (file), None for neither
        (a two-class run).

    Raises
    ------
    InputError
        Both given, a count below 1, or what :func:`read_class_list` refuses.
    """
    if count is not None and dataset_json is not None:
        raise InputError("give either --classes K or --dataset-json FILE, not both")
    if count is not None:
        return ClassList.numbered(count, source="--classes")
    return None if dataset_json is None else read_class_list(dataset_json)


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
    return _read(path)


def _read(path: str | os.PathLike) -> DatasetJson:
    data = load_json(path, what="dataset.json")
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a JSON object with channels/classes/groups; got {_kind(data)}; fix or delete it"
        )
    return parse(DatasetJson, data, source=str(path))
