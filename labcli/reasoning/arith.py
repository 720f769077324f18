"""Seeded multi-step arithmetic word problems with exact step-by-step solutions.

Difficulty is the number of operations (`steps`) and the size of the operands (`digits`). Every
problem carries its program (the list of operations), so a solution is checkable by evaluation:
each step is `a OP b = c`, its `a` is the previous result, and the last `c` is the answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Ava", "Ben", "Cleo", "Dev", "Elif", "Femi", "Gita", "Hugo", "Ines", "Jon", "Kemal", "Lena", "Mira", "Nour",
         "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "stamps", "shells", "cards", "eggs"]
# op -> phrasings of "the running total changes by n"; {n} is the operand.
PHRASES = {
    "+": ["buys {n} more", "finds {n} more", "gets {n} more from a friend", "wins {n} more"],
    "-": ["gives away {n}", "loses {n}", "sells {n}", "uses {n}"],
    "*": ["ends up with {n} times as many"],
    "/": ["shares them equally among {n} friends and keeps one share"],
}
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


@dataclass(frozen=True)
class Problem:
    question: str
    program: tuple[tuple[str, int], ...]  # (op, operand) applied to the start value in order
    start: int
    steps: tuple[str, ...]  # "a + b = c." lines, the exact solution
    answer: int


def _pick_op(rng: random.Random, value: int, cap: int, digits: int) -> tuple[str, int]:
    """An operation that keeps the running value a whole number in [0, cap]."""
    top = 10 ** digits - 1
    while True:
        op = rng.choice("++--*/")
        if op == "+":
            n = rng.randint(1, top)
            if value + n <= cap:
                return op, n
        elif op == "-":
            if value >= 1:
                return op, rng.randint(1, min(top, value))
        elif op == "*":
            n = rng.randint(2, 3)
            if value * n <= cap:
                return op, n
        else:
            divisors = [d for d in (2, 3, 4, 5) if value >= d and value % d == 0]
            if divisors:
                return op, rng.choice(divisors)


def make_problem(rng: random.Random, steps: int = 2, digits: int = 1) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    cap = 2 * 10 ** digits
    value = start = rng.randint(2, 10 ** digits - 1)
    program, lines, clauses = [], [], []
    for _ in range(steps):
        op, n = _pick_op(rng, value, cap, digits)
        new = OPS[op](value, n)
        program.append((op, n))
        lines.append(f"{value} {op} {n} = {new}.")
        clauses.append(rng.choice(PHRASES[op]).format(n=n))
        value = new
    story = f"{name} has {start} {item}. " + " ".join(f"{'Then ' if i else ''}{name} {c}." for i, c in enumerate(clauses))
    question = f"{story} How many {item} does {name} have now?"
    return Problem(question, tuple(program), start, tuple(lines), value)


def generate(n: int, seed: int, steps: int | tuple[int, int] = 2, digits: int = 1) -> list[Problem]:
    """`n` problems from `seed`; `steps` is a count or an inclusive (low, high) range."""
    rng = random.Random(seed)
    low, high = (steps, steps) if isinstance(steps, int) else steps
    return [make_problem(rng, rng.randint(low, high), digits) for _ in range(n)]


def check_solution(problem: Problem) -> bool:
    """True when every step evaluates correctly, chains from the start, and ends at the answer."""
    value = problem.start
    for line, (op, n) in zip(problem.steps, problem.program):
        left, right = line.rstrip(".").split(" = ")
        a, sym, b = left.split(" ")
        if int(a) != value or sym != op or int(b) != n:
            return False
        exact = eval(f"{a} {sym} {b}")  # noqa: S307 - digits and one operator, built above
        if exact != int(right) or exact != int(exact):
            return False
        value = int(right)
    return value == problem.answer and len(problem.steps) == len(problem.program)
