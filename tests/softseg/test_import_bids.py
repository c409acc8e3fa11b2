"""softseg import bids: ivadomed-style BIDS (3 subjects, 2 raters, 2 contrasts) -> softseg dataset."""

from __future__ import annotations

import filecmp
import json
import os
import shutil

import numpy as np
import pytest
from interchange_trees import SHAPE, blob, files_under, load, make_bids, refused, write_nifti

from softseg.cli import main
from softseg.errors import InputError
from softseg.interchange.bids import parse_bids_name, plan_bids_import
from softseg.interchange.plan import execute_plan

pytest.importorskip("bids")


@pytest.fixture
def bids_tree(tmp_path):
    root = tmp_path / "bids"
    data = make_bids(root)
    return root, data


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- grammar
def test_bids_name_grammar():
    n = parse_bids_name("sub-01_ses-02_T2w_lesion-manual-rater1.nii.gz")
    assert n.entities == {"sub": "01", "ses": "02", "lesion": "manual-rater1"}
    assert n.bare == ("T2w",) and n.suffix is None and n.extension == ".nii.gz"
    n = parse_bids_name("sub-01_desc-rater1_label-GM_mask.nii")
    assert n.entities == {"sub": "01", "desc": "rater1", "label": "GM"} and n.suffix == "mask" and n.extension == ".nii"
    assert parse_bids_name("participants.tsv") is None


# ----------------------------------------------------------------------------- the plan
def test_plan_maps_contrasts_to_channels_and_pipelines_to_raters(bids_tree):
    root, _ = bids_tree
    plan = plan_bids_import(root)
    assert plan.subjects == ("sub-01", "sub-02", "sub-03")
    assert plan.channels == ("T1w", "T2w")
    assert plan.classes == ("seg",)
    assert plan.raters == ("labels", "labels-rater2")
    mapping = {k.target: str(k.source.relative_to(root)) for k in plan.links}
    assert mapping["sub-02/image_T1w.nii.gz"] == "sub-02/anat/sub-02_T1w.nii.gz"
    assert mapping["sub-02/image_T2w.nii.gz"] == "sub-02/anat/sub-02_T2w.nii.gz"
    assert mapping["sub-02/rater-labels.nii.gz"] == "derivatives/labels/sub-02/anat/sub-02_T2w_seg-manual.nii.gz"
    assert mapping["sub-02/rater-labels-rater2.nii.gz"] == "derivatives/labels-rater2/sub-02/anat/sub-02_T2w_seg-manual.nii.gz"
    assert len(mapping) == 3 * 4
    unmatched = {str(u.path.relative_to(root)): u.reason for u in plan.unmatched}
    assert set(unmatched) == {"sub-01/dwi/sub-01_dwi.nii.gz", "derivatives/labels/sub-01/anat/sub-01_T2w_desc-preproc_T2w.nii.gz"}
    assert "datatype dwi" in unmatched["sub-01/dwi/sub-01_dwi.nii.gz"]
    assert "not a label file" in unmatched["derivatives/labels/sub-01/anat/sub-01_T2w_desc-preproc_T2w.nii.gz"]
    assert plan.record["rater_sources"]["labels-rater2"]["pipeline"] == "labels-rater2"


