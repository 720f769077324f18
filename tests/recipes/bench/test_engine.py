"""`lab bench engine`: both sides compute the same training (losses agree), 5 interleaved runs each, spread shown."""

from __future__ import annotations

import json
import math

import pytest

from labcli.errors import CheckFailed
from labcli.recipes.bench import engine


@pytest.mark.slow
def test_both_sides_train_the_same_and_the_table_has_spreads(run_lab, tmp_path):
    out = tmp_path / "bench"
    stdout = run_lab("bench", "engine", "train.max_steps=6", "train.warmup_steps=2", "train.batch_size=4",
                     "train.micro_batch_size=4", "block_size=32", "--output", str(out)).stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [r["side"] for r in summary["rows"]] == ["lab engine", "HF Trainer"]
    lab, hf = summary["runs"]["lab engine"], summary["runs"]["HF Trainer"]
    assert len(lab) == len(hf) == 5
    for a, b in zip(lab, hf):  # same batches, optimizer and schedule: the same losses, step by step
        assert len(a["losses"]) == len(b["losses"]) == 6
        assert max(abs(x - y) for x, y in zip(a["losses"], b["losses"])) <= 1e-5
    assert summary["max_mean_loss_gap"] <= 1e-4
    for row in summary["rows"]:
        assert row["steps_per_s_min"] <= row["steps_per_s"] <= row["steps_per_s_max"] and row["peak_growth_mb"] > 0
    assert "lab engine" in stdout and "HF Trainer" in stdout  # the table, printed
    assert "[" in (out / "report.md").read_text() and (out / "engine_vs_trainer.png").exists()


def test_a_loss_gap_fails_the_run():
    engine.check_losses(3e-5, "r.md")
    for gap in (2e-4, math.nan):
        with pytest.raises(CheckFailed, match="did not compute the same training"):
            engine.check_losses(gap, "r.md")
    runs = {"lab engine": [{"mean_loss": 7.3}, {"mean_loss": 7.3}], "HF Trainer": [{"mean_loss": 7.3}, {"mean_loss": 7.1}]}
    assert engine.mean_loss_gap(runs) == pytest.approx(0.2)


def test_fewer_than_five_repeats_is_one_line(lab_main, tmp_path):
    proc = lab_main("bench", "engine", "repeats=2")
    assert proc.returncode == 2 and proc.stderr.startswith("error: key 'repeats' has bad value 2")
    assert not (tmp_path / "runs").exists()
