"""labcli.models.moe: MLA's two forms agree, its cache sizes, MoE routing and balancing."""

import pytest
import torch

from labcli.models.moe import (DEEPSEEK_V2, MLA, MLASettings, MoEFFN, MoESettings, TinyLM, TinyLMConfig,
                               kv_cache_values, max_violation)


def test_mla_naive_and_weight_absorbed_forms_give_equal_outputs():
    torch.manual_seed(0)
    mla = MLA(48, MLASettings(n_heads=3, d_head=16, d_latent=24, d_q_latent=32, d_rope=8)).double()
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    first, cache = mla.decode(x[:, :4])
    second, cache = mla.decode(x[:, 4:], cache)
    assert (torch.cat([first, second], 1) - mla(x)).abs().max() < 1e-12
    assert cache[0].shape == (2, 9, 24) and cache[1].shape == (2, 9, 8)


def test_deepseek_v2_cache_is_576_values_per_token_vs_32768_for_mha():
    assert kv_cache_values(DEEPSEEK_V2.n_heads, DEEPSEEK_V2.d_head, DEEPSEEK_V2.d_latent, DEEPSEEK_V2.d_rope) == \
        {"mla": 576, "mha": 32768}
    with torch.device("meta"):  # measured from the cache a V2-shaped layer really returns, without weights
        mla = MLA(5120, DEEPSEEK_V2)
        _, cache = mla.decode(torch.empty(1, 3, 5120))
    assert sum(t.shape[-1] for t in cache) == 576 == mla.cache_values_per_token()


def test_aux_free_bias_moves_towards_underloaded_experts_and_stays_out_of_the_gradient():
    layer = MoEFFN(16, MoESettings(n_experts=4, top_k=1, expert_hidden=8, balance="aux_free", bias_gamma=0.001))
    layer.load.copy_(torch.tensor([10.0, 0.0, 5.0, 5.0]))
    layer.update_bias()
    assert layer.bias.tolist() == pytest.approx([-0.001, 0.001, 0.0, 0.0])
    assert not layer.bias.requires_grad and "bias" not in dict(layer.named_parameters())
    assert max_violation(torch.tensor([10.0, 0.0, 5.0, 5.0])) == 1.0


def test_moe_output_matches_a_per_token_loop():
    torch.manual_seed(0)
    layer = MoEFFN(8, MoESettings(n_experts=5, top_k=2, expert_hidden=4, n_shared=1, balance="none")).eval()
    x = torch.randn(1, 6, 8)
    out = layer(x)
    scores = layer.gate(x[0]).softmax(-1)
    ref = []
    for t in range(6):
        w, idx = scores[t].topk(2)
        y = sum(w[j] * (torch.nn.functional.gelu(x[0, t] @ layer.w_up[i]) @ layer.w_down[i]) for j, i in enumerate(idx))
        ref.append(y + layer.shared(x[0, t]))
    assert torch.allclose(out[0], torch.stack(ref), atol=1e-5)


def test_balance_losses_and_load_count_only_in_training():
    cfg = TinyLMConfig(vocab_size=50, d_model=16, n_layers=1, n_ctx=8, n_heads=2, ffn="moe",
                       mla=MLASettings(n_heads=2, d_head=8, d_latent=8, d_q_latent=8, d_rope=4),
                       moe=MoESettings(n_experts=4, top_k=2, expert_hidden=8, balance="aux"))
    lm = TinyLM(cfg)
    ids = torch.randint(0, 50, (2, 8))
    lm(ids)
    assert lm.aux_loss().item() > 0 and lm.moe_layers()[0].load.sum() == 2 * 8 * 2
    lm.eval()
    lm.moe_layers()[0].reset_load()
    lm(ids)
    assert lm.aux_loss().item() == 0 and lm.moe_layers()[0].load.sum() == 0