def test_import_links_files_and_softseg_reads_the_dataset(bids_tree, tmp_path):
    from softseg.data import load_subject, scan_dataset

    root, data = bids_tree
    dst = execute_plan(plan_bids_import(root), tmp_path / "ds")
    for f in (dst / "sub-01").iterdir():  # symbolic links to the very source files, no bytes copied
        assert f.is_symlink() and os.path.isabs(os.readlink(f))
    assert os.path.realpath(dst / "sub-03/image_T2w.nii.gz") == os.path.realpath(root / "sub-03/anat/sub-03_T2w.nii.gz")
    desc = json.loads((dst / "dataset.json").read_text())
    assert desc == {"channels": ["T1w", "T2w"], "classes": ["seg"],
                    "source": {"format": "bids", "path": str(root), "record": "softseg_import.json"}}
    record = json.loads((dst / "softseg_import.json").read_text())
    assert record["copied"] is False and len(record["softseg_import"]["unmatched"]) == 2
    info = scan_dataset(dst)
    assert info.names == ("sub-01", "sub-02", "sub-03") and info.channels == ("T1w", "T2w")
    assert info.rater_ids == ("labels", "labels-rater2")
    # the arrays softseg reads are the arrays written into the BIDS tree
    np.testing.assert_array_equal(load(dst / "sub-02/image_T1w.nii.gz"), data["images"][("02", "T1w")])
    np.testing.assert_array_equal(load(dst / "sub-02/rater-labels-rater2.nii.gz"), data["labels"][("labels-rater2", "02")])
    sub = load_subject(info.subject("sub-01"))
    assert sub.images.shape[0] == 2 and sub.raters.shape[0] == 2
    assert sub.raters.sum() == pytest.approx(data["labels"][("labels", "01")].sum() + data["labels"][("labels-rater2", "01")].sum())


def test_copy_makes_byte_identical_regular_files(bids_tree, tmp_path):
    root, _ = bids_tree
    dst = tmp_path / "ds"
    code = main(["import", "bids", str(root), str(dst), "--copy"])
    assert code == 0
    f = dst / "sub-01" / "rater-labels.nii.gz"
    assert f.is_file() and not f.is_symlink()
    assert filecmp.cmp(f, root / "derivatives/labels/sub-01/anat/sub-01_T2w_seg-manual.nii.gz", shallow=False)


