"""Synthetic BIDS (ivadomed style) and nnU-Net trees for the interchange tests and benchmark.

Every file is written with nibabel directly (not with softseg), so the tests compare softseg's
import against arrays this module made itself. :func:`refused` is the bad-input check of the
import and export commands (exit 2, one line, nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 20, 6)
SPACING = (0.8, 0.8, 2.0)


def affine(spacing=SPACING) -> np.ndarray:
    return np.diag([*spacing, 1.0])


def write_nifti(path: Path, array: np.ndarray, *, spacing=SPACING, aff: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(array), affine(spacing) if aff is None else aff)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def blob(shape=SHAPE, *, centre=None, radius=5.0, seed=0) -> np.ndarray:
    """A binary ellipsoid-ish mask (uint8) with a seeded jitter of centre and radius."""
    rng = np.random.default_rng(seed)
    c = np.array(centre if centre is not None else [s / 2 for s in shape], dtype=float) + rng.normal(0, 0.7, 3)
    r = radius + rng.normal(0, 0.4)
    grid = np.indices(shape).astype(float)
    d = ((grid[0] - c[0]) ** 2 + (grid[1] - c[1]) ** 2) / r**2 + ((grid[2] - c[2]) / max(1.0, shape[2] / 3)) ** 2
    return (d <= 1.0).astype(np.uint8)


def image_like(mask: np.ndarray, *, seed=0, offset=100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (offset + 60.0 * mask + rng.normal(0, 8, mask.shape)).astype(np.float32)


def make_bids(
    root: Path,
    *,
    subjects=("01", "02", "03"),
    contrasts=("T1w", "T2w"),
    pipelines=("labels", "labels-rater2"),
    shape=SHAPE,
    extras: bool = True,
) -> dict:
    """ivadomed-style BIDS tree; returns {"images": {(sub, contrast): array}, "labels": {(pipe, sub): array}}.

    Labels: ``derivatives/<pipe>/sub-XX/anat/sub-XX_T2w_seg-manual.nii.gz`` (uint8 0/1), one per
    pipeline (= rater). With ``extras``: a dwi image (other datatype), a preprocessed T2w in the
    derivatives (not a label), participants.tsv with an institution column.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.9.0"}))
    out: dict = {"images": {}, "labels": {}}
    for i, sub in enumerate(subjects):
        truth = blob(shape, seed=100 + i)
        for j, contrast in enumerate(contrasts):
            arr = image_like(truth, seed=10 * i + j, offset=100.0 + 50 * j)
            write_nifti(root / f"sub-{sub}" / "anat" / f"sub-{sub}_{contrast}.nii.gz", arr)
            out["images"][(sub, contrast)] = arr
        for k, pipe in enumerate(pipelines):
            lab = blob(shape, seed=1000 + 10 * i + k)
            write_nifti(root / "derivatives" / pipe / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w_seg-manual.nii.gz", lab)
            out["labels"][(pipe, sub)] = lab
    for pipe in pipelines[:1]:
        (root / "derivatives" / pipe / "dataset_description.json").write_text(
            json.dumps({"Name": pipe, "BIDSVersion": "1.9.0", "GeneratedBy": [{"Name": "manual"}]}))
    if extras:
        sub = subjects[0]
        write_nifti(root / f"sub-{sub}" / "dwi" / f"sub-{sub}_dwi.nii.gz", np.zeros(shape, np.float32))
        write_nifti(root / "derivatives" / pipelines[0] / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w_desc-preproc_T2w.nii.gz",
                    np.zeros(shape, np.float32))
        rows = ["participant_id\tinstitution_id"] + [f"sub-{s}\t{'amu' if n % 2 == 0 else 'mgh'}" for n, s in enumerate(subjects)]
        (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return out


def make_nnunet(
    root: Path,
    *,
    cases=("case001", "case002", "case003"),
    channels=("T2", "ADC"),
    labels=None,
    shape=SHAPE,
    test_cases=("case900",),
) -> dict:
    """nnU-Net v2 raw dataset with integer label maps (0 background, 1.. classes).

    Returns {"images": {(case, index): array}, "labels": {case: array}}.
    """
    labels = labels or {"background": 0, "GM": 1, "WM": 2}
    root.mkdir(parents=True, exist_ok=True)
    out: dict = {"images": {}, "labels": {}}
    for i, case in enumerate(cases):
        outer = blob(shape, radius=7.0, seed=200 + i)
        inner = blob(shape, radius=3.5, seed=300 + i)
        lab = np.zeros(shape, np.uint8)
        lab[outer > 0] = 1
        if len(labels) > 2:
            lab[inner > 0] = 2
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", lab)
        out["labels"][case] = lab
        for c in range(len(channels)):
            arr = image_like(lab, seed=20 * i + c, offset=80.0 + 30 * c)
            write_nifti(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", arr)
            out["images"][(case, c)] = arr
    for case in test_cases:
        for c in range(len(channels)):
            write_nifti(root / "imagesTs" / f"{case}_{c:04d}.nii.gz", np.zeros(shape, np.float32))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }, indent=2))
    return out


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def make_softseg_dataset(root: Path, *, subjects=("s01", "s02", "s03", "s04", "s05"), raters=3,
                         channels=("image",), shape=SHAPE) -> dict:
    """A softseg dataset folder: <subject>/image.nii.gz (or image_<c>) + rater-<i>.nii.gz (uint8 0/1)."""
    out: dict = {"images": {}, "raters": {}}
    for i, sub in enumerate(subjects):
        truth = blob(shape, seed=500 + i)
        for j, c in enumerate(channels):
            arr = image_like(truth, seed=40 * i + j, offset=90.0 + 20 * j)
            name = "image.nii.gz" if len(channels) == 1 else f"image_{c}.nii.gz"
            write_nifti(root / sub / name, arr)
            out["images"][(sub, c)] = arr
        for r in range(1, raters + 1):
            lab = blob(shape, seed=600 + 10 * i + r)
            write_nifti(root / sub / f"rater-{r}.nii.gz", lab)
            out["raters"][(sub, r)] = lab
    return out


