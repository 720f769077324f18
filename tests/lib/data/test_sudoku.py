"""Sudoku generator and solver: every generated puzzle has exactly one solution (the solver counts),
its clues agree with that solution, symmetries keep puzzles valid, held-out sets are disjoint."""

import random

import numpy as np
import pytest

from labcli.data import sudoku

SIX, NINE = sudoku.SHAPES["6x6"], sudoku.SHAPES["9x9"]


def test_solver_counts_solutions():
    empty = [0] * SIX.cells
    assert sudoku.count_solutions(SIX, empty) == 2  # an empty board has many: counting stops at the limit
    assert sudoku.count_solutions(SIX, empty, limit=5) == 5
    bad = [1, 1] + [0] * (SIX.cells - 2)  # two 1s in a row
    assert sudoku.count_solutions(SIX, bad) == 0
    full = sudoku.random_solution(SIX, random.Random(0))
    assert sudoku.is_solution(SIX, full) and sudoku.count_solutions(SIX, full) == 1
    swapped = list(full)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert not sudoku.is_solution(SIX, swapped)


def test_two_solution_puzzle_is_rejected_by_the_count():
    """Blank a 'deadly pattern' rectangle of a full board: exactly two fillings, so not unique."""
    full = sudoku.random_solution(NINE, random.Random(1))
    n = NINE.n
    for r1 in range(n):
        for r2 in range(r1 + 1, n):
            if r1 // 3 != r2 // 3:
                continue  # same band: the two rows share boxes
            for c1 in range(n):
                for c2 in range(c1 + 1, n):
                    a, b = full[r1 * n + c1], full[r1 * n + c2]
                    if c1 // 3 != c2 // 3 and full[r2 * n + c1] == b and full[r2 * n + c2] == a:
                        puzzle = list(full)
                        for i in (r1 * n + c1, r1 * n + c2, r2 * n + c1, r2 * n + c2):
                            puzzle[i] = 0
                        assert sudoku.count_solutions(NINE, puzzle) == 2
                        return
    pytest.skip("no deadly pattern on this board")


@pytest.mark.parametrize("shape,count,min_guesses", [(SIX, 30, 0), (SIX, 10, 2), (NINE, 3, 0)])
def test_generated_puzzles_have_unique_solutions(shape, count, min_guesses):
    p = sudoku.generate(shape, count, seed=3, min_guesses=min_guesses)
    assert p.puzzles.shape == (count, shape.cells) and len({bytes(q) for q in p.puzzles}) == count
    for puzzle, solution, guesses in zip(p.puzzles, p.solutions, p.guesses):
        assert sudoku.count_solutions(shape, puzzle) == 1
        assert sudoku.is_solution(shape, solution)
        given = puzzle > 0
        assert (puzzle[given] == solution[given]).all() and (~given).any()
        assert guesses >= min_guesses
    assert p.stats()["share_needing_search"] >= (1.0 if min_guesses else 0.0)


def test_minimal_means_no_clue_can_go():
    p = sudoku.generate(SIX, 3, seed=5)
    for puzzle in p.puzzles:
        for i in np.flatnonzero(puzzle):
            fewer = puzzle.copy()
            fewer[i] = 0
            assert sudoku.count_solutions(SIX, fewer) == 2


def test_min_clues_and_determinism():
    a = sudoku.generate(SIX, 5, seed=7, min_clues=20)
    assert ((a.puzzles > 0).sum(1) >= 20).all()
    b = sudoku.generate(SIX, 5, seed=7, min_clues=20)
    assert (a.puzzles == b.puzzles).all()


def test_held_out_set_is_disjoint():
    train = sudoku.generate(SIX, 40, seed=0, min_clues=30)  # few blanks: repeats between streams are likely
    test = sudoku.generate(SIX, 40, seed=0, min_clues=30, exclude=train)
    assert not {bytes(q) for q in train.puzzles} & {bytes(q) for q in test.puzzles}
    dev = sudoku.generate(SIX, 40, seed=0, min_clues=30, exclude=[train, test])  # disjoint from both
    assert not {bytes(q) for q in dev.puzzles} & {bytes(q) for q in [*train.puzzles, *test.puzzles]}


@pytest.mark.parametrize("shape", [SIX, NINE])
def test_augment_keeps_puzzles_valid_and_unique(shape):
    p = sudoku.generate(shape, 4, seed=2)
    puzzles, solutions = sudoku.augment(shape, p.puzzles, p.solutions, np.random.default_rng(0))
    assert not (puzzles == p.puzzles).all()
    for puzzle, solution in zip(puzzles, solutions):
        assert sudoku.is_solution(shape, solution) and sudoku.count_solutions(shape, puzzle) == 1
        (found,), _ = sudoku.solve(shape, puzzle, limit=1)
        assert list(found) == list(solution)


def test_render():
    text = sudoku.render(SIX, [1, 0, 0, 0, 0, 0] + [0] * 30)
    assert text.splitlines()[0] == "1 . . | . . ." and len(text.splitlines()) == 8
