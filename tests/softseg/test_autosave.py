"""Autosave engine: versioned snapshots, pending work, pruning, crash safety, fallback, naming."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from softseg import autosave
from softseg.autosave import (
    KEEP,
    AutosaveWriter,
    SnapshotJob,
    choose_recovery_folder,
    discard_recovery,
    fallback_folder,
    list_recoveries,
    list_snapshots,
    load_snapshot,
    mark_recovery,
    primary_folder,
    prune_snapshots,
    rater_key,
    record_export,
    write_snapshot,
)
from softseg.confidence import ConfidenceScale
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import save_volume

# An LPS-ish oblique-free affine with anisotropic voxels, so file order != display order.
AFFINE = np.array(
    [[-0.9, 0, 0, 40.0], [0, 0, 1.5, -20.0], [0, 1.2, 0, 10.0], [0, 0, 0, 1]], dtype=np.float64
)
FILE_SHAPE = (7, 6, 5)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "sub-01" / "image.nii.gz"
    path.parent.mkdir()
    save_volume(path, np.zeros(FILE_SHAPE, dtype=np.float32), affine=AFFINE)
    return path


@pytest.fixture
def geometry(image):
    vol = nib.load(image)
    return DisplayGeometry.from_affine(vol.affine, FILE_SHAPE, header=vol.header)


@pytest.fixture
def fallback_root(tmp_path, monkeypatch):
    root = tmp_path / "cache-root"
    monkeypatch.setenv("SOFTSEG_RECOVERY_DIR", str(root))
    return root


@pytest.fixture
def folder(image, fallback_root):
    return choose_recovery_folder(image).folder


def _levels(geometry, seed=0):
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 4, size=geometry.display_shape).astype(np.uint8)
    out[0, 0, 0] = 1  # never empty
    return out


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------- naming
def test_primary_folder_is_next_to_the_image(image):
    assert primary_folder(image) == image.parent / ".softseg-recovery" / "image"
    target = choose_recovery_folder(image)
    assert target.folder == primary_folder(image)
    assert not target.is_fallback and target.problem is None
    assert target.folder.is_dir()


def test_rater_keys_are_injective_readable_and_case_safe():
    ids = ["dr.smith", "dr smith", "dr_smith", "Dr.Smith", "dr.smith ", "Ärztin 1", "a/b", "a\\b"]
    keys = [rater_key(r) for r in ids]
    assert len(set(keys)) == len(ids)
    assert len({k.lower() for k in keys}) == len(ids)  # also on case-insensitive file systems
    assert keys[0].startswith("dr_smith-") and len(keys[0]) == len("dr_smith-") + 10
    assert all("/" not in k and "\\" not in k and not k.startswith(".") for k in keys)
    assert rater_key("alice") == rater_key("alice")  # deterministic
    with pytest.raises(InputError, match="empty"):
        rater_key("   ")


def test_raters_differing_only_in_punctuation_never_share_snapshots(folder, image, geometry):
    a, b = _levels(geometry, 1), _levels(geometry, 2)
    pa = write_snapshot(folder, "dr.smith", a, session="aaaa0001", geometry=geometry)
    pb = write_snapshot(folder, "dr smith", b, session="bbbb0001", geometry=geometry)
    assert pa.parent != pb.parent and pa.exists() and pb.exists()
    recs = {r.rater: r for r in list_recoveries(image)}
    assert set(recs) == {"dr.smith", "dr smith"}
    np.testing.assert_array_equal(load_snapshot(recs["dr.smith"], geometry=geometry), a)
    np.testing.assert_array_equal(load_snapshot(recs["dr smith"], geometry=geometry), b)


# ------------------------------------------------------------------------------- snapshots
def test_snapshot_round_trip_in_file_order_with_the_image_affine(folder, image, geometry):
    levels = _levels(geometry)
    scale = ConfidenceScale.from_paper()
    path = write_snapshot(
        folder,
        "rater A",
        levels,
        session="s0000001",
        geometry=geometry,
        scale=scale,
        source_image=image,
        color=(0.1, 0.6, 1.0),
    )
    assert path.parent == folder / rater_key("rater A")
    assert path.name.endswith("_s0000001.nii.gz")
    img = nib.load(path)
    np.testing.assert_array_equal(img.affine, nib.load(image).affine)  # the image's own geometry
    assert img.shape == FILE_SHAPE
    assert np.asarray(img.dataobj).dtype == np.uint8
    side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert side["rater"] == "rater A" and side["nonzero"] == int(np.count_nonzero(levels))
    (rec,) = list_recoveries(image)
    assert rec.rater == "rater A" and rec.scale == scale and rec.source_image == str(image)
    assert rec.session == "s0000001" and rec.color == (0.1, 0.6, 1.0)
    assert abs(rec.saved_at - time.time()) < 60
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), levels)
    np.testing.assert_array_equal(load_snapshot(rec.path, geometry=geometry), levels)


def test_snapshot_without_geometry_is_display_order(fallback_root):
    levels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 4
    folder = fallback_folder(None, name="sample brain")
    write_snapshot(folder, "r1", levels, session="disp0001")
    (rec,) = list_recoveries(None, name="sample brain")
    assert rec.order == "display" and rec.is_fallback
    np.testing.assert_array_equal(load_snapshot(rec), levels)


def test_autosave_never_overwrites_every_save_is_a_new_version(folder, image, geometry):
    versions = [_levels(geometry, seed) for seed in range(3)]
    paths = [
        write_snapshot(folder, "r1", lv, session="sess0001", geometry=geometry) for lv in versions
    ]
    assert len(set(paths)) == 3 and all(p.exists() for p in paths)
    every = list_snapshots(image, rater="r1")
    assert [r.path for r in every] == paths[::-1]  # newest first
    assert [r.is_latest for r in every] == [True, False, False]
    for rec, lv in zip(every, versions[::-1]):
        np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), lv)
    (pending,) = list_recoveries(image)  # only the session's newest is offered
    assert pending.path == paths[-1]


def test_pending_work_of_an_earlier_session_survives_any_amount_of_later_autosaving(
    folder, image, geometry
):
    """The fault of issue 11 #1: a new layer of the same rater replaced unsaved work."""
    old = _levels(geometry, 10)
    old_path = write_snapshot(
        folder, "A", old, session="old00001", geometry=geometry, now=time.time() - 3600
    )
    for seed in range(3 * KEEP):  # the new layer of rater A autosaves many times
        write_snapshot(
            folder, "A", _levels(geometry, 100 + seed), session="new00001", geometry=geometry
        )
    assert old_path.exists()
    recs = list_recoveries(image, exclude_sessions={"new00001"})
    (rec,) = recs
    assert rec.path == old_path and rec.session == "old00001"
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), old)
    # the running session keeps at least KEEP versions (pruning happened, within bounds)
    mine = [r for r in list_snapshots(image, rater="A") if r.session == "new00001"]
    assert len(mine) == KEEP


