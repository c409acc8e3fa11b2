"""What SoftSeg buys you: the papers' claims, measured on the partial-volume phantom.

The experiment is the papers' repeated-training protocol, run by the same engine as
``softseg compare --train`` (:func:`softseg.protocol.run_protocol`, through the CLI):

* a phantom dataset from :func:`softseg.phantom.write_dataset` (MR-like image, four raters who
  disagree, and the partial-volume **soft truth** ``truth_soft.nii.gz``);
* the candidates ``conventional`` (Hard-Sig-Dice), ``softseg`` (Soft-ReLU-Wing), the three
  one-feature ablations ``hard-relu-wing``, ``soft-sig-wing``, ``soft-relu-dice``, plus
  ``soft-sig-bce`` (cross-entropy, Bertels) and ``gdl-boundary`` (Kervadec) — all trained on the
  **rater average** (binarised at 0.5 by the hard candidates);
* the multi-rater question of the label-fusion paper: ``conventional`` and ``softseg`` each with
  STAPLE, average and random-rater fusion (the ``average`` entries are the two ablation rows);
* ``repeats`` trainings per candidate on paired random splits (repeat *k* uses seed *k* and the
  same split for every candidate), evaluation on each split's held-out test subjects against the
  soft truth, mean ± std over repeats and a two-sided Wilcoxon signed-rank test
  (:func:`softseg.compare.summarize`) against ``softseg`` (ablation table, SoftSeg paper) and
  against ``conventional:staple`` (fusion table, label-fusion paper).

The candidates are trained by ``--shards`` parallel ``softseg compare --train ... --resume``
processes (single-threaded each; splits are paired across shards because they depend only on
the seed). Every shard is resumable; running this script again with the same options continues
where it stopped and then rebuilds the results. ``--report-only`` builds the results from the
repeats finished so far.

On top of the engine's table (Dice at the optimal threshold, precision, recall, AVD, RVD, soft
RVD, MSE against the soft truth, LTPR/LFDR, ECE, Brier against the rater average, entropy vs rater
entropy), a second pass re-predicts every test subject with every model and adds: ECE against
STAPLE (the label-fusion paper's reference), ECE inside the structure's neighbourhood, a
calibration gap against the soft truth, the fraction of soft (0.05 <= p < 0.95) predictions and
the detection rate of the phantom's small lesions (``lesions.nii.gz``).

Run::

    .venv/bin/python benchmarks/softseg_claims.py --budget cpu       # < 1 h on 2 CPU cores
    .venv/bin/python benchmarks/softseg_claims.py --budget cpu-long  # convergence check (40 epochs)
    .venv/bin/python benchmarks/softseg_claims.py --budget paper     # the papers' settings, GPU
    .venv/bin/python benchmarks/softseg_claims.py --budget cpu-issue15  # issue 15, <= 40 min

Issue 15 part 4 (budget ``cpu-issue15``: the cpu budget's settings and splits): ``conventional``,
the new default ``softseg``, the paper's recipe ``softseg-paper``, ``soft-relu-dice`` (soft
Dice), ``soft-relu-dml`` (Dice semimetric loss), the rater ensemble ``conventional:ensemble`` (one
conventional model per rater, predictions averaged) and two evaluation-only rows of each repeat's
trained ``conventional`` model: ``conventional+mc-dropout`` (10 passes) and ``conventional+tta``
(8 passes), the mean map of :func:`softseg.uncertainty.predict_with_uncertainty` evaluated at the
model's threshold like every other row (:func:`uncertainty_units`). Table ``issue15``: mean ± sd
and the Wilcoxon p against ``conventional`` of Dice, ECE, soft RVD, the entropy-vs-rater-entropy
error, the entropy-vs-error AUROC (``softseg compare``'s uncertainty section) and the
target-free-slice metrics. ``--candidates`` replaces any phantom budget's candidates and
evaluation rows; ``--foreground-oversampling F`` sets
:attr:`softseg.protocol.ProtocolConfig.foreground_oversampling` (recorded in the settings).

Writes ``benchmarks/results/softseg_claims.json`` (+ ``.csv`` and ``.md`` tables; other budgets:
``softseg_claims_BUDGET.*``) and the figures ``docs/claims-{reliability,histogram,overlay}.png``
(other budgets: ``docs/claims-BUDGET-*.png``). Models, datasets and run states live in
``build/softseg_claims/BUDGET`` (git-ignored).

Real anatomy (``--study mni-tissue``; the phantom study above stays the default, its files
untouched): a dataset from :func:`softseg.anatomy.write_dataset` (= ``softseg sample-data mni``:
MNI ICBM152 subjects, 3 tissue classes grey matter / white matter / csf, 4 raters per class,
partial-volume truth per class), the K-class candidates ``conventional`` and ``softseg``, each
trained on the multi-label STAPLE and on the per-class rater average, on paired random splits.
The engine's K-class record (:func:`softseg.protocol.run_protocol`, reference = the truth's
argmax) gives per class Dice, RVD, soft RVD, ECE (one-vs-rest) and the reliability data, and per
subject the multi-class ECE (confidence = max class probability) and accuracy; a second pass
calls the same engine (:func:`softseg.compare.evaluate_subject_classes`) with the partial-volume
class maps as reference for the soft-volume error per tissue (``pv_*`` keys). p-values: SoftSeg
vs conventional with the same fusion, two-sided Wilcoxon signed-rank paired by repeat::

    .venv/bin/python benchmarks/softseg_claims.py --study mni-tissue            # cpu, <= 30 min
    .venv/bin/python benchmarks/softseg_claims.py --study mni-tissue --budget paper   # GPU

Writes ``benchmarks/results/softseg_claims_mni-tissue.{json,csv,md}`` and
``docs/claims-mni-tissue-reliability.png`` (work folder ``build/softseg_claims/mni-tissue``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"

ABLATION = ("softseg", "conventional", "hard-relu-wing", "soft-sig-wing", "soft-relu-dice",
            "soft-sig-bce", "gdl-boundary")
FUSION = ("conventional:staple", "conventional", "conventional:random",
          "softseg:staple", "softseg", "softseg:random")
#: how the fusion table names the two default-fusion (average) candidates
FUSION_ALIAS = {"conventional": "conventional:average", "softseg": "softseg:average"}
ALL = ABLATION + tuple(c for c in FUSION if c not in ABLATION)
#: the real-anatomy study (--study mni-tissue): conventional vs SoftSeg, STAPLE and average fusion
MNI_CANDIDATES = ("conventional:staple", "conventional", "softseg:staple", "softseg")
#: each shard one conventional and one SoftSeg candidate (similar cost)
MNI_SHARDS = (("conventional:staple", "softseg"), ("softseg:staple", "conventional"))
MNI_CLASSES = ("grey matter", "white matter", "csf")
#: the small-lesion study (--study mni-lesion, issue 15): one shard per candidate
LESION_CANDIDATES = ("conventional", "softseg", "softseg-wing", "softseg-paper", "soft-relu-dml")
EPOCHS_MNI_CPU = 70
#: issue 15 part 4 on the phantom (budget cpu-issue15): the new default, the paper's recipe, the
#: Dice semimetric candidate, the rater ensemble (one conventional model per rater) and the
#: evaluation-only uncertainty rows of each repeat's conventional model; p against conventional
ISSUE15 = ("conventional", "softseg", "softseg-wing", "softseg-paper", "soft-relu-dice",
           "soft-relu-dml", "conventional:ensemble")
#: two shards of similar cost: the ensemble trains one model per rater (4 on the phantom), so
#: 1 + 4 = 5 trainings per repeat against 4
ISSUE15_SHARDS = (("conventional", "conventional:ensemble"),
                  ("softseg", "softseg-wing", "softseg-paper", "soft-relu-dice", "soft-relu-dml"))
#: evaluation-only rows: name -> (trained candidate, softseg.uncertainty method, passes); the
#: names are the candidate plus the ``softseg predict`` flag (``--mc-dropout N``, ``--tta N``)
EVALUATION_ROWS = {
    "conventional+mc-dropout": ("conventional", "mc_dropout", 10),
    "conventional+tta": ("conventional", "tta", 8),
}
#: raters of the phantom dataset (make_dataset): members of a NAME:ensemble candidate
N_RATERS = 4
#: two shards of similar cost (gdl-boundary computes distance maps every step)
SHARDS = {
    1: (ALL,),
    2: (("softseg", "conventional", "soft-sig-bce", "soft-relu-dice", "hard-relu-wing",
         "soft-sig-wing"),
        ("gdl-boundary", "conventional:staple", "softseg:staple", "conventional:random",
         "softseg:random")),
}


@dataclass(frozen=True)
class Budget:
    """Every setting of one run (stored in the JSON)."""

    n_subjects: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    repeats: int
    epochs: int
    patience: int
    batch_size: int
    lr: float
    crop: tuple[int, int]
    width: int
    depth: int
    fusion: str
    device: str
    shards: int
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    candidates: tuple[str, ...] = ALL
    why: str = ""
    study: str = "phantom"
    #: evaluation-only rows (keys of :data:`EVALUATION_ROWS`), computed from trained candidates
    evaluation_rows: tuple[str, ...] = ()
    #: share of training samples drawn from slices that hold the structure (nnU-Net-style
    #: foreground oversampling); 0 = uniform sampling, as every budget measured so far
    foreground_oversampling: float = 0.0
    #: earlier runs (folders under build/softseg_claims/) whose finished units this budget reuses
    #: where they are exactly its own (:func:`reuse_units`); its own folder's superseded shards
    #: are always looked at
    reuse_units_of: tuple[str, ...] = ()

    def shard_lists(self) -> tuple[tuple[str, ...], ...]:
        """The candidates of each parallel shard."""
        if self.study == "mni-tissue" and self.shards == 2 and self.candidates == MNI_CANDIDATES:
            return MNI_SHARDS
        if self.study == "mni-lesion" and self.shards == 1:
            return (self.candidates,)
        if self.study == "mni-lesion":  # pairs (a comparison needs two): same cost each
            n = len(self.candidates)
            pairs = tuple(self.candidates[i:i + 2] for i in range(0, n - 3 if n % 2 else n, 2))
            return pairs + ((self.candidates[n - 3:],) if n % 2 and n >= 3 else ())
        if self.candidates == ALL:
            return SHARDS[self.shards]
        if self.shards == 1:
            return (self.candidates,)
        if self.candidates == ISSUE15:
            return ISSUE15_SHARDS
        if any(c.endswith(":ensemble") for c in self.candidates):
            return balanced_shards(self.candidates)
        half = (len(self.candidates) + 1) // 2
        return (self.candidates[:half], self.candidates[half:])


def training_cost(candidate: str) -> int:
    """Trainings one repeat of ``candidate`` runs (a rater ensemble: one per rater)."""
    return N_RATERS if candidate.endswith(":ensemble") else 1


def balanced_shards(cands: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two shards of similar :func:`training_cost`, each with at least two candidates (a
    protocol run compares two or more); candidates keep their order within a shard."""
    if len(cands) < 4:
        raise SystemExit(f"two shards need at least 4 candidates; got {len(cands)} "
                         f"({', '.join(cands)}); use --shards 1")
    side: dict[str, int] = {}
    load = [0, 0]
    for c in sorted(cands, key=lambda c: -training_cost(c)):  # largest first, stable
        i = int(load[1] < load[0])
        side[c] = i
        load[i] += training_cost(c)
    for i in (0, 1):  # a shard of one candidate takes the other's cheapest
        if sum(v == i for v in side.values()) < 2:
            move = min((c for c in cands if side[c] != i), key=training_cost)
            side[move] = i
    return (tuple(c for c in cands if side[c] == 0), tuple(c for c in cands if side[c] == 1))


