"""lab reproduce induction-heads: error paths, a tiny real run, and the interp tools on a finetune run (slow)."""

import json

import pytest


def test_min_len_above_max_len_is_one_line_error(lab_main):
    result = lab_main("reproduce", "induction-heads", "min_len=9", "max_len=5")
    assert result.returncode == 2 and "min_len=9" in result.stderr and "Traceback" not in result.stderr


def test_run_without_model_is_one_line_error(lab_main, tmp_path):
    result = lab_main("reproduce", "induction-heads", "--run", str(tmp_path))
    assert result.returncode == 2 and "no model to analyse" in result.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "induction-heads", "--output", str(tmp_path / "r"), "train.max_steps=20",
            "train.eval_every=10", "eval_sequences=16", "max_len=8", "min_len=4")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(summary["claims"]) == 9
    assert summary["hooks_agree"]["patterns_max_abs_diff"] < 1e-5
    assert (tmp_path / "r" / "patching_heads.png").exists()


@pytest.mark.slow
def test_logit_lens_on_a_finetuned_model(run_lab, tmp_path):
    """The interp tools on any run's model: a `lab finetune tiny-lm` run, bridged by TransformerLens."""
    run_lab("finetune", "tiny-lm", "--output", str(tmp_path / "ft"), "train.max_steps=5", "train.eval_every=0",
            "train.save_every=0")
    proc = run_lab("reproduce", "induction-heads", "--run", str(tmp_path / "ft"), "--output", str(tmp_path / "lens"),
                   "eval_sequences=8", "lens_texts=8")
    summary = json.loads((tmp_path / "lens" / "summary.json").read_text())
    assert [r["layer"] for r in summary["logit_lens_text"]] == ["embeddings", "after block 0", "after block 1"]
    assert len(summary["head_scores"]) == 2 * 4
    assert "logit lens on text" in proc.stdout
