"""Sudoku puzzles generated here, each with exactly one solution, and the solver that proves it.

    grid = Shape(2, 3)                    # 6x6 boards, 2x3 boxes; Shape(3, 3) is classic 9x9
    puzzles = generate(grid, 1000, seed=0)            # Puzzles: .puzzles, .solutions, .guesses (np.int8 / int)
    count_solutions(grid, puzzle, limit=2)            # 0, 1 or 2 (= "more than one")

A board is a flat sequence of n*n ints, 0 for a blank, 1..n for a digit. `generate` fills a board
at random (randomised search), then blanks cells in a random order, keeping a blank only while the
solver still counts exactly one solution, down to `min_clues` or until no clue can go (a minimal
puzzle). `min_guesses` keeps only puzzles whose solution needs that many guesses from a
constraint-propagating solver (naked singles, then the cell with fewest candidates): 0 means
solvable by singles alone; "extreme" sets keep only puzzles that need search, as Sudoku-Extreme
(Wang et al. 2025) keeps puzzles that need backtracking. `augment` applies the symmetries that
keep a board valid (digit relabelling, row and column permutations within bands and stacks, band
and stack permutations, transposition when boxes are square), as the HRM paper's training does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    box_rows: int
    box_cols: int

    @property
    def n(self) -> int:
        return self.box_rows * self.box_cols

    @property
    def cells(self) -> int:
        return self.n * self.n

    def box(self, r: int, c: int) -> int:
        return (r // self.box_rows) * (self.n // self.box_cols) + c // self.box_cols


SHAPES = {"6x6": Shape(2, 3), "9x9": Shape(3, 3)}


@dataclass
class Puzzles:
    shape: Shape
    puzzles: np.ndarray  # [N, n*n] int8, 0 = blank
    solutions: np.ndarray  # [N, n*n] int8
    guesses: np.ndarray  # [N] guesses the solver made before finding the solution

    def __len__(self) -> int:
        return len(self.puzzles)

    def stats(self) -> dict:
        clues = (self.puzzles > 0).sum(1)
        return {"puzzles": len(self), "board": f"{self.shape.n}x{self.shape.n}",
                "clues_mean": round(float(clues.mean()), 2), "clues_min": int(clues.min()), "clues_max": int(clues.max()),
                "guesses_mean": round(float(self.guesses.mean()), 2),
                "share_needing_search": round(float((self.guesses > 0).mean()), 3)}


class _Board:
    """Bitmask state of a board: which digits each row, column and box already holds."""

    def __init__(self, shape: Shape, grid):
        self.shape, n = shape, shape.n
        self.full = (1 << n) - 1
        self.grid = [int(v) for v in grid]
        self.rows, self.cols, self.boxes = [0] * n, [0] * n, [0] * n
        self.cell_box = [shape.box(i // n, i % n) for i in range(n * n)]
        self.valid = True
        for i, v in enumerate(self.grid):
            if v:
                bit = 1 << (v - 1)
                r, c, b = i // n, i % n, self.cell_box[i]
                if (self.rows[r] | self.cols[c] | self.boxes[b]) & bit:
                    self.valid = False
                self.rows[r] |= bit
                self.cols[c] |= bit
                self.boxes[b] |= bit

    def candidates(self, i: int) -> int:
        n = self.shape.n
        return self.full & ~(self.rows[i // n] | self.cols[i % n] | self.boxes[self.cell_box[i]])

    def place(self, i: int, v: int) -> None:
        n, bit = self.shape.n, 1 << (v - 1)
        self.grid[i] = v
        self.rows[i // n] |= bit
        self.cols[i % n] |= bit
        self.boxes[self.cell_box[i]] |= bit

    def clear(self, i: int, v: int) -> None:
        n, bit = self.shape.n, ~(1 << (v - 1))
        self.grid[i] = 0
        self.rows[i // n] &= bit
        self.cols[i % n] &= bit
        self.boxes[self.cell_box[i]] &= bit


def _digits(mask: int) -> list[int]:
    return [d + 1 for d in range(mask.bit_length()) if mask >> d & 1]


def _search(board: _Board, limit: int, rng: random.Random | None, found: list, stats: dict) -> None:
    """Depth-first search with naked singles and fewest-candidates branching; appends solutions to
    `found` until `limit`; counts branch points with more than one candidate in stats['guesses']."""
    placed = []
    while True:  # naked singles
        best, best_count, progress = -1, 99, False
        for i, v in enumerate(board.grid):
            if v:
                continue
            cand = board.candidates(i)
            count = cand.bit_count()
            if count == 0:
                for j, d in placed:
                    board.clear(j, d)
                return
            if count == 1:
                d = cand.bit_length()
                board.place(i, d)
                placed.append((i, d))
                progress = True
            elif count < best_count:
                best, best_count = i, count
        if not progress:
            break
    if best < 0:
        found.append(list(board.grid))
    else:
        digits = _digits(board.candidates(best))
        if rng is not None:
            rng.shuffle(digits)
        stats["guesses"] += 1
        for d in digits:
            board.place(best, d)
            _search(board, limit, rng, found, stats)
            board.clear(best, d)
            if len(found) >= limit:
                break
    for j, d in placed:
        board.clear(j, d)


def solve(shape: Shape, puzzle, limit: int = 2, rng: random.Random | None = None) -> tuple[list[list[int]], int]:
    """Up to `limit` solutions of `puzzle` and the number of guesses the search made."""
    board = _Board(shape, puzzle)
    if len(board.grid) != shape.cells:
        raise ValueError(f"a {shape.n}x{shape.n} board has {shape.cells} cells, got {len(board.grid)}")
    found, stats = [], {"guesses": 0}
    if board.valid:
        _search(board, limit, rng, found, stats)
    return found, stats["guesses"]


def count_solutions(shape: Shape, puzzle, limit: int = 2) -> int:
    """How many solutions the puzzle has, counting no further than `limit` (2 = 'not unique')."""
    return len(solve(shape, puzzle, limit)[0])


def is_solution(shape: Shape, grid) -> bool:
    """A full board with every digit once per row, column and box."""
    board = _Board(shape, grid)
    return board.valid and all(v for v in board.grid)


def random_solution(shape: Shape, rng: random.Random) -> list[int]:
    (grid,), _ = solve(shape, [0] * shape.cells, limit=1, rng=rng)
    return grid


def make_puzzle(shape: Shape, rng: random.Random, min_clues: int = 0) -> tuple[list[int], list[int]]:
    """(puzzle, solution): blanks cells in random order while the solution stays unique."""
    solution = random_solution(shape, rng)
    puzzle = list(solution)
    order = list(range(shape.cells))
    rng.shuffle(order)
    clues = shape.cells
    for i in order:
        if clues <= min_clues:
            break
        v, puzzle[i] = puzzle[i], 0
        if count_solutions(shape, puzzle) != 1:
            puzzle[i] = v
        else:
            clues -= 1
    return puzzle, solution


def _generate_chunk(args) -> list[tuple[list[int], list[int], int]]:
    shape, count, seed, min_clues, min_guesses = args
    rng, out = random.Random(seed), []
    while len(out) < count:
        puzzle, solution = make_puzzle(shape, rng, min_clues)
        guesses = solve(shape, puzzle, limit=1)[1]  # search needed to find the solution
        if guesses >= min_guesses:
            out.append((puzzle, solution, guesses))
    return out


def generate(shape: Shape, count: int, seed: int, min_clues: int = 0, min_guesses: int = 0,
             workers: int = 1, exclude: Puzzles | list[Puzzles] | None = None) -> Puzzles:
    """`count` distinct puzzles with unique solutions, deterministic in (seed, count, workers). `exclude`:
    drop puzzles equal to one of these sets' (a held-out set disjoint from the training and dev sets)."""
    chunk = 25
    jobs = [(shape, min(chunk, count - k), seed * 1_000_003 + k, min_clues, min_guesses) for k in range(0, count, chunk)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_generate_chunk, jobs)
    else:
        parts = [_generate_chunk(job) for job in jobs]
    excluded = [] if exclude is None else [exclude] if isinstance(exclude, Puzzles) else exclude
    seen = {bytes(p) for sets in excluded for p in sets.puzzles.astype(np.int8)}
    rows = []
    for puzzle, solution, guesses in (item for part in parts for item in part):
        key = bytes(np.asarray(puzzle, dtype=np.int8))
        if key not in seen:
            seen.add(key)
            rows.append((puzzle, solution, guesses))
    extra = 0
    while len(rows) < count:  # replace duplicates (rare) from a further stream
        extra += 1
        for puzzle, solution, guesses in _generate_chunk((shape, count - len(rows), seed * 1_000_003 - extra, min_clues, min_guesses)):
            key = bytes(np.asarray(puzzle, dtype=np.int8))
            if key not in seen:
                seen.add(key)
                rows.append((puzzle, solution, guesses))
    rows = rows[:count]
    return Puzzles(shape, np.array([r[0] for r in rows], dtype=np.int8), np.array([r[1] for r in rows], dtype=np.int8),
                   np.array([r[2] for r in rows], dtype=np.int64))


