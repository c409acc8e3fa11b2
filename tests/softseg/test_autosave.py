"""Autosave engine: folders, atomic snapshots, fallback, crash safety, recovery listing."""

import os
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
    AutosaveWriter,
    SnapshotJob,
    choose_recovery_folder,
    fallback_folder,
    list_recoveries,
    load_snapshot,
    primary_folder,
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


def _levels(geometry, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=geometry.display_shape).astype(np.uint8)


def test_primary_folder_is_next_to_the_image(image):
    assert primary_folder(image) == image.parent / ".softseg-recovery" / "image"
    target = choose_recovery_folder(image)
    assert target.folder == primary_folder(image)
    assert not target.is_fallback and target.problem is None
    assert target.folder.is_dir()


def test_snapshot_round_trip_in_file_order_with_the_image_affine(image, geometry, fallback_root):
    levels = _levels(geometry)
    scale = ConfidenceScale.from_paper()
    folder = choose_recovery_folder(image).folder
    path = write_snapshot(folder, "rater A", levels, geometry=geometry, scale=scale, source_image=image)
    assert path.name == "rater_A.nii.gz"
    img = nib.load(path)
    np.testing.assert_array_equal(img.affine, nib.load(image).affine)  # the image's own geometry
    assert img.shape == FILE_SHAPE
    assert np.asarray(img.dataobj).dtype == np.uint8
    (rec,) = list_recoveries(image)
    assert rec.rater == "rater A" and rec.scale == scale and rec.source_image == str(image)
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), levels)


def test_snapshot_without_geometry_is_display_order(tmp_path, fallback_root):
    levels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 4
    folder = fallback_folder(None, name="sample brain")
    write_snapshot(folder, "r1", levels)
    (rec,) = list_recoveries(None, name="sample brain")
    assert rec.order == "display" and rec.is_fallback
    np.testing.assert_array_equal(load_snapshot(rec), levels)


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


def test_export_hides_identical_snapshot_but_not_later_work(image, geometry, fallback_root):
    folder = choose_recovery_folder(image).folder
    first = _levels(geometry, seed=1)
    write_snapshot(folder, "r1", first, geometry=geometry, now=time.time() - 10)
    record_export(folder, "r1", first, image.parent / "r1.nii.gz")
    assert list_recoveries(image) == []
    second = first.copy()
    second[0, 0, 0] = 3 - second[0, 0, 0]
    write_snapshot(folder, "r1", second, geometry=geometry)
    (rec,) = list_recoveries(image)
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), second)


def test_newest_first_and_newer_of_primary_and_fallback_wins(image, geometry, fallback_root):
    folder = choose_recovery_folder(image).folder
    fb = fallback_folder(image)
    old, new = _levels(geometry, 2), _levels(geometry, 3)
    write_snapshot(folder, "r1", old, geometry=geometry, now=time.time() - 100)
    os.utime(folder / "r1.nii.gz", (time.time() - 100,) * 2)
    write_snapshot(fb, "r1", new, geometry=geometry)
    write_snapshot(folder, "r2", old, geometry=geometry, now=time.time() - 50)
    os.utime(folder / "r2.nii.gz", (time.time() - 50,) * 2)
    recs = list_recoveries(image)
    assert [r.rater for r in recs] == ["r1", "r2"]
    assert recs[0].is_fallback
    np.testing.assert_array_equal(load_snapshot(recs[0], geometry=geometry), new)


def test_writer_thread_writes_latest_skips_duplicates_and_flushes(image, geometry, fallback_root):
    saved = []
    writer = AutosaveWriter(choose_recovery_folder(image), on_saved=lambda p, j: saved.append(j))
    try:
        a = _levels(geometry, 4)
        writer.submit(SnapshotJob("r1", a, geometry=geometry))
        assert writer.flush(10)
        writer.submit(SnapshotJob("r1", a.copy(), geometry=geometry))  # same content
        assert writer.flush(10)
        assert len(saved) == 1
        b = a.copy()
        b[1, 1, 1] = 3 - b[1, 1, 1]
        writer.submit(SnapshotJob("r1", b, geometry=geometry))
        assert writer.flush(10)
    finally:
        writer.close()
    assert len(saved) == 2
    (rec,) = list_recoveries(image)
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), b)


