"""`lab bench serve` on the tiny seq2seq run behind one real Triton: through lab's front and straight to
Triton, interleaved repeats, Triton's batch counters; the one-line errors in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import one_line_error, only_run, seq2seq_run  # noqa: F401  (fixture)


@pytest.mark.slow
def test_bench_serve_triton_front_and_direct(lab_main, seq2seq_run, tmp_path):  # noqa: F811
    out = lab_main("bench", "serve", "--run", str(seq2seq_run), "protocols=[http,http-direct]", "requests=8",
                   "concurrency=[1,4]", "repeats=2", "max_new_tokens=12")
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path / "runs")
    bench = json.loads((run / "summary.json").read_text())
    assert bench["errors"] == 0 and bench["protocols"] == ["http", "http-direct"]
    assert len(bench["cells"]) == 2 * 2 * 2 * 2 and all(c["requests"] == 8 for c in bench["cells"])
    rows = {(r["protocol"], r["batching"], r["concurrency"]): r for r in bench["rows"]}
    assert len(rows) == 8 and all(r["repeats"] == 2 for r in rows.values())
    assert all(r["req_per_s_min"] <= r["req_per_s"] <= r["req_per_s_max"] and r["p50_ms"] <= r["p99_ms"] for r in rows.values())
    assert all(rows[p, "off", c]["mean_batch"] == 1.0 for p in ("http", "http-direct") for c in (1, 4))  # one input per run
    assert all(rows[p, "on", c]["mean_batch"] >= 1.0 for p in ("http", "http-direct") for c in (1, 4))
    assert {(g["batching"], g["concurrency"]) for g in bench["gateway_cost"]} == {("on", 1), ("on", 4), ("off", 1), ("off", 4)}
    assert (run / "bench.png").stat().st_size > 0 and "What lab's HTTP front costs" in (run / "report.md").read_text()
    assert "lab bench serve: triton" in out.stdout and "lab's HTTP front costs" in out.stdout and "load average" in out.stdout
    assert "![bench]" not in out.stdout


def test_bench_serve_errors(lab_main):
    one_line_error(lab_main("bench", "serve", "--backend", "torchserve", "--kind", "logits"), "TorchServe is load-tested with text")
    one_line_error(lab_main("bench", "serve", "concurrency=[0]"), "key 'concurrency.0' has bad value 0")