def augment(shape: Shape, puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random validity-preserving symmetry per row of the batch (same for puzzle and solution)."""
    n, br, bc = shape.n, shape.box_rows, shape.box_cols
    B = len(puzzles)
    out_p, out_s = np.empty_like(puzzles), np.empty_like(solutions)
    for k in range(B):
        bands = rng.permutation(n // br)
        rows = np.concatenate([b * br + rng.permutation(br) for b in bands])
        stacks = rng.permutation(n // bc)
        cols = np.concatenate([s * bc + rng.permutation(bc) for s in stacks])
        index = (rows[:, None] * n + cols[None, :])
        if br == bc and rng.random() < 0.5:
            index = index.T
        index = index.reshape(-1)
        relabel = np.concatenate([[0], rng.permutation(n) + 1]).astype(puzzles.dtype)
        out_p[k] = relabel[puzzles[k][index]]
        out_s[k] = relabel[solutions[k][index]]
    return out_p, out_s


def render(shape: Shape, grid) -> str:
    """A board as text, '.' for blanks, boxes separated."""
    n, lines = shape.n, []
    for r in range(n):
        if r and r % shape.box_rows == 0:
            lines.append("")
        cells = [str(grid[r * n + c]) if grid[r * n + c] else "." for c in range(n)]
        lines.append(" | ".join(" ".join(cells[s:s + shape.box_cols]) for s in range(0, n, shape.box_cols)))
    return "\n".join(lines)
