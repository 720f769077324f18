"""Env-id checks, agent files and the frames-to-threshold measure."""

from __future__ import annotations

import pytest
import torch

from labcli.errors import UserError
from labcli.rl.common import check_env_id, episodes, frames_to, load_agent, recent_return, save_agent
from labcli.rl.ppo import Agent


def rows(returns, every=10):
    return [{"step": every * (i + 1), "episode_return": r, "episode_length": 5} for i, r in enumerate(returns)]


def test_frames_to_threshold_is_the_first_crossing_of_the_windowed_mean():
    history = rows([0.0] * 5 + [1.0] * 25)
    # the mean of the last 20 first reaches 0.9 when 18 of them are 1.0: episode index 22, frame 230
    assert frames_to(0.9, history, window=20) == 230
    assert frames_to(0.9, history[:10], window=20) is None
    assert recent_return(history, window=20) == 1.0 and recent_return([]) is None


def test_episodes_skips_update_rows():
    log = [{"step": 10, "episode_return": 0.5, "episode_length": 3}, {"step": 256, "policy_loss": 0.1}]
    assert episodes(log) == log[:1]


def test_unknown_env_suggests_the_close_name():
    with pytest.raises(UserError, match="did you mean MiniGrid-Empty-5x5-v0"):
        check_env_id("MiniGrid-Emty-5x5-v0")


def test_agent_file_round_trip_and_errors(tmp_path):
    agent = Agent(7)
    save_agent(tmp_path / "agent.pt", "ppo", "MiniGrid-Empty-5x5-v0", agent, 7)
    saved = load_agent(tmp_path)  # a run folder works too
    assert saved["algo"] == "ppo" and all(torch.equal(saved["state_dict"][k], v) for k, v in agent.state_dict().items())
    with pytest.raises(UserError, match="no agent file"):
        load_agent(tmp_path / "missing")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a lab agent"):
        load_agent(tmp_path / "junk.pt")
