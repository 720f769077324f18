"""`lab bench grpo`: config errors in-process (fast); both sides through the real CLI at tiny size (slow)."""

from __future__ import annotations

import json

import pytest


def test_micro_batch_must_divide_the_completions_of_a_step(lab_main, tmp_path):
    result = lab_main("bench", "grpo", "train.batch_size=2", "group_size=4", "train.micro_batch_size=3")
    assert result.returncode == 2 and "does not divide the 8 completions" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_bench_grpo_against_trl_smoke(run_lab, tmp_path):
    pytest.importorskip("trl")
    run_lab("distill", "cot", "--task", "arith", "train.max_steps=20", "train.batch_size=16", "train.micro_batch_size=16",
            "train_size=128", "test_size=4", "direct_baseline=false", "max_new_tokens=16", "train.tensorboard=false",
            "--output", str(tmp_path / "cot"))
    proc = run_lab("bench", "grpo", f"init={tmp_path / 'cot' / 'model'}", "train.max_steps=2", "train.batch_size=2",
                   "group_size=2", "train.micro_batch_size=2", "test_size=4", "train.eval_every=1", "max_new_tokens=16",
                   "--output", str(tmp_path / "bench"))
    summary = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [r["side"] for r in summary["rows"]] == ["lab", "trl"]
    assert "minus RSS after imports" in summary["memory"]
    for side, row in zip(("lab", "trl"), summary["rows"]):
        assert [s for s, _ in summary["curves"][side]] == [0, 1, 2]
        assert row["s_per_step"] > 0 and 0 < row["train_memory_mb"] < row["peak_mb"]
    assert summary["curves"]["lab"][0] == summary["curves"]["trl"][0]  # same start model, same prompts, same test
    assert (tmp_path / "bench" / "bench.png").exists() and "| trl |" in (tmp_path / "bench" / "report.md").read_text()
    assert "lab bench grpo" in proc.stdout
