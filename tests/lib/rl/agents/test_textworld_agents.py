"""TextWorld learners score every admissible command of every state in a batch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("textworld")

from labcli.rl.agents import textworld_agents as tw  # noqa: E402
from labcli.rl.kg import KnowledgeGraph  # noqa: E402


@pytest.mark.parametrize("view", ["text", "graph"])
def test_choice_networks_score_variable_command_sets(view):
    kg = KnowledgeGraph([("player", "at", "attic"), ("key", "at", "attic"), ("chest", "is", "locked")])
    states = [tw.encode("You see a key.", "lock the chest", kg, ["take key", "look"]),
              tw.encode("Attic.", "lock the chest", kg, ["go east", "look", "lock chest with key"])]
    torch.manual_seed(0)
    scores, mask, values = tw.ChoiceNet(view)(states)
    assert scores.shape == mask.shape == (2, 3) and values.shape == (2,)
    assert torch.isinf(scores[0, 2]) and not mask[0, 2] and mask[1].all()
    assert states[1].overlaps[2] == 0.5  # "lock", "chest": 2 of the 4 words of "lock chest with key" are in the goal


def test_the_prompt_holds_the_goal_sentence_the_room_and_the_map():
    kg = KnowledgeGraph([("player", "at", "attic"), ("key", "in", "inventory"), ("attic", "exit", "east"), ("attic", "east", "cellar")])
    text = tw.prompt("Welcome to TextWorld! Lock the chest.", {"chest": "container", "key": "key"}, kg, [])
    assert text.splitlines()[:3] == ["goal: lock the chest.", "room: attic", "carrying: key"]
    assert "map: attic: east cellar" in text
