"""`lab detect poison`: BadNets at 10 % and the four detectors as separate rows (slow), aggregation and errors (fast)."""

from __future__ import annotations

import json

import pytest

from labcli.recipes.detect import poison


@pytest.mark.slow
def test_badnets_attack_and_four_detectors(run_lab, tmp_path):
    out = tmp_path / "poison"
    stdout = run_lab("detect", "poison", "--output", str(out), "poison_rates=[0,0.1]", "epochs=3", "repeats=1").stdout
    s = json.loads((out / "summary.json").read_text())
    clean, poisoned = s["attack"]
    assert s["seeds"] == [0] and poisoned["poison rate"] == 0.1
    assert poisoned["attack success"] > 0.85 and clean["attack success"] < 0.1 and poisoned["clean drop (points)"] < 2.0
    rows = {(r["poison rate"], r["detector"]): r for r in s["detection"]}
    assert {d for _, d in rows} == set(poison.DETECTORS.values())
    ac, combined = rows[0.1, poison.DETECTORS["ac"]], rows[0.1, poison.DETECTORS["combined"]]
    knn, ss = rows[0.1, poison.DETECTORS["knn"]], rows[0.1, poison.DETECTORS["ss"]]
    assert combined["share of target class"] > 0.45  # the poison is about half of the target class here
    assert combined["recall"] > 0.8 and combined["precision"] > 0.8  # clusters + k-NN vote find it
    assert ac["recall"] < 0.5  # Chen et al.'s size rule flags the smaller, clean half of class 0
    assert knn["recall"] > 0.6 and knn["precision"] < 0.6  # alone, the k-NN check also flags ambiguous clean digits
    assert ss["recall"] < 0.5
    assert all(rows[0.0, d]["recall"] is None for d in poison.DETECTORS.values())  # nothing poisoned at rate 0
    assert "k-NN relabel check (pixels)" in stdout
    for name in ("badnets.png", "spectral_scores.png", "trigger_examples.png", "model.pt"):
        assert (out / name).exists()


def test_aggregate_gives_mean_and_range_over_seeds():
    rows = [{"poison rate": 0.1, "detector": "d", "recall": 0.5}, {"poison rate": 0.1, "detector": "d", "recall": 1.0},
            {"poison rate": 0.1, "detector": "e", "recall": None}]
    out = poison.aggregate(rows, ["recall"], ["poison rate", "detector"])
    assert out == [{"poison rate": 0.1, "detector": "d", "recall": 0.75, "recall range": "0.50-1.00"},
                   {"poison rate": 0.1, "detector": "e", "recall": None, "recall range": "-"}]


@pytest.mark.parametrize("args, message", [
    (["poison_rates=[0.95]"], "poison rates [0.95] must lie in [0, 0.9)"),
    (["detection.knn_k=0"], "key 'detection.knn_k' has bad value 0"),
    (["target=12"], "key 'target' has bad value 12"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "poison", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
