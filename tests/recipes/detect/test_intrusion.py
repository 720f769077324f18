"""`lab detect intrusion` on the shipped NSL-KDD files: real runs (slow) and one-line errors in-process."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_tree_and_isolation_forest(run_lab, tmp_path):
    out = tmp_path / "intr"
    stdout = run_lab("detect", "intrusion", "--output", str(out), "supervised=[tree]", "unsupervised=[iforest]").stdout
    s = json.loads((out / "summary.json").read_text())
    tree = next(r for r in s["supervised"] if r["model"] == "tree" and r["test set"] == "KDDTest+")
    hard = next(r for r in s["supervised"] if r["model"] == "tree" and r["test set"] == "KDDTest-21")
    iforest = next(r for r in s["anomaly"] if r["detector"] == "iforest" and r["test set"] == "KDDTest+")
    assert s["test_rows"] == 22544 and s["kddtest21_rows"] == 11850 and s["train_rows"] == 25192
    assert 0.75 <= tree["accuracy"] <= 0.85 and hard["accuracy"] < tree["accuracy"] and iforest["auroc"] > 0.9
    assert "| tree | KDDTest+ |" in stdout  # the headline table ends the run
    assert (out / "supervised_accuracy.png").stat().st_size > 0 and (out / "anomaly_roc.png").stat().st_size > 0


@pytest.mark.slow
def test_small_pca_autoencoder_and_one_class_svm(run_lab, tmp_path):
    out = tmp_path / "intr_small"
    run_lab("detect", "intrusion", "--output", str(out), "supervised=[logistic]", "unsupervised=[pca,autoencoder,ocsvm]",
            "max_train_rows=3000", "ae_epochs=2", "ocsvm_rows=500")
    rows = {r["detector"]: r["auroc"] for r in json.loads((out / "summary.json").read_text())["anomaly"] if r["test set"] == "KDDTest+"}
    assert set(rows) == {"pca", "autoencoder", "ocsvm"} and all(0.5 < v <= 1.0 for v in rows.values())


@pytest.mark.parametrize("args, message", [
    (["data=no_such_set"], "unknown data set 'no_such_set'"),
    (["supervised=[svm9]"], "key 'supervised.0' has bad value 'svm9'"),
    (["supervised=[]", "unsupervised=[]"], "no models given"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "intrusion", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
