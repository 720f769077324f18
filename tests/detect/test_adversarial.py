"""`lab detect evasion` on MNIST-5k through the real CLI (small settings); `lab detect poison` is in test_poison.py."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def evasion_run(tmp_path_factory, lab_home):
    """One defended evasion run shared by the tests below (trains two small CNNs)."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("evasion") / "run"
    cmd = [sys.executable, "-m", "labcli", "detect", "evasion", "--output", str(out), "--defend", "adv-train",
           "eval_size=300", "pgd_steps=20", "epochs=2", "linf_eps=[0,0.1,0.3]", "l2_eps=[1.0]", "cw.steps=50",
           "cw.images=50", "crosscheck_eps=[0.1,0.3]", "adv.steps=2", "adv.step_size=0.2", "adv.epochs=7"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LAB_HOME": str(lab_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def test_pgd_breaks_standard_cnn_and_adv_training_resists(evasion_run):
    _, s = evasion_run
    assert s["clean_accuracy"]["standard"] > 0.85
    assert s["pgd_linf_0.3"]["standard"] < 0.10
    assert s["pgd_linf_0.3"]["adv-trained"] > 0.40
    fgsm = {r["eps"]: r["accuracy"] for r in s["attacks"] if r["model"] == "standard" and r["attack"] == "fgsm"}
    assert fgsm[0.0] > fgsm[0.1] > fgsm[0.3]
    cw = next(r for r in s["attacks"] if r["model"] == "standard" and r["attack"] == "cw-l2")
    assert cw["accuracy"] < 0.5 and 0 < cw["eps"] < 4


def test_lab_pgd_matches_art_within_three_points(evasion_run):
    _, s = evasion_run
    assert len(s["crosscheck"]) == 4
    assert all(r["difference (points)"] <= 3.0 for r in s["crosscheck"])


def test_evasion_files_and_reuse_of_a_run_model(evasion_run, run_lab, tmp_path):
    out, _ = evasion_run
    for name in ("report.md", "accuracy_vs_eps.png", "model.pt", "model_adv.pt", "config.yaml"):
        assert (out / name).stat().st_size > 0
    again = tmp_path / "again"
    run_lab("detect", "evasion", "--output", str(again), f"model={out}", "eval_size=50", "pgd_steps=5", "linf_eps=[0.3]",
            "l2_eps=[]", "cw.steps=5", "cw.images=10", "crosscheck=none")
    s = json.loads((again / "summary.json").read_text())
    assert s["model_source"].endswith("model.pt") and s["pgd_linf_0.3"]["standard"] < 0.10


def test_evasion_missing_model_is_one_line(run_lab, tmp_path):
    proc = run_lab("detect", "evasion", f"model={tmp_path / 'nope'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: no model at"), proc.stderr
