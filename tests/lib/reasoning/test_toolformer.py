"""Toolformer's data pipeline: candidate calls and their ground truth, the keep rule, writing calls in."""

from __future__ import annotations

import random

from labcli.reasoning import arith
from labcli.reasoning import toolformer as tf
from labcli.reasoning.tools import calculator, find_calls, strip_calls


def problem(question="Ava has 37 apples. Then Ava buys 48 more. How many apples does Ava have now?"):
    return arith.Problem(question, (("+", 48),), 37, ("37 + 48 = 85.",), 85)


def test_problem_text_is_question_then_steps_and_answer():
    assert tf.problem_text(problem()) == (problem().question + "\n", "37 + 48 = 85. Answer: 85.")


def test_candidates_use_the_two_numbers_before_and_know_which_are_useful():
    prompt, solution = tf.problem_text(problem())
    cands = tf.sample_candidates(prompt, solution, 3, random.Random(0), ops_per_position=4, planted=0)
    text = prompt + solution
    at_result = [c for c in cands if c.position == text.index("85.")]
    assert {c.arg for c in at_result} == {"37 + 48", "37 - 48", "37 * 48", "37 / 48"}
    assert [c.arg for c in at_result if c.useful] == ["37 + 48"] and at_result[0].text == 3
    # usefulness is exactly "the result is the number at the position", wherever the call is
    for c in cands:
        number = tf.NUMBER.match(text, c.position).group()
        assert c.useful == (c.result == number) and not c.planted


def test_planted_calls_use_random_operands():
    prompt, solution = tf.problem_text(problem())
    cands = tf.sample_candidates(prompt, solution, 0, random.Random(1), ops_per_position=1, planted=5)
    planted = [c for c in cands if c.planted]
    assert len(planted) == 5 and all(c.position >= len(prompt) for c in planted)


def scored(position, gain, useful, planted=False, text=0):
    c = tf.Candidate(text, position, "1 + 1", "2", planted, useful)
    return tf.Scored(c, loss_none=3.0, loss_no_result=2.5, loss_with_result=2.5 - gain)


def test_keep_applies_tau_and_keeps_the_best_call_per_position():
    a, b, c = scored(10, 1.5, True), scored(10, 2.0, False), scored(20, 0.9, True)
    kept = tf.keep([a, b, c], tau=1.0)
    assert kept == [b]  # the larger gain wins at position 10; 0.9 < τ at position 20
    assert a.gain == 1.5  # against the smaller of the two baselines (2.5, not 3.0)
    stats = tf.filter_stats([a, b, c], kept)
    assert stats["precision"] == 0.0 and stats["recall"] == 0.0 and stats["useful_candidates"] == 2
    assert tf.filter_stats([a, c], tf.keep([a, c], 1.0))["precision"] == 1.0


def test_with_calls_writes_calls_before_their_numbers():
    prompt, solution = tf.problem_text(problem())
    text = prompt + solution
    pos = text.index("85.")
    calls = [tf.Candidate(0, pos, "37 + 48", "85", False, True), tf.Candidate(0, text.index("85.", pos + 1), "85 - 0", "85", False, True)]
    out = tf.with_calls(text, calls)
    assert out.endswith("37 + 48 = [Calculator(37 + 48) -> 85] 85. Answer: [Calculator(85 - 0) -> 85] 85.")
    assert [c.arg for c in find_calls(out)] == ["37 + 48", "85 - 0"]
    assert strip_calls(out).replace("  ", " ") == text


def test_random_calls_for_pretraining_have_correct_results():
    prompt, solution = tf.problem_text(problem())
    out = tf.with_random_calls(prompt, solution, random.Random(2))
    (call,) = find_calls(out)
    assert call.result == calculator(call.arg) and not call.result.startswith("error")
    assert strip_calls(out).replace("  ", " ") == solution


def test_exact_match_reads_the_answer_line():
    assert tf.exact_match("37 + 48 = 85. Answer: 85.", 85)
    assert not tf.exact_match("37 + 48 = 84. Answer: 84.", 85) and not tf.exact_match("37 + 48 = 85.", 85)