def test_writer_switches_to_fallback_once_when_the_folder_breaks(image, geometry, fallback_root):
    target = choose_recovery_folder(image)
    messages = []
    writer = AutosaveWriter(target, fallback=fallback_folder(image), on_fallback=messages.append)
    try:
        # the folder disappears and a file takes its place (e.g. the share was remounted)
        for p in target.folder.iterdir():
            p.unlink()
        target.folder.rmdir()
        target.folder.write_text("blocked")
        writer.submit(SnapshotJob("r1", _levels(geometry, 5), geometry=geometry))
        assert writer.flush(10)
        writer.submit(SnapshotJob("r1", _levels(geometry, 6), geometry=geometry))
        assert writer.flush(10)
    finally:
        writer.close()
    assert len(messages) == 1
    assert str(fallback_folder(image)) in messages[0]
    assert writer.folder == fallback_folder(image)
    (rec,) = list_recoveries(image)
    assert rec.is_fallback
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), _levels(geometry, 6))


def test_exception_during_write_keeps_previous_snapshot(image, geometry, fallback_root, monkeypatch):
    folder = choose_recovery_folder(image).folder
    good = _levels(geometry, 7)
    write_snapshot(folder, "r1", good, geometry=geometry)
    real_save = nib.save
    seen = []

    def half_save(img, filename):
        real_save(img, filename)  # the temporary file exists and is complete ...
        seen.append(Path(filename))
        raise OSError(28, "No space left on device")  # ... then the write fails

    monkeypatch.setattr(nib, "save", half_save)
    with pytest.raises(OSError):
        write_snapshot(folder, "r1", _levels(geometry, 8), geometry=geometry)
    monkeypatch.undo()
    assert seen and not seen[0].exists()  # temporary file removed
    (rec,) = list_recoveries(image)
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), good)


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import nibabel as nib
    from softseg.autosave import write_snapshot
    from softseg.geometry import DisplayGeometry

    folder, affine_txt = sys.argv[1], sys.argv[2]
    affine = np.array([float(v) for v in affine_txt.split(",")]).reshape(4, 4)
    geom = DisplayGeometry.from_affine(affine, (7, 6, 5))
    first = np.zeros(geom.display_shape, np.uint8); first[1:3, 1:3, 1:3] = 2
    write_snapshot(folder, "r1", first, geometry=geom)
    real_save = nib.save

    def slow_save(img, filename):
        with open(filename, "wb") as fh:      # a half-written gzip stream
            fh.write(b"\\x1f\\x8b\\x08\\x00partial")
            fh.flush()
            print("WRITING", flush=True)
            time.sleep(60)

    nib.save = slow_save
    second = np.full(geom.display_shape, 3, np.uint8)
    write_snapshot(folder, "r1", second, geometry=geom)
    """
)


def test_writer_killed_mid_save_leaves_previous_snapshot_restorable(image, geometry, fallback_root):
    folder = choose_recovery_folder(image).folder
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(folder), ",".join(map(str, AFFINE.ravel()))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITING"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".r1.nii.gz.")]
    assert leftovers, "the killed writer should have left its temporary file"
    (rec,) = list_recoveries(image)  # the temporary file is not offered
    expected = np.zeros(geometry.display_shape, np.uint8)
    expected[1:3, 1:3, 1:3] = 2
    np.testing.assert_array_equal(load_snapshot(rec, geometry=geometry), expected)


def test_bad_rater_ids_and_shapes():
    with pytest.raises(InputError, match="empty"):
        autosave.rater_file_stem("  / ")
    assert autosave.rater_file_stem("Dr. Smith") == "Dr_Smith"
    with pytest.raises(InputError, match="3D"):
        write_snapshot("/tmp", "r", np.zeros((3, 3), np.uint8))


def test_snapshot_of_another_image_is_refused(image, geometry, fallback_root):
    folder = choose_recovery_folder(image).folder
    write_snapshot(folder, "r1", _levels(geometry), geometry=geometry)
    other = DisplayGeometry.from_affine(AFFINE, (8, 6, 5))
    (rec,) = list_recoveries(image)
    with pytest.raises(InputError, match="another image"):
        load_snapshot(rec, geometry=other)