def test_decisions_hide_work_but_keep_it_on_disk(folder, image, geometry):
    lv = _levels(geometry, 3)
    p1 = write_snapshot(
        folder, "A", lv, session="aaaa0001", geometry=geometry, now=time.time() - 30
    )
    p2 = write_snapshot(
        folder, "B", lv, session="bbbb0001", geometry=geometry, now=time.time() - 20
    )
    p3 = write_snapshot(
        folder, "C", lv, session="cccc0001", geometry=geometry, now=time.time() - 10
    )
    recs = {r.rater: r for r in list_recoveries(image)}
    assert set(recs) == {"A", "B", "C"}
    discard_recovery(recs["A"])
    mark_recovery(recs["B"], "restored")
    mark_recovery(recs["C"], "kept")
    assert list_recoveries(image) == []
    assert all(p.exists() for p in (p1, p2, p3))  # nothing deleted: a wrong choice can be undone
    decided = {r.rater: r.decision for r in list_snapshots(image)}
    assert decided == {"A": "discarded", "B": "restored", "C": "kept"}
    with pytest.raises(InputError, match="unknown recovery decision"):
        mark_recovery(recs["A"], "deleted")


def test_pruning_keeps_five_versions_and_recent_decided_sessions(folder, image, geometry):
    t0 = time.time() - 10000
    # six earlier sessions, each decided (discarded), one snapshot each
    discarded = []
    for i in range(KEEP + 1):
        p = write_snapshot(
            folder, "A", _levels(geometry, i), session=f"done{i:04d}", geometry=geometry, now=t0 + i
        )
        discard_recovery(list_snapshots(image, rater="A")[0])
        discarded.append(p)
    # one pending session
    pending = write_snapshot(
        folder, "A", _levels(geometry, 50), session="pend0001", geometry=geometry, now=t0 + 100
    )
    # a running session saves many versions
    for j in range(2 * KEEP):
        write_snapshot(
            folder,
            "A",
            _levels(geometry, 60 + j),
            session="live0001",
            geometry=geometry,
            now=t0 + 200 + j,
        )
    left = list_snapshots(image, rater="A")
    assert pending.exists()
    assert len([r for r in left if r.session == "live0001"]) == KEEP
    kept_done = [p for p in discarded if p.exists()]
    assert kept_done == discarded[1:]  # the KEEP most recent decided sessions, oldest pruned
    assert not discarded[0].with_name(discarded[0].name.replace(".nii.gz", ".json")).exists()
    assert (
        not discarded[0].with_name(discarded[0].name.replace(".nii.gz", ".decision.json")).exists()
    )
    # pruning again changes nothing
    assert prune_snapshots(folder / rater_key("A")) == []


