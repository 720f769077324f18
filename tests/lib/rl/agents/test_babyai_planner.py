"""The BabyAI planner solves missions with the true grid and with its own views."""

from __future__ import annotations

import pytest

from labcli.rl.agents.babyai_planner import GridPlanner, split_subgoal, subgoal_done
from labcli.rl.envs import babyai


@pytest.mark.slow
@pytest.mark.parametrize("level,seed", [("easy", 1), ("medium", 2), ("hard", 3)])
def test_the_planner_solves_missions_near_the_bot_walkthrough(level, seed):
    from labcli.rl.agents.babyai_agents import play_symbolic

    for agent in ("planner-oracle", "planner-extracted"):
        episode, _ = play_symbolic(agent, level, seed, 0)
        assert episode.success and episode.steps <= 2 * babyai.walkthrough(level, seed)


def test_subgoals_are_read_and_checked_on_the_grid():
    kind, desc = split_subgoal("go beside the blue key")
    assert kind == "go beside" and (desc.type, desc.color) == ("key", "blue")
    env = babyai.make("easy")
    obs, _ = babyai.quiet_reset(env, 0)
    memory = babyai.GridMemory.full(env)
    planner = GridPlanner(obs["mission"])
    for _ in range(64):
        if subgoal_done(f"go to {planner.instructions[0].obj.text}", memory, 0):
            break
        obs, *_ = env.step(planner.next(memory).action)
        memory = babyai.GridMemory.full(env)
    assert planner.instructions[0].obj.matches(memory.get(memory.front))
