"""Own PPO and DQN on MiniGrid: PPO learns Empty-5x5 at a fixed seed, DQN runs, saves and loads."""

from __future__ import annotations

import json

import numpy as np
import torch

from labcli.rl import dqn, ppo
from labcli.rl.common import evaluate, frames_to
from labcli.runs import seed_everything

ENV = "MiniGrid-Empty-5x5-v0"


def test_untrained_ppo_agent_does_not_solve_empty_5x5():
    seed_everything(1)
    agent = ppo.Agent(7)
    assert np.mean(evaluate(agent.greedy, ENV, 5, seed=1)) < 0.5


def test_ppo_learns_empty_5x5_in_4096_frames(run_lab, tmp_path):
    run = tmp_path / "ppo"
    run_lab("simulate", "minigrid", "--agent", "ppo", "--env", ENV, "--frames", "4096", "--seed", "1",
            "ppo.num_envs=4", "ppo.num_steps=64", "ppo.minibatch_size=64", "eval_episodes=10", "eval_deterministic=true",
            "--render", "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_return_mean"] >= 0.9  # the optimal return on Empty-5x5 is 0.955
    assert summary["episodes"] > 20
    for name in ("agent.pt", "learning.png", "episode.gif", "report.md", "metrics.jsonl"):
        assert (run / name).is_file(), name
    episodes = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "episode_return" in line]
    assert len(episodes) == summary["episodes"] and {"frames", "episode_return", "episode_length"} <= set(episodes[0])


def test_dqn_runs_saves_and_loads(run_lab, tmp_path):
    first, second = tmp_path / "dqn", tmp_path / "dqn-loaded"
    run_lab("simulate", "minigrid", "--agent", "dqn", "--env", ENV, "--frames", "1200", "dqn.learning_starts=200",
            "dqn.target_every=200", "eval_episodes=3", "--output", str(first))
    trained = json.loads((first / "summary.json").read_text())
    assert trained["agent"] == "dqn" and trained["episodes"] >= 1
    run_lab("simulate", "minigrid", "--agent", "dqn", "--env", ENV, "--frames", "0", "--load", str(first),
            "eval_episodes=3", "--output", str(second))
    loaded = json.loads((second / "summary.json").read_text())
    assert loaded["eval_return_mean"] == trained["eval_return_mean"]  # same weights, same seeds, same greedy returns
    a = torch.load(first / "agent.pt", weights_only=True)["state_dict"]
    b = torch.load(second / "agent.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dqn_epsilon_schedule_and_buffer():
    args = dqn.DQNArgs(exploration_fraction=0.5, end_epsilon=0.05)
    assert dqn.epsilon_at(0, 1000, args) == 1.0 and abs(dqn.epsilon_at(500, 1000, args) - 0.05) < 1e-12
    assert dqn.epsilon_at(900, 1000, args) == 0.05
    buf = dqn.ReplayBuffer(3, (7, 7, 3))
    for i in range(4):
        buf.add(np.full((7, 7, 3), i, np.uint8), i, float(i), np.zeros((7, 7, 3), np.uint8), 0.0)
    assert buf.full and buf.pos == 1 and buf.actions.tolist() == [3, 1, 2]


def test_frames_to_threshold():
    history = [{"frames": 10 * i, "return": 1.0 if i >= 5 else 0.0} for i in range(30)]
    assert frames_to(0.9, history, window=20) == 10 * 22  # at i=22 episodes 5..22 (18 of the last 20) are 1.0
    assert frames_to(0.9, history[:10], window=20) is None


def test_minigrid_errors_are_one_line(run_lab, tmp_path):
    for args, needle in [(("--env", "MiniGrid-Emty-5x5-v0"), "did you mean MiniGrid-Empty-5x5-v0"),
                         (("--load", str(tmp_path / "missing")), "no agent file")]:
        proc = run_lab("simulate", "minigrid", *args, check=False)
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_bench_rl_smoke(run_lab, tmp_path):
    run = tmp_path / "bench"
    run_lab("bench", "rl", "--env", ENV, "--frames", "2048", "seeds=[0]", "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert [r["implementation"] for r in summary["runs"]] == ["lab", "sb3_matched", "sb3_zoo"]
    assert all(r["episodes"] > 0 and r["final_return"] is not None for r in summary["runs"])
    assert "CPU" in summary["hardware"] and (run / "bench_rl.png").is_file()
    report = (run / "report.md").read_text()
    assert "| lab |" in report and "| sb3_matched |" in report and "| sb3_zoo |" in report


def test_ppo_resume_continues_from_the_checkpoint(run_lab, tmp_path):
    run = tmp_path / "resumable"
    common = ("simulate", "minigrid", "--env", ENV, "ppo.num_envs=4", "ppo.num_steps=64", "ppo.minibatch_size=64",
              "checkpoint_every=2", "eval_episodes=1", "--output", str(run))
    run_lab(*common, "--frames", "512")
    assert (run / "checkpoints" / "step-00000512" / "COMPLETE").exists()
    proc = run_lab(*common, "--frames", "1024", "--resume", "auto")
    assert "resuming from" in proc.stdout and "step-00000512" in proc.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00001024"]
    updates = [json.loads(line)["frames"] for line in (run / "metrics.jsonl").read_text().splitlines() if "policy_loss" in line]
    assert updates == [256, 512, 768, 1024]  # two updates, then two more after the resume
