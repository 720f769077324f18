"""DQN: the ε schedule, the replay buffer (and its checkpoint state), and learning on Empty-5x5."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.rl import dqn
from labcli.rl.common import evaluate

ENV = "MiniGrid-Empty-5x5-v0"


def test_epsilon_decays_linearly_then_stays():
    args = dqn.DQNArgs(exploration_fraction=0.5, end_epsilon=0.05)
    assert dqn.epsilon_at(0, 1000, args) == 1.0 and abs(dqn.epsilon_at(500, 1000, args) - 0.05) < 1e-12
    assert dqn.epsilon_at(250, 1000, args) == pytest.approx(0.525)
    assert dqn.epsilon_at(900, 1000, args) == 0.05


def test_buffer_is_a_ring_and_its_state_round_trips():
    buf = dqn.ReplayBuffer(3, (7, 7, 3))
    for i in range(4):
        buf.add(np.full((7, 7, 3), i, np.uint8), i, float(i), np.zeros((7, 7, 3), np.uint8), 0.0)
    assert buf.full and buf.pos == 1 and buf.actions.tolist() == [3, 1, 2]
    copy = dqn.ReplayBuffer(3, (7, 7, 3))
    copy.load_state(buf.state())
    assert (copy.pos, copy.full) == (1, True)
    a, b = buf.sample(np.random.default_rng(0), 8), copy.sample(np.random.default_rng(0), 8)
    assert all((x == y).all() for x, y in zip(a, b))


@pytest.mark.slow
def test_dqn_learns_empty_5x5_well_above_a_random_policy():
    """8k frames at the defaults (learning from frame 1000, ε to 0.05 by frame 4000), seed 0.

    The optimal return is 0.955 (5 steps); a uniformly random policy gets ~0.2 on these episodes.
    Measured here: seeds 0, 1, 2 all reach 0.955 greedy at 8k frames; at 4k frames 2 of 3 get 0.
    """
    rng = np.random.default_rng(0)
    random_return = np.mean(evaluate(lambda obs: rng.integers(7), ENV, 20, seed=0))
    q = dqn.train(ENV, 8000, 0, dqn.DQNArgs())
    learned = np.mean(evaluate(q.greedy, ENV, 20, seed=0))
    assert random_return < 0.4
    assert learned >= 0.9 and learned > random_return + 0.5
