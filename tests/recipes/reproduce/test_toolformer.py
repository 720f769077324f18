"""lab reproduce toolformer: verdicts follow the numbers, bad settings are one line, a tiny real run (slow)."""

import json

import pytest

from labcli.recipes.reproduce import toolformer


def stats(kept: int, hits: int) -> dict:
    one = {"candidates": 100, "useful_candidates": 20, "kept": kept, "kept_useful": hits,
           "precision": hits / kept if kept else None, "recall": hits / 20, "planted_useless": 10, "planted_kept": 0}
    return {"used": "inline", "inline": {"placement": "inline", **one}, "prefix": {"placement": "prefix", **one}}


def rows(tool: float, off: float, plain: float, called: float = 1.0) -> list[dict]:
    out = []
    for test in ("1-digit (as trained)", "2-digit (larger)"):
        for model, em in (("Toolformer + calculator", tool), ("Toolformer, tool disabled", off), ("M finetuned without calls", plain)):
            out.append({"test": test, "model": model, "exact_match": em, "n": 100, "rows_with_executed_call": called,
                        "calls_written": 100, "calls_with_a_step_expression": 90})
    return out


def test_verdicts_follow_the_bars():
    cfg = toolformer.Config()
    assert [c.verdict for c in toolformer.claims_for(cfg, stats(20, 19), rows(0.6, 0.1, 0.0))] == ["holds"] * 3
    assert [c.verdict for c in toolformer.claims_for(cfg, stats(20, 14), rows(0.3, 0.2, 0.05, 0.5))] == \
        ["partly", "partly", "partly"]
    # nothing kept, no call run, no exact match: nothing holds
    assert [c.verdict for c in toolformer.claims_for(cfg, stats(0, 0), rows(0.0, 0.0, 0.0, 0.0))] == ["does not hold"] * 3


def test_ratio_handles_zero_baselines():
    assert toolformer.ratio(0.3, 0.1) == pytest.approx(3.0)
    assert toolformer.ratio(0.3, 0.0) == float("inf") and toolformer.ratio(0.0, 0.0) is None


@pytest.mark.parametrize("override, word", [("min_steps=3", "min_steps"), ("test_digits=1", "test_digits"),
                                            ("annotate_texts=5000", "annotate_texts")])
def test_bad_settings_are_one_line_errors(lab_main, override, word):
    result = lab_main("reproduce", "toolformer", override)
    assert result.returncode == 2 and word in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "toolformer", "--output", str(tmp_path / "r"), "train_problems=120", "model.layers=1",
            "model.width=16", "model.heads=2", "pretrain.max_steps=3", "pretrain.batch_size=4", "pretrain.micro_batch_size=4",
            "annotate_texts=4", "finetune.max_steps=2", "finetune.batch_size=4", "finetune.micro_batch_size=4",
            "test_problems=3", "max_new_tokens=12")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(summary["claims"]) == 3 and len(summary["results"]) == 6
    assert summary["filter"]["inline"]["candidates"] == summary["filter"]["prefix"]["candidates"] > 0
    assert "## Filter" in (tmp_path / "r" / "report.md").read_text()