def test_export_hides_identical_snapshot_but_not_later_work(folder, image, geometry):
    first = _levels(geometry, 1)
    write_snapshot(folder, "r1", first, session="sess0001", geometry=geometry, now=time.time() - 10)
    record_export(folder, "r1", first, image.parent / "r1.nii.gz")
    assert list_recoveries(image) == []
    second = first.copy()
    second[0, 0, 1] = 3 - second[0, 0, 1]
    write_snapshot(folder, "r1", second, session="sess0001", geometry=geometry)
    (rec,) = list_recoveries(image)
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), second)


def test_empty_snapshot_is_not_offered(folder, image, geometry):
    painted = _levels(geometry, 1)
    write_snapshot(
        folder, "r1", painted, session="sess0001", geometry=geometry, now=time.time() - 10
    )
    write_snapshot(
        folder, "r1", np.zeros_like(painted), session="sess0001", geometry=geometry
    )  # all erased
    assert list_recoveries(image) == []
    assert len(list_snapshots(image)) == 2  # the painted version is still on disk


def test_newest_first_across_primary_and_fallback(folder, image, geometry):
    fb = fallback_folder(image)
    old, new = _levels(geometry, 2), _levels(geometry, 3)
    write_snapshot(folder, "r1", old, session="prim0001", geometry=geometry, now=time.time() - 100)
    write_snapshot(fb, "r1", new, session="fall0001", geometry=geometry)
    write_snapshot(folder, "r2", old, session="prim0002", geometry=geometry, now=time.time() - 50)
    recs = list_recoveries(image)
    assert [(r.rater, r.is_fallback) for r in recs] == [("r1", True), ("r2", False), ("r1", False)]
    np.testing.assert_array_equal(load_snapshot(recs[0], geometry=geometry), new)


def test_first_format_snapshots_are_still_offered_and_never_touched(folder, image, geometry):
    """Work autosaved by the previous release (``<image>/<rater>.nii.gz`` + JSON) survives the upgrade."""
    levels = _levels(geometry, 4)
    old = folder / "alice.nii.gz"
    save_volume(old, geometry.from_display(levels), affine=geometry.affine)
    t = old.stat().st_mtime
    (folder / "alice.json").write_text(
        json.dumps(
            {
                "format": "softseg-autosave/1",
                "rater": "alice",
                "saved_at": "x",
                "saved_at_unix": t,
                "source_image": None,
                "shape": list(levels.shape),
                "dtype": "|u1",
                "order": "file",
                "sha1": "0" * 40,
                "confidence_scale": ConfidenceScale.default().as_dict(),
            }
        )
    )
    (rec,) = list_recoveries(image)
    assert (
        rec.rater == "alice" and rec.session == "legacy" and rec.scale == ConfidenceScale.default()
    )
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), levels)
    for seed in range(2 * KEEP):
        write_snapshot(
            folder, "alice", _levels(geometry, seed), session="new00001", geometry=geometry
        )
    assert old.exists() and list_recoveries(image, exclude_sessions={"new00001"}) == [rec]
    mark_recovery(rec, "restored")
    assert list_recoveries(image, exclude_sessions={"new00001"}) == []


