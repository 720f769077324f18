"""`lab eval judge`: an endpoint judge without a model name is one line (fast); a preset judged by itself
against another preset's answers and against the human answers, in-process (slow)."""

from __future__ import annotations

import json

import pytest


def test_an_endpoint_judge_needs_a_model_name(lab_main, tmp_path):
    result = lab_main("eval", "judge", "model=tiny-gpt2", "judge=http://127.0.0.1:9/v1")
    assert result.returncode == 2 and result.stderr.startswith("error: an endpoint judge needs judge_model")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # builds tiny-gpt2, generates and judges 4 x 2 x 2 pairs (about 5 s)
def test_a_preset_is_judged_with_swapped_positions(lab_main, tmp_path):
    result = lab_main("eval", "judge", "model=tiny-gpt2", "reference=tiny-llama", "instructions=4", "max_new_tokens=8",
                      "--output", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["n"] == 4 and s["wins"] + s["losses"] + s["ties"] == 4 and s["reference"] == "tiny-llama"
    assert 0 <= s["position_flip_rate"] <= 1 and 0 <= s["control_win_rate"] <= 1
    lines = (tmp_path / "run" / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {"answer", "reference", "first", "second", "outcome"} <= set(json.loads(lines[0]))
