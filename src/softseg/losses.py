"""Segmentation losses: pure functions plus thin :class:`torch.nn.Module` wrappers.

Every loss takes **probabilities** (the output of the candidate's final activation, see
:mod:`softseg.activations`), never logits, and targets in [0, 1] of the same shape
``(N, C, *spatial)``. Targets may be soft (fractional), which is the point of SoftSeg. Every loss
takes ``reduction={'mean', 'sum', 'none'}``, implemented once in :func:`reduce_loss`; the docstring
of each loss says what ``'none'`` returns (per voxel, per sample or per channel).

Half-precision inputs (autocast) are computed in float32; float64 stays float64 (gradcheck).

=====================  ==========================================================================
name (``LOSSES`` key)  reference
=====================  ==========================================================================
``adaptive_wing``      Wang, Bo, Fuxin 2019, "Adaptive Wing Loss for Robust Face Alignment via
                       Heatmap Regression", eq. 6-7; SoftSeg parameters alpha=2.1, omega=8,
                       epsilon=1, theta=0.5.
``dice``               soft Dice (Milletari et al. 2016) with additive smoothing. Not minimal at
                       a soft target (a prediction equal to it still costs, Bertels et al. 2019).
``dice_semimetric``    Dice semimetric loss (Wang & Blaschko 2023): 0 if and only if the
                       prediction equals the (soft) target; equals ``dice`` on binary targets.
``generalized_dice``   Sudre et al. 2017, weights 1 / (sum of the target)^2.
``bce``                binary cross-entropy (Bertels et al. 2019: unbiased volumes).
``cross_entropy``      categorical cross-entropy with soft targets ``-sum_c g_c ln p_c`` (the
                       K-class form of ``bce``; channels = classes incl. background).
``mse``                mean squared error.
``boundary``           Kervadec et al. 2019, eq. 5: mean of probability x signed distance map.
``gdl_boundary``       Kervadec et al. 2019, eq. 6: alpha * GDL + (1 - alpha) * boundary.
=====================  ==========================================================================

**K classes.** Probabilities and targets of a K-class model have K+1 channels, background first
(softmax or multi-class normalized ReLU outputs; targets built by
:meth:`softseg.candidates.Candidate.prepare_target`). Element-wise losses (Adaptive Wing, MSE) and
the generalized Dice (Sudre's class weights) use every channel; ``cross_entropy`` sums over the
classes; the Dice and boundary losses take ``include_background=False`` to score the foreground
classes 1..K only (as nnU-Net's Dice and Kervadec's boundary loss do). Every option defaults to
the single-class behaviour.

The signed distance map of the boundary loss is an input of the loss, never computed inside it:
:func:`signed_distance_map` (numpy/scipy, any number of dimensions, the reference) or
:func:`signed_distance_map_2d` (torch, batches of 2D images on the training device: the trainer
computes it there after augmentation, with no round trip to the host).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
import torch.nn.functional as F
from torch import nn

from softseg.errors import InputError

__all__ = [
    "DISTANCE_MAP_LOSSES",
    "LOSSES",
    "LOSS_MODULES",
    "REDUCTIONS",
    "AdaptiveWingLoss",
    "BinaryCrossEntropyLoss",
    "BoundaryLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "DiceSemimetricLoss",
    "GDLBoundaryLoss",
    "GeneralizedDiceLoss",
    "MSELoss",
    "adaptive_wing_loss",
    "binary_cross_entropy",
    "boundary_loss",
    "boundary_weight",
    "cross_entropy",
    "dice_loss",
    "dice_semimetric_loss",
    "gdl_boundary_loss",
    "generalized_dice_loss",
    "mse_loss",
    "reduce_loss",
    "signed_distance_map",
    "signed_distance_map_2d",
]

REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------- helpers
def _check_reduction(reduction: str, what: str) -> None:
    if reduction not in REDUCTIONS:
        raise InputError(
            f"{what}: unknown reduction {reduction!r}; choose one of: {', '.join(REDUCTIONS)}"
        )


def reduce_loss(values: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The one reduction helper: ``'mean'`` -> mean, ``'sum'`` -> sum, ``'none'`` -> unchanged."""
    _check_reduction(reduction, "reduce_loss")
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _prepare(
    probs: torch.Tensor, target: torch.Tensor, what: str, *, min_ndim: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (probs, target) pair and bring both to one floating dtype."""
    for name, t in (("probs", probs), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{what}: {name} must be a torch.Tensor; got {type(t).__name__}")
    if probs.shape != target.shape:
        raise InputError(
            f"{what}: probs and target must have the same shape (N, C, *spatial); "
            f"got {tuple(probs.shape)} and {tuple(target.shape)}"
        )
    if probs.ndim < min_ndim:
        raise InputError(
            f"{what}: expected tensors of shape (N, C, *spatial); got {tuple(probs.shape)}"
        )
    if not probs.is_floating_point():
        raise InputError(f"{what}: probs must be floating point (probabilities); got {probs.dtype}")
    dtype = probs.dtype
    if dtype in (torch.float16, torch.bfloat16):  # autocast: compute losses in float32
        dtype = torch.float32
    return probs.to(dtype), target.to(dtype)


def _foreground(t: torch.Tensor, include_background: bool, what: str) -> torch.Tensor:
    """``t`` without its channel 0 (background) unless *include_background*."""
    if include_background:
        return t
    if t.shape[1] < 2:
        raise InputError(
            f"{what}: include_background=False needs a background channel and at least one "
            f"class (N, K+1, *spatial); got {t.shape[1]} channel(s)"
        )
    return t[:, 1:]


def _dice_inputs(
    probs: torch.Tensor, target: torch.Tensor, smooth: float, per_sample: bool,
    include_background: bool, reduction: str, what: str,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Checked options and inputs of a Dice-family loss: (probs, target, summation axes)."""
    _check_reduction(reduction, what)
    if smooth < 0:
        raise InputError(f"{what}: smooth must be >= 0; got {smooth}")
    probs, target = _prepare(probs, target, what)
    probs = _foreground(probs, include_background, what)
    target = _foreground(target, include_background, what)
    axes = tuple(range(2, probs.ndim)) if per_sample else (0, *range(2, probs.ndim))
    return probs, target, axes


# ---------------------------------------------------------------------------------- Adaptive Wing
def adaptive_wing_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 2.1,
    omega: float = 8.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
    weight_map: float = 0.0,
    balance: float | None = None,
    dice_semimetric_weight: float = 0.0,
    dice_semimetric_include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Adaptive Wing loss (Wang et al. 2019, eq. 6-7), the SoftSeg regression loss.

    With ``d = |target - probs|`` and ``y = target``::

        AWing = omega * ln(1 + (d / epsilon) ** (alpha - y))   if d < theta
                A * d - C                                       otherwise
        A = omega / (1 + (theta / epsilon) ** (alpha - y)) * (alpha - y)
            * (theta / epsilon) ** (alpha - y - 1) / epsilon
        C = theta * A - omega * ln(1 + (theta / epsilon) ** (alpha - y))

    ``A`` and ``C`` make the two pieces meet with equal value and slope at ``d = theta``.

    Parameters
    ----------
    probs, target : torch.Tensor, shape (N, C, *spatial)
        Probabilities in [0, 1] and (soft) targets in [0, 1].
    alpha, omega, epsilon, theta : float, keyword-only
        Defaults are the SoftSeg configuration (alpha=2.1, omega=8, epsilon=1, theta=0.5).
        ``alpha`` must exceed 1 + max(target) for the loss to be smooth at ``d = 0``.
    weight_map : float >= 0, keyword-only
        ``W`` of the *weighted loss map* of Wang et al. 2019 (section 4.2; they use 10): every
        voxel's loss is multiplied by ``1 + W * M``, ``M`` = the target binarised at 0.2 and
        dilated by a 3x3 square (3x3x3 for 3D) in each channel, so that the structure and its
        border are not outweighed by the background; ``'mean'`` then divides by the sum of the
        weights. 0 (default) is the unweighted loss. ivadomed meant to apply this map (weight
        ``1 + omega``) but its ``binary_opening`` returns booleans, so its map is 1 everywhere.
    balance : float in (0, 0.5] or None, keyword-only
        The smallest share ``q`` of the loss that the rarer side of each channel (the structure,
        or the background where the structure is the majority) gets: with ``s`` = that side's
        own share ``sum(y) / N`` (soft memberships ``y`` and ``1 - y``), ``'mean'`` becomes::

            w * sum(y * L) / sum(y) + (1 - w) * sum((1 - y) * L) / sum(1 - y),  w = max(q, s)

        per channel (axis 1; sums over the batch and space), averaged over the channels. When the
        structure is not rare (``s >= q``: a large organ, a K-class background channel) this *is*
        the plain mean; a channel without any structure in the batch gives its background mean
        (inverse-frequency weighting, the regression analogue of a weighted cross-entropy). A structure of a few voxels in
        10^4 then drives the gradient as much as the background does, as the Dice loss's
        normalisation by the structure's size does for the conventional pipeline; the plain
        mean leaves it 10^-4 of the gradient (issue 15: SoftSeg learned no small lesion). The
        plain mean is ``q = sum(y) / N``; ``q = 0.5`` weighs structure and background equally.
        Needs ``reduction='mean'`` and excludes ``weight_map``.
    dice_semimetric_weight : float >= 0, keyword-only
        ``lambda`` of a compound loss ``AWing mean + lambda * DML`` with the Dice semimetric loss
        of :func:`dice_semimetric_loss` (Wang & Blaschko 2023; batch-wise, smooth 1): the
        regression keeps each voxel's soft value, the DML term is normalised by the structure's
        size, so a lesion of a few voxels drives the gradient (compound losses such as Dice +
        cross-entropy are the robust choice across tasks: Ma et al. 2021, "Loss odyssey in
        medical image segmentation"). Both terms are 0 only at ``probs == target``, so the sum
        is minimal at the soft target itself. 0 (default) is Adaptive Wing alone. Needs
        ``reduction='mean'``; combines with ``balance`` and ``weight_map``.
    dice_semimetric_include_background : bool, keyword-only
        The DML term's ``include_background`` (:func:`dice_semimetric_loss`): False scores the
        foreground classes 1..K of a K-class map (channel 0 is background), as the K-class Dice
        losses do (:meth:`softseg.candidates.Candidate.for_classes`). The Adaptive Wing term
        always covers every channel.
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns the per-voxel loss, shape (N, C, *spatial). ``'mean'`` averages over
        every voxel. (ivadomed returns the plain *sum* over the batch, which ties the loss scale
        to the slice size; the mean does not.)

    Raises
    ------
    InputError
        omega, epsilon or theta <= 0, ``weight_map`` < 0 or not finite, a weight map on a tensor
        that is not (N, C, H, W) or (N, C, D, H, W), ``dice_semimetric_weight`` < 0 or not
        finite or with a reduction other than ``'mean'``, mismatched shapes.
    """
    _check_reduction(reduction, "adaptive_wing_loss")
    if dice_semimetric_weight:
        w = dice_semimetric_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise InputError("adaptive_wing_loss: dice_semimetric_weight must be a finite number "
                             f">= 0; got {w!r}")
        if reduction != "mean":
            raise InputError("adaptive_wing_loss: dice_semimetric_weight adds a batch-wise DML term "
                             f"to the mean (reduction='mean'); got reduction={reduction!r}")
        wing = adaptive_wing_loss(probs, target, alpha=alpha, omega=omega, epsilon=epsilon,
                                  theta=theta, weight_map=weight_map, balance=balance)
        return wing + w * dice_semimetric_loss(
            probs, target, include_background=bool(dice_semimetric_include_background))
    if not (omega > 0 and epsilon > 0 and theta > 0):
        raise InputError(
            "adaptive_wing_loss: omega, epsilon and theta must be > 0; "
            f"got {omega}, {epsilon}, {theta}"
        )
    probs, target = _prepare(probs, target, "adaptive_wing_loss", min_ndim=1)
    power = alpha - target
    ratio = theta / epsilon
    # (theta / epsilon) ** power without uploading a scalar tensor; ratio**(p-1) = ratio**p / ratio
    ratio_pow = torch.exp(power * math.log(ratio))
    a = omega / (1.0 + ratio_pow) * power * ratio_pow / ratio / epsilon
    c = theta * a - omega * torch.log1p(ratio_pow)
    d = (target - probs).abs()
    nonlinear = omega * torch.log1p(torch.pow(d / epsilon, power))
    linear = a * d - c
    loss = torch.where(d < theta, nonlinear, linear)
    if balance is not None:
        if (isinstance(balance, bool) or not isinstance(balance, (int, float))
                or not 0 < balance <= 0.5):
            raise InputError(f"adaptive_wing_loss: balance must be a number in (0, 0.5] (the "
                             f"structure's smallest share of the loss) or None; got {balance!r}")
        if reduction != "mean" or weight_map:
            raise InputError("adaptive_wing_loss: balance is a mean (reduction='mean') and "
                             "excludes weight_map")
        y = target.detach()
        axes = tuple(a for a in range(y.ndim) if a != 1) if y.ndim > 1 else (0,)
        fg, bg = y.sum(dim=axes), (1.0 - y).sum(dim=axes)
        mean_fg = (loss * y).sum(dim=axes) / fg.clamp_min(1e-12)
        mean_bg = (loss * (1.0 - y)).sum(dim=axes) / bg.clamp_min(1e-12)
        # the rarer side of each channel gets max(q, its own share): the plain mean when it is
        # not rare (a large structure, a K-class background channel), q when it is
        rare_is_fg = fg <= bg
        natural = torch.where(rare_is_fg, fg, bg) / (fg + bg).clamp_min(1e-12)
        share = natural.clamp_min(balance)
        rare = torch.where(rare_is_fg, mean_fg, mean_bg)
        common = torch.where(rare_is_fg, mean_bg, mean_fg)
        present = torch.where(rare_is_fg, fg, bg) > 0
        return torch.where(present, share * rare + (1.0 - share) * common, common).mean()
    if not weight_map:
        return reduce_loss(loss, reduction)
    weights = wing_weight_map(target, weight_map)
    if reduction == "mean":
        return (loss * weights).sum() / weights.sum()
    return reduce_loss(loss * weights, reduction)


def wing_weight_map(target: torch.Tensor, weight: float) -> torch.Tensor:
    """``1 + weight * M`` of the Adaptive Wing loss's weighted loss map (Wang et al. 2019,
    section 4.2): ``M`` = ``target >= 0.2`` dilated by a 3x3 (3x3x3) square per channel.

    Parameters
    ----------
    target : torch.Tensor, float, (N, C, H, W) or (N, C, D, H, W), values in [0, 1]
    weight : float >= 0

    Returns
    -------
    torch.Tensor
        Same shape and dtype, values 1 or ``1 + weight``; no gradient.

    Raises
    ------
    InputError
        ``weight`` < 0 or not finite; ``target`` not 4D/5D.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise InputError(f"adaptive_wing_loss: weight_map must be a finite number >= 0; got {weight!r}")
    if target.ndim not in (4, 5):
        raise InputError(
            "adaptive_wing_loss: the weighted loss map needs (N, C, H, W) or (N, C, D, H, W) "
            f"tensors; got shape {tuple(target.shape)}"
        )
    pool = F.max_pool2d if target.ndim == 4 else F.max_pool3d
    mask = pool((target.detach() >= 0.2).to(target.dtype), kernel_size=3, stride=1, padding=1)
    return 1.0 + weight * mask


# ------------------------------------------------------------------------------------------ Dice
def dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    smooth: float = 1.0,
    per_sample: bool = False,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Soft Dice loss ``1 - (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)`` per channel.

    Soft targets are used as they are (no binarisation): the numerator is the soft intersection.

    Parameters
    ----------
    probs, target : torch.Tensor, shape (N, C, *spatial)
    smooth : float, keyword-only
        Added to numerator and denominator (default 1, as in ivadomed and the SoftSeg runs). It
        makes an empty target with an empty prediction a perfect score (loss 0) and keeps the
        gradient finite; over a batch of slices (thousands of voxels) its effect is negligible.
    per_sample : bool, keyword-only
        ``False`` (default, as the papers' toolbox): the sums run over the whole batch and all
        voxels, one Dice per channel, so slices without foreground do not each count as a
        separate (easily perfect or easily failed) term. ``True``: one Dice per sample and channel.
    include_background : bool, keyword-only
        ``True`` (default): every channel is scored. ``False``: channel 0 is the background of
        a K-class output (N, K+1, *spatial) and is left out; the loss is the mean over the
        classes 1..K (the multi-class Dice of the conventional K-class candidate).
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns shape (C,) or, with ``per_sample=True``, (N, C) (C = the channels
        scored).
    """
    probs, target, axes = _dice_inputs(
        probs, target, smooth, per_sample, include_background, reduction, "dice_loss")
    intersection = (probs * target).sum(dim=axes)
    total = probs.sum(dim=axes) + target.sum(dim=axes)
    dice = (2.0 * intersection + smooth) / (total + smooth).clamp_min(torch.finfo(probs.dtype).tiny)
    return reduce_loss(1.0 - dice, reduction)


def dice_semimetric_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    smooth: float = 1.0,
    per_sample: bool = False,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Dice semimetric loss ``sum|p - g| / (sum(p) + sum(g) + smooth)`` per channel (DML).

    Wang & Blaschko 2023, "Dice Semimetric Losses: Optimizing the Dice Score with Soft Labels"
    (MICCAI), DML1: for ``p, g`` in [0, 1], ``||p - g||_1 / (||p||_1 + ||g||_1)``. It is the soft
    Dice loss with the soft intersection ``sum(p g)`` replaced by
    ``(||p||_1 + ||g||_1 - ||p - g||_1) / 2``, so

    * it is **0 if and only if p == g**, soft targets included (the soft Dice of
      :func:`dice_loss` is not: a prediction equal to a soft target still costs, e.g. 0.31 on
      MONAI's soft-label test case);
    * on **binary** targets it equals :func:`dice_loss` with the same ``smooth`` exactly, because
      ``|p - g| = p + g - 2 p g`` when ``g`` is 0 or 1.

    With smoothing, ``1 - (2 I + smooth) / (sum(p) + sum(g) + smooth)`` with that intersection
    ``I`` is the formula above (as MONAI's ``DiceLoss(soft_label=True)`` with equal numerator and
    denominator smoothing); it stays 0 at ``p == g``.

    Parameters
    ----------
    probs, target : torch.Tensor, shape (N, C, *spatial)
        Probabilities and (soft) targets in [0, 1] (not checked here: the training loop's
        activation and targets guarantee it; outside [0, 1] the identities above do not hold).
    smooth : float, keyword-only
        Added to the denominator (>= 0, default 1 as :func:`dice_loss`); an empty target with an
        empty prediction gives 0. With ``smooth=0`` and both empty the result is 0 (0 / tiny).
    per_sample, include_background, reduction
        As :func:`dice_loss`: sums over the batch and all voxels (one value per channel) unless
        ``per_sample=True``; ``include_background=False`` scores the foreground classes 1..K of a
        K-class output (N, K+1, *spatial) only; ``'none'`` returns shape (C,) or (N, C).

    Notes
    -----
    ``|p - g|`` has no derivative where ``p == g``; autograd uses the subgradient 0 there (the
    minimum).
    """
    probs, target, axes = _dice_inputs(
        probs, target, smooth, per_sample, include_background, reduction, "dice_semimetric_loss")
    difference = (probs - target).abs().sum(dim=axes)
    total = probs.sum(dim=axes) + target.sum(dim=axes)
    loss = difference / (total + smooth).clamp_min(torch.finfo(probs.dtype).tiny)
    return reduce_loss(loss, reduction)


def generalized_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    add_background: bool = True,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Generalized Dice loss (Sudre et al. 2017), one value per sample.

    ``GDL = 1 - 2 sum_l w_l sum_n p_ln g_ln / sum_l w_l sum_n (p_ln + g_ln)`` with class weights
    ``w_l = 1 / (sum_n g_ln)^2`` computed per sample.

    Parameters
    ----------
    probs, target : torch.Tensor, shape (N, C, *spatial)
    add_background : bool, keyword-only
        ``True`` (default): a background class ``1 - sum_c p_c`` (and ``1 - sum_c g_c``) is added,
        so a single-channel (sigmoid or normalized ReLU) output is scored on foreground *and*
        background as in Sudre's two-class formulation. Use ``False`` when the channels already
        include background (softmax / multi-class normalized ReLU).
    eps : float, keyword-only
        Added to numerator and denominator; a sample with empty target and empty prediction gets 0.
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns shape (N,).

    Notes
    -----
    **Empty classes.** ``1 / 0^2`` is infinite; a class absent from a sample's target gets the
    largest weight among that sample's present classes (the guard MONAI uses), so a false positive
    there still costs, without dominating. If no class is present the weights are 1.
    """
    _check_reduction(reduction, "generalized_dice_loss")
    if eps <= 0:
        raise InputError(f"generalized_dice_loss: eps must be > 0; got {eps}")
    probs, target = _prepare(probs, target, "generalized_dice_loss")
    if add_background:
        probs = torch.cat([1.0 - probs.sum(dim=1, keepdim=True), probs], dim=1)
        target = torch.cat([1.0 - target.sum(dim=1, keepdim=True), target], dim=1)
    axes = tuple(range(2, probs.ndim))
    volume = target.sum(dim=axes)  # (N, L)
    present = volume > 0
    weight = 1.0 / torch.where(present, volume, torch.ones_like(volume)) ** 2
    largest = torch.where(present, weight, torch.zeros_like(weight)).amax(dim=1, keepdim=True)
    largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    weight = torch.where(present, weight, largest)
    intersection = (weight * (probs * target).sum(dim=axes)).sum(dim=1)
    union = (weight * (probs.sum(dim=axes) + volume)).sum(dim=1)
    gdl = 1.0 - (2.0 * intersection + eps) / (union + eps)
    return reduce_loss(gdl, reduction)


# ----------------------------------------------------------------------------- cross-entropy, MSE
def binary_cross_entropy(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float = 1e-7,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Binary cross-entropy ``-(g ln p + (1 - g) ln(1 - p))`` on probabilities, soft targets OK.

    Finite on the exact 0 and 1 a normalized ReLU (or a saturated float32 sigmoid) produces:
    probabilities are clamped to ``[eps, 1 - eps]`` before the logarithm, so one voxel costs at
    most ``-ln(eps)`` (about 16 for the default). The clamp has zero gradient outside the range,
    which loses nothing: at an exact 0 or 1 the activation's own gradient is already 0 (ReLU below
    0, ``x / max`` at the maximum, a saturated sigmoid).
    (``torch.nn.functional.binary_cross_entropy``
    clamps the log at -100 instead and gives gradients of order 1e12 there.)

    Parameters
    ----------
    probs, target : torch.Tensor, shape (N, C, *spatial)
    eps : float, keyword-only
        Clamp margin, 0 < eps < 0.5.
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns the per-voxel loss.
    """
    _check_reduction(reduction, "binary_cross_entropy")
    if not 0 < eps < 0.5:
        raise InputError(f"binary_cross_entropy: eps must be in (0, 0.5); got {eps}")
    probs, target = _prepare(probs, target, "binary_cross_entropy", min_ndim=1)
    p = probs.clamp(eps, 1.0 - eps)
    values = -(target * torch.log(p) + (1.0 - target) * torch.log1p(-p))
    return reduce_loss(values, reduction)


def cross_entropy(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float = 1e-7,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Categorical cross-entropy with soft targets, ``-sum_c g_c ln p_c``, on probabilities.

    The K-class form of :func:`binary_cross_entropy` (with two channels ``(1 - p, p)`` and
    ``(1 - g, g)`` it equals it). Targets may be soft (class fractions summing to 1, e.g. a
    rater average); the loss is then the cross-entropy against that distribution.

    Parameters
    ----------
    probs, target : torch.Tensor, shape (N, C, *spatial)
        Class probabilities, the class axis 1 holding every class **including background**
        (softmax or multi-class normalized ReLU output), and targets in [0, 1] summing to 1
        over the class axis.
    eps : float, keyword-only
        Probabilities are clamped to ``[eps, 1]`` before the logarithm, 0 < eps < 0.5 (the exact
        zeros of a multi-class normalized ReLU cost at most ``-ln(eps)`` per voxel, about 16).
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns the per-voxel loss, shape (N, *spatial) (summed over classes);
        ``'mean'`` averages it over voxels.
    """
    _check_reduction(reduction, "cross_entropy")
    if not 0 < eps < 0.5:
        raise InputError(f"cross_entropy: eps must be in (0, 0.5); got {eps}")
    probs, target = _prepare(probs, target, "cross_entropy")
    values = -(target * torch.log(probs.clamp(eps, 1.0))).sum(dim=1)
    return reduce_loss(values, reduction)


def mse_loss(probs: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Squared error ``(p - g)^2``; ``'none'`` returns the per-voxel values."""
    _check_reduction(reduction, "mse_loss")
    probs, target = _prepare(probs, target, "mse_loss", min_ndim=1)
    return reduce_loss((probs - target) ** 2, reduction)


# -------------------------------------------------------------------------------- boundary loss
def _check_distance_map(
    probs: torch.Tensor, distance_map: torch.Tensor | None, what: str
) -> torch.Tensor:
    if distance_map is None:
        raise InputError(
            f"{what}: needs a signed distance map of the target "
            "(compute it with softseg.losses.signed_distance_map in the data pipeline)"
        )
    if not isinstance(distance_map, torch.Tensor):
        raise InputError(
            f"{what}: distance_map must be a torch.Tensor; got {type(distance_map).__name__}"
        )
    if distance_map.shape != probs.shape:
        raise InputError(
            f"{what}: distance_map must have the shape of probs {tuple(probs.shape)}; "
            f"got {tuple(distance_map.shape)}"
        )
    return distance_map.to(probs.dtype)


def boundary_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    distance_map: torch.Tensor,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Boundary loss (Kervadec et al. 2019, eq. 5): ``mean(probs * phi_G)``.

    Parameters
    ----------
    probs : torch.Tensor, shape (N, C, *spatial)
    target : torch.Tensor, same shape
        Only checked for shape (uniform signature with the other losses): the ground truth enters
        through ``distance_map``.
    distance_map : torch.Tensor, same shape, keyword-only
        Signed distance map ``phi_G`` of the target from :func:`signed_distance_map`
        (negative inside, positive outside, 0 for slices without foreground).
    include_background : bool, keyword-only
        ``False``: channel 0 (background of a K-class output) is left out, the loss is the mean
        over the classes 1..K (Kervadec's code selects the foreground classes the same way).
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns the per-voxel products (Kervadec's code averages them).

    Notes
    -----
    The loss can be negative (probability mass inside the target is rewarded); its minimum is
    reached by a prediction equal to the target region. Alone it has a trivial near-minimum at an
    empty prediction, hence its use together with :func:`generalized_dice_loss`.
    """
    _check_reduction(reduction, "boundary_loss")
    probs, _ = _prepare(probs, target, "boundary_loss", min_ndim=1)
    phi = _check_distance_map(probs, distance_map, "boundary_loss")
    if not include_background:
        probs = _foreground(probs, False, "boundary_loss")
        phi = phi[:, 1:]
    return reduce_loss(probs * phi, reduction)


def gdl_boundary_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    distance_map: torch.Tensor,
    alpha: float = 1.0,
    add_background: bool = True,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""``alpha * GDL + (1 - alpha) * boundary`` (Kervadec et al. 2019, eq. 6), per sample.

    Parameters
    ----------
    probs, target, distance_map : torch.Tensor, shape (N, C, *spatial)
    alpha : float in [0, 1], keyword-only
        Weight of the regional term; get it from :func:`boundary_weight` (1 at the first epoch,
        then 0.01 less per epoch, floor 0.01).
    add_background : bool, keyword-only
        Passed to :func:`generalized_dice_loss`.
    include_background : bool, keyword-only
        ``False``: the boundary term leaves channel 0 (background of a K-class output) out and
        averages over the classes 1..K; the GDL still scores every channel.
    reduction : {'mean', 'sum', 'none'}
        ``'none'`` returns shape (N,): the GDL of each sample plus the mean boundary term of
        that sample; ``'mean'`` therefore equals ``alpha * mean(GDL) + (1 - alpha) * mean(phi p)``.
    """
    _check_reduction(reduction, "gdl_boundary_loss")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"gdl_boundary_loss: alpha must be in [0, 1]; got {alpha}")
    probs, target = _prepare(probs, target, "gdl_boundary_loss")
    phi = _check_distance_map(probs, distance_map, "gdl_boundary_loss")
    regional = generalized_dice_loss(probs, target, add_background=add_background, reduction="none")
    if not include_background:
        probs, phi = _foreground(probs, False, "gdl_boundary_loss"), phi[:, 1:]
    boundary = (probs * phi).flatten(1).mean(dim=1)
    return reduce_loss(alpha * regional + (1.0 - alpha) * boundary, reduction)


def boundary_weight(
    epoch: int, *, start: float = 1.0, step: float = 0.01, floor: float = 0.01
) -> float:
    """Kervadec's rebalancing schedule: ``alpha = max(start - step * epoch, floor)``.

    ``epoch`` is the 0-based index of the epoch being trained: epoch 0 trains with alpha = 1
    (generalized Dice only), epoch 1 with 0.99, ..., and from epoch 99 on alpha stays at 0.01.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise InputError(f"boundary_weight: epoch must be an integer >= 0; got {epoch!r}")
    if not 0.0 <= floor <= start <= 1.0 or step < 0:
        raise InputError(
            f"boundary_weight: need 0 <= floor <= start <= 1 and step >= 0; got start={start}, "
            f"step={step}, floor={floor}"
        )
    # round() removes the float noise of 1 - 0.01 * k so that epoch 99 gives exactly 0.01.
    return max(round(start - step * int(epoch), 12), floor)


# ---------------------------------------------------------------------------- signed distance map
def signed_distance_map(
    mask: np.ndarray,
    *,
    spacing: float | Sequence[float] | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """Signed distance map ``phi_G`` of a (soft) mask, for :func:`boundary_loss`.

    Parameters
    ----------
    mask : numpy.ndarray, shape (*batch, *spatial)
        Binary or soft mask; soft values are taken at 0.5 (``mask >= 0.5`` is inside).
    spacing : float or sequence of float, keyword-only
        Voxel size along the ``ndim`` spatial axes (distances in those units); default 1 voxel.
    ndim : int, keyword-only
        Number of trailing axes forming one image (default: all axes). Leading axes are looped
        over, each image getting its own map, e.g. ``ndim=2`` for a stack of slices (S, H, W) or
        (N, C, H, W).

    Returns
    -------
    numpy.ndarray, float32, shape of ``mask``
        ``-D`` inside, ``+D`` outside, where ``D`` is the Euclidean distance to the boundary
        ``dG`` of the mask; an image without foreground, or entirely foreground, gives 0
        everywhere (Kervadec: "a zero-distance map" for background-only slices).

    Notes
    -----
    Boundary convention (Kervadec et al. 2019, section 2: "the set of points of G which have a
    spatial neighbour in the background"): ``dG`` is the set of foreground voxels with a
    background neighbour (face, edge or corner), and those voxels get 0. Outside the mask the
    value is the distance to the nearest foreground voxel, identical to Kervadec's reference code
    (``edt(~G) * ~G - (edt(G) - 1) * G``); inside, it is the distance to the nearest boundary
    voxel (close to the reference's ``edt(G) - 1``, equal to it near straight boundaries, and
    consistent with anisotropic ``spacing`` where subtracting 1 voxel is not). The whole map
    equals SimpleITK's
    ``SignedMaurerDistanceMap(insideIsPositive=False, squaredDistance=False,
    useImageSpacing=True)``, which the tests use as the reference. The image border is not a
    boundary (a mask touching the edge of the field of view continues beyond it).
    """
    arr = np.asarray(mask)
    if arr.dtype == bool:
        inside = arr
    elif np.issubdtype(arr.dtype, np.number):
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise InputError("signed_distance_map: the mask contains NaN or Inf values")
        inside = arr >= 0.5
    else:
        raise InputError(
            f"signed_distance_map: expected a numeric or boolean mask; got dtype {arr.dtype}"
        )
    if arr.ndim == 0:
        raise InputError(
            "signed_distance_map: expected an array with at least one axis; got a scalar"
        )
    if ndim is None:
        ndim = arr.ndim
    if not 1 <= ndim <= arr.ndim:
        raise InputError(
            f"signed_distance_map: ndim must be in 1..{arr.ndim} for shape {arr.shape}; got {ndim}"
        )
    if spacing is None:
        sampling = (1.0,) * ndim
    else:
        sampling = tuple(
            float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,))
        )
        if not all(math.isfinite(s) and s > 0 for s in sampling):
            raise InputError(
                f"signed_distance_map: spacing must be positive numbers; got {spacing}"
            )
    out = np.zeros(arr.shape, dtype=np.float32)
    structure = ndimage.generate_binary_structure(ndim, ndim)  # face, edge and corner neighbours
    for index in np.ndindex(arr.shape[: arr.ndim - ndim]):
        image = inside[index]
        if not image.any() or image.all():
            continue
        boundary = image & ~ndimage.binary_erosion(image, structure=structure, border_value=1)
        distance = ndimage.distance_transform_edt(~boundary, sampling=sampling)
        out[index] = np.where(image, -distance, distance) + 0.0  # no -0.0 on the boundary
    return out


#: Elements of the (rows, W, W) block compared at once by :func:`signed_distance_map_2d`.
_EDT_CHUNK_ELEMENTS = 1 << 24


def signed_distance_map_2d(
    mask: torch.Tensor, *, spacing: float | Sequence[float] | None = None, method: str = "auto"
) -> torch.Tensor:
    """Signed distance maps of a batch of 2D masks, computed with torch on the mask's device.

    The same map as :func:`signed_distance_map` with ``ndim=2`` (same boundary convention: 0 on
    the foreground voxels that touch the background, ``-D`` inside, ``+D`` outside, 0 for images
    without foreground or entirely foreground; the image border is not a boundary), so the
    boundary loss can be fed right after the augmentation on the GPU, without a copy to the host.

    Parameters
    ----------
    mask : torch.Tensor, shape (*batch, H, W)
        Binary (bool) or soft mask on any device; soft values are taken at 0.5.
    spacing : float or (row, col) sequence of float, keyword-only
        Pixel size (distances in those units); default 1 pixel.
    method : {'auto', 'torch', 'scipy'}, keyword-only
        ``'torch'``: the algorithm below, on the mask's device. ``'scipy'``:
        :func:`signed_distance_map` on the host (for a CPU tensor no copy is made). ``'auto'``
        (default): scipy for CPU tensors (about 8x faster there), torch on every other device.

    Returns
    -------
    torch.Tensor, float32, shape of ``mask``, on ``mask.device``

    Notes
    -----
    Exact Euclidean distances by the separable decomposition of the squared distance transform
    (Saito & Toriwaki 1994): a 1D distance to the nearest boundary pixel down each column (two
    cumulative scans), then ``D^2(i, j) = min_l g(i, l)^2 + ((j - l) s_col)^2`` along each row,
    evaluated for all ``l`` at once (O(H W^2) work per image, in chunks of about
    ``2**24`` elements, about 64 MiB). Float32 arithmetic: relative differences to the float64
    scipy map are below 1e-6.
    """
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"signed_distance_map_2d: expected a torch.Tensor; got {type(mask).__name__}")
    if method not in ("auto", "torch", "scipy"):
        raise InputError(f"signed_distance_map_2d: method must be 'auto', 'torch' or 'scipy'; got {method!r}")
    if mask.ndim < 2:
        raise InputError(f"signed_distance_map_2d: expected (*batch, H, W); got shape {tuple(mask.shape)}")
    if method == "scipy" or (method == "auto" and mask.device.type == "cpu"):
        host = mask.detach().cpu()
        host = host.numpy() if host.dtype == torch.bool else host.float().numpy()
        return torch.from_numpy(signed_distance_map(host, spacing=spacing, ndim=2)).to(mask.device)
    if mask.dtype == torch.bool:
        inside = mask
    elif not mask.is_complex():
        if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
            raise InputError("signed_distance_map_2d: the mask contains NaN or Inf values")
        inside = mask >= 0.5
    else:
        raise InputError(f"signed_distance_map_2d: expected a real or boolean mask; got {mask.dtype}")
    if spacing is None:
        sy = sx = 1.0
    else:
        sy, sx = (float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (2,)))
        if not all(math.isfinite(s) and s > 0 for s in (sy, sx)):
            raise InputError(f"signed_distance_map_2d: spacing must be positive numbers; got {spacing}")
    shape = inside.shape
    height, width = shape[-2:]
    out = torch.zeros(shape, dtype=torch.float32, device=mask.device)
    if inside.numel() == 0:
        return out
    x = inside.reshape(-1, 1, height, width)
    # boundary: foreground pixels with a background neighbour (face, edge or corner); max pooling
    # pads with -inf, so outside the image counts as foreground (the border is not a boundary)
    has_bg = F.max_pool2d((~x).float(), 3, stride=1, padding=1) > 0
    boundary = (x & has_bg)[:, 0]  # (B, H, W)
    dev = mask.device
    rows = torch.arange(height, device=dev, dtype=torch.float32).view(1, height, 1)
    inf = torch.tensor(math.inf, device=dev)
    last = torch.where(boundary, rows, -inf).cummax(dim=1).values  # nearest boundary row at or above
    nxt = torch.where(boundary, rows, inf).flip(1).cummin(dim=1).values.flip(1)  # at or below
    g = torch.minimum(rows - last, nxt - rows) * sy
    g2 = (g * g).reshape(-1, width)  # (B*H, W); inf where a column has no boundary pixel
    cols = torch.arange(width, device=dev, dtype=torch.float32)
    dj2 = ((cols.view(width, 1) - cols.view(1, width)) * sx) ** 2  # (j, l)
    d2 = torch.empty_like(g2)
    step = max(1, _EDT_CHUNK_ELEMENTS // (width * width))
    for start in range(0, g2.shape[0], step):
        block = g2[start : start + step]
        d2[start : start + step] = (block.unsqueeze(1) + dj2.unsqueeze(0)).amin(dim=2)
    dist = torch.sqrt(d2).reshape(x.shape[0], height, width)
    inner = x[:, 0]
    signed = torch.where(inner, -dist, dist) + 0.0  # no -0.0 on the boundary
    # images without foreground, or entirely foreground, have no boundary: 0 everywhere
    flat = inner.reshape(inner.shape[0], -1)
    trivial = ~flat.any(dim=1) | flat.all(dim=1)
    signed[trivial] = 0.0
    return signed.reshape(shape)


# --------------------------------------------------------------------------------- thin modules
class _Loss(nn.Module):
    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction, type(self).__name__)
        self.reduction = reduction


class AdaptiveWingLoss(_Loss):
    """Module form of :func:`adaptive_wing_loss`; ``forward(probs, target)``."""

    def __init__(
        self,
        *,
        alpha: float = 2.1,
        omega: float = 8.0,
        epsilon: float = 1.0,
        theta: float = 0.5,
        weight_map: float = 0.0,
        balance: float | None = None,
        dice_semimetric_weight: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        if not (omega > 0 and epsilon > 0 and theta > 0):
            raise InputError(
                "AdaptiveWingLoss: omega, epsilon and theta must be > 0; "
                f"got {omega}, {epsilon}, {theta}"
            )
        self.alpha, self.omega, self.epsilon, self.theta = alpha, omega, epsilon, theta
        self.weight_map = weight_map
        self.balance = balance
        self.dice_semimetric_weight = dice_semimetric_weight

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return adaptive_wing_loss(
            probs,
            target,
            alpha=self.alpha,
            omega=self.omega,
            epsilon=self.epsilon,
            theta=self.theta,
            weight_map=self.weight_map,
            balance=self.balance,
            dice_semimetric_weight=self.dice_semimetric_weight,
            reduction=self.reduction,
        )


class _DiceFamilyLoss(_Loss):
    """Shared options of the Dice-family modules (the pure function is the class's ``_function``)."""

    _function: Callable[..., torch.Tensor]

    def __init__(
        self,
        *,
        smooth: float = 1.0,
        per_sample: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        if smooth < 0:
            raise InputError(f"{type(self).__name__}: smooth must be >= 0; got {smooth}")
        self.smooth, self.per_sample = smooth, per_sample
        self.include_background = include_background

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self)._function(
            probs, target, smooth=self.smooth, per_sample=self.per_sample,
            include_background=self.include_background, reduction=self.reduction,
        )


class DiceLoss(_DiceFamilyLoss):
    """Module form of :func:`dice_loss`; ``forward(probs, target)``."""

    _function = staticmethod(dice_loss)


class DiceSemimetricLoss(_DiceFamilyLoss):
    """Module form of :func:`dice_semimetric_loss`; ``forward(probs, target)``."""

    _function = staticmethod(dice_semimetric_loss)


class GeneralizedDiceLoss(_Loss):
    """Module form of :func:`generalized_dice_loss`; ``forward(probs, target)``."""

    def __init__(
        self, *, add_background: bool = True, eps: float = 1e-6, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=reduction)
        if eps <= 0:
            raise InputError(f"GeneralizedDiceLoss: eps must be > 0; got {eps}")
        self.add_background, self.eps = add_background, eps

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return generalized_dice_loss(
            probs,
            target,
            add_background=self.add_background,
            eps=self.eps,
            reduction=self.reduction,
        )


class BinaryCrossEntropyLoss(_Loss):
    """Module form of :func:`binary_cross_entropy`; ``forward(probs, target)``."""

    def __init__(self, *, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        if not 0 < eps < 0.5:
            raise InputError(f"BinaryCrossEntropyLoss: eps must be in (0, 0.5); got {eps}")
        self.eps = eps

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy(probs, target, eps=self.eps, reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    """Module form of :func:`cross_entropy`; ``forward(probs, target)``."""

    def __init__(self, *, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        if not 0 < eps < 0.5:
            raise InputError(f"CrossEntropyLoss: eps must be in (0, 0.5); got {eps}")
        self.eps = eps

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(probs, target, eps=self.eps, reduction=self.reduction)


class MSELoss(_Loss):
    """Module form of :func:`mse_loss`; ``forward(probs, target)``."""

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse_loss(probs, target, reduction=self.reduction)


class BoundaryLoss(_Loss):
    """Module form of :func:`boundary_loss`; ``forward(probs, target, distance_map)``."""

    def __init__(self, *, include_background: bool = True, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.include_background = include_background

    def forward(
        self, probs: torch.Tensor, target: torch.Tensor, distance_map: torch.Tensor
    ) -> torch.Tensor:
        return boundary_loss(probs, target, distance_map=distance_map,
                             include_background=self.include_background, reduction=self.reduction)


class GDLBoundaryLoss(_Loss):
    """Generalized Dice + boundary loss with Kervadec's schedule built in.

    ``forward(probs, target, distance_map, *, epoch)`` computes
    :func:`gdl_boundary_loss` with
    ``alpha = boundary_weight(epoch, start=..., step=..., floor=...)``.
    """

    def __init__(
        self,
        *,
        start: float = 1.0,
        step: float = 0.01,
        floor: float = 0.01,
        add_background: bool = True,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        boundary_weight(0, start=start, step=step, floor=floor)  # validates the schedule
        self.start, self.step, self.floor = start, step, floor
        self.add_background = add_background
        self.include_background = include_background

    def forward(
        self, probs: torch.Tensor, target: torch.Tensor, distance_map: torch.Tensor, *, epoch: int
    ) -> torch.Tensor:
        alpha = boundary_weight(epoch, start=self.start, step=self.step, floor=self.floor)
        return gdl_boundary_loss(
            probs,
            target,
            distance_map=distance_map,
            alpha=alpha,
            add_background=self.add_background,
            include_background=self.include_background,
            reduction=self.reduction,
        )


#: loss name -> pure function ``f(probs, target, *, reduction, **params)`` (plain dict, STYLE.md 6).
#: Losses in :data:`DISTANCE_MAP_LOSSES` also need ``distance_map=`` (keyword).
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "adaptive_wing": adaptive_wing_loss,
    "dice": dice_loss,
    "dice_semimetric": dice_semimetric_loss,
    "generalized_dice": generalized_dice_loss,
    "bce": binary_cross_entropy,
    "cross_entropy": cross_entropy,
    "mse": mse_loss,
    "boundary": boundary_loss,
    "gdl_boundary": gdl_boundary_loss,
}

#: loss name -> module class.
LOSS_MODULES: dict[str, type[nn.Module]] = {
    "adaptive_wing": AdaptiveWingLoss,
    "dice": DiceLoss,
    "dice_semimetric": DiceSemimetricLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "bce": BinaryCrossEntropyLoss,
    "cross_entropy": CrossEntropyLoss,
    "mse": MSELoss,
    "boundary": BoundaryLoss,
    "gdl_boundary": GDLBoundaryLoss,
}

#: names of the losses that take a signed distance map.
DISTANCE_MAP_LOSSES = frozenset({"boundary", "gdl_boundary"})