BUDGETS = {
    # 66 trainings (11 candidates x 6 repeats) in ~40 CPU-minutes: ~35 s each, single-threaded.
    "cpu": Budget(
        n_subjects=10, shape=(96, 96, 32), spacing=(1.0, 1.0, 2.0), repeats=6, epochs=12,
        patience=12, batch_size=8, lr=1e-3, crop=(64, 64), width=8, depth=3, fusion="average",
        device="cpu", shards=2,
        why=("2 shared CPU cores, < 1 h: the default phantom grid (96x96x32 at 1x1x2 mm, so the "
             "partial-volume truth is untouched); 10 subjects -> 6 train / 2 val / 2 test per "
             "split; 6 repeats, the fewest for which a two-sided Wilcoxon test can reach "
             "p < 0.05 (2/2^6 = 0.031); U-Net depth 3 as the paper but width 8 (paper 32); "
             "64x64 centre crops for training (the whole slice, 96x96, is predicted at test "
             "time); 12 epochs without early stopping (the best validation-loss epoch is kept); "
             "batch 8, Adam 1e-3 + cosine annealing, paper augmentation; two single-threaded "
             "shards (two threads per process thrash on a loaded 2-core machine)")),
    # Convergence check of the cpu budget: the same recipe trained 3.3x longer, four candidates.
    "cpu-long": Budget(
        n_subjects=10, shape=(96, 96, 32), spacing=(1.0, 1.0, 2.0), repeats=6, epochs=40,
        patience=40, batch_size=8, lr=1e-3, crop=(64, 64), width=8, depth=3, fusion="average",
        device="cpu", shards=2,
        candidates=("conventional", "soft-sig-bce", "softseg", "soft-relu-dice"),
        why=("convergence check of the cpu budget: identical settings (same splits) but 40 "
             "epochs instead of 12, for conventional, soft-sig-bce, softseg and soft-relu-dice")),
    # Issue 15 part 4: the cpu budget's settings and splits, the issue's candidates; 54
    # trainings (9 per repeat: the ensemble trains 4) + MC dropout / TTA evaluation rows.
    "cpu-issue15": Budget(
        n_subjects=10, shape=(96, 96, 32), spacing=(1.0, 1.0, 2.0), repeats=6, epochs=12,
        patience=12, batch_size=8, lr=1e-3, crop=(64, 64), width=8, depth=3, fusion="average",
        device="cpu", shards=2, candidates=ISSUE15, evaluation_rows=tuple(EVALUATION_ROWS),
        reuse_units_of=("cpu-issue15-dml",),
        why=("issue 15 part 4 on 2 shared CPU cores, <= 40 min wall: the cpu budget's settings "
             "(same dataset, seed and paired splits, 12 epochs, 6 repeats) for conventional, "
             "the new default softseg, the previous default softseg-wing, the paper's recipe "
             "softseg-paper, soft-relu-dice with "
             "today's soft Dice, soft-relu-dml with the Dice semimetric loss and the rater "
             "ensemble conventional:ensemble (one conventional model per rater, 4 trainings); "
             "MC dropout (10 passes) and TTA (8 passes) of each repeat's conventional model as "
             "evaluation-only rows at its threshold; p: Wilcoxon against conventional; two "
             "shards of 5 and 5 trainings per repeat")),
    # Convergence check of issue 15's defaults: cpu-long's settings and splits, the new softseg
    # and soft-relu-dml against conventional (softseg-paper is cpu-long's "softseg" row).
    "cpu-long-issue15": Budget(
        n_subjects=10, shape=(96, 96, 32), spacing=(1.0, 1.0, 2.0), repeats=6, epochs=40,
        patience=40, batch_size=8, lr=1e-3, crop=(64, 64), width=8, depth=3, fusion="average",
        device="cpu", shards=1,
        candidates=("conventional", "softseg", "softseg-wing", "soft-relu-dml"),
        why=("convergence check of issue 15's candidates: cpu-long's settings and splits (40 "
             "epochs) for conventional, today's softseg, the previous default softseg-wing and "
             "soft-relu-dml; the published SoftSeg is cpu-long's softseg row (measured before "
             "issue 15)")),
    # The papers' settings (SoftSeg Table 1 / label-fusion Table 5) for a GPU.
    "paper": Budget(
        n_subjects=20, shape=(96, 96, 32), spacing=(1.0, 1.0, 2.0), repeats=10, epochs=200,
        patience=50, batch_size=8, lr=1e-3, crop=(128, 128), width=32, depth=3,
        fusion="average", device="auto", shards=1,
        why=("papers' protocol: U-Net depth 3, width 32, dropout 0.3, batch 8, Adam 1e-3 + "
             "cosine annealing, at most 200 epochs with early stopping (patience 50, 0.001), "
             "128x128 crops (the 96x96 phantom slices are padded), 10 repeats (MS lesions: 10 "
             "trainings per candidate), 20 subjects")),
}

#: budgets of the real-anatomy study (--study mni-tissue); ``shape`` is unused there (the grid is
#: the MNI head's bounding box + 12 mm at ``spacing``)
MNI_BUDGETS = {
    # 12 trainings (4 candidates x 3 repeats) in <= 30 min wall on 2 shared CPU cores
    "cpu": Budget(
        n_subjects=8, shape=(0, 0, 0), spacing=(4.0, 4.0, 4.0), repeats=3, epochs=EPOCHS_MNI_CPU,
        patience=EPOCHS_MNI_CPU, batch_size=8, lr=1e-3, crop=(48, 48), width=8, depth=3,
        fusion="average", device="cpu", shards=2, candidates=MNI_CANDIDATES, study="mni-tissue",
        why=("2 shared CPU cores, <= 30 min wall: 8 MNI subjects (softseg sample-data mni, seed 0, "
             "4 raters per class) at 4 mm isotropic (the head's 52x43 axial slices; the 2-4 mm "
             "cortex becomes mostly partial volume) -> 4 train / 2 val / 2 test per split; "
             "3 repeats (too few for a Wilcoxon test to reach p < 0.05: the smallest two-sided "
             "p with 3 pairs is 0.25); U-Net depth 3, width 8 (paper 32); 48x48 crops (the whole "
             "slice is predicted at test time); 70 epochs without early stopping (the best "
             "validation-loss epoch is kept); batch 8, Adam 1e-3 + cosine annealing, paper "
             "augmentation; two single-threaded shards")),
    # The papers' settings for a GPU, on the default 2 mm grid (not run here).
    "paper": Budget(
        n_subjects=20, shape=(0, 0, 0), spacing=(2.0, 2.0, 2.0), repeats=10, epochs=200,
        patience=50, batch_size=8, lr=1e-3, crop=(128, 128), width=32, depth=3,
        fusion="average", device="auto", shards=1, candidates=MNI_CANDIDATES, study="mni-tissue",
        why=("papers' protocol on the default 2 mm MNI grid (103x85 axial slices, padded to "
             "128x128 crops): U-Net depth 3, width 32, batch 8, Adam 1e-3 + cosine annealing, at "
             "most 200 epochs with early stopping (patience 50), 10 repeats, 20 subjects")),
}

#: budgets of the small-lesion study (--study mni-lesion, issue 15)
LESION_BUDGETS = {
    # 30 trainings (5 candidates x 6 repeats) in ~75 min wall on 2 shared CPU cores; the
    # finished units of the runs before softseg's recipe changed are reused (reuse_units)
    "cpu": Budget(
        n_subjects=8, shape=(0, 0, 0), spacing=(2.0, 2.0, 2.0), repeats=6, epochs=60,
        patience=60, batch_size=8, lr=1e-3, crop=(64, 64), width=8, depth=3,
        fusion="staple", device="cpu", shards=2, candidates=LESION_CANDIDATES,
        study="mni-lesion", test_fraction=0.25, val_fraction=0.25, foreground_oversampling=0.33,
        reuse_units_of=("mni-lesion-cpu-softseg-dml",),
        why=("2 shared CPU cores, ~75 min wall: 8 MNI subjects with 6-12 MS-like lesions of "
             "2-8 mm each (softseg sample-data mni --target lesion --lesion-count 6 12, seed 0, "
             "4 raters who miss and shift lesions), at 2 mm isotropic (103x85 axial slices; "
             "about 80 % of the slices hold no lesion); trained on the raters' STAPLE "
             "probability (hard candidates: its consensus); 4 train / 2 val / 2 test per split; "
             "6 repeats (the fewest for which a two-sided Wilcoxon test can reach p < 0.05); "
             "U-Net depth 3, width 8; 64x64 centre crops (they hold every lesion: lesions lie "
             "in the white matter); nnU-Net's foreground oversampling 0.33 for every candidate "
             "(a third of the samples from slices that hold a lesion); 60 epochs without early "
             "stopping (the best validation-loss epoch is kept); batch 8, Adam 1e-3 + cosine "
             "annealing, paper augmentation; single-threaded shards of two or three candidates")),
    # The papers' settings on the same data, for a GPU (issue 15's open question: does SoftSeg
    # find more small lesions once trained as the papers train it?). Not run here.
    "paper": Budget(
        n_subjects=8, shape=(0, 0, 0), spacing=(2.0, 2.0, 2.0), repeats=10, epochs=200,
        patience=50, batch_size=8, lr=1e-3, crop=(128, 128), width=32, depth=3,
        fusion="staple", device="auto", shards=1, candidates=LESION_CANDIDATES,
        study="mni-lesion", test_fraction=0.25, val_fraction=0.25, foreground_oversampling=0.33,
        why=("papers' protocol (SoftSeg Table 1: U-Net depth 3, width 32, batch 8, Adam 1e-3 + "
             "cosine annealing, at most 200 epochs with early stopping, patience 50; 10 repeats "
             "as the paper's MS-lesion trainings) on the cpu budget's lesion data, splits and "
             "oversampling; 128x128 crops (the 103x85 slices are padded); one shard on a GPU")),
    # the first run of the study (issue 15, before foreground oversampling existed)
    "cpu-no-oversampling": Budget(
        n_subjects=8, shape=(0, 0, 0), spacing=(2.0, 2.0, 2.0), repeats=6, epochs=60,
        patience=60, batch_size=8, lr=1e-3, crop=(64, 64), width=8, depth=3,
        fusion="staple", device="cpu", shards=2,
        candidates=("conventional", "softseg-wing", "softseg-paper", "softseg-floor"),
        study="mni-lesion", test_fraction=0.25, val_fraction=0.25,
        why=("the cpu budget with every slice once per epoch (no foreground oversampling), and "
             "softseg-floor instead of soft-relu-dml: the study's first run (softseg-wing was "
             "then called softseg)")),
}

# ------------------------------------------------------------------------------ the papers
PAPERS = {
    "ece_percent": {
        "source": "Lemay et al. 2022 (label fusion), section 3.3, average over fusion methods",
        "conventional": {"SCGM": 16.2, "MS lesions": 20.4},
        "softseg": {"SCGM": 2.9, "MS lesions": 2.4},
    },
    "dice_percent": {
        "source": "Gros et al. 2021 (SoftSeg), Tables 3-5",
        "SCGM": {"conventional": 82.3, "hard-relu-wing": 83.7, "soft-relu-dice": 83.7,
                 "soft-sig-wing": 52.9, "softseg": 84.3, "p_softseg_vs_conventional": 0.0011},
        "MS lesions": {"conventional": 42.7, "hard-relu-wing": 45.1, "soft-relu-dice": 45.3,
                       "soft-sig-wing": 45.1, "softseg": 46.0},
        "BraTS": {"conventional": 63.6, "hard-relu-wing": 57.2, "soft-relu-dice": 69.8,
                  "soft-sig-wing": 55.7, "softseg": 70.1},
    },
    "rvd_percent": {
        "source": "Gros et al. 2021, Tables 3 and 5 (RVD = (V_gt - V_pred) / V_gt)",
        "SCGM": {"conventional": -1.1, "softseg": -1.6},
        "BraTS": {"conventional": -29.9, "softseg": -8.1},
    },
    "ltpr_percent": {
        "source": "Gros et al. 2021, Table 4 (MS lesions)",
        "conventional": {"ltpr": 34.1, "lfdr": 61.9},
        "softseg": {"ltpr": 38.6, "lfdr": 63.0},
    },
    "volume_error": {
        "source": "Bertels et al. 2019, Table 1, U-Net, ISLES 2017 / 2018 (mL, V_pred - V_gt)",
        "cross-entropy": {"ISLES 2017": -2.875, "ISLES 2018": -0.878},
        "soft Dice": {"ISLES 2017": 13.44, "ISLES 2018": 5.442},
    },
    "entropy_mae": {
        "source": "Lemay et al. 2022, Table 2: MAE of conventional models on average 46% (SCGM) "
                  "and 45% (MS) higher than SoftSeg models",
    },
}


# ------------------------------------------------------------------------------ running
def _python() -> str:
    return sys.executable


def make_dataset(folder: Path, b: Budget) -> Path:
    """Write the phantom dataset once (reused when its generator settings match)."""
    from softseg.phantom import write_dataset

    meta_path = folder / "dataset.json"
    want = {"seed": b.seed, "shape": list(b.shape), "spacing": list(b.spacing)}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        gen = meta.get("generator", {})
        if (len(meta.get("subjects", [])) == b.n_subjects
                and all(gen.get(k) == v for k, v in want.items())):
            return folder
        raise SystemExit(f"{folder} holds another dataset; remove it or use another --work")
    folder.parent.mkdir(parents=True, exist_ok=True)
    return write_dataset(folder, n_subjects=b.n_subjects, shape=b.shape, spacing=b.spacing,
                         n_raters=4, seed=b.seed)


def shard_command(dataset: Path, out: Path, cands: tuple[str, ...], b: Budget) -> list[str]:
    """The ``softseg compare --train`` command line equivalent to one shard (for the record)."""
    return [
        "softseg", "compare", "--train", *cands,
        "--dataset", str(dataset), "--out", str(out), "--ground-truth", "truth", "--no-stats",
        "--repeats", str(b.repeats), "--epochs", str(b.epochs), "--patience", str(b.patience),
        "--batch-size", str(b.batch_size), "--lr", str(b.lr),
        "--crop", str(b.crop[0]), str(b.crop[1]), "--width", str(b.width),
        "--depth", str(b.depth), "--fusion", b.fusion, "--device", b.device,
        "--seed", str(b.seed), "--test-fraction", str(b.test_fraction),
        "--val-fraction", str(b.val_fraction), "--resume",
        *(["--foreground-oversampling", str(b.foreground_oversampling)]
          if b.foreground_oversampling else []),
    ]


def has_foreground_oversampling() -> bool:
    """Whether the installed :class:`softseg.protocol.ProtocolConfig` takes
    ``foreground_oversampling`` (nnU-Net-style sampling of slices that hold the structure)."""
    from dataclasses import fields

    from softseg.protocol import ProtocolConfig

    return "foreground_oversampling" in {f.name for f in fields(ProtocolConfig)}


