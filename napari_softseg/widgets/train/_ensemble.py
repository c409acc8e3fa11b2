"""The Train dock's rater ensemble: one model per rater, trained one after another.

*One model per rater (rater ensemble)* is the protocol's ``NAME:ensemble`` candidate
(:mod:`softseg.protocol.ensemble`, the label-fusion paper's Conv-STAPLE-QUBIQ baseline) started
from the dock: each **member** is an ordinary run of the dock (:class:`~._run.TrainRun`,
:func:`~._run.run_training`: the same ``softseg train`` child, supervised the same way) whose
targets are one rater's:

* from open layers, the snapshot keeps that rater's target only (a K-class rater: its K maps);
  its rater id is the file name the training folder gives it
  (:func:`softseg.layers_dataset.safe_name` of the layer name, as the card records it);
* from a dataset folder, the member trains on :func:`softseg.protocol.ensemble.rater_view` of
  the folder (every subject with that rater's files only), written beside the member's model
  file as a folder of links (``m-rater-<id>.training-data/``: nothing is copied), because the
  training child reads folders; :func:`~softseg.protocol.ensemble.ensemble_raters` refuses a
  subject without one of the raters or two ids with one file name.

Members are named as the protocol names them (:func:`softseg.protocol.ensemble.member_model`):
``m.safetensors`` -> ``m-rater-<id>.safetensors``; a member trains the dock's recipe with the
members' fusion (:data:`~softseg.protocol.ensemble.MEMBER_FUSION`: the mean of one rater is the
rater). Prediction of the finished members is the Predict dock's ensemble
(:func:`napari_softseg._prediction.start_prediction` with ``uncertainty=("ensemble", n)``, i.e.
:func:`softseg.uncertainty.predict_ensemble`).

*Resume* continues a stopped sequence: a member whose model file exists (no checkpoint) is
kept, a member with a checkpoint resumes, the others train.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from napari_softseg._supervisor import Prestarter
from napari_softseg.widgets.train._history import checkpoint_of
from napari_softseg.widgets.train._run import TrainRun, run_training, training_data_folder
from softseg.errors import InputError

__all__ = ["ENSEMBLE_TEXT", "FINETUNE_REFUSAL", "EnsembleRun", "ensemble_run", "run_ensemble"]

#: The dock's name of the option (its check box), used in its messages.
ENSEMBLE_TEXT = "One model per rater (rater ensemble)"
_OPTION = "'One model per rater'"
_SUFFIX = ".safetensors"
#: Fine-tuning starts one model from one model file: not an ensemble.
FINETUNE_REFUSAL = f"fine-tuning trains one model; untick {_OPTION} to fine-tune"


@dataclass(frozen=True)
class EnsembleRun:
    """The members of one rater ensemble, in rater order.

    Attributes
    ----------
    raters : tuple of str
        Rater ids (R >= 2), one per member.
    members : tuple of TrainRun
        Member k trains ``raters[k]``'s targets into ``members[k].out``.
    views : tuple
        Per member, the :class:`softseg.data.DatasetInfo` its link folder is written from (runs
        from a dataset folder), else ``None``.
    kept : tuple of bool
        Per member, its model file is kept as it is (*Resume* after that member finished).
    """

    raters: tuple[str, ...]
    members: tuple[TrainRun, ...]
    views: tuple[Any, ...]
    kept: tuple[bool, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        """The members' model files."""
        return tuple(m.out for m in self.members)


def _too_few(what: str) -> InputError:
    return InputError("a rater ensemble trains one model per rater and needs 2 or more raters; "
                      f"{what} or untick {_OPTION}")


