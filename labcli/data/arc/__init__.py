"""ARC (Clark et al. 2018), Easy and Challenge sets, as redistributed by LLM-Adapters; see README.md.

    from labcli.data import arc
    rows = arc.read("test", "challenge")   # [{"question": "<stem>\n\nAnswer1: ... Answer4: ...", "answer": "answer2"}]

`question` is LLM-Adapters' instruction without its leading "Please choose the correct answer to
the question: "; `answer` is `answerN`, the 1-based position of the right choice. No dev split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

FOLDER = Path(__file__).parent
PREFIX = "Please choose the correct answer to the question: "


def read(split: Literal["train", "test"], level: Literal["easy", "challenge"] = "easy") -> list[dict]:
    rows = json.loads((FOLDER / f"{level}-{split}.json").read_text(encoding="utf-8"))
    return [{"question": r["instruction"].replace(PREFIX, ""), "answer": r["answer"]} for r in rows]