def protocol_config(cands: tuple[str, ...], b: Budget):
    """The :class:`softseg.protocol.ProtocolConfig` of one shard (what the CLI above builds)."""
    from softseg.protocol import ProtocolConfig

    extra: dict[str, Any] = {}
    if has_foreground_oversampling():
        extra["foreground_oversampling"] = b.foreground_oversampling
    elif b.foreground_oversampling:
        raise SystemExit("--foreground-oversampling: this softseg's ProtocolConfig has no "
                         "foreground_oversampling field; leave it at 0")
    return ProtocolConfig(
        candidates=tuple(cands), repeats=b.repeats, reference=None, stats=False,
        test_fraction=b.test_fraction, val_fraction=b.val_fraction, seed=b.seed,
        ground_truth="truth", epochs=b.epochs, patience=b.patience, batch_size=b.batch_size,
        crop=tuple(b.crop), width=b.width, depth=b.depth, lr=b.lr, fusion=b.fusion,
        device=b.device, **extra)


def modelfile_header_guard() -> bool:
    """Work around a loader bug if the installed softseg has it; True when the guard is on.

    ``softseg.modelfile._read_header`` (as of commit 0038cc0) refuses any safetensors file whose
    8-byte little-endian header length starts with the byte 0x80 (or the bytes "PK") as "a
    PyTorch pickle" -- about one model file in 256 (the header length depends on the metadata
    text). This self-test writes such a valid header; only when the installed reader refuses it
    is the reader replaced, in this benchmark process only, by one that recognises safetensors
    by its structure (length, then a JSON object) before looking for pickle/zip signatures.
    """
    import struct
    import tempfile

    from softseg import modelfile
    from softseg.errors import InputError

    if not hasattr(modelfile, "_read_header"):  # issue 12: headers are read by safetensors itself
        return False
    body = {"__metadata__": {"pad": ""}}
    raw = json.dumps(body).encode()
    raw = json.dumps({"__metadata__": {"pad": "x" * ((0x80 - len(raw)) % 256 + 256)}}).encode()
    assert len(raw) % 256 == 0x80
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw)
        try:
            modelfile._read_header(path)
            return False
        except InputError:
            pass
    original = modelfile._read_header

    def read_header(path: Path) -> dict[str, Any]:
        with open(path, "rb") as fh:
            head = fh.read(9)
        if len(head) == 9 and head[8:9] == b"{":
            (n,) = struct.unpack("<Q", head[:8])
            if 2 <= n <= modelfile._MAX_HEADER:
                with open(path, "rb") as fh:
                    fh.seek(8)
                    header = json.loads(fh.read(n).decode("utf-8"))
                if isinstance(header, dict):
                    return header
        return original(path)

    modelfile._read_header = read_header
    return True


def worker(dataset: Path, out: Path, cands: tuple[str, ...], b: Budget) -> int:
    """One shard: :func:`softseg.protocol.run_protocol` (resumable), progress on stdout."""
    import torch

    from softseg.protocol import run_protocol

    torch.set_num_threads(1)
    guard = modelfile_header_guard()
    print(f"[worker] modelfile header guard: {'ON' if guard else 'not needed'}", flush=True)
    (out.parent / f"{out.name}.guard.json").write_text(json.dumps({"modelfile_guard": guard}))
    last = [""]

    def on_progress(p) -> None:
        text = f"{p.done}/{p.total} {p.candidate} r{p.repeat} {p.stage} {p.epoch}/{p.epochs}"
        if p.stage != "train" or p.epoch in (0, p.epochs) or text[:20] != last[0][:20]:
            print(f"[worker] {time.strftime('%H:%M:%S')} {text}", flush=True)
        last[0] = text

    run_protocol(dataset, protocol_config(cands, b), out=out, resume=True, on_progress=on_progress)
    return 0


def recipe_is_current(folder: Path, record: dict[str, Any]) -> bool:
    """True when every model of a finished unit (``folder``/its ``models``) was trained with
    the recipe its candidate name has in the registry now (a renamed or changed recipe: False;
    :func:`softseg.protocol.stale_units` does the same for ``softseg compare --resume``)."""
    from softseg.protocol import stale_units

    return not stale_units(folder, {"unit": record})


def _dataset_fingerprint(folder: Path) -> str:
    """SHA-256 of a dataset folder's images as voxels and affines, by relative path (gzip
    headers hold a time stamp, so the files' bytes differ between two identical writes)."""
    import hashlib

    import nibabel as nib

    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.nii*")):
        img = nib.load(path)
        h.update(str(path.relative_to(folder)).encode())
        h.update(np.ascontiguousarray(np.asanyarray(img.dataobj)).tobytes())
        h.update(np.asarray(img.affine, dtype=np.float64).tobytes())
    return h.hexdigest()


def _renamed_record(record: dict[str, Any], new: str, old_ds: str, new_ds: str) -> dict[str, Any]:
    """A unit record of candidate spec ``record['candidate']`` as candidate ``new`` would have
    written it: its models' file names, the trainings' candidate name, the dataset path."""
    from softseg.protocol.reference import parse_candidate
    from softseg.protocol.units import _safe

    old = record["candidate"]
    rec = json.loads(json.dumps(record).replace(old_ds, new_ds))
    if old == new:
        return rec
    (old_name, _), (new_name, _) = parse_candidate(old), parse_candidate(new)
    a, b = f"models/{_safe(old)}-r", f"models/{_safe(new)}-r"

    def move(path: str) -> str:
        return b + path[len(a):] if path.startswith(a) else path

    rec["candidate"] = rec["plan"]["candidate"] = new
    rec["model"] = move(rec["model"])
    rec["models"] = [move(m) for m in rec.get("models", [])]
    for t in rec["plan"]["trainings"]:
        t["model"] = move(t["model"])
        if t["config"].get("candidate") == old_name:
            t["config"]["candidate"] = new_name
    return rec


def recipes_of(b: Budget) -> dict[str, dict[str, Any]]:
    """Each trained candidate's recipe as the registry has it now (``Candidate.as_dict``): what a
    results file's candidate names meant when it was written (names can get other recipes)."""
    from softseg.candidates import get_candidate
    from softseg.protocol.reference import parse_candidate

    names = dict.fromkeys(parse_candidate(c)[0] for c in b.candidates)
    return {n: get_candidate(n).as_dict() for n in names}


def supersede_stale_shards(work: Path, b: Budget) -> list[Path]:
    """Move aside (into ``work/superseded/``) each shard of an earlier run of this budget that
    holds a unit whose recipe is not its name's recipe now (the registry renamed or changed
    it), or whose candidates are not the shard's now, so that :func:`reuse_units` copies back
    what is still valid and the rest is trained. Returns the folders moved."""
    lists = b.shard_lists()
    moved = []
    for state_path in sorted(work.glob("shard-*/run_state.json")):
        saved = json.loads(state_path.read_text())
        folder = state_path.parent
        index = int(folder.name.split("-")[1])
        if (index < len(lists) and (saved.get("config") or {}).get("candidates") == list(lists[index])
                and all(recipe_is_current(folder, rec) for rec in saved.get("units", {}).values())):
            continue
        target = work / "superseded" / f"{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        target.parent.mkdir(exist_ok=True)
        folder.rename(target)
        moved.append(target)
    return moved


def reuse_units(work: Path, sources: list[Path], b: Budget) -> list[str]:
    """Copy into each shard of ``work`` that has no run state yet the finished units of
    ``sources`` (earlier runs' folders) that are exactly what this budget would train: the same
    plan (split, every training setting, the same dataset's voxels) and the recipe the unit's
    candidate has in the registry now, read from its model cards. A unit trained under another
    name with that recipe is copied under its new name (its files and records renamed). Each
    shard gets a run state listing what it holds, so that ``--resume`` trains only the rest.
    Returns the units copied, as ``CAND/rK``."""
    import shutil

    from softseg.data import scan_dataset
    from softseg.protocol.reference import parse_candidate
    from softseg.protocol.units import plan_units

    new_ds = str((work / "dataset").resolve())
    mine = _dataset_fingerprint(work / "dataset")
    pool: list[tuple[Path, str, dict[str, Any]]] = []  # (shard folder, its dataset, record)
    same: dict[str, bool] = {new_ds: True}  # dataset folder -> same voxels as ours (hashed once)
    for source in sources:
        states = sorted(source.glob("shard-*/run_state.json")) or sorted(source.glob("run_state.json"))
        for state_path in states:
            saved = json.loads(state_path.read_text())
            ds = saved["dataset"]
            if ds not in same:
                same[ds] = Path(ds).is_dir() and _dataset_fingerprint(Path(ds)) == mine
            if not same[ds]:
                continue
            pool += [(state_path.parent, ds, rec) for rec in saved.get("units", {}).values()]
    if not pool:
        return []
    info = scan_dataset(work / "dataset")
    copied = []
    for i, cands in enumerate(b.shard_lists()):
        shard = work / f"shard-{i}"
        if (shard / "run_state.json").exists():
            continue
        config = protocol_config(cands, b)
        units: dict[str, Any] = {}
        for plan in plan_units(info, config, out=shard):
            want = json.loads(json.dumps(plan.as_dict()))
            fusion = parse_candidate(plan.candidate)[1]
            for folder, ds, rec in pool:
                if rec.get("repeat") != plan.repeat or parse_candidate(rec["candidate"])[1] != fusion:
                    continue
                got = _renamed_record(rec, plan.candidate, ds, new_ds)
                if got["plan"] != want or not recipe_is_current(folder, got | {"models": rec.get("models"),
                                                                             "model": rec["model"]}):
                    continue
                (shard / "units").mkdir(parents=True, exist_ok=True)
                (shard / "models").mkdir(exist_ok=True)
                for src_model, dst_model in zip(rec.get("models") or [rec["model"]],
                                                got.get("models") or [got["model"]]):
                    shutil.copy2(folder / src_model, shard / dst_model)
                    hist = Path(src_model[:-len(".safetensors")] + ".history.csv")
                    if (folder / hist).exists():
                        shutil.copy2(folder / hist, shard / (dst_model[:-len(".safetensors")] + ".history.csv"))
                plan.record_path.write_text(json.dumps(got, indent=1))
                units[plan.uid] = got
                break
        if units:
            state = {"version": 1, "dataset": new_ds, "config": config.as_dict(), "units": units,
                     "jobs": {}, "failures": {}}
            (shard / "run_state.json").write_text(json.dumps(state, indent=1))
            copied += sorted(units)
    return copied


