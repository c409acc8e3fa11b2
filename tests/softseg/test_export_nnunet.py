"""softseg export nnunet: fused labels (checked against SimpleITK / by hand), the model's split,
and export -> import round trips."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from interchange_trees import load, make_softseg_dataset, model_file, refused

from softseg.cli import main
from softseg.interchange.export_nnunet import export_nnunet
from softseg.interchange.nnunet import plan_nnunet_import
from softseg.interchange.plan import execute_plan

SUBJECTS = ("s01", "s02", "s03", "s04", "s05")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "softseg_ds"
    data = make_softseg_dataset(root, channels=("T1w", "T2w"))
    return root, data


def _sitk_staple(maps):
    """Independent reference: SimpleITK's STAPLE probability >= 0.5 (the consensus)."""
    sitk = pytest.importorskip("SimpleITK")
    images = [sitk.GetImageFromArray(np.ascontiguousarray(m.astype(np.uint8))) for m in maps]
    prob = sitk.GetArrayFromImage(sitk.STAPLE(images, 1.0))
    return (prob >= 0.5).astype(np.uint8)


def test_staple_export_matches_simpleitk_and_links_images(dataset, tmp_path):
    root, data = dataset
    dst = tmp_path / "nnUNet_raw" / "Dataset501_Synthetic"
    dst.parent.mkdir()
    report = export_nnunet(root, dst, fusion="staple")
    assert report.fusion == "staple" and report.train == SUBJECTS and report.test == ()
    doc = json.loads((dst / "dataset.json").read_text())
    assert doc["channel_names"] == {"0": "T1w", "1": "T2w"}
    assert doc["labels"] == {"background": 0, "foreground": 1}
    assert doc["numTraining"] == 5 and doc["file_ending"] == ".nii.gz"
    assert not (dst / "splits_final.json").exists()
    for sub in SUBJECTS:
        for i, c in enumerate(("T1w", "T2w")):
            f = dst / "imagesTr" / f"{sub}_{i:04d}.nii.gz"
            assert f.is_symlink() and os.path.realpath(f) == os.path.realpath(root / sub / f"image_{c}.nii.gz")
        label = load(dst / "labelsTr" / f"{sub}.nii.gz")
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, _sitk_staple([data["raters"][(sub, r)] for r in (1, 2, 3)]))
    assert sorted(p.name for p in dst.iterdir()) == ["dataset.json", "imagesTr", "labelsTr", "softseg_export.json"]


@pytest.mark.parametrize("fusion", ["average", "majority"])
def test_average_and_majority_by_hand(dataset, tmp_path, fusion):
    """Three binary raters: mean >= 0.5 and the majority vote are both 'at least two votes'."""
    root, data = dataset
    dst = tmp_path / "Dataset502_X"
    export_nnunet(root, dst, fusion=fusion)
    for sub in SUBJECTS:
        votes = sum(data["raters"][(sub, r)].astype(int) for r in (1, 2, 3))
        np.testing.assert_array_equal(load(dst / "labelsTr" / f"{sub}.nii.gz"), (votes >= 2).astype(np.uint8))
    assert json.loads((dst / "softseg_export.json").read_text())["softseg_export"]["fusion"] == fusion


def test_model_split_becomes_splits_final_and_test_cases_go_to_imagests(dataset, tmp_path, capsys):
    root, data = dataset
    model = model_file(tmp_path / "m.safetensors", channels=("T1w", "T2w"),
                       split={"train": ["s01", "s02", "s03"], "val": ["s04"], "test": ["s05"]}, fusion="average")
    dst = tmp_path / "Dataset503_Split"
    code = main(["export", "nnunet", str(root), str(dst), "--model", str(model), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["fusion"] == "average" and summary["test"] == ["s05"]  # the model's fusion by default
    assert json.loads((dst / "splits_final.json").read_text()) == [{"train": ["s01", "s02", "s03"], "val": ["s04"]}]
    assert json.loads((dst / "dataset.json").read_text())["numTraining"] == 4
    assert sorted(p.name for p in (dst / "imagesTr").iterdir())[:2] == ["s01_0000.nii.gz", "s01_0001.nii.gz"]
    assert sorted(p.name for p in (dst / "imagesTs").iterdir()) == ["s05_0000.nii.gz", "s05_0001.nii.gz"]
    mean = sum(data["raters"][("s05", r)].astype(np.float32) for r in (1, 2, 3)) / 3
    np.testing.assert_array_equal(load(dst / "labelsTs" / "s05.nii.gz"), (mean >= 0.5).astype(np.uint8))
    record = json.loads((dst / "softseg_export.json").read_text())["softseg_export"]
    assert record["model"] == str(model) and record["split"]["test"] == ["s05"]


def test_round_trip_export_then_import_gives_back_the_labels(dataset, tmp_path):
    root, _ = dataset
    dst = tmp_path / "Dataset504_Round"
    export_nnunet(root, dst, fusion="staple")
    back = execute_plan(plan_nnunet_import(dst), tmp_path / "back")
    plan_doc = json.loads((back / "dataset.json").read_text())
    assert {k: plan_doc[k] for k in ("channels", "classes", "labels")} == {
        "channels": ["T1w", "T2w"], "classes": ["foreground"], "labels": {"background": 0, "foreground": 1}}
    for sub in SUBJECTS:
        np.testing.assert_array_equal(load(back / sub / "rater-1.nii.gz"), load(dst / "labelsTr" / f"{sub}.nii.gz"))
        # the images are the very same files as in the original dataset
        assert os.path.realpath(back / sub / "image_T2w.nii.gz") == os.path.realpath(root / sub / "image_T2w.nii.gz")
    # and a second export of the re-imported dataset (one rater: its own target) reproduces the labels
    again = tmp_path / "Dataset505_Again"
    export_nnunet(back, again, fusion="staple")
    for sub in SUBJECTS:
        np.testing.assert_array_equal(load(again / "labelsTr" / f"{sub}.nii.gz"), load(dst / "labelsTr" / f"{sub}.nii.gz"))


def test_overwrite_replaces_an_earlier_export_only(dataset, tmp_path, capsys):
    root, _ = dataset
    dst = tmp_path / "Dataset506_Over"
    export_nnunet(root, dst, fusion="staple")
    assert main(["export", "nnunet", str(root), str(dst), "--fusion", "majority", "--overwrite"]) == 0
    assert json.loads((dst / "softseg_export.json").read_text())["softseg_export"]["fusion"] == "majority"
    capsys.readouterr()


# ----------------------------------------------------------------------------- bad input



def test_bad_destination_name_place_and_existing(dataset, tmp_path, capsys):
    root, _ = dataset
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(tmp_path / "nnunet_out")], "DatasetNNN_Name")
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(root / "Dataset507_In")], "inside the source")
    existing = tmp_path / "Dataset508_Mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(existing)], "already exists")
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(existing), "--overwrite"], "not written by softseg export nnunet")


