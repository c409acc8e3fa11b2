"""Training candidates: the papers' ablation table as named, frozen configurations.

A :class:`Candidate` fixes everything that differs between the SoftSeg paper's candidates
(Table 2 of Gros et al. 2021) and the two loss baselines added here:

* ground-truth mode: *soft* (the fractions produced by resampling and augmentation are kept) or
  *hard* (binarised at 0.5 **after** augmentation, by :meth:`Candidate.prepare_target`);
* the final activation, by name (:data:`softseg.activations.ACTIVATIONS`);
* the loss and its parameters, by name (:data:`softseg.losses.LOSSES`).

**K classes.** :meth:`Candidate.for_classes` gives the same recipe for K foreground classes
(DESIGN decision 11, label-fusion paper): the network has K+1 output channels, background first;
the targets are class maps; each part of the recipe becomes its multi-class form
(:data:`MULTICLASS_ACTIVATIONS`, :data:`MULTICLASS_LOSSES`)::

    ground truth   hard: one-hot of the most probable class after augmentation (was: >= 0.5)
                   soft: the class fractions (background = 1 - the classes)
    sigmoid        -> softmax over the K+1 channels
    normalized_relu-> multiclass_normalized_relu (divided by the sum over classes incl. background)
    dice           -> soft Dice of each foreground class, averaged (background excluded)
    dice_semimetric-> Dice semimetric loss of each foreground class, averaged (same)
    bce            -> cross_entropy with soft targets (-sum_c g_c ln p_c)
    adaptive_wing, mse -> the same element-wise loss on every channel (background included);
                   adaptive_wing's DML term (softseg) scores the foreground classes only
    generalized_dice   -> Sudre's GDL over the K+1 channels (add_background=False)
    boundary, gdl_boundary -> boundary term of each foreground class (include_background=False),
                   GDL over the K+1 channels

With K = 1 every candidate is exactly the single-class recipe (``for_classes(1)`` returns it).

The trainer is then candidate-agnostic::

    candidate = get_candidate(name).for_classes(K)
    network = candidate.init_network(UNet2D(channels, candidate.out_channels, ...))
    target = candidate.prepare_target(augmented_labels)
    probs = candidate.activate(model(images))
    loss = candidate.compute_loss(probs, target, epoch=epoch, spacing=pixel_spacing)

A boundary-loss candidate (``candidate.needs_distance_map``) computes the signed distance map of
the target itself, on the target's device (:func:`softseg.losses.signed_distance_map_2d`), unless
one is passed as ``distance_map``.

**SoftSeg on small structures (issue 15).** The paper's recipe (``softseg-paper``) learned no
lesion at all on MNI anatomy with 2-8 mm MS-like lesions (``benchmarks/softseg_claims.py
--study mni-lesion``), and put p = 1 on a spot in most lesion-free slices. Three causes, each
measured on one split (80 epochs, 2 test subjects, 145 lesion-free test slices):

* the plain Adaptive Wing *mean* leaves a structure of ~10 voxels in ~3x10^4 about 10^-4 of the
  loss; the network first pulls every output to 0 (background gradient), and the features that
  tell a lesion from a sulcus never form: mean p on lesion voxels fell from 0.05 to 0.0001 in 8
  epochs, below the background's 0.001. Adaptive Wing's own weighted loss map (``weight_map``,
  x11 on the dilated structure) did not change that. A fixed share ``q`` of the loss for the
  structure (``balance``) did: Dice / LTPR 0.31 / 0.30 at q = 0.05 (conventional 0.35 / 0.31),
  0.25 / 0.54 at 0.1, 0.16 / 0.68 at 0.2, 0.04 / 0.68 at 0.5 (over-segmentation grows with q:
  the optimum of a weighted regression moves towards the structure); q = 0.05 is
  ``softseg-wing``'s, 0.1 with the DML term ``softseg``'s;
* the ReLU's zero gradient below 0: a unit that went negative never comes back
  (``negative_slope`` 0.1 keeps a training signal there; the outputs are the paper's);
* the per-slice maximum stretches a lesion-free slice until its largest logit reads 1.0
  (``softseg-paper``: 145 of 145 lesion-free slices with p >= 0.5 once it learned anything).
  Dividing by the constant 1 (``fixed``) removes it: 3 of 145 (conventional 13).

``softseg`` combines the three and adds the Dice semimetric loss (weight 1) to the Adaptive
Wing, with the structure's share at 0.1: the DML term, normalised by the structure's size, drives
a small lesion and through its denominator penalises false positives, which the balance alone
does not (``softseg-wing``, the balance alone at 0.05 and the previous default ``softseg``:
p >= 0.5 in 67 % of the lesion study's lesion-free slices against 15 % with the DML term and
21 % for the conventional model). Without the balance the same compound learned no lesion (one
split each). Heavier DML weights did not do better: on a development dataset (the study's
generator with seed 1, two splits) Dice / LTPR / lesion-free slices with p >= 0.5 were
0.34 / 0.42 / 41 % at weight 1, 0.44 / 0.45 / 8 % at 2, 0.49 / 0.55 / 7 % at 4, 0.53 / 0.52 / 4 %
at 8 and 0.48 / 0.44 / 4 % at 16 (conventional 0.52 / 0.43 / 14 %), but weight 8 in the 6-repeat
study gave Dice 46.5 (weight 1: 49.4; conventional 53.3) with two failed repeats (a haze of 75x
the lesion volume; a model that found a quarter of the lesions)
(``benchmarks/results/*dml-weight8*``), and on the phantom every weight above 1 cost
calibration and softness (``cpu-issue15``: uncertainty AUROC 89.8 % vs 93.3 %, soft volume 24 %
vs 15 % over, 38 % vs 46 % of the structure's voxels soft, all p = 0.031).

For K classes (:meth:`Candidate.for_classes`) only the balance and the DML term
apply, per class: the class sum of the multi-class normalized ReLU already has no window, and
both the constant divisor's clamp and the leaky gradient (divided by ``eps`` where every class
is <= 0) kept the three-tissue training test below chance. ``softseg-paper`` keeps the
published formula, and ``softseg-floor`` / ``softseg-batch-max`` / ``softseg-volume-max``
differ from ``softseg-wing`` only in the normalisation. The other ReLU candidates
(``hard-relu-wing``, ``soft-relu-dice``, ``soft-relu-dml``) are the paper's ablations of its
own formula and keep it.

Multi-rater datasets also pick a *fusion* per run (:data:`FUSIONS`, implemented by the trainer
with :mod:`softseg.fusion`).

Importing this module does not import torch (the napari widgets list the candidates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from softseg.errors import InputError
from softseg.fusion.engine import METHODS as _FUSION_METHODS
from softseg.fusion.engine import training_fusions as _training_fusions
from softseg.normalization import _NEEDS_TAU, check_negative_slope, check_normalization

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CANDIDATES",
    "FUSIONS",
    "FUSION_DESCRIPTIONS",
    "MULTICLASS_ACTIVATIONS",
    "MULTICLASS_LOSSES",
    "RECIPES_BEFORE_RENAMES",
    "RENAMED",
    "Candidate",
    "card_recipe_key",
    "check_fusion",
    "checkpoint_recipe",
    "trained_with_current_recipe",
    "class_target",
    "get_candidate",
    "hard_target",
]

#: Threshold used to binarise the ground truth of hard candidates (``target >= 0.5`` -> 1).
HARD_THRESHOLD = 0.5

# Names known to softseg.activations / softseg.losses, repeated here so that validating a
# candidate does not import torch; tests check that they match the registries.
_ACTIVATION_NAMES = ("sigmoid", "normalized_relu", "multiclass_normalized_relu", "softmax")
_LOSS_NAMES = (
    "adaptive_wing",
    "dice",
    "dice_semimetric",
    "generalized_dice",
    "bce",
    "cross_entropy",
    "mse",
    "boundary",
    "gdl_boundary",
)
_DISTANCE_MAP_LOSSES = ("boundary", "gdl_boundary")
_RELU_NAMES = ("normalized_relu", "multiclass_normalized_relu")

#: Single-class activation -> its K-class form (channels = K classes + background).
MULTICLASS_ACTIVATIONS: dict[str, str] = {
    "sigmoid": "softmax",
    "normalized_relu": "multiclass_normalized_relu",
    "softmax": "softmax",
    "multiclass_normalized_relu": "multiclass_normalized_relu",
}

#: Single-class loss -> (K-class loss, parameters set for K classes). Parameters of the
#: single-class recipe are kept (``bce``'s ``eps`` becomes ``cross_entropy``'s).
MULTICLASS_LOSSES: dict[str, tuple[str, dict[str, Any]]] = {
    "adaptive_wing": ("adaptive_wing", {}),
    "mse": ("mse", {}),
    "dice": ("dice", {"include_background": False}),
    "dice_semimetric": ("dice_semimetric", {"include_background": False}),
    "bce": ("cross_entropy", {}),
    "cross_entropy": ("cross_entropy", {}),
    "generalized_dice": ("generalized_dice", {"add_background": False}),
    "boundary": ("boundary", {"include_background": False}),
    "gdl_boundary": ("gdl_boundary", {"add_background": False, "include_background": False}),
}


@dataclass(frozen=True)
class Candidate:
    """One training recipe: ground-truth mode, final activation, loss.

    Parameters
    ----------
    name : str
        Registry key and CLI value (e.g. ``"softseg"``).
    title : str
        The name used in the papers (e.g. ``"Soft-ReLU-Wing"``).
    description : str
        One line: what it changes with respect to the conventional pipeline.
    soft_gt : bool
        Keep fractional ground truth (True) or binarise it at 0.5 after augmentation (False).
    activation : str
        Final activation name (``softseg.activations.ACTIVATIONS``).
    loss : str
        Loss name (``softseg.losses.LOSSES``).
    loss_params : dict
        Keyword arguments of the loss (e.g. Adaptive Wing's ``alpha``); JSON-able numbers.
        Treat as read-only.
    boundary_schedule : tuple (start, step, floor) or None
        For ``gdl_boundary``: the weight ``alpha`` of the regional term at the 0-based epoch
        ``e`` is ``max(start - step * e, floor)`` (Kervadec et al. 2019: 1, 0.01, 0.01).
    reference : str
        Where the recipe comes from.
    n_classes : int
        K, the foreground classes the recipe trains (1: one output channel; K >= 2: K+1
        channels, background first). Make K-class recipes with :meth:`for_classes`.
    normalization : str
        What the normalized ReLU divides by (:data:`softseg.activations.NORMALIZATIONS`;
        default ``"sample_max"``, the paper's per-slice maximum). Stored in the model card,
        which prediction follows. Only for the normalized ReLU activations.
    tau : float > 0 or None
        The divisor of ``fixed`` / floor of ``floor`` (required by those options, else None).
    negative_slope : float in [0, 1)
        Training only: slope of the ReLU's backward pass below 0, so that units that are off
        still learn (:mod:`softseg.activations`, "Training through dead units"); 0 is the
        paper. The model's outputs never depend on it.
    output_bias : float or None
        Bias every output channel of a *new* network starts with (:meth:`init_network`); None:
        the activation's default (:func:`softseg.activations.initial_output_bias`: 0.5 for the
        multi-class normalized ReLU, PyTorch's own start otherwise). Weights loaded from a file
        replace it.
    """

    name: str
    title: str
    description: str
    soft_gt: bool
    activation: str
    loss: str
    loss_params: dict[str, Any] = field(default_factory=dict, hash=False)
    boundary_schedule: tuple[float, float, float] | None = None
    reference: str = ""
    n_classes: int = 1
    normalization: str = "sample_max"
    tau: float | None = None
    negative_slope: float = 0.0
    output_bias: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes < 1:
            raise InputError(f"candidate {self.name!r}: n_classes must be a whole number >= 1; got {self.n_classes!r}")
        if self.activation not in _ACTIVATION_NAMES:
            raise InputError(
                f"candidate {self.name!r}: unknown activation {self.activation!r}; "
                f"choose one of: {', '.join(_ACTIVATION_NAMES)}"
            )
        if self.loss not in _LOSS_NAMES:
            raise InputError(
                f"candidate {self.name!r}: unknown loss {self.loss!r}; "
                f"choose one of: {', '.join(_LOSS_NAMES)}"
            )
        if "reduction" in self.loss_params:
            raise InputError(
                f"candidate {self.name!r}: loss_params must not set 'reduction' (always 'mean')"
            )
        if (self.boundary_schedule is not None) != (self.loss == "gdl_boundary"):
            raise InputError(
                f"candidate {self.name!r}: boundary_schedule (start, step, floor) is required for "
                "the gdl_boundary loss and meaningless for any other"
            )
        if self.activation in _RELU_NAMES:
            try:
                check_normalization(self.normalization, self.tau)
                if self.normalization not in _NEEDS_TAU and self.tau is not None:
                    raise InputError(f"normalisation {self.normalization!r} takes no tau (got {self.tau!r})")
                check_negative_slope(self.negative_slope)
                if self.negative_slope and self.normalization not in ("fixed", "floor"):
                    raise InputError(
                        f"negative_slope needs a divisor bounded away from 0 ('fixed' or 'floor'); "
                        f"with {self.normalization!r} a slice whose logits are all <= 0 divides "
                        "its slope by eps")
                if self.normalization == "running_max":
                    raise InputError("running_max's divisor is a statistic of a finished training, "
                                     "not a recipe option; train with 'fixed' (a constant tau)")
            except InputError as exc:
                raise InputError(f"candidate {self.name!r}: {exc}") from None
        elif self.normalization != "sample_max" or self.tau is not None or self.negative_slope:
            raise InputError(
                f"candidate {self.name!r}: {self.activation} has no normalisation options "
                "(normalization, tau and negative_slope are for the normalized ReLU)"
            )
        if self.output_bias is not None and (
                isinstance(self.output_bias, bool) or not isinstance(self.output_bias, (int, float))
                or not math.isfinite(self.output_bias)):
            raise InputError(f"candidate {self.name!r}: output_bias must be a finite number or None; "
                             f"got {self.output_bias!r}")
        # a private copy so that the registry's presets cannot be changed through a caller's dict
        object.__setattr__(self, "loss_params", dict(self.loss_params))

    @property
    def out_channels(self) -> int:
        """Output channels of the network: 1 for one class, K+1 (background first) for K."""
        return 1 if self.n_classes == 1 else self.n_classes + 1

    def for_classes(self, k: int) -> Candidate:
        """This recipe for ``k`` foreground classes (see the module docstring).

        ``k == 1`` (or this candidate's own K) returns ``self``; otherwise a new candidate with
        the same name and title, ``n_classes=k``, the K-class activation
        (:data:`MULTICLASS_ACTIVATIONS`) and loss (:data:`MULTICLASS_LOSSES`).

        Raises
        ------
        InputError
            ``k`` is not a whole number >= 1; the candidate already has another K.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"the number of classes must be a whole number >= 1; got {k!r}")
        if k == self.n_classes:
            return self
        if self.n_classes != 1:
            raise InputError(
                f"candidate {self.name!r} is already defined for {self.n_classes} classes; "
                f"start from the registry's single-class recipe for {k}"
            )
        if k == 1:
            return self
        loss, params = MULTICLASS_LOSSES[self.loss]
        if loss == "adaptive_wing" and self.loss_params.get("dice_semimetric_weight"):
            # the compound's DML term scores the foreground classes, as the DML loss does
            params = {**params, "dice_semimetric_include_background": False}
        activation = MULTICLASS_ACTIVATIONS[self.activation]
        options = {}
        if activation == "multiclass_normalized_relu":
            # p_c = r_c / sum_k r_k: a window maximum cancels in the class sum, so no slice is
            # stretched whatever the window; a constant divisor would only add min(., 1),
            # whose zero gradient above tau stops a wrong class that went above it from coming
            # down. The leaky backward pass is dropped too: where every class is <= 0 the sum
            # is 0 and its slope would be divided by eps (measured: with either, the 3-tissue
            # training test stayed below chance); the output bias (activations) keeps every
            # class alive instead.
            options = {"negative_slope": 0.0}
            if self.normalization in ("fixed", "floor"):
                options.update(normalization="sample_max", tau=None)
        return replace(
            self,
            activation=activation,
            loss=loss,
            loss_params={**self.loss_params, **params},
            n_classes=k,
            **options,
        )

    @property
    def initial_output_bias(self) -> float | None:
        """Bias every output channel of a new network starts with, or None for PyTorch's default
        (:func:`softseg.activations.initial_output_bias`: 0.5 for the multi-class normalized
        ReLU, whose classes otherwise can start with no gradient; None for every single-class
        recipe)."""
        if self.output_bias is not None:
            return float(self.output_bias)
        from softseg.activations import initial_output_bias

        return initial_output_bias(self.activation)

    def init_network(self, network: Any) -> Any:
        """Prepare a *new* network for this recipe (the trainer calls it when it builds one):
        sets its output bias to :attr:`initial_output_bias` when that is not None, through
        ``network.init_output_bias`` (:meth:`softseg.models.UNet2D.init_output_bias`); nothing
        else changes and no random number is drawn. Returns ``network``. Weights loaded
        afterwards (model file, checkpoint, ``--init``) replace it."""
        bias = self.initial_output_bias
        if bias is not None:
            network.init_output_bias(bias)
        return network

    def recipe_key(self) -> tuple:
        """What of this recipe changes the trained weights (not its names): compare with
        :func:`card_recipe_key` to tell whether a model file was trained with it."""
        return _recipe_key(self.soft_gt, self.activation, self.normalization, self.tau, self.loss,
                           self.loss_params, self.boundary_schedule, self.negative_slope)

    @property
    def needs_distance_map(self) -> bool:
        """True if :meth:`compute_loss` needs ``distance_map`` (boundary loss)."""
        return self.loss in _DISTANCE_MAP_LOSSES

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description (for model-file metadata and ``softseg candidates --json``)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "soft_gt": self.soft_gt,
            "activation": self.activation,
            "loss": self.loss,
            "loss_params": dict(self.loss_params),
            "boundary_schedule": list(self.boundary_schedule) if self.boundary_schedule else None,
            "needs_distance_map": self.needs_distance_map,
            "reference": self.reference,
            "n_classes": self.n_classes,
            "normalization": self.normalization,
            "tau": self.tau,
            "negative_slope": self.negative_slope,
            "output_bias": self.output_bias,
        }

    def boundary_weight(self, epoch: int) -> float:
        """Weight of the regional term at ``epoch`` (only for ``gdl_boundary``)."""
        from softseg.losses import boundary_weight

        if self.boundary_schedule is None:
            raise InputError(
                f"candidate {self.name!r} has no boundary schedule (loss {self.loss!r})"
            )
        start, step, floor = self.boundary_schedule
        return boundary_weight(epoch, start=start, step=step, floor=floor)

    # ------------------------------------------------------------------ training-time operations
    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        """Ground truth as this candidate trains on it (call after augmentation).

        One class, ``target`` (N, 1, H, W): hard candidates get ``(target >= 0.5)`` in the
        target's floating dtype (a new tensor); soft candidates the target itself, unchanged
        (not copied).

        K classes, ``target`` (N, K, H, W): the foreground class maps 1..K (what the slice set
        holds and augmentation warps; its zero padding outside the field of view is
        background). Returns (N, K+1, H, W), background first: soft candidates get
        ``[1 - sum, maps]`` (background clamped at 0 against rounding), hard candidates its
        one-hot argmax (the most probable class; ties to the lower index, background first:
        "labels one-hot after augmentation").

        Raises
        ------
        InputError
            A K-class target whose channel count is not K.
        """
        if self.n_classes == 1 and self.soft_gt:
            return target
        if self.n_classes > 1 and self.soft_gt:
            return class_target(target, self.n_classes, name=f"candidate {self.name!r}")
        return hard_target(target, self.n_classes, name=f"candidate {self.name!r}")

    def activate(self, logits: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """Final activation: logits (N, C, H, W) -> probabilities in [0, 1] (C = :attr:`out_channels`),
        with this recipe's :attr:`normalization` and :attr:`tau`. ``training=True`` (the
        trainer's loss) adds the :attr:`negative_slope` backward pass; values are the same."""
        from softseg.activations import get_activation

        fn = get_activation(self.activation)
        if self.activation not in _RELU_NAMES:
            return fn(logits)
        return fn(logits, normalization=self.normalization, tau=self.tau,
                  negative_slope=self.negative_slope if training else 0.0)

    def compute_loss(
        self,
        probs: torch.Tensor,
        target: torch.Tensor,
        *,
        epoch: int,
        distance_map: torch.Tensor | None = None,
        spacing: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """The candidate's loss, a scalar tensor (mean reduction).

        Parameters
        ----------
        probs : torch.Tensor, shape (N, C, H, W)
            Output of :meth:`activate`.
        target : torch.Tensor, same shape
            Output of :meth:`prepare_target`.
        epoch : int, keyword-only
            0-based index of the epoch being trained (used by scheduled losses).
        distance_map : torch.Tensor, same shape, keyword-only
            Signed distance map of the target (boundary losses); computed from ``target`` on its
            device when not given (:func:`softseg.losses.signed_distance_map_2d`).
        spacing : (row, col) mm, keyword-only
            Pixel size of the slices, for the distance map (default 1 pixel).
        """
        from softseg.losses import LOSSES, signed_distance_map_2d

        kwargs = dict(self.loss_params)
        if self.needs_distance_map:
            if distance_map is None:
                distance_map = signed_distance_map_2d(target.detach(), spacing=spacing)
            kwargs["distance_map"] = distance_map
        if self.boundary_schedule is not None:
            kwargs["alpha"] = self.boundary_weight(epoch)
        return LOSSES[self.loss](probs, target, reduction="mean", **kwargs)


def class_target(labels: torch.Tensor, n_classes: int, *, name: str = "target") -> torch.Tensor:
    """K foreground class maps (N, K, H, W) -> (N, K+1, H, W) class maps, background first.

    Background is ``1 - sum`` of the classes, clamped at 0 (bilinear augmentation of maps that
    sum to at most 1 keeps them so, up to rounding). A new tensor.

    Raises
    ------
    InputError
        ``labels.shape[1] != n_classes`` (the message starts with *name*).
    """
    import torch

    if labels.ndim < 2 or labels.shape[1] != n_classes:
        raise InputError(
            f"{name}: expected the {n_classes} foreground class maps (N, {n_classes}, H, W); got "
            f"shape {tuple(labels.shape)}"
        )
    labels = labels if labels.is_floating_point() else labels.float()
    background = (1.0 - labels.sum(dim=1, keepdim=True)).clamp_min(0.0)
    return torch.cat([background, labels], dim=1)


def hard_target(labels: torch.Tensor, n_classes: int = 1, *, name: str = "target") -> torch.Tensor:
    """The binarised ground truth: what hard candidates train on and what Dice is scored against.

    Parameters
    ----------
    labels : torch.Tensor
        One class: (N, 1, H, W) in [0, 1]. K classes: the foreground class maps (N, K, H, W).
    n_classes : int
        K.

    Returns
    -------
    torch.Tensor, floating (the labels' dtype, float32 for integer input)
        One class: ``labels >= 0.5`` (:data:`HARD_THRESHOLD`), shape (N, 1, H, W). K classes:
        the one-hot of the most probable class of :func:`class_target` (ties to the lower index,
        background first), shape (N, K+1, H, W).
    """
    if n_classes == 1:
        dtype = labels.dtype if labels.is_floating_point() else None
        hard = labels >= HARD_THRESHOLD
        return hard.to(dtype) if dtype is not None else hard.float()
    import torch

    maps = class_target(labels, n_classes, name=name)
    winner = maps.argmax(dim=1, keepdim=True)
    return torch.zeros_like(maps).scatter_(1, winner, 1.0)


_WING = {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}
_SOFTSEG = "Gros et al. 2021 (SoftSeg), Table 2"
_ISSUE_15 = "softseg issue 15 (benchmarks/softseg_claims.py --study mni-lesion)"
#: What the default SoftSeg changes against the paper's formula (module docstring, "SoftSeg on
#: small structures"), besides its loss (``balance`` and the DML term in ``loss_params``): a
#: constant divisor (``fixed``, tau 1: no slice is stretched to certainty, crop and whole slice
#: agree) and a leaky training gradient (units that are off still learn).
_SOFTSEG_FIXES: dict[str, Any] = {"normalization": "fixed", "tau": 1.0, "negative_slope": 0.1}
#: The other normalisations of issue 15, each with the rest of the default recipe:
#: (key, title, normalization, tau, description, source).
_NORMALISATION_STUDY = (
    ("floor", "floor", "floor", 1.0, "divides by max(slice maximum, 1)", "a floor on the divisor"),
    ("batch-max", "batch max", "batch_max", None,
     "divides by the batch maximum in training and the volume maximum at prediction",
     "ivadomed's normalized ReLU (batch-global maximum)"),
    ("volume-max", "volume max", "volume_max", None,
     "divides by each slice's maximum in training and the volume maximum at prediction",
     "the volume-level maximum at inference"),
)


def _presets() -> dict[str, Candidate]:
    items = [
        Candidate(
            name="conventional",
            title="Hard-Sig-Dice",
            description="the conventional pipeline: labels binarised at 0.5, sigmoid, Dice loss",
            soft_gt=False,
            activation="sigmoid",
            loss="dice",
            loss_params={"smooth": 1.0},
            reference=_SOFTSEG,
        ),
        Candidate(
            name="hard-relu-wing",
            title="Hard-ReLU-Wing",
            description="SoftSeg but with labels binarised at 0.5 (normalized ReLU, Adaptive Wing)",
            soft_gt=False,
            activation="normalized_relu",
            loss="adaptive_wing",
            loss_params=dict(_WING),
            reference=_SOFTSEG,
        ),
        Candidate(
            name="soft-sig-wing",
            title="Soft-Sig-Wing",
            description="SoftSeg but with a sigmoid instead of the normalized ReLU",
            soft_gt=True,
            activation="sigmoid",
            loss="adaptive_wing",
            loss_params=dict(_WING),
            reference=_SOFTSEG,
        ),
        Candidate(
            name="soft-relu-dice",
            title="Soft-ReLU-Dice",
            description="SoftSeg but with the soft Dice loss instead of Adaptive Wing (not minimal "
            "at a soft target: see soft-relu-dml)",
            soft_gt=True,
            activation="normalized_relu",
            loss="dice",
            loss_params={"smooth": 1.0},
            reference=_SOFTSEG,
        ),
        Candidate(
            name="softseg",
            title="Soft-ReLU-Wing+DML",
            description="SoftSeg: soft labels, normalized ReLU, Adaptive Wing loss (regression) plus "
            "the Dice semimetric loss; divides by a constant, the structure's share of the Adaptive "
            "Wing mean at 0.1, leaky training gradient (issue 15)",
            soft_gt=True,
            activation="normalized_relu",
            loss="adaptive_wing",
            loss_params=dict(_WING, balance=0.1, dice_semimetric_weight=1.0),
            reference=_SOFTSEG + "; normalisation, balance and gradient: " + _ISSUE_15 + "; DML "
            "term: Wang & Blaschko 2023 (MICCAI), DML1, as a compound loss (Ma et al. 2021, Loss "
            "odyssey)",
            **_SOFTSEG_FIXES,
        ),
        Candidate(
            name="softseg-wing",
            title="Soft-ReLU-Wing (balanced)",
            description="softseg without the Dice semimetric term: Adaptive Wing alone, the "
            "structure's share at 0.05 (the default softseg before the DML term; p >= 0.5 in most "
            "lesion-free slices: issue 15)",
            soft_gt=True,
            activation="normalized_relu",
            loss="adaptive_wing",
            loss_params=dict(_WING, balance=0.05),
            reference=_SOFTSEG + "; normalisation, balance and gradient: " + _ISSUE_15,
            **_SOFTSEG_FIXES,
        ),
        Candidate(
            name="softseg-paper",
            title="Soft-ReLU-Wing (paper)",
            description="SoftSeg exactly as published: divides by each slice's maximum, plain "
            "Adaptive Wing mean, ReLU gradient (learns no small lesion: issue 15)",
            soft_gt=True,
            activation="normalized_relu",
            loss="adaptive_wing",
            loss_params=dict(_WING),
            reference=_SOFTSEG,
        ),
        *(
            Candidate(
                name=f"softseg-{key}",
                title=f"Soft-ReLU-Wing ({title})",
                description=f"softseg-wing, but the normalized ReLU {text}",
                soft_gt=True,
                activation="normalized_relu",
                loss="adaptive_wing",
                loss_params=dict(_WING, balance=0.05),
                reference=f"{_ISSUE_15}; {ref}",
                **{**_SOFTSEG_FIXES, "normalization": norm, "tau": tau,
                   # a window maximum can be 0: no leaky gradient there (Candidate)
                   "negative_slope": _SOFTSEG_FIXES["negative_slope"] if tau else 0.0},
            )
            for key, title, norm, tau, text, ref in _NORMALISATION_STUDY
        ),
        Candidate(
            name="soft-sig-bce",
            title="Soft-Sig-BCE",
            description="soft labels, sigmoid, cross-entropy (unbiased volumes, Bertels 2019)",
            soft_gt=True,
            activation="sigmoid",
            loss="bce",
            loss_params={"eps": 1e-7},
            reference="Bertels et al. 2019, soft Dice volumetric bias",
        ),
        Candidate(
            name="gdl-boundary",
            title="Hard-Sig-GDL+Boundary",
            description="binarised labels, sigmoid, generalized Dice shifting to boundary loss "
            "by 0.01 per epoch",
            soft_gt=False,
            activation="sigmoid",
            loss="gdl_boundary",
            loss_params={"add_background": True},
            boundary_schedule=(1.0, 0.01, 0.01),
            reference="Kervadec et al. 2019, boundary loss, eq. 6",
        ),
        Candidate(
            name="soft-relu-dml",
            title="Soft-ReLU-DML",
            description="soft labels, normalized ReLU with softseg's constant divisor and leaky "
            "training gradient, Dice semimetric loss (0 only at the soft target; the soft Dice on "
            "binary labels)",
            soft_gt=True,
            activation="normalized_relu",
            loss="dice_semimetric",
            loss_params={"smooth": 1.0},
            reference="Wang & Blaschko 2023, Dice semimetric losses (MICCAI), DML1; "
            "normalisation and gradient: " + _ISSUE_15,
            # our candidate, not one of the paper's ablations: it takes issue 15's fix (an
            # output's confidence must not depend on the rest of its slice)
            **_SOFTSEG_FIXES,
        ),
    ]
    return {c.name: c for c in items}


#: candidate name -> Candidate (a plain dict, STYLE.md 6).
CANDIDATES: dict[str, Candidate] = _presets()


#: Names a release used for a recipe that now has another name: old name -> (the recipe's name
#: now, why). Aliases, not candidates (never listed): :func:`get_candidate` and
#: :class:`softseg.config.TrainConfig` read them as the new name, so model files, configs and
#: checkpoints that use them keep working.
RENAMED: dict[str, tuple[str, str]] = {
    "softseg-dml": ("softseg", "its recipe became the default softseg (issue 15)"),
}

#: Candidate names whose recipe changed, as checkpoints that do not record their recipe (written
#: before it did) meant them: name then -> the registry name of that recipe now.
RECIPES_BEFORE_RENAMES: dict[str, str] = {"softseg": "softseg-wing", "softseg-dml": "softseg"}


def get_candidate(name: str) -> Candidate:
    """Look up a candidate by name (a retired name of :data:`RENAMED`: its recipe's name now).

    Raises
    ------
    InputError
        An unknown name (the message lists the candidates).
    """
    if isinstance(name, str) and name in RENAMED:
        name = RENAMED[name][0]
    try:
        return CANDIDATES[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown candidate {name!r}; choose one of: {', '.join(CANDIDATES)}"
        ) from None


def _recipe_key(soft_gt: Any, activation: str, normalization: Any, tau: Any, loss: Any,
                loss_params: Any, boundary_schedule: Any, negative_slope: Any) -> tuple:
    import json

    return (bool(soft_gt), activation, normalization, None if tau is None else float(tau), loss,
            json.dumps(dict(loss_params or {}), sort_keys=True),
            None if boundary_schedule is None else tuple(float(v) for v in boundary_schedule),
            float(negative_slope or 0.0))


def card_recipe_key(card: Any) -> tuple:
    """:meth:`Candidate.recipe_key` of the recipe a model card (:class:`softseg.card.ModelCard`)
    says its network was trained with."""
    c = card.candidate
    return _recipe_key(c.soft_gt, c.activation.name, c.activation.normalization, c.activation.tau,
                       c.loss, c.loss_params, c.boundary_schedule, c.negative_slope)


def trained_with_current_recipe(card: Any, name: str) -> bool:
    """True when the model card's network was trained with the recipe ``name`` has in the
    registry now (for the card's number of classes); False for a name whose recipe changed
    (:data:`RECIPES_BEFORE_RENAMES`) and for a name the registry does not know."""
    if not (isinstance(name, str) and (name in CANDIDATES or name in RENAMED)):
        return False
    return card_recipe_key(card) == get_candidate(name).for_classes(max(1, len(card.classes))).recipe_key()


def checkpoint_recipe(name: str, recorded: dict[str, Any] | None, n_classes: int) -> Candidate:
    """The recipe a resumed run continues with: the one its checkpoint was trained with.

    Parameters
    ----------
    name : str
        The checkpoint's ``config.candidate``.
    recorded : dict or None
        The checkpoint's ``recipe`` (:meth:`Candidate.as_dict`); None for a checkpoint written
        before checkpoints recorded it, which means the recipe ``name`` had then
        (:data:`RECIPES_BEFORE_RENAMES`: an old ``"softseg"`` is today's ``softseg-wing``).
    n_classes : int
        K, for the registry's recipe of an old checkpoint (:meth:`Candidate.for_classes`).

    Returns
    -------
    Candidate
        A recorded recipe is rebuilt exactly (name included), so a run started before the
        registry changed a name's recipe finishes with the loss it started with.

    Raises
    ------
    InputError
        The recorded recipe is not a valid candidate (a damaged or foreign checkpoint).
    """
    if recorded is None:
        return get_candidate(RECIPES_BEFORE_RENAMES.get(name, name)).for_classes(n_classes)
    fields = {k: v for k, v in recorded.items() if k != "needs_distance_map"}
    if fields.get("boundary_schedule") is not None:
        fields["boundary_schedule"] = tuple(fields["boundary_schedule"])
    try:
        return Candidate(**fields)
    except TypeError as exc:
        raise InputError(f"the checkpoint's recipe of candidate {name!r} is not one this version "
                         f"reads ({exc}); start over with --overwrite") from None


#: Ways to turn several raters into one training target: the training fusions of the one
#: registry, :data:`softseg.fusion.METHODS` (computed by :func:`softseg.fusion.training_target`).
FUSIONS = _training_fusions()

#: fusion name -> one-line description (from the registry).
FUSION_DESCRIPTIONS: dict[str, str] = {k: _FUSION_METHODS[k].description for k in FUSIONS}


def check_fusion(name: str) -> str:
    """Return ``name`` if it is in :data:`FUSIONS`, else an :class:`InputError` listing them."""
    if name not in FUSIONS:
        raise InputError(f"unknown fusion {name!r}; choose one of: {', '.join(FUSIONS)}")
    return name
