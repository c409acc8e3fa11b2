"""The MNI ICBM152 2009a nonlinear symmetric template, as shipped in the nilearn wheel.

nilearn (the ``anatomy`` extra) ships three 1 mm images of the ICBM152 2009a nonlinear
symmetric template (Fonov et al. 2009/2011) in ``nilearn/datasets/data``; its public loaders
return them rescaled to [0, 1] (``data / data.max()``; the files are uint8, so values are
multiples of 1/255):

``load_mni152_template()``      skull-stripped T1 (197 x 233 x 189, RAS, 1 mm)
``load_mni152_gm_template()``   grey-matter probability
``load_mni152_wm_template()``   white-matter probability

Nothing is downloaded and nothing is vendored into this repository.

**The head mask is the support of the skull-stripped T1** (``T1 > 0``, 1886.5 mL). Inside it the
third class is ``csf = 1 - GM - WM`` (ventricles, sulcal CSF and the few non-brain voxels the
skull stripping kept); outside it everything is background. Why this mask and not nilearn's
``load_mni152_brain_mask`` (``T1 > 0.2``, 1883.0 mL): CSF is dark on T1, so the 0.2 threshold cuts
3.5 mL of CSF-dominated voxels at the brain surface out of the head; ``T1 > 0`` is exactly the
region where the image has signal. The template's GM (and a little WM) probability extends
beyond it (11.6 mL of the 1008.2 mL of GM, at most 0.47 per voxel, and 0.2 mL of WM): those
voxels have no T1 signal, so a rater could not see that tissue; it is set to background.
GM + WM <= 1 holds at every voxel of the shipped maps, so ``csf >= 0``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from softseg.errors import InputError

__all__ = [
    "EXTRA",
    "Template",
    "check_nilearn",
    "load_template",
    "nilearn_version",
    "require_nilearn",
]

#: The pip extra that installs nilearn (named in the error when it is missing).
EXTRA = "anatomy"


def _missing() -> InputError:
    return InputError(
        "real anatomy needs nilearn (it ships the MNI ICBM152 template); install it with: "
        f"pip install 'napari-softseg[{EXTRA}]'"
    )


def check_nilearn() -> None:
    """Raise the one-line :class:`InputError` naming the extra when nilearn is not installed
    (without importing it: importing nilearn takes seconds)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("nilearn") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        found = False
    if not found:
        raise _missing()


def require_nilearn():
    """Import ``nilearn.datasets``, or raise a one-line :class:`InputError` naming the extra."""
    try:
        from nilearn import datasets
    except ImportError:
        raise _missing() from None
    return datasets


def nilearn_version() -> str | None:
    """nilearn's installed version (from its metadata, without importing it), or None."""
    from importlib import metadata

    try:
        return metadata.version("nilearn")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True, eq=False)
class Template:
    """The template images as arrays in file order (X, Y, Z) = (R, A, S), 1 mm.

    Attributes
    ----------
    t1 : ndarray, float32, values in [0, 1]
        Skull-stripped T1 as nilearn's ``load_mni152_template()`` returns it.
    gm, wm : ndarray, float32, values in [0, 1]
        Grey- and white-matter probabilities, set to 0 outside :attr:`mask`.
    mask : ndarray, bool
        Head mask ``t1 > 0`` (see the module docstring for why).
    affine : ndarray (4, 4), float64
        Voxel-to-world (MNI mm), diagonal 1 mm.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)  # type: ignore[return-value]

    @functools.cached_property
    def support(self) -> np.ndarray:
        """The head mask dilated by one voxel (3 x 3 x 3): where interpolation can be non-zero."""
        from scipy import ndimage

        out = ndimage.binary_dilation(self.mask, structure=np.ones((3, 3, 3), dtype=bool))
        out.setflags(write=False)
        return out

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each class in mL (sum of fractions x voxel volume)."""
        gm = float(self.gm.sum(dtype=np.float64))
        wm = float(self.wm.sum(dtype=np.float64))
        head = float(np.count_nonzero(self.mask))
        return {
            "grey matter": gm * self.voxel_ml,
            "white matter": wm * self.voxel_ml,
            "csf": (head - gm - wm) * self.voxel_ml,
            "head": head * self.voxel_ml,
        }


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load the template from the nilearn wheel (cached for the process; ~1 s, 140 MB).

    Raises
    ------
    InputError
        nilearn is not installed (one line naming the ``anatomy`` extra), or the loaded images
        do not have the expected shared 1 mm grid.
    """
    datasets = require_nilearn()
    t1_img = datasets.load_mni152_template(resolution=1)
    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    arrays = [np.asarray(img.dataobj, dtype=np.float32) for img in (t1_img, gm_img, wm_img)]
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    for name, img, arr in zip(("GM", "WM"), (gm_img, wm_img), arrays[1:]):
        if arr.shape != arrays[0].shape or not np.allclose(img.affine, affine):
            raise InputError(
                f"the nilearn MNI152 {name} template does not share the T1's grid "
                f"({arr.shape} vs {arrays[0].shape}); reinstall nilearn"
            )
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0):
        raise InputError(
            f"expected nilearn's 1 mm MNI152 template; got voxel sizes {np.diag(affine)[:3]}"
        )
    t1, gm, wm = arrays
    mask = t1 > 0
    gm = np.where(mask, gm, 0.0).astype(np.float32)
    wm = np.where(mask, wm, 0.0).astype(np.float32)
    for a in (t1, gm, wm, mask):
        a.setflags(write=False)
    return Template(t1=t1, gm=gm, wm=wm, mask=mask, affine=affine)