def test_bad_fusion_and_model_from_another_dataset(dataset, tmp_path, capsys):
    root, _ = dataset
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(tmp_path / "Dataset509_F"), "--fusion", "random"], "staple")
    model = model_file(tmp_path / "other.safetensors", channels=("T1w", "T2w"),
                       split={"train": ["s01", "x99"], "val": ["s02"]})
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(tmp_path / "Dataset510_M"), "--model", str(model)], "x99")
    pickle = tmp_path / "m.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")
    refused(capsys, tmp_path, ["export", "nnunet", str(root), str(tmp_path / "Dataset511_P"), "--model", str(pickle)], "pickle")


def _k_class_dataset(root, k=2, subjects=("s01", "s02", "s03")):
    """K = 2 classes: raters 1 and 2 as integer label maps, rater 3 as per-class binary files."""
    from softseg.io import save_volume

    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"classes": ["grey matter", "white matter"]}))
    labels = {}
    for i, sub in enumerate(subjects):
        rng = np.random.default_rng(70 + i)
        (root / sub).mkdir()
        save_volume(root / sub / "image.nii.gz", rng.normal(size=(7, 6, 5)).astype(np.float32), affine=np.eye(4))
        for r in (1, 2, 3):
            lab = rng.integers(0, k + 1, size=(7, 6, 5)).astype(np.uint8)
            labels[(sub, r)] = lab
            if r < 3:
                save_volume(root / sub / f"rater-{r}.nii.gz", lab, affine=np.eye(4))
            else:
                for c, key in ((1, "grey-matter"), (2, "white-matter")):
                    save_volume(root / sub / f"rater-3_label-{key}.nii.gz", (lab == c).astype(np.uint8),
                                affine=np.eye(4))
    return labels


@pytest.mark.parametrize("fusion", ["majority", "average", "staple"])
def test_k_class_export_is_the_fused_argmax_and_round_trips(tmp_path, fusion):
    root = tmp_path / "mc"
    labels = _k_class_dataset(root)
    dst = tmp_path / "Dataset510_Classes"
    report = export_nnunet(root, dst, fusion=fusion)
    assert report.labels == {"background": 0, "grey matter": 1, "white matter": 2}
    doc = json.loads((dst / "dataset.json").read_text())
    assert doc["labels"] == report.labels
    for sub in ("s01", "s02", "s03"):
        out = load(dst / "labelsTr" / f"{sub}.nii.gz")
        assert out.dtype == np.uint8
        votes = np.stack([sum((labels[(sub, r)] == c).astype(int) for r in (1, 2, 3)) for c in range(3)])
        winner = np.argmax(votes, axis=0)
        tied = (votes == votes.max(axis=0)).sum(axis=0) > 1  # three raters, three classes: 1/1/1
        expected = np.where(tied, 0, winner)  # vote ties -> background; average: lowest index = background
        if fusion == "staple":  # multi-label STAPLE: SimpleITK's labels, its undecided voxels -> background
            sitk = pytest.importorskip("SimpleITK")
            images = [sitk.GetImageFromArray(np.ascontiguousarray(labels[(sub, r)])) for r in (1, 2, 3)]
            flt = sitk.MultiLabelSTAPLEImageFilter()
            flt.SetLabelForUndecidedPixels(3)
            ref = sitk.GetArrayFromImage(flt.Execute(images))
            expected = np.where(ref == 3, 0, ref)
        np.testing.assert_array_equal(out, expected)
    # nnU-Net dataset -> softseg dataset (one integer label map per case) -> the same classes and labels
    back = execute_plan(plan_nnunet_import(dst), tmp_path / "back")
    from softseg.data import load_subject, scan_dataset

    info = scan_dataset(back)
    assert info.classes == ("grey matter", "white matter") and info.subjects[0].kinds == ("labels",)
    data = load_subject(info.subject("s01"))
    exported = load(dst / "labelsTr" / "s01.nii.gz")
    np.testing.assert_array_equal(data.geometry.from_display(data.raters[0]),
                                  np.stack([(exported == c) for c in range(3)]).astype(np.float32))
    again = tmp_path / "Dataset511_Again"
    export_nnunet(back, again, fusion=fusion)
    for sub in ("s01", "s02", "s03"):
        np.testing.assert_array_equal(load(again / "labelsTr" / f"{sub}.nii.gz"), load(dst / "labelsTr" / f"{sub}.nii.gz"))
