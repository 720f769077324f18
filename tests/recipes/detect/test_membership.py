"""`lab detect membership --defend dp` (slow, small settings) and its one-line errors (fast)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_membership_attacks_on_four_targets(run_lab, tmp_path):
    out = tmp_path / "mia"
    stdout = run_lab("detect", "membership", "--output", str(out), "--defend", "dp", "target_size=200", "shadows=4",
                     "epochs=30", "regularised.epochs=30", "dp.epsilons=[1]", "dp.epochs=10", "dp.batch_size=64").stdout
    s = json.loads((out / "summary.json").read_text())
    attacks = {(r["target"], r["attack"]): r for r in s["attacks"]}
    assert {a for _, a in attacks} == {"loss threshold (Yeom)", "shadow-model classifier (Shokri)",
                                       "offline LiRA, 4 shadows, per-image Gaussian"}
    assert {t for t, _ in attacks} == {"overfit", "regularised", "DP recipe, no noise", "DP eps=1"}
    for r in s["attacks"]:
        assert 0 <= r["tpr@0.1%fpr"] <= r["tpr@1%fpr"] <= 1
    table = {t["target"]: t for t in s["privacy_utility"]}
    # the overfit target leaks visibly; DP-SGD at eps=1 brings the attacks close to chance
    assert table["overfit"]["best attack auc"] > 0.6 and table["overfit"]["train accuracy"] > 0.98
    assert table["regularised"]["test accuracy"] > 0.7
    assert abs(table["DP eps=1"]["LiRA auc"] - 0.5) < 0.08
    assert table["overfit"]["test accuracy"] > table["DP eps=1"]["test accuracy"]
    (dp,) = s["privacy"]
    assert dp["target"] == "DP eps=1" and dp["epsilon spent"] <= 1.0 + 1e-6 and dp["noise multiplier"] > 1.0
    assert abs(dp["sampling rate"] - 64 / 200) < 1e-9 and "| overfit |" in stdout
    assert (out / "privacy_utility.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--defend", "dp", "target_size=500", "dp.delta=0.01"], "dp.delta 0.01 is not below 1/N"),
    (["target_size=1950"], "target_size 1950 must be between 50 and 1900"),
    (["shadows=1"], "key 'shadows' has bad value 1"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "membership", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
