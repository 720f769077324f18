"""lab reproduce kosmos2: the exact checks hold, verdicts follow the numbers, a tiny real run (slow)."""

import json

import pytest

from labcli.recipes.reproduce import kosmos2

EXACT = {"boxes_round_tripped": 10, "round_trip_max_error": 0.02, "crafted_strings": 5, "crafted_agree": 5,
         "tiny_kosmos2_logits": [2, 20, 1100], "tiny_kosmos2_params": 1000, "tiny_kosmos2_finite": True}


def rows(vision: float, language: float) -> list[dict]:
    return [{"model": m, "test": t, "accuracy": a} for m, a in (("vision + language", vision), ("language only", language))
            for t in ("held-out scenes", "held-out combinations")]


def test_verdicts_follow_the_bars():
    cfg = kosmos2.Config()
    assert [c.verdict for c in kosmos2.claims_for(cfg, EXACT, rows(0.9, 0.1))] == ["holds"] * 3
    assert kosmos2.claims_for(cfg, EXACT, rows(0.5, 0.1))[-1].verdict == "partly"
    assert kosmos2.claims_for(cfg, EXACT, rows(0.1, 0.1))[-1].verdict == "does not hold"
    assert kosmos2.claims_for(cfg, {**EXACT, "crafted_agree": 4}, rows(0.9, 0.1))[1].verdict == "does not hold"


def test_held_out_combinations_never_appear_as_training_targets():
    import random

    from labcli.models import grounding_vlm as g

    seen = [(c, s) for c in g.COLOURS for s in g.SHAPES if (c, s) not in kosmos2.HELD_OUT]
    rng = random.Random(0)
    assert not {g.make_scene(rng, 3, seen).combo for _ in range(200)} & set(kosmos2.HELD_OUT)


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "kosmos2", "--output", str(tmp_path / "r"), "train_scenes=64", "test_scenes=8", "width=16",
            "layers=1", "train.max_steps=2", "train.batch_size=16", "train.micro_batch_size=16")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["exact"]["crafted_agree"] == summary["exact"]["crafted_strings"]
    assert summary["exact"]["round_trip_max_error"] < 1 / 32 and len(summary["grounding"]) == 4
    assert [c["verdict"] for c in summary["claims"]][:2] == ["holds", "holds"]
