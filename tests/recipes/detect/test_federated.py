"""`lab detect federated` (slow: one tiny Flower simulation through every part) and its one-line errors (fast)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_federated_tiny_run_covers_every_part(run_lab, tmp_path):
    pytest.importorskip("flwr", reason="Flower is the optional [federated] extra (its pins conflict with [all])")
    out = tmp_path / "fl"
    stdout = run_lab("detect", "federated", "--output", str(out), "clients=4", "rounds=2", "central_epochs=1",
                     "local.epochs=1", "dp.noise=[1.0]", "attacks.rounds=1", "attacks.rules=[fedavg,median]",
                     "attacks.kinds=[sign-flip]", "cpus=2").stdout
    s = json.loads((out / "summary.json").read_text())
    assert [(c["run"], c["split"]) for c in s["convergence"]] == [
        ("FedAvg", "iid"), ("FedSGD", "iid"), ("FedProx", "iid"), ("FedSGD", "non-iid"), ("FedAvg", "non-iid"), ("FedProx", "non-iid")]
    runs = {(r["run"], r["split"]): r for r in s["runs"]}
    assert len(runs[("FedSGD", "iid")]["curve"]) == 3  # the initial model + 2 rounds, evaluated centrally by Flower
    assert runs[("FedAvg", "iid")]["final accuracy"] > 0.3  # 2 rounds of 4 clients x 1 epoch learn something
    (dp,) = s["dp"]
    assert dp["epsilon"] > 0 and dp["noise multiplier"] == 1.0
    rows = {(a["rule"], a["attack"]): a for a in s["attacks"]}
    assert set(rows) == {("fedavg", "none"), ("fedavg", "sign-flip"), ("median", "none"), ("median", "sign-flip")}
    # one of 4 clients sending -10x its update wrecks the plain average; the median drops it
    assert rows[("fedavg", "sign-flip")]["accuracy drop vs clean (points)"] > rows[("median", "sign-flip")]["accuracy drop vs clean (points)"]
    assert "centralised accuracy" in stdout and (out / "accuracy_per_round.png").exists()


@pytest.mark.parametrize("args, message", [
    (["dp.delta=0.5"], "dp.delta 0.5 is not below 1/clients"),
    (["clients=4", "attacks.malicious=2"], "attacks.malicious 2 is not below half of 4 clients"),
    (["attacks.rules=[bulyan]"], "attacks.rules"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "federated", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_without_flower_the_run_says_how_to_get_it(lab_main, tmp_path, monkeypatch):
    """Flower is the optional [federated] extra (kept out of [all] for its pins): one line, no run folder."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else real(name, *a))
    proc = lab_main("detect", "federated")
    assert proc.returncode == 2 and "pip install 'labcli[federated]'" in proc.stderr
    assert not (tmp_path / "runs").exists()
