"""Reasoning tasks as one `Example` shape: the generated `arith` default and the shipped benchmarks.

The shipped benchmarks are data packages, each with its reader, README and licence:
`labcli/data/{gsm8k,svamp,strategyqa,arc}`. A task may also be a path to a JSONL file of
`{"question", "answer"[, "rationale"]}` objects (split 90/10 here).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli.config import Section
from labcli.errors import UserError

TASKS = ("arith", "gsm8k", "svamp", "strategyqa", "arc", "arc-challenge")
Kind = Literal["number", "choice"]


@dataclass(frozen=True)
class Example:
    question: str
    answer: str  # canonical: a number as text ("18", "2.5"), or a choice ("yes", "answer2")
    kind: Kind
    rationale: tuple[str, ...] = ()  # gold reasoning steps, when the data set has them
    program: tuple = ()  # arith only: the exact operations


class ArithSettings(Section):
    """Difficulty of the generated `arith` task."""

    min_steps: int = Field(2, ge=1, le=8, description="Fewest operations per generated problem")
    max_steps: int = Field(2, ge=1, le=8, description="Most operations per generated problem")
    digits: int = Field(1, ge=1, le=4, description="Digits of the operands")

    @property
    def steps(self) -> tuple[int, int]:
        return self.min_steps, max(self.min_steps, self.max_steps)


def number_text(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else f"{x:g}"


def load_task(task: str, split: Literal["train", "test"], *, seed: int = 0, n: int | None = None,
              steps: tuple[int, int] = (2, 2), digits: int = 1) -> list[Example]:
    """Examples of `task`'s split; `n` keeps a seeded subset (all when None)."""
    if task == "arith":
        from labcli.reasoning import arith

        count = n or (4000 if split == "train" else 500)
        # different seeds per split, and test problems that also occur in train are dropped
        problems = arith.generate(count, seed * 2 + (split == "test"), steps, digits)
        if split == "test":
            seen = {p.question for p in arith.generate(4000, seed * 2, steps, digits)}
            problems = [p for p in problems if p.question not in seen]
        return [Example(p.question, str(p.answer), "number", p.steps, p.program) for p in problems]
    readers = {"gsm8k": _gsm8k, "svamp": _svamp, "strategyqa": _strategyqa, "arc": _arc, "arc-challenge": _arc}
    if task in readers:
        rows = readers[task](split, task)
    elif task.endswith(".jsonl") or Path(task).is_file():
        rows = _jsonl_task(Path(task), split)
    else:
        raise UserError(f"unknown task '{task}'", f"one of: {', '.join(TASKS)}, or a .jsonl file of question/answer lines")
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    return rows


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines, failing on the first malformed line with its number."""
    if not path.is_file():
        raise UserError(f"data file not found: {path}", "pass an existing .jsonl file")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text", "re-save it as UTF-8") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {i} is not valid JSON ({exc.msg})", "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i} is not a JSON object", "write one JSON object per line")
        rows.append(row)
    return rows


def _gsm8k(split: str, task: str) -> list[Example]:
    from labcli.data import gsm8k

    return [Example(r["question"], number_text(r["answer"]), "number", r["steps"]) for r in gsm8k.read(split)]


def _svamp(split: str, task: str) -> list[Example]:
    """The gold rationale is SVAMP's equation, written as one step: `76 - 25 = 51.`"""
    from labcli.data import svamp

    out = []
    for r in svamp.read(split):
        equation = re.sub(r"(\d+)\.0\b", r"\1", r["equation"])
        step = f"{equation.strip('( )') if equation.count('(') == 1 else equation} = {number_text(r['answer'])}."
        out.append(Example(r["question"], number_text(r["answer"]), "number", (step,)))
    return out


def _strategyqa(split: str, task: str) -> list[Example]:
    from labcli.data import strategyqa

    return [Example(r["question"], "yes" if r["answer"] else "no", "choice", tuple(f.rstrip(".") + "." for f in r["facts"]))
            for r in strategyqa.read(split)]


def _arc(split: str, task: str) -> list[Example]:
    from labcli.data import arc

    return [Example(r["question"], r["answer"], "choice") for r in arc.read(split, "challenge" if task == "arc-challenge" else "easy")]


def _jsonl_task(path: Path, split: str) -> list[Example]:
    rows = read_jsonl(path)
    out = []
    for i, r in enumerate(rows, 1):
        if "question" not in r or "answer" not in r:
            raise UserError(f"{path} line {i} lacks 'question' or 'answer'", "each line needs both keys")
        ans = str(r["answer"]).strip()
        try:
            ans, kind = number_text(float(ans.replace(",", ""))), "number"
        except ValueError:
            ans, kind = ans.lower(), "choice"
        rationale = r.get("rationale") or ()
        out.append(Example(str(r["question"]), ans, kind, tuple(rationale) if isinstance(rationale, list) else (str(rationale),)))
    cut = max(1, len(out) * 9 // 10)
    return out[:cut] if split == "train" else out[cut:]
