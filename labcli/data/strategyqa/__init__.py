"""StrategyQA (Geva et al. 2021): yes/no questions needing implicit multi-step reasoning, MIT; see README.md.

    from labcli.data import strategyqa
    rows = strategyqa.read("test")   # [{"question": str, "answer": True, "facts": [str, ...]}]

`train` is the authors' 2,061-question train file and `test` their 229-question dev file (a 90/10
split of the official labelled train set; the official test set has no public labels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

FOLDER = Path(__file__).parent


def read(split: Literal["train", "test"]) -> list[dict]:
    rows = json.loads((FOLDER / ("train.json" if split == "train" else "dev.json")).read_text(encoding="utf-8"))
    return [{"question": r["question"], "answer": bool(r["answer"]), "facts": list(r["facts"])} for r in rows]