def run_shards(dataset: Path, work: Path, b: Budget, budget_name: str,
               overrides: list[str]) -> list[dict[str, Any]]:
    """Run (or resume) every shard in parallel; returns per-shard exit codes and times."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    procs = []
    for i, cands in enumerate(b.shard_lists()):
        out = work / f"shard-{i}"
        log = open(work / f"shard-{i}.log", "a", encoding="utf-8")  # noqa: SIM115
        cmd = [_python(), str(Path(__file__).resolve()), "--budget", budget_name,
               "--work", str(work), "--_worker", str(i), *overrides]
        print(f"[claims] shard {i}: {len(cands)} candidates -> {log.name}", flush=True)
        procs.append((i, cands, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=env, cwd=ROOT), log, time.perf_counter()))
    info = []
    for i, cands, proc, log, t0 in procs:
        rc = proc.wait()
        log.close()
        guard_file = work / f"shard-{i}.guard.json"
        guard = json.loads(guard_file.read_text()) if guard_file.exists() else {}
        info.append({"shard": i, "candidates": list(cands), "rc": rc,
                     "wall_s": round(time.perf_counter() - t0, 1),
                     "cli_equivalent": " ".join(shard_command(dataset, work / f"shard-{i}",
                                                               cands, b)), **guard})
        print(f"[claims] shard {i} finished with exit code {rc}", flush=True)
    return info


# ------------------------------------------------------------------------------ results
def load_units(work: Path) -> dict[str, dict[str, Any]]:
    """Finished (candidate, repeat) units of every shard, keyed ``CAND/rK``, with their folder."""
    units = {}
    for state_path in sorted(work.glob("shard-*/run_state.json")):
        state = json.loads(state_path.read_text(encoding="utf-8"))
        for uid, unit in state.get("units", {}).items():
            units[uid] = dict(unit, folder=str(state_path.parent))
    return units


def complete_repeats(units: dict[str, Any], cands: tuple[str, ...], repeats: int) -> list[int]:
    return [k for k in range(repeats) if all(f"{c}/r{k}" in units for c in cands)]


def repeat_rows(units, cands, repeats) -> dict[str, list[dict[str, float]]]:
    """One sample per repeat: the mean over its test subjects (as softseg.protocol does)."""
    from softseg import compare

    rows: dict[str, list[dict[str, float]]] = {c: [] for c in cands}
    for k in repeats:
        for c in cands:
            unit = units[f"{c}/r{k}"]
            subj = list(unit["subjects"].values())
            extra = unit.get("extra", {})
            keys = list(compare.METRICS) + sorted({m for e in extra.values() for m in e})
            mean = {}
            for m in keys:
                src = subj if m in compare.METRICS else list(extra.values())
                vals = np.array([math.nan if r.get(m) is None else r[m] for r in src], float)
                vals = vals[np.isfinite(vals)]
                mean[m] = float(vals.mean()) if vals.size else math.nan
            mean["train_seconds"] = float(unit.get("train_seconds", math.nan))
            rows[c].append(mean)
    return rows


def curves_of(units, cand, repeats):
    """Pooled plot data (reliability, histogram, sweeps) of a candidate over the repeats."""
    from softseg import compare

    out = []
    for k in repeats:
        d = units[f"{cand}/r{k}"]["curves"]
        kw = {key: (np.asarray(v, dtype=np.float64) if key != "subjects" else tuple(v))
              for key, v in d.items()}
        kw["hist_counts"] = kw["hist_counts"].astype(np.int64)
        for key in ("entropy", "rater_entropy"):
            kw[key] = np.array([math.nan if x is None else x for x in d[key]], dtype=np.float64)
        out.append(compare.Curves(**kw))
    return compare.pool_curves(out)


def table(rows, reference: str, names: dict[str, str] | None = None) -> dict[str, Any]:
    """Mean, std and Wilcoxon p-values (engine: softseg.compare.summarize) + extra metrics."""
    from softseg import compare

    summary = compare.summarize(rows, reference=reference, unit="repeats")
    extra_keys = sorted({m for rs in rows.values() for r in rs for m in r
                         if m not in compare.METRICS and m != "sample"})
    names = names or {}
    out: dict[str, Any] = {"reference": names.get(reference, reference), "n_repeats": None,
                           "candidates": {}}
    for cand, rs in rows.items():
        entry = {"mean": dict(summary.mean[cand]), "std": dict(summary.std[cand]),
                 "p": dict(summary.pvalues.get(cand, {}))}
        for m in extra_keys:
            vals = np.array([r.get(m, math.nan) for r in rs], float)
            fin = vals[np.isfinite(vals)]
            entry["mean"][m] = float(fin.mean()) if fin.size else math.nan
            entry["std"][m] = float(fin.std(ddof=1)) if fin.size > 1 else math.nan
            if cand != reference:
                p = compare.wilcoxon_pvalues({cand: vals, reference: [
                    r.get(m, math.nan) for r in rows[reference]]}, reference)[cand]
                entry["p"][m] = p
        entry["values"] = {m: [r.get(m) for r in rs] for m in
                           ("dice", "ece", "ece_staple", "ece_roi", "soft_rvd", "rvd", "mse",
                            "soft_fraction", "entropy_error", "uncertainty_auroc",
                            "lesion_tpr", "background_p", "empty_slice_max_p",
                            "empty_slice_fp")}
        out["candidates"][names.get(cand, cand)] = entry
        out["n_repeats"] = len(rs)
    return out


# ------------------------------------------------------------------------------ extra pass
EXTRA_VERSION = 4


def subject_references(info: Any, name: str) -> tuple[Any, ...]:
    """``(data, truth, staple, lesions, roi)`` of one phantom subject, display order:
    :class:`softseg.data.SubjectData`, the soft truth, STAPLE >= 0.5, the lesion labels
    (``lesions.nii.gz``) and the structure's neighbourhood (truth or any rater non-zero, dilated
    by 2 voxels)."""
    from scipy import ndimage

    from softseg.data import load_subject
    from softseg.io import load_volume
    from softseg.protocol import ground_truth

    sub = info.subject(name)
    data = load_subject(sub)
    truth = ground_truth(sub, data, "truth")
    staple = ground_truth(sub, data, "staple") >= 0.5
    lesions = np.asarray(data.geometry.to_display(
        load_volume(Path(sub.images[0]).parent / "lesions.nii.gz", label=True).array))
    roi = ndimage.binary_dilation((truth > 0) | (data.raters > 0).any(axis=0), iterations=2)
    return data, truth, staple, lesions, roi


def subject_extra(pred: np.ndarray, t: float, truth: np.ndarray, staple: np.ndarray,
                  lesions: np.ndarray, roi: np.ndarray) -> dict[str, float]:
    """The metrics the engine's table lacks, for one soft prediction (S, H, W) of one subject
    binarised at ``t``: ``truth`` its soft truth, ``staple`` the raters' STAPLE >= 0.5,
    ``lesions`` the phantom's lesion labels and ``roi`` the structure's neighbourhood
    (:func:`subject_references`)."""
    from softseg import metrics

    pb = pred >= np.float32(t)
    big = pred >= np.float32(0.05)
    inside = truth > 0  # the structure with its partial-volume border
    mid = (pred >= np.float32(0.05)) & (pred < np.float32(0.95))
    n_les = int(lesions.max())
    hit = [int(np.count_nonzero(pb & (lesions == k))) >= 3 for k in range(1, n_les + 1)]
    # calibration against the soft truth: 10 bins of p, |mean truth - mean p| weighted
    idx = np.minimum((pred[roi] * 10).astype(np.int64), 9)
    cnt = np.bincount(idx, minlength=10)
    sp = np.bincount(idx, weights=pred[roi], minlength=10)
    st = np.bincount(idx, weights=truth[roi], minlength=10)
    used = cnt > 0
    soft_gap = float(np.sum(np.abs(st[used] - sp[used])) / cnt.sum())
    return {
        "ece_staple": float(metrics.expected_calibration_error(pred, staple)),
        "ece_roi": float(metrics.expected_calibration_error(pred[roi], truth[roi])),
        "soft_calibration_gap": soft_gap,
        "soft_fraction": float(np.count_nonzero(mid & inside)
                               / max(1, np.count_nonzero(inside))),
        "soft_fraction_all": float(np.count_nonzero(big & (pred < np.float32(0.95)))
                                   / max(1, np.count_nonzero(big))),
        "truth_soft_fraction": float(np.count_nonzero(
            inside & (truth >= np.float32(0.05)) & (truth < np.float32(0.95)))
            / max(1, np.count_nonzero(inside))),
        # normalized ReLU: slices without any target whose maximum is normalised to 1
        "empty_slice_max_p": float(np.mean([pred[z].max() for z in range(pred.shape[0])
                                            if truth[z].max() == 0] or [math.nan])),
        # issue 15: share of the slices without the structure where p >= 0.5 somewhere
        "empty_slice_fp": float(np.mean([pred[z].max() >= np.float32(0.5)
                                         for z in range(pred.shape[0])
                                         if truth[z].max() == 0] or [math.nan])),
        "lesion_tpr": float(np.mean(hit)) if hit else math.nan,
        "soft_volume_ratio": float(pred.sum(dtype=np.float64)
                                   / truth.sum(dtype=np.float64)),
        # mean prediction far from the structure (outside the ROI): 0 when converged
        "background_p": float(pred[~roi].mean(dtype=np.float64)),
    }


def extra_metrics(units: dict[str, Any], dataset: Path, cache_path: Path) -> None:
    """Re-predict each unit's test subjects and add the metrics the engine's table lacks.

    Results are cached in ``cache_path`` (resumable) and merged into ``units[uid]["extra"]``.
    """
    from softseg.data import scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol import unit_prediction

    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    info = scan_dataset(dataset)
    subjects: dict[str, Any] = {}

    def subject(name):
        if name not in subjects:
            subjects[name] = subject_references(info, name)
        return subjects[name]

    def key(uid: str) -> str:  # a retrained model (same unit, new file) is evaluated again
        st = (Path(units[uid]["folder"]) / units[uid]["model"]).stat()
        return f"v{EXTRA_VERSION}:{uid}@{st.st_size}:{st.st_mtime_ns}"

    todo = [u for u in units if key(u) not in cache]
    for i, uid in enumerate(sorted(todo, key=lambda u: (int(u.rsplit("/r", 1)[1]), u))):
        unit = units[uid]
        loaded = [load_model(Path(unit["folder"]) / m) for m in unit.get("models") or [unit["model"]]]
        t = float(unit["threshold"])
        res = {}
        for name in unit["subjects"]:
            data, truth, staple, lesions, roi = subject(name)
            res[name] = subject_extra(unit_prediction(loaded, data), t, truth, staple, lesions,
                                      roi)
        cache[key(uid)] = res
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_path)
        print(f"[claims] extra metrics {i + 1}/{len(todo)}: {uid}", flush=True)
    for uid in units:
        units[uid]["extra"] = cache.get(key(uid), {})


# ------------------------------------------------------------------------------ uncertainty rows
UNCERTAINTY_VERSION = 1


def uncertainty_prediction(loaded: Any, data: Any, method: str, n: int, *,
                           seed: int = 0) -> np.ndarray:
    """The mean of ``n`` MC-dropout or TTA passes of one model over one subject, display order.

    :func:`softseg.uncertainty.predict_with_uncertainty` (what ``softseg predict --mc-dropout N``
    / ``--tta N`` writes as the prediction) on the subject's images in file axis order with its
    affine, as :func:`softseg.protocol.predict_subject` predicts a plain pass.

    Returns
    -------
    ndarray (S, H, W) float32 in [0, 1]
    """
    import nibabel as nib

    from softseg.io import Volume
    from softseg.uncertainty import predict_with_uncertainty

    images = np.asarray(data.geometry.from_display(data.images), dtype=np.float32)
    channels = [Volume(array=images[c], affine=np.asarray(data.geometry.affine, np.float64),
                       header=nib.Nifti1Header()) for c in range(images.shape[0])]
    maps = predict_with_uncertainty(loaded, channels if len(channels) > 1 else channels[0],
                                    method=method, n=n, seed=seed)
    return np.asarray(data.geometry.to_display(maps.mean), dtype=np.float32)


def uncertainty_units(units: dict[str, Any], rows: tuple[str, ...], dataset: Path,
                      cache_path: Path, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Evaluation-only units ``ROW/rK`` of :data:`EVALUATION_ROWS` (MC dropout, TTA).

    For every finished unit of the row's trained candidate, its model predicts the unit's test
    subjects with :func:`uncertainty_prediction` (seed ``seed + K``), and the mean map is
    evaluated as the protocol evaluates a unit (:class:`softseg.protocol.units.UnitEvaluation`:
    the engine's metric table against the soft truth, the raters for Brier and the entropy
    comparison, the entropy-vs-error AUROC) at the trained unit's threshold, plus
    :func:`subject_extra`. Cached in ``cache_path`` (resumable; a retrained model is evaluated
    again). Returns units shaped like the protocol's records (``subjects``, ``curves``,
    ``extra``, ``threshold``), with ``train_seconds`` of the trained model and
    ``predict_seconds`` of the passes over the test subjects.
    """
    from softseg.compare import json_safe
    from softseg.data import scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol.units import UnitEvaluation

    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    info = scan_dataset(dataset)
    subjects: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    todo = [(row, uid) for row in rows for uid in sorted(units)
            if uid.rsplit("/r", 1)[0] == EVALUATION_ROWS[row][0]]
    for i, (row, uid) in enumerate(todo):
        base, method, n = EVALUATION_ROWS[row]
        unit = units[uid]
        repeat = int(uid.rsplit("/r", 1)[1])
        model = Path(unit["folder"]) / unit["model"]
        st = model.stat()
        key = (f"u{UNCERTAINTY_VERSION}:{row}/r{repeat}:{method}:{n}:{seed + repeat}"
               f"@{st.st_size}:{st.st_mtime_ns}")
        if key not in cache:
            loaded = load_model(model)
            t = float(unit["threshold"])
            ev = UnitEvaluation(row, tuple(loaded.card.classes), [t])
            extra, seconds = {}, 0.0
            for name in unit["subjects"]:
                if name not in subjects:
                    subjects[name] = subject_references(info, name)
                data, truth, staple, lesions, roi = subjects[name]
                t0 = time.perf_counter()
                pred = uncertainty_prediction(loaded, data, method, n, seed=seed + repeat)
                seconds += time.perf_counter() - t0
                raters = data.raters if data.raters.shape[0] > 1 else None
                ev.add(name, pred, truth, spacing=data.spacing, raters=raters,
                       label=f"{name} (r{repeat})")
                extra[name] = subject_extra(pred, t, truth, staple, lesions, roi)
            cache[key] = json_safe({
                **ev.record(), "extra": extra, "threshold": t, "candidate": row,
                "repeat": repeat, "trained": base, "method": method, "passes": n,
                "seed": seed + repeat, "model": unit["model"], "folder": unit["folder"],
                "train_seconds": unit.get("train_seconds"),
                "predict_seconds": round(seconds, 2)})
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_path)
            print(f"[claims] {row} {i + 1}/{len(todo)}: r{repeat} ({seconds:.1f} s)", flush=True)
        out[f"{row}/r{repeat}"] = cache[key]
    return out


# ------------------------------------------------------------------------------ claims
def _fmt(x: float, scale: float = 100.0, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * scale:.{digits}f}"