def test_bad_ids_shapes_and_sessions(folder):
    with pytest.raises(InputError, match="empty"):
        autosave.rater_file_stem("  / ")
    assert autosave.rater_file_stem("Dr. Smith") == "Dr_Smith"
    with pytest.raises(InputError, match="3D"):
        write_snapshot(folder, "r", np.zeros((3, 3), np.uint8), session="abcd0001")
    with pytest.raises(InputError, match="integer"):
        write_snapshot(folder, "r", np.zeros((3, 3, 3), np.float32), session="abcd0001")
    with pytest.raises(InputError, match="session"):
        write_snapshot(folder, "r", np.zeros((3, 3, 3), np.uint8), session="../x")


def test_snapshot_of_another_image_is_refused(folder, image, geometry):
    write_snapshot(folder, "r1", _levels(geometry), session="sess0001", geometry=geometry)
    other = DisplayGeometry.from_affine(AFFINE, (8, 6, 5))
    (rec,) = list_recoveries(image)
    with pytest.raises(InputError, match="another image"):
        load_snapshot(rec, geometry=other)


# ---------------------------------------------------------------------------- folders
def test_unwritable_primary_falls_back_and_says_why(image, fallback_root):
    # root ignores permission bits, so block the folder with a regular file instead
    (image.parent / ".softseg-recovery").write_text("in the way")
    target = choose_recovery_folder(image)
    assert target.is_fallback
    assert target.folder.parent == fallback_root
    assert target.folder.name.startswith("image-")
    assert "cannot write" in target.problem and ".softseg-recovery" in target.problem
    assert target.folder.is_dir()


def test_both_folders_unwritable_is_an_input_error(image, tmp_path, monkeypatch):
    (image.parent / ".softseg-recovery").write_text("in the way")
    blocker = tmp_path / "blocked"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("SOFTSEG_RECOVERY_DIR", str(blocker / "root"))
    with pytest.raises(InputError, match="SOFTSEG_RECOVERY_DIR"):
        choose_recovery_folder(image)


# ----------------------------------------------------------------------------------- writer
def test_writer_thread_writes_latest_skips_duplicates_and_empty_first(
    image, geometry, fallback_root
):
    saved = []
    writer = AutosaveWriter(choose_recovery_folder(image), on_saved=lambda p, j: saved.append(j))
    try:
        writer.submit(
            SnapshotJob(
                "r1",
                np.zeros(geometry.display_shape, np.uint8),
                geometry=geometry,
                session="sess0001",
            )
        )
        assert writer.flush(10)
        assert saved == []  # a never-painted layer leaves no snapshot
        a = _levels(geometry, 4)
        writer.submit(SnapshotJob("r1", a, geometry=geometry, session="sess0001"))
        assert writer.flush(10)
        writer.submit(
            SnapshotJob("r1", a.copy(), geometry=geometry, session="sess0001")
        )  # same content
        assert writer.flush(10)
        assert len(saved) == 1
        b = a.copy()
        b[1, 1, 1] = 3 - b[1, 1, 1]
        writer.submit(SnapshotJob("r1", b, geometry=geometry, session="sess0001"))
        assert writer.flush(10)
        # erasing everything after painting is a change worth saving
        writer.submit(SnapshotJob("r1", np.zeros_like(b), geometry=geometry, session="sess0001"))
        assert writer.flush(10)
    finally:
        writer.close()
    assert len(saved) == 3 and not writer.thread.is_alive()
    assert [r.nonzero for r in list_snapshots(image)][0] == 0


