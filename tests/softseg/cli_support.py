"""What the command-line tests share: a small anisotropic grid, four blob raters written as
NIfTI files, and the check that a refusal is one line without a traceback.

Used by test_cli_fuse.py, test_cli_evaluate.py and test_cli_interpolate.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from softseg.io import save_volume

#: 0.9 x 1.1 x 2.0 mm voxels, off-origin: distances and volumes in mm differ from voxel counts.
AFFINE = np.array(
    [[0.9, 0, 0, -10.0], [0, 1.1, 0, 5.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]], dtype=np.float64
)
SHAPE = (20, 22, 12)


def blob_raters() -> np.ndarray:
    """(4, *SHAPE) uint8: an ellipsoid, drawn as is, dilated, eroded and shifted by one voxel."""
    z = np.indices(SHAPE, sparse=True)
    r2 = sum(((zi - s / 2) / (s / 4)) ** 2 for zi, s in zip(z, SHAPE))
    blob = r2 < 1.0
    return np.stack(
        [blob, ndimage.binary_dilation(blob), ndimage.binary_erosion(blob), np.roll(blob, 1, 0)]
    ).astype(np.uint8)


def write_raters(folder: Path, arrays) -> list[str]:
    """``rater-<i>.nii.gz`` per array, on the test grid; their paths."""
    paths = [Path(folder) / f"rater-{i}.nii.gz" for i in range(len(arrays))]
    for path, array in zip(paths, arrays):
        save_volume(path, array, affine=AFFINE)
    return [str(p) for p in paths]


def one_line_error(capsys) -> str:
    """The command's stderr: exactly one line, no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err
