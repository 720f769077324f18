"""`lab detect inversion` (slow, tiny settings) and its one-line errors (fast)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_inversion_tiny_run(run_lab, tmp_path):
    out = tmp_path / "inv"
    stdout = run_lab("detect", "inversion", "--output", str(out), "target_size=200", "epochs=1", "steps=15", "restarts=2",
                     "priors=[none,tv+l2+blur]", "dp.epsilons=[8]", "dp.epochs=1").stdout
    s = json.loads((out / "summary.json").read_text())
    assert {(r["target"], r["prior"]) for r in s["rows"]} == {
        (t, p) for t in ("untrained (control)", "Adam", "DP-SGD, no noise", "DP-SGD eps=8") for p in ("none", "tv+l2+blur")}
    for r in s["rows"]:
        lo, hi = map(int, r["nearest-mean hits min-max"].split("-"))
        assert 0 <= lo <= r["nearest-mean hits (mean of restarts)"] <= hi <= 10
        assert r[">= 8 of 10 in every restart"] == (lo >= 8)
    (dp,) = s["privacy"]
    assert dp["target"] == "DP-SGD eps=8" and dp["epsilon spent"] <= 8 + 1e-6
    assert "| Adam |" in stdout and (out / "reconstructions.png").exists() and (out / "privacy_tradeoff.png").exists()


@pytest.mark.parametrize("args, message", [
    (["target_size=50"], "target_size 50 must be between 100 and 2000"),
    (["target_size=500", "dp.delta=0.01"], "dp.delta 0.01 is not below 1/N"),
    (["priors=[gan]"], "priors"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "inversion", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
