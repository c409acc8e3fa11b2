"""Fast checks of benchmarks/softseg_claims.py (the full run takes most of an hour).

The tables are checked against scipy's Wilcoxon test and hand-computed means, the claim
judgements against hand-made tables whose verdict is known, and the model-file header guard
against a valid safetensors header that the loader must accept.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

# the ``claims`` fixture (the benchmark as a module) is in conftest.py


def _rows(values: dict[str, list[float]], metric: str = "ece") -> dict[str, list[dict]]:
    return {c: [{metric: v, "dice": 0.8} for v in vs] for c, vs in values.items()}


def test_table_means_and_wilcoxon_match_scipy(claims):
    soft = [0.01, 0.02, 0.015, 0.03, 0.012, 0.018]
    conv = [0.05, 0.04, 0.06, 0.055, 0.07, 0.045]
    tab = claims.table(_rows({"softseg": soft, "conventional": conv}), "softseg")
    entry = tab["candidates"]["conventional"]
    assert tab["n_repeats"] == 6
    assert entry["mean"]["ece"] == pytest.approx(np.mean(conv))
    assert entry["std"]["ece"] == pytest.approx(np.std(conv, ddof=1))
    assert entry["p"]["ece"] == pytest.approx(wilcoxon(conv, soft).pvalue)
    # six pairs, all of one sign: the exact two-sided p-value is 2 / 2**6
    assert entry["p"]["ece"] == pytest.approx(2 / 2**6)
    assert math.isnan(tab["candidates"]["softseg"]["p"].get("ece", math.nan))


def test_table_renames_fusion_candidates(claims):
    tab = claims.table(_rows({"conventional:staple": [0.1, 0.2], "softseg": [0.1, 0.1]}),
                       "conventional:staple", claims.FUSION_ALIAS)
    assert set(tab["candidates"]) == {"conventional:staple", "softseg:average"}


def _ablation(ece_soft: float, ece_conv: float, p_ece: float) -> dict:
    base = {"dice": 0.8, "ece": 0.02, "soft_rvd": 0.0, "entropy_error": 10.0, "ltpr": 0.5,
            "lfdr": 0.2, "lesion_tpr": 0.5, "soft_fraction": 0.5, "ece_roi": 0.1,
            "ece_staple": 0.1, "truth_soft_fraction": 0.7}
    cands = {}
    for name in ("softseg", "conventional", "soft-relu-dice", "soft-sig-bce"):
        mean = dict(base)
        cands[name] = {"mean": mean, "std": {}, "p": {}}
    cands["softseg"]["mean"]["ece"] = ece_soft
    cands["conventional"]["mean"]["ece"] = ece_conv
    cands["conventional"]["p"]["ece"] = p_ece
    # Bertels: Dice-trained candidates over-segment the soft volume, CE / regression do not
    cands["conventional"]["mean"]["soft_rvd"] = -0.30
    cands["soft-relu-dice"]["mean"]["soft_rvd"] = -0.20
    cands["softseg"]["mean"]["soft_rvd"] = 0.05
    cands["soft-sig-bce"]["mean"]["soft_rvd"] = -0.02
    cands["conventional"]["mean"]["soft_fraction"] = 0.05
    return {"reference": "softseg", "n_repeats": 6, "candidates": cands}


def test_judge_calibration_and_volume_verdicts(claims):
    held = {c["claim"]: c for c in claims.judge(_ablation(0.01, 0.05, 0.03), {})}
    cal = next(c for k, c in held.items() if k.startswith("SoftSeg is better calibrated"))
    vol = next(c for k, c in held.items() if k.startswith("Soft volume"))
    soft = next(c for k, c in held.items() if k.startswith("Conventional outputs"))
    assert cal["held"] and cal["direction_held"]
    assert vol["held"]
    assert soft["held"]
    # lower ECE but not significant: the direction holds, the claim does not
    cal = claims.judge(_ablation(0.01, 0.05, 0.2), {})[0]
    assert cal["direction_held"] and not cal["held"]
    # reversed: neither
    cal = claims.judge(_ablation(0.06, 0.05, 0.03), {})[0]
    assert not cal["direction_held"] and not cal["held"]


def test_modelfile_guard_is_off_with_the_safetensors_reader(claims):
    """The loader reads headers with safetensors' own parser (issue 12), so the benchmark's
    workaround for the old hand-written reader stays off; the 0x80 / "PK" header-length cases are
    regression tests of softseg.modelfile (tests/softseg/test_modelfile.py)."""
    from softseg import modelfile

    assert not hasattr(modelfile, "_read_header")
    assert claims.modelfile_header_guard() is False
