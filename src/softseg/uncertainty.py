"""Per-voxel uncertainty of a model's prediction: MC dropout and test-time augmentation.

The two baselines the label-fusion paper (Lemay et al. 2022) and its readers compare SoftSeg's
soft output with, both applied to one trained model:

**MC dropout** (Gal & Ghahramani 2016, "Dropout as a Bayesian approximation"): dropout stays on
at prediction (batch normalisation keeps its running statistics), the slice is predicted ``n``
times with independent dropout masks, and the passes are summarised.

**Test-time augmentation** (Wang et al. 2019, "Aleatoric uncertainty estimation with test-time
augmentation for medical image segmentation with convolutional neural networks"): the slice is
predicted under ``n`` transforms drawn from the training augmentation family (random flips and
the random affine of :mod:`softseg.augment`: rotation, translation, isotropic scale), each
prediction is **mapped back** onto the original slice with the inverse transform, and the passes
are summarised. Pass 0 is the untransformed slice, so every voxel is covered at least once; a
voxel that a transform pushed outside the field of view does not count for that pass (weights =
the mapped-back coverage, bilinear at the border).

Summaries (per voxel, over the passes ``p_1 .. p_n`` with weights ``w_i``)::

    mean      = sum_i w_i p_i / sum_i w_i                          (the prediction)
    variance  = sum_i w_i (p_i - mean)^2 / sum_i w_i               (population form, >= 0)
    entropy   = predictive entropy of the mean, in nats            (softseg.metrics.entropy:
                binary entropy for one class, -sum_c p_c ln p_c over the classes of a K-class map)

Batching: the ``n`` passes of a batch of ``B`` slices run as one stack of ``n * B`` slices
through the network (cut into chunks of at most ``max_slices``), so ``n`` passes cost about ``n``
single passes (measured in ``benchmarks/uncertainty_passes.py``). Dropout masks are drawn per
sample, so every copy in the stack gets its own masks.

The forward functions built here have the signature of :func:`softseg.predict.predict_volume`'s
``forward=`` hook (preprocessed slices ``(B, C, H, W)`` float32 -> ``(B, M, H, W)`` float32), where
``M = K + K + 1`` channels: the ``K`` mean probabilities, their ``K`` variances and the entropy
(:func:`split_maps` separates them).

**Model ensembles** (Lakshminarayanan et al. 2017, "Simple and scalable predictive uncertainty
estimation using deep ensembles"; the label-fusion paper's Conv-STAPLE-QUBIQ rater ensemble, Ma
2020): several model files predict the same volume, each in the volume's native geometry
(:func:`softseg.predict.predict_volume`), and the members' probability maps are summarised as the
passes above (unweighted): :func:`summarize_members` (the mean is :func:`mean_prediction`, the one
ensemble mean of the product, which :mod:`softseg.protocol.ensemble` uses too),
:func:`predict_ensemble` for model files (what ``softseg predict -m A -m B`` and the Predict
dock's "ensemble" option run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from softseg.errors import InputError

__all__ = [
    "ENSEMBLE",
    "ENSEMBLE_DESCRIPTION",
    "METHODS",
    "UncertaintyMaps",
    "check_members",
    "check_passes",
    "ensemble_card",
    "ensemble_threshold",
    "has_dropout",
    "mc_dropout_forward",
    "mean_prediction",
    "predict_ensemble",
    "predict_with_uncertainty",
    "summarize_members",
    "split_maps",
    "summarize_passes",
    "tta_forward",
    "tta_params",
    "uncertainty_forward",
]

#: Uncertainty method -> one-line description (plain dict, STYLE.md 6).
METHODS: dict[str, str] = {
    "mc_dropout": "MC dropout (Gal & Ghahramani 2016): dropout kept on, N passes",
    "tta": "test-time augmentation (Wang et al. 2019): N flips/affines, mapped back",
}

#: The method name of a model ensemble in sidecars and layer metadata (not a key of
#: :data:`METHODS`: an ensemble is several model files, not a forward hook of one).
ENSEMBLE = "ensemble"
#: One line about it (CLI help, sidecars, the Predict dock's tooltip).
ENSEMBLE_DESCRIPTION = ("model ensemble (Lakshminarayanan et al. 2017; the label-fusion paper's "
                        "rater ensemble): the mean of several models' probability maps")


@dataclass(frozen=True, eq=False)
class UncertaintyMaps:
    """Summary of ``n`` passes.

    Attributes
    ----------
    mean : ndarray (..., K, H, W) float32 in [0, 1]
        Weighted mean probability per class channel (the prediction).
    variance : ndarray, same shape, float32 >= 0
        Weighted population variance of the passes per class channel (at most 0.25).
    entropy : ndarray (..., H, W) float32 in [0, ln 2] (one class) or [0, ln K] (K classes)
        Predictive entropy of ``mean`` in nats.
    """

    mean: np.ndarray
    variance: np.ndarray
    entropy: np.ndarray

    def stacked(self) -> np.ndarray:
        """``(B, 2K + 1, H, W)`` float32: mean, variance, entropy along the channel axis."""
        return np.concatenate([self.mean, self.variance, self.entropy[:, None]], axis=1).astype(
            np.float32, copy=False)


def check_passes(n: Any, *, what: str = "passes") -> int:
    """An integer number of passes >= 1, or a one-line :class:`InputError` saying so."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"the number of {what} must be a whole number >= 1; got {n!r}")
    return int(n)


