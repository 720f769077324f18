"""Potential-based shaping: the shaped return differs from the original by −Φ(x_0) only, and the
optimal policy of a small MDP is unchanged by it, while a bonus per completion changes it."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.rl.shaping import SubgoalPotential, discounted


@pytest.mark.parametrize("start", [0, 3])
def test_shaped_return_telescopes_to_the_original_minus_the_first_potential(start):
    rng = np.random.default_rng(0)
    gamma, scale = 0.95, 0.3
    for _ in range(50):
        length = int(rng.integers(1, 40))
        rewards = rng.normal(size=length).tolist()
        completed = (start + np.cumsum(rng.integers(0, 2, length))).tolist()  # subgoals done after each step
        potential = SubgoalPotential(scale, gamma)
        potential.reset(start)
        shaped = [potential.shape(r, c, done=t == length - 1) for t, (r, c) in enumerate(zip(rewards, completed))]
        assert discounted(shaped, gamma) == pytest.approx(discounted(rewards, gamma) - scale * start)


def optimal_policy(reward_fn, gamma=0.9, cap=12):
    """Value iteration on a two-state task with a subgoal: in A `do` completes the subgoal (-> B);
    in B `finish` ends the episode with reward 1, `undo` goes back to A. The state is augmented with
    the number of completions k (capped), which the potential counts."""
    states = [(s, k) for s in "AB" for k in range(cap + 1)]
    actions = {"A": ["do", "wait"], "B": ["finish", "undo"]}

    def step(state, action):
        s, k = state
        if s == "A":
            return (("B", min(k + 1, cap)), False, 0.0) if action == "do" else (("A", k), False, 0.0)
        return (None, True, 1.0) if action == "finish" else (("A", k), False, 0.0)

    value = {x: 0.0 for x in states}
    for _ in range(500):
        for x in states:
            value[x] = max(reward_fn(x, a, *step(x, a)) + (0 if step(x, a)[1] else gamma * value[step(x, a)[0]])
                           for a in actions[x[0]])
    return {x: max(actions[x[0]], key=lambda a: reward_fn(x, a, *step(x, a)) + (0 if step(x, a)[1] else gamma * value[step(x, a)[0]]))
            for x in states if x[1] < cap}


def test_potential_shaping_keeps_the_optimal_policy_and_a_completion_bonus_does_not():
    gamma, scale = 0.9, 1.0
    phi = lambda x, done: 0.0 if done else scale * x[1]  # noqa: E731  (Φ = scale x completions, 0 at the end)

    def original(x, a, nxt, done, r):
        return r

    def shaped(x, a, nxt, done, r):
        return r + gamma * phi(nxt, done) - phi(x, False)

    def bonus(x, a, nxt, done, r):  # +scale on every completion: not potential-based
        return r + (scale if a == "do" else 0.0)

    base = optimal_policy(original, gamma)
    assert set(base.values()) == {"do", "finish"}
    assert optimal_policy(shaped, gamma) == base
    assert "undo" in optimal_policy(bonus, gamma).values()  # farming the bonus: undo, redo, ...
