"""lab reproduce hrm: error paths, the test-time evaluation (solve_rate, ACT stop), the effects' verdicts,
a tiny real run (slow)."""

import json

import numpy as np
import pytest
import torch

from labcli.data import sudoku
from labcli.eval.stats import wilson
from labcli.recipes.reproduce import hrm


def test_bad_width_is_one_line_error(lab_main):
    result = lab_main("reproduce", "hrm", "model.d_model=30", "model.n_heads=4")
    assert result.returncode == 2 and "n_heads=4" in result.stderr and "Traceback" not in result.stderr


def test_too_many_clues_is_one_line_error(lab_main):
    result = lab_main("reproduce", "hrm", "puzzles.min_clues=36")
    assert result.returncode == 2 and "leaves nothing to solve" in result.stderr


class Oracle(torch.nn.Module):
    """Answers `right` puzzles correctly from segment `from_segment` on, and says 'halt' at `halt_at`."""

    def __init__(self, solutions, right, from_segment, halt_at, n):
        super().__init__()
        self.solutions, self.right, self.from_segment, self.halt_at, self.n = solutions, right, from_segment, halt_at, n

    def init_state(self, batch, device):
        return torch.zeros(batch, dtype=torch.long)

    def inputs(self, puzzles):
        return puzzles

    def segment(self, state, x):
        seg = state[0].item()
        idx = torch.arange(len(x))
        truth = torch.as_tensor(self.solutions[: len(x)]).long()
        good = torch.as_tensor(self.right[: len(x)]) & (seg >= self.from_segment)
        answer = torch.where(good[:, None], truth, truth % self.n + 1)  # wrong in every cell otherwise
        logits = torch.nn.functional.one_hot(answer, self.n + 1).float()
        q = torch.where(torch.as_tensor(self.halt_at[: len(x)]) == seg, 1.0, -1.0) + 0 * idx
        return state + 1, logits, q


def test_solve_rate_scores_each_segment_and_stops_where_act_halts():
    shape = sudoku.SHAPES["6x6"]
    puzzles = sudoku.generate(shape, 4, seed=0, min_clues=20)
    right = np.array([True, True, False, True])
    halt_at = np.array([0, 2, 1, -1])  # -1: never halts, so ACT runs all segments
    model = Oracle(puzzles.solutions, right, 1, halt_at, shape.n)
    found = hrm.solve_rate(model, puzzles, 3, batch=4, device="cpu")
    assert found["by_segment"].tolist() == [[False] * 4, right.tolist(), right.tolist()]
    assert found["exact"].tolist() == right.tolist()
    assert found["act_stop"].tolist() == [0, 2, 1, 2]
    assert found["act_exact"].tolist() == [False, True, False, True]  # puzzle 0 halted before it was right
    assert found["blank_cell_accuracy"] == 0.75


def found_with(hrm_solved, looped_solved, single_solved):
    arms = {}
    for name, solved in (("hrm", hrm_solved), ("looped-transformer", looped_solved), ("transformer", single_solved)):
        k = sum(solved)
        arms[name] = {"solved": solved, "exact": k / len(solved), "exact_ci": list(wilson(k, len(solved))), "params": 1000}
    return {"arms": arms, "puzzles": {"test": {"clues_mean": 18.0}}}


def test_verdicts_follow_the_paired_effects():
    cfg = hrm.Config()
    n = 200
    claims = hrm.claims_for(cfg, found_with([1] * 120 + [0] * 80, [1] * 118 + [0] * 82, [1] * 20 + [0] * 180))
    by = {c.claim.split(" ")[1]: c.verdict for c in claims}
    assert by == {"solves": "holds", "outer": "holds", "hierarchy": "holds"}
    claims = hrm.claims_for(cfg, found_with([1] * 20 + [0] * 180, [1] * 150 + [0] * 50, [1] * 160 + [0] * 40))
    by = {c.claim.split(" ")[1]: c.verdict for c in claims}
    assert by == {"solves": "partly", "outer": "does not hold", "hierarchy": "does not hold"}
    nothing = [0] * n
    claims = hrm.claims_for(cfg, found_with(nothing, nothing, nothing))
    assert [c.verdict for c in claims] == ["does not hold", "partly", "partly"]
    assert "untested" in claims[2].ours


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "hrm", "--output", str(tmp_path / "r"), "puzzles.train=40", "puzzles.test=20",
            "puzzles.dev=10", "train.max_steps=4", "train.eval_every=2", "train.batch_size=8", "model.d_model=16",
            "model.n_heads=2", "model.layers=1")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [c["verdict"] in ("holds", "partly", "does not hold") for c in summary["claims"]] == [True] * 3
    assert list(summary["arms"]) == list(hrm.ARMS)
    assert len({a["params"] for a in summary["arms"].values()}) == 1  # equal parameters
    assert summary["puzzles"]["dev"]["puzzles"] == 10 and summary["puzzles"]["test"]["puzzles"] == 20
    assert summary["effects"]["outer_loop"] is not None
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| claim | paper | our setting | ours | verdict |" in report and "Scale gap" in report
    assert (tmp_path / "r" / "exact_by_segment.png").exists()
