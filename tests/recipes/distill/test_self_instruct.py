"""`lab distill self-instruct`: its errors and the tiny teacher's corpus in-process (fast), the real CLI
with a tiny teacher end to end (slow)."""

from __future__ import annotations

import json
import random

import pytest

from labcli.data import self_instruct as data
from labcli.recipes.distill import self_instruct


def test_an_endpoint_teacher_without_a_model_name_is_a_one_line_error(lab_main, tmp_path):
    result = lab_main("distill", "self-instruct", "--teacher", "http://127.0.0.1:9/v1")
    assert result.returncode == 2 and result.stderr.startswith("error: teacher http://127.0.0.1:9/v1 is an endpoint")
    assert not (tmp_path / "runs").exists()
    assert self_instruct.check(self_instruct.Config(teacher="http://h/v1")) != []


def test_a_missing_teacher_folder_is_a_one_line_error(lab_main, tmp_path):
    result = lab_main("distill", "self-instruct", "--teacher", str(tmp_path / "nope"))
    assert result.returncode == 2 and result.stderr.startswith("error: teacher model folder not found")


def test_the_tiny_teacher_learns_the_three_prompt_formats():
    texts = self_instruct.teacher_texts(data.seed_tasks(), 8, random.Random(0))
    assert texts[0].startswith("Come up with a series of tasks:\n1. ") and "\n9. " in texts[0]
    assert texts[2].startswith("Can the following task") and texts[2].endswith(("? Yes", "? No"))
    assert "Task: " in texts[3] and ("\nExample 1\n" in texts[3] or "\nClass label:" in texts[3])
    # the user-oriented evaluation instructions never reach the teacher (bar one that is also a seed)
    evaluation = {t["instruction"] for t in data.user_oriented()} - {t["instruction"] for t in data.seed_tasks()}
    assert not any(e in t for t in self_instruct.teacher_texts(data.seed_tasks(), 40, random.Random(1)) for e in evaluation)


def test_histogram_bins_cover_zero_to_one():
    hist = self_instruct.rouge_histogram([0.0, 0.05, 0.7, 0.71, 1.0])
    assert hist["0.0-0.1"] == 2 and hist["0.7-0.8"] == 2 and hist["0.9-1.0"] == 1 and sum(hist.values()) == 5


@pytest.mark.slow
def test_tiny_teacher_end_to_end(run_lab, tmp_path):
    proc = run_lab("distill", "self-instruct", "num_instructions=6", "request_batch_size=8", "max_tokens=48",
                   "instance_max_tokens=48", "teacher_corpus=80", "teacher_train.max_steps=10", "teacher_train.batch_size=4",
                   "teacher_train.micro_batch_size=4", "max_rounds=3",
                   "teacher_train.tensorboard=false")
    assert "run folder:" in proc.stdout
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    tasks = [json.loads(line) for line in (run / "instructions.jsonl").read_text().splitlines()]
    assert summary["kept_instructions"] == len(tasks) >= 1
    assert all(t["rouge_l"] <= 0.7 and 4 <= len(t["instruction"].split()) <= 150 for t in tasks)
    rejected = {k: v for k, v in summary["rejected"].items() if k != "reply cut by max_tokens"}
    assert summary["candidates"] == len(tasks) + sum(rejected.values())
    rows = (run / "data.jsonl").read_text().splitlines()
    assert len(rows) == summary["alpaca_rows"] == sum(len(t["instances"]) for t in tasks)
