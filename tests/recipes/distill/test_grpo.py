"""`lab distill grpo|dapo`: config keys and errors in-process (fast), the real CLI at tiny size (slow)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from labcli import registry
from labcli.errors import UserError

RL_SMOKE = ("train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=16", "group_size=4", "max_new_tokens=24",
            "test_size=8", "train.eval_every=0", "train.lr=1e-3", "train.save_every=1", "train.tensorboard=false")


@pytest.mark.parametrize("recipe", ["grpo", "dapo"])
@pytest.mark.parametrize("key", ["train.eval_batches=3", "train.early_stopping_patience=2", "train.strategy=ddp",
                                 "train.compile=true", "eval_every=5"])
def test_the_config_offers_only_keys_the_loop_honours(recipe, key):
    with pytest.raises(UserError, match="(not permitted|Extra inputs|unknown)"):
        registry.load("distill", recipe, None, [key])


def test_dapo_switches_and_warmup_counted_in_steps():
    cfg, _ = registry.load("distill", "dapo", None, ["train.warmup_steps=5"])
    assert (cfg.clip_high, cfg.dynamic_sampling, cfg.mini_batches) == (0.28, True, 4)
    assert "in steps" in type(cfg.train).model_fields["warmup_steps"].description


def test_an_untrained_start_is_a_user_error(lab_main):
    result = lab_main("distill", "grpo", "init=tiny-llama", "test_size=4")
    assert result.returncode == 2 and "untrained preset" in result.stderr


def test_check_names_the_start_it_builds_first(lab_main):
    result = lab_main("check", "distill", "dapo", "seed=3")
    assert result.returncode == 0 and "4 optimizer update(s) each" in result.stdout
    assert "`lab distill cot --task arith --seed 3 cot_fraction=0.5" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["grpo", "dapo"])
def test_rl_steps_change_the_policy_and_write_metrics(run_lab, cot_model, recipe, tmp_path):
    run = tmp_path / recipe
    proc = run_lab("distill", recipe, f"init={cot_model}", *RL_SMOKE, "--output", str(run))
    before, after = load_file(cot_model / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert any((before[k] - after[k]).abs().max() > 0 for k in before)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2] and [r["step"] for r in rows if "test_accuracy" in r] == [0, 2]
    for key in ("reward", "accuracy", "length", "entropy", "clip_frac", "kl", "groups_kept", "groups_drawn", "lr"):
        assert key in steps[-1] or (key != "groups_kept" and steps[-1]["groups_kept"] == 0), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["switches"]["clip_high"] == (0.28 if recipe == "dapo" else 0.2)
    assert summary["switches"]["dynamic_sampling"] is (recipe == "dapo")
    assert summary["start_test_accuracy"] is not None and summary["final_test_accuracy"] is not None
    assert (run / "checkpoints" / "step-00000002" / "COMPLETE").exists()
    for png in ("accuracy.png", "reward.png", "length.png", "policy.png"):
        assert (run / png).exists()
    assert "test accuracy" in proc.stdout and "run folder:" in proc.stdout


@pytest.mark.slow
def test_grpo_resume_after_sigkill_is_exact(run_lab, cot_model, tmp_path):
    init = f"init={cot_model}"
    common = (init, "train.batch_size=2", "train.micro_batch_size=16", "group_size=4", "max_new_tokens=16", "test_size=4",
              "train.eval_every=0", "train.lr=1e-3", "train.save_every=1", "train.max_steps=3", "train.tensorboard=false")
    run_lab("distill", "grpo", *common, "--output", str(tmp_path / "straight"))
    proc = run_lab("distill", "grpo", *common, "--output", str(tmp_path / "split"), env={"LAB_FAULT_KILL_AT_STEP": "2"},
                   check=False)
    assert proc.returncode in (-9, 137)
    run_lab("distill", "grpo", *common, "--output", str(tmp_path / "split"), "--resume", "auto")
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3]
