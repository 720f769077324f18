"""lab reproduce moe: equal active parameters across arms, error paths, a tiny real run (slow)."""

import json

import pytest

from labcli.models.moe import TinyLM
from labcli.recipes.reproduce import moe


def test_arms_have_equal_active_ffn_parameters():
    cfg = moe.Config()
    active = {arm: TinyLM(moe.model_config(cfg, arm, 300)).active_ffn_params() for arm in moe.ARMS}
    assert len(set(active.values())) == 1, active
    fine = moe.model_config(cfg, "deepseekmoe-aux", 300).moe
    coarse = moe.model_config(cfg, "gshard-top2", 300).moe
    assert fine.n_experts + fine.n_shared == cfg.model.granularity * coarse.n_experts
    assert fine.expert_hidden * cfg.model.granularity == coarse.expert_hidden


def test_unknown_arm_is_one_line_error(lab_main):
    result = lab_main("reproduce", "moe", "arms=[dense, switch]")
    assert result.returncode == 2 and "switch" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "moe", "--output", str(tmp_path / "r"), "train.max_steps=4", "train.eval_every=2",
            "model.d_model=32", "model.n_layers=1")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [r["arm"] for r in summary["arms"]] == moe.ARMS
    assert all(len(r["val_loss_seeds"]) == 2 for r in summary["arms"])  # two seeds by default
    assert summary["mla"]["v2"] == {"mla": 576, "mha": 32768}
    assert summary["mla"]["naive_vs_absorbed_max_abs_diff"] < 1e-4
    assert (tmp_path / "r" / "maxvio.png").exists()
