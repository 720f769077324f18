"""`lab detect membership --defend dp` through the real CLI (small settings)."""

from __future__ import annotations

import json


def test_membership_attacks_and_dp_sgd(run_lab, tmp_path):
    out = tmp_path / "mia"
    run_lab("detect", "membership", "--output", str(out), "--defend", "dp", "target_size=500", "shadows=2", "epochs=15",
            "dp.epsilons=[8]", "dp.epochs=5")
    s = json.loads((out / "summary.json").read_text())
    attacks = {(r["target"], r["attack"]): r for r in s["attacks"]}
    yeom = attacks[("non-private", "loss threshold (Yeom)")]
    assert yeom["auc"] > 0.5 and yeom["advantage"] > 0.05
    assert ("non-private", "shadow models") in attacks and ("DP eps=8", "loss threshold (Yeom)") in attacks
    for r in s["attacks"]:
        assert 0 <= r["tpr@0.1%fpr"] <= r["tpr@1%fpr"] <= 1
    (dp,) = s["privacy"]
    assert dp["epsilon spent"] <= 8.0 + 1e-6 and dp["delta"] < 1 / 500 and dp["noise multiplier"] > 0.3
    assert dp["accountant"] == "rdp" and abs(dp["sampling rate"] - 64 / 500) < 1e-9
    utility = {u["target"]: u for u in s["utility"]}
    assert utility["non-private"]["test accuracy"] > utility["DP eps=8"]["test accuracy"] > 0.2
    assert "epsilon spent" in (out / "report.md").read_text() and (out / "privacy_utility.png").exists()


def test_membership_delta_above_one_over_n_is_one_line(run_lab):
    proc = run_lab("detect", "membership", "--defend", "dp", "target_size=500", "dp.delta=0.01", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: dp.delta 0.01 is not below 1/N"), proc.stderr
