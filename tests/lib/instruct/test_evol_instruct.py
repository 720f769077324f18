"""Evol-Instruct's prompts, elimination rules, judge parsing, and one round through a real endpoint."""

from __future__ import annotations

import random

from labcli.instruct import evol_instruct as ev
from labcli.instruct.teacher import EndpointTeacher


def test_each_operation_has_its_own_prompt():
    prompts = {op: ev.evolve_prompt("Name a river.", op) for op in ev.OPERATIONS}
    assert len(ev.OPERATIONS) == 6 and len(set(prompts.values())) == 6
    assert prompts["add constraints"].endswith("#The Given Prompt#:\nName a river.\n#Rewritten Prompt#:\n")
    assert "Add one more constraint" in prompts["add constraints"]
    assert prompts["breadth"].endswith("#Created Prompt#:\n")


def test_elimination_rules_in_the_papers_order():
    ok = "Name three rivers in Germany and give each river's length in kilometres."
    answer = "The Rhine (1,230 km), the Elbe (1,094 km) and the Danube (2,850 km)."
    assert ev.elimination_reason("Name a river.", ok, answer, equal=False) is None
    assert ev.elimination_reason("Name a river.", "Here is the rewritten prompt: name two", answer, False) == "copied prompt words"
    assert ev.elimination_reason("Name a river.", "#Created Prompt# x", answer, False) == "copied prompt words"
    assert ev.elimination_reason("Name a river.", ok, answer, equal=True) == "no information gain"
    assert ev.elimination_reason("Name a river.", "Name a river.", answer, equal=False) == "no information gain"
    assert ev.elimination_reason("Name a river.", ok, "Sorry, I cannot do that.", False) == "LM cannot respond (sorry, < 80 words)"
    long_sorry = "Sorry for the wait. " + "The Rhine flows north. " * 20
    assert ev.elimination_reason("Name a river.", ok, long_sorry, False) is None  # 80 words or more: a real answer
    assert ev.elimination_reason("Name a river.", ok, "... and the, of it!", False) == "response only punctuation / stop words"
    assert ev.elimination_reason("Name a river.", "  ", answer, False) == "empty evolution"


def test_judge_replies():
    assert ev.parse_rating(" 7") == 7 and ev.parse_rating("Rating: 10/10") == 10 and ev.parse_rating("[[3]]") == 3
    assert ev.parse_rating("no idea") is None and ev.parse_rating("Rating: 0") is None
    assert ev.judged_equal(" Equal") and not ev.judged_equal("Not Equal")


def test_one_round_and_the_judge_through_an_endpoint(server):
    teacher = EndpointTeacher(server["url"], "m")
    server["replies"] = ["Name three rivers in Germany and their lengths.", "Rewritten prompt: list rivers",
                         "The Rhine, the Elbe and the Danube.", "Rhine.",
                         "Not Equal", "Not Equal"]
    res = ev.evolve(teacher, ["Name a river.", "List a river."], 1, rng=random.Random(0), batch_size=2)
    assert [p["instruction"] for p in res.pairs] == ["Name three rivers in Germany and their lengths."]
    assert res.eliminated == {"copied prompt words": 1} and res.rounds == 1
    assert sum(c.get("tried", 0) for c in res.by_operation.values()) == 2
    server["replies"] = ["Rating: 8"]
    kept, hist = ev.judge(teacher, res.pairs, threshold=6)
    assert kept[0]["score"] == 8 and hist == {"8": 1}
    server["replies"] = ["Rating: 5"]
    assert ev.judge(teacher, res.pairs, threshold=6)[0] == []
