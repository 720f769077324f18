"""lab reproduce kosmos2: verdicts follow the numbers, the splits are clean, relations are scored
apart, a Kosmos-2 checkpoint runs through the same evaluation, a tiny real run (slow)."""

import json

import pytest

from labcli.recipes.reproduce import kosmos2

EXACT = {"boxes_round_tripped": 10, "round_trip_max_error": 0.02, "crafted_strings": 5, "crafted_agree": 5,
         "tiny_kosmos2_logits": [2, 20, 1100], "tiny_kosmos2_params": 1000, "tiny_kosmos2_finite": True}


def rows(vision: float, language: float, relation: float | None = None) -> list[dict]:
    return [{"model": m, "split": s, "test": t, "accuracy": a, "attributes": a, "relation": a if relation is None else relation}
            for m, a in (("vision + language", vision), ("language only", language)) for t in kosmos2.TESTS
            for s in ("dev", "test")]


def test_verdicts_follow_the_bars_per_expression_kind():
    cfg = kosmos2.Config()
    assert [c.verdict for c in kosmos2.claims_for(cfg, EXACT, rows(0.9, 0.1))] == ["holds"] * 4
    assert [c.verdict for c in kosmos2.claims_for(cfg, EXACT, rows(0.9, 0.1, relation=0.05))][2:] == ["holds", "does not hold"]
    assert kosmos2.claims_for(cfg, EXACT, rows(0.5, 0.1))[-1].verdict == "partly"
    assert kosmos2.claims_for(cfg, EXACT, rows(0.1, 0.1))[-1].verdict == "does not hold"
    assert kosmos2.claims_for(cfg, {**EXACT, "crafted_agree": 4}, rows(0.9, 0.1))[1].verdict == "does not hold"
    only = [{**r, "relation": None} for r in rows(0.9, 0.1)]
    assert len(kosmos2.claims_for(kosmos2.Config(relation_share=0), EXACT, only)) == 3


def test_dev_rows_never_decide_a_verdict():
    mixed = [{**r, "accuracy": 0.0, "attributes": 0.0, "relation": 0.0} if r["split"] == "dev" else r for r in rows(0.9, 0.1)]
    assert [c.verdict for c in kosmos2.claims_for(kosmos2.Config(), EXACT, mixed)] == ["holds"] * 4


def test_score_counts_kinds_apart_and_a_missing_box_as_a_miss():
    from labcli.models import grounding_vlm as g

    cfg = kosmos2.Config(relation_share=0.5)
    data = kosmos2.Scenes(kosmos2.draw("dev", 0, 4, cfg, kosmos2.seen_combos()))
    assert data.kinds == ["relation", "relation", "attributes", "attributes"]
    got = kosmos2.score([data.boxes[0], None, data.boxes[2], (0.0, 0.0, 0.01, 0.01)], data, 0.5)
    assert (got["accuracy"], got["relation"], got["attributes"], got["n"]) == (0.5, 0.5, 0.5, 4)
    assert g.iou(data.boxes[0], data.boxes[0]) == 1.0


def test_held_out_combinations_are_never_named_in_training():
    cfg = kosmos2.Config()
    scenes = kosmos2.draw("train", 0, 300, cfg, kosmos2.seen_combos())
    named = {s.combo for s in scenes} | {tuple(s.expression.split()[-2:]) for s in scenes if s.kind == "relation"}
    assert not named & set(kosmos2.HELD_OUT) and {s.kind for s in scenes} == {"attributes", "relation"}
    held = kosmos2.draw("test-combinations", 0, 20, cfg, kosmos2.HELD_OUT)
    assert {s.combo for s in held} <= set(kosmos2.HELD_OUT)


def test_test_scenes_do_not_move_with_any_training_or_dev_setting():
    def first_test(**kw):
        return [s.expression for s in kosmos2.eval_sets(kosmos2.Config(**kw), "test", 5)[("test", "held-out scenes")]]

    assert first_test() == first_test(train_scenes=50, dev_scenes=7, width=16)
    dev = kosmos2.eval_sets(kosmos2.Config(), "dev", 5)[("dev", "held-out scenes")]
    test = kosmos2.eval_sets(kosmos2.Config(), "test", 5)[("test", "held-out scenes")]
    assert [s.box for s in dev] != [s.box for s in test]


def test_check_refuses_relations_without_an_anchor_and_models_that_are_not_kosmos2(tmp_path):
    assert "objects >= 3" in kosmos2.check(kosmos2.Config(objects=2))[0]
    assert kosmos2.check(kosmos2.Config(objects=2, relation_share=0)) == []
    assert "no such folder" in kosmos2.check(kosmos2.Config(model=str(tmp_path / "nope")))[0]


@pytest.mark.slow
def test_a_kosmos2_checkpoint_runs_the_same_evaluation(lab_main, tmp_path):
    from labcli.models.kosmos2_grounding import save_tiny

    tiny = save_tiny(tmp_path / "tiny")
    check = lab_main("check", "reproduce", "kosmos2", f"model={tiny}", "test_scenes=4")
    assert check.returncode == 0 and "no training" in check.stdout and "post_process_generation" in check.stdout
    run = lab_main("reproduce", "kosmos2", "--output", str(tmp_path / "r"), f"model={tiny}", "test_scenes=4")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [(r["split"], r["test"], r["n"]) for r in summary["grounding"]] == [("test", t, 4) for t in kosmos2.TESTS]
    assert all(0 <= r["accuracy"] <= 1 and r["relation"] is not None for r in summary["grounding"])
    assert len(summary["claims"]) == 3 and (tmp_path / "r" / "grounding.png").exists()
    bad = lab_main("reproduce", "kosmos2", f"model={tmp_path}")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "kosmos2", "--output", str(tmp_path / "r"), "train_scenes=64", "dev_scenes=8", "test_scenes=8",
            "width=16", "layers=1", "train.max_steps=2", "train.batch_size=16", "train.micro_batch_size=16")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["exact"]["crafted_agree"] == summary["exact"]["crafted_strings"]
    assert summary["exact"]["round_trip_max_error"] < 1 / 32 and len(summary["grounding"]) == 8
    assert {(r["split"], r["relation"] is not None) for r in summary["grounding"]} == {("dev", True), ("test", True)}
    assert [c["verdict"] for c in summary["claims"]][:2] == ["holds", "holds"] and len(summary["claims"]) == 4
    assert (tmp_path / "r" / "grounding.png").exists() and (tmp_path / "r" / "loss.png").exists()


def test_dev_only_runs_claim_nothing_about_grounding():
    cfg = kosmos2.Config(report_test=False)
    dev_rows = [r for r in rows(0.9, 0.1) if r["split"] == "dev"]
    assert len(kosmos2.claims_for(cfg, EXACT, dev_rows)) == 2 and "no test sets" in kosmos2.plan(cfg)
