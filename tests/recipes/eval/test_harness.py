"""`lab eval harness`: bad input is one line (fast); a preset scored on one local task in-process (slow)."""

from __future__ import annotations

import json

import pytest


def test_a_missing_run_folder_is_a_one_line_error(lab_main, tmp_path):
    result = lab_main("eval", "harness", f"run={tmp_path / 'nope'}")
    assert result.returncode == 2 and result.stderr.startswith("error: run folder not found")
    assert not (tmp_path / "runs").exists()


def test_an_unknown_task_is_refused(lab_main):
    result = lab_main("eval", "harness", "tasks=[mmlu]")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "tasks" in result.stderr


@pytest.mark.slow  # builds tiny-gpt2 and runs lm_eval (about 6 s)
def test_a_preset_is_scored_and_the_run_keeps_its_task_yamls(lab_main, tmp_path):
    pytest.importorskip("lm_eval")
    result = lab_main("eval", "harness", "model=tiny-gpt2", "tasks=[strategyqa]", "limit=4", "--output", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["scored"] == "tiny-gpt2" and s["harness"]["tasks"]["strategyqa"]["n"] == 4 and "harness_strategyqa" in s
    assert (tmp_path / "run" / "tasks" / "lab_strategyqa.yaml").is_file() and "strategyqa" in result.stdout
