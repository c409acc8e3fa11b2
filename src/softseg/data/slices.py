"""Training targets and 2D slices: rater fusion for training and the in-memory slice set.

Rater fusion (a choice per run, :data:`softseg.candidates.FUSIONS`) is done at native resolution,
before resampling, by :func:`softseg.fusion.training_target`: ``staple`` (the STAPLE consensus,
probability >= 0.5, as in the label-fusion paper), ``average`` (soft mean of raters),
``majority`` (majority vote) or ``random`` (all raters kept; one rater per subject is drawn at
each epoch with :func:`softseg.fusion.sample_rater`; validation uses the rater average).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from softseg.data.dataset import SubjectData
from softseg.data.preprocessing import Preprocessing, preprocess_image, preprocess_label
from softseg.errors import InputError

__all__ = ["SliceSet", "build_slices", "fuse_raters"]


def fuse_raters(
    raters: np.ndarray,
    method: str,
    *,
    n_classes: int | None = None,
    class_maps: bool = False,
) -> np.ndarray:
    """Fuse a subject's raters for training (at native resolution): the training target.

    Parameters
    ----------
    raters : ndarray, shape (R, ...), float32 in [0, 1]
        Multi-class: integer label maps (R, ...) with ``n_classes``, or class probabilities
        (R, K+1, ...) with ``class_maps=True``.
    method : {'staple', 'average', 'majority', 'random'}
        A training fusion of :data:`softseg.fusion.METHODS`, computed by
        :func:`softseg.fusion.training_target` (which calls :func:`softseg.fusion.fuse`, the
        engine ``softseg fuse`` and the Fuse widget use): ``staple`` = the STAPLE consensus
        (probability >= 0.5, soft STAPLE for soft raters), ``average`` = soft mean,
        ``majority`` = majority vote (soft raters cut at 0.5 first), ``random`` = all raters
        (one is drawn per epoch later).
    n_classes, class_maps : see :func:`softseg.fusion.training_target`

    Returns
    -------
    ndarray, float32 in [0, 1]
        ``(1, ...)`` or ``(R, ...)`` for ``random``; multi-class ``(1, K+1, ...)`` /
        ``(R, K+1, ...)``.
    """
    from softseg.fusion import training_target

    return training_target(raters, method, n_classes=n_classes, class_maps=class_maps)


@dataclass(frozen=True, eq=False)
class SliceSet:
    """Preprocessed 2D slices of several subjects, in memory.

    Attributes
    ----------
    images : ndarray, shape (N, C, H, W), float32
    labels : tuple of ndarray, one per subject, float32 in [0, 1]
        The fused label (R_s = 1) or all raters (``random`` fusion): one class
        ``(R_s, S_s, H, W)``; K classes ``(R_s, K, S_s, H, W)``, the **foreground** classes
        1..K (background = 1 - their sum; it is rebuilt after augmentation by
        :meth:`softseg.candidates.Candidate.prepare_target`, so the zeros that augmentation pads
        with outside the field of view are background).
    subject_slices : tuple of (start, stop)
        Slice range of each subject in ``images``.
    subjects : tuple of str
    """

    images: np.ndarray
    labels: tuple[np.ndarray, ...]
    subject_slices: tuple[tuple[int, int], ...]
    subjects: tuple[str, ...]
    raters_per_subject: tuple[int, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        """K: 1 for ``(R, S, H, W)`` label stacks, else their class axis."""
        lab = self.labels[0] if self.labels else np.zeros((1, 0, 0, 0))
        return 1 if lab.ndim == 4 else int(lab.shape[1])

    def foreground_slices(self, level: float = 0.5) -> np.ndarray:
        """(N,) bool: the slices that hold the structure — any rater's label of any foreground
        class reaches ``level`` somewhere in the slice (the hard reference's ``label >= 0.5``).
        Used by :attr:`softseg.config.DataConfig.foreground_oversampling`."""
        parts = []
        for lab in self.labels:  # (R, S, H, W) or (R, K, S, H, W)
            hit = lab >= level
            axes = (0, 2, 3) if lab.ndim == 4 else (0, 1, 3, 4)
            parts.append(hit.any(axis=axes))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)

    def label_array(self, choice: Sequence[int] | None = None) -> np.ndarray:
        """(N, K, H, W) float32 labels (K = 1 for one class): rater ``choice[s]`` of subject
        ``s``, or the mean of each subject's label stack when *choice* is None (the fused label
        itself when R_s = 1)."""
        parts = []
        for s, lab in enumerate(self.labels):
            if choice is None:
                part = lab.mean(axis=0) if lab.shape[0] > 1 else lab[0]
            else:
                part = lab[int(choice[s])]
            parts.append(part[:, None] if part.ndim == 3 else np.moveaxis(part, 0, 1))
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def build_slices(
    subjects: Sequence[SubjectData], prep: Preprocessing, *, fusion: str
) -> SliceSet:
    """Preprocess subjects into a :class:`SliceSet` of axial slices.

    Parameters
    ----------
    subjects : sequence of SubjectData
    prep : Preprocessing
        Its spacing must be resolved (no ``None`` except axes kept native).
    fusion : {'staple', 'average', 'majority', 'random'}
        K-class subjects (:attr:`SubjectData.n_classes` > 1) are fused as class maps
        (``fuse_raters(..., n_classes=K, class_maps=True)``); the background channel of the
        target is dropped (see :attr:`SliceSet.labels`).
    """
    if not subjects:
        raise InputError("no subjects to build slices from")
    images, labels, ranges = [], [], []
    start = 0
    for sub in subjects:
        img = preprocess_image(sub.images, sub.spacing, prep)  # (C, S, H, W)
        k = sub.n_classes
        if k == 1:
            target = fuse_raters(sub.raters, fusion)  # (R, S, H, W)
        else:  # (R, K, S, H, W): the foreground classes of the fused class maps
            target = fuse_raters(sub.raters, fusion, n_classes=k, class_maps=True)[:, 1:]
        lab = preprocess_label(target, sub.spacing, prep)
        if lab.shape[-3] != img.shape[1]:
            raise InputError(f"subject {sub.name!r}: label and image slice counts differ after resampling")
        images.append(np.moveaxis(img, 1, 0))  # (S, C, H, W)
        labels.append(np.ascontiguousarray(lab))
        ranges.append((start, start + img.shape[1]))
        start += img.shape[1]
    return SliceSet(
        images=np.ascontiguousarray(np.concatenate(images, axis=0)),
        labels=tuple(labels),
        subject_slices=tuple(ranges),
        subjects=tuple(s.name for s in subjects),
        raters_per_subject=tuple(int(lab.shape[0]) for lab in labels),
    )