def test_two_sessions_of_one_rater_do_not_replace_each_others_queued_jobs(
    image, geometry, fallback_root
):
    writer = AutosaveWriter(choose_recovery_folder(image))
    a, b = _levels(geometry, 5), _levels(geometry, 6)
    with writer._cond:  # hold the thread so both jobs wait in the queue together
        writer.submit(SnapshotJob("r1", a, geometry=geometry, session="sess000a"))
        writer.submit(SnapshotJob("r1", b, geometry=geometry, session="sess000b"))
    assert writer.flush(10)
    writer.close()
    got = {r.session: load_snapshot(r, geometry=geometry) for r in list_recoveries(image)}
    assert set(got) == {"sess000a", "sess000b"}
    np.testing.assert_array_equal(got["sess000a"], a)
    np.testing.assert_array_equal(got["sess000b"], b)


def test_writer_switches_to_fallback_once_when_the_folder_breaks(image, geometry, fallback_root):
    target = choose_recovery_folder(image)
    messages = []
    writer = AutosaveWriter(target, fallback=fallback_folder(image), on_fallback=messages.append)
    try:
        # the folder disappears and a file takes its place (e.g. the share was remounted)
        for p in sorted(target.folder.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        target.folder.rmdir()
        target.folder.write_text("blocked")
        writer.submit(
            SnapshotJob("r1", _levels(geometry, 5), geometry=geometry, session="sess0001")
        )
        assert writer.flush(10)
        writer.submit(
            SnapshotJob("r1", _levels(geometry, 6), geometry=geometry, session="sess0001")
        )
        assert writer.flush(10)
    finally:
        writer.close()
    assert len(messages) == 1
    assert str(fallback_folder(image)) in messages[0]
    assert writer.folder == fallback_folder(image)
    (rec,) = list_recoveries(image)
    assert rec.is_fallback
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), _levels(geometry, 6))


def test_exception_during_write_keeps_previous_snapshot(folder, image, geometry, monkeypatch):
    good = _levels(geometry, 7)
    write_snapshot(folder, "r1", good, session="sess0001", geometry=geometry, now=time.time() - 5)
    real_save = nib.save
    seen = []

    def half_save(img, filename):
        real_save(img, filename)  # the temporary file exists and is complete ...
        seen.append(Path(filename))
        raise OSError(28, "No space left on device")  # ... then the write fails

    monkeypatch.setattr(nib, "save", half_save)
    with pytest.raises(OSError):
        write_snapshot(folder, "r1", _levels(geometry, 8), session="sess0001", geometry=geometry)
    monkeypatch.undo()
    assert seen and not seen[0].exists()  # temporary file removed
    (rec,) = list_recoveries(image)
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), good)


# --------------------------------------------------------------------------- killed writers
_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import nibabel as nib
    import softseg.autosave.store as autosave
    from softseg.confidence import ConfidenceScale
    from softseg.geometry import DisplayGeometry

    folder, affine_txt, where = sys.argv[1], sys.argv[2], sys.argv[3]
    affine = np.array([float(v) for v in affine_txt.split(",")]).reshape(4, 4)
    geom = DisplayGeometry.from_affine(affine, (7, 6, 5))
    first = np.zeros(geom.display_shape, np.uint8); first[1:3, 1:3, 1:3] = 2
    autosave.write_snapshot(folder, "dr.smith", first, session="sess0001", geometry=geom, now=time.time() - 5)

    def hang(*args, **kwargs):
        print("KILL ME", flush=True)
        time.sleep(60)

    if where == "mid-image":
        def slow_save(img, filename):
            with open(filename, "wb") as fh:      # a half-written gzip stream
                fh.write(b"\\x1f\\x8b\\x08\\x00partial")
                fh.flush()
            hang()
        nib.save = slow_save
    else:  # between the image (renamed into place) and its JSON
        autosave.write_json = hang
    second = np.full(geom.display_shape, 3, np.uint8)
    autosave.write_snapshot(folder, "dr.smith", second, session="sess0001", geometry=geom,
                            scale=ConfidenceScale.from_paper())
    """
)


def _run_and_kill(folder, where):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILL_SCRIPT,
            str(folder),
            ",".join(map(str, AFFINE.ravel())),
            where,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "KILL ME"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_writer_killed_mid_image_leaves_previous_snapshot_restorable(folder, image, geometry):
    _run_and_kill(folder, "mid-image")
    rater_folder = folder / rater_key("dr.smith")
    assert [p for p in rater_folder.iterdir() if p.name.startswith(".")], (
        "the killed writer left its temporary file"
    )
    (rec,) = list_recoveries(image)  # the temporary file is not offered
    expected = np.zeros(geometry.display_shape, np.uint8)
    expected[1:3, 1:3, 1:3] = 2
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), expected)


def test_writer_killed_between_image_and_json_still_lists_the_new_snapshot(folder, image, geometry):
    """Issue 13 #13: the image is on disk, its JSON is not; the index must not forget it."""
    _run_and_kill(folder, "between")
    rater_folder = folder / rater_key("dr.smith")
    images = sorted(p for p in rater_folder.glob("*.nii.gz") if not p.name.startswith("."))
    jsons = sorted(rater_folder.glob("2*.json"))
    assert len(images) == 2 and len(jsons) == 1  # the state the kill left
    (rec,) = list_recoveries(image)
    assert rec.path == images[-1] and rec.rater == "dr.smith" and rec.session == "sess0001"
    assert rec.scale == ConfidenceScale.from_paper()  # from the metadata inside the image
    np.testing.assert_array_equal(
        load_snapshot(rec, geometry=geometry), np.full(geometry.display_shape, 3, np.uint8)
    )


