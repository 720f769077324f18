"""LoRA under FSDP is exported from the gathered state (the modules hold shards): the merge must be
PEFT's own merge_and_unload, key for key."""

from __future__ import annotations

import pytest
import torch

from labcli.engine.export import merged_lora_state


@pytest.mark.slow  # importing peft costs seconds of CPU
def test_merged_lora_state_is_peft_merge_and_unload():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the update non-trivial
            torch.nn.init.normal_(p)
    q_before = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj.base_layer").weight.clone()
    merged = merged_lora_state(model, {k: v.clone() for k, v in model.state_dict().items()})
    expected = model.merge_and_unload().state_dict()
    assert set(merged) == set(expected)
    for key, tensor in expected.items():
        assert torch.allclose(merged[key], tensor, atol=1e-6), key
    assert not torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], q_before, atol=1e-3)  # B·A is in it
