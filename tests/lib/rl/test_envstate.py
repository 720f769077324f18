"""A MiniGrid env rebuilt from its replay record continues exactly as the original."""

from __future__ import annotations

import numpy as np

from labcli.rl.common import make_vector_env
from labcli.rl.envstate import restore_vector, vector_state

ENV = "MiniGrid-DoorKey-5x5-v0"  # random layouts per episode: a restore that loses the generator shows


def play(envs, actions):
    """Observations, rewards and dones of a sequence of joint actions."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, _ = envs.step(a)
        out.append((obs.copy(), reward.copy(), terminated | truncated))
    return out


def test_restored_envs_continue_identically_across_autoresets():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 7, size=(400, 3))  # long enough for many autoresets (time limit 250, random finishes)
    original = make_vector_env(ENV, 3, seed=5)
    original.reset(seed=5)
    play(original, actions[:300])
    state = vector_state(original)
    assert any("rng" in s["start"] for s in state), "expected envs that were reset by autoreset"

    rebuilt = make_vector_env(ENV, 3, seed=99)
    rebuilt.reset(seed=99)
    obs = restore_vector(rebuilt, state)
    assert vector_state(rebuilt) == state
    expected = play(original, actions[300:])
    got = play(rebuilt, actions[300:])
    assert all(np.array_equal(e[0], g[0]) and np.array_equal(e[1], g[1]) and np.array_equal(e[2], g[2])
               for e, g in zip(expected, got))
    assert obs.shape == (3, 7, 7, 3)


def test_restore_refuses_another_number_of_envs():
    import pytest

    from labcli.errors import UserError

    envs = make_vector_env(ENV, 2, seed=0)
    envs.reset(seed=0)
    with pytest.raises(UserError, match="holds 2 envs, this run has 1"):
        other = make_vector_env(ENV, 1, seed=0)
        other.reset(seed=0)
        restore_vector(other, vector_state(envs))