def has_dropout(net: Any) -> bool:
    """True when ``net`` holds a dropout layer with a drop probability > 0."""
    from torch import nn

    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in net.modules())


def summarize_passes(passes: Any, weights: Any = None, *, multiclass: bool | None = None) -> UncertaintyMaps:
    """Mean, variance and predictive entropy of stacked passes.

    Parameters
    ----------
    passes : array-like or torch.Tensor, shape (n, B, K, H, W), values in [0, 1]
        The ``n`` passes' probabilities (``K = 1``: one foreground class; ``K >= 2``: class
        probabilities, background included).
    weights : same shape but ``K`` may be 1, optional
        Non-negative weight of each pass at each voxel (TTA coverage); default 1. Every voxel
        needs a positive total weight.
    multiclass : bool, optional
        Whether the ``K`` channels are classes summing to 1 (entropy over classes) or independent
        foreground maps (binary entropy of channel 0). Default: ``K >= 2``.

    Returns
    -------
    UncertaintyMaps
        Arrays of shape (B, K, H, W) (entropy (B, H, W)).

    Raises
    ------
    InputError
        Not 5-D, values outside [0, 1], negative weights or a voxel without weight.
    """
    import torch

    from softseg.checks import as_probability
    from softseg.metrics import entropy

    p = passes.detach().to("cpu", torch.float64) if isinstance(passes, torch.Tensor) else torch.as_tensor(
        np.asarray(passes, dtype=np.float64))
    if p.ndim != 5:
        raise InputError(f"expected passes of shape (n, B, K, H, W); got {tuple(p.shape)}")
    if weights is None:
        mean = p.mean(dim=0)
        variance = ((p - mean) ** 2).mean(dim=0)
    else:
        w = weights.detach().to("cpu", torch.float64) if isinstance(weights, torch.Tensor) else torch.as_tensor(
            np.asarray(weights, dtype=np.float64))
        if w.ndim != 5 or w.shape[:2] != p.shape[:2] or w.shape[3:] != p.shape[3:] or w.shape[2] not in (1, p.shape[2]):
            raise InputError(f"weights of shape {tuple(w.shape)} do not fit passes {tuple(p.shape)}")
        if bool((w < 0).any()):
            raise InputError("pass weights must be >= 0")
        total = w.sum(dim=0)
        if bool((total <= 0).any()):
            raise InputError("every voxel needs a pass with positive weight (TTA: keep the identity pass)")
        mean = (w * p).sum(dim=0) / total
        variance = (w * (p - mean) ** 2).sum(dim=0) / total
    mean_np = as_probability(mean.numpy().astype(np.float32), name="mean of the passes")
    var_np = np.maximum(variance.numpy(), 0.0).astype(np.float32)
    multiclass = p.shape[2] >= 2 if multiclass is None else multiclass
    if multiclass:
        ent = entropy(mean_np, class_axis=1)
    else:
        ent = entropy(mean_np[:, 0])
    return UncertaintyMaps(mean=mean_np, variance=var_np, entropy=np.asarray(ent, dtype=np.float32))


