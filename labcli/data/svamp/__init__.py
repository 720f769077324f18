"""SVAMP (Patel et al. 2021): 1,000 one-equation math word problems, MIT; see README.md.

    from labcli.data import svamp
    rows = svamp.read("train")   # [{"question": str, "equation": "( 76.0 - 25.0 )", "answer": 51.0}]

SVAMP has no split; lab's is fixed: a seeded (1234) permutation, its first 700 problems train, the
other 300 test. `question` is the upstream `Body + " " + Question`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

FILE = Path(__file__).parent / "SVAMP.json"


def split_indices(split: Literal["train", "test"], n: int = 1000) -> list[int]:
    """Positions in SVAMP.json of lab's train (700) or test (300) problems."""
    order = random.Random(1234).sample(range(n), n)
    return order[:700] if split == "train" else order[700:]


def read(split: Literal["train", "test"]) -> list[dict]:
    rows = json.loads(FILE.read_text(encoding="utf-8"))
    keep = split_indices(split, len(rows))
    return [{"question": f"{rows[i]['Body'].strip()} {rows[i]['Question'].strip()}", "equation": rows[i]["Equation"].strip(),
             "answer": rows[i]["Answer"]} for i in keep]
