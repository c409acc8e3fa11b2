"""Final activations: network logits -> probabilities in [0, 1].

Networks in :mod:`softseg.models` return logits; the candidate (:mod:`softseg.candidates`) names
the activation that turns them into the probabilities the losses take (DESIGN.md decision 5).

Normalized ReLU (Gros et al. 2021, "SoftSeg", eq. 1)::

    NormReLU(x) = relu(x) / max(relu(x))   if max(relu(x)) != 0
                  0                        otherwise

**Difference from ivadomed.** The papers' toolbox takes ``max`` over the *whole batch*, so the
output for one slice depends on which other slices happen to share its batch (and on the batch
size used at inference). Here the maximum is taken **per sample** (over every axis from ``dim`` on,
i.e. channels and space for the default ``dim=1``), so a slice's prediction depends on that slice
only. Pass ``dim=0`` to reproduce the batch-global behaviour.

Multi-class normalized ReLU (Lemay et al. 2022, label-fusion paper, section 2.3): the normalized
ReLU output is divided by its sum over the classes, background included, so that the classes are
mutually exclusive and sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from softseg.errors import InputError

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "multiclass_normalized_relu",
    "normalized_relu",
    "sigmoid",
    "softmax",
]

#: Default guard of the normalized ReLU denominators (see :func:`normalized_relu`).
DEFAULT_EPS = 1e-6


def _check_dim(x: torch.Tensor, dim: int, what: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what}: expected a torch.Tensor of logits; got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{what}: expected floating-point logits; got dtype {x.dtype}")
    if not -x.ndim <= dim < x.ndim:
        raise InputError(
            f"{what}: dim={dim} is out of range for a tensor of shape {tuple(x.shape)}; "
            f"use 0 <= dim < {x.ndim} (dim=1 is the channel axis of (N, C, H, W))"
        )
    return dim % x.ndim


def normalized_relu(x: torch.Tensor, *, dim: int = 1, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Normalized ReLU with a per-sample maximum.

    Parameters
    ----------
    x : torch.Tensor, float, shape (N, C, *spatial) for the default ``dim=1``
        Logits. Axes before ``dim`` index independent samples; the maximum is taken over
        ``x.shape[dim:]`` (channels and space) separately for each sample.
    dim : int, keyword-only
        First axis of a sample. ``dim=1`` (default): one maximum per sample of the batch.
        ``dim=0``: one maximum for the whole tensor (ivadomed's batch-global behaviour).
    eps : float, keyword-only
        Denominator floor: the output is ``relu(x) / max(m, eps)`` where ``m`` is the sample
        maximum. A sample whose maximum is at least ``eps`` gets maximum exactly 1; a sample whose
        maximum is 0 gets 0 everywhere; in between (a network predicting nothing) the output stays
        below ``m / eps < 1``. The floor keeps the gradient bounded (no NaN, no overflow).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``, values in [0, 1].
    """
    dim = _check_dim(x, dim, "normalized_relu")
    if eps <= 0:
        raise InputError(f"normalized_relu: eps must be > 0; got {eps}")
    r = F.relu(x)
    axes = tuple(range(dim, x.ndim))
    peak = torch.amax(r, dim=axes, keepdim=True) if axes else r
    return r / peak.clamp_min(eps)


def multiclass_normalized_relu(
    x: torch.Tensor, *, dim: int = 1, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Multi-class normalized ReLU: normalized ReLU divided by its sum over the classes.

    Parameters
    ----------
    x : torch.Tensor, float, shape (N, C, *spatial)
        Logits of ``C`` classes *including background* (channel axis ``dim``).
    dim : int, keyword-only
        The class axis; axes before it index samples (as in :func:`normalized_relu`).
    eps : float, keyword-only
        Floor of both denominators (the per-sample maximum and the per-voxel class sum).

    Returns
    -------
    torch.Tensor
        Same shape as ``x``; at every voxel the classes are in [0, 1] and sum to 1, except voxels
        where every class logit is <= 0, which get 0 for every class (as ivadomed does; there is
        no evidence for any class there).
    """
    dim = _check_dim(x, dim, "multiclass_normalized_relu")
    p = normalized_relu(x, dim=dim, eps=eps)
    total = p.sum(dim=dim, keepdim=True)
    # total is either 0 (all classes 0) or >= the largest class value; the floor only guards 0/0.
    return p / total.clamp_min(eps)


def sigmoid(x: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """Logistic sigmoid, element-wise (``dim`` is accepted for a uniform signature and unused)."""
    _check_dim(x, dim, "sigmoid")
    return torch.sigmoid(x)


def softmax(x: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """Softmax over the class axis ``dim`` (default 1 of (N, C, *spatial))."""
    dim = _check_dim(x, dim, "softmax")
    return torch.softmax(x, dim=dim)


#: activation name -> function(logits, *, dim=1) -> probabilities (a plain dict, STYLE.md 6).
ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": sigmoid,
    "normalized_relu": normalized_relu,
    "multiclass_normalized_relu": multiclass_normalized_relu,
    "softmax": softmax,
}


def get_activation(name: str) -> Callable[..., torch.Tensor]:
    """Look up an activation by name.

    Raises
    ------
    InputError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown activation {name!r}; choose one of: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
