"""The 70B recipes: `lab check` says in one line what is missing here (the hub model), the plan they
print fits, and (slow) the same code path runs end to end on a tiny Llama on the CPU."""

from __future__ import annotations

import json

import pytest

from labcli.check import check

TINY = ["model=tiny-llama", "block_size=64", "train.max_steps=3", "train.precision=fp32", "train.eval_every=0",
        "train.tensorboard=false", "vocab_size=500"]


@pytest.mark.parametrize("recipe", ["llama2-70b-fsdp", "llama2-70b-qlora"])
def test_check_reports_the_missing_hub_model_in_one_line(recipe):
    problems, _ = check("finetune", recipe, None, [])
    assert problems == [f"model: model 'meta-llama/Llama-2-70b-hf' is not in the local cache and lab is offline "
                        "(hint: set LAB_ONLINE=1 to download it, or pass a local folder or a tiny-* preset)"]


@pytest.mark.parametrize("recipe", ["llama2-70b-fsdp", "llama2-70b-qlora"])
def test_the_printed_70b_plan_fits(recipe):
    problems, notes = check("finetune", recipe, None, ["model=tiny-llama"])
    assert problems == [] and "memory plan (llama2-70b" in notes[-1] and ", fits in 80 GB" in notes[-1]


@pytest.mark.slow
def test_fsdp_recipe_runs_on_a_tiny_llama_with_two_processes(run_lab, tmp_path):
    """FSDP2 full shard + activation checkpointing + CPU offload + lab's paged AdamW + rank-0 loading
    (rank 1 builds the Llama on the meta device), sharded checkpoints, 2 processes."""
    out = tmp_path / "fsdp"
    proc = run_lab("finetune", "llama2-70b-fsdp", *TINY, "train.batch_size=4", "train.micro_batch_size=2",
                   "train.save_every=2", "--nproc", "2", "--output", str(out))
    assert "memory plan (llama2-70b full, fsdp on 2x8 GPUs" in proc.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3 and s["final_loss"] < 7.0
    assert (out / "checkpoints" / "step-00000003" / "COMPLETE").exists() and (out / "model" / "config.json").exists()
    shards = out / "checkpoints" / "step-00000003" / "sharded"  # each rank wrote its own (DCP)
    assert (shards / "__0_0.distcp").exists() and (shards / "__1_0.distcp").exists()


@pytest.mark.slow
def test_qlora_recipe_runs_on_a_tiny_llama(run_lab, tmp_path):
    out = tmp_path / "qlora"
    proc = run_lab("finetune", "llama2-70b-qlora", *TINY, "train.batch_size=2", "train.micro_batch_size=2", "lora.r=8",
                   "--output", str(out))
    assert "memory plan (llama2-70b qlora, single on 1x1 GPUs" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 3 and (out / "adapter").exists()
