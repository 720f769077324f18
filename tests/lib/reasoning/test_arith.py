"""The arithmetic generator: exact, checkable, seeded solutions."""

from __future__ import annotations

from labcli.reasoning import arith


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
