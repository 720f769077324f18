"""The position-swapped pairwise judge, driven by deterministic judge functions (plain callables), and
the endpoint judge against a real local OpenAI-compatible server."""

from __future__ import annotations

import math

from labcli.instruct import judge as J

ITEMS = [{"instruction": f"q{i}", "model": m, "reference": r}
         for i, (m, r) in enumerate([("good long answer", "bad"), ("good", "bad but longer"), ("bad", "good"), ("meh", "meh")])]


def prefers_good(question, first, second):
    """Reads the answers: picks the one saying 'good', tie when neither or both do."""
    a, b = "good" in first, "good" in second
    return "A" if a and not b else "B" if b and not a else "tie"


def always_first(question, first, second):
    return "A"


def test_a_consistent_judge_counts_wins_losses_and_ties_exactly():
    out = J.compare(ITEMS, prefers_good)
    assert (out["wins"], out["losses"], out["ties"], out["n"]) == (2, 1, 1, 4)
    assert out["win_rate"] == 0.625  # (2 + 1/2) / 4
    scores = [1, 1, 0, 0.5]
    assert out["win_rate_stderr"] == round(math.sqrt(sum((s - 0.625) ** 2 for s in scores) / 3 / 4), 4)
    assert out["position_flip_rate"] == 0.0 and out["first_position_share"] == 0.5
    # decided pairs: q0 (win, model longer: agrees), q1 (win, reference longer: not), q2 (loss, reference longer: agrees)
    assert out["length_agreement"] == round(2 / 3, 4)
    assert [r["outcome"] for r in out["rows"]] == ["win", "win", "loss", "tie"]


def test_a_judge_that_always_picks_the_first_position_says_nothing():
    out = J.compare(ITEMS, always_first)
    assert (out["wins"], out["losses"], out["ties"]) == (0, 0, 4) and out["win_rate"] == 0.5
    assert out["position_flip_rate"] == 1.0 and out["first_position_share"] == 1.0 and out["length_agreement"] is None


def test_a_verdict_counts_only_when_it_survives_the_swap():
    # the model's answer first: judge says A (model); swapped: says A again (now the reference) -> a tie, a flip
    assert J.outcome(always_first, "q", "good", "bad") == {"first": "A", "second": "A", "outcome": "tie", "flipped": True}
    assert J.outcome(prefers_good, "q", "good", "bad") == {"first": "A", "second": "B", "outcome": "win", "flipped": False}
    assert J.outcome(prefers_good, "q", "bad", "good")["outcome"] == "loss"
    # one order decided, the other a tie -> tie, and not a flip
    half = lambda q, a, b: "A" if a == "x" else "tie"  # noqa: E731
    assert J.outcome(half, "q", "x", "y") == {"first": "A", "second": "tie", "outcome": "tie", "flipped": False}


def test_the_control_pairs_each_answer_with_the_next_instructions_answer():
    recs = [{"instruction": "i0", "output": "o0"}, {"instruction": "i1", "output": "o1"}, {"instruction": "i2", "output": "o2"}]
    assert [(c["instruction"], c["model"], c["reference"]) for c in J.control_items(recs)] == [
        ("i0", "o0", "o1"), ("i1", "o1", "o2"), ("i2", "o2", "o0")]


def test_longer_answer_and_the_prompt():
    assert (J.longer_answer("q", "aa", "a"), J.longer_answer("q", "a", "aa"), J.longer_answer("q", "a", "b")) == ("A", "B", "tie")
    prompt = J.judge_prompt("Q?", "first", "second")
    assert prompt.index("first") < prompt.index("second") and prompt.endswith("[[") and "[User Question]\nQ?" in prompt


def test_endpoint_judge_parses_the_verdict_and_counts_what_it_cannot(server):
    from labcli.instruct.teacher import EndpointTeacher

    server["replies"] = ["A is better. [[A]]", "Tie: [[C]]", "I think the second [[B]]", "no verdict"]
    judge = J.EndpointJudge(EndpointTeacher(server["url"], "judge-model"))
    assert [judge("q", "a", "b") for _ in range(4)] == ["A", "tie", "B", "tie"] and judge.unparsed == 1
    body = server["requests"][0]["body"]
    assert body["temperature"] == 0.0 and body["prompt"][0].endswith("[The End of Assistant B's Answer]\n\n")
