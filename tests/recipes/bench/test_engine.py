"""`lab bench engine` runs both sides and writes JSON, a table and a plot (numbers are not asserted)."""

import json


def test_bench_engine_writes_table_and_plot(run_lab, tmp_path):
    out = tmp_path / "bench"
    stdout = run_lab("bench", "engine", "steps=6", "repeats=1", "batch_size=4", "block_size=32", "--output", str(out)).stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [r["technique"] for r in summary["rows"]] == ["lab engine", "HF Trainer"]
    assert all(r["steps_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in summary["rows"])
    assert "| lab engine |" in stdout and (out / "engine_vs_trainer.png").exists()
    assert "cores" in summary["hardware"]
