"""A checkpointable gymnasium env: its state is how the current episode began plus the actions since.

MiniGrid envs cannot save their state, but an episode is a pure function of the env's random
generator at its reset (or the reset seed) and the actions taken. `Replayable` records those (a
few hundred small ints per env, plain data for a `weights_only` checkpoint); `restore` rebuilds
the env by resetting the same way and replaying the actions, which also restores the wrappers'
counters (episode return and length, the time limit). Nothing here draws from a random generator
the training loop uses, so a run that checkpoints takes exactly the path of one that does not.
"""

from __future__ import annotations

import gymnasium as gym

from labcli.errors import UserError


class Replayable(gym.Wrapper):
    """Remembers how the current episode started and every action since (the outermost wrapper)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.start: dict = {}
        self.actions: list[int] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # A seeded reset is rebuilt from its seed; an unseeded one (autoreset) from the generator's
        # state just before it, which is what the new episode's layout is drawn from.
        self.start = {"seed": seed} if seed is not None else {"rng": self.unwrapped.np_random.bit_generator.state}
        self.actions = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.actions.append(int(action))
        return self.env.step(action)

    def state(self) -> dict:
        return {"start": dict(self.start), "actions": list(self.actions)}

    def restore(self, state: dict):
        """Put the env back where `state` was taken; returns the current observation."""
        start = state["start"]
        if "seed" in start:
            obs, _ = self.reset(seed=start["seed"])
        else:
            self.unwrapped.np_random.bit_generator.state = start["rng"]
            obs, _ = self.reset()
        for action in state["actions"]:
            obs, _, terminated, truncated, _ = self.step(action)
            if terminated or truncated:
                raise RuntimeError("replaying a checkpointed episode ended it early: the env is not deterministic")
        return obs


def vector_state(envs: gym.vector.SyncVectorEnv) -> list[dict]:
    return [env.state() for env in envs.envs]


def restore_vector(envs: gym.vector.SyncVectorEnv, states: list[dict]):
    """Restore every sub-env of a same-step-autoreset SyncVectorEnv; returns the stacked observations."""
    import numpy as np

    if len(states) != len(envs.envs):
        raise UserError(f"the checkpoint holds {len(states)} envs, this run has {len(envs.envs)}",
                        f"resume with the settings it was started with (ppo.num_envs={len(states)})")
    return np.stack([env.restore(state) for env, state in zip(envs.envs, states)])
