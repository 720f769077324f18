"""`lab distill evol-instruct`: its errors and the tiny teacher's corpus in-process (fast), the real CLI
end to end with a tiny teacher (slow)."""

from __future__ import annotations

import json
import random

import pytest

from labcli.data import self_instruct as data
from labcli.errors import UserError
from labcli.recipes.distill import evol_instruct


def test_bad_pool_files_are_one_line_errors(lab_main, tmp_path):
    result = lab_main("distill", "evol-instruct", f"pool={tmp_path / 'none.jsonl'}")
    assert result.returncode == 2 and result.stderr.startswith("error: pool file not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Name a river."}\n{"text": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not a JSON object"):
        evol_instruct.read_pool(str(bad))
    assert not (tmp_path / "runs").exists()


def test_pool_reads_a_self_instruct_run_and_defaults_to_the_seeds(tmp_path):
    file = tmp_path / "instructions.jsonl"
    file.write_text('\ufeff{"instruction": "Name a river.", "rouge_l": 0.3}\r\n', encoding="utf-8")
    assert evol_instruct.read_pool(str(file)) == ["Name a river."]
    assert len(evol_instruct.read_pool(None)) == 175


def test_tiny_teacher_corpus_has_the_four_formats():
    texts = evol_instruct.teacher_texts(data.seed_tasks(), 8, random.Random(0))
    assert "#Rewritten Prompt#:\n" in texts[0] or "#Created Prompt#:\n" in texts[0]
    assert texts[1].startswith("### Instruction:\n")
    assert texts[2].endswith((" Equal", " Not Equal")) and texts[3].endswith((" 8", " 2"))


@pytest.mark.slow
def test_tiny_teacher_end_to_end(run_lab, tmp_path):
    run_lab("distill", "evol-instruct", "pool_size=6", "rounds=2", "batch_size=6", "max_tokens=24", "response_tokens=24",
            "teacher_corpus=80", "teacher_train.max_steps=10", "teacher_train.batch_size=4", "teacher_train.micro_batch_size=4",
            "teacher_train.tensorboard=false")
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["attempts"] == 12
    assert summary["survived"] + sum(summary["eliminated"].values()) == 12
    assert sum(summary["judge_scores"].values()) == summary["survived"]
    rows = (run / "data.jsonl").read_text().splitlines()
    assert len(rows) == summary["kept"] <= summary["survived"]