def model_file(path: Path, *, channels=("image",), out_channels=1, activation="normalized_relu", depth=2, width=4,
               spacing=(None, 1.0, 1.0), split=None, fusion=None, seed=0) -> Path:
    """A softseg model file with a random network and non-trivial batch-norm statistics."""
    import torch

    from softseg.card import ActivationCard, ArchitectureCard, CandidateCard, ModelCard, PreprocessingCard, SplitCard, UNetConfig
    from softseg.modelfile import save_model
    from softseg.models import UNet2D

    torch.manual_seed(seed)
    net = UNet2D(len(channels), out_channels, depth=depth, width=width)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    classes = ("foreground",) if out_channels == 1 else tuple(f"class{k}" for k in range(1, out_channels))
    card = ModelCard(
        classes=classes, thresholds=tuple(0.5 for _ in classes), channels=tuple(channels),
        preprocessing=PreprocessingCard(spacing=tuple(spacing), crop=(16, 16)),
        candidate=CandidateCard(name="softseg", activation=ActivationCard(name=activation)),
        architecture=ArchitectureCard(config=UNetConfig(**net.config)),
        split=SplitCard(**{k: tuple(v) for k, v in (split or {}).items()}), fusion=fusion,
    )
    return save_model(path, net, card)


# ------------------------------------------------------------------ refusals of the commands
def files_under(folder: Path) -> list[str]:
    """Every file and folder below *folder* (hidden ones too: staging folders, temporaries)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def refused(capsys, tmp_path: Path, argv: list[str], *needles: str) -> str:
    """Run ``softseg ARGV``: exit 2, one line ``softseg <command>: error: ...`` holding every
    needle, and nothing written under *tmp_path* (no staging folder left either); the line."""
    from softseg.cli import main

    before = files_under(tmp_path)
    code = main(list(argv))
    _, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"softseg {argv[0]}: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert files_under(tmp_path) == before
    return lines[0]
