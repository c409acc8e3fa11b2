"""Final activations: network logits -> probabilities in [0, 1].

Networks in :mod:`softseg.models` return logits; the candidate (:mod:`softseg.candidates`) names
the activation that turns them into the probabilities the losses take (DESIGN.md decision 5).

Normalized ReLU (Gros et al. 2021, "SoftSeg", eq. 1)::

    NormReLU(x) = relu(x) / max(relu(x))   if max(relu(x)) != 0
                  0                        otherwise

Multi-class normalized ReLU (Lemay et al. 2022, label-fusion paper, section 2.3): the normalized
ReLU output is divided by its sum over the classes, background included, so that the classes are
mutually exclusive and sum to 1.

Normalisation options (issue 15)
--------------------------------
*What the maximum is taken over* decides how much an output depends on its neighbours. The
paper's formula divides by the maximum of a *window*; every option of :data:`NORMALIZATIONS` is
one answer (``r = relu(x)``, ``m_W`` = the largest ``r`` in the window ``W``):

==============  ==============================================  ===================================
option          training                                        prediction
==============  ==============================================  ===================================
``sample_max``  ``r / m_slice`` (every model before issue 15)   ``r / m_slice`` (whole slice)
``batch_max``   ``r / m_batch`` (ivadomed)                      ``r / m_volume`` (the volume as one
                                                                batch; ivadomed's output depends on
                                                                its inference batch size)
``volume_max``  ``r / m_slice``                                 ``r / m_volume``
``floor``       ``r / max(m_slice, tau)``                       ``r / max(m_slice, tau)``
``fixed``       ``min(r / tau, 1)``                             ``min(r / tau, 1)``
``running_max`` ``min(r / c, 1)``, ``c`` = running mean of the  ``min(r / c, 1)``, ``c`` stored in
                batch maximum (:class:`RunningMax`)             the model card
==============  ==============================================  ===================================

Only ``fixed`` and ``running_max`` satisfy "an output's confidence does not depend on how much
else is in the normalisation window": with a window maximum, one bright spot anywhere in a slice
lowers every other voxel, a slice without the structure is stretched until its largest logit
reads 1.0 (the manufactured certainty of issue 15), and a training crop and the whole slice seen
at prediction divide by different numbers. ``tau`` is a pure scale (the network's last
convolution absorbs any constant factor), so ``fixed`` with ``tau = 1`` loses nothing.
:func:`inference_window` tells prediction which window an option needs.

Multi-class forms use the same window (classes and space of a sample) followed by the per-voxel
division by the class sum, which needs no window.

Training through dead units (``negative_slope``)
------------------------------------------------
The ReLU passes no gradient where a logit is <= 0. A voxel of a rare structure whose logit has
gone below 0 (and the regression loss pulls every logit of a tiny foreground there within the
first epochs: the background outnumbers it by 10^3-10^4) is then 0 for the rest of training,
whatever its target: the cause of SoftSeg learning no small lesion (issue 15). With
``negative_slope = a > 0`` the *backward* pass takes the slope ``a`` below 0, the gradient of a
leaky ReLU (Maas et al. 2013), while the forward value stays exactly ``relu(x)`` (a
straight-through estimator in the sense of Bengio et al. 2013): the trained network, its
probabilities and the model file are those of the normalized ReLU, only the training signal
reaches units that are off. Prediction never uses it.

Starting a K-class network (:data:`MULTICLASS_RELU_INITIAL_BIAS`)
-----------------------------------------------------------------
The multi-class normalized ReLU of Lemay et al. 2022 (label-fusion paper, section 2.3) is, at a
voxel, ``p_c = r_c / sum_k r_k`` with ``r = relu(x)`` (any window maximum cancels in the class
sum). Its gradient vanishes wherever *at most one* class logit is positive: with none, every
``r_c`` is 0 and so is every derivative; with exactly one, ``p`` is one-hot whatever that logit
is. A class whose logit is <= 0 at every voxel therefore never receives a gradient again.

That is how a new network starts with PyTorch's default initialisation: the U-Net's last
features are rectified (>= 0) and the output convolution's bias is drawn around 0, so each class
logit is positive at about half the voxels and whole classes can start dead. Measured on random
inputs (U-Net depth 2, 4 output channels, widths 4-32): 32-37 % of the voxels had at most one
positive class, hence no gradient (10 seeds); 5 of 80 class channels (20 seeds) were <= 0
everywhere at width 4, 31 of 80 without batch normalisation; in ``test_a_few_k_class_training_steps_reduce_the_loss`` (seed
0) both foreground classes were dead from the first step and the Dice-type candidates' loss
stayed at 0.9923 for every step. Neither the background channel nor ``eps`` is the cause (the
background was the one live class; ``eps`` only guards 0/0).

The fix changes how a *new* network starts, not what the activation computes: for the
multi-class normalized ReLU the output layer's bias starts at
:data:`MULTICLASS_RELU_INITIAL_BIAS` = 0.5 for every channel (background included), about one
standard deviation of the initial logits with batch normalisation (0.34-0.49). Every class is
then alive nearly everywhere and the first prediction is close to uniform, ``p_c ~ 1/(K+1)``,
the uninformative start a softmax network gets from zero logits (the same idea as the prior
bias of the output layer of Lin et al. 2017, focal loss, section 3.3). Measured with it: at most
1.9 % of the voxels without gradient at the start; 150 Adam steps (lr 1e-3, width 8, 3
classes, 3 seeds): Soft-ReLU-Wing loss 0.44-0.46 against 0.49-0.72 with the default start, every
class learned. A larger bias is slower (1.0: 0.61-0.70), as the logits must travel further before
a wrong class reaches 0. :func:`initial_output_bias` gives the value per activation;
:meth:`softseg.candidates.Candidate.init_network` applies it when the trainer builds a new
network. Weights loaded from a model file, a checkpoint or ``--init`` replace it, so every
existing model predicts exactly as before; single-class activations keep PyTorch's default
start (every single-class training is unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from softseg.errors import InputError
from softseg.normalization import (
    _NEEDS_TAU,
    NORMALIZATIONS,
    check_negative_slope,
    check_normalization,
    inference_window,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_EPS",
    "MULTICLASS_RELU_INITIAL_BIAS",
    "NORMALIZATIONS",
    "RunningMax",
    "check_negative_slope",
    "check_normalization",
    "get_activation",
    "inference_window",
    "initial_output_bias",
    "multiclass_normalized_relu",
    "normalized_relu",
    "sigmoid",
    "softmax",
]

#: Default guard of the normalized ReLU denominators (see :func:`normalized_relu`).
DEFAULT_EPS = 1e-6

#: Bias every output channel of a new network starts with when it is trained with the multi-class
#: normalized ReLU (module docstring, "Starting a K-class network").
MULTICLASS_RELU_INITIAL_BIAS = 0.5

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


def _relu(x: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """``relu(x)`` whose backward pass has slope ``negative_slope`` below 0 (module docstring,
    "Training through dead units"); the forward value is exactly ``relu(x)``."""
    r = F.relu(x)
    if negative_slope and x.requires_grad:
        below = x.clamp_max(0.0)
        r = r + negative_slope * (below - below.detach())  # adds exactly 0; gradient a below 0
    return r


def _window_max(r: torch.Tensor, dim: int) -> torch.Tensor:
    """Largest value over ``r.shape[dim:]`` per sample (keepdim)."""
    axes = tuple(range(dim, r.ndim))
    return torch.amax(r, dim=axes, keepdim=True) if axes else r


def normalized_relu(
    x: torch.Tensor,
    *,
    dim: int = 1,
    eps: float = DEFAULT_EPS,
    normalization: str = "sample_max",
    tau: float | None = None,
    divisor: torch.Tensor | float | None = None,
    negative_slope: float = 0.0,
) -> torch.Tensor:
    """Normalized ReLU with a selectable normalisation (module docstring, :data:`NORMALIZATIONS`).

    Parameters
    ----------
    x : torch.Tensor, float, shape (N, C, *spatial) for the default ``dim=1``
        Logits. Axes before ``dim`` index independent samples; a window maximum is taken over
        ``x.shape[dim:]`` (channels and space) separately for each sample.
    dim : int, keyword-only
        First axis of a sample. ``dim=0`` makes the whole tensor one sample.
    eps : float > 0, keyword-only
        Floor of a window maximum: ``relu(x) / max(m, eps)``. A window whose maximum is 0 gives 0
        everywhere; between 0 and ``eps`` the output stays below ``m / eps < 1``. Keeps the
        gradient bounded (no NaN, no overflow).
    normalization : str, keyword-only
        A :data:`NORMALIZATIONS` key (default ``"sample_max"``). ``"volume_max"`` normalises per
        sample unless ``divisor`` is given; ``"batch_max"`` takes the maximum over the whole
        tensor (any ``dim``).
    tau : float > 0, keyword-only
        The divisor floor (``floor``) or the constant divisor (``fixed``; ``running_max``: the
        running statistic, from :class:`RunningMax` in training or the model card).
    divisor : tensor or float, keyword-only
        A window maximum computed elsewhere (``volume_max`` / ``batch_max`` at prediction: the
        maximum of ``relu`` over the whole volume); replaces the window's own maximum.
    negative_slope : float in [0, 1), keyword-only
        Training only: slope of the ReLU's *backward* pass below 0 (module docstring, "Training
        through dead units"); the values returned do not depend on it. Default 0 (the paper).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``, values in [0, 1].

    Raises
    ------
    InputError
        Not a float tensor, ``dim`` out of range, ``eps <= 0``, an unknown normalisation, a
        missing/invalid ``tau`` (:func:`check_normalization`) or a ``negative_slope`` outside
        [0, 1).
    """
    dim = _check_dim(x, dim, "normalized_relu")
    if not eps > 0:
        raise InputError(f"normalized_relu: eps must be > 0; got {eps}")
    check_normalization(normalization, tau)
    r = _relu(x, check_negative_slope(negative_slope))
    if normalization in ("fixed", "running_max"):
        return (r / tau).clamp_max(1.0)
    if divisor is not None:
        peak = torch.as_tensor(divisor, dtype=r.dtype, device=r.device)
    elif normalization == "batch_max":
        peak = torch.amax(r)
    else:
        peak = _window_max(r, dim)
    floor = tau if normalization == "floor" else eps
    return r / peak.clamp_min(floor)


def multiclass_normalized_relu(
    x: torch.Tensor,
    *,
    dim: int = 1,
    eps: float = DEFAULT_EPS,
    normalization: str = "sample_max",
    tau: float | None = None,
    divisor: torch.Tensor | float | None = None,
    negative_slope: float = 0.0,
) -> torch.Tensor:
    """Multi-class normalized ReLU: normalized ReLU divided by its sum over the classes.

    Parameters
    ----------
    x : torch.Tensor, float, shape (N, C, *spatial)
        Logits of ``C`` classes *including background* (channel axis ``dim``).
    dim : int, keyword-only
        The class axis; axes before it index samples (as in :func:`normalized_relu`).
    eps : float, keyword-only
        Floor of both denominators (the window maximum and the per-voxel class sum).
    normalization, tau, divisor, negative_slope : keyword-only
        As in :func:`normalized_relu` (the window spans classes and space of a sample).

    Returns
    -------
    torch.Tensor
        Same shape as ``x``; at every voxel the classes are in [0, 1] and sum to 1, except voxels
        where every class logit is <= 0, which get 0 for every class (as ivadomed does; there is
        no evidence for any class there).
    """
    dim = _check_dim(x, dim, "multiclass_normalized_relu")
    p = normalized_relu(x, dim=dim, eps=eps, normalization=normalization, tau=tau, divisor=divisor,
                        negative_slope=negative_slope)
    total = p.sum(dim=dim, keepdim=True)
    # total is either 0 (all classes 0) or >= the largest class value; the floor only guards 0/0.
    return p / total.clamp_min(eps)


class RunningMax:
    """Running mean of the batch maximum of ``relu(logits)`` (``running_max`` normalisation).

    ``c <- (1 - momentum) c + momentum m_batch`` after each training batch (the first batch sets
    ``c = m_batch``), like batch normalisation's running statistics; the final ``c`` is stored in
    the model card and prediction divides by it. Training divides by the value *before* the
    update, so the batch's own maximum never enters its own normalisation.

    Parameters
    ----------
    momentum : float in (0, 1]
    floor : float > 0
        Smallest value ``c`` may take (a network predicting nothing keeps a finite divisor).
    """

    def __init__(self, *, momentum: float = 0.1, floor: float = 1e-3, value: float | None = None) -> None:
        if not (isinstance(momentum, (int, float)) and 0 < momentum <= 1):
            raise InputError(f"RunningMax: momentum must lie in (0, 1]; got {momentum!r}")
        if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0):
            raise InputError(f"RunningMax: floor must be a finite number > 0; got {floor!r}")
        self.momentum = float(momentum)
        self.floor = float(floor)
        self.value = None if value is None else max(float(value), self.floor)

    def update(self, logits: torch.Tensor) -> float:
        """Divisor for this batch (the running value before the update), then update it."""
        m = float(F.relu(logits.detach()).amax())
        if self.value is None:
            self.value = max(m, self.floor)
        current = self.value
        self.value = max((1 - self.momentum) * self.value + self.momentum * m, self.floor)
        return current

    def state_dict(self) -> dict[str, float | None]:
        return {"momentum": self.momentum, "floor": self.floor, "value": self.value}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.momentum = float(state["momentum"])  # type: ignore[arg-type]
        self.floor = float(state["floor"])  # type: ignore[arg-type]
        self.value = None if state["value"] is None else float(state["value"])  # type: ignore[arg-type]


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


def initial_output_bias(name: str) -> float | None:
    """Bias of every output channel of a *new* network trained with activation *name*.

    :data:`MULTICLASS_RELU_INITIAL_BIAS` for ``"multiclass_normalized_relu"`` (see the module
    docstring: without it whole classes can start with no gradient); ``None`` for every other
    activation (keep PyTorch's default initialisation).

    Raises
    ------
    InputError
        If ``name`` is unknown (:func:`get_activation`).
    """
    get_activation(name)
    return MULTICLASS_RELU_INITIAL_BIAS if name == "multiclass_normalized_relu" else None


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
