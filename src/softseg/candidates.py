"""Training candidates: the papers' ablation table as named, frozen configurations.

A :class:`Candidate` fixes everything that differs between the SoftSeg paper's candidates
(Table 2 of Gros et al. 2021) and the two loss baselines added here:

* ground-truth mode: *soft* (the fractions produced by resampling and augmentation are kept) or
  *hard* (binarised at 0.5 **after** augmentation, by :meth:`Candidate.prepare_target`);
* the final activation, by name (:data:`softseg.activations.ACTIVATIONS`);
* the loss and its parameters, by name (:data:`softseg.losses.LOSSES`).

The trainer is then candidate-agnostic::

    target = candidate.prepare_target(augmented_labels)
    probs = candidate.activate(model(images))
    loss = candidate.compute_loss(probs, target, epoch=epoch, spacing=pixel_spacing)

A boundary-loss candidate (``candidate.needs_distance_map``) computes the signed distance map of
the target itself, on the target's device (:func:`softseg.losses.signed_distance_map_2d`), unless
one is passed as ``distance_map``.

Multi-rater datasets also pick a *fusion* per run (:data:`FUSIONS`, implemented by the trainer
with :mod:`softseg.fusion`).

Importing this module does not import torch (the napari widgets list the candidates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from softseg.errors import InputError
from softseg.fusion.engine import METHODS as _FUSION_METHODS
from softseg.fusion.engine import training_fusions as _training_fusions

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CANDIDATES",
    "FUSIONS",
    "FUSION_DESCRIPTIONS",
    "Candidate",
    "check_fusion",
    "get_candidate",
]

#: Threshold used to binarise the ground truth of hard candidates (``target >= 0.5`` -> 1).
HARD_THRESHOLD = 0.5

# Names known to softseg.activations / softseg.losses, repeated here so that validating a
# candidate does not import torch; tests check that they match the registries.
_ACTIVATION_NAMES = ("sigmoid", "normalized_relu", "multiclass_normalized_relu", "softmax")
_LOSS_NAMES = (
    "adaptive_wing",
    "dice",
    "generalized_dice",
    "bce",
    "mse",
    "boundary",
    "gdl_boundary",
)
_DISTANCE_MAP_LOSSES = ("boundary", "gdl_boundary")


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

    def __post_init__(self) -> None:
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
        # a private copy so that the registry's presets cannot be changed through a caller's dict
        object.__setattr__(self, "loss_params", dict(self.loss_params))

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

        Hard candidates: ``(target >= 0.5)`` in the target's floating dtype (a new tensor).
        Soft candidates: the target itself, unchanged (not copied).
        """
        if self.soft_gt:
            return target
        dtype = target.dtype if target.is_floating_point() else None
        hard = target >= HARD_THRESHOLD
        return hard.to(dtype) if dtype is not None else hard.float()

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Final activation: logits (N, C, H, W) -> probabilities in [0, 1]."""
        from softseg.activations import get_activation

        return get_activation(self.activation)(logits)

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


_WING = {"alpha": 2.1, "omega": 8.0, "epsilon": 1.0, "theta": 0.5}
_SOFTSEG = "Gros et al. 2021 (SoftSeg), Table 2"


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
            description="SoftSeg but with the soft Dice loss instead of Adaptive Wing",
            soft_gt=True,
            activation="normalized_relu",
            loss="dice",
            loss_params={"smooth": 1.0},
            reference=_SOFTSEG,
        ),
        Candidate(
            name="softseg",
            title="Soft-ReLU-Wing",
            description="SoftSeg: soft labels, normalized ReLU, Adaptive Wing loss (regression)",
            soft_gt=True,
            activation="normalized_relu",
            loss="adaptive_wing",
            loss_params=dict(_WING),
            reference=_SOFTSEG,
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
    ]
    return {c.name: c for c in items}


#: candidate name -> Candidate (a plain dict, STYLE.md 6).
CANDIDATES: dict[str, Candidate] = _presets()


def get_candidate(name: str) -> Candidate:
    """Look up a candidate by name; an unknown name is an :class:`InputError` listing them."""
    try:
        return CANDIDATES[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown candidate {name!r}; choose one of: {', '.join(CANDIDATES)}"
        ) from None


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