def test_one_off_snapshots_without_a_session_are_each_their_own_work(folder, image, geometry):
    """The reliability reproductions call write_snapshot without a session: nothing is lost."""
    a, b = _levels(geometry, 11), _levels(geometry, 12)
    write_snapshot(folder, "alice", a, geometry=geometry, now=time.time() - 5)
    write_snapshot(folder, "alice", b, geometry=geometry)
    recs = list_recoveries(image)
    assert len(recs) == 2 and len({r.session for r in recs}) == 2
    np.testing.assert_array_equal(load_snapshot(recs[0], geometry=geometry), b)
    np.testing.assert_array_equal(load_snapshot(recs[1], geometry=geometry), a)


def test_classes_and_preannotation_travel_with_each_snapshot(image, geometry, fallback_root):
    """A multi-class, pre-annotated layer: the record keeps the class names, the model and the
    voxels the rater changed, counted in the writer thread against the model's map (plus the
    count of an earlier session)."""
    classes = ("grey matter", "white matter")
    model_map = _levels(geometry, 7)
    record = {"model": "m.safetensors", "source": "file", "rule": "nearest level",
              "model_voxels": int(np.count_nonzero(model_map)), "rater_changed_voxels": 0}
    painted = model_map.copy()
    painted[0, :2, :3] = 6  # 6 voxels set to class 2 / level 3 (code 6): how many differ?
    changed = int(np.count_nonzero(painted != model_map))
    records = []
    writer = AutosaveWriter(choose_recovery_folder(image), on_saved=lambda p, j: records.append(j.record()))
    try:
        writer.submit(SnapshotJob("r1", painted, geometry=geometry, session="sess0pre", classes=classes,
                                  preannotated_by="m.safetensors", preannotation=record,
                                  reference=model_map, changed_before=4))
        assert writer.flush(10)
    finally:
        writer.close()
    assert records[0]["rater_changed_voxels"] == changed + 4 and record["rater_changed_voxels"] == 0
    (rec,) = list_recoveries(image)
    assert rec.classes == classes and rec.preannotated_by == "m.safetensors"
    assert rec.preannotation == {**record, "rater_changed_voxels": changed + 4}
    side = json.loads(rec.path.with_name(rec.path.name.replace(".nii.gz", ".json")).read_text())
    assert side["classes"] == list(classes) and side["preannotation"]["rater_changed_voxels"] == changed + 4
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), painted)
    # a layer painted by a person: no classes, no pre-annotation
    write_snapshot(choose_recovery_folder(image).folder, "r2", _levels(geometry, 8), geometry=geometry)
    plain = [r for r in list_recoveries(image) if r.rater == "r2"][0]
    assert plain.classes is None and plain.preannotated_by is None and plain.preannotation is None
