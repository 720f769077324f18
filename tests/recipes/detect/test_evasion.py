"""`lab detect evasion` on MNIST-5k (slow, small settings): attacks, adversarial training, strong PGD, cross-checks."""

from __future__ import annotations

import json

import pytest

from labcli.recipes.detect.evasion import robust_at


@pytest.fixture(scope="module")
def evasion_run(tmp_path_factory, lab_home):
    """One defended evasion run shared by the slow tests below (trains two small CNNs)."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("evasion") / "run"
    cmd = [sys.executable, "-m", "labcli", "detect", "evasion", "--output", str(out), "--defend", "adv-train",
           "eval_size=300", "pgd_steps=20", "epochs=2", "linf_eps=[0,0.1,0.3]", "l2_eps=[1.0,2.0]", "cw.steps=50",
           "cw.binary_steps=4", "cw.images=50", "crosscheck_eps=[0.1,0.3]", "adv.steps=2", "adv.step_size=0.2",
           "adv.epochs=7", "strong.steps=40", "strong.restarts=3", "strong.images=100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LAB_HOME": str(lab_home)}, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), proc.stdout


@pytest.mark.slow
def test_pgd_breaks_standard_cnn_and_adv_training_resists(evasion_run):
    _, s, stdout = evasion_run
    assert s["clean_accuracy"]["standard"] > 0.85
    assert s["pgd_linf_0.3"]["standard"] < 0.10 and s["pgd_linf_0.3"]["adv-trained"] > 0.40
    fgsm = {r["eps"]: r["accuracy"] for r in s["attacks"] if r["model"] == "standard" and r["attack"] == "fgsm"}
    assert fgsm[0.0] > fgsm[0.1] > fgsm[0.3]
    cw = {r["eps"]: r["accuracy"] for r in s["attacks"] if r["model"] == "standard" and r["attack"] == "cw-l2"}
    pgd_l2 = {r["eps"]: r["accuracy"] for r in s["attacks"] if r["model"] == "standard" and r["attack"] == "pgd-l2"}
    assert cw[2.0] < cw[1.0] < s["clean_accuracy"]["standard"] and pgd_l2[2.0] < pgd_l2[1.0]
    strong = {r["attack"]: r["accuracy"] for r in s["strong"]}
    assert set(strong) == {"pgd-linf, 20 steps", "pgd-linf, 40 steps x 3 restarts", "APGD-CE (ART), 100 steps x 5 restarts",
                           "APGD-DLR (ART), 100 steps x 5 restarts", "worst case per image (all of the above)"}
    worst = strong.pop("worst case per image (all of the above)")
    assert worst <= min(strong.values()) and strong["pgd-linf, 40 steps x 3 restarts"] <= strong["pgd-linf, 20 steps"] + 0.01
    assert "worst case per image" in stdout


@pytest.mark.slow
def test_lab_attacks_match_art_and_foolbox_within_three_points(evasion_run):
    _, s, _ = evasion_run
    libraries = {(r["attack"], r["second library"]) for r in s["crosscheck"]}
    assert libraries == {("pgd-linf", "ART"), ("cw-l2", "foolbox")} and len(s["crosscheck"]) == 8
    assert all(r["difference (points)"] <= 3.0 for r in s["crosscheck"])


@pytest.mark.slow
def test_evasion_files_and_reuse_of_a_run_model(evasion_run, run_lab, tmp_path):
    out, _, _ = evasion_run
    for name in ("report.md", "accuracy_vs_eps.png", "model.pt", "model_adv.pt", "config.yaml"):
        assert (out / name).stat().st_size > 0
    again = tmp_path / "again"
    run_lab("detect", "evasion", "--output", str(again), f"model={out}", "eval_size=50", "pgd_steps=5", "linf_eps=[0.3]",
            "l2_eps=[]", "cw.steps=5", "cw.images=10", "crosscheck=false")
    s = json.loads((again / "summary.json").read_text())
    assert s["model_source"].endswith("model.pt") and s["pgd_linf_0.3"]["standard"] < 0.10


def test_robust_accuracy_at_an_l2_radius():
    import numpy as np

    l2 = np.array([0.5, 1.5, np.inf, 0.2])
    correct = np.array([True, True, True, False])
    assert robust_at(l2, correct, 1.0) == 0.5 and robust_at(l2, correct, 2.0) == 0.25


def test_missing_model_is_one_line_and_leaves_no_run(lab_main, tmp_path):
    proc = lab_main("detect", "evasion", f"model={tmp_path / 'nope'}")
    assert proc.returncode == 2 and proc.stderr.startswith("error: no model at"), proc.stderr
    assert not (tmp_path / "runs").exists()
