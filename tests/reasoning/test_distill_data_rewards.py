"""The arithmetic generator, the shipped-data readers and the reward functions."""

from __future__ import annotations

import re

import pytest

from labcli.errors import UserError
from labcli.reasoning import arith, rewards, tasks


def test_generator_solutions_are_right_by_evaluation():
    problems = arith.generate(2000, seed=7, steps=(1, 5), digits=2)
    assert all(arith.check_solution(p) for p in problems)
    for p in problems:
        value = p.start
        for line in p.steps:  # re-evaluate each written step independently of the program
            left, right = line.rstrip(".").split(" = ")
            assert int(left.split()[0]) == value
            assert eval(left) == int(right)  # noqa: S307
            value = int(right)
        assert value == p.answer >= 0
        assert all(str(n) in p.question for _, n in p.program)  # every operand is stated in the question


def test_generator_is_seeded_and_difficulty_is_steps_and_digits():
    assert arith.generate(50, 3) == arith.generate(50, 3)
    assert arith.generate(50, 3) != arith.generate(50, 4)
    hard = arith.generate(200, 0, steps=4, digits=3)
    assert all(len(p.steps) == 4 for p in hard)
    assert max(n for p in hard for op, n in p.program if op in "+-") > 99


def test_check_solution_catches_a_wrong_step():
    p = arith.generate(1, 0)[0]
    bad = arith.Problem(p.question, p.program, p.start, p.steps[:-1] + ("1 + 1 = 3.",), p.answer)
    assert not arith.check_solution(bad)


def test_arith_task_has_disjoint_test_split():
    train = tasks.load_task("arith", "train", seed=0)
    test = tasks.load_task("arith", "test", seed=0)
    assert len(train) == 4000 and 450 < len(test) <= 500
    assert not {e.question for e in test} & {e.question for e in train}


@pytest.mark.parametrize("task,split,count,kind", [
    ("gsm8k", "train", 7473, "number"), ("gsm8k", "test", 1319, "number"), ("svamp", "test", 300, "number"),
    ("strategyqa", "train", 2061, "choice"), ("strategyqa", "test", 229, "choice"),
    ("arc", "test", 2376, "choice"), ("arc-challenge", "test", 1172, "choice"),
])
def test_shipped_readers(task, split, count, kind):
    rows = tasks.load_task(task, split)
    assert len(rows) == count and all(r.kind == kind for r in rows)


def test_reader_details():
    g = tasks.load_task("gsm8k", "test")[0]
    assert g.answer == "18" and "<<" not in " ".join(g.rationale)
    s = tasks.load_task("svamp", "train")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", e.answer) for e in s)
    assert {e.answer for e in tasks.load_task("strategyqa", "test")} == {"yes", "no"}
    assert tasks.load_task("arc", "test")[0].answer == "answer1"


def test_bad_task_and_malformed_jsonl(tmp_path):
    with pytest.raises(UserError, match="unknown task 'gsm9k'"):
        tasks.load_task("gsm9k", "train")
    f = tmp_path / "mine.jsonl"
    f.write_text('{"question": "1+1?", "answer": 2}\n{"question": oops}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        tasks.load_task(str(f), "train")


EX_NUM = tasks.Example("q", "14", "number")
EX_YES = tasks.Example("q", "yes", "choice")


@pytest.mark.parametrize("completion,truncated,correct,fmt", [
    (" 6 + 8 = 14. The answer is 14.", False, 1.0, 1.0),          # right
    (" 6 + 8 = 15. The answer is 15.", False, 0.0, 1.0),          # wrong, well formed
    (" The answer is 14.0.", False, 1.0, 1.0),                     # numerically equal
    (" 6 + 8 = 14. so 14", False, 0.0, 0.0),                       # malformed: no answer line
    (" The answer is 13. The answer is 14.", False, 1.0, 0.0),     # two answer lines: last counts, format fails
    (" The answer is 14. and more", False, 1.0, 0.0),              # trailing text
    (" 6 + 8 = 14. The answer is 14", True, 1.0, 0.0),             # truncated before EOS
    (" 6 + 8 = 14. The ans", True, 0.0, 0.0),                       # truncated mid-answer
])
def test_rewards_on_hand_made_completions(completion, truncated, correct, fmt):
    assert rewards.correctness_reward(completion, EX_NUM) == correct
    assert rewards.format_reward(completion, truncated) == fmt
    total, c = rewards.reward(completion, EX_NUM, truncated, format_weight=0.1)
    assert c == correct and total == pytest.approx(correct + 0.1 * fmt)


def test_choice_rewards_and_number_formats():
    assert rewards.correctness_reward("Facts. The answer is yes.", EX_YES) == 1.0
    assert rewards.correctness_reward("The answer is no.", EX_YES) == 0.0
    assert rewards.extract_answer("The answer is $1,250.") == "1250"
    assert rewards.correctness_reward("The answer is answer2.", tasks.Example("q", "answer2", "choice")) == 1.0


def test_overlong_penalty_is_dapo_soft_punishment():
    assert rewards.overlong_penalty(40, max_len=48, cache=8) == 0.0
    assert rewards.overlong_penalty(44, max_len=48, cache=8) == pytest.approx(-0.5)
    assert rewards.overlong_penalty(48, max_len=48, cache=8) == -1.0
    assert rewards.overlong_penalty(48, max_len=48, cache=0) == 0.0


def test_cot_fraction_shows_the_trace_on_a_seeded_share_of_the_examples():
    from labcli.reasoning.tasks import load_task
    from labcli.recipes.distill.cot import distill_pairs

    traces = [(ex, ex.rationale) for ex in load_task("arith", "train", n=100)]
    full = distill_pairs(traces, 1.0, seed=0)
    half = distill_pairs(traces, 0.5, seed=0)
    assert all(t.count(" = ") == 2 for _, t in full)  # every 2-step trace shown
    shown = [t.count(" = ") == 2 for _, t in half]
    assert sum(shown) == 50 and all(t.startswith(" The answer is ") for (_, t), s in zip(half, shown) if not s)
    assert half == distill_pairs(traces, 0.5, seed=0) and half != distill_pairs(traces, 0.5, seed=1)
    assert [p for p, _ in half] == [p for p, _ in full]
