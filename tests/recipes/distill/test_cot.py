"""`lab distill cot`: the real CLI at tiny size (slow), its pieces and its errors in-process (fast)."""

from __future__ import annotations

import json

import pytest

from labcli.errors import UserError
from labcli.reasoning.tasks import load_task
from labcli.recipes.distill import cot


def test_bad_task_and_malformed_file_are_one_line_errors(lab_main, tmp_path):
    result = lab_main("distill", "cot", "--task", "gsm9k")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown task 'gsm9k'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "2+2?", "answer": 4}\nnot json\n', encoding="utf-8")
    result = lab_main("distill", "cot", "--task", str(bad))
    assert result.returncode == 2 and "line 2 is not valid JSON" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing left on disk


def test_bad_teachers(tmp_path):
    arc = load_task("arc", "train", n=4)
    with pytest.raises(UserError, match="no gold rationales"):
        cot.teacher_traces(cot.Config(task="arc", teacher="gold"), arc, None)
    with pytest.raises(UserError, match="teacher=program needs"):
        cot.resolve_teacher(cot.Config(task="gsm8k", teacher="program"))
    with pytest.raises(UserError, match="teacher model folder not found"):
        cot.resolve_teacher(cot.Config(teacher=str(tmp_path / "no-such-teacher")))


def test_cot_fraction_shows_the_trace_on_a_seeded_share_of_the_examples():
    traces = [(ex, ex.rationale) for ex in load_task("arith", "train", n=100)]
    full = cot.distill_pairs(traces, 1.0, seed=0)
    half = cot.distill_pairs(traces, 0.5, seed=0)
    assert all(t.count(" = ") == 2 for _, t in full)  # every 2-step trace shown
    shown = [t.count(" = ") == 2 for _, t in half]
    assert sum(shown) == 50 and all(t.startswith(" The answer is ") for (_, t), s in zip(half, shown) if not s)
    assert half == cot.distill_pairs(traces, 0.5, seed=0) and half != cot.distill_pairs(traces, 0.5, seed=1)
    assert [p for p, _ in half] == [p for p, _ in full]


@pytest.mark.slow
def test_cot_smoke_writes_table_models_and_metrics(cot_model):
    run = cot_model.parent
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["results"]) == {"direct answer", "CoT prompting (1-shot, direct student)", "distilled CoT"}
    assert all(r["n"] == 8 for r in summary["results"].values())
    assert summary["teacher"] == "program" and summary["kept"] == 256 and summary["steps"] == 40
    assert summary["final_loss"] < 3.0  # the masked SFT loss falls from ~6.4 (uniform over 600 tokens)
    for name in ("report.md", "accuracy.png", "loss.png", "model/config.json", "direct/model/config.json", "metrics.jsonl"):
        assert (run / name).exists(), name
    assert "| distilled CoT |" in (run / "report.md").read_text()


@pytest.mark.slow
def test_cot_with_a_model_teacher_keeps_only_answer_checked_traces(run_lab, cot_model, cot_smoke, tmp_path):
    """The real-teacher path offline: the tiny distilled-CoT run's saved model teaches a fresh student."""
    teacher = cot_model
    proc = run_lab("distill", "cot", "--task", "arith", "--teacher", str(teacher), *cot_smoke, "shots=0",
                   "direct_baseline=false", "teacher_max_new_tokens=24", "teacher_batch_size=128",
                   "--output", str(tmp_path / "student"))
    summary = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert summary["teacher"] == str(teacher) and summary["of"] == 256
    assert 0 < summary["kept"] < 256  # a weak teacher: only its right answers become traces
    assert set(summary["results"]) == {"distilled CoT"} and (tmp_path / "student" / "model" / "config.json").exists()
    assert "distilled CoT" in proc.stdout and "run folder:" in proc.stdout  # the headline table, then the folder
