"""`lab detect poison` through the real CLI: BadNets at 10 % and finding the poisoned samples (fixed seed)."""

from __future__ import annotations

import json

import numpy as np


def test_badnets_attack_and_detectors(run_lab, tmp_path):
    out = tmp_path / "poison"
    run_lab("detect", "poison", "--output", str(out), "poison_rates=[0,0.1]", "epochs=3")
    s = json.loads((out / "summary.json").read_text())
    clean, poisoned = s["attack"]
    assert clean["poison rate"] == 0 and poisoned["poisoned images"] == 400
    assert poisoned["attack success"] > 0.85 and clean["attack success"] < 0.1
    assert poisoned["clean drop (points)"] < 2.0
    detectors = {r["detector"]: r for r in s["detection"]}
    assert set(detectors) == {"activation clustering", "activation clustering (size rule)", "spectral signatures"}
    ac = detectors["activation clustering"]
    assert ac["share of target class"] > 0.45  # the poison is about half of the target class here
    assert ac["2-means purity"] > 0.95  # the activations do separate the poison
    assert ac["recall"] > 0.8 and ac["precision"] > 0.8  # and the relabel check picks the poisoned half
    assert detectors["activation clustering (size rule)"]["recall"] < 0.5  # the size rule picks the wrong one
    for r in detectors.values():
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    for name in ("badnets.png", "spectral_scores.png", "trigger_examples.png", "model.pt"):
        assert (out / name).exists()
    assert "outvoted" in (out / "report.md").read_text()


def test_relabel_votes_flags_relabelled_lookalikes():
    """A relabelled copy of a class is outvoted by its unchanged neighbours; the class itself is not."""
    from labcli.recipes.detect.poison import relabel_votes

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    X = np.concatenate([c + rng.normal(size=(40, 20)) for c in centres]).astype(np.float32)
    labels = np.repeat([0, 1, 2], 40)
    labels[40:44] = 0  # four members of class 1 relabelled to 0 (dirty-label poison)
    outvoted = relabel_votes(X, labels, k=10)  # at most 4 of any 10 neighbours are relabelled
    assert outvoted[40:44].all() and not outvoted[:40].any() and not outvoted[44:].any()


def test_poison_bad_detector_setting_is_one_line(run_lab):
    proc = run_lab("detect", "poison", "detection.ac_neighbours=0", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: detection.ac_neighbours=0"), proc.stderr
