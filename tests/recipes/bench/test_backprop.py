"""`lab bench backprop`: each timed training run ran its technique; checkpointing saves less; tables printed."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_every_timed_cell_ran_its_technique(run_lab, tmp_path):
    out = tmp_path / "bp"
    stdout = run_lab("bench", "backprop", "seq_lens=[16,32]", "train.max_steps=2", "train.batch_size=2",
                     "train.micro_batch_size=2", "layers=2", "--output", str(out)).stdout
    summary = json.loads((out / "summary.json").read_text())
    cells = {(c["seq_len"], c["technique"]): c for c in summary["cells"]}
    techniques = ("baseline", "hf-checkpointing", "ckpt-every-block", "ckpt-every-k", "ckpt-attention", "custom-mlp",
                  "offload-cpu")
    assert set(cells) == {(s, t) for s in (16, 32) for t in techniques}
    for (seq, technique), c in cells.items():
        base = cells[(seq, "baseline")]
        assert c["max_grad_diff"] <= 1e-6 and c["peak_memory_mb"] > 0 and c["step_ms"] > 0
        # the timed run (2 engine steps, one forward each) kept exactly what the measuring pass kept
        assert c["timed_saved_bytes"] == [c["saved_bytes"]] * 2, technique
        assert c["timed_offloaded_bytes"] == [c["offloaded_bytes"]] * 2, technique
        if technique == "offload-cpu":
            assert c["timed_saved_bytes"] == [0, 0] and min(c["timed_offloaded_bytes"]) >= base["saved_bytes"]
        elif technique != "baseline":
            assert max(c["timed_saved_bytes"]) < min(base["timed_saved_bytes"]), technique
            assert c["timed_offloaded_bytes"] == [0, 0]
    assert summary["goals"] and "hf-checkpointing at seq 32" in summary["goals"][0]
    report = (out / "report.md").read_text()
    assert "| 32 | ckpt-every-block |" in report and "Hardware:" in report
    assert "bench backprop" in stdout and "offload-cpu" in stdout  # the table, printed
    for png in ("activation_bytes.png", "peak_memory.png", "step_time.png"):
        assert (out / png).stat().st_size > 0


def test_unknown_technique_is_one_line(lab_main, tmp_path):
    proc = lab_main("bench", "backprop", "techniques=[ckpt-everything]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: key 'techniques.0' has bad value 'ckpt-everything'")
    assert not (tmp_path / "runs").exists()
