"""`lab profile memory`: exact counts from shipped configs, the paper claims it must reproduce, the
accelerate rule beside ours, and (slow) predicted vs measured peak on this CPU."""

from __future__ import annotations

import json

import pytest

from labcli.engine.memory_plan import Plan, cheapest_fit, estimate
from labcli.models.memory import model_shape

QLORA_65B = Plan(model="llama-65b", method="qlora", strategy="single", nodes=1, gpus_per_node=1, gpu_memory_gb=48,
                 lora_r=64, seq_len=512, micro_batch=1, activation_checkpointing="full", optimizer="lab-paged-adamw",
                 weights="bf16", precision="bf16")


@pytest.mark.parametrize("name,params", [("llama2-70b", 68_976_648_192), ("llama2-7b", 6_738_415_616),
                                         ("mistral-7b", 7_241_732_096), ("llama-65b", 65_285_660_672)])
def test_parameter_counts_from_shipped_configs(name, params):
    assert model_shape(name).params == params


def test_qlora_65b_fits_in_48_gb_as_the_qlora_paper_claims():
    """Dettmers et al. 2023: a 65B model finetuned on one 48 GB GPU (NF4 + double quantization, LoRA r=64 on
    every linear layer, paged optimizer, gradient checkpointing, 512 tokens)."""
    e = estimate(QLORA_65B)
    assert e.fits_gpu and e.peak < 48e9
    assert e.shape.lora_params == 799_539_200  # r * (in + out) over 7 linear layers x 80 blocks
    unpaged = estimate(QLORA_65B.model_copy(update={"optimizer": "adamw"}))
    assert unpaged.peak - e.peak > 6e9  # the paged optimizer is what keeps 6.4 GB of moments off the GPU


def test_accelerate_rule_is_shown_beside_and_differs_by_the_master_copy():
    e = estimate(Plan(model="llama2-7b", strategy="deepspeed-zero3", gpus_per_node=8, precision="bf16"))
    acc = e.reference["accelerate"]
    n = 6_738_415_616
    assert acc["model_size"] == 2 * n and acc["training_adam"] == 8 * n  # bf16: 4 x 2 bytes
    per_param = (e.value("parameters") + e.value("gradients") + e.value("optimizer state")) * 8 / n
    assert per_param == pytest.approx(16, rel=1e-6)  # bf16 weights 2 + grads 2 + fp32 master 4 + moments 8


def test_checkpointing_and_flash_shrink_activations_and_korthikanti_is_printed():
    base = Plan(model="llama2-7b", strategy="fsdp", seq_len=4096)
    none, flash_full = estimate(base.model_copy(update={"attention": "eager"})), estimate(
        base.model_copy(update={"activation_checkpointing": "full"}))
    assert flash_full.value("activations") < none.value("activations") / 10
    k = none.reference["korthikanti_per_layer"]
    s, h, a = 4096, 4096, 32
    assert k["none"] == s * h * (34 + 5 * a * s / h) and k["selective"] == 34 * s * h and k["full"] == 2 * s * h


def test_fit_finds_a_plan_for_70b_on_two_nodes(lab_main):
    out = lab_main("profile", "memory", "--model", "llama2-70b", "--nodes", "2", "--gpus-per-node", "8",
                   "--method", "full", "--fit")
    assert out.returncode == 0, out.stderr
    assert "68,976,648,192" in out.stdout and "does NOT fit" in out.stdout and "cheapest plan that fits" in out.stdout
    fit = cheapest_fit(Plan(model="llama2-70b", nodes=2, gpus_per_node=8, method="full"))
    assert fit is not None and fit.fits and fit.plan.world <= 16


def test_qlora_variant_prints_and_bad_plans_are_one_line_errors(lab_main):
    out = lab_main("profile", "memory", "--model", "llama2-70b", "--method", "qlora", "--strategy", "ddp",
                   "--gpus-per-node", "1", "--fit")
    assert out.returncode == 0 and "nf4" not in out.stderr.lower() and "peak per rank" in out.stdout
    bad = lab_main("profile", "memory", "--model", "llama2-70b", "--method", "qlora", "--strategy", "fsdp")
    assert bad.returncode == 2 and bad.stderr.startswith("error: QLoRA with fsdp")
    unknown = lab_main("profile", "memory", "--model", "no-such-model")
    assert unknown.returncode == 2 and "hint:" in unknown.stderr


@pytest.mark.slow
def test_predicted_trainable_counts_equal_peft(lab_home):
    """The meta-device LoRA count is PEFT's count on the real tiny model."""
    from labcli.models.causal_lm import CausalLMConfig, prepare

    for method in ("lora", "full"):
        loaded, _, params, _, _ = prepare(CausalLMConfig(model="tiny-llama", method=method, device="cpu", vocab_size=500))
        shape = model_shape("tiny-llama", method, 16, "all-linear", False, loaded.model.config.vocab_size)
        assert shape.trainable == params["trainable_params"]


@pytest.mark.slow
def test_predicted_peak_within_15_percent_of_measured_single_process(lab_home, tmp_path):
    from labcli.engine.memory_measure import measure

    plan = dict(model="tiny-llama", method="lora", strategy="single", gpus_per_node=1, seq_len=64, micro_batch=4,
                precision="fp32", accelerator="cpu", activation_checkpointing="full")
    r = measure(plan, tmp_path / "run")
    assert r["predicted_trainable"] == r["trainable_params"]
    assert abs(r["predicted_mb"] / r["measured_mb"] - 1) < 0.15, json.dumps(r)
