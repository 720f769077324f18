"""`lab detect phishing` on the shipped UCI file: a real run (slow) and one-line errors in-process."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_phishing_tree_models(run_lab, tmp_path):
    out = tmp_path / "phish"
    stdout = run_lab("detect", "phishing", "--output", str(out), "cv_folds=0", "models=[tree,forest]").stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["raw_rows"] == 11055 and s["rows_used"] == 5849
    models = {r["model"]: r for r in s["models"]}
    assert models["forest"]["accuracy"] > 0.9 and models["tree"]["accuracy"] > 0.85
    assert "| forest |" in stdout and (out / "feature_importance.png").exists()


def test_wrong_feature_count_is_one_line_and_leaves_no_run(lab_main, tmp_path):
    (tmp_path / "ten.csv").write_text(",".join(f"f{i}" for i in range(10)) + "\n" + ",".join("1" for _ in range(10)) + "\n")
    proc = lab_main("detect", "phishing", "data=ten.csv")
    assert proc.returncode == 2 and "has 10 columns" in proc.stderr and "needs 31" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
