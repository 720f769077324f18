"""lab's KV-cached sampler draws exactly what HF `generate` draws, and its masks are right."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny(lab_home):
    from labcli.models import load_model
    from labcli.reasoning import rewards
    from labcli.reasoning.tasks import load_task

    examples = load_task("arith", "train", n=200)
    texts = [rewards.prompt(e) + rewards.target(e, True) for e in examples]
    loaded = load_model("tiny-llama", "causal-lm", tokenizer_texts=lambda: texts, vocab_size=300, seed=0)
    return loaded.model, loaded.tokenizer, [rewards.prompt(e) for e in examples[:5]]


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


@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_update_with_sorted_trimmed_micro_batches_equals_one_full_batch(tiny, norm):
    """lab's update sorts completions by length and trims each micro-batch's padding; one SGD step
    must move the weights exactly as the plain loss over the whole padded batch does."""
    import copy

    from labcli.recipes.distill import grpo, lm

    model, tok, prompts = tiny
    torch.manual_seed(0)
    out = lm.generate(model, tok, prompts[:4], max_new_tokens=12, num_return=4, sample=True)
    out.completion_mask[1, 3:] = 0  # uneven lengths, as real completions that stop at EOS have
    out.completion_mask[6, 5:] = 0
    out.attention_mask[:, out.prompt_len:] = out.completion_mask
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1, 0.5, 0, 0, 0, 1, 0, 0.1, 0])
    groups = [grpo.Group(k, rewards[4 * k:4 * k + 4], (rewards[4 * k:4 * k + 4] > 0.5).float(), 0, 4 * k) for k in range(4)]
    cfg = grpo.Config(group_size=4, loss_norm=norm,
                      train={"micro_batch_size": 3, "lr": 1.0, "optimizer": "sgd", "max_grad_norm": 0.0})

    mine = copy.deepcopy(model)
    params = [p for p in mine.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1.0)
    grpo.update(cfg, mine, None, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), params, [out], groups)

    ref = copy.deepcopy(model)
    ref.train()
    logp, _ = lm.token_logprobs(ref, out.sequences, out.attention_mask, out.prompt_len)
    adv = grpo.group_advantages(rewards, 4)
    loss, _ = grpo.policy_loss(logp, logp.detach(), adv, out.completion_mask, 0.2, 0.2, norm=norm)
    loss.backward()
    for (name, p), q in zip(ref.named_parameters(), mine.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.detach() - p.grad, q.detach(), rtol=1e-5, atol=1e-6, msg=name)
