"""One colour per candidate, the same in every view (issue 11 #8).

A candidate (a training recipe such as ``softseg`` or ``conventional``, or any other name a
comparison gives a prediction) keeps **one** colour wherever it is drawn: its prediction layer
in napari, the Threshold widget's overlay and curves, the Compare widget's plots and the
figures of the HTML report written by ``softseg compare`` (:mod:`softseg.compare.report`).
The rule lives here, in the engine, so the CLI, the report and the widgets cannot disagree.

The rule
--------
1. The candidates of the papers' ablation (:data:`softseg.candidates.CANDIDATES`) have fixed
   colours from the colour-blind-safe palette of Okabe & Ito (2008), "Color Universal Design"
   (https://jfly.uni-koeln.de/color/): SoftSeg vermillion, the conventional pipeline sky blue, ...
   (:data:`CANDIDATE_COLORS`). Names are compared without case and surrounding spaces; a repeat
   suffix (``softseg-r2``, ``softseg_r0``) is the candidate's colour.
2. Any other name gets one of the :data:`EXTRA_COLORS` (chosen to differ from the fixed ones),
   picked by the SHA-256 of the name: the same name gives the same colour in every process and
   every run (Python's ``hash()`` would not). Two different unknown names can share a colour
   (20 choices); give such candidates distinct known names to avoid it.

Class colours of a multi-class prediction are not candidate colours: a K-class candidate's class
maps are told apart by their class colour, and its legend entries carry the candidate's name.

This module imports neither matplotlib, Qt nor napari.
"""

from __future__ import annotations

import hashlib
import re

from softseg.errors import InputError

__all__ = [
    "CANDIDATE_COLORS",
    "EXTRA_COLORS",
    "candidate_color",
    "candidate_rgb",
]

#: Fixed colours of the papers' candidates (Okabe & Ito 2008), ``"#rrggbb"``.
CANDIDATE_COLORS: dict[str, str] = {
    "softseg": "#D55E00",  # vermillion: the product's recipe
    "conventional": "#56B4E9",  # sky blue: the baseline it is compared with
    "hard-relu-wing": "#009E73",  # bluish green
    "soft-sig-wing": "#E69F00",  # orange
    "soft-relu-dice": "#CC79A7",  # reddish purple
    "soft-sig-bce": "#F0E442",  # yellow
    "gdl-boundary": "#0072B2",  # blue
    "soft-relu-dml": "#999999",  # grey (the palette's black is invisible on napari's dark canvas)
    # issue 15: the published SoftSeg and the other normalisations (tab20; Okabe-Ito has 8)
    "softseg-paper": "#FF9896",  # light red: next to softseg's vermillion
    "softseg-floor": "#C49C94",
    "softseg-batch-max": "#9467BD",
    "softseg-volume-max": "#8C564B",
    "softseg-wing": "#FFBB78",  # light orange (tab20), the previous default softseg
}

#: Colours of other names (picked by the name's SHA-256): matplotlib's tab20 without the hues
#: that the fixed colours already use closely or take.
EXTRA_COLORS: tuple[str, ...] = (
    "#17BECF", "#BCBD22", "#E377C2",
    "#AEC7E8", "#98DF8A", "#C5B0D5",
    "#F7B6D2", "#DBDB8D", "#9EDAE5", "#7F7F7F", "#C7C7C7",
    "#1F77B4", "#2CA02C", "#D62728", "#FF7F0E", "#393B79",
)

_REPEAT = re.compile(r"^(?P<base>.+?)[-_ ]r\d+$")


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise InputError(f"a candidate name must be text; got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    if not key:
        raise InputError("a candidate name must not be empty; name the prediction")
    return key


def candidate_color(name: str) -> str:
    """The colour of candidate ``name``, ``"#RRGGBB"`` (see the module docstring for the rule).

    Parameters
    ----------
    name : str
        A candidate name: the model card's ``candidate.name`` (``"softseg"``), or the name a
        comparison gives a prediction.

    Returns
    -------
    str
        Upper-case hex colour, e.g. ``candidate_color("softseg") == "#D55E00"``.

    Raises
    ------
    InputError
        ``name`` is not a string, or is empty.
    """
    key = _key(name)
    if key in CANDIDATE_COLORS:
        return CANDIDATE_COLORS[key]
    repeat = _REPEAT.match(key)
    if repeat and repeat["base"] in CANDIDATE_COLORS:
        return CANDIDATE_COLORS[repeat["base"]]
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return EXTRA_COLORS[int.from_bytes(digest[:8], "big") % len(EXTRA_COLORS)]


def candidate_rgb(name: str) -> tuple[float, float, float]:
    """:func:`candidate_color` as RGB floats in [0, 1] (matplotlib, napari colormaps)."""
    hexa = candidate_color(name)
    return tuple(int(hexa[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