def ensemble_run(base: TrainRun) -> EnsembleRun:
    """The members of ``base`` (a run of the dock over every chosen rater).

    Parameters
    ----------
    base : TrainRun
        The run the dock would start without the option: its configuration, model file (the
        members' stem), resume flag, and either the layer snapshot or the dataset folder.

    Returns
    -------
    EnsembleRun

    Raises
    ------
    InputError
        Fewer than two raters (layers or folder), a subject without one of the raters, two
        rater ids with one file name, fine-tuning (:data:`FINETUNE_REFUSAL`).
    """
    from softseg.protocol.ensemble import MEMBER_FUSION, ensemble_raters, member_model

    if base.init is not None:  # the dock refuses it first, in its words
        raise InputError(FINETUNE_REFUSAL)
    config = base.config.updated({"data": {"fusion": MEMBER_FUSION}}, source="training settings")
    out = base.out
    stem = out.name[: -len(_SUFFIX)] if out.name.endswith(_SUFFIX) else out.stem
    if base.layers is not None:
        from softseg.layers_dataset import safe_name

        names = list(base.layers.targets)
        if len(names) < 2:
            raise _too_few(f"{len(names)} rater layer chosen: choose more raters")
        raters = tuple(safe_name(n) for n in names)
        views: tuple[Any, ...] = (None,) * len(names)
        layers = [_rater_layers(base.layers, n) for n in names]
    else:
        from softseg.data import scan_dataset
        from softseg.protocol.ensemble import rater_view

        assert base.folder is not None
        info = scan_dataset(base.folder, allow_preannotated=base.allow_preannotated)
        if len(info.rater_ids) < 2:  # (scan_dataset refuses a subject without raters)
            raise _too_few(f"the dataset folder has 1 (rater {info.rater_ids[0]}): add "
                           "another rater's files")
        raters = ensemble_raters(info, f"{config.candidate}:ensemble")
        views = tuple(rater_view(info, r) for r in raters)
        layers = [None] * len(raters)
    paths = [Path(member_model(str(out.parent), stem, r)) for r in raters]
    if len(set(paths)) != len(paths):
        raise InputError(f"two raters ({', '.join(raters)}) would share a model file name; "
                         "rename one rater layer")
    members, kept = [], []
    for path, lay in zip(paths, layers):
        ckpt = checkpoint_of(path).exists()
        kept.append(bool(base.resume and path.is_file() and not ckpt))
        members.append(replace(base, config=config, out=path, resume=bool(base.resume and ckpt),
                               layers=lay, folder=None if lay is not None else
                               training_data_folder(path)))
    return EnsembleRun(raters=raters, members=tuple(members), views=views, kept=tuple(kept))


def _rater_layers(snap: Any, name: str) -> Any:
    """The layer snapshot with one target: rater ``name`` (its sidecar, its pre-annotation)."""
    return replace(
        snap,
        targets={name: snap.targets[name]},
        sidecars={k: v for k, v in snap.sidecars.items() if k == name},
        preannotated=[p for p in snap.preannotated if p == name],
        source={**snap.source, "targets": [name]},
    )


def write_rater_view(view: Any, folder: Path) -> Path:
    """Write ``view`` (:func:`softseg.protocol.ensemble.rater_view`) as a folder of links.

    Each subject's image files and its one rater's files (with their JSON sidecars), and the
    root's ``dataset.json``, are symbolic links to the dataset's files: nothing is copied. A
    previous folder of that name (the user confirmed replacing the member) is removed first
    (its links only; :func:`shutil.rmtree` does not follow them).
    """
    from softseg.io import sidecar_path

    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    try:
        folder.mkdir(parents=True)
        meta = Path(view.root) / "dataset.json"
        if meta.is_file():
            os.symlink(meta.resolve(), folder / meta.name)
        for subject in view.subjects:
            dest = folder / subject.name
            dest.mkdir()
            for f in (*subject.images, *subject.raters):
                for path in (Path(f), sidecar_path(f)):
                    if path.is_file() and not (dest / path.name).exists():
                        os.symlink(path.resolve(), dest / path.name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-written is left behind
        raise
    return folder


def run_ensemble(ens: EnsembleRun, *, prestarter: Prestarter | None = None,
                 stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
    """Worker generator: train the members one after another (:func:`~._run.run_training`).

    Yields ``("member", k, R, rater, path, kept)`` before member ``k`` (1-based), then that
    member's items (:func:`~._run.run_training`), then ``("member done", k, outcome)``. Stops
    after a member that did not finish (cancelled, failed) and before a member when ``stop()``
    is true (Cancel between two members). Returns the last member's
    :class:`~napari_softseg._supervisor.Outcome` (``None`` when none was started).
    """
    n = len(ens.members)
    outcome = None
    for k, (rater, run, view, kept) in enumerate(zip(ens.raters, ens.members, ens.views,
                                                     ens.kept), start=1):
        if stop():
            break
        yield ("member", k, n, rater, run.out, kept)
        if kept:
            continue
        if view is not None:
            assert run.folder is not None
            if not (run.resume and run.folder.is_dir()):
                write_rater_view(view, run.folder)
        outcome = yield from run_training(run, prestarter=prestarter)
        yield ("member done", k, outcome)
        if not outcome.ok:
            break
    return outcome
