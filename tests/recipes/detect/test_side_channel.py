"""`lab detect side-channel` (slow, tiny settings; structure only, no wall-clock bounds) and its one-line errors."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_side_channel_tiny_run(run_lab, tmp_path):
    out = tmp_path / "sc"
    stdout = run_lab("detect", "side-channel", "--output", str(out), "train_size=300", "epochs=2", "width=32", "depth=1",
                     "threshold=0.5", "queries=40", "repeats=2", "splits=3").stdout
    s = json.loads((out / "summary.json").read_text())
    structure = s["structure"]
    assert structure["blocks run per query, constant time"] == [0, 0, 40]  # every query ran all three blocks
    early = structure["blocks run per query, early exit"]
    assert sum(early) == 40 and early == [round(e["share of queries"] * 40) for e in s["per_exit"]]
    assert {(r["server"], r["secret"]) for r in s["attacks"]} == {
        (m, k) for m in ("early exit", "constant time") for k in ("exit taken", "predicted class")}
    for r in s["attacks"]:
        assert 0 <= r["attack accuracy"] <= 1 and 0 <= r["chance"] <= 1
    assert [row["mode"] for row in s["latency"]] == ["early exit", "constant time"]
    assert s["cost"]["p50 ratio (constant / early)"] > 0
    assert "| early exit |" in stdout and (out / "timings.png").exists()


@pytest.mark.parametrize("args, message", [
    (["threshold=0"], "threshold"),
    (["queries=5000"], "queries"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "side-channel", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
