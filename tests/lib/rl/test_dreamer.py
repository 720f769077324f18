"""DreamerV3's exact pieces: symlog, two-hot, unimix, KL balancing, return normalisation, λ-returns,
the train ratio, and that one update runs on a real CartPole replay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labcli.rl import dreamer

BINS = dreamer.bins_of(255).double()


def test_symlog_symexp_invert_and_compress():
    x = torch.tensor([-1e6, -10.0, -1.0, 0.0, 0.5, 1.0, 1e6], dtype=torch.float64)
    assert torch.allclose(dreamer.symexp(dreamer.symlog(x)), x, rtol=1e-12)
    assert dreamer.symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0)
    assert dreamer.symlog(torch.tensor(-(math.e - 1))).item() == pytest.approx(-1.0)


def test_bins_are_255_evenly_spaced_over_symlog_range():
    bins = dreamer.bins_of(255)
    assert len(bins) == 255 and bins[0] == -20 and bins[-1] == 20 and abs(bins[127]) < 1e-6
    assert torch.allclose(bins.diff(), torch.full((254,), 40 / 254), atol=1e-5)


def test_two_hot_puts_weight_on_two_neighbours_and_decodes_exactly():
    x = torch.tensor([0.0, 0.1, -3.3, 19.99, 7.0], dtype=torch.float64)
    code = dreamer.two_hot(x, BINS)
    assert torch.allclose(code.sum(-1), torch.ones(5, dtype=torch.float64))
    assert ((code > 0).sum(-1) <= 2).all()
    assert torch.allclose((code * BINS).sum(-1), x, atol=1e-12)
    exact = dreamer.two_hot(BINS[[10, 200]], BINS)  # a value on a bin is one-hot
    assert exact[0, 10] == 1 and exact[1, 200] == 1 and exact.sum() == 2


def test_two_hot_clips_outside_the_bins():
    code = dreamer.two_hot(torch.tensor([50.0, -50.0], dtype=torch.float64), BINS)
    assert code[0, -1] == 1 and code[1, 0] == 1


def test_two_hot_head_mean_is_symexp_of_expected_bin():
    target = torch.tensor([123.0, -0.25], dtype=torch.float64)
    logits = torch.log(dreamer.two_hot(dreamer.symlog(target), BINS).clamp_min(1e-30))
    assert torch.allclose(dreamer.two_hot_mean(logits, BINS), target, rtol=1e-9)
    # the loss is the cross-entropy against that code: minimal (its entropy) at those logits
    loss = dreamer.two_hot_loss(logits, target, BINS)
    other = dreamer.two_hot_loss(torch.zeros(2, 255, dtype=torch.float64), target, BINS)
    assert (loss < other).all()


def test_zero_initialised_heads_predict_zero():
    args = dreamer.DreamerArgs(deter=16, units=16, groups=2, classes=4)
    agent = dreamer.Dreamer(4, 2, args)
    feat = torch.randn(3, 16 + 8)
    assert torch.allclose(dreamer.two_hot_mean(agent.critic(feat), agent.wm.bins), torch.zeros(3), atol=1e-6)
    assert torch.allclose(dreamer.two_hot_mean(agent.wm.reward(feat), agent.wm.bins), torch.zeros(3), atol=1e-6)


def test_unimix_is_one_percent_uniform():
    raw = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    probs = dreamer.unimix_logits(raw, 0.01).exp()
    assert probs[0, 1].item() == pytest.approx(0.01 / 4)
    assert probs[0, 0].item() == pytest.approx(0.99 + 0.01 / 4)
    assert probs.sum().item() == pytest.approx(1.0)


def test_kl_balance_weights_free_nats_and_stop_gradients():
    post = torch.tensor([[[0.0, -5.0]]]).log_softmax(-1).requires_grad_()
    prior = torch.tensor([[[-5.0, 0.0]]]).log_softmax(-1).requires_grad_()
    loss, dyn, rep = dreamer.kl_balance(post, prior)
    kl = dreamer.categorical_kl(post, prior)
    assert kl.item() > 1 and dyn.item() == pytest.approx(kl.item()) and rep.item() == pytest.approx(kl.item())
    assert loss.item() == pytest.approx(0.6 * kl.item())
    # the prior's gradient comes only from the dyn term (0.5), the posterior's only from rep (0.1)
    loss.sum().backward()
    g_prior, g_post = prior.grad.clone(), post.grad.clone()
    p2, q2 = post.detach().clone().requires_grad_(), prior.detach().clone().requires_grad_()
    dreamer.categorical_kl(p2, q2).sum().backward()
    assert torch.allclose(g_prior, 0.5 * q2.grad) and torch.allclose(g_post, 0.1 * p2.grad)


def test_kl_below_one_free_nat_gives_no_gradient():
    post = torch.tensor([[[0.0, 0.1]]]).log_softmax(-1).requires_grad_()
    prior = torch.tensor([[[0.1, 0.0]]]).log_softmax(-1).requires_grad_()
    loss, dyn, _ = dreamer.kl_balance(post, prior)
    assert dyn.item() < 1 and loss.item() == pytest.approx(0.6)
    loss.sum().backward()
    assert post.grad.abs().max() == 0 and prior.grad.abs().max() == 0


def test_return_norm_is_ema_percentile_range_floored_at_one():
    norm = dreamer.ReturnNorm(0.99)
    returns = torch.linspace(0, 100, 1001)  # 5th..95th percentile range 90
    for k in range(1, 51):
        norm.update(returns)
        assert norm.scale == pytest.approx(max(1.0, 90 * (1 - 0.99 ** k)), rel=1e-5)
    small = dreamer.ReturnNorm(0.0)
    small.update(torch.linspace(0, 0.5, 101))
    assert small.scale == 1.0  # small returns are never scaled up


def test_lambda_returns_match_the_recursion():
    rewards, conts = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])
    values = torch.tensor([0.0, 10.0, 20.0])
    g, lam = 0.9, 0.5
    r1 = 2.0 + g * 0.0 * ((1 - lam) * 20 + lam * 20)
    r0 = 1.0 + g * 1.0 * ((1 - lam) * 10 + lam * r1)
    assert torch.allclose(dreamer.lambda_returns(rewards, conts, values, g, lam), torch.tensor([r0, r1]))
    # λ = 1 gives the discounted Monte-Carlo return bootstrapped at the horizon
    assert torch.allclose(dreamer.lambda_returns(torch.ones(3), torch.ones(3), torch.zeros(4) + 5, 0.5, 1.0),
                          torch.tensor([1 + 0.5 + 0.25 + 0.125 * 5, 1 + 0.5 + 0.25 * 5, 1 + 0.5 * 5]))


def test_train_ratio_sets_the_number_of_updates():
    args = dreamer.DreamerArgs(batch_size=16, seq_len=32, train_ratio=64, prefill=1000)
    assert dreamer.updates_due(1000, args) == 0
    assert dreamer.updates_due(1000 + 8, args) == 1  # 16 * 32 replayed steps per update = 8 env steps at ratio 64
    assert dreamer.updates_due(21_000, args) == 20_000 * 64 // 512
    assert dreamer.updates_due(21_000, args.model_copy(update={"train_ratio": 512})) == 20_000


@pytest.mark.slow
def test_short_training_makes_the_updates_its_ratio_asks_for():
    args = dreamer.DreamerArgs(deter=16, units=16, groups=2, classes=4, batch_size=2, seq_len=8, train_ratio=16, prefill=40,
                               horizon=3)
    agent, info = dreamer.train("CartPole-v1", 60, 0, args)
    assert info["updates"] == dreamer.updates_due(60, args) == 20
    assert info["episodes"] and all(r["step"] <= 60 for r in info["episodes"])
    returns = dreamer.evaluate(agent, "CartPole-v1", 1, 0)
    assert len(returns) == 1 and 1 <= returns[0] <= 500


def test_replay_sequences_keep_episode_boundaries():
    replay = dreamer.Replay(10, 2, 2)
    for i in range(10):
        replay.add(np.full(2, i), np.zeros(2), float(i), 1.0, i % 4 == 0)
    batch = replay.sample(3, 5, np.random.default_rng(0), "cpu")
    assert batch["obs"].shape == (3, 5, 2)
    assert torch.equal(batch["is_first"], (batch["obs"][..., 0] % 4 == 0).float())
    assert torch.equal(batch["reward"], batch["obs"][..., 0])
