"""Self-Instruct's 175 seed tasks and 252 user-oriented evaluation instructions (Apache-2.0); see README.md.

    from labcli.data import self_instruct
    tasks = self_instruct.seed_tasks()   # [{"instruction": str, "instances": [{"input", "output"}], "is_classification": bool, ...}]
"""

from __future__ import annotations

import json
from pathlib import Path

FOLDER = Path(__file__).parent


def _read(name: str) -> list[dict]:
    lines = (FOLDER / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def seed_tasks() -> list[dict]:
    return _read("seed_tasks.jsonl")


def user_oriented() -> list[dict]:
    return _read("user_oriented_instructions.jsonl")
