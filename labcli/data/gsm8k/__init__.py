"""GSM8K (Cobbe et al. 2021): 7,473 train and 1,319 test grade-school math word problems, MIT; see README.md.

    from labcli.data import gsm8k
    rows = gsm8k.read("test")   # [{"question": str, "answer": 18.0, "steps": ("Janet sells 16 - 3 - 4 = 9 ...", ...)}]

`steps` are the worked solution's lines with the calculator annotations (`<<48/2=24>>`) removed, as
upstream's README describes; `answer` is the number after `####`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

FOLDER = Path(__file__).parent


def read(split: Literal["train", "test"]) -> list[dict]:
    rows = []
    for line in (FOLDER / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        body, final = row["answer"].split("####")
        steps = tuple(re.sub(r"<<[^>]*>>", "", s).strip() for s in body.strip().splitlines() if s.strip())
        rows.append({"question": row["question"], "answer": float(final.strip().replace(",", "")), "steps": steps})
    return rows
