"""`lab detect membership --defend dp` through the real CLI (small settings, fixed seed)."""

from __future__ import annotations

import json


def test_membership_attacks_and_dp_sgd(run_lab, tmp_path):
    out = tmp_path / "mia"
    run_lab("detect", "membership", "--output", str(out), "--defend", "dp", "target_size=200", "shadows=2", "epochs=30",
            "dp.epsilons=[1]", "dp.epochs=10", "dp.batch_size=64")
    s = json.loads((out / "summary.json").read_text())
    attacks = {(r["target"], r["attack"]): r for r in s["attacks"]}
    assert {a for _, a in attacks} == {"loss threshold (Yeom)", "shadow models", "shadow-calibrated (offline LiRA)"}
    assert {t for t, _ in attacks} == {"non-private", "DP recipe, no noise", "DP eps=1"}
    for r in s["attacks"]:
        assert 0 <= r["tpr@0.1%fpr"] <= r["tpr@1%fpr"] <= 1
    table = {t["target"]: t for t in s["privacy_utility"]}
    # the overfit target leaks visibly; DP-SGD at eps=1 brings every attack close to chance
    assert table["non-private"]["best attack AUC"] > 0.6 and table["non-private"]["best advantage"] > 0.15
    assert abs(table["DP eps=1"]["best attack AUC"] - 0.5) < 0.06
    assert table["non-private"]["test accuracy"] > table["DP recipe, no noise"]["test accuracy"] > table["DP eps=1"]["test accuracy"]
    (dp,) = s["privacy"]
    assert dp["epsilon spent"] <= 1.0 + 1e-6 and dp["delta"] < 1 / 200 and dp["noise multiplier"] > 1.0
    assert dp["accountant"] == "rdp" and abs(dp["sampling rate"] - 64 / 200) < 1e-9 and dp["epochs"] == 10
    assert "epsilon spent" in (out / "report.md").read_text() and (out / "privacy_utility.png").exists()


def test_membership_delta_above_one_over_n_is_one_line(run_lab):
    proc = run_lab("detect", "membership", "--defend", "dp", "target_size=500", "dp.delta=0.01", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: dp.delta 0.01 is not below 1/N"), proc.stderr


def test_membership_target_size_too_large_is_one_line(run_lab):
    proc = run_lab("detect", "membership", "target_size=1950", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: target_size 1950 must be between 50 and 1900"), proc.stderr
