"""`lab detect explain` (slow: tiny settings, every task) and its one-line errors (fast)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_explain_tiny_run_checks_hold(run_lab, tmp_path):
    out = tmp_path / "ex"
    stdout = run_lab("detect", "explain", "--output", str(out), "explain_rows=4", "lime_seeds=2", "lime_samples=200",
                     "exact_rows=3", "background=10", "trees=10", "intrusion_rows=1000", "cnn_epochs=1", "ig_steps=16").stdout
    s = json.loads((out / "summary.json").read_text())
    checks = {c["task"]: c for c in s["checks"]}
    assert set(checks) == {"phishing", "intrusion", "spam", "digits"}
    for task in ("phishing", "intrusion", "spam"):  # sum of SHAP values = p(class 1) - base value (tree, partition)
        assert checks[task]["SHAP additivity max error"] <= 1e-6
        assert 0 <= checks[task]["LIME top-5 Jaccard over 2 seeds"] <= 1
    assert checks["digits"]["IG completeness max relative error"] < 0.2  # captum's delta, 16 steps
    (exact,) = s["exact"]
    assert exact["tree (interventional) max abs diff vs exact"] <= 1e-6  # SHAP's interventional tree = enumeration
    assert exact["kernel spearman vs exact (mean)"] >= 0.9
    methods = {(d["task"], d["method"]) for d in s["deletion"]}
    assert ("digits", "integrated gradients") in methods and ("phishing", "LIME") in methods
    # removing the top pixels by IG hurts the CNN more than removing random pixels, at the largest k
    ig = [d for d in s["deletion"] if d["method"] == "integrated gradients"][-1]
    assert ig["p drop (method)"] > ig["p drop (random)"]
    assert "| phishing |" in stdout and (out / "digits_attributions.png").exists() and (out / "phishing_shap_importance.png").exists()


@pytest.mark.parametrize("args, message", [
    (["tasks=[malware]"], "tasks"),
    (["explain_rows=1"], "explain_rows"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "explain", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