def judge(abl: dict[str, Any], fus: dict[str, Any]) -> list[dict[str, Any]]:
    """Each claim of issue 8 with our numbers, the papers' and whether it held here."""
    c = abl["candidates"]
    s, k = c["softseg"], c["conventional"]
    claims = []

    def p(entry, m):
        v = entry["p"].get(m)
        return None if v is None or not math.isfinite(v) else v

    # 1. calibration
    held = s["mean"]["ece"] < k["mean"]["ece"]
    claims.append({
        "claim": "SoftSeg is better calibrated than conventional (ECE clearly lower)",
        "paper": "ECE 2.9% vs 16.2% (SCGM), 2.4% vs 20.4% (MS lesions)",
        "ours": (f"ECE {_fmt(s['mean']['ece'], digits=2)}% vs {_fmt(k['mean']['ece'], digits=2)}% "
                 f"(whole volume, truth >= 0.5; p = {p(k, 'ece')}); near the structure "
                 f"{_fmt(s['mean'].get('ece_roi'), digits=2)}% vs "
                 f"{_fmt(k['mean'].get('ece_roi'), digits=2)}%; against STAPLE "
                 f"{_fmt(s['mean'].get('ece_staple'), digits=2)}% vs "
                 f"{_fmt(k['mean'].get('ece_staple'), digits=2)}%"),
        "held": bool(held and (p(k, "ece") or 1.0) < 0.05),
        "direction_held": bool(held),
    })
    # 2. Dice no worse
    diff = s["mean"]["dice"] - k["mean"]["dice"]
    claims.append({
        "claim": "Dice at the optimal threshold: SoftSeg no worse than conventional",
        "paper": "+2.0 (SCGM, p = 0.0011), +3.3 (MS), +6.5 (BraTS) Dice points",
        "ours": (f"{_fmt(s['mean']['dice'])}% vs {_fmt(k['mean']['dice'])}% "
                 f"({diff * 100:+.1f} points, p = {p(k, 'dice')})"),
        "held": bool(diff >= 0 or (p(k, "dice") or 1.0) >= 0.05),
        "direction_held": bool(diff >= 0),
    })
    # 3. volume (Bertels): soft volume of regression / CE candidates closer than soft-Dice ones
    dice_trained = [n for n in ("conventional", "soft-relu-dice") if n in c]
    other = [n for n in ("softseg", "soft-sig-bce") if n in c]
    err = {n: abs(c[n]["mean"]["soft_rvd"]) for n in dice_trained + other}
    held = max(err[n] for n in other) < min(err[n] for n in dice_trained)
    claims.append({
        "claim": ("Soft volume (sum of p) closer to the true partial volume for SoftSeg and "
                  "cross-entropy than for soft-Dice-trained candidates (Bertels)"),
        "paper": "U-Net, ISLES 2017: volume error -2.9 mL (CE) vs +13.4 mL (soft Dice)",
        "ours": "; ".join(f"{n}: soft RVD {_fmt(c[n]['mean']['soft_rvd'])}% "
                          f"(p vs softseg = {p(c[n], 'soft_rvd')})" for n in dice_trained + other),
        "held": bool(held),
        "direction_held": bool(held),
    })
    # 4. softness
    held = s["mean"].get("soft_fraction", math.nan) > 2 * k["mean"].get("soft_fraction", math.nan)
    claims.append({
        "claim": "Conventional outputs are quasi-binary, SoftSeg outputs spread over (0, 1]",
        "paper": "SoftSeg Fig. 4: conventional histogram piles at 0 and 1, SoftSeg spread",
        "ours": (f"share of the structure's voxels (truth > 0) predicted in [0.05, 0.95): softseg "
                 f"{_fmt(s['mean'].get('soft_fraction'))}%, conventional "
                 f"{_fmt(k['mean'].get('soft_fraction'))}% (truth: "
                 f"{_fmt(s['mean'].get('truth_soft_fraction'))}%)"),
        "held": bool(held),
        "direction_held": bool(held),
    })
    # 5. entropy
    held = s["mean"]["entropy_error"] < k["mean"]["entropy_error"]
    claims.append({
        "claim": "SoftSeg entropy closer to the raters' entropy than conventional",
        "paper": "conventional MAE 46% (SCGM) / 45% (MS) higher than SoftSeg",
        "ours": (f"|entropy - rater entropy| {s['mean']['entropy_error']:.0f} vs "
                 f"{k['mean']['entropy_error']:.0f} nats (p = {p(k, 'entropy_error')})"),
        "held": bool(held),
        "direction_held": bool(held),
    })
    # 6. small lesions
    sl, kl = s["mean"].get("lesion_tpr", math.nan), k["mean"].get("lesion_tpr", math.nan)
    claims.append({
        "claim": "SoftSeg finds more small lesions (higher LTPR)",
        "paper": "LTPR 38.6% vs 34.1%, LFDR 63.0% vs 61.9% (MS lesions, not significant)",
        "ours": (f"small-lesion detection {_fmt(s['mean'].get('lesion_tpr'))}% vs "
                 f"{_fmt(k['mean'].get('lesion_tpr'))}%; LTPR (all components) "
                 f"{_fmt(s['mean']['ltpr'])}% vs {_fmt(k['mean']['ltpr'])}%, LFDR "
                 f"{_fmt(s['mean']['lfdr'])}% vs {_fmt(k['mean']['lfdr'])}%"
                 + (" (a tie: no difference to find)" if sl == kl else "")),
        "held": bool(sl > kl),
        "direction_held": bool(sl >= kl),
    })
    # 7. multi-rater: SoftSeg better calibrated than conventional for every fusion
    if fus:
        f = fus["candidates"]
        pairs = [(m, f"softseg:{m}", f"conventional:{m}") for m in ("staple", "average", "random")]
        ok = [f[a]["mean"]["ece"] < f[b]["mean"]["ece"] for _, a, b in pairs if a in f and b in f]
        claims.append({
            "claim": "For every fusion (STAPLE, average, random rater) SoftSeg is better "
                     "calibrated than conventional",
            "paper": "label fusion paper: true for every fusion; SoftSeg-Average underconfident",
            "ours": "; ".join(f"{m}: ECE {_fmt(f[a]['mean']['ece'], digits=2)}% vs "
                              f"{_fmt(f[b]['mean']['ece'], digits=2)}%, Dice "
                              f"{_fmt(f[a]['mean']['dice'])}% vs {_fmt(f[b]['mean']['dice'])}%"
                              for m, a, b in pairs if a in f and b in f),
            "held": bool(ok and all(ok)),
            "direction_held": bool(ok and all(ok)),
        })
    return claims


# ------------------------------------------------------------------------------ figures
def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (JSON records), else absolute."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def figures(units, abl_reps, fus_reps, dataset: Path, *, ablation=ABLATION,
            prefix: str = "claims-", folder: Path = DOCS) -> dict[str, str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from softseg import compare

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    shown = tuple(c for c in ("conventional", "softseg", "soft-relu-dice", "soft-sig-bce")
                  if c in ablation)
    if abl_reps:
        curves = {n: curves_of(units, n, abl_reps) for n in shown}
        panels = 2 if fus_reps else 1
        fig = Figure(figsize=(5.5 * panels, 4.2), dpi=90, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, panels, 1)
        compare.draw_figure(ax, "reliability", curves)
        ax.set_title(f"Reliability vs soft truth >= 0.5 ({len(abl_reps)} repeats pooled)")
        if fus_reps:
            fc = {FUSION_ALIAS.get(n, n): curves_of(units, n, fus_reps) for n in FUSION}
            ax2 = fig.add_subplot(1, 2, 2)
            compare.draw_figure(ax2, "reliability", fc)
            ax2.set_title("Reliability by rater fusion")
        path = folder / f"{prefix}reliability.png"
        fig.savefig(path)
        out["reliability"] = _shown(path)

        fig = Figure(figsize=(11, 4.2), dpi=90, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 2, 1)
        compare.draw_figure(ax, "histogram", {n: curves_of(units, n, abl_reps) for n in ablation})
        ax.set_title("Non-zero predictions on test subjects (SoftSeg Fig. 4)")
        ax = fig.add_subplot(1, 2, 2)
        compare.draw_figure(ax, "volume_threshold", curves)
        ax.set_title("Binarised volume vs threshold (dashed: soft truth Σ)")
        path = folder / f"{prefix}histogram.png"
        fig.savefig(path)
        out["histogram"] = _shown(path)
        out["overlay"] = overlay(units, abl_reps[0], dataset, folder / f"{prefix}overlay.png")
    return out


def figure_issue15(units, reps, cands, path: Path) -> str:
    """Reliability (vs soft truth >= 0.5) and entropy-vs-error ROC (the uncertainty section of
    ``softseg compare``) of the issue-15 rows, repeats pooled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from softseg import compare

    curves = {c: curves_of(units, c, reps) for c in cands}
    fig = Figure(figsize=(11, 4.4), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    compare.draw_figure(ax, "reliability", curves)
    ax.set_title(f"Reliability vs soft truth >= 0.5 ({len(reps)} repeats pooled)", fontsize=10)
    if "uncertainty_error" in compare.available_figures(curves):
        ax = fig.add_subplot(1, 2, 2)
        compare.draw_figure(ax, "uncertainty_error", curves)
        ax.set_title("Entropy as a detector of misclassified voxels", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return _shown(path)


def overlay(units, repeat: int, dataset: Path, path: Path) -> str:
    """One test slice: image, soft truth, conventional and SoftSeg predictions with contours."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from softseg.data import load_subject, scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol import ground_truth, unit_prediction

    info = scan_dataset(dataset)
    conv, soft = units[f"conventional/r{repeat}"], units[f"softseg/r{repeat}"]
    name = sorted(conv["subjects"])[0]
    sub = info.subject(name)
    data = load_subject(sub)
    truth = ground_truth(sub, data, "truth")
    preds = {}
    for key, unit in (("conventional", conv), ("softseg", soft)):
        preds[key] = (unit_prediction([load_model(Path(unit["folder"]) / m) for m in unit.get("models") or [unit["model"]]], data),
                      float(unit["threshold"]))
    # the slice with the most lesion voxels (ties: the largest cross-section), zoomed on the target
    from softseg.io import load_volume

    lesions = np.asarray(data.geometry.to_display(
        load_volume(Path(sub.images[0]).parent / "lesions.nii.gz", label=True).array))
    score = (lesions > 0).sum(axis=(1, 2)) * 10_000 + (truth >= 0.5).sum(axis=(1, 2))
    z = int(np.argmax(score))
    rows, cols = np.nonzero(truth[z] > 0)
    r0, r1 = max(0, rows.min() - 6), min(truth.shape[1], rows.max() + 7)
    c0, c1 = max(0, cols.min() - 6), min(truth.shape[2], cols.max() + 7)
    zoom = (slice(r0, r1), slice(c0, c1))
    img = data.images[0, z][zoom]
    truth = truth[:, zoom[0], zoom[1]]
    preds = {k: (v[0][:, zoom[0], zoom[1]], v[1]) for k, v in preds.items()}
    fig = Figure(figsize=(12, 3.6), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    panels = [("image", img, None), ("soft truth (partial volume)", truth[z], None),
              (f"conventional (t = {preds['conventional'][1]:.2f})", preds["conventional"][0][z],
               preds["conventional"][1]),
              (f"SoftSeg (t = {preds['softseg'][1]:.2f})", preds["softseg"][0][z],
               preds["softseg"][1])]
    for i, (title, arr, t) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        if i == 0:
            ax.imshow(arr, cmap="gray")
        else:
            ax.imshow(img, cmap="gray")
            im = ax.imshow(np.ma.masked_less_equal(arr, 0.01), cmap="magma", vmin=0, vmax=1,
                           alpha=0.85)
            ax.contour(truth[z], levels=[0.5], colors="cyan", linewidths=0.7)
            if t is not None:
                ax.contour(arr, levels=[t], colors="lime", linewidths=0.7)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{name} (test subject of repeat {repeat}), axial slice {z}, zoomed", fontsize=9)
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="p (cyan: truth 0.5, green: threshold)")
    fig.savefig(path)
    return _shown(path)


# ------------------------------------------------------------------------------ real anatomy
def make_dataset_mni(folder: Path, b: Budget, *, target: str = "tissue",
                     classes: tuple[str, ...] | None = MNI_CLASSES, **options: Any) -> Path:
    """Write an MNI dataset once (:func:`softseg.anatomy.write_dataset`, ``target`` and generator
    ``options``; reused when its subjects, seed, spacing and, if given, ``classes`` match)."""
    from softseg.anatomy import write_dataset

    meta_path = folder / "dataset.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        gen = meta.get("generator", {})
        spacing = gen.get("spacing")
        spacing = [float(spacing)] * 3 if isinstance(spacing, (int, float)) else spacing
        if (len(meta.get("subjects", [])) == b.n_subjects and gen.get("seed") == b.seed
                and spacing is not None and [float(v) for v in spacing] == list(b.spacing)
                and (classes is None or tuple(meta.get("classes", ())) == classes)):
            return folder
        raise SystemExit(f"{folder} holds another dataset; remove it or use another --work")
    folder.parent.mkdir(parents=True, exist_ok=True)
    return write_dataset(folder, n_subjects=b.n_subjects, target=target, n_raters=4,
                         seed=b.seed, spacing=b.spacing, **options)


def class_repeat_rows(units, cands, repeats, cname: str | None):
    """One sample per repeat for class ``cname`` (None: the multi-class row), the mean over the
    repeat's test subjects of the engine's record (``softseg.protocol``'s per-class table)."""
    from softseg import compare

    rows: dict[str, list[dict[str, float]]] = {c: [] for c in cands}
    for k in repeats:
        for c in cands:
            unit = units[f"{c}/r{k}"]
            part = unit["subjects"] if cname is None else unit["classes"][cname]["subjects"]
            extra = {} if cname is None else {
                s: e.get(cname, {}) for s, e in unit.get("extra", {}).items()}
            mean = {}
            for m in compare.METRICS:
                vals = np.array([math.nan if r.get(m) is None else r[m] for r in part.values()],
                                float)
                vals = vals[np.isfinite(vals)]
                mean[m] = float(vals.mean()) if vals.size else math.nan
            for m in sorted({m for e in extra.values() for m in e}):
                vals = np.array([e.get(m, math.nan) for e in extra.values()], float)
                vals = vals[np.isfinite(vals)]
                mean[m] = float(vals.mean()) if vals.size else math.nan
            mean["train_seconds"] = float(unit.get("train_seconds", math.nan))
            rows[c].append(mean)
    return rows


#: the engine's per-class keys recomputed against the partial-volume truth (extra pass)
PV_KEYS = ("soft_rvd", "mse", "soft_dice", "soft_volume_ml", "reference_volume_ml", "brier")
#: the engine's per-class keys with argmax binarisation (no thresholds), truth's argmax reference
ARGMAX_KEYS = ("dice", "rvd", "binary_volume_ml")


def extra_metrics_mni(units: dict[str, Any], dataset: Path, cache_path: Path) -> None:
    """Per-class metrics against the **partial-volume** truth (the soft class maps).

    The protocol evaluates K-class models against the truth's argmax (integer labels); the
    soft-volume error of a tissue needs its partial-volume fractions. Each unit's test subjects
    are predicted again and :func:`softseg.compare.evaluate_subject_classes` (the same engine)
    is called with the soft class maps as reference; ``pv_<key>`` for :data:`PV_KEYS`. And
    :func:`softseg.metrics.evaluate_classes` without thresholds (each voxel in its argmax class,
    the label-fusion paper's SCGM rule) against the truth's argmax: ``argmax_<key>`` for
    :data:`ARGMAX_KEYS`. Cached in ``cache_path`` (resumable), merged into ``units[uid]["extra"]``.
    """
    from softseg import compare, metrics
    from softseg.data import load_subject, scan_dataset
    from softseg.modelfile import load_model
    from softseg.protocol import class_reference, unit_prediction
    from softseg.protocol.models import _class_truth

    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    info = scan_dataset(dataset)
    subjects: dict[str, Any] = {}

    def key(uid: str) -> str:
        st = (Path(units[uid]["folder"]) / units[uid]["model"]).stat()
        return f"mni2:{uid}@{st.st_size}:{st.st_mtime_ns}"

    todo = [u for u in units if key(u) not in cache]
    for i, uid in enumerate(sorted(todo, key=lambda u: (int(u.rsplit("/r", 1)[1]), u))):
        unit = units[uid]
        loaded = [load_model(Path(unit["folder"]) / m) for m in unit.get("models") or [unit["model"]]]
        classes = tuple(loaded[0].card.classes)
        res = {}
        for name in unit["subjects"]:
            if name not in subjects:
                sub = info.subject(name)
                data = load_subject(sub)
                subjects[name] = (data, _class_truth(sub, data, classes, info),
                                  class_reference(sub, data, "truth", classes, info=info))
            data, soft, labels = subjects[name]
            pred = unit_prediction(loaded, data)
            ce, _ = compare.evaluate_subject_classes(
                pred, soft, classes=classes, thresholds=unit["thresholds"], spacing=data.spacing,
                subject=name)
            am = metrics.evaluate_classes(pred, labels, classes=classes, thresholds=None,
                                          spacing=data.spacing)
            res[name] = {c: {**{f"pv_{m}": ce.per_class[c].get(m) for m in PV_KEYS},
                             **{f"argmax_{m}": am.per_class[c].get(m) for m in ARGMAX_KEYS}}
                         for c in classes}
        cache[key(uid)] = res
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(compare.json_safe(cache)))
        tmp.replace(cache_path)
        print(f"[claims] partial-volume metrics {i + 1}/{len(todo)}: {uid}", flush=True)
    for uid in units:
        units[uid]["extra"] = cache.get(key(uid), {})


