"""BabyAI agents: every view is a fixed uint8 vector its network reads, and the subgoal executor's
shaped rewards sum (discounted) to the env's own return: the shaping is potential-based in the env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labcli.rl import dqn, ppo
from labcli.rl.agents import babyai_agents as ba
from labcli.rl.shaping import discounted


@pytest.mark.parametrize("view", ["flat", "graph", "subgoal"])
def test_views_and_networks(view):
    env = ba.wrap("medium", view)
    obs, _ = env.reset(seed=5)
    assert obs.dtype == np.uint8 and obs.shape == env.observation_space.shape
    torch.manual_seed(0)
    agent, q = ppo.Agent(7, encoder=ba.ENCODERS[view]()), dqn.QNetwork(7, encoder=ba.ENCODERS[view]())
    batch = torch.as_tensor(np.stack([obs, obs]))
    action, logp, entropy, value = agent.act(batch)
    assert action.shape == logp.shape == value.shape == (2,) and q(batch).shape == (2, 7)


def test_the_shaped_return_of_an_episode_is_the_env_return():
    gamma = 0.99
    env = ba.wrap("medium", "subgoal", scale=0.5, gamma=gamma)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    shaped, original, subgoals = [], [], 0
    for _ in range(400):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(0, 6)))
        shaped.append(reward)
        original.append(info["env_reward"])
        subgoals = info["subgoals_done"]
        if terminated or truncated:
            break
    assert terminated or truncated
    assert subgoals > 0 and any(r != 0 for r in shaped)  # subgoals were paid along the way ...
    assert discounted(shaped, gamma) == pytest.approx(discounted(original, gamma), abs=1e-9)  # ... and paid back: Φ(x_0) = 0


def test_the_lm_prompt_names_the_mission_the_objects_and_the_subgoals_done():
    env = ba.wrap("easy", "subgoal")
    env.reset(seed=2)
    inner = env.env
    text = ba.prompt(inner.mission, inner.memory, ["explore"])
    assert text.startswith(f"mission: {inner.mission}\n") and "in front: " in text and text.endswith("done: explore\n")
