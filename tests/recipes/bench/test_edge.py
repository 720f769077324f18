"""`lab bench edge`: every variant runs and means what its label says (int8 weights, fewer channels, exported
files matching eager); --resume auto keeps the finished cells; bad settings are one line."""

from __future__ import annotations

import json

import pytest

TINY = ["archs=[cnn]", "train_size=200", "val_size=100", "test_size=100", "calibration=32", "training.epochs=1",
        "timing.rounds=2", "timing.iters=10", "timing.warmup=2", "prune.amounts=[0.5]", "prune.ratios=[0.5]",
        "distill.temperatures=[4]", "distill.alphas=[0.9]"]


@pytest.mark.slow
def test_every_variant_of_the_cnn_then_resume_keeps_the_cells(run_lab, lab_main, tmp_path):
    out = tmp_path / "edge"
    stdout = run_lab("bench", "edge", *TINY, "--output", str(out)).stdout
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["variant"]: r for r in summary["cells"]}
    assert set(rows) == {"fp32", "dynamic-int8", "torchao-int8", "static-int8", "qat-int8", "prune-magnitude",
                         "prune-channels", "prune-channels+static-int8", "student (labels only)",
                         "student (KD from cnn fp32)", "onnx-fp32", "onnx-dynamic-int8", "onnx-static-int8",
                         "executorch-fp32"}
    assert all(r["status"] == "ok" for r in rows.values()), [r["note"] for r in rows.values() if r["status"] != "ok"]
    fp32 = rows["fp32"]
    for name, r in rows.items():
        assert (out / "models" / r["file"]).stat().st_size == r["file_bytes"]
        assert r["p50_ms"] > 0 and r["cpu_p50_ms"] > 0 and r["calls"] == 20
        if "int8" in name:  # int8 weights (packed torch.ao, torchao, or int8 ONNX initializers), in a file about a
            # quarter of fp32's (fc1 dominates this CNN)
            assert r["int8_weight_tensors"] >= 2 and r["file_bytes"] < 0.35 * fp32["file_bytes"], name
        if "int8" in name and "qat" not in name and "prune" not in name:  # post-training: fp32's predictions, nearly
            assert r["argmax_agreement"] >= 0.9 and r["max_abs_logit_diff"] > 0, name
    assert rows["static-int8"]["float_weight_tensors"] == 0 and rows["fp32"]["int8_weight_tensors"] == 0
    assert rows["onnx-fp32"]["int8_weight_tensors"] == 0 and rows["onnx-static-int8"]["int8_weight_tensors"] >= 4
    for exported in ("onnx-fp32", "executorch-fp32"):  # exported-format parity with eager
        assert rows[exported]["max_abs_logit_diff"] < 1e-4 and rows[exported]["argmax_agreement"] == 1.0
    assert rows["prune-channels"]["parameters"] < 0.5 * fp32["parameters"]
    assert rows["prune-magnitude"]["parameters_nonzero"] == pytest.approx(0.5 * fp32["parameters"], rel=0.02)
    assert rows["prune-magnitude"]["chosen"] == "amount 0.5 (validation)"
    report = (out / "report.md").read_text()
    assert "Hardware:" in report and "| cnn | onnx-static-int8 | onnxruntime |" in report and "## Anchors" in report
    assert (out / "edge.png").stat().st_size > 0
    assert "bench edge" in stdout and "executorch-fp32" in stdout and "run folder:" in stdout

    resumed = lab_main("bench", "edge", *TINY, "--output", str(out), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads((out / "summary.json").read_text())
    assert [r["p50_ms"] for r in again["cells"]] == [r["p50_ms"] for r in summary["cells"]]  # kept, not re-timed


@pytest.mark.parametrize("args, message", [
    (["prune.amounts=[0.5,1.5]"], "error: prune.amounts has 1.5, not a fraction in (0, 1)"),
    (["archs=[squeezenet]"], "error: distill.teacher=cnn is not among archs=['squeezenet']"),
    (["variants=[int4]"], "error: key 'variants.0' has bad value 'int4'"),
])
def test_bad_settings_are_one_line_and_leave_no_folder(lab_main, tmp_path, args, message):
    proc = lab_main("bench", "edge", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert not (tmp_path / "runs").exists()
