"""Potential-based reward shaping (Ng, Harada & Russell, 1999) for subgoal completion.

The shaped reward of a transition x -> x' is

    r'(x, a, x') = r(x, a, x') + F(x, x'),    F(x, x') = γ Φ(x') − Φ(x),

with Φ(terminal) = 0 for every episode end (termination and truncation alike; Grzes 2017 shows
that a non-zero terminal potential can change the optimal policy of an episodic task). Summed
over an episode x_0 ... x_T the shaping terms telescope:

    Σ_t γ^t F(x_t, x_{t+1}) = γ^T Φ(x_T) − Φ(x_0) = −Φ(x_0),

so every policy's shaped return is its original return minus the same constant Φ(x_0): the
ordering of policies, and so the optimal policy, is unchanged. What changes is when the reward
arrives: a subgoal's completion is paid at once instead of only through the final reward.

Here x is the environment state together with the planner's bookkeeping (how many subgoals of
the episode are done), and Φ(x) = scale × (subgoals completed). A bonus paid on every completion
instead (r + scale) is not potential-based: an agent that can undo and redo a subgoal farms it,
and `tests/lib/rl/test_shaping.py` shows that bonus changing the optimal policy of a small MDP
while this one does not.
"""

from __future__ import annotations


class SubgoalPotential:
    """Φ(x) = scale × completed subgoals; `shape(reward, done)` turns one transition's reward into
    the shaped one, given the count after the transition."""

    def __init__(self, scale: float, gamma: float):
        self.scale, self.gamma = scale, gamma
        self.previous = 0.0

    def potential(self, completed: int, done: bool) -> float:
        return 0.0 if done else self.scale * completed

    def reset(self, completed: int = 0) -> None:
        self.previous = self.potential(completed, False)

    def shape(self, reward: float, completed: int, done: bool) -> float:
        current = self.potential(completed, done)
        shaped = reward + self.gamma * current - self.previous
        self.previous = current
        return shaped


def discounted(rewards: list[float], gamma: float) -> float:
    return sum(r * gamma ** t for t, r in enumerate(rewards))
