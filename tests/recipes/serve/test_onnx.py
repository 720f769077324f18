"""`lab serve onnx` on the tiny seq2seq run: the bundle, the parity summary, both sides timed on the same computation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import one_line_error, only_run

from labcli.serving.export import TOLERANCE


@pytest.mark.slow
def test_serve_onnx_parity_and_latency(lab_main, seq2seq_run, tmp_path):
    result = lab_main("serve", "onnx", "--run", str(seq2seq_run), "repeats=2", "batch=2", "max_new_tokens=12")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parity_ok"] and summary["max_abs_diff"] <= TOLERANCE and summary["text_match"]
    assert (run / "onnx" / "encoder.onnx").is_file() and (run / "onnx" / "decoder.onnx").is_file()
    rows = {r["case"]: r for r in summary["latency"]}
    assert set(rows) == {"logits, batch 1", "logits, batch 2", "greedy text, 1 sentence",
                         "greedy text, 1 sentence, eager with KV cache"}
    assert all("no KV cache" in rows[c]["computes (both sides)"] for c in list(rows)[:3])
    assert rows["greedy text, 1 sentence, eager with KV cache"]["onnxruntime_ms"] is None  # not a like-for-like pair
    assert (run / "latency.png").stat().st_size > 0 and "onnxruntime" in (run / "report.md").read_text()
    assert "greedy text identical to eager" in result.stdout and "eager vs onnxruntime" in result.stdout
    assert result.stdout.count("run folder:") == 1 and result.stdout.count("report:") == 1


def test_serve_onnx_takes_one_model(lab_main):
    one_line_error(lab_main("serve", "onnx", "--run", "a", "--model", "tiny-mbart"), "give one of --run DIR or --model NAME")
