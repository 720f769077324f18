"""`lab bench kernels` in-process on tiny sizes: the tables, the honesty about the interpreter, the files."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("triton")

from labcli.kernels import runtime  # noqa: E402,F401  (sets TRITON_INTERPRET without a GPU)

TINY = ["--seq-lens", "[64]", "--head-dims", "[64]", "--causal", "[true]", "--nf4-shapes", "[[64,128]]",
        "--nf4-batches", "[1]", "--memory-seq-lens", "[256,512,1024]", "--compile-arch", "0"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the interpreter run")
def test_tiny_bench_on_the_cpu_reports_correctness_not_speed(lab_main, tmp_path):
    out = tmp_path / "bench"
    result = lab_main("bench", "kernels", *TINY, "--dtypes", "[fp32,bf16]", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert f"run folder: {out}" in result.stdout and "lab-nf4: dequantize bit-exact" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kernels"]["interpreter"] is True
    assert any("bf16" in s for s in summary["plan"]["skipped"])  # bf16 refused under the interpreter, and said so
    ours = [r for r in summary["attention"] if r["impl"] == "lab-flash"]
    assert {r["mode"] for r in ours} == {"fwd", "bwd"}
    assert all(r["max_error"] <= 1e-5 and not r["timed"] and "ms" not in r for r in ours)
    assert all(r["bit_exact"] for r in summary["nf4_dequantize"] if r["impl"] == "lab-nf4")
    assert all(r["max_rel_error"] <= 1e-6 for r in summary["nf4_matmul"] if "max_rel_error" in r)
    growth = summary["growth_exponent"]
    assert growth["naive (scores materialised)"] == pytest.approx(2.0, abs=0.1)
    assert growth["tiled online softmax (128x128 tiles)"] < 1.1
    report = (out / "report.md").read_text()
    assert "ran under the interpreter" in report and "not measured here" in report
    assert (out / "memory.png").stat().st_size > 0


def test_bad_sizes_are_refused_before_a_run_folder_exists(lab_main, tmp_path):
    result = lab_main("bench", "kernels", *TINY, "--nf4-batches", "[32]")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "1..16 rows" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.gpu
def test_tiny_bench_on_a_gpu_times_every_implementation(lab_main, tmp_path):
    out = tmp_path / "bench"
    result = lab_main("bench", "kernels", *TINY, "--dtypes", "[fp16,bf16]", "--output", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kernels"]["interpreter"] is False
    rows = summary["attention"] + summary["nf4_dequantize"] + summary["nf4_matmul"]
    assert all(r["timed"] and r["ms"] > 0 for r in rows if r["status"] == "ok")
    assert all(r["max_error"] <= 3e-2 for r in summary["attention"] if r.get("impl") == "lab-flash")
    assert all(r["bit_exact"] for r in summary["nf4_dequantize"] if r["impl"] == "lab-nf4")


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90_without_a_gpu():
    """ptxas from Triton's wheel builds each kernel's cubin: compile errors and oversized tiles show here."""
    from labcli.kernels.compile_check import run_subprocess

    rows = run_subprocess(90)
    assert rows and all(r["ok"] and r["fits"] for r in rows), [r for r in rows if not r.get("ok")]
