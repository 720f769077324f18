"""TextWorld: facts in one vocabulary, the extractor on TextWorld's own sentences, the goal parser,
and (slow) a real generated game whose extracted graph is scored against its true facts."""

from __future__ import annotations

import pytest

pytest.importorskip("textworld")

from labcli.rl.envs import textworld as tw  # noqa: E402

TYPES = {"type m safe": "container", "bookshelf": "supporter", "laptop": "object", "tv": "object", "burger": "food",
         "type m latchkey": "key", "passageway": "door", "chest": "container", "rack": "supporter", "shirt": "object"}

ROOM = """-= Bedroom =-
Ah, the bedroom. This is some kind of bedroom.

You make out a locked type M safe. You scan the room, seeing a bookshelf. The bookshelf is ordinary. On the bookshelf you can see a laptop.
You see an opened chest. The chest contains a tv and a shirt. You see a burger on the rack.

There is a closed passageway leading east. You don't like doors? Why not try going west, that entranceway is unblocked.
"""


def test_a_room_description_gives_places_states_exits_and_doors():
    facts = tw.read_room(ROOM, "bedroom", {**TYPES})
    assert {("type m safe", "at", "bedroom"), ("type m safe", "is", "locked"), ("bookshelf", "at", "bedroom"),
            ("laptop", "on", "bookshelf"), ("tv", "in", "chest"), ("shirt", "in", "chest"), ("chest", "is", "open"),
            ("burger", "on", "rack"), ("bedroom", "exit", "east"), ("bedroom", "east_door", "passageway"),
            ("passageway", "is", "closed"), ("bedroom", "exit", "west")} <= facts
    assert not any(f[0] == "passageway" and f[1] == "at" for f in facts)  # a door is not in a room


def test_inventory_commands_and_feedback():
    assert tw.read_inventory("You are carrying: a burger, a type M latchkey and a laptop.", TYPES) == {
        ("burger", "in", "inventory"), ("type m latchkey", "in", "inventory"), ("laptop", "in", "inventory")}
    assert tw.read_commands(["unlock type M safe with type M latchkey", "open chest", "look"], TYPES) == {
        ("type m safe", "is", "locked"), ("type m latchkey", "opens", "type m safe"), ("chest", "is", "closed")}
    assert tw.read_feedback("You unlock the type M safe.", TYPES) == {("type m safe", "is", "closed")}


@pytest.mark.parametrize("objective,goal", [
    ("Welcome to TextWorld! Your task for today is to lock the chest with the type M latchkey.",
     {("chest", "is", "locked"), ("type m latchkey", "opens", "chest")}),
    ("Please make sure that the type M safe inside the bedroom is wide open.", {("type m safe", "is", "open")}),
    ("Get ready to pick stuff up and put it in places! Rest the laptop on the bookshelf inside the bedroom.",
     {("laptop", "on", "bookshelf")}),
    ("Your objective is to insert the tv into the chest.", {("tv", "in", "chest")}),
    ("Your objective is to retrieve the shirt from the rack.", {("shirt", "in", "inventory")}),
    ("Toss the burger on the floor of the cellar.", {("burger", "at", "cellar")}),
])
def test_the_goal_is_read_from_the_objective(objective, goal):
    assert tw.parse_goal(objective, TYPES) == goal


def test_true_facts_from_textworld_propositions():
    from textworld.logic import Proposition, Variable

    room, other, door = Variable("bedroom", "r"), Variable("cellar", "r"), Variable("passageway", "d")
    props = [Proposition("at", [Variable("P", "P"), room]), Proposition("in", [Variable("laptop", "o"), Variable("I", "I")]),
             Proposition("east_of", [other, room]), Proposition("link", [room, door, other]),
             Proposition("locked", [door]), Proposition("free", [room, other])]
    assert tw.true_facts(props) == {("player", "at", "bedroom"), ("laptop", "in", "inventory"), ("bedroom", "east", "cellar"),
                                    ("bedroom", "exit", "east"), ("bedroom", "east_door", "passageway"), ("passageway", "is", "locked")}


@pytest.mark.slow
def test_a_generated_game_is_solved_by_its_walkthrough_and_the_extracted_graph_matches_its_facts(tmp_path):
    from labcli.rl.kg import pooled

    game = tw.TextGame(tw.game_path("medium", 0, tmp_path))
    turn = game.reset()
    extractor = tw.Extractor(game.info.types)
    extractor.update(turn)
    scores = []
    for command in game.info.walkthrough:
        scores.append(tw.score_extraction(extractor, turn.facts))
        turn = game.step(command)
        extractor.update(turn, command)
    assert turn.won
    everything, seen = pooled([s["all"] for s in scores]), pooled([s["seen"] for s in scores])
    assert everything["precision"] >= 0.9 and seen["recall"] >= 0.9  # 1.0 and 1.0 on this game when written
    goal = {f for f in tw.parse_goal(game.info.objective, game.info.types) if f[1] != "opens"}
    assert goal and goal <= game.info.goal
