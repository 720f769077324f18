"""lab's KV-cached sampler draws exactly what HF `generate` draws, its masks are right, and the
per-token log-probs are those of the distribution it samples from (logits / temperature)."""

from __future__ import annotations

import pytest
import torch


def _hf(model, tok, prompts, n, **kwargs):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model.generate(**enc, max_new_tokens=12, num_return_sequences=n, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, **kwargs)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_matches_hf_generate_token_for_token(tiny, temperature):
    from labcli.reasoning import lm

    model, tok, prompts = tiny
    torch.manual_seed(3)
    ref = _hf(model, tok, prompts, 4, do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    torch.manual_seed(3)
    out = lm.generate(model, tok, prompts, max_new_tokens=12, num_return=4, sample=True, temperature=temperature)
    assert torch.equal(out.sequences, ref)
    assert out.sequences.shape[0] == 20 and len(out.texts) == 20


def test_greedy_matches_hf_generate_and_masks_stop_at_eos(tiny):
    from labcli.reasoning import lm

    model, tok, prompts = tiny
    out = lm.generate(model, tok, prompts, max_new_tokens=12)
    assert torch.equal(out.sequences, _hf(model, tok, prompts, 1, do_sample=False))
    comp = out.sequences[:, out.prompt_len:]
    for row, mask, truncated in zip(comp, out.completion_mask, out.truncated):
        eos = (row == tok.eos_token_id).nonzero()
        n = int(eos[0]) + 1 if len(eos) else len(row)  # tokens up to and including the first EOS
        assert mask.tolist() == [1] * n + [0] * (len(row) - n)
        assert truncated == (len(eos) == 0)
    assert torch.equal(out.attention_mask[:, out.prompt_len:], out.completion_mask)


def test_token_logprobs_are_those_of_the_tempered_distribution(tiny):
    """Each completion token's log-prob and entropy equal log_softmax(logits / T) at its position,
    computed here step by step from a plain full forward."""
    from labcli.reasoning import lm

    model, tok, prompts = tiny
    torch.manual_seed(0)
    out = lm.generate(model, tok, prompts[:2], max_new_tokens=6, num_return=2, sample=True, temperature=0.5)
    logp, entropy = lm.token_logprobs(model, out.sequences, out.attention_mask, out.prompt_len, with_entropy=True,
                                      temperature=0.5)
    position = (out.attention_mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=out.sequences, attention_mask=out.attention_mask, position_ids=position).logits.float()
    dist = (logits[:, out.prompt_len - 1:-1] / 0.5).log_softmax(-1)
    expected = dist.gather(-1, out.sequences[:, out.prompt_len:, None]).squeeze(-1)
    torch.testing.assert_close(logp.detach(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, -(dist.exp() * dist).sum(-1), rtol=1e-5, atol=1e-5)
    plain, _ = lm.token_logprobs(model, out.sequences, out.attention_mask, out.prompt_len)
    assert not torch.allclose(plain, logp)  # T matters: at T=1 the same tokens are less likely


def test_sft_example_masks_the_prompt(tiny):
    from labcli.reasoning import lm

    _, tok, _ = tiny
    ex = lm.sft_example(tok, "Question: 1+1?\nAnswer:", " The answer is 2.", max_len=64)
    n_prompt = len(tok("Question: 1+1?\nAnswer:", add_special_tokens=False)["input_ids"])
    assert ex["labels"][:n_prompt].tolist() == [-100] * n_prompt
    assert ex["labels"][n_prompt:].tolist() == ex["input_ids"][n_prompt:].tolist()
    assert ex["input_ids"][-1] == tok.eos_token_id
