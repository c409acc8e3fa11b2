"""softseg.palette: one colour per candidate, in the engine and in the report figures."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from softseg import compare
from softseg.candidates import CANDIDATES
from softseg.errors import InputError
from softseg.palette import CANDIDATE_COLORS, EXTRA_COLORS, candidate_color, candidate_rgb

#: Okabe & Ito (2008), "Color Universal Design", RGB 0-255 as published.
OKABE_ITO = {
    "vermillion": (213, 94, 0),
    "sky blue": (86, 180, 233),
    "bluish green": (0, 158, 115),
    "orange": (230, 159, 0),
    "reddish purple": (204, 121, 167),
    "yellow": (240, 228, 66),
    "blue": (0, 114, 178),
    "grey": (153, 153, 153),  # the 8-colour variant's grey in place of black (dark canvas)
}


def test_every_candidate_of_the_ablation_has_its_own_okabe_ito_colour():
    assert set(CANDIDATE_COLORS) == set(CANDIDATES)
    assert len(set(CANDIDATE_COLORS.values())) == len(CANDIDATES)  # each its own colour
    ablation = [n for n in CANDIDATES if not n.startswith("softseg-")]
    rgbs = {tuple(round(255 * c) for c in candidate_rgb(n)) for n in ablation}
    assert rgbs == set(OKABE_ITO.values())  # distinct, and exactly the published values
    assert tuple(round(255 * c) for c in candidate_rgb("softseg")) == OKABE_ITO["vermillion"]
    assert tuple(round(255 * c) for c in candidate_rgb("conventional")) == OKABE_ITO["sky blue"]


def test_names_are_matched_without_case_spaces_or_repeat_suffix():
    for name in ("SoftSeg", " softseg ", "softseg-r0", "softseg_r12", "softseg r3"):
        assert candidate_color(name) == "#D55E00", name
    assert candidate_color("softseg-reloaded") != "#D55E00"  # not a repeat suffix


def test_other_names_get_an_extra_colour_by_sha256_the_same_in_every_process():
    name = "my experiment:staple"
    digest = hashlib.sha256(name.encode()).digest()
    want = EXTRA_COLORS[int.from_bytes(digest[:8], "big") % len(EXTRA_COLORS)]
    assert candidate_color(name) == want
    assert candidate_color(name.upper()) == want
    code = "from softseg.palette import candidate_color; print(candidate_color('my experiment:staple'))"
    for seed in ("1", "2"):  # Python's own hash() would differ between these processes
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        assert out.strip() == want
    assert not set(EXTRA_COLORS) & set(CANDIDATE_COLORS.values())


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_bad_names_are_one_line_errors(bad):
    with pytest.raises(InputError, match="candidate name"):
        candidate_color(bad)


def test_report_figures_draw_each_candidate_in_its_colour():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    truth = np.zeros((6, 20, 20), np.float32)
    truth[2:4, 5:15, 5:15] = 1
    preds = {n: np.clip(truth * 0.8 + rng.random(truth.shape) * 0.3, 0, 1).astype(np.float32)
             for n in ("softseg", "conventional", "my-model")}
    result = compare.compare_predictions(preds, truth, thresholds=0.5, raters=np.stack([truth] * 2))
    for figure in compare.available_figures(result.curves):
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        compare.draw_figure(ax, figure, result.curves)
        legend = {t.get_text() for t in ax.get_legend().get_texts()}
        assert set(preds) <= legend, figure
        drawn = {line.get_label(): to_rgb(line.get_color()) for line in ax.get_lines()}
        drawn.update({c.get_label(): tuple(c.get_facecolor()[0][:3]) for c in ax.collections
                      if c.get_label() in preds})
        for name in preds:
            assert drawn[name] == pytest.approx(candidate_rgb(name)), (figure, name)
    # a caller may name the colours (the Compare widget labels rows by layer)
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    compare.draw_figure(ax, "dice_threshold", result.curves, colors={"my-model": "#123456"})
    drawn = {line.get_label(): to_rgb(line.get_color()) for line in ax.get_lines()}
    assert drawn["my-model"] == pytest.approx(to_rgb("#123456"))
    assert drawn["softseg"] == pytest.approx(candidate_rgb("softseg"))