def split_maps(stacked: np.ndarray, *, axis: int = 0) -> UncertaintyMaps:
    """Inverse of :meth:`UncertaintyMaps.stacked` along ``axis`` (2K + 1 channels)."""
    arr = np.asarray(stacked)
    m = arr.shape[axis]
    if m < 3 or m % 2 == 0:
        raise InputError(f"expected 2K + 1 stacked channels on axis {axis}; got {m}")
    k = (m - 1) // 2
    take = lambda a, b: np.take(arr, np.arange(a, b), axis=axis)  # noqa: E731
    return UncertaintyMaps(mean=take(0, k), variance=take(k, 2 * k),
                           entropy=np.take(arr, 2 * k, axis=axis))


def _run(net: Any, stack: Any, max_slices: int) -> Any:
    import torch

    outs = [net(stack[i : i + max_slices]) for i in range(0, stack.shape[0], max_slices)]
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _device_of(net: Any) -> Any:
    import torch

    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def mc_dropout_forward(
    net: Any,
    activate: Callable[..., Any],
    *,
    n: int,
    seed: int = 0,
    max_slices: int | None = None,
    multiclass: bool | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``forward=`` hook that predicts with MC dropout.

    Parameters
    ----------
    net : torch.nn.Module
        The network (returns logits). Put in eval mode with its dropout layers switched to
        training mode while the hook runs (batch normalisation keeps its running statistics);
        the previous modes are restored after every call.
    activate : callable
        Logits (N, K, H, W) -> probabilities (the model card's activation).
    n : int >= 1
        Passes. A network without dropout gives ``n`` identical passes (variance 0).
    seed : int
        Dropout masks come from ``torch.manual_seed(seed + call index)`` inside
        :func:`torch.random.fork_rng`: the same seed gives the same maps, and the caller's random
        state is left untouched.
    max_slices : int, optional
        Most slices per network call (default: the whole stack of ``n * B`` slices).

    Returns
    -------
    callable
        ``forward(x (B, C, H, W) float32) -> (B, 2K + 1, H, W) float32`` (:func:`split_maps`).
    """
    import torch
    from torch import nn

    n = check_passes(n, what="MC dropout passes")
    calls = [0]

    def forward(x: np.ndarray) -> np.ndarray:
        dev = _device_of(net)
        t = torch.as_tensor(np.ascontiguousarray(x), device=dev)
        b = t.shape[0]
        stack = t.repeat(n, 1, 1, 1)  # pass i = rows i*B .. (i+1)*B
        modes = [(m, m.training) for m in net.modules()]
        devices = [dev] if dev.type == "cuda" else []
        try:
            net.eval()
            for m in net.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(int(seed) + calls[0])
                logits = _run(net, stack, max_slices or stack.shape[0])
                probs = activate(logits.float())
        finally:
            for m, mode in modes:
                m.training = mode
        calls[0] += 1
        passes = probs.reshape(n, b, *probs.shape[1:])
        return summarize_passes(passes, multiclass=multiclass).stacked()

    return forward


def _inverse(theta: Any) -> Any:
    """Inverse of (n, 2, 3) affine maps in normalised coordinates."""
    import torch

    full = torch.zeros((theta.shape[0], 3, 3), dtype=theta.dtype, device=theta.device)
    full[:, :2] = theta
    full[:, 2, 2] = 1.0
    return torch.linalg.inv(full)[:, :2]


def tta_forward(
    net: Any,
    activate: Callable[..., Any],
    *,
    n: int,
    params: Any = None,
    flip_axes: tuple[int, ...] = (-1, -2),
    seed: int = 0,
    max_slices: int | None = None,
    multiclass: bool | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``forward=`` hook that predicts with test-time augmentation.

    Parameters
    ----------
    net : torch.nn.Module
        The network, used in eval mode (its mode is restored after every call).
    activate : callable
        Logits -> probabilities.
    n : int >= 1
        Passes; pass 0 is the untransformed slice, passes 1..n-1 each draw, per slice, a flip of
        every axis in ``flip_axes`` with probability 1/2 and one affine from ``params``.
    params : softseg.augment.AffineAugment, optional
        The affine family (default: the training one, :class:`~softseg.augment.AffineAugment`:
        rotation +-20 deg, translation +-3 %, scale +-10 %). The image is padded as in training
        (``image_padding``); predictions are mapped back with the inverse affine (bilinear) and
        undone flips (exact).
    flip_axes : tuple of int
        Slice axes (-1 = columns, -2 = rows) that may be flipped; ``()`` for none.
    seed : int
        Transforms come from a ``torch.Generator`` seeded with ``seed + call index``.
    max_slices : int, optional
        Most slices per network call (default: the whole stack).

    Returns
    -------
    callable
        ``forward(x (B, C, H, W) float32) -> (B, 2K + 1, H, W) float32`` (:func:`split_maps`).

    Raises
    ------
    InputError
        ``n`` < 1, a flip axis other than -1/-2, ``params`` not an AffineAugment.
    """
    import torch

    from softseg.augment import AffineAugment, affine_matrices, warp

    n = check_passes(n, what="test-time augmentation passes")
    params = AffineAugment() if params is None else params
    if not isinstance(params, AffineAugment):
        raise InputError(f"params must be a softseg.augment.AffineAugment; got {type(params).__name__}")
    flip_axes = tuple(int(a) for a in flip_axes)
    if any(a not in (-1, -2) for a in flip_axes) or len(set(flip_axes)) != len(flip_axes):
        raise InputError(f"flip_axes must be distinct values among -1 (columns) and -2 (rows); got {flip_axes}")
    calls = [0]

    def forward(x: np.ndarray) -> np.ndarray:
        dev = _device_of(net)
        t = torch.as_tensor(np.ascontiguousarray(x), device=dev)
        b, _, h, w = t.shape
        gen = torch.Generator(device="cpu").manual_seed(int(seed) + calls[0])
        m = (n - 1) * b  # transformed copies
        flips = (torch.rand((m, len(flip_axes)), generator=gen) < 0.5) if m else None
        theta, _zoom = affine_matrices(max(m, 1), (h, w), params=params, generator=gen, device=dev,
                                       dtype=torch.float32)
        theta = theta[:m]
        was_training = net.training
        try:
            net.eval()
            with torch.inference_mode():
                copies = t.repeat(n - 1, 1, 1, 1) if m else t[:0]
                copies = _flip(copies, flips, flip_axes)
                if m and not params.is_identity:
                    copies = warp(copies, theta, padding_mode=params.image_padding)
                logits = _run(net, torch.cat([t, copies]), max_slices or (n * b))
                probs = activate(logits.float())
                plain, moved = probs[:b], probs[b:]
                weight = torch.ones((n * b, 1, h, w), dtype=probs.dtype, device=dev)
                if m and not params.is_identity:
                    back = _inverse(theta.double()).float()
                    # the coverage (a warped constant 1) rides along as one more channel: one
                    # sampling grid and one grid_sample for both
                    ones = torch.ones((m, 1, h, w), dtype=probs.dtype, device=dev)
                    both = warp(torch.cat([moved, ones], dim=1), back, padding_mode="zeros")
                    moved, cover = both[:, :-1], both[:, -1:]
                    # bilinear coverage: a voxel seen fully counts fully; renormalise the
                    # zero-padded border so a partly covered voxel keeps a probability in [0, 1]
                    moved = torch.where(cover > 1e-6, moved / cover.clamp_min(1e-6), torch.zeros_like(moved))
                    moved = moved.clamp_(0.0, 1.0)
                    weight[b:] = cover.clamp_(0.0, 1.0)
                moved = _flip(moved, flips, flip_axes)
                weight[b:] = _flip(weight[b:], flips, flip_axes)
                passes = torch.cat([plain, moved]).reshape(n, b, *probs.shape[1:])
                weights = weight.reshape(n, b, 1, h, w)
        finally:
            net.train(was_training)
        calls[0] += 1
        return summarize_passes(passes, weights, multiclass=multiclass).stacked()

    return forward


def _flip(x: Any, flips: Any, axes: tuple[int, ...]) -> Any:
    """Flip each sample of ``x`` along the axes its row of ``flips`` selects (own inverse)."""
    import torch

    if flips is None or not axes or x.shape[0] == 0:
        return x
    out = x.clone()
    for j, axis in enumerate(axes):
        sel = flips[:, j].to(x.device)
        if bool(sel.any()):
            out[sel] = torch.flip(out[sel], dims=(axis,))
    return out


# ------------------------------------------------------------------- model files (CLI, widgets)
def tta_params(card: Any) -> Any:
    """The affine family a model was trained with, for :func:`tta_forward`.

    The card's stored :class:`~softseg.config.TrainConfig` ``augment`` section (rotation,
    translation, scale; identity when augmentation was off); the SoftSeg defaults
    (:class:`~softseg.augment.AffineAugment`) for a file without a stored configuration.
    """
    from softseg.augment import AffineAugment

    config = getattr(getattr(card, "training", None), "config", None)
    if config is None:
        return AffineAugment()
    aug = config.augment
    if not aug.enabled:
        return AffineAugment(rotation=0.0, translation=0.0, scale=0.0)
    return AffineAugment(rotation=aug.rotation, translation=aug.translation, scale=aug.scale)


def uncertainty_forward(loaded: Any, method: str, n: Any, *, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The ``forward=`` hook of :func:`softseg.predict.predict_volume` for a model file.

    Parameters
    ----------
    loaded : softseg.modelfile.LoadedModel
        Its network and the card's activation (and, for TTA, the card's affine family,
        :func:`tta_params`, plus flips of both slice axes).
    method : {'mc_dropout', 'tta'}
    n : int >= 1
        Passes.
    seed : int
        Seeds the dropout masks / transforms (the same seed gives the same maps).

    Returns
    -------
    callable
        ``forward(x (B, C, H, W)) -> (B, 2M + 1, H, W)`` (M = the network's output channels).
        Each network call takes at most ``B`` slices (the batch size predict_volume chose for
        one pass), so memory stays that of one pass and ``n`` passes cost about ``n`` passes.

    Raises
    ------
    InputError
        Unknown method; ``n`` not a whole number >= 1; MC dropout on a network without
        dropout layers (every pass would be the same).
    """
    if method not in METHODS:
        raise InputError(f"unknown uncertainty method {method!r}; choose one of: {', '.join(METHODS)}")
    what = "MC dropout passes" if method == "mc_dropout" else "test-time augmentation passes"
    n = check_passes(n, what=what)
    net = loaded.model
    if method == "mc_dropout" and not has_dropout(net):
        where = f" ({loaded.path})" if getattr(loaded, "path", None) else ""
        raise InputError(
            f"the model{where} has no dropout layers (dropout 0), so MC dropout would repeat one "
            "pass; use test-time augmentation instead, or a model trained with dropout > 0"
        )
    multiclass = len(loaded.card.classes) > 1
    activate = loaded.activation
    hook: list[Callable[[np.ndarray], np.ndarray]] = []

    def forward(x: np.ndarray) -> np.ndarray:
        if not hook:  # the first batch is predict_volume's batch size: one pass's memory
            cap = max(1, int(x.shape[0]))
            if method == "mc_dropout":
                hook.append(mc_dropout_forward(net, activate, n=n, seed=seed, max_slices=cap,
                                               multiclass=multiclass))
            else:
                hook.append(tta_forward(net, activate, n=n, params=tta_params(loaded.card), seed=seed,
                                        max_slices=cap, multiclass=multiclass))
        return hook[0](x)

    return forward


def predict_with_uncertainty(
    model: Any,
    volume: Any,
    *,
    method: str,
    n: int,
    seed: int = 0,
    device: Any = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
) -> UncertaintyMaps:
    """Predict a volume with MC dropout or test-time augmentation, in its native geometry.

    :func:`softseg.predict.predict_volume` with the :func:`uncertainty_forward` hook: the
    per-slice mean, variance and entropy are resampled (linear) and reoriented exactly as a
    plain prediction is.

    Parameters
    ----------
    model : LoadedModel or path-like
    volume : Volume, sequence of Volume (one per channel)
    method : {'mc_dropout', 'tta'}
    n : int >= 1
        Passes.
    seed, device, batch_size, progress, cancel
        As :func:`uncertainty_forward` / :func:`softseg.predict.predict_volume`.

    Returns
    -------
    UncertaintyMaps
        Single class: ``mean``, ``variance`` and ``entropy`` of shape (X, Y, Z), float32.
        K classes: ``mean`` and ``variance`` (K+1, X, Y, Z), background first (the mean's
        classes sum to 1 within 1e-5), ``entropy`` (X, Y, Z). The mean is in [0, 1] (the
        prediction), variance in [0, 0.25], entropy in nats ([0, ln 2] for one class,
        [0, ln(K+1)] for K classes).

    Raises
    ------
    InputError
        As :func:`uncertainty_forward` and :func:`~softseg.predict.predict_volume`; a K-class
        network without a background channel.
    """
    from softseg.modelfile import LoadedModel, load_model
    from softseg.predict import predict_volume

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    m = int(loaded.card.architecture.config.out_channels)
    k = len(loaded.card.classes)
    if k > 1 and m != k + 1:
        raise InputError(
            f"uncertainty needs the background channel of a {k}-class network; this one has {m} outputs"
        )
    forward = uncertainty_forward(loaded, method, n, seed=seed)
    import torch

    from softseg.device import resolve_device

    dev = resolve_device("auto") if device is None else (
        resolve_device(device) if isinstance(device, str) else torch.device(device))
    loaded.model.to(dev)  # the hooks run the network where its parameters are
    maps = predict_volume(loaded, volume, device=device, batch_size=batch_size, progress=progress,
                          cancel=cancel, forward=forward, maps=2 * m + 1)
    out = split_maps(maps, axis=0)
    mean = np.clip(out.mean, 0.0, 1.0)
    variance = np.maximum(out.variance, 0.0)
    entropy = np.maximum(out.entropy, 0.0)
    if k == 1:
        mean, variance = mean[0], variance[0]
    else:
        mean = mean / mean.sum(axis=0, dtype=np.float64).clip(min=1e-12).astype(np.float32)
    return UncertaintyMaps(mean=mean.astype(np.float32, copy=False),
                           variance=variance.astype(np.float32, copy=False),
                           entropy=entropy.astype(np.float32, copy=False))


# ------------------------------------------------------------------------------ model ensembles
#: Voxels x members x classes summarised per step by :func:`summarize_members` (bounds the float64
#: temporaries to a few tens of MB whatever the volume).
_MEMBER_CHUNK = 1 << 21


def summarize_members(predictions: Any, *, multiclass: bool | None = None) -> UncertaintyMaps:
    """Mean, variance and predictive entropy over the members of an ensemble.

    The members' maps are the passes of :func:`summarize_passes` (unweighted; population
    variance), summarised block by block so the temporaries stay small.

    Parameters
    ----------
    predictions : sequence of ndarray, one per member, equal shapes, values in [0, 1]
        Single-class probability maps of any shape (e.g. ``(X, Y, Z)``), or with ``multiclass``
        class maps ``(K+1, ...)``, background first, summing to 1 over axis 0.
    multiclass : bool, optional
        Whether axis 0 holds classes (entropy over classes, variance per class). Default: maps
        of 4 or more dimensions.

    Returns
    -------
    UncertaintyMaps
        ``mean`` and ``variance`` of the members' shape, float32 (the mean in [0, 1], K classes
        still summing to 1 within float32 rounding; the variance in [0, 0.25]); ``entropy`` the
        spatial shape, float32 nats ([0, ln 2] for one class, [0, ln(K+1)] for K classes).

    Raises
    ------
    InputError
        No member; shapes that differ; a mean outside [0, 1] (members that are not
        probabilities).
    """
    preds = [np.asarray(p) for p in predictions]
    if not preds:
        raise InputError("an ensemble needs at least one member's prediction")
    shapes = {p.shape for p in preds}
    if len(shapes) > 1:
        raise InputError(f"the members' predictions have different shapes: "
                         f"{', '.join(str(s) for s in sorted(shapes))}")
    shape = preds[0].shape
    multiclass = len(shape) >= 4 if multiclass is None else bool(multiclass)
    if multiclass and len(shape) < 2:
        raise InputError(f"class maps need a class axis and a spatial shape; got shape {shape}")
    c = shape[0] if multiclass else 1
    spatial = shape[1:] if multiclass else shape
    voxels = int(np.prod(spatial, dtype=np.int64))
    flat = [p.reshape(c, voxels) for p in preds]
    mean = np.empty((c, voxels), dtype=np.float32)
    variance = np.empty((c, voxels), dtype=np.float32)
    ent = np.empty(voxels, dtype=np.float32)
    step = max(1, _MEMBER_CHUNK // (len(preds) * c))
    for a in range(0, voxels, step):
        b = min(voxels, a + step)
        # passes (n, B, K, H, W) = (members, voxels of the block, classes, 1, 1)
        block = np.stack([f[:, a:b] for f in flat]).transpose(0, 2, 1)[:, :, :, None, None]
        maps = summarize_passes(block, multiclass=multiclass)
        mean[:, a:b] = maps.mean[:, :, 0, 0].T
        variance[:, a:b] = maps.variance[:, :, 0, 0].T
        ent[a:b] = maps.entropy[:, 0, 0]
    out_shape = shape if multiclass else spatial
    return UncertaintyMaps(mean=mean.reshape(out_shape), variance=variance.reshape(out_shape),
                           entropy=ent.reshape(spatial))


def mean_prediction(predictions: Any) -> np.ndarray:
    """An ensemble's prediction: the voxel-wise mean of its members' probability maps.

    The one ensemble mean of the product (the protocol's ``NAME:ensemble`` units,
    :func:`softseg.protocol.unit_prediction`, and ``softseg predict -m A -m B``): the ``mean`` of
    :func:`summarize_members`.

    Parameters
    ----------
    predictions : sequence of ndarray, one per member, equal shapes
        ``(S, H, W)`` probabilities in [0, 1], or ``(K+1, S, H, W)`` class probabilities
        (background first, summing to 1 over the class axis).

    Returns
    -------
    ndarray, float32, the members' shape
        The mean (accumulated in float64); K classes still sum to 1 per voxel (within float32
        rounding).

    Raises
    ------
    InputError
        No prediction, or shapes that differ.
    """
    return summarize_members(predictions).mean


def _member_name(path: Any, index: int) -> str:
    return str(path) if path is not None else f"member {index + 1}"


def check_members(cards: Any, paths: Any = None) -> None:
    """Refuse members that cannot be averaged, in one line naming two files and what differs.

    Members must predict the same maps of the same inputs: the same class names in the same
    order (and file keys), the same input channels in the same order, and the same output
    channels (a K-class network with or without its background channel). Their preprocessing
    (training spacing, crop) may differ: every member predicts in the input's native geometry
    (:func:`softseg.predict.predict_volume`), so the maps are voxel-aligned; their candidates
    (activations, losses) may differ too (the ensemble averages probabilities).

    Parameters
    ----------
    cards : sequence of softseg.card.ModelCard
    paths : sequence of path-like, optional
        The members' files, for the message (default ``member 1``, ``member 2``, ...).

    Raises
    ------
    InputError
        Fewer than two members; two members that differ as above.
    """
    cards = list(cards)
    paths = list(paths) if paths is not None else [None] * len(cards)
    if len(cards) < 2:
        raise InputError(f"an ensemble needs at least 2 model files; got {len(cards)}")
    first = cards[0]
    for i, card in enumerate(cards[1:], start=1):
        a, b = _member_name(paths[0], 0), _member_name(paths[i], i)
        for what, x, y in (
            ("classes", first.classes, card.classes),
            ("input channels", first.channels, card.channels),
            ("class file keys", first.class_keys, card.class_keys),
            ("network outputs", first.architecture.config.out_channels,
             card.architecture.config.out_channels),
        ):
            if x != y:
                show = (lambda v: ", ".join(v) if isinstance(v, tuple) else str(v))  # noqa: E731
                raise InputError(
                    f"{a} and {b} cannot be averaged: their {what} differ ({show(x) or 'none'} vs "
                    f"{show(y) or 'none'}); ensemble models trained on the same classes and channels")


def ensemble_threshold(cards: Any) -> tuple[float, ...]:
    """The binarisation threshold(s) of an ensemble: the mean of its members' optimal thresholds.

    Per class (``card.thresholds``); a choice, since no data are at hand when predicting (the
    protocol's ``NAME:ensemble`` units search the averaged map's own optimum on their training
    subjects instead, :func:`softseg.protocol.ensemble.ensemble_thresholds`). Give an explicit
    threshold (``softseg predict --threshold``) to override it.

    Returns
    -------
    tuple of float in [0, 1], one per class
    """
    cards = list(cards)
    if not cards:
        raise InputError("an ensemble needs at least one member")
    table = np.asarray([[float(t) for t in c.thresholds] for c in cards], dtype=np.float64)
    return tuple(float(t) for t in table.mean(axis=0))


def ensemble_card(cards: Any) -> Any:
    """The model card that describes an ensemble's prediction (sidecars, prediction layers).

    The first member's card with :func:`ensemble_threshold` as its thresholds and the candidate
    renamed: ``<name>:ensemble`` when every member is the same candidate (the protocol's spec for
    a rater ensemble, e.g. ``conventional:ensemble``; its own colour and label in Compare), else
    ``ensemble``; title ``ensemble of N <title> models``. Nothing else is changed (classes,
    channels, class keys are the members' common ones, :func:`check_members`).

    Returns
    -------
    softseg.card.ModelCard
    """
    cards = list(cards)
    first = cards[0]
    names = sorted({c.candidate.name for c in cards})
    if len(names) == 1:
        name = f"{first.candidate.name}:{ENSEMBLE}"
        title = f"ensemble of {len(cards)} {first.candidate.title or first.candidate.name} models"
    else:
        name, title = ENSEMBLE, f"ensemble of {len(cards)} models ({', '.join(names)})"
    candidate = first.candidate.model_copy(update={"name": name, "title": title,
                                                   "description": ENSEMBLE_DESCRIPTION})
    return first.model_copy(update={"thresholds": ensemble_threshold(cards), "candidate": candidate})


def predict_ensemble(
    models: Any,
    volume: Any,
    *,
    device: Any = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
) -> UncertaintyMaps:
    """Predict a volume with every model of an ensemble and summarise the members.

    Each member is :func:`softseg.predict.predict_volume` (native geometry, its own
    preprocessing); the maps are :func:`summarize_members`: the mean is the prediction,
    ``variance`` the between-member (population) variance, ``entropy`` the predictive entropy of
    the mean in nats. The members' maps are held until all are predicted (memory about
    ``members x`` one prediction).

    Parameters
    ----------
    models : sequence of LoadedModel or path-like, at least 2
        Checked with :func:`check_members` before any prediction.
    volume : Volume, sequence of Volume (one per channel)
    device, batch_size, cancel
        As :func:`softseg.predict.predict_volume`.
    progress : callable(done, total), optional
        Slices done over all members (``total`` = members x slices).

    Returns
    -------
    UncertaintyMaps
        As :func:`predict_with_uncertainty`: single class ``mean``, ``variance``, ``entropy``
        (X, Y, Z); K classes ``mean`` and ``variance`` (K+1, X, Y, Z), background first,
        ``entropy`` (X, Y, Z); float32.

    Raises
    ------
    InputError
        As :func:`check_members` and :func:`~softseg.predict.predict_volume`.
    PredictionCancelled
    """
    from softseg.modelfile import LoadedModel, load_model
    from softseg.predict import predict_volume

    members = list(models)
    if len(members) < 2:
        raise InputError(f"an ensemble needs at least 2 model files; got {len(members)}")
    cards = [m.card if isinstance(m, LoadedModel) else None for m in members]
    if any(c is None for c in cards):
        from softseg.modelfile import read_card

        cards = [c if c is not None else read_card(m) for c, m in zip(cards, members)]
    check_members(cards, [getattr(m, "path", m) for m in members])
    preds = []
    for i, member in enumerate(members):
        loaded = member if isinstance(member, LoadedModel) else load_model(member)

        def each(done: int, total: int, _i: int = i) -> None:
            if progress is not None:
                progress(_i * total + done, len(members) * total)

        preds.append(predict_volume(loaded, volume, device=device, batch_size=batch_size,
                                    progress=each, cancel=cancel))
    return summarize_members(preds, multiclass=len(cards[0].classes) > 1)
