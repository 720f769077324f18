"""BabyAI: missions parsed in execution order, and the graph the agent builds from its views equals
the true grid on every cell it has seen."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.rl.envs import babyai


@pytest.mark.parametrize("mission,kinds", [
    ("go to the red ball", ["goto"]),
    ("put the green ball next to a key", ["putnext"]),
    ("pick up a yellow ball after you put a ball next to the red box", ["putnext", "pickup"]),
    ("put a box next to a key, then go to a purple ball", ["putnext", "goto"]),
    ("go to the grey box and pick up a purple ball", ["goto", "pickup"]),
    ("dance with the red ball", []),
])
def test_missions_are_parsed_in_the_order_they_must_be_done(mission, kinds):
    assert [i.kind for i in babyai.parse_mission(mission)] == kinds


def test_the_extracted_graph_equals_the_truth_on_what_was_seen():
    from labcli.rl.kg import precision_recall

    env = babyai.make("medium")
    obs, _ = babyai.quiet_reset(env, 7)
    memory = babyai.GridMemory(env.unwrapped.width, env.unwrapped.height)
    memory.update(env, obs["image"])
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs, *_ = env.step(int(rng.integers(0, 6)))
        memory.update(env, obs["image"])
        score = precision_recall(memory.facts(), babyai.seen_facts(env, memory))
        assert score["precision"] == 1.0 and score["recall"] == 1.0
    assert precision_recall(memory.facts(), babyai.grid_facts(env))["precision"] == 1.0


def test_the_bot_walkthrough_solves_the_mission():
    assert 1 <= babyai.walkthrough("easy", 3) < 64  # GoToLocal's step limit is 64
