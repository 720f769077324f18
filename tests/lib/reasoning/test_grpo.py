"""GRPO/DAPO pieces on hand-computed tiny batches, and the update on a tiny model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from labcli.engine.loop import Loop
from labcli.reasoning import grpo
from labcli.reasoning.grpo import Group, fill_batch, group_advantages, informative, policy_loss


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(rewards, group_size=4, eps=1e-12)
    # group 1: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 * sqrt(3); group 2: all equal -> 0
    s = 0.5 * math.sqrt(3)
    assert adv.tolist() == pytest.approx([s, -s, -s, s, 0, 0, 0, 0])
    assert group_advantages(rewards, 4, scale=False).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_policy_loss_by_hand_token_level():
    # two sequences, three token slots; the last token of sequence 2 is padding
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.5], [0.5, 1.0, 0.5]]))  # ratios [2, 1, 1] and [1, 0.5, 1]
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, stats = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    # seq 1 (A=+1): -min(r, clip(r)) = [-1.2, -1, -1]; seq 2 (A=-1): -min(-r, -clip(r)) = [1, 0.8, (pad)]
    assert float(loss) == pytest.approx((-1.2 - 1 - 1 + 1 + 0.8) / 5)
    assert stats["clip_tokens"] == 2 and stats["tokens"] == 5  # ratio 2 with A>0 and ratio 0.5 with A<0


def test_policy_loss_sequence_level_and_kl():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    adv = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, 0.2, 0.2, norm="sequence")
    assert float(loss) == pytest.approx((-1.0 + 0.0) / 2)  # per-sequence means, then the mean
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5]]))
    loss_kl, stats = policy_loss(logp, logp.detach(), adv, mask, 0.2, 0.2, beta=0.1, ref_logp=ref)
    k3 = 0.5 - math.log(0.5) - 1  # exp(d) - d - 1 with d = log(0.25 / 0.5)
    assert stats["kl_sum"] == pytest.approx(k3)
    assert float(loss_kl) == pytest.approx((-1 - 1 + 0.1 * k3) / 3)


def test_policy_gradient_points_towards_positive_advantage():
    logits = torch.zeros(1, 2, requires_grad=True)
    logp = logits.log_softmax(-1)[:, :1]  # log p of token 0
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.2)
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # descent raises p(token 0)


def test_clip_higher_uses_asymmetric_bounds():
    logp = torch.zeros(4, 1)
    ratios = torch.tensor([1.25, 1.25, 0.75, 0.85])
    old = -torch.log(ratios).unsqueeze(1)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    mask = torch.ones(4, 1)
    sym, s_sym = policy_loss(logp[:1], old[:1], adv[:1], mask[:1], 0.2, 0.2)
    high, s_high = policy_loss(logp[:1], old[:1], adv[:1], mask[:1], 0.2, 0.28)
    assert float(sym) == pytest.approx(-1.2) and s_sym["clip_tokens"] == 1  # 1.25 clipped at 1 + 0.2
    assert float(high) == pytest.approx(-1.25) and s_high["clip_tokens"] == 0  # 1.25 < 1 + 0.28: not clipped
    low, s_low = policy_loss(logp[2:], old[2:], adv[2:], mask[2:], 0.2, 0.28)
    # A<0: ratio 0.75 is clipped at 1 - 0.2 = 0.8 -> 0.8; 0.85 passes -> 0.85
    assert float(low) == pytest.approx((0.8 + 0.85) / 2) and s_low["clip_tokens"] == 1


def _group(i, correct):
    c = torch.tensor(correct, dtype=torch.float)
    return Group(i, c + 0.1, c, chunk=0, lo=0)


def test_dynamic_sampling_drops_all_same_groups_and_refills():
    rounds = [
        [_group(0, [1, 1, 1, 1]), _group(1, [0, 1, 0, 0]), _group(2, [0, 0, 0, 0])],  # 1 informative
        [_group(3, [0, 0, 0, 0]), _group(4, [1, 0, 1, 1])],                         # +1
        [_group(5, [1, 1, 0, 0]), _group(6, [0, 1, 1, 1]), _group(7, [1, 0, 0, 0])],  # +3 (only 1 needed)
    ]
    calls = []

    def draw(k):
        calls.append(k)
        return rounds[k]

    kept, drawn, used = fill_batch(draw, n_groups=3, dynamic=True, max_rounds=5)
    assert [g.prompt_index for g in kept] == [1, 4, 5]
    assert used == 3 and calls == [0, 1, 2] and len(drawn) == 8
    assert all(informative(g) for g in kept)


def test_without_dynamic_sampling_one_round_is_used_as_is():
    kept, drawn, used = fill_batch(lambda k: [_group(0, [1, 1]), _group(1, [0, 1])], 2, dynamic=False, max_rounds=5)
    assert [g.prompt_index for g in kept] == [0, 1] and used == 1


def test_dynamic_sampling_stops_after_max_rounds():
    kept, drawn, used = fill_batch(lambda k: [_group(k, [0, 0])], 4, dynamic=True, max_rounds=3)
    assert kept == [] and used == 3 and len(drawn) == 3


# ---------------------------------------------------------------- the update on a tiny model (with dropout)


@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_update_with_sorted_trimmed_micro_batches_equals_one_full_batch(tiny_dropout, norm):
    """lab's update sorts completions by length and trims each micro-batch's padding, at temperature
    T and with dropout off; one SGD step must move the weights exactly as the plain loss over the
    whole padded batch does (in eval mode: with dropout on, neither side would be reproducible)."""
    from labcli.reasoning import lm

    model, tok, prompts = tiny_dropout
    torch.manual_seed(0)
    out = lm.generate(model, tok, prompts[:4], max_new_tokens=12, num_return=4, sample=True, temperature=0.7)
    out.completion_mask[1, 3:] = 0  # uneven lengths, as real completions that stop at EOS have
    out.completion_mask[6, 5:] = 0
    out.attention_mask[:, out.prompt_len:] = out.completion_mask
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1, 0.5, 0, 0, 0, 1, 0, 0.1, 0])
    groups = [Group(k, rewards[4 * k:4 * k + 4], (rewards[4 * k:4 * k + 4] > 0.5).float(), 0, 4 * k) for k in range(4)]
    settings = grpo.GRPOSettings(group_size=4, loss_norm=norm, temperature=0.7)
    tc = grpo.GRPOTrainConfig(micro_batch_size=3, lr=1.0, max_grad_norm=0.0)

    mine = copy.deepcopy(model).train()
    seen_modes = []
    mine.register_forward_pre_hook(lambda m, args: seen_modes.append(m.training))
    params = [p for p in mine.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1.0)
    loop = Loop(mine, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), params, tc, torch.device("cpu"))
    grpo.update(settings, tc, loop, None, [out], groups)
    assert seen_modes and not any(seen_modes), "the update runs with dropout off"

    ref = copy.deepcopy(model).eval()
    logp, _ = lm.token_logprobs(ref, out.sequences, out.attention_mask, out.prompt_len, temperature=0.7)
    loss, _ = policy_loss(logp, logp.detach(), group_advantages(rewards, 4), out.completion_mask, 0.2, 0.2, norm=norm)
    loss.backward()
    for (name, p), q in zip(ref.named_parameters(), mine.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.detach() - p.grad, q.detach(), rtol=1e-5, atol=1e-6, msg=name)
