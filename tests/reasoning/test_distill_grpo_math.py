"""GRPO/DAPO pieces on hand-computed tiny batches."""

from __future__ import annotations

import math

import pytest
import torch

from labcli.recipes.distill.grpo import (
    Group,
    fill_batch,
    group_advantages,
    informative,
    policy_loss,
)


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
