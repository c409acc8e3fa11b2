"""softseg import nnunet: nnU-Net v2 (3 cases, 2 channels, 2 classes) and MSD datasets -> softseg dataset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from interchange_trees import SHAPE, blob, image_like, load, make_nnunet, refused, write_nifti

from softseg.cli import main
from softseg.errors import InputError
from softseg.interchange.nnunet import parse_labels, plan_nnunet_import
from softseg.interchange.plan import execute_plan


@pytest.fixture
def nnunet_tree(tmp_path):
    root = tmp_path / "Dataset501_Test"
    data = make_nnunet(root)
    return root, data


def test_plan_channels_classes_and_label_maps(nnunet_tree):
    root, _ = nnunet_tree
    plan = plan_nnunet_import(root)
    assert plan.subjects == ("case001", "case002", "case003")
    assert plan.channels == ("ADC", "T2")  # softseg orders channels by name
    assert plan.classes == ("GM", "WM") and plan.raters == ("1",)
    assert plan.dataset_json == {"channels": ["ADC", "T2"], "classes": ["GM", "WM"],
                                 "labels": {"background": 0, "GM": 1, "WM": 2},
                                 "source": {"format": "nnunet", "path": str(root), "record": "softseg_import.json"}}
    mapping = {k.target: str(k.source.relative_to(root)) for k in plan.links}
    assert mapping == {
        f"{c}/{t}": s for c in ("case001", "case002", "case003") for t, s in (
            ("image_T2.nii.gz", f"imagesTr/{c}_0000.nii.gz"), ("image_ADC.nii.gz", f"imagesTr/{c}_0001.nii.gz"),
            ("rater-1.nii.gz", f"labelsTr/{c}.nii.gz"))
    }
    assert plan.record["channel_names"] == {"T2": "T2", "ADC": "ADC"}
    assert {str(u.path.relative_to(root)) for u in plan.unmatched} == {"imagesTs/case900_0000.nii.gz", "imagesTs/case900_0001.nii.gz"}


def test_import_links_and_labels_come_back_unchanged(nnunet_tree, tmp_path, capsys):
    root, data = nnunet_tree
    dst = tmp_path / "ds"
    assert main(["import", "nnunet", str(root), str(dst), "--rater", "expert"]) == 0
    out, err = capsys.readouterr()
    assert "3 subject(s), 9 file(s) linked" in out and "imagesTs" in err
    for case in ("case001", "case002", "case003"):
        label = dst / case / "rater-expert.nii.gz"
        assert label.is_symlink() and os.path.realpath(label) == os.path.realpath(root / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(load(label), data["labels"][case])
        np.testing.assert_array_equal(load(dst / case / "image_ADC.nii.gz"), data["images"][(case, 1)])
    assert json.loads((dst / "dataset.json").read_text())["labels"] == {"background": 0, "GM": 1, "WM": 2}
    assert set(np.unique(load(dst / "case002" / "rater-expert.nii.gz"))) == {0, 1, 2}


def test_single_class_dataset_trains_through_scan_dataset(tmp_path):
    from softseg.data import scan_dataset

    root = tmp_path / "Dataset502_One"
    make_nnunet(root, channels=("CT",), labels={"background": 0, "tumour": 1})
    dst = execute_plan(plan_nnunet_import(root), tmp_path / "ds")
    info = scan_dataset(dst)
    assert info.channels == ("CT",) and info.classes == ("tumour",) and info.rater_ids == ("1",)
    assert (dst / "case001" / "image.nii.gz").is_symlink()


def test_msd_dataset_json_single_modality(tmp_path):
    """Decathlon layout: labels and modality keyed by index, a training list, no _0000 suffix."""
    root = tmp_path / "Task04_Hippocampus"
    training = []
    for i in range(2):
        lab = blob(seed=i)
        write_nifti(root / "labelsTr" / f"hippocampus_{i:03d}.nii.gz", lab)
        write_nifti(root / "imagesTr" / f"hippocampus_{i:03d}.nii.gz", image_like(lab, seed=i))
        training.append({"image": f"./imagesTr/hippocampus_{i:03d}.nii.gz", "label": f"./labelsTr/hippocampus_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior"},
        "numTraining": 2, "training": training}))
    plan = plan_nnunet_import(root)
    assert plan.subjects == ("hippocampus_000", "hippocampus_001") and plan.classes == ("Anterior",)
    assert {k.target for k in plan.links} == {f"hippocampus_00{i}/{f}" for i in (0, 1) for f in ("image.nii.gz", "rater-1.nii.gz")}


def test_dataset_key_with_explicit_files(nnunet_tree):
    root, _ = nnunet_tree
    doc = json.loads((root / "dataset.json").read_text())
    doc["dataset"] = {"a": {"images": ["imagesTr/case001_0000.nii.gz", "imagesTr/case001_0001.nii.gz"],
                            "label": "labelsTr/case001.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps(doc))
    plan = plan_nnunet_import(root)
    assert plan.subjects == ("a",)
    assert {k.target: k.source.name for k in plan.links}["a/image_ADC.nii.gz"] == "case001_0001.nii.gz"


def test_dry_run_writes_nothing(nnunet_tree, tmp_path, capsys):
    root, _ = nnunet_tree
    code = main(["import", "nnunet", str(root), str(tmp_path / "ds"), "--dry-run"])
    out, _ = capsys.readouterr()
    assert code == 0 and not (tmp_path / "ds").exists()
    assert "case002/rater-1.nii.gz" in out and "labelsTr/case002.nii.gz" in out
    assert "imagesTs/case900_0000.nii.gz: imagesTs: test data without training labels" in out


@pytest.mark.parametrize(("labels", "needle"), [
    ({"background": 0, "whole": [1, 2]}, "region"),
    ({"background": 0, "GM": 1, "ignore": 2}, "ignore"),
    ({"background": 0, "GM": 2}, "consecutive"),
    ({"GM": 1}, "no background label 0"),
    ({"background": 0, "GM": 1.5}, "whole numbers"),
])
def test_label_declarations_that_softseg_refuses(labels, needle):
    with pytest.raises(InputError, match=needle):
        parse_labels({"labels": labels}, source="dataset.json")


def test_v1_labels_are_inverted():
    assert parse_labels({"labels": {"0": "background", "1": "edema", "2": "tumour"}}, source="x") == {
        "background": 0, "edema": 1, "tumour": 2}


# ----------------------------------------------------------------------------- bad input



def test_case_with_a_missing_channel(nnunet_tree, tmp_path, capsys):
    root, _ = nnunet_tree
    (root / "imagesTr" / "case002_0001.nii.gz").unlink()
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")],
         str(root / "imagesTr" / "case002_0001.nii.gz"), "missing")


def test_label_value_not_in_dataset_json(nnunet_tree, tmp_path, capsys):
    root, data = nnunet_tree
    lab = data["labels"]["case003"].copy()
    lab[0, 0, 0] = 5
    write_nifti(root / "labelsTr" / "case003.nii.gz", lab)
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")],
         str(root / "labelsTr" / "case003.nii.gz"), "[5]", "dataset.json")


def test_missing_dataset_json_and_missing_label(nnunet_tree, tmp_path, capsys):
    root, _ = nnunet_tree
    (root / "labelsTr" / "case001.nii.gz").unlink()
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")], "labelsTr/case001.nii.gz", "missing")
    (root / "dataset.json").unlink()
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")], str(root / "dataset.json"))


def test_label_without_image_and_case_off_grid(nnunet_tree, tmp_path, capsys):
    root, data = nnunet_tree
    write_nifti(root / "labelsTr" / "case777.nii.gz", np.zeros(SHAPE, np.uint8))
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")], "case777.nii.gz", "without an image")
    (root / "labelsTr" / "case777.nii.gz").unlink()
    write_nifti(root / "imagesTr" / "case001_0001.nii.gz", data["images"][("case001", 1)], spacing=(1.0, 0.8, 2.0))
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")], "case001_0001.nii.gz", "voxel grid")


def test_msd_four_dimensional_multimodal_image(tmp_path, capsys):
    root = tmp_path / "Task01_BrainTumour"
    write_nifti(root / "imagesTr" / "BRATS_001.nii.gz", np.zeros(SHAPE + (4,), np.float32))
    write_nifti(root / "labelsTr" / "BRATS_001.nii.gz", np.zeros(SHAPE, np.uint8))
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}]}))
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(tmp_path / "ds")], "BRATS_001.nii.gz", "nnUNetv2_convert_MSD_dataset")


def test_destination_exists_or_inside_source(nnunet_tree, tmp_path, capsys):
    root, _ = nnunet_tree
    dst = tmp_path / "ds"
    dst.mkdir()
    (dst / "x").write_text("keep")
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(dst)], str(dst), "already exists")
    refused(capsys, tmp_path, ["import", "nnunet", str(root), str(root / "softseg")], "inside the source")


def test_an_empty_destination_folder_is_accepted(nnunet_tree, tmp_path):
    root, data = nnunet_tree
    dst = tmp_path / "made_by_hand"
    dst.mkdir()
    assert main(["import", "nnunet", str(root), str(dst)]) == 0
    np.testing.assert_array_equal(load(dst / "case001" / "rater-1.nii.gz"), data["labels"]["case001"])


def test_class_names_that_are_not_file_keys_get_a_key(tmp_path):
    from softseg.dataset_json import read_dataset_json

    root = tmp_path / "Dataset503_Names"
    make_nnunet(root, labels={"background": 0, "peripheral zone": 1, "GM/WM": 2})
    dst = execute_plan(plan_nnunet_import(root), tmp_path / "ds")
    doc = json.loads((dst / "dataset.json").read_text())
    assert doc["classes"] == ["peripheral zone", {"name": "GM/WM", "key": "GM-WM"}]
    parsed = read_dataset_json(dst)  # the product's one dataset.json schema reads it back
    assert parsed.class_names == ("peripheral zone", "GM/WM") and parsed.class_keys == ("peripheral-zone", "GM-WM")
