"""`lab simulate minigrid`: PPO learns, DQN saves and loads, a killed run resumes exactly; one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labcli.cli import app
from labcli.errors import UserError

ENV = "MiniGrid-Empty-5x5-v0"
SMALL_PPO = ("ppo.num_envs=4", "ppo.num_steps=64", "ppo.minibatch_size=64")  # 256 frames per update
SMALL_DQN = ("dqn.learning_starts=200", "dqn.target_every=200")


def rows(run) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "fps")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ppo_learns_empty_5x5_in_4096_frames(run_lab, tmp_path):
    run = tmp_path / "ppo"
    proc = run_lab("simulate", "minigrid", "--agent", "ppo", "--env", ENV, "--frames", "4096", "--seed", "1", *SMALL_PPO,
                   "eval_episodes=10", "eval_deterministic=true", "--render", "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_return_mean"] >= 0.9  # the optimal return on Empty-5x5 is 0.955
    for name in ("agent.pt", "learning.png", "episode.gif", "report.md", "metrics.jsonl"):
        assert (run / name).is_file(), name
    episodes = [r for r in rows(run) if "episode_return" in r]
    assert len(episodes) == summary["episodes"] > 20 and set(episodes[0]) == {"step", "episode_return", "episode_length"}
    assert "greedy return 0.955" in proc.stdout and proc.stdout.count("run folder:") == 1


@pytest.mark.slow
def test_dqn_runs_saves_and_loads(run_lab, tmp_path):
    first, second = tmp_path / "dqn", tmp_path / "dqn-loaded"
    run_lab("simulate", "minigrid", "--agent", "dqn", "--env", ENV, "--frames", "1200", *SMALL_DQN, "eval_episodes=3",
            "--output", str(first))
    trained = json.loads((first / "summary.json").read_text())
    assert trained["agent"] == "dqn" and trained["episodes"] >= 1
    run_lab("simulate", "minigrid", "--agent", "dqn", "--env", ENV, "--frames", "0", "--load", str(first),
            "eval_episodes=3", "--output", str(second))
    loaded = json.loads((second / "summary.json").read_text())
    assert loaded["eval_return_mean"] == trained["eval_return_mean"]  # same weights, same seeds, same greedy returns


@pytest.mark.slow
@pytest.mark.parametrize("agent,args,kill_at", [
    ("ppo", SMALL_PPO, 768),  # checkpoints at 512 and 1024: killed after update 3's rows, 256 frames past the first
    ("dqn", SMALL_DQN, 800),  # checkpoints every 500 frames: killed 300 frames past the first
])
def test_killed_run_resumes_without_duplicates_and_equals_an_unbroken_run(run_lab, tmp_path, agent, args, kill_at):
    common = ("simulate", "minigrid", "--agent", agent, "--env", ENV, "--frames", "1536", *args,
              "checkpoint_every=500" if agent == "dqn" else "checkpoint_every=512", "eval_episodes=3")
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    run_lab(*common, "--output", str(unbroken))
    killed = run_lab(*common, "--output", str(broken), env={"LAB_FAULT_KILL_AT_STEP": str(kill_at)}, check=False)
    assert killed.returncode == -9 and not (broken / "summary.json").exists()  # a real SIGKILL, before the end
    checkpoint = 512 if agent == "ppo" else 500
    assert [p.name for p in (broken / "checkpoints").iterdir()] == [f"step-{checkpoint:08d}"]
    assert max(r["step"] for r in rows(broken)) == kill_at > checkpoint  # rows past the checkpoint were logged

    resumed = run_lab(*common, "--output", str(broken), "--resume", "auto")
    assert f"step-{checkpoint:08d}" in resumed.stdout
    logged = rows(broken)
    steps = [r["step"] for r in logged]
    assert steps == sorted(steps), "rows logged twice: the resumed run went back past rows already in metrics.jsonl"
    assert logged == rows(unbroken)
    a, b = (json.loads((run / "summary.json").read_text()) for run in (unbroken, broken))
    assert {k: v for k, v in a.items() if k != "resumed_from"} == {k: v for k, v in b.items() if k != "resumed_from"}


def lab_error(*args: str) -> str:
    result = CliRunner().invoke(app, ["simulate", "minigrid", *args])
    assert isinstance(result.exception, UserError), result.output
    return str(result.exception)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.mark.parametrize("args,needle", [
    (("--env", "MiniGrid-Emty-5x5-v0"), "did you mean MiniGrid-Empty-5x5-v0"),
    (("--frames", "0"), "nothing to do"),
    (("ppo.minibatch_size=4096",), "exceeds the rollout"),
    (("--resume", "no/such/run"), "no complete checkpoint there"),
])
def test_bad_input_is_one_error_and_leaves_nothing(runs_dir, args, needle):
    assert needle in lab_error(*args)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_load_checks_the_file_and_the_algorithm(runs_dir, tmp_path):
    from labcli.rl.common import save_agent
    from labcli.rl.dqn import QNetwork

    assert "no agent file" in lab_error("--load", str(tmp_path / "missing"))
    save_agent(tmp_path / "dqn" / "agent.pt", "dqn", ENV, QNetwork(7), 7)
    assert "holds a dqn agent but --agent is ppo" in lab_error("--load", str(tmp_path / "dqn"), "--frames", "0")


def test_lab_check_reports_problems_and_the_plan():
    from labcli.check import check

    problems, _ = check("simulate", "minigrid", None, ["--env", "MiniGrid-Emty-5x5-v0"])
    assert len(problems) == 1 and "did you mean MiniGrid-Empty-5x5-v0" in problems[0]
    problems, notes = check("simulate", "minigrid", None, ["--agent", "ppo", "--frames", "1000"], resume="auto")
    assert problems == [] and "2,048 frames (1 rollouts of 16 envs x 128 steps)" in notes[-1]
