"""Reasoning tasks as one Example shape: arith, the shipped benchmarks, user JSONL files."""

from __future__ import annotations

import re

import pytest

from labcli.errors import UserError
from labcli.reasoning import tasks


def test_arith_task_has_disjoint_test_split():
    train = tasks.load_task("arith", "train", seed=0)
    test = tasks.load_task("arith", "test", seed=0)
    assert len(train) == 4000 and 450 < len(test) <= 500
    assert not {e.question for e in test} & {e.question for e in train}


@pytest.mark.parametrize("task,split,count,kind", [
    ("gsm8k", "train", 7473, "number"), ("gsm8k", "test", 1319, "number"), ("svamp", "test", 300, "number"),
    ("strategyqa", "train", 2061, "choice"), ("strategyqa", "test", 229, "choice"),
    ("arc", "test", 2376, "choice"), ("arc-challenge", "test", 1172, "choice"),
])
def test_shipped_readers(task, split, count, kind):
    rows = tasks.load_task(task, split)
    assert len(rows) == count and all(r.kind == kind for r in rows)


def test_reader_details():
    g = tasks.load_task("gsm8k", "test")[0]
    assert g.answer == "18" and "<<" not in " ".join(g.rationale)
    s = tasks.load_task("svamp", "train")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", e.answer) for e in s)
    assert {e.answer for e in tasks.load_task("strategyqa", "test")} == {"yes", "no"}
    assert tasks.load_task("arc", "test")[0].answer == "answer1"


def test_bad_task_and_malformed_jsonl(tmp_path):
    with pytest.raises(UserError, match="unknown task 'gsm9k'"):
        tasks.load_task("gsm9k", "train")
    f = tmp_path / "mine.jsonl"
    f.write_text('{"question": "1+1?", "answer": 2}\n{"question": oops}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        tasks.load_task(str(f), "train")


def test_arith_settings_steps_range():
    assert tasks.ArithSettings(min_steps=3, max_steps=1).steps == (3, 3)
    assert tasks.ArithSettings(min_steps=1, max_steps=4).steps == (1, 4)


def test_jsonl_task_numbers_choices_and_missing_keys(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(['{"question": "q%d", "answer": "1,000"}' % i for i in range(9)] +
                           ['{"question": "last", "answer": "Yes", "rationale": ["a."]}']), encoding="utf-8")
    train, test = tasks.load_task(str(f), "train"), tasks.load_task(str(f), "test")
    assert len(train) == 9 and train[0].answer == "1000" and train[0].kind == "number"
    assert test == [tasks.Example("last", "yes", "choice", ("a.",))]
    f.write_text('{"question": "no answer"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="lacks 'question' or 'answer'"):
        tasks.load_task(str(f), "train")
