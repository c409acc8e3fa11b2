"""The napari reader on the field's files (issue 13): the same refusals and numbers as the CLI.

The bad and odd files come from tests/softseg/nifti_cases.py (built with nibabel/gzip, not
softseg). Bad files open nothing and show one notification naming the file; 2D files open as one
slice with the affine's voxel size; pixdim-vs-sform files use the sform's voxel size, as every
command does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "softseg"))
import nifti_cases as cases  # noqa: E402

from softseg.errors import GeometryWarning, InputError  # noqa: E402


@pytest.mark.parametrize("kind", sorted(cases.BAD))
def test_reader_refuses_bad_files_with_one_notification(tmp_path, kind, monkeypatch):
    from napari_softseg import _reader

    if cases.skip_reason(kind):
        pytest.skip(cases.skip_reason(kind))
    path, regex = cases.make_bad(kind, tmp_path)
    with pytest.raises(InputError) as info:
        _reader.read_volume_layers(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and re.search(regex, message), message
    shown: list[str] = []
    monkeypatch.setattr(_reader, "notify_error", shown.append)
    assert _reader.read_nifti(str(path)) == [(None,)]  # nothing opens
    assert shown == [message]


def test_reader_opens_a_2d_file_as_one_slice(tmp_path):
    from napari_softseg._reader import read_volume_layers

    arr = np.random.default_rng(0).random((16, 12)).astype(np.float32)
    path = cases.save(tmp_path / "slice.nii.gz", arr, np.diag([0.5, 0.75, 3.0, 1.0]))
    ((data, kwargs, _kind),) = read_volume_layers(path)
    # RAS file axes (x, y, z = 1) -> display (S, P, L): one slice, rows flipped to posterior, cols to left
    assert data.shape == (1, 12, 16)
    np.testing.assert_array_equal(data[0], arr.T[::-1, ::-1])
    assert tuple(kwargs["scale"]) == (3.0, 0.75, 0.5)


def test_reader_uses_the_sforms_voxel_size_and_warns(tmp_path):
    from napari_softseg._reader import read_volume_layers

    path = cases.make_odd("pixdim_disagrees_with_sform", tmp_path)
    with pytest.warns(GeometryWarning, match=re.escape(str(path))):
        ((_data, kwargs, _kind),) = read_volume_layers(path)
    assert tuple(kwargs["scale"]) == (2.5, 1.0, 1.0)  # sform (1, 1, 2.5) in display order (S, P, L)
