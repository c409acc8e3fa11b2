"""The engine's messages in the dock's words (issue 11 #12: no command-line wording in the GUI).

The training child writes its errors for the command line ("lower --lr (now 0.001) and
--resume"). The dock shows the same facts with the names of its own controls. Each command-line
option the engine's messages name maps to the control that sets it; an option without a control
keeps its meaning in plain words. A test keeps this table complete: every ``--option`` that
``softseg.training`` / ``softseg.data`` write in a message has an entry.
"""

from __future__ import annotations

import re

__all__ = ["OPTION_WORDS", "gui_message"]

#: Command-line option -> what the dock calls it (quoted control names, or plain words).
OPTION_WORDS: dict[str, str] = {
    "--lr": "'Learning rate'",
    "--batch-size": "'Batch size'",
    "--epochs": "'Epochs'",
    "--patience": "'Patience'",
    "--crop": "'Crop'",
    "--foreground-oversampling": "'Foreground oversampling'",
    "--depth": "'U-Net depth'",
    "--width": "'U-Net width'",
    "--val-fraction": "'Validation fraction'",
    "--test-fraction": "'Test fraction'",
    "--resume": "'Resume'",
    "--overwrite": "replace the model file (the dock asks first)",
    "--init": "the model to fine-tune",
    "--candidate": "'Candidate'",
    "--spacing": "the spacing setting",
    "--fusion": "'Fusion'",
    "--device": "'Device'",
    "--out": "'Model file'",
    "--tensorboard": "a TensorBoard folder",
    "--allow-preannotated": "confirm training on it when the dock asks",
    "--config": "the settings",
}

_OPTION = re.compile(r"(?:pass |use |with |start over with |drop |then )?(--[a-z][a-z-]*)( [0-9][0-9.e+-]*)?")


def gui_message(text: str) -> str:
    """``text`` (one line from the engine or the training child) in the dock's words.

    ``"lower --lr (now 0.001) and --resume"`` -> ``"lower 'Learning rate' (now 0.001) and
    'Resume'"``; ``"(--batch-size 4)"`` -> ``"('Batch size' 4)"``; the prefix
    ``"softseg train: error: "`` is dropped.
    """
    line = " ".join(str(text).split())
    line = re.sub(r"^softseg [a-z-]+: (?:internal )?error: ", "", line)

    def repl(match: re.Match[str]) -> str:
        option, value = match.group(1), match.group(2) or ""
        words = OPTION_WORDS.get(option)
        if words is None:
            return match.group(0)
        lead = match.group(0)[: match.start(1) - match.start(0)]
        if not words.startswith("'"):  # a phrase: it says what to do itself
            lead = "start over: " if lead.strip() == "start over with" else ""
        elif lead.strip() in ("pass", "use", "with", "then"):
            lead = "set " if value else "tick " if option == "--resume" else "use "
        elif lead.strip() == "start over with":
            lead = "start over: "
        elif lead.strip() == "drop":
            lead = "leave out "
        return f"{lead}{words}{value}"

    return _OPTION.sub(repl, line)