#: alias of the average-fusion candidates, and the pairs tested (SoftSeg vs conventional)
MNI_ALIAS = {"conventional": "conventional:average", "softseg": "softseg:average"}
MNI_PAIRS = (("softseg:staple", "conventional:staple"), ("softseg", "conventional"))
MNI_TABLE_KEYS = ("dice", "precision", "recall", "rvd", "soft_rvd", "ece", "brier", "soft_dice",
                  "hausdorff_mm", "soft_volume_ml", "binary_volume_ml", "reference_volume_ml",
                  "pv_soft_rvd", "pv_mse", "pv_soft_dice", "pv_soft_volume_ml",
                  "pv_reference_volume_ml", "argmax_dice", "argmax_rvd",
                  "argmax_binary_volume_ml", "threshold", "accuracy", "train_seconds")


def mni_table(rows: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Mean ± std over repeats per candidate, and the two-sided Wilcoxon signed-rank p of SoftSeg
    against conventional with the same fusion (:func:`softseg.compare.wilcoxon_pvalues`)."""
    from softseg import compare

    out: dict[str, Any] = {"n_repeats": None, "candidates": {}}
    keys = [m for m in MNI_TABLE_KEYS if any(m in r for rs in rows.values() for r in rs)]
    partner = {a: b for a, b in MNI_PAIRS}
    for cand, rs in rows.items():
        entry: dict[str, Any] = {"mean": {}, "std": {}, "p": {}, "values": {}}
        for m in keys:
            vals = np.array([r.get(m, math.nan) for r in rs], float)
            fin = vals[np.isfinite(vals)]
            entry["mean"][m] = float(fin.mean()) if fin.size else math.nan
            entry["std"][m] = float(fin.std(ddof=1)) if fin.size > 1 else math.nan
            entry["values"][m] = [r.get(m) for r in rs]
            if cand in partner:
                ref = partner[cand]
                entry["p"][m] = compare.wilcoxon_pvalues(
                    {cand: vals, ref: [r.get(m, math.nan) for r in rows[ref]]}, ref)[cand]
        if cand in partner:
            entry["p_versus"] = MNI_ALIAS.get(partner[cand], partner[cand])
        out["candidates"][MNI_ALIAS.get(cand, cand)] = entry
        out["n_repeats"] = len(rs)
    return out


#: conventional blue, SoftSeg orange; STAPLE dark, average light
MNI_COLORS = {"conventional:staple": "#1f4e9c", "conventional:average": "#7fb2e5",
              "softseg:staple": "#c0500a", "softseg:average": "#f5a55a"}


def figure_mni(units, repeats, cands, path: Path) -> str:
    """Per-class reliability diagrams, repeats pooled: the engine's one-vs-rest diagram of each
    class against the truth's argmax (predicted = p >= 0.5, confidence = max(p, 1 - p))."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from softseg import compare

    fig = Figure(figsize=(16, 4.4), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    for i, cname in enumerate(MNI_CLASSES):
        curves = {}
        for c in cands:
            pooled = [compare.Curves.from_dict(units[f"{c}/r{k}"]["classes"][cname]["curves"])
                      for k in repeats]
            curves[MNI_ALIAS.get(c, c)] = compare.pool_curves(pooled)
        ax = fig.add_subplot(1, len(MNI_CLASSES), i + 1)
        compare.draw_figure(ax, "reliability", curves, colors=MNI_COLORS)
        ax.set_title(f"{cname}: reliability vs truth argmax ({len(repeats)} repeats pooled)",
                     fontsize=10)
    fig.suptitle("MNI tissues, held-out test subjects: one-vs-rest reliability per class",
                 fontsize=10)
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path)
    return str(path.relative_to(ROOT))


def build_results_mni(work: Path, dataset: Path, b: Budget, budget_name: str, shard_info,
                      wall_s: float | None, *, out_json: Path) -> dict[str, Any]:
    units = load_units(work)
    cands = b.candidates
    reps = complete_repeats(units, cands, b.repeats)
    extra_metrics_mni({u: units[u] for u in units}, dataset, work / "extra_metrics_mni.json")
    per_class = ({c: mni_table(class_repeat_rows(units, cands, reps, c)) for c in MNI_CLASSES}
                 if len(reps) >= 2 else {})
    overall = mni_table(class_repeat_rows(units, cands, reps, None)) if len(reps) >= 2 else {}
    prefix = "claims-mni-tissue-" if budget_name == "cpu" else f"claims-mni-tissue-{budget_name}-"
    figs = ({"reliability": figure_mni(units, reps, cands, DOCS / f"{prefix}reliability.png")}
            if reps else {})
    meta = json.loads((dataset / "dataset.json").read_text())
    first = next(iter(units.values()), {})
    result = {
        "benchmark": "softseg_claims", "study": "mni-tissue", "budget": budget_name,
        "settings": asdict(b),
        "recipes": recipes_of(b),
        "dataset": {"generator": "softseg.anatomy.write_dataset (softseg sample-data mni)",
                    "classes": meta.get("classes"), "subjects": meta.get("subjects"),
                    "raters_per_class": 4, "seed": b.seed, "spacing_mm": list(b.spacing)},
        "split": first.get("split"),
        "complete": len(reps) == b.repeats,
        "repeats_done": reps, "units_done": len(units),
        "units_total": len(cands) * b.repeats,
        "evaluation": {
            "reference": "the truth's argmax (partial-volume class maps truth_label-<class>"
                         ".nii.gz -> integer labels; softseg.protocol.class_reference 'truth'): "
                         "Dice, precision, recall, RVD, soft RVD, ECE per class (one-vs-rest), "
                         "multi-class ECE (confidence = max class probability) and accuracy",
            "pv_": "pv_* keys: the same engine (softseg.compare.evaluate_subject_classes) with "
                   "the partial-volume class maps as reference: pv_soft_rvd = soft-volume error "
                   "per tissue against the partial volume, (V_pv - sum p) / V_pv",
            "binarisation": "each class at its model's optimal threshold (card), as the protocol; "
                            "argmax_* keys: each voxel in its most probable class (no thresholds)",
            "rvd_sign": "RVD = (V_truth - V_pred) / V_truth: negative = over-segmentation",
            "repeat_value": "mean over the repeat's test subjects; tables: mean ± std over "
                            "repeats; p: two-sided Wilcoxon signed-rank, paired by repeat, "
                            "SoftSeg vs conventional with the same fusion (3 repeats: smallest "
                            "possible p = 0.25)",
        },
        "multiclass": overall, "per_class": per_class, "figures": figs,
        **run_record(dataset, work, b, units, shard_info, wall_s),
    }
    write_json_result(out_json, result)
    with open(out_json.with_suffix(".csv.tmp"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "candidate", "p_versus"] + [f"{m}_{s}" for m in MNI_TABLE_KEYS
                                                          for s in ("mean", "std", "p")])
        for cname, tab in [("multi-class", overall), *per_class.items()]:
            for cand, e in (tab.get("candidates") or {}).items():
                w.writerow([cname, cand, e.get("p_versus", "")] + [
                    e[s].get(m) for m in MNI_TABLE_KEYS for s in ("mean", "std", "p")])
    out_json.with_suffix(".csv.tmp").replace(out_json.with_suffix(".csv"))
    return result


MNI_MD_COLUMNS = (("dice", "Dice %", 100, 1), ("argmax_dice", "Dice (argmax) %", 100, 1),
                  ("ece", "ECE %", 100, 2),
                  ("pv_soft_rvd", "soft-volume error vs PV %", 100, 1),
                  ("soft_rvd", "soft RVD vs argmax %", 100, 1), ("rvd", "RVD %", 100, 1),
                  ("pv_mse", "MSE vs PV ×1e-3", 1e3, 2), ("threshold", "threshold", 1, 2))


def _cell(e: dict[str, Any], key: str, scale: float, digits: int, *, p_digits: int = 2,
          p_missing: str = "") -> str:
    """``mean ± sd (p P)`` of one metric; ``p_missing`` stands where p is undefined (the
    reference row, or all paired differences zero)."""
    m, sd, p = e["mean"].get(key), e["std"].get(key), e["p"].get(key)
    if m is None or not math.isfinite(m):
        return "n/a"
    cell = f"{m * scale:.{digits}f}"
    if sd is not None and math.isfinite(sd):
        cell += f" ± {sd * scale:.{digits}f}"
    if p is not None and math.isfinite(p):
        cell += f" (p {p:.{p_digits}f})"
    elif p_missing:
        cell += f" ({p_missing})"
    return cell


def markdown_mni(result: dict[str, Any]) -> str:
    """The per-class table and the multi-class row as GitHub markdown."""
    lines = []
    overall, per_class = result.get("multiclass") or {}, result.get("per_class") or {}
    if not per_class:
        return "(fewer than 2 complete repeats)\n"
    n = overall.get("n_repeats")
    lines.append(f"\n**per class** — n = {n} repeats (mean ± std; p: two-sided Wilcoxon "
                 "signed-rank, SoftSeg vs conventional with the same fusion; with 3 repeats the "
                 "smallest possible p is 0.25)\n")
    lines.append("| class | candidate | " + " | ".join(c[1] for c in MNI_MD_COLUMNS) + " |")
    lines.append("|---|---|" + "---:|" * len(MNI_MD_COLUMNS))
    for cname, tab in per_class.items():
        for cand, e in tab["candidates"].items():
            lines.append(f"| {cname} | `{cand}` | "
                         + " | ".join(_cell(e, c[0], c[2], c[3]) for c in MNI_MD_COLUMNS)
                         + " |")
    lines.append("\n**multi-class** (confidence = max class probability, label-fusion paper)\n")
    lines.append("| candidate | multi-class ECE % | accuracy % |")
    lines.append("|---|---:|---:|")
    for cand, e in overall["candidates"].items():
        lines.append(f"| `{cand}` | {_cell(e, 'ece', 100, 2)} | {_cell(e, 'accuracy', 100, 1)} |")
    return "\n".join(lines) + "\n"


def print_summary_mni(result: dict[str, Any]) -> None:
    print(markdown_mni(result))


# ------------------------------------------------------------------------------ main
# ------------------------------------------------------------------------------ small lesions
#: (key, label, scale, digits) of the lesion table; ``p`` columns: Wilcoxon vs conventional
LESION_COLUMNS = (
    ("dice", "Dice %", 100, 1), ("ltpr", "LTPR %", 100, 1), ("lfdr", "LFDR %", 100, 1),
    ("lesion_tpr", "lesions found %", 100, 1), ("ece", "ECE %", 100, 2),
    ("soft_rvd", "soft RVD %", 100, 0), ("empty_slice_max_p", "max p, lesion-free slices", 1, 2),
    ("empty_slice_fp", "lesion-free slices with p >= 0.5 %", 100, 1),
)


def make_dataset_lesion(folder: Path, b: Budget) -> Path:
    """Write the MNI small-lesion dataset once (``softseg sample-data mni --target lesion
    --lesion-count 6 12``; reused when its subjects, seed and spacing match)."""
    return make_dataset_mni(folder, b, target="lesion", classes=None, n_lesions=(6, 12))


def build_results_lesion(work: Path, dataset: Path, b: Budget, budget_name: str, shard_info,
                         wall_s: float | None, *, out_json: Path) -> dict[str, Any]:
    """The small-lesion table: mean +- std over repeats, Wilcoxon vs conventional and
    softseg vs softseg-paper, and the issue's done-criterion (softseg >= conventional on Dice
    and LTPR, and no more lesion-free slices with p >= 0.5)."""
    from softseg import compare

    units = load_units(work)
    extra_metrics(units, dataset, work / "extra_metrics.json")
    cands = b.candidates
    reps = complete_repeats(units, cands, b.repeats)
    rows = repeat_rows(units, cands, reps)
    tab = table(rows, reference="conventional") if reps else {"candidates": {}}
    keys = [k for k, *_ in LESION_COLUMNS]
    vs_paper = {}
    if reps and "softseg-paper" in cands and "softseg" in cands:
        for m in keys:
            vals = {c: [r.get(m, math.nan) for r in rows[c]] for c in ("softseg", "softseg-paper")}
            vs_paper[m] = compare.wilcoxon_pvalues(vals, "softseg-paper")["softseg"]
    c = tab["candidates"]
    criterion = {}
    # the default softseg if it ran, else the first SoftSeg variant of the budget
    judged = next((n for n in ("softseg", *c) if n in c and n.startswith("softseg")
                   and n != "softseg-paper"), None)
    if judged is not None and "conventional" in c:
        s_, k_ = c[judged]["mean"], c["conventional"]["mean"]
        criterion = {
            "candidate": judged,
            "dice": s_.get("dice", math.nan) >= k_.get("dice", math.nan),
            "ltpr": s_.get("ltpr", math.nan) >= k_.get("ltpr", math.nan),
            "lesion_free_slices_p_ge_0.5": (s_.get("empty_slice_fp", math.nan)
                                            <= k_.get("empty_slice_fp", math.nan)),
        }
        criterion["met"] = all(v for k, v in criterion.items() if k != "candidate")
    result = {
        "benchmark": "softseg_claims", "study": "mni-lesion", "budget": budget_name,
        "settings": asdict(b),
        "recipes": recipes_of(b),
        "dataset": {"generator": "softseg.anatomy.write_dataset (softseg sample-data mni "
                                 "--target lesion --lesion-count 6 12)",
                    "subjects": b.n_subjects, "raters": 4, "seed": b.seed,
                    "spacing_mm": list(b.spacing)},
        "complete": len(reps) == b.repeats, "repeats_done": reps, "units_done": len(units),
        "units_total": len(cands) * b.repeats,
        "evaluation": {
            "reference": "the partial-volume truth (truth_soft.nii.gz; binary: >= 0.5) of each "
                         "test subject, whole volume at native resolution",
            "lesion_tpr": "share of the generator's lesions (lesions.nii.gz) with >= 3 voxels "
                          "above the model's threshold",
            "empty_slice_max_p": "mean over axial slices without the structure of the slice's "
                                 "largest p",
            "empty_slice_fp": "share of the slices without the structure holding p >= 0.5",
            "p": "two-sided Wilcoxon signed-rank test over repeats (paired splits) against "
                 "conventional; softseg_vs_paper_p: softseg against softseg-paper",
        },
        "lesion": tab, "softseg_vs_paper_p": vs_paper, "done_criterion": criterion,
        **run_record(dataset, work, b, units, shard_info, wall_s),
    }
    write_json_result(out_json, result)
    return result


def markdown_lesion(result: dict[str, Any]) -> str:
    tab = result["lesion"]["candidates"]
    head = "| candidate | " + " | ".join(label for _, label, *_ in LESION_COLUMNS) + " |"
    lines = [f"## Small lesions on real anatomy ({len(result['repeats_done'])} repeats, "
             f"budget {result['budget']})", "", head,
             "|" + "---|" * (len(LESION_COLUMNS) + 1)]
    for cand, e in tab.items():
        cells = []
        for key, _, scale, digits in LESION_COLUMNS:
            m, sd = e["mean"].get(key, math.nan), e["std"].get(key, math.nan)
            p = e["p"].get(key)
            cell = (f"{m * scale:.{digits}f} ± {sd * scale:.{digits}f}"
                    if m is not None and math.isfinite(m) else "n/a")
            if p is not None and isinstance(p, float) and math.isfinite(p):
                cell += f" (p={p:.3f})"
            cells.append(cell)
        lines.append(f"| {cand} | " + " | ".join(cells) + " |")
    lines += ["", "p: two-sided Wilcoxon signed-rank test over repeats against conventional.",
              "softseg vs softseg-paper: " + ", ".join(
                  f"{k} p={v:.3f}" for k, v in result.get("softseg_vs_paper_p", {}).items()
                  if isinstance(v, float) and math.isfinite(v)),
              "", f"Done criterion (issue 15): {result.get('done_criterion')}"]
    return "\n".join(lines) + "\n"


def run_record(dataset: Path, work: Path, b: Budget, units, shard_info,
               wall_s: float | None) -> dict[str, Any]:
    """The result's ``cli_equivalent``, ``timing`` and ``machine`` entries (every study)."""
    train_s = [u.get("train_seconds", 0.0) for u in units.values()]
    return {
        "cli_equivalent": [" ".join(shard_command(dataset, work / f"shard-{i}", c, b))
                           for i, c in enumerate(b.shard_lists())],
        "timing": {"wall_s": wall_s, "train_seconds_total": round(float(np.sum(train_s)), 1),
                   "train_seconds_mean": round(float(np.mean(train_s)), 1) if train_s else None,
                   "shards": shard_info},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
    }


def write_json_result(out_json: Path, result: dict[str, Any]) -> None:
    """Write the result JSON atomically (NaN/inf as null: softseg.compare.json_safe)."""
    from softseg.compare import json_safe

    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(result), indent=1))
    tmp.replace(out_json)


