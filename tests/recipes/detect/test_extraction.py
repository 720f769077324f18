"""`lab detect extraction` (slow, tiny settings, a real HTTP server on a free port) and its one-line errors (fast)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_extraction_tiny_run(run_lab, tmp_path):
    out = tmp_path / "ex"
    stdout = run_lab("detect", "extraction", "--output", str(out), "victim_epochs=1", "budgets=[20,60]", "clone_epochs=1",
                     "sources=[digits-8x8]", "outputs=[probabilities,top1]", "token_budget=40", "batch=20").stdout
    s = json.loads((out / "summary.json").read_text())
    free = [r for r in s["rows"] if r["rate limit"] == "none"]
    assert {(r["server answers"], r["budget"]) for r in free} == {(o, b) for o in ("probabilities", "top1") for b in (20, 60)}
    assert all(r["answered"] == r["budget"] for r in free)
    (limited,) = [r for r in s["rows"] if r["rate limit"] != "none"]
    assert limited["budget"] == 60 and limited["answered"] == 40 and s["images refused by the rate limit"] == 20
    for r in s["rows"]:
        assert 0 <= r["agreement"] <= 1 and 0 <= r["accuracy"] <= 1
    assert "| probabilities |" in stdout and (out / "agreement_vs_budget.png").exists()


@pytest.mark.parametrize("args, message", [
    (["budgets=[5]"], "budgets [5] must all be >= 10"),
    (["outputs=[logits]"], "outputs"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "extraction", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