def test_dry_run_lists_mapping_and_unmatched_and_writes_nothing(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    dst = tmp_path / "ds"
    code, out, err = _cli(capsys, "import", "bids", str(root), str(dst), "--dry-run")
    assert code == 0 and not dst.exists() and not list(tmp_path.glob(".ds*"))
    assert "dry run" in out
    assert "sub-01/rater-labels-rater2.nii.gz" in out and "derivatives/labels-rater2/sub-01/anat/sub-01_T2w_seg-manual.nii.gz" in out
    assert "sub-01/dwi/sub-01_dwi.nii.gz: datatype dwi" in out
    code, out, _ = _cli(capsys, "import", "bids", str(root), str(dst), "--dry-run", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True and doc["raters"] == ["labels", "labels-rater2"] and len(doc["files"]) == 12


def test_real_run_prints_unmatched_files(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    code, out, err = _cli(capsys, "import", "bids", str(root), str(tmp_path / "ds"))
    assert code == 0 and "3 subject(s), 12 file(s) linked" in out
    assert "not imported (2 file(s)" in err and "sub-01_dwi.nii.gz" in err


# ----------------------------------------------------------------------------- selection
def test_options_narrow_the_selection(bids_tree, tmp_path):
    root, _ = bids_tree
    plan = plan_bids_import(root, contrasts=["T2w"], derivatives=["labels-rater2"], subjects=["01", "sub-03"])
    assert plan.subjects == ("sub-01", "sub-03") and plan.channels == ("T2w",) and plan.raters == ("labels-rater2",)
    assert {k.target for k in plan.links} == {
        "sub-01/image.nii.gz", "sub-01/rater-labels-rater2.nii.gz", "sub-03/image.nii.gz", "sub-03/rater-labels-rater2.nii.gz"}
    reasons = {u.reason for u in plan.unmatched}
    assert "contrast not selected (--contrast)" in reasons and "subject not selected (--subject)" in reasons
    dst = execute_plan(plan, tmp_path / "ds")
    assert json.loads((dst / "dataset.json").read_text())["channels"] == ["T2w"]


@pytest.mark.parametrize(("option", "value", "listed"), [
    ("contrasts", ["FLAIR"], "T1w, T2w"), ("derivatives", ["nope"], "labels, labels-rater2"),
    ("labels", ["GM"], "seg"), ("descs", ["rater9"], "manual"), ("subjects", ["07"], "sub-01"),
])
def test_option_matching_nothing_lists_what_exists(bids_tree, option, value, listed):
    root, _ = bids_tree
    with pytest.raises(InputError, match=listed):
        plan_bids_import(root, **{option: value})


def test_desc_entities_in_one_pipeline_are_raters_and_label_entities_are_classes(tmp_path):
    root = tmp_path / "bids"
    make_bids(root, pipelines=("manual",), extras=False)
    for sub in ("01", "02", "03"):
        d = root / "derivatives" / "manual" / f"sub-{sub}" / "anat"
        (d / f"sub-{sub}_T2w_seg-manual.nii.gz").unlink()
        for r, seed in (("rater1", 1), ("rater2", 2)):
            for cls in ("SC", "GM"):
                write_nifti(d / f"sub-{sub}_T2w_desc-{r}_label-{cls}_seg.nii.gz", blob(seed=seed + len(cls)))
    plan = plan_bids_import(root)
    assert plan.raters == ("rater1", "rater2") and plan.classes == ("GM", "SC")
    targets = {k.target for k in plan.links if k.target.startswith("sub-02/rater")}
    assert targets == {f"sub-02/rater-{r}_label-{c}.nii.gz" for r in ("rater1", "rater2") for c in ("GM", "SC")}
    dst = execute_plan(plan, tmp_path / "ds")
    assert json.loads((dst / "dataset.json").read_text())["classes"] == ["GM", "SC"]
    only = plan_bids_import(root, labels=["SC"], descs=["rater2"])
    assert only.raters == ("rater2",) and only.classes == ("SC",)
    assert "sub-01/rater-rater2.nii.gz" in {k.target for k in only.links}


def test_bids_standard_label_without_contrast_and_sessions(tmp_path):
    root = tmp_path / "bids"
    (root).mkdir()
    (root / "dataset_description.json").write_text('{"Name": "s", "BIDSVersion": "1.9.0"}')
    for ses in ("1", "2"):
        write_nifti(root / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_T1w.nii.gz", np.ones(SHAPE, np.float32))
        write_nifti(root / "derivatives" / "seg" / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_desc-manual_mask.nii.gz", blob())
    plan = plan_bids_import(root)
    assert plan.subjects == ("sub-01_ses-1", "sub-01_ses-2") and plan.classes == ("mask",) and plan.raters == ("seg",)
    assert {k.target for k in plan.links} >= {"sub-01_ses-2/image.nii.gz", "sub-01_ses-2/rater-seg.nii.gz"}


def test_group_by_participants_column(bids_tree, tmp_path):
    root, _ = bids_tree
    plan = plan_bids_import(root, group_by="institution_id")
    assert plan.dataset_json["groups"] == {"sub-01": "amu", "sub-02": "mgh", "sub-03": "amu"}
    with pytest.raises(InputError, match="participant_id, institution_id"):
        plan_bids_import(root, group_by="site")


def test_subject_without_labels_is_listed_not_imported(bids_tree):
    root, _ = bids_tree
    for pipe in ("labels", "labels-rater2"):
        shutil.rmtree(root / "derivatives" / pipe / "sub-03")
    plan = plan_bids_import(root)
    assert plan.subjects == ("sub-01", "sub-02")
    assert {str(u.path.relative_to(root)) for u in plan.unmatched if "no selected label" in u.reason} == {
        "sub-03/anat/sub-03_T1w.nii.gz", "sub-03/anat/sub-03_T2w.nii.gz"}


# ----------------------------------------------------------------------------- bad input (CLI: exit 2, one line, nothing written)



def test_missing_dataset_description(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    (root / "dataset_description.json").unlink()
    refused(capsys, tmp_path, ["import", "bids", str(root), str(tmp_path / "ds")], "dataset_description.json", str(root))


def test_derivative_without_raw_image(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    orphan = root / "derivatives" / "labels" / "sub-04" / "anat" / "sub-04_T2w_seg-manual.nii.gz"
    write_nifti(orphan, blob())
    refused(capsys, tmp_path, ["import", "bids", str(root), str(tmp_path / "ds")], str(orphan), "no matching raw image")
    wrong_contrast = root / "derivatives" / "labels" / "sub-01" / "anat" / "sub-01_FLAIR_seg-manual.nii.gz"
    orphan.unlink()
    write_nifti(wrong_contrast, blob())
    refused(capsys, tmp_path, ["import", "bids", str(root), str(tmp_path / "ds")], str(wrong_contrast))


def test_subject_missing_a_contrast(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    (root / "sub-02" / "anat" / "sub-02_T1w.nii.gz").unlink()
    line = refused(capsys, tmp_path, ["import", "bids", str(root), str(tmp_path / "ds")], "sub-02", "T1w", "--contrast")
    assert "present in every labelled subject: T2w" in line


def test_label_on_another_grid(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    lab = root / "derivatives" / "labels" / "sub-01" / "anat" / "sub-01_T2w_seg-manual.nii.gz"
    write_nifti(lab, blob(), spacing=(0.5, 0.8, 2.0))
    refused(capsys, tmp_path, ["import", "bids", str(root), str(tmp_path / "ds")], str(lab), "voxel grid")


def test_two_labels_for_one_rater_and_class(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    write_nifti(root / "derivatives" / "labels" / "sub-01" / "anat" / "sub-01_T1w_seg-manual.nii.gz", blob())
    refused(capsys, tmp_path, ["import", "bids", str(root), str(tmp_path / "ds")], "second label", "--desc")


def test_existing_destination_and_overwrite(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    dst = tmp_path / "ds"
    assert main(["import", "bids", str(root), str(dst), "--contrast", "T2w"]) == 0
    capsys.readouterr()
    refused(capsys, tmp_path, ["import", "bids", str(root), str(dst)], str(dst), "--overwrite")
    assert main(["import", "bids", str(root), str(dst), "--overwrite"]) == 0  # an earlier import is replaced
    assert (dst / "sub-01" / "image_T1w.nii.gz").is_symlink() and not (dst / "sub-01" / "image.nii.gz").exists()
    capsys.readouterr()
    other = tmp_path / "mywork"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    refused(capsys, tmp_path, ["import", "bids", str(root), str(other), "--overwrite"], "not written by an import")
    assert (other / "notes.txt").read_text() == "precious"


def test_destination_inside_the_source(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    before = files_under(root)
    code, _, err = _cli(capsys, "import", "bids", str(root), str(root / "derivatives" / "softseg"))
    assert code == 2 and "inside the source" in err and len(err.strip().splitlines()) == 1
    assert files_under(root) == before


def test_dangling_link_in_the_source_writes_nothing(bids_tree, tmp_path, capsys):
    """A DataLad/git-annex file that was never fetched is a link to nowhere."""
    root, _ = bids_tree
    f = root / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    plan = plan_bids_import(root)
    f.unlink()
    f.symlink_to(root / ".git" / "annex" / "objects" / "missing.nii.gz")
    with pytest.raises(InputError, match="datalad get"):
        execute_plan(plan, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------- import -> train -> predict
@pytest.mark.slow
def test_import_then_train_one_epoch_then_predict(bids_tree, tmp_path, capsys):
    root, _ = bids_tree
    dst = tmp_path / "ds"
    assert main(["import", "bids", str(root), str(dst)]) == 0
    model = tmp_path / "m.safetensors"
    code = main(["train", str(dst), "--candidate", "softseg", "--out", str(model), "--epochs", "1",
                 "--crop", "16", "--depth", "2", "--width", "4", "--batch-size", "4", "--no-augment", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 0, err
    code = main(["predict", str(model), str(dst / "sub-01"), "-o", str(tmp_path / "pred")])
    out, err = capsys.readouterr()
    assert code == 0, err
    pred = load(tmp_path / "pred" / "sub-01_pred.nii.gz")
    assert pred.shape == SHAPE and pred.dtype == np.float32 and 0 <= pred.min() and pred.max() <= 1
