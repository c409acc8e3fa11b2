"""Reproducible train / validation / test splits of subject names (group-wise when asked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from softseg.errors import InputError

__all__ = ["Split", "split_subjects"]

@dataclass(frozen=True)
class Split:
    """Subject names of the training, validation and test sets."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_subjects(
    names: Sequence[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    groups: Mapping[str, str | None] | None = None,
    test_group: str | None = None,
    seed: int = 0,
) -> Split:
    """Reproducible train/validation/test split of subject names.

    Parameters
    ----------
    names : sequence of str
    val_fraction, test_fraction : float in [0, 1)
        Fractions of subjects (rounded, at least one validation subject when ``val_fraction``
        > 0, at least one training subject always).
    groups : mapping subject -> group, optional
        Needed for ``test_group``.
    test_group : str, optional
        Leave-one-group-out: every subject of this group is a test subject (``test_fraction``
        is then ignored); the validation set is drawn from the other subjects.
    seed : int
        The permutation is ``numpy.random.default_rng(seed).permutation`` of the sorted names,
        so the split depends only on the seed and the set of names.

    Returns
    -------
    Split
    """
    names = sorted(str(n) for n in names)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise InputError(f"split fractions must lie in [0, 1); got val={val_fraction}, test={test_fraction}")
    rng = np.random.default_rng(seed)
    if test_group is not None:
        groups = dict(groups or {})
        known = sorted({g for g in groups.values() if g is not None})
        test = [n for n in names if groups.get(n) == test_group]
        if not test:
            raise InputError(
                f"no subject in group {test_group!r}; groups in dataset.json: {', '.join(known) or 'none'}"
            )
        rest = [n for n in names if n not in test]
    else:
        perm = [names[i] for i in rng.permutation(len(names))]
        n_test = int(round(test_fraction * len(names)))
        test, rest = perm[:n_test], perm[n_test:]
    rest = [rest[i] for i in rng.permutation(len(rest))] if test_group is not None else rest
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if len(rest) - n_val < 1:
        raise InputError(
            f"{len(names)} subject(s) are too few for this split (test {len(test)}, validation {n_val}); "
            "add subjects or lower the validation/test fractions"
        )
    val, train = rest[:n_val], rest[n_val:]
    return Split(train=tuple(sorted(train)), val=tuple(sorted(val)), test=tuple(sorted(test)))

