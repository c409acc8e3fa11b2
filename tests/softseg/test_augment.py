"""softseg.augment: same transform for image and labels, geometry, soft borders, determinism."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from softseg.augment import AffineAugment, affine_matrices, random_affine
from softseg.errors import InputError
from softseg.losses import signed_distance_map


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _square_batch(n=6, h=40, w=56):
    img = torch.zeros(n, 2, h, w)
    img[:, :, 12:26, 18:34] = 1.0
    img[:, 1] *= 3.0  # second contrast, scaled
    lab = torch.zeros(n, 1, h, w)
    lab[:, :, 12:26, 18:34] = 1.0
    return img, lab


def _disc(h, w, radius, centre=None):
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2).to(torch.float32)


def _moments(mass):
    """Total mass, centroid (y, x) and covariance of a 2D mass distribution."""
    h, w = mass.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    m = mass.to(torch.float64)
    total = m.sum()
    cy, cx = (m * yy).sum() / total, (m * xx).sum() / total
    cov = (
        torch.tensor(
            [
                [(m * (yy - cy) ** 2).sum(), (m * (yy - cy) * (xx - cx)).sum()],
                [(m * (yy - cy) * (xx - cx)).sum(), (m * (xx - cx) ** 2).sum()],
            ]
        )
        / total
    )
    return total, (cy, cx), cov


def test_shapes_dtypes_range_and_no_mutation():
    img, lab = _square_batch()
    img0, lab0 = img.clone(), lab.clone()
    out_img, out_lab = random_affine(img, lab, generator=_gen())
    assert out_img.shape == img.shape and out_lab.shape == lab.shape
    assert out_img.dtype == img.dtype and out_lab.dtype == lab.dtype
    assert torch.equal(img, img0) and torch.equal(lab, lab0)
    assert out_lab.min() >= 0 and out_lab.max() <= 1
    assert not torch.equal(out_lab, lab)


def test_square_stays_aligned_between_image_and_labels():
    img, lab = _square_batch()
    out_img, out_lab = random_affine(
        img, lab, params=AffineAugment(image_padding="zeros"), generator=_gen(1)
    )
    torch.testing.assert_close(out_img[:, :1], out_lab, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_img[:, 1:], 3.0 * out_lab, atol=1e-5, rtol=0)
    # every sample got a different transform
    flat = out_lab.flatten(1)
    assert len({tuple(row.round(decimals=3).tolist()) for row in flat}) == flat.shape[0]


def test_all_label_channels_get_the_same_transform():
    img, lab = _square_batch(n=3)
    labels = torch.cat([lab, lab, 0.5 * lab], dim=1)
    _, out = random_affine(img, labels, generator=_gen(2))
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 2], 0.5 * out[:, 0])


def test_seeded_determinism():
    img, lab = _square_batch()
    a = random_affine(img, lab, generator=_gen(7))
    b = random_affine(img, lab, generator=_gen(7))
    c = random_affine(img, lab, generator=_gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_binary_labels_become_soft_at_the_borders_only():
    img, lab = _square_batch()
    _, out = random_affine(img, lab, generator=_gen(3))
    fractional = (out > 0.01) & (out < 0.99)
    assert fractional.sum() > 20
    assert ((out > 0.99).sum(dim=(1, 2, 3)) > 100).all()  # the core stays 1


def test_rotation_is_rigid_on_non_square_images():
    # a disc stays a disc (isotropic second moments) even though H != W
    h, w = 40, 80
    lab = _disc(h, w, 9.0).expand(8, 1, h, w).contiguous()
    img = lab.clone()
    params = AffineAugment(rotation=45.0, translation=0.0, scale=0.0)
    _, out = random_affine(img, lab, params=params, generator=_gen(4))
    ref_total, (ry, rx), _ = _moments(lab[0, 0])
    for k in range(out.shape[0]):
        total, (cy, cx), cov = _moments(out[k, 0])
        eig = torch.linalg.eigvalsh(cov)
        assert eig[1] / eig[0] == pytest.approx(1.0, abs=0.03)
        assert float(total) == pytest.approx(float(ref_total), rel=0.01)
        assert (float(cy), float(cx)) == pytest.approx((float(ry), float(rx)), abs=0.05)


def test_scale_and_translation_match_the_drawn_matrices():
    h, w = 48, 64
    lab = _disc(h, w, 7.0, centre=(20.0, 30.0)).expand(10, 1, h, w).contiguous()
    params = AffineAugment(rotation=0.0, translation=0.05, scale=0.2)
    out_img, out = random_affine(lab.clone(), lab, params=params, generator=_gen(5))
    theta, zoom = affine_matrices(10, (h, w), params=params, generator=_gen(5))
    ref_total, (ry, rx), _ = _moments(lab[0, 0])
    for k in range(10):
        total, (cy, cx), _ = _moments(out[k, 0])
        z = float(zoom[k])
        assert 0.8 <= z <= 1.2
        assert float(total) == pytest.approx(
            float(ref_total) * z * z, rel=0.03
        )  # area scales by zoom^2
        # output -> input map in pixels (align_corners=False):
        # p_in = (p_out - c) / z + c + shift * size / 2
        sy = float(theta[k, 1, 2]) * h / 2
        sx = float(theta[k, 0, 2]) * w / 2
        cy_expected = (float(ry) - (h - 1) / 2 - sy) * z + (h - 1) / 2
        cx_expected = (float(rx) - (w - 1) / 2 - sx) * z + (w - 1) / 2
        assert (float(cy), float(cx)) == pytest.approx((cy_expected, cx_expected), abs=0.1)


def test_drawn_parameters_respect_the_ranges():
    n, h, w = 400, 30, 60
    params = AffineAugment()  # SoftSeg: 20 degrees, 3 %, 10 %
    theta, zoom = affine_matrices(n, (h, w), params=params, generator=_gen(6), dtype=torch.float64)
    # undo the aspect-ratio correction to recover the rotation angle
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0] * h / w, theta[:, 0, 0]))
    assert angle.abs().max() <= 20.0 + 1e-9 and angle.abs().max() > 18.0
    assert zoom.min() >= 0.9 and zoom.max() <= 1.1 and zoom.max() - zoom.min() > 0.15
    shift = theta[:, :, 2] / 2  # fraction of the image size
    assert shift.abs().max() <= 0.03 + 1e-12 and shift.abs().max() > 0.025
    torch.testing.assert_close(theta[:, 0, 0] * zoom, torch.cos(torch.deg2rad(angle)))


def test_identity_parameters_change_nothing():
    img, lab = _square_batch(n=2)
    out_img, out_lab = random_affine(
        img, lab, params=AffineAugment(0.0, 0.0, 0.0), generator=_gen()
    )
    torch.testing.assert_close(out_img, img, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_lab, lab, atol=1e-5, rtol=0)


def test_integer_labels_and_float64_images():
    img, lab = _square_batch(n=2)
    out_img, out_lab = random_affine(img.double(), lab.to(torch.uint8), generator=_gen())
    assert out_img.dtype == torch.float64 and out_lab.dtype == torch.float64


def test_border_padding_for_images_zero_for_labels():
    img = torch.full((2, 1, 20, 20), -0.8)  # z-scored background is not 0
    lab = torch.ones(2, 1, 20, 20)
    params = AffineAugment(rotation=30.0, translation=0.03, scale=0.1)
    out_img, out_lab = random_affine(img, lab, params=params, generator=_gen(9))
    torch.testing.assert_close(out_img, img)  # edges repeated: still -0.8 in the corners
    assert out_lab.min() < 0.5  # corners outside the field of view are unlabelled


def test_distance_maps_follow_the_labels():
    h, w = 48, 48
    lab = _disc(h, w, 10.0).expand(4, 1, h, w).contiguous()
    dmap = torch.from_numpy(signed_distance_map(lab.numpy(), ndim=2))
    params = AffineAugment(rotation=20.0, translation=0.03, scale=0.1)
    _, out_lab, out_map = random_affine(
        lab.clone(), lab, params=params, generator=_gen(10), distance_maps=dmap
    )
    assert out_map.shape == dmap.shape
    recomputed = signed_distance_map(out_lab.numpy(), ndim=2)
    near = np.abs(recomputed) < 6
    assert np.abs(out_map.numpy() - recomputed)[near].mean() < 0.5
    # warping the labels and warping without distance maps give the same labels
    _, again = random_affine(lab.clone(), lab, params=params, generator=_gen(10))
    torch.testing.assert_close(again, out_lab)


def test_errors_are_clear():
    img, lab = _square_batch(n=2)
    with pytest.raises(InputError, match=r"expected images of shape \(N, C, H, W\)"):
        random_affine(img[0], lab, generator=_gen())
    with pytest.raises(InputError, match="share batch size and H, W"):
        random_affine(img, lab[:1], generator=_gen())
    with pytest.raises(InputError, match="floating point"):
        random_affine(img.to(torch.uint8), lab, generator=_gen())
    with pytest.raises(InputError, match="distance_maps must have the labels' shape"):
        random_affine(img, lab, generator=_gen(), distance_maps=img)
    with pytest.raises(InputError, match="rotation must be a finite number >= 0"):
        AffineAugment(rotation=-1)
    with pytest.raises(InputError, match="scale must be < 1"):
        AffineAugment(scale=1.0)
    with pytest.raises(
        InputError, match="unknown image_padding 'mirror'; choose one of: border, zeros, reflection"
    ):
        AffineAugment(image_padding="mirror")
    with pytest.raises(dataclasses.FrozenInstanceError):
        AffineAugment().rotation = 5.0  # type: ignore[misc]
    assert math.isclose(AffineAugment().translation, 0.03)
