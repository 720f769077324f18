"""`lab simulate babyai`: one-line errors in-process; (slow) a tiny real run of every agent."""

from __future__ import annotations

import json

import pytest


def test_a_rollout_smaller_than_a_minibatch_is_one_line(lab_main, tmp_path):
    result = lab_main("simulate", "babyai", "ppo.num_envs=1", "ppo.num_steps=8", "ppo.minibatch_size=64")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: ppo.minibatch_size 64 exceeds the rollout (hint:")
    assert not (tmp_path / "runs").exists()


def test_a_dead_planner_endpoint_fails_before_any_work(lab_main, tmp_path):
    result = lab_main("simulate", "babyai", "lm.model=http://127.0.0.1:9")
    assert result.returncode == 2 and "no completions" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_every_agent_runs_on_a_tiny_easy_level(run_lab, tmp_path):
    run = tmp_path / "babyai"
    proc = run_lab("simulate", "babyai", "levels=[easy]", "frames=256", "episodes=4", "repeats=1", "lm_missions=4",
                   "kg_missions=2", "ppo.num_envs=4", "ppo.num_steps=64", "ppo.minibatch_size=64", "dqn.learning_starts=64",
                   "lm.train.max_steps=4", "lm.max_new_tokens=16", "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    rows = {r["agent"]: r for r in summary["rows"]}
    assert set(rows) == {"random", "ppo-flat", "dqn-flat", "ppo-graph", "dqn-graph", "planner-oracle", "planner-extracted",
                         "subgoals+rl", "lm+rl"}
    assert rows["planner-oracle"]["success"] == 1.0 and rows["planner-oracle"]["episodes"] == 4
    assert summary["kg"][0]["precision"] == 1.0  # the agent's graph holds only what it saw, as it is
    assert summary["lm"]["steps"] == 4 and summary["lm"]["proposals"] >= 1
    for name in ("report.md", "success_vs_walkthrough.png", "lm_samples.txt"):
        assert (run / name).is_file(), name
    assert "babyai: 9 rows" in proc.stdout and proc.stdout.count("run folder:") == 1
