"""Batched random affine augmentation on the training device that keeps soft labels soft.

One rotation, translation and scale is drawn per sample (from an explicit
:class:`torch.Generator`) and applied identically to the image channels and every label channel
with bilinear interpolation (SoftSeg, Table 1: "linear interpolation"), through
:func:`torch.nn.functional.affine_grid` / :func:`~torch.nn.functional.grid_sample`: one kernel for
the whole batch, no Python loop over samples, no host-device synchronisation.

Bilinear resampling of a binary label makes its borders fractional; soft candidates keep those
fractions (SoftSeg feature A), hard candidates binarise afterwards with
``Candidate.prepare_target`` (the trainer calls :func:`random_affine` first, then
``prepare_target``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from softseg.errors import InputError

__all__ = ["PADDING_MODES", "AffineAugment", "affine_matrices", "random_affine", "warp"]

#: ``grid_sample`` padding modes accepted for images.
PADDING_MODES = ("border", "zeros", "reflection")


@dataclass(frozen=True)
class AffineAugment:
    """Ranges of the random affine transform (defaults: SoftSeg, Table 1).

    Parameters
    ----------
    rotation : float
        Maximum rotation in degrees; the angle is uniform in [-rotation, rotation].
    translation : float
        Maximum shift as a fraction of the image size along each axis, uniform in
        [-translation, translation] (0.03 = 3 %).
    scale : float
        Maximum relative zoom; the factor is uniform in [1 - scale, 1 + scale] (isotropic).
    image_padding : {'border', 'zeros', 'reflection'}
        How the image is filled where the transform looks outside it. ``'border'`` (default)
        repeats the edge, which suits z-scored MRI whose corners are background but not 0.
        Labels are always padded with 0 (nothing is labelled outside the field of view).
    """

    rotation: float = 20.0
    translation: float = 0.03
    scale: float = 0.1
    image_padding: str = "border"

    def __post_init__(self) -> None:
        for name in ("rotation", "translation", "scale"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise InputError(
                    f"AffineAugment: {name} must be a finite number >= 0; got {value!r}"
                )
        if self.rotation > 180:
            raise InputError(
                f"AffineAugment: rotation must be at most 180 degrees; got {self.rotation}"
            )
        if self.scale >= 1:
            raise InputError(
                "AffineAugment: scale must be < 1 (zoom in [1 - scale, 1 + scale]); "
                f"got {self.scale}"
            )
        if self.image_padding not in PADDING_MODES:
            raise InputError(
                f"AffineAugment: unknown image_padding {self.image_padding!r}; "
                f"choose one of: {', '.join(PADDING_MODES)}"
            )

    @property
    def is_identity(self) -> bool:
        """True when every range is 0 (the transform does nothing)."""
        return self.rotation == 0 and self.translation == 0 and self.scale == 0


def affine_matrices(
    n: int,
    size: tuple[int, int],
    *,
    params: AffineAugment = AffineAugment(),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` random affine transforms for :func:`warp`.

    Parameters
    ----------
    n : int
        Number of samples.
    size : (H, W)
        Image size, to keep rotations rigid in pixel space for non-square images.
    params : AffineAugment, keyword-only
    generator : torch.Generator, keyword-only
        Source of randomness; the numbers are drawn on the generator's device (4 per sample, in
        the order angle, scale, shift x, shift y) and then moved to ``device``.
    device, dtype : keyword-only
        Where and in which precision the matrices are returned.

    Returns
    -------
    theta : torch.Tensor, shape (n, 2, 3)
        Output -> input maps in ``affine_grid``'s normalised coordinates (``align_corners=False``).
    zoom : torch.Tensor, shape (n,)
        Magnification of each transform (content appears ``zoom`` times larger); distances
        measured in the output are the input distances times ``zoom``.
    """
    height, width = size
    gen_device = generator.device if generator is not None else torch.device("cpu")
    # float64 where the device has it (MPS does not): the matrices are tiny, precision is free.
    work = torch.float32 if gen_device.type == "mps" else torch.float64
    u = 2.0 * torch.rand((n, 4), generator=generator, device=gen_device, dtype=work) - 1.0
    angle = torch.deg2rad(u[:, 0] * params.rotation)
    zoom = 1.0 + u[:, 1] * params.scale
    # (x, y) shift: fraction of the size -> normalised units (the image is 2 units wide)
    shift = u[:, 2:] * params.translation * 2.0
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # Pixel-space map out -> in: p_in = R(angle) p_out / zoom + shift_px; with D = diag(W/2, H/2)
    # (normalised -> pixels) the normalised matrix is D^-1 R D / zoom.
    theta = torch.zeros((n, 2, 3), dtype=work, device=gen_device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (height / width)
    theta[:, 1, 0] = sin * (width / height)
    theta[:, 1, 1] = cos
    theta[:, :, 2] = shift
    device = gen_device if device is None else torch.device(device)
    # A CPU generator feeding CUDA tensors: upload without waiting for the queued kernels (safe
    # host -> device; a device -> host copy must stay blocking to be readable at once).
    upload = gen_device.type == "cpu" and device.type == "cuda"
    return (
        theta.to(dtype=dtype).to(device=device, non_blocking=upload),
        zoom.to(dtype=dtype).to(device=device, non_blocking=upload),
    )


def warp(x: torch.Tensor, theta: torch.Tensor, *, padding_mode: str = "zeros") -> torch.Tensor:
    """Resample ``x`` (N, C, H, W) bilinearly through ``theta`` (N, 2, 3); returns a new tensor."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _check_batch(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise InputError(f"random_affine: {name} must be a torch.Tensor; got {type(t).__name__}")
    if t.ndim != 4:
        raise InputError(
            f"random_affine: expected {name} of shape (N, C, H, W); got {tuple(t.shape)}"
        )


def random_affine(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    params: AffineAugment = AffineAugment(),
    generator: torch.Generator | None = None,
    distance_maps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply one random affine transform per sample to images and labels alike.

    Parameters
    ----------
    images : torch.Tensor, float, shape (N, C, H, W)
        Image batch (any device).
    labels : torch.Tensor, shape (N, L, H, W)
        Label batch in [0, 1] on the same device; integer/bool labels are converted to the
        images' dtype.
    params : AffineAugment, keyword-only
        Ranges; the default is SoftSeg's (rotation 20 degrees, translation 3 %, scale 10 %).
    generator : torch.Generator, keyword-only
        Seeded generator: the same seed gives the same transforms. ``None`` uses torch's global
        generator (not reproducible; avoid in training code).
    distance_maps : torch.Tensor, shape (N, L, H, W), keyword-only
        Optional signed distance maps of the labels (boundary loss): warped with the same
        transform (edge padding) and multiplied by the zoom so they stay distances.

    Returns
    -------
    (images, labels) or (images, labels, distance_maps)
        New tensors of the input shapes; labels bilinear and clamped to [0, 1]. The inputs are
        never modified.
    """
    _check_batch("images", images)
    _check_batch("labels", labels)
    if not images.is_floating_point():
        raise InputError(f"random_affine: images must be floating point; got {images.dtype}")
    if labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]:
        raise InputError(
            "random_affine: images and labels must share batch size and H, W; "
            f"got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if labels.device != images.device:
        raise InputError(
            f"random_affine: images are on {images.device} but labels on {labels.device}"
        )
    if not isinstance(params, AffineAugment):
        raise InputError(
            f"random_affine: params must be an AffineAugment; got {type(params).__name__}"
        )
    if distance_maps is not None:
        _check_batch("distance_maps", distance_maps)
        if distance_maps.shape != labels.shape:
            raise InputError(
                f"random_affine: distance_maps must have the labels' shape {tuple(labels.shape)}; "
                f"got {tuple(distance_maps.shape)}"
            )
    if not labels.is_floating_point():
        labels = labels.to(images.dtype)

    n, _, height, width = images.shape
    theta, zoom = affine_matrices(
        n,
        (height, width),
        params=params,
        generator=generator,
        device=images.device,
        dtype=torch.float32,
    )
    out_images = warp(images, theta, padding_mode=params.image_padding)
    out_labels = warp(labels, theta, padding_mode="zeros").clamp_(0.0, 1.0)
    if distance_maps is None:
        return out_images, out_labels
    dmaps = distance_maps if distance_maps.is_floating_point() else distance_maps.to(images.dtype)
    out_maps = warp(dmaps, theta, padding_mode="border") * zoom.to(dmaps.dtype).view(n, 1, 1, 1)
    return out_images, out_labels, out_maps
