"""Files and dataset folders of generated subjects, and the cache of generated subjects.

Layout (the multi-class contract of docs/training.md, DESIGN decision 11)::

    DATASET/dataset.json                          classes, channels, subjects, groups, raters,
                                                  truth files, generator parameters
    DATASET/sub-01/image.nii.gz                   float32 T1w image
    DATASET/sub-01/rater-1_label-grey-matter.nii.gz   uint8 0/1, one per rater and class
    DATASET/sub-01/rater-1_label-grey-matter.json     sidecar {"rater", "kind", "class"}
    DATASET/sub-01/truth_label-grey-matter.nii.gz     float32 partial-volume fraction (evaluation)
    DATASET/sub-01/lesions.nii.gz                 uint16 lesion ids (targets with lesions)

``<class>`` in a file name is the class name with spaces as ``-``. The lesion-only target is a
single-class dataset in exactly the phantom's layout (``rater-<id>.nii.gz``,
``truth_soft.nii.gz``, ``lesions.nii.gz``, ``"classes": ["lesion"]``), so every single-class
command (and ``softseg compare --ground-truth truth``) runs on it unchanged.

A dataset folder appears whole or not at all: it is written under a temporary name next to the
destination and renamed at the end; ``overwrite`` swaps an earlier sample dataset out only once
the new one is complete (:func:`softseg.outputs.output_folder`, the one folder-level output of
the product).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softseg.anatomy.subject import (
    DEFAULT_SPACING,
    LESION,
    TARGETS,
    AnatomySubject,
    check_spacing,
    make_subject,
)
from softseg.anatomy.template import nilearn_version
from softseg.errors import InputError

__all__ = [
    "CACHE_ENV",
    "DATASET_NAME",
    "GENERATOR_VERSION",
    "cache_root",
    "cached_subject",
    "subject_seed",
    "write_dataset",
    "write_subject",
]

#: Bumped whenever the generator's output for the same parameters changes (invalidates caches).
GENERATOR_VERSION = 1
#: ``dataset.json`` ``"name"`` of written datasets (``--overwrite`` only replaces such folders).
DATASET_NAME = "softseg-mni"
#: Environment variable that moves the cache of generated subjects.
CACHE_ENV = "SOFTSEG_CACHE_DIR"
#: Noise (relative to white matter) of the two acquisition groups: centre B is noisier.
_GROUP_NOISE = {"centre-A": 0.03, "centre-B": 0.05}


def subject_seed(seed: int, index: int) -> int:
    """Seed of subject *index* (0-based) of a dataset with seed *seed* (``SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _files(subject: AnatomySubject) -> dict[str, tuple[np.ndarray, dict[str, Any] | None]]:
    """File name -> (array in file order, JSON sidecar or None) of one subject."""
    from softseg.dataset_json import class_key
    from softseg.sidecar import RaterSidecar

    files: dict[str, tuple[np.ndarray, dict[str, Any] | None]] = {"image.nii.gz": (subject.image, None)}
    single = len(subject.classes) == 1
    for r in range(subject.n_raters):
        rid = str(r + 1)
        for k, name in enumerate(subject.classes, start=1):
            side = RaterSidecar(rater=rid, kind="labels", class_name=name).to_json()
            stem = f"rater-{rid}" if single else f"rater-{rid}_label-{class_key(name)}"
            files[f"{stem}.nii.gz"] = ((subject.raters[r] == k).astype(np.uint8), side)
    for k, name in enumerate(subject.classes, start=1):
        stem = "truth_soft" if single else f"truth_label-{class_key(name)}"
        files[f"{stem}.nii.gz"] = (subject.truth[k], None)
    if subject.lesions is not None:
        files["lesions.nii.gz"] = (
            subject.lesions, {"kind": "labels", "description": "lesion ids (evaluation)"}
        )
    return files


def _truth_entry(classes: Sequence[str]) -> str | dict[str, str]:
    from softseg.dataset_json import class_key

    if len(classes) == 1:
        return "truth_soft.nii.gz"
    return {name: f"truth_label-{class_key(name)}.nii.gz" for name in classes}


def write_subject(folder: str | os.PathLike, subject: AnatomySubject) -> dict[str, Path]:
    """Write one subject's files into *folder* (an existing, empty folder).

    Returns file name -> path. Use :func:`write_dataset` for a dataset folder; this is its
    per-subject step (and the cache's).
    """
    from softseg.io import save_volume

    folder = Path(folder)
    out: dict[str, Path] = {}
    for name, (data, side) in _files(subject).items():
        out[name] = save_volume(folder / name, data, affine=subject.affine, sidecar=side)
    return out


def _record(subject: AnatomySubject) -> dict[str, Any]:
    t = subject.transform
    r = subject.rater_record
    return {
        "seed": subject.seed,
        "scale": t.scale,
        "rotation_deg": list(t.rotation_deg),
        "translation_mm": list(t.translation_mm),
        "jacobian_range": list(t.jacobian_range),
        "volumes_ml": subject.volumes_ml(),
        "rater_offsets": [list(row) for row in r.offsets],
        "rater_lesion_levels": None if r.lesion_levels is None else list(r.lesion_levels),
        "missed_lesions": [list(m) for m in r.missed_lesions],
        "n_lesions": None if subject.lesions is None else int(subject.lesions.max()),
    }


def _check_destination(folder: Path, overwrite: bool) -> Path:
    """The one destination check of dataset folders (:func:`softseg.interchange.plan.check_destination`),
    plus: ``--overwrite`` replaces only a dataset this function wrote (its dataset.json names
    :data:`DATASET_NAME`), never other work."""
    from softseg.interchange.plan import check_destination

    empty = folder.is_dir() and not folder.is_symlink() and not any(os.scandir(folder))
    folder = check_destination(folder, overwrite=overwrite or empty, marker="dataset.json",
                               what="softseg sample-data mni")
    if folder.is_dir() and any(os.scandir(folder)):
        try:
            name = json.loads((folder / "dataset.json").read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            name = None
        if name != DATASET_NAME:
            raise InputError(
                f"{folder}: --overwrite only replaces a dataset written by softseg sample-data mni "
                f"(its dataset.json names {DATASET_NAME!r}); choose a new folder"
            )
    return folder


def write_dataset(
    folder: str | os.PathLike,
    *,
    n_subjects: int = 4,
    target: str = "tissue",
    n_raters: int = 4,
    seed: int = 0,
    spacing: Sequence[float] | float = DEFAULT_SPACING,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **subject_options: Any,
) -> Path:
    """Generate *n_subjects* subjects and write them as a dataset folder.

    Subject *i* (``sub-01`` ...) is :func:`~softseg.anatomy.subject.make_subject` with seed
    :func:`subject_seed` ``(seed, i)``; subjects alternate between groups ``centre-A`` (noise
    0.03) and ``centre-B`` (noise 0.05) for group-wise splits. The whole dataset is deterministic
    for a seed.

    Parameters
    ----------
    folder : path-like
        New (or empty) folder. With ``overwrite=True`` an existing dataset written by this
        function is replaced (only once the new one is complete); any other non-empty folder is
        refused. Returned as an absolute path.
    n_subjects : int, 1 .. 500
    target : {"tissue", "tissue-lesion", "lesion"}
    n_raters : int, >= 1
    seed : int
    spacing : float or 3 floats (mm)
    overwrite : bool
    progress : callable(done, total), optional
        Called after each subject.
    **subject_options
        Further keyword arguments of :func:`~softseg.anatomy.subject.make_subject`
        (``deformation_mm``, ``n_lesions``, ``raters`` ...), except ``seed`` and ``noise``.

    Returns
    -------
    Path
        *folder*.

    Raises
    ------
    InputError
        Bad parameters, a non-empty destination, nilearn missing — all before anything is
        written. An interrupted run leaves no folder behind.
    """
    from softseg.dataset_json import DatasetJson
    from softseg.io import write_json
    from softseg.outputs import output_folder
    from softseg.schema import parse

    n_subjects = int(n_subjects)
    if not 1 <= n_subjects <= 500:
        raise InputError(f"n_subjects must be between 1 and 500; got {n_subjects}")
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    for key in ("seed", "noise", "template"):
        if key in subject_options:
            raise InputError(f"write_dataset sets {key!r} per subject; do not pass it")
    if int(n_raters) < 1:
        raise InputError(f"n_raters must be >= 1; got {n_raters}")
    check_spacing(spacing)
    folder = _check_destination(Path(folder), overwrite)
    from softseg.anatomy.template import load_template

    load_template()  # nilearn missing -> one line, before any folder exists
    subjects = [f"sub-{i + 1:02d}" for i in range(n_subjects)]
    groups = {s: ("centre-A" if i % 2 == 0 else "centre-B") for i, s in enumerate(subjects)}
    records: dict[str, Any] = {}
    first: AnatomySubject | None = None
    with output_folder(folder, overwrite=overwrite) as tmp:
        for i, name in enumerate(subjects):
            subject = make_subject(
                seed=subject_seed(seed, i), target=target, spacing=spacing, n_raters=n_raters,
                noise=_GROUP_NOISE[groups[name]], **subject_options,
            )
            first = first or subject
            (tmp / name).mkdir()
            write_subject(tmp / name, subject)
            records[name] = _record(subject)
            if progress is not None:
                progress(i + 1, n_subjects)
        assert first is not None
        classes = list(TARGETS[target])
        meta = {
            "name": DATASET_NAME,
            "description": (
                "Subjects made from the MNI ICBM152 2009a nonlinear symmetric template (nilearn): "
                "random smooth deformation, partial volume, bias field, Rician noise"
                + (", MS-like lesions" if LESION in classes else "")
                + "; simulated raters per class"
            ),
            "channels": ["T1w"],
            "classes": classes,
            "subjects": subjects,
            "groups": groups,
            "raters": [str(r + 1) for r in range(int(n_raters))],
            "truth": _truth_entry(classes),
            "generator": {
                "function": "softseg.anatomy.write_dataset",
                "version": GENERATOR_VERSION,
                "template": "MNI ICBM152 2009a nonlinear symmetric (nilearn "
                f"{nilearn_version() or 'unknown'})",
                "seed": int(seed),
                "target": target,
                "spacing": list(first.spacing),
                "shape": list(first.shape),
                "noise": _GROUP_NOISE,
                "parameters": {
                    k: v for k, v in first.parameters.items() if k not in ("seed", "noise")
                },
                "subjects": records,
            },
        }
        parse(DatasetJson, meta, source="dataset.json")  # what every reader will accept
        write_json(tmp / "dataset.json", meta)
    return folder


# ----------------------------------------------------------------------------------- cache
def cache_root() -> Path:
    """Where generated subjects are cached: ``$SOFTSEG_CACHE_DIR``, else the user cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) + ``softseg/anatomy``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "anatomy"
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "softseg" / "anatomy"


def _cache_key(parameters: dict[str, Any]) -> str:
    text = json.dumps(
        {"generator": GENERATOR_VERSION, "nilearn": nilearn_version(), **parameters},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cached_subject(
    *,
    seed: int = 0,
    target: str = "tissue",
    spacing: Sequence[float] | float = DEFAULT_SPACING,
    n_raters: int = 4,
    root: str | os.PathLike | None = None,
) -> tuple[Path, bool]:
    """The files of one generated subject, generated once and kept in the user cache.

    The cache folder is keyed by the parameters, :data:`GENERATOR_VERSION` and nilearn's version;
    it is written whole under a temporary name and renamed (a killed run leaves no partial
    entry), under a file lock (two viewers starting at once generate it once). Treat the files
    as read-only: copy them before editing.

    Parameters
    ----------
    seed, target, spacing, n_raters
        See :func:`~softseg.anatomy.subject.make_subject`.
    root : path-like, optional
        Cache root (default :func:`cache_root`).

    Returns
    -------
    folder : Path
        Holds the subject's files (as :func:`write_subject` writes them) and ``subject.json``.
    hit : bool
        True when the files were already cached.
    """
    from filelock import FileLock

    from softseg.io import write_json
    from softseg.outputs import output_folder

    spacing_list = [float(v) for v in check_spacing(spacing)]
    parameters = {"seed": int(seed), "target": str(target), "spacing": spacing_list,
                  "n_raters": int(n_raters)}
    base = Path(root) if root is not None else cache_root()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{base}: cannot create the cache folder ({exc.strerror}); set {CACHE_ENV}") from None
    folder = base / _cache_key(parameters)
    if (folder / "subject.json").is_file():
        return folder, True
    with FileLock(str(folder) + ".lock", timeout=600):
        if (folder / "subject.json").is_file():  # another process made it meanwhile
            return folder, True
        if folder.exists():
            shutil.rmtree(folder)  # a foreign or broken entry (no subject.json): regenerate
        subject = make_subject(seed=seed, target=target, spacing=spacing_list, n_raters=n_raters)
        with output_folder(folder) as tmp:
            write_subject(tmp, subject)
            record = {"parameters": parameters, "classes": list(subject.classes),
                      "shape": list(subject.shape), **_record(subject)}
            write_json(tmp / "subject.json", record)
    return folder, False
