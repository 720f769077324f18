"""`lab simulate textworld`: one-line errors in-process; (slow) a tiny real run of every agent."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("textworld")


def test_nothing_to_run_is_one_line_and_leaves_no_folder(lab_main, tmp_path):
    result = lab_main("simulate", "textworld", "levels=[]")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: nothing to run (hint:")
    assert not (tmp_path / "runs").exists()


def test_a_dead_planner_endpoint_fails_before_any_work(lab_main, tmp_path):
    result = lab_main("simulate", "textworld", "lm.model=http://127.0.0.1:9")
    assert result.returncode == 2 and "no completions" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_every_agent_runs_on_a_tiny_easy_level(run_lab, tmp_path):
    run = tmp_path / "tw"
    proc = run_lab("simulate", "textworld", "levels=[easy]", "games=1", "repeats=1", "steps=48", "lm_games=1",
                   "lm.trace_episodes=1", "lm.train.max_steps=4", "lm.max_new_tokens=16", "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    rows = {r["agent"]: r for r in summary["rows"]}
    assert set(rows) == {"random", "ppo-text", "dqn-text", "ppo-graph", "dqn-graph", "planner-oracle", "planner-extracted",
                         "subgoals+rl", "lm+rl"}
    assert rows["planner-oracle"]["success"] == 1.0 and rows["planner-oracle"]["steps_per_walkthrough"] <= 2
    assert summary["kg"][0]["precision"] > 0.5 and summary["lm"]["steps"] == 4 and summary["lm"]["proposals"] >= 1
    for name in ("report.md", "success_vs_walkthrough.png", "lm_samples.txt"):
        assert (run / name).is_file(), name
    assert "textworld: 9 rows" in proc.stdout and proc.stdout.count("run folder:") == 1
