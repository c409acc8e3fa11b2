"""softseg.dataset_json: every dataset.json the product writes parses; wrong ones are one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from softseg.dataset_json import DatasetJson, read_dataset_json
from softseg.errors import InputError
from softseg.schema import parse


def _write(tmp_path, obj) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps(obj))


def test_missing_file_is_none(tmp_path):
    assert read_dataset_json(tmp_path) is None


def test_the_phantoms_dataset_json(tmp_path):
    from softseg.phantom import write_dataset

    root = write_dataset(tmp_path / "ds", n_subjects=2, shape=(16, 16, 8), n_raters=2)
    meta = read_dataset_json(root)
    assert meta.class_names == ("target",) and meta.class_keys == ("target",)
    assert meta.channels == ("image",)
    assert meta.groups == {"sub-01": "centre-A", "sub-02": "centre-B"}
    assert meta.raters == ("1", "2") and meta.truth == "truth_soft.nii.gz"


def test_the_multi_class_contract_keys(tmp_path):
    # DESIGN 11 / docs/training.md: names (key = spaces as "-"), short keys, nnU-Net labels
    _write(tmp_path, {
        "channels": ["T1w"],
        "classes": ["grey matter", {"name": "white matter", "key": "WM"}, "csf"],
        "labels": {"background": 0, "grey matter": 1, "WM": 2, "csf": 3},
        "truth": {"grey matter": "truth_label-grey-matter.nii.gz"},
        "groups": {"centre-A": ["sub-01", "sub-03"], "sub-02": "centre-B"},
        "subjects": ["sub-01", {"subject": "sub-02", "axial_slices": [0, 4]}],
        "generator": {"function": "softseg.anatomy.write_dataset", "seed": 0},
    })
    meta = read_dataset_json(tmp_path)
    assert meta.class_names == ("grey matter", "white matter", "csf")
    assert meta.class_keys == ("grey-matter", "WM", "csf")
    assert meta.groups == {"sub-01": "centre-A", "sub-03": "centre-A", "sub-02": "centre-B"}


@pytest.mark.parametrize(
    ("classes", "names"),
    [
        ({"0": "background", "1": "lesion"}, ("lesion",)),  # nnU-Net v1 style
        (["background", "lesion"], ("lesion",)),  # index 0 listed first
        (None, None),
    ],
)
def test_other_class_spellings(classes, names):
    assert parse(DatasetJson, {"classes": classes} if classes is not None else {}, source="d").class_names == names


def test_labels_alone_give_the_classes_in_value_order():
    meta = parse(DatasetJson, {"labels": {"WM": 2, "background": 0, "GM": 1}}, source="d")
    assert meta.class_names == ("GM", "WM")


@pytest.mark.parametrize(
    ("doc", "regex"),
    [
        ({"classes": 5}, r"^d: classes: expected a list of class names, e\.g\. \[\"lesion\"\]; got a number 5$"),
        ({"classes": "lesion"}, r"classes: expected a list of class names.*got a string 'lesion'"),
        ({"classes": []}, r"classes: lists no foreground class"),
        ({"classes": ["a", "a"]}, r"classes: class names must be unique; \['a'\] repeat"),
        ({"classes": ["a b", {"name": "c", "key": "a-b"}]}, r"class keys must be unique"),
        ({"classes": ["GM/WM"]}, r"file-name key 'GM/WM' may hold only letters"),
        ({"classes": [{"name": "x", "colour": "red"}]}, r"entry 0 must be a class name or"),
        ({"classes": {"1": "a", "3": "b"}}, r"label values must be 1\.\.K without gaps"),
        ({"labels": {"a": 1}}, r"labels: needs \"background\": 0"),
        ({"labels": {"background": 0, "a": [1, 2]}}, r"region-based labels"),
        ({"labels": {"background": 0, "a": "1"}}, r"label values must be whole numbers"),
        ({"classes": ["a"], "labels": {"background": 0, "a": 1, "b": 2}}, r"'classes' lists 1 classes but 'labels' has 2"),
        ({"channels": "T1w"}, r"channels: expected a list of channel names"),
        ({"channels": ["a", "a"]}, r"channel names must be unique"),
        ({"groups": {"s1": "A", "B": ["s1"]}}, r"subject 's1' is in two groups"),
        ({"groups": {"s1": 3}}, r"expected a group name or a list of subjects"),
        ({"name": 5}, r"name: Input should be a valid string"),
        ({"clases": ["a"]}, r"clases: unknown key"),
    ],
)
def test_wrong_documents_are_one_line_naming_the_key(doc, regex):
    with pytest.raises(InputError) as info:
        parse(DatasetJson, doc, source="d")
    assert "\n" not in str(info.value)
    assert re.search(regex, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("raw", "regex"),
    [
        (b"[1, 2]", r"expected a JSON object .*; got a list"),
        (b"{\"classes\": [\"l\xe9sion\"]}", r"not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, r"JSON nested deeper than"),
        (b"{\"classes\": ", r"not valid JSON"),
    ],
)
def test_unreadable_documents(tmp_path, raw, regex):
    (tmp_path / "dataset.json").write_bytes(raw)
    with pytest.raises(InputError, match=f"^{tmp_path / 'dataset.json'}: .*{regex}"):
        read_dataset_json(tmp_path)


# --------------------------------------------------------------- the class key and class lists
from softseg.dataset_json import (  # noqa: E402
    ClassList,
    class_file_path,
    class_key,
    class_list,
    read_class_list,
)


@pytest.mark.parametrize(
    ("name", "key"),
    [("grey matter", "grey-matter"), (" csf ", "csf"), ("grey  matter", "grey--matter"), ("WM", "WM")],
)
def test_class_key_is_the_schemas_default_key(name, key):
    # DESIGN 11: spaces as "-" (each one); the schema derives the same key for a bare name
    assert class_key(name) == key
    assert parse(DatasetJson, {"classes": [name]}, source="d").class_keys == (key,)
    assert parse(DatasetJson, {"labels": {"background": 0, name: 1}}, source="d").class_keys == (class_key(name),)


def test_class_file_path():
    assert class_file_path("/d/rater-1.nii.gz", "grey-matter").as_posix() == "/d/rater-1_label-grey-matter.nii.gz"
    assert class_file_path("out.NII.GZ", 2).name == "out_label-2.NII.GZ"
    assert class_file_path("out.nii", "csf").name == "out_label-csf.nii"


def test_class_lists(tmp_path):
    numbered = ClassList.numbered(3)
    assert numbered.names == numbered.keys == ("1", "2", "3") and numbered.k == 3
    named = ClassList.from_names(["grey matter", "csf"], source="--classes")
    assert named.keys == ("grey-matter", "csf")
    assert named.index("grey-matter", "f") == 1 and named.index("2", "f") == 2
    with pytest.raises(InputError, match=r"^f: class 'wm' is not a class of --classes \(classes 1=grey matter, 2=csf\)"):
        named.index("wm", "f")
    named.check_label_values(np.array([0, 1, 2], np.uint8), "r.nii.gz")
    with pytest.raises(
        InputError,
        match=r"^r.nii.gz: holds label values 3, 7, not a class of --classes "
        r"\(0 = background, 1 = grey matter, 2 = csf\); fix the label map or the class list$",
    ):
        named.check_label_values(np.array([[0, 3], [7, 3]], np.uint8), "r.nii.gz")
    with pytest.raises(InputError, match=r"--classes must be >= 1; got 0"):
        ClassList.numbered(0)
    with pytest.raises(InputError, match=r"^--classes: classes: .*repeat"):
        ClassList.from_names(["csf", "csf"])
    # from a dataset.json FILE: classes, or nnU-Net labels; none at all is refused
    ds = tmp_path / "d.json"
    ds.write_text(json.dumps({"classes": [{"name": "grey matter", "key": "GM"}, "csf"]}))
    assert read_class_list(ds) == ClassList(("grey matter", "csf"), ("GM", "csf"), str(ds))
    assert class_list(dataset_json=ds) == read_class_list(ds)
    assert class_list(count=2) == ClassList.numbered(2) and class_list() is None
    with pytest.raises(InputError, match="not both"):
        class_list(count=2, dataset_json=ds)
    ds.write_text(json.dumps({"channels": ["T1w"]}))
    with pytest.raises(InputError, match=r"d.json: lists no \"classes\""):
        read_class_list(ds)
    ds.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"d.json: expected a JSON object"):
        read_class_list(ds)
