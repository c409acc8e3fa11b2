"""Display geometry: NIfTI file axis order <-> the axis order shown in napari.

napari shows the first array axis on the slice slider and the last two as rows and columns. A
NIfTI file can store its voxels in any order (RAS, LPS, sagittal slabs, oblique ...), so every
volume is reoriented for display to one fixed, nearest-axis orientation:

=========  ==========================================  =========================
napari     direction of increasing index                 on screen
=========  ==========================================  =========================
axis 0     superior (axial slice axis)                   slice slider
axis 1     posterior (anterior at the top)               rows
axis 2     patient's left (radiological convention)      columns (left on the right)
=========  ==========================================  =========================

The reorientation is a pure transpose + flip (``nibabel.orientations``), so
``from_display(to_display(a))`` is bit-exact. The original affine, the header (as raw bytes, so
it survives any copy of the layer metadata) and the orientation transform travel in
``layer.metadata["softseg_geometry"]``; :func:`save_display_array` writes a napari-ordered array
back in the original orientation with the original affine and header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_mod

from softseg.affines import voxel_size  # the one voxel size (defined below io; public here)
from softseg.errors import InputError
from softseg.io import Volume, save_volume

__all__ = [
    "DISPLAY_AXCODES",
    "GRID_TOLERANCE_MM",
    "METADATA_KEY",
    "DisplayGeometry",
    "check_same_grid",
    "display_geometry",
    "save_display_array",
    "voxel_size",
]

#: Anatomical direction of increasing index along napari axes 0, 1, 2.
DISPLAY_AXCODES = ("S", "P", "L")
#: Layer metadata key under which :meth:`DisplayGeometry.as_metadata` stores the geometry.
METADATA_KEY = "softseg_geometry"
_FORMAT_VERSION = 1
_DISPLAY_ORNT = ornt_mod.axcodes2ornt(DISPLAY_AXCODES)
_HEADER_CLASSES = {"Nifti1Header": nib.Nifti1Header, "Nifti2Header": nib.Nifti2Header}
#: Two files are on one voxel grid when their shapes are equal and every entry of their affines
#: differs by at most this (mm): far below any voxel size, far above float32 rounding of a
#: header's sform (~1e-5 mm at 100 mm from the origin).
GRID_TOLERANCE_MM = 1e-3


def check_same_grid(
    reference: Volume, other: Volume, *, tol: float = GRID_TOLERANCE_MM, hint: str = ""
) -> None:
    """Refuse two volumes that are not on one voxel grid (same shape, affines within *tol* mm).

    Parameters
    ----------
    reference, other : Volume or NiftiInfo
        Loaded volumes or checked headers (:func:`softseg.io.check_nifti`); their ``path``
        names them in the message.
    tol : float
        Largest difference of any affine entry, in mm (default :data:`GRID_TOLERANCE_MM`).
    hint : str
        Appended to the message after ``"; "``: how the caller's user fixes it (e.g. an
        import: "a label must lie on its image's voxel grid").

    Raises
    ------
    InputError
        Different shapes, an affine holding NaN/Inf (named as such, never as "different"), or
        affines that differ by more than *tol*; the message names both files.
    """
    a = reference.path if reference.path is not None else "reference"
    b = other.path if other.path is not None else "volume"
    problem = None
    if tuple(other.shape) != tuple(reference.shape):
        problem = (
            f"{b} has shape {tuple(other.shape)} but {a} has shape {tuple(reference.shape)}; "
            "all files must be on one voxel grid (resample one onto the other's grid first)"
        )
    else:
        for name, vol in ((a, reference), (b, other)):
            if problem is None and not np.isfinite(np.asarray(vol.affine)).all():
                problem = f"{name}: the affine holds NaN/Inf; fix the file's sform/qform"
    if problem is None:
        diff = float(np.max(np.abs(np.asarray(other.affine, float) - np.asarray(reference.affine, float))))
        if diff > tol:
            problem = (
                f"{b} and {a} have different affines (largest difference {diff:.3g} mm, tolerance "
                f"{tol:g}); resample one onto the other's grid first"
            )
    if problem is not None:
        raise InputError(f"{problem}; {hint}" if hint else problem)


@dataclass(frozen=True, eq=False)
class DisplayGeometry:
    """How a volume in NIfTI file order maps to napari's display order, and back.

    Build it with :func:`display_geometry` (from a :class:`~softseg.io.Volume`),
    :meth:`from_affine` or :meth:`from_metadata`; do not fill the fields by hand.

    Attributes
    ----------
    affine : ndarray, shape (4, 4), float64
        The original voxel-to-world (RAS+ mm) transform of the file.
    header : nibabel.Nifti1Header or nibabel.Nifti2Header
        The original header (restored on save).
    file_shape : tuple of 3 int
        Array shape in file axis order.
    transform : ndarray, shape (3, 2)
        nibabel orientation transform from file order to display order (``ornt_transform``):
        row ``i`` says which display axis file axis ``i`` goes to and whether it is flipped.
    """

    affine: np.ndarray
    header: nib.Nifti1Header
    file_shape: tuple[int, int, int]
    transform: np.ndarray

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_affine(
        cls,
        affine: np.ndarray,
        file_shape: tuple[int, int, int],
        *,
        header: nib.Nifti1Header | None = None,
    ) -> DisplayGeometry:
        """Geometry of a file-ordered array of *file_shape* with voxel-to-world *affine*.

        Parameters
        ----------
        affine : array-like, shape (4, 4)
            Voxel-to-world (RAS+ mm). Oblique affines use the nearest anatomical axes.
        file_shape : tuple of 3 int
        header : nibabel header, optional
            Reused on save; a fresh NIfTI-1 header carrying *affine* (sform and qform,
            code "aligned", units mm) when not given.
        """
        affine = np.array(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise InputError(f"expected a finite 4x4 affine; got shape {affine.shape}")
        if np.linalg.matrix_rank(affine[:3, :3]) < 3:
            raise InputError(
                "affine is singular (a voxel axis has zero length); fix the file's sform/qform"
            )
        file_shape = tuple(int(s) for s in file_shape)
        if len(file_shape) != 3:
            raise InputError(f"expected a 3D file shape; got {file_shape}")
        if header is None:
            header = nib.Nifti1Header()
            header.set_data_shape(file_shape)
            header.set_xyzt_units("mm", "sec")
            header.set_sform(affine, code="aligned")
            header.set_qform(affine, code="aligned")
        else:
            header = header.copy()
        start = ornt_mod.io_orientation(affine)
        transform = ornt_mod.ornt_transform(start, _DISPLAY_ORNT)
        return cls(affine=affine, header=header, file_shape=file_shape, transform=transform)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> DisplayGeometry | None:
        """The geometry stored by :meth:`as_metadata`, or None when there is none.

        Accepts a layer's whole ``metadata`` dict (the geometry under ``"softseg_geometry"``)
        or the inner dict itself.
        """
        if not isinstance(metadata, Mapping):
            return None
        inner: Any = metadata
        while isinstance(inner, Mapping) and METADATA_KEY in inner:
            inner = inner[METADATA_KEY]
        if isinstance(inner, DisplayGeometry):
            return inner
        if not isinstance(inner, Mapping) or "affine" not in inner or "header" not in inner:
            return None
        klass = _HEADER_CLASSES.get(str(inner.get("header_class", "Nifti1Header")))
        if klass is None:
            raise InputError(
                f"unknown header class {inner.get('header_class')!r} in layer metadata; "
                f"expected one of {sorted(_HEADER_CLASSES)}"
            )
        block = inner["header"]
        if isinstance(block, str):  # tolerate a hex string (metadata passed through JSON)
            block = bytes.fromhex(block)
        header = klass(binaryblock=bytes(block), check=False)
        return cls(
            affine=np.array(inner["affine"], dtype=np.float64),
            header=header,
            file_shape=tuple(int(s) for s in inner["file_shape"]),
            transform=np.array(inner["transform"], dtype=np.float64),
        )

    def as_metadata(self) -> dict[str, dict[str, Any]]:
        """``{"softseg_geometry": {...}}`` to merge into a napari layer's ``metadata``.

        Plain Python values only (lists of floats, bytes, str), so the entry survives
        ``copy.deepcopy`` and pickling; floats are kept as doubles, hence bit-exact.
        """
        return {
            METADATA_KEY: {
                "version": _FORMAT_VERSION,
                "affine": self.affine.tolist(),
                "header": bytes(self.header.binaryblock),
                "header_class": type(self.header).__name__,
                "file_shape": list(self.file_shape),
                "transform": self.transform.tolist(),
                "file_axcodes": "".join(self.file_axcodes),
                "display_axcodes": "".join(DISPLAY_AXCODES),
            }
        }

    # ------------------------------------------------------------------ properties
    @property
    def file_axcodes(self) -> tuple[str, str, str]:
        """Nearest anatomical direction of each file axis, e.g. ``('L', 'P', 'S')``."""
        return tuple(ornt_mod.aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def display_shape(self) -> tuple[int, int, int]:
        """Array shape in napari order."""
        shape = [0, 0, 0]
        for i, (axis, _flip) in enumerate(self.transform):
            shape[int(axis)] = self.file_shape[i]
        return tuple(shape)  # type: ignore[return-value]

    @property
    def file_spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along each file axis: :func:`voxel_size` of the affine."""
        return voxel_size(self.affine)

    @property
    def scale(self) -> tuple[float, float, float]:
        """napari ``scale``: voxel size in mm along display axes 0, 1, 2.

        Rounded to a multiple of 2**-20 mm (about a nanometre; see :func:`_dyadic`).
        """
        out = [0.0, 0.0, 0.0]
        for i, (axis, _flip) in enumerate(self.transform):
            out[int(axis)] = _dyadic(self.file_spacing[i])
        return tuple(out)  # type: ignore[return-value]

    @property
    def translate(self) -> tuple[float, float, float]:
        """napari ``translate``: position (mm) of display voxel (0, 0, 0) along the display axes.

        The display axes point superior, posterior, left, so this is ``(S, P, L)`` =
        ``(z, -y, -x)`` of the voxel's RAS world position. Volumes of the same subject stored in
        different orientations therefore overlay in the viewer.
        """
        index = np.ones(4)
        for i, (_axis, flip) in enumerate(self.transform):
            index[i] = self.file_shape[i] - 1 if flip < 0 else 0
        world = self.affine @ index
        out = []
        for ras_axis, sign in _DISPLAY_ORNT:
            out.append(_dyadic(float(sign * world[int(ras_axis)])))
        return tuple(out)  # type: ignore[return-value]

    def layer_kwargs(self) -> dict[str, Any]:
        """``scale``, ``translate`` and ``metadata`` for a napari layer constructor."""
        return {"scale": self.scale, "translate": self.translate, "metadata": self.as_metadata()}

    # ------------------------------------------------------------------ array mapping
    def to_display(self, array: np.ndarray) -> np.ndarray:
        """File order -> napari order.

        Parameters
        ----------
        array : ndarray, shape (..., X, Y, Z)
            The last three axes in file order (``file_shape``); leading axes (channels,
            raters) are kept in front.

        Returns
        -------
        ndarray, shape (..., *display_shape)
            Same dtype and values, C-contiguous (a copy unless no reorientation is needed).
        """
        array = np.asarray(array)
        self._check(array, self.file_shape, "file")
        return np.ascontiguousarray(self._apply(array, self.transform))

    def from_display(self, array: np.ndarray) -> np.ndarray:
        """napari order -> file order; the exact inverse of :meth:`to_display`.

        Parameters
        ----------
        array : ndarray, shape (..., *display_shape)

        Returns
        -------
        ndarray, shape (..., *file_shape)
            A 3D result is Fortran-ordered, the layout NIfTI stores (so saving it needs no
            reordering copy); with leading axes it is C-ordered.
        """
        array = np.asarray(array)
        self._check(array, self.display_shape, "display")
        inverse = np.zeros_like(self.transform)
        for file_axis, (display_axis, flip) in enumerate(self.transform):
            inverse[int(display_axis)] = (file_axis, flip)
        out = self._apply(array, inverse)
        return np.asfortranarray(out) if out.ndim == 3 else np.ascontiguousarray(out)

    def volume(self, file_array: np.ndarray, *, path: str | os.PathLike | None = None) -> Volume:
        """A :class:`~softseg.io.Volume` of a file-ordered array with this geometry."""
        file_array = np.asarray(file_array)
        self._check(file_array, self.file_shape, "file")
        if file_array.ndim != 3:
            raise InputError(f"expected a 3D array; got shape {file_array.shape}")
        return Volume(
            array=file_array,
            affine=self.affine.copy(),
            header=self.header.copy(),
            path=None if path is None else Path(path),
        )

    @staticmethod
    def _apply(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3
        if lead == 0:
            return ornt_mod.apply_orientation(array, transform)
        moved = np.moveaxis(array, tuple(range(lead)), tuple(range(3, 3 + lead)))
        out = ornt_mod.apply_orientation(moved, transform)
        return np.moveaxis(out, tuple(range(3, 3 + lead)), tuple(range(lead)))

    @staticmethod
    def _check(array: np.ndarray, shape: tuple[int, ...], order: str) -> None:
        if array.ndim < 3 or tuple(array.shape[-3:]) != tuple(shape):
            raise InputError(
                f"expected an array of shape (..., {', '.join(map(str, shape))}) in {order} order; "
                f"got {array.shape}"
            )


def _dyadic(value: float) -> float:
    """*value* rounded to a multiple of 2**-20 (~1e-6 mm).

    napari counts the slices of a layer as ``int((stop - start) / step) + 1`` with
    ``stop = translate + (n - 1) * scale``; with an arbitrary float scale (voxel sizes read from
    float32 headers, e.g. 2.5000000386) that can round down and lose the last slice. With
    scale and translate on a 2**-20 grid every one of those operations is exact. Only the
    display uses these numbers; files keep their exact affine.
    """
    return round(float(value) * _DYADIC) / _DYADIC


_DYADIC = float(2**20)


def display_geometry(volume: Volume) -> DisplayGeometry:
    """The display geometry of a loaded volume (its affine, header and shape).

    Parameters
    ----------
    volume : softseg.io.Volume

    Returns
    -------
    DisplayGeometry

    Raises
    ------
    InputError
        A non-finite or singular affine (the message names the volume's file).
    """
    try:
        return DisplayGeometry.from_affine(volume.affine, volume.shape, header=volume.header)
    except InputError as exc:
        if volume.path is None:
            raise
        raise InputError(f"{volume.path}: {exc}") from None


def save_display_array(
    path: str | os.PathLike,
    display_array: np.ndarray,
    geometry: DisplayGeometry,
    *,
    overwrite: bool = False,
    sidecar: Mapping[str, Any] | None = None,
    durable: bool = False,
) -> Path:
    """Write a napari-ordered array in the original file orientation, affine and header.

    Parameters
    ----------
    path : path-like
        ``.nii`` or ``.nii.gz`` destination; written atomically (:func:`softseg.io.save_volume`).
    display_array : ndarray, shape display_shape
        Floats are written as float32 unscaled, booleans as uint8, integers keep their dtype.
    geometry : DisplayGeometry
        Usually ``DisplayGeometry.from_metadata(layer.metadata)``.
    overwrite : bool
        Replace an existing file (and sidecar).
    sidecar : mapping, optional
        JSON written next to the image (``x.nii.gz`` -> ``x.json``).
    durable : bool
        fsync before the rename (:func:`softseg.io.atomic_path`).

    Returns
    -------
    Path
    """
    display_array = np.asarray(display_array)
    if display_array.ndim != 3:
        raise InputError(f"{path}: expected a 3D array to save, got shape {display_array.shape}")
    file_array = geometry.from_display(display_array)
    return save_volume(
        path,
        file_array,
        like=geometry.volume(file_array),
        overwrite=overwrite,
        sidecar=sidecar,
        durable=durable,
    )
