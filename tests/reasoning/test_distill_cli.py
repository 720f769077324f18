"""`lab distill cot|grpo|dapo` through the real CLI at tiny sizes, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

COT_SMOKE = ("train.max_steps=40", "train.batch_size=16", "train.micro_batch_size=16", "train.save_every=0",
             "train_size=256", "test_size=8", "max_new_tokens=24", "eval_batch_size=8", "shots=1", "train.tensorboard=false")
RL_SMOKE = ("train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=16", "group_size=4", "max_new_tokens=24",
            "test_size=8", "eval_every=0", "train.lr=1e-3", "train.save_every=1", "train.tensorboard=false")


@pytest.fixture(scope="module")
def runs(lab_home, tmp_path_factory):
    """One shared runs folder holding a tiny `lab distill cot` run (GRPO/DAPO start from it)."""
    folder = tmp_path_factory.mktemp("distill_runs")
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(folder)}
    proc = subprocess.run([sys.executable, "-m", "labcli", "distill", "cot", "--task", "arith", *COT_SMOKE],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def _only(folder, pattern):
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_cot_smoke_writes_table_models_and_metrics(runs):
    run = _only(runs, "distill-cot-*")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["results"]) == {"direct answer", "CoT prompting (1-shot, direct student)", "distilled CoT"}
    assert all(r["n"] == 8 for r in summary["results"].values())
    assert summary["teacher"] == "program" and summary["kept"] == 256 and summary["steps"] == 40
    assert summary["final_loss"] < 3.0  # the masked SFT loss falls from ~6.4 (uniform over 600 tokens)
    for name in ("report.md", "accuracy.png", "loss.png", "model/config.json", "direct/model/config.json", "metrics.jsonl"):
        assert (run / name).exists(), name
    assert "| distilled CoT |" in (run / "report.md").read_text()


@pytest.mark.parametrize("recipe", ["grpo", "dapo"])
def test_rl_steps_change_the_policy_and_write_metrics(run_lab, runs, recipe):
    cot = _only(runs, "distill-cot-*")
    run_lab("distill", recipe, *RL_SMOKE, env={"LAB_RUNS": str(runs)})  # init=auto: the newest cot run
    run = _only(runs, f"distill-{recipe}-*")
    before, after = load_file(cot / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert any((before[k] - after[k]).abs().max() > 0 for k in before)
    steps = [r for r in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()) if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("reward", "accuracy", "length", "entropy", "clip_frac", "kl", "groups_kept", "groups_drawn"):
        assert key in steps[-1] or (key != "groups_kept" and steps[-1]["groups_kept"] == 0), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["switches"]["clip_high"] == (0.28 if recipe == "dapo" else 0.2)
    assert summary["switches"]["dynamic_sampling"] is (recipe == "dapo")
    assert summary["start_test_accuracy"] is not None and summary["final_test_accuracy"] is not None
    assert (run / "checkpoints" / "step-00000002" / "COMPLETE").exists()
    for png in ("accuracy.png", "reward.png", "length.png", "policy.png"):
        assert (run / png).exists()


def _one_line_error(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert text in proc.stderr


def test_bad_input_fails_with_one_line(run_lab, tmp_path):
    _one_line_error(run_lab("distill", "cot", "--task", "gsm9k", check=False), "unknown task 'gsm9k'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "2+2?", "answer": 4}\nnot json\n', encoding="utf-8")
    _one_line_error(run_lab("distill", "cot", "--task", str(bad), check=False), "line 2 is not valid JSON")


def test_bad_teachers_and_missing_start_model(tmp_path, monkeypatch):
    from labcli.errors import UserError
    from labcli.reasoning.tasks import load_task
    from labcli.recipes.distill import cot, grpo

    arc = load_task("arc", "train", n=4)
    with pytest.raises(UserError, match="no gold rationales"):
        cot.teacher_traces(cot.Config(task="arc", teacher="gold"), arc, None)
    with pytest.raises(UserError, match="teacher=program needs"):
        cot.resolve_teacher(cot.Config(task="gsm8k", teacher="program"))
    with pytest.raises(UserError, match="teacher model folder not found"):
        cot.resolve_teacher(cot.Config(teacher=str(tmp_path / "no-such-teacher")))
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no `lab distill cot` run"):
        grpo.resolve_init("auto")


def test_bench_grpo_against_trl_smoke(run_lab, runs, tmp_path):
    pytest.importorskip("trl")
    run_lab("bench", "grpo", f"init={_only(runs, 'distill-cot-*') / 'model'}", "steps=2", "prompts_per_step=2",
            "group_size=2", "test_size=4", "eval_every=1", "max_new_tokens=16", "--output", str(tmp_path / "bench"))
    summary = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert set(summary["results"]) == {"lab", "trl"}
    for side in ("lab", "trl"):
        assert [s for s, _ in summary["curves"][side]] == [0, 1, 2]
        assert summary["results"][side]["steps_per_s"] > 0
    assert (tmp_path / "bench" / "bench.png").exists() and "| trl |" in (tmp_path / "bench" / "report.md").read_text()


def test_grpo_resume_is_exact(run_lab, runs, tmp_path):
    init = f"init={_only(runs, 'distill-cot-*') / 'model'}"
    common = (init, "train.batch_size=2", "train.micro_batch_size=16", "group_size=4", "max_new_tokens=16", "test_size=4",
              "eval_every=0", "train.lr=1e-3", "train.save_every=1", "train.tensorboard=false")
    run_lab("distill", "grpo", *common, "train.max_steps=3", "--output", str(tmp_path / "straight"))
    run_lab("distill", "grpo", *common, "train.max_steps=2", "--output", str(tmp_path / "split"))
    run_lab("distill", "grpo", *common, "train.max_steps=3", "--output", str(tmp_path / "split"), "--resume", "auto")
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3]


def test_cot_with_a_model_teacher_keeps_only_answer_checked_traces(run_lab, runs, tmp_path):
    """The real-teacher path offline: the tiny distilled-CoT run's saved model teaches a fresh student."""
    teacher = _only(runs, "distill-cot-*") / "model"
    run_lab("distill", "cot", "--task", "arith", "--teacher", str(teacher), *COT_SMOKE, "shots=0", "direct_baseline=false",
            "teacher_max_new_tokens=24", "teacher_batch_size=128", "--output", str(tmp_path / "student"))
    summary = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert summary["teacher"] == str(teacher) and summary["of"] == 256
    assert 0 < summary["kept"] < 256  # a weak teacher: only its right answers become traces
    assert set(summary["results"]) == {"distilled CoT"} and (tmp_path / "student" / "model" / "config.json").exists()