def versus_conventional(b: Budget) -> tuple[str, ...]:
    """The rows of the issue-15 table (p against ``conventional``): every candidate and
    evaluation row when the budget has a candidate outside the ablation / fusion grid or an
    evaluation row; none otherwise (the cpu and cpu-long tables stay as they were)."""
    if not b.evaluation_rows and all(c in ALL for c in b.candidates):
        return ()
    return (*b.candidates, *b.evaluation_rows)


def build_results(work: Path, dataset: Path, b: Budget, budget_name: str, shard_info,
                  wall_s: float | None, *, out_json: Path,
                  fig_dir: Path = DOCS) -> dict[str, Any]:
    guard = modelfile_header_guard()
    units = load_units(work)
    ablation = tuple(c for c in ABLATION if c in b.candidates)
    fusion = FUSION if all(c in b.candidates for c in FUSION) else ()
    abl_reps = complete_repeats(units, ablation, b.repeats)
    fus_reps = complete_repeats(units, fusion, b.repeats) if fusion else []
    extra_metrics(units, dataset, work / "extra_metrics.json")
    if b.evaluation_rows:  # after extra_metrics: these units are not plain predictions
        units.update(uncertainty_units(units, b.evaluation_rows, dataset,
                                       work / "uncertainty_rows.json", seed=b.seed))
    abl = table(repeat_rows(units, ablation, abl_reps), "softseg") if len(abl_reps) >= 2 else {}
    fus = (table(repeat_rows(units, fusion, fus_reps), "conventional:staple", FUSION_ALIAS)
           if len(fus_reps) >= 2 else {})
    i15_rows = versus_conventional(b)
    i15_reps = complete_repeats(units, i15_rows, b.repeats) if i15_rows else []
    i15 = table(repeat_rows(units, i15_rows, i15_reps), "conventional") if i15_reps else {}
    if i15:
        i15["rows"] = {c: row_description(c, units, i15_reps) for c in i15_rows}
    claims = judge(abl, fus) if abl else []
    prefix = "claims-" if budget_name == "cpu" else f"claims-{budget_name}-"
    figs = figures(units, abl_reps, fus_reps, dataset, ablation=ablation, prefix=prefix,
                   folder=fig_dir)
    if i15_reps:
        figs["issue15"] = figure_issue15(units, i15_reps, i15_rows,
                                         fig_dir / f"{prefix}issue15.png")
    result = {
        "benchmark": "softseg_claims",
        "budget": budget_name,
        "settings": asdict(b),
        "recipes": recipes_of(b),
        "foreground_oversampling_supported": has_foreground_oversampling(),
        "complete": (len(abl_reps) == b.repeats and (not fusion or len(fus_reps) == b.repeats)
                     and (not i15_rows or len(i15_reps) == b.repeats)),
        "repeats_done": {"ablation": abl_reps, "fusion": fus_reps, "issue15": i15_reps},
        "units_done": len(units),
        "units_total": (len(b.candidates) + len(b.evaluation_rows)) * b.repeats,
        "evaluation": {
            "reference": "truth_soft.nii.gz (partial-volume fraction); overlap metrics, ECE and "
                         "LTPR/LFDR against truth >= 0.5; MSE and soft RVD against the soft truth; "
                         "Brier against the rater average",
            "rvd_sign": "RVD = (V_truth - V_pred) / V_truth (SoftSeg paper): negative = "
                        "over-segmentation",
            "repeat_value": "mean over the repeat's test subjects; tables: mean ± std over "
                            "repeats; p: two-sided Wilcoxon signed-rank, paired by repeat",
            "extra": {
                "ece_staple": "ECE against STAPLE >= 0.5 (label-fusion paper's reference)",
                "ece_roi": "ECE on voxels within 2 voxels of truth > 0 or any rater mark",
                "soft_calibration_gap": "same ROI, 10 bins of p: sum n_k/N |mean truth - mean p|",
                "soft_fraction": "share of the structure's voxels (truth > 0, partial-volume border "
                                 "included) predicted in [0.05, 0.95)",
                "soft_fraction_all": "share of predictions >= 0.05 that are < 0.95 (any voxel)",
                "truth_soft_fraction": "the same share for the soft truth itself",
                "empty_slice_max_p": "mean over slices without any target of the largest p",
                "lesion_tpr": "share of the phantom's small lesions (lesions.nii.gz) with >= 3 "
                              "voxels of the binarised prediction",
                "soft_volume_ratio": "sum(p) / sum(truth)",
                "background_p": "mean p outside that ROI (far background; 0 when converged)",
            },
        },
        "ablation": abl,
        "fusion": fus,
        "issue15": i15,
        "claims": claims,
        "papers": PAPERS,
        "figures": figs,
        "modelfile_header_guard": guard,
        **run_record(dataset, work, b, units, shard_info, wall_s),
    }
    write_json_result(out_json, result)
    write_csv(out_json.with_suffix(".csv"), {"ablation": abl, "fusion": fus, "issue15": i15})
    return result


def row_description(cand: str, units: dict[str, Any], reps: list[int]) -> dict[str, Any]:
    """What one issue-15 row is and costs: trained models, forward passes per prediction,
    mean training seconds per repeat (all its models) and, for evaluation rows, the mean
    seconds of the passes over a repeat's test subjects."""
    us = [units[f"{cand}/r{k}"] for k in reps]
    secs = [u.get("train_seconds") for u in us if isinstance(u.get("train_seconds"), (int, float))]
    if cand in EVALUATION_ROWS:
        base, method, n = EVALUATION_ROWS[cand]
        pred = [u.get("predict_seconds") for u in us
                if isinstance(u.get("predict_seconds"), (int, float))]
        return {"kind": "evaluation", "trained": base, "method": method, "models": 1,
                "passes": n, "train_seconds_mean": float(np.mean(secs)) if secs else None,
                "predict_seconds_mean": float(np.mean(pred)) if pred else None}
    return {"kind": "trained", "models": training_cost(cand), "passes": 1,
            "train_seconds_mean": float(np.mean(secs)) if secs else None}


CSV_METRICS = ("dice", "precision", "recall", "rvd", "soft_rvd", "mse", "ece", "ece_roi",
               "ece_staple", "soft_calibration_gap", "brier", "entropy_error",
               "uncertainty_auroc", "ltpr", "lfdr", "lesion_tpr", "soft_fraction",
               "truth_soft_fraction", "soft_volume_ratio", "background_p",
               "empty_slice_max_p", "empty_slice_fp", "threshold", "train_seconds")


