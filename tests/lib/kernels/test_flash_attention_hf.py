"""lab-flash inside transformers models: same logits as SDPA with padding, packing, GQA and a KV cache."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

pytest.importorskip("triton")

from labcli.errors import UserError  # noqa: E402
from labcli.kernels import runtime  # noqa: E402
from labcli.kernels.flash_attention import hf  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not runtime.interpreting() else "cpu"


@pytest.fixture(scope="module")
def name():
    return hf.register()


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval().to(DEVICE)


def with_lab_flash(model, name):
    other = copy.deepcopy(model)
    other.set_attn_implementation(name)
    return other


def test_llama_with_left_padding_matches_sdpa(name):
    sdpa = tiny_llama()
    ours = with_lab_flash(sdpa, name)
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    mask = torch.ones(2, 24, dtype=torch.long, device=DEVICE)
    mask[1, :7] = 0
    with torch.no_grad():
        diff = (sdpa(ids, attention_mask=mask).logits - ours(ids, attention_mask=mask).logits)[mask.bool()]
        assert diff.abs().max().item() <= 1e-5
        # with a KV cache the queries are the last keys: decoding gives the same tokens
        same = sdpa.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
        assert torch.equal(same, ours.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False))


def test_packed_sequences_attend_only_within_themselves(name):
    sdpa = tiny_llama()
    ours = with_lab_flash(sdpa, name)
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randint(0, 100, (1, n), generator=g).to(DEVICE) for n in (10, 14))
    positions = torch.cat([torch.arange(10), torch.arange(14)]).unsqueeze(0).to(DEVICE)
    with torch.no_grad():
        packed = ours(torch.cat([a, b], 1), position_ids=positions).logits
        assert (packed[:, :10] - sdpa(a).logits).abs().max().item() <= 1e-5
        assert (packed[:, 10:] - sdpa(b).logits).abs().max().item() <= 1e-5


def test_gpt2_with_layer_scaled_attention_trains_like_sdpa(name):
    torch.manual_seed(0)
    sdpa = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, attn_pdrop=0.0,
                                      resid_pdrop=0.0, embd_pdrop=0.0, scale_attn_by_inverse_layer_idx=True)).to(DEVICE)
    ours = with_lab_flash(sdpa, name)
    ids = torch.randint(0, 100, (2, 20), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    for model in (sdpa, ours):
        model(ids, labels=ids).loss.backward()
    for (key, p), q in zip(sdpa.named_parameters(), ours.parameters()):
        assert (p.grad - q.grad).abs().max().item() <= 1e-5, key


def test_attention_dropout_is_refused(name):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=64, n_layer=1, n_head=4, attn_pdrop=0.1)).to(DEVICE)
    model.set_attn_implementation(name)
    with pytest.raises(UserError, match="no attention dropout"):
        model(torch.randint(0, 100, (1, 8)).to(DEVICE))