def write_csv(path: Path, tables: dict[str, dict[str, Any]]) -> None:
    """One row per (table, candidate): mean, std and p of :data:`CSV_METRICS`."""
    with open(path.with_suffix(".tmp"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["table", "candidate", "reference"] + [f"{m}_{s}" for m in CSV_METRICS
                                                          for s in ("mean", "std", "p")])
        for name, tab in tables.items():
            for cand, e in (tab.get("candidates") or {}).items():
                w.writerow([name, cand, tab["reference"]] + [
                    e[s].get(m) for m in CSV_METRICS for s in ("mean", "std", "p")])
    path.with_suffix(".tmp").replace(path)


def print_summary(result: dict[str, Any]) -> None:
    if result.get("issue15"):
        print(markdown_issue15(result))
    for tname in ("ablation", "fusion"):
        tab = result.get(tname) or {}
        if not tab:
            continue
        print(f"\n{tname} (n = {tab['n_repeats']} repeats, p vs {tab['reference']})")
        cols = ("dice", "ece", "ece_roi", "ece_staple", "soft_rvd", "rvd", "mse", "brier",
                "lesion_tpr", "soft_fraction")
        print(f"{'candidate':22s}" + "".join(f"{c:>14s}" for c in cols))
        for cand, e in tab["candidates"].items():
            cells = []
            for c in cols:
                v, p = e["mean"].get(c), e["p"].get(c)
                star = "*" if p is not None and math.isfinite(p) and p < 0.05 else " "
                cells.append(f"{_fmt(v, digits=2):>13s}{star}")
            print(f"{cand:22s}" + "".join(cells))
    for cl in result.get("claims", []):
        print(f"\n[{'HELD' if cl['held'] else 'NOT HELD'}] {cl['claim']}\n  paper: {cl['paper']}"
              f"\n  ours:  {cl['ours']}")


MD_COLUMNS = (("dice", "Dice %", 100, 1), ("ece", "ECE %", 100, 2), ("ece_roi", "ECE near %", 100, 1),
              ("ece_staple", "ECE vs STAPLE %", 100, 2), ("mse", "MSE %", 100, 2),
              ("brier", "Brier ×1e-4", 1e4, 0), ("rvd", "RVD %", 100, 1),
              ("soft_rvd", "soft RVD %", 100, 1), ("lesion_tpr", "lesions found %", 100, 0),
              ("lfdr", "LFDR %", 100, 1), ("entropy_error", "ΔH (abs) nats", 1, 0),
              ("soft_fraction", "soft share %", 100, 0), ("background_p", "background p", 1, 3))


#: (key, label, scale, digits) of the issue-15 table
ISSUE15_COLUMNS = (
    ("dice", "Dice %", 100, 1), ("ece", "ECE %", 100, 2), ("soft_rvd", "soft RVD %", 100, 1),
    ("entropy_error", "ΔH (abs) nats", 1, 0), ("uncertainty_auroc", "uncertainty AUROC %", 100, 1),
    ("ece_staple", "ECE vs STAPLE %", 100, 2), ("lfdr", "LFDR %", 100, 1),
    ("lesion_tpr", "lesions found %", 100, 0),
    ("empty_slice_max_p", "max p, empty slices", 1, 2),
    ("empty_slice_fp", "empty slices with p >= 0.5 %", 100, 1))


def markdown_issue15(result: dict[str, Any]) -> str:
    """The issue-15 table: every row with mean ± sd over repeats and the two-sided Wilcoxon p
    against conventional; the cost of each row (models trained x forward passes)."""
    tab = result.get("issue15") or {}
    if not tab:
        return ""
    desc = tab.get("rows", {})
    lines = [f"\n**issue 15** — n = {tab['n_repeats']} repeats (mean ± sd; p: two-sided "
             f"Wilcoxon signed-rank against `{tab['reference']}`, paired by repeat); "
             "`+mc-dropout` / `+tta`: the repeat's conventional model predicted with N passes "
             "(mean map), evaluated at its threshold; p n/a: every paired difference is 0 "
             "or a repeat lacks the value\n",
             "| candidate | models × passes | " + " | ".join(c[1] for c in ISSUE15_COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(ISSUE15_COLUMNS)]
    for cand, e in tab["candidates"].items():
        d = desc.get(cand, {})
        cost = f"{d.get('models', '?')} × {d.get('passes', '?')}"
        missing = "reference" if cand == tab["reference"] else "p n/a"
        lines.append(f"| `{cand}` | {cost} | " + " | ".join(
            _cell(e, k, scale, digits, p_digits=3, p_missing=missing)
            for k, _, scale, digits in ISSUE15_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def markdown_tables(result: dict[str, Any]) -> str:
    """The tables as GitHub markdown: issue 15 (mean ± sd and p vs conventional), ablation and
    fusion (mean ± std, ** = p < 0.05 vs the reference)."""
    lines = [markdown_issue15(result)] if result.get("issue15") else []
    for tname in ("ablation", "fusion"):
        tab = result.get(tname) or {}
        if not tab:
            continue
        lines.append(f"\n**{tname}** — n = {tab['n_repeats']} repeats, ** p < 0.05 vs "
                     f"`{tab['reference']}`\n")
        lines.append("| candidate | " + " | ".join(c[1] for c in MD_COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(MD_COLUMNS))
        for cand, e in tab["candidates"].items():
            cells = []
            for key, _, scale, digits in MD_COLUMNS:
                m, sd, p = e["mean"].get(key), e["std"].get(key), e["p"].get(key)
                if m is None or not math.isfinite(m):
                    cells.append("n/a")
                    continue
                cell = f"{m * scale:.{digits}f}"
                if sd is not None and math.isfinite(sd):
                    cell += f" ± {sd * scale:.{digits}f}"
                if p is not None and math.isfinite(p) and p < 0.05:
                    cell += " **"
                cells.append(cell)
            lines.append(f"| `{cand}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", choices=("phantom", "mni-tissue", "mni-lesion"), default="phantom",
                    help="phantom (default): the partial-volume phantom, every candidate; "
                         "mni-tissue: 3 MNI tissue classes, conventional vs SoftSeg; "
                         "mni-lesion: small MS-like lesions on MNI anatomy (issue 15)")
    ap.add_argument("--budget", choices=sorted({*BUDGETS, *MNI_BUDGETS, *LESION_BUDGETS}), default="cpu")
    ap.add_argument("--work", type=Path, default=None,
                    help="dataset, models and run states (default: build/softseg_claims/BUDGET; "
                         "mni-tissue: build/softseg_claims/mni-tissue[-BUDGET])")
    ap.add_argument("--out", type=Path, default=None,
                    help="result JSON (default: benchmarks/results/softseg_claims.json for the "
                         "cpu budget, softseg_claims_BUDGET.json otherwise; mni-tissue: "
                         "softseg_claims_mni-tissue[_BUDGET].json)")
    ap.add_argument("--report-only", action="store_true",
                    help="build the JSON and figures from the repeats finished so far")
    for key in ("repeats", "epochs", "n_subjects", "width", "shards"):
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                        help=f"override the budget's {key} (smoke runs)")
    ap.add_argument("--crop", type=int, default=None, help="override the square crop size")
    ap.add_argument("--spacing", type=float, default=None,
                    help="mni-tissue: override the isotropic voxel size (mm)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--candidates", nargs="+", default=None, metavar="NAME",
                    help="phantom: override the budget's candidates (NAME, NAME:FUSION, "
                         "NAME:ensemble) and evaluation rows (" + ", ".join(EVALUATION_ROWS)
                         + "), e.g. --budget cpu-long --candidates conventional softseg "
                         "soft-relu-dml conventional:ensemble conventional+tta")
    ap.add_argument("--foreground-oversampling", type=float, default=None, metavar="F",
                    help="share of training samples drawn from slices that hold the structure "
                         "(nnU-Net-style, in [0, 1]; default: the budget's, 0)")
    ap.add_argument("--_worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    mni = args.study == "mni-tissue"
    lesion = args.study == "mni-lesion"
    budgets = MNI_BUDGETS if mni else LESION_BUDGETS if lesion else BUDGETS
    if args.budget not in budgets:
        ap.error(f"--budget {args.budget} is not defined for --study {args.study}; choose one of "
                 f"{', '.join(sorted(budgets))}")
    if args.spacing is not None and not (mni or lesion):
        ap.error("--spacing applies to --study mni-tissue only (the phantom's grid is fixed)")
    b = budgets[args.budget]
    if args.out is None:
        if lesion:
            args.out = RESULTS / ("softseg_claims_mni-lesion.json" if args.budget == "cpu"
                                  else f"softseg_claims_mni-lesion_{args.budget}.json")
        elif mni:
            args.out = RESULTS / ("softseg_claims_mni-tissue.json" if args.budget == "cpu"
                                  else f"softseg_claims_mni-tissue_{args.budget}.json")
        else:
            args.out = RESULTS / ("softseg_claims.json" if args.budget == "cpu"
                                  else f"softseg_claims_{args.budget}.json")
    over = {k: getattr(args, k) for k in ("repeats", "epochs", "n_subjects", "width", "shards",
                                          "device") if getattr(args, k) is not None}
    if "epochs" in over:
        over["patience"] = over["epochs"]
    if args.crop:
        over["crop"] = (args.crop, args.crop)
    if args.candidates is not None:
        if mni or lesion:
            ap.error("--candidates applies to --study phantom only")
        names = tuple(dict.fromkeys(args.candidates))
        over["candidates"] = tuple(c for c in names if c not in EVALUATION_ROWS)
        over["evaluation_rows"] = tuple(c for c in names if c in EVALUATION_ROWS)
        if len(over["candidates"]) < 2:
            ap.error(f"--candidates needs at least two trained candidates; got "
                     f"{', '.join(over['candidates']) or 'none'}")
    if args.foreground_oversampling is not None:
        if not 0.0 <= args.foreground_oversampling <= 1.0:
            ap.error(f"--foreground-oversampling must be in [0, 1]; got "
                     f"{args.foreground_oversampling}")
        if args.foreground_oversampling and not has_foreground_oversampling():
            ap.error("--foreground-oversampling: this softseg's ProtocolConfig has no "
                     "foreground_oversampling field; leave it at 0")
        over["foreground_oversampling"] = args.foreground_oversampling
    if args.spacing is not None:
        over["spacing"] = (args.spacing,) * 3
    b = replace(b, **over)
    if b.shards not in SHARDS and not lesion:
        ap.error(f"--shards must be one of {sorted(SHARDS)}")
    missing = [r for r in b.evaluation_rows if EVALUATION_ROWS[r][0] not in b.candidates]
    if missing:
        ap.error(f"evaluation row {missing[0]} needs the trained candidate "
                 f"{EVALUATION_ROWS[missing[0]][0]} among --candidates")
    default_work = (("mni-tissue" if args.budget == "cpu" else f"mni-tissue-{args.budget}")
                    if mni else (f"mni-lesion-{args.budget}" if lesion else args.budget))
    work = args.work or ROOT / "build" / "softseg_claims" / default_work
    work.mkdir(parents=True, exist_ok=True)
    if args._worker is not None:
        return worker(work / "dataset", work / f"shard-{args._worker}",
                      b.shard_lists()[args._worker], b)
    dataset = (make_dataset_mni if mni else make_dataset_lesion if lesion else make_dataset)(
        work / "dataset", b)
    t0 = time.perf_counter()
    shard_info = None
    if not args.report_only:
        overrides = ["--study", args.study]
        for key in ("repeats", "epochs", "n_subjects", "width", "shards", "crop", "spacing",
                    "device", "foreground_oversampling"):
            if getattr(args, key) is not None:
                overrides += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        if args.candidates is not None:
            overrides += ["--candidates", *args.candidates]
        moved = supersede_stale_shards(work, b)
        for folder in moved:
            print(f"[claims] {folder.name}: a unit's recipe changed since; moved aside to "
                  f"{folder}", flush=True)
        sources = sorted((work / "superseded").glob("shard-*")) + [
            work.parent / name for name in b.reuse_units_of]
        copied = reuse_units(work, sources, b)
        if copied:
            print(f"[claims] reusing {len(copied)} finished units of earlier runs with the same "
                  f"plan and recipe ({', '.join(copied)})", flush=True)
        shard_info = run_shards(dataset, work, b, args.budget, overrides)
        if any(s["rc"] != 0 for s in shard_info):
            print("[claims] a shard failed; see its log. Building results from finished units.",
                  flush=True)
    wall = round(time.perf_counter() - t0, 1) if not args.report_only else None
    info_path = work / "run_info.json"
    if shard_info is not None:
        info_path.write_text(json.dumps({"wall_s": wall, "shards": shard_info,
                                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    elif info_path.exists():  # --report-only: keep the timing of the run that trained
        saved = json.loads(info_path.read_text())
        wall, shard_info = saved.get("wall_s"), saved.get("shards")
    if lesion:
        result = build_results_lesion(work, dataset, b, args.budget, shard_info, wall,
                                      out_json=args.out)
        md_text = markdown_lesion(result)
        print(md_text)
    elif mni:
        result = build_results_mni(work, dataset, b, args.budget, shard_info, wall,
                                   out_json=args.out)
        print_summary_mni(result)
        md_text = markdown_mni(result)
    else:
        out_dir = args.out.resolve().parent
        result = build_results(work, dataset, b, args.budget, shard_info, wall,
                               out_json=args.out,
                               fig_dir=DOCS if out_dir == RESULTS.resolve() else out_dir)
        print_summary(result)
        md_text = markdown_tables(result)
    md = args.out.with_suffix(".md")
    md.write_text(md_text, encoding="utf-8")
    print(f"\n[claims] wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
          f" ({result['units_done']}/{result['units_total']} units)")
    return 0 if shard_info is None or all(s["rc"] == 0 for s in shard_info) else 1


if __name__ == "__main__":
    raise SystemExit(main())
