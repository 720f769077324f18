"""The DiT policy's parts against closed forms: timestep embedding, cosine schedule, adaLN-Zero, CFG, chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labcli.sims.control import hermite
from labcli.sims.policy.diffusion import diffusion_loss, make_schedulers, sample
from labcli.sims.policy.dit import DiT1D, DiTBlock, timestep_embedding
from labcli.sims.policy.policies import (
    MAX_WORDS,
    DiffusionPolicy,
    MLPPolicy,
    encode_words,
)


def test_timestep_embedding_is_the_sinusoid():
    t = torch.tensor([0, 1, 37, 999])
    emb = timestep_embedding(t, 8)
    for row, step in enumerate(t.tolist()):
        for i in range(4):
            freq = 10000.0 ** (-i / 4)
            assert emb[row, i].item() == pytest.approx(math.cos(step * freq), abs=1e-5)
            assert emb[row, 4 + i].item() == pytest.approx(math.sin(step * freq), abs=1e-5)
    assert timestep_embedding(t, 7).shape == (4, 7) and (timestep_embedding(t, 7)[:, -1] == 0).all()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_cosine_schedule_matches_the_closed_form(prediction):
    """ᾱ_i = f((i+1)/T) / f(0), f(t) = cos²((t + 0.008)/1.008 · π/2) (Nichol & Dhariwal 2021); diffusers caps
    each β at 0.999, which only bites at the very last step."""
    T = 100
    train, ddim = make_schedulers(T, prediction)
    f = [math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
    expected = torch.tensor([f[i + 1] / f[0] for i in range(T)], dtype=torch.float64)
    got = train.alphas_cumprod.double()
    assert torch.allclose(got[:-1], expected[:-1], rtol=1e-4, atol=1e-7)
    assert got[-1] < 1e-4 and torch.equal(ddim.alphas_cumprod, train.alphas_cumprod)
    assert train.config.prediction_type == prediction


def test_v_prediction_target_is_the_velocity():
    train, _ = make_schedulers(100, "v_prediction")
    x0 = torch.randn(4, 8, 7)
    seen = {}

    def denoise(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)

    g = torch.Generator().manual_seed(0)
    loss = diffusion_loss(denoise, x0, train, g)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    ab = train.alphas_cumprod[seen["t"]].view(-1, 1, 1)
    assert torch.allclose(seen["x_t"], ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    assert loss.item() == pytest.approx((v**2).mean().item(), rel=1e-5)


def test_adaln_zero_outputs_zero_at_initialisation():
    torch.manual_seed(0)
    model = DiT1D(in_dim=7, length=8, d=32, depth=2, heads=4)
    x, c = torch.randn(3, 8, 7), torch.randn(3, 32)
    assert torch.equal(model(x, torch.tensor([0, 50, 99]), c), torch.zeros(3, 8, 7))
    block = DiTBlock(32, 4)
    h = torch.randn(3, 8, 32)
    assert torch.equal(block(h, c), h)  # zero gates: the residual branches add nothing
    with torch.no_grad():
        block.ada[1].bias.fill_(0.1)
    assert not torch.allclose(block(h, c), h)


def test_guidance_mixes_conditional_and_unconditional_predictions():
    _, ddim = make_schedulers(100, "epsilon")
    calls = []

    def denoise(x, t, conditional):
        calls.append(conditional)
        return torch.full_like(x, 0.3 if conditional else -0.2)

    for w, kinds in ((0.0, {False}), (1.0, {True}), (3.0, {True, False})):
        calls.clear()
        a = sample(denoise, (2, 8, 7), ddim, 5, w, torch.Generator().manual_seed(1))
        assert set(calls) == kinds and len(calls) == 5 * len(kinds)
    # DDIM is affine in the predicted noise: a constant prediction e gives the same x0 as out = u + w(c - u)
    b = sample(lambda x, t, c: torch.full_like(x, -0.2 + 3.0 * 0.5), (2, 8, 7), ddim, 5, 1.0, torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, atol=1e-6)


def obs_batch(b: int, nq: int = 7, size: int = 16) -> dict:
    return {"q": torch.randn(b, nq), "task": torch.randn(b, 10), "words": torch.tensor(encode_words(["reach the red cube"] * b)),
            "image": torch.randint(0, 255, (b, size, size, 3), dtype=torch.uint8)}


@pytest.mark.parametrize("kind", ["dit", "mlp"])
def test_policies_train_and_act_on_chunks(kind):
    torch.manual_seed(0)
    policy = DiffusionPolicy(7, 8, 16, d=32, depth=2, heads=4) if kind == "dit" else MLPPolicy(7, 8, 16, d=32, hidden=64)
    obs, offsets = obs_batch(6), 0.1 * torch.randn(6, 8, 7)
    loss = policy.loss(obs, offsets, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in policy.encoder.state.parameters())
    chunk = policy.act(obs, guidance=3.0 if kind == "dit" else 1.0, steps=4, generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (6, 8, 7) and torch.isfinite(chunk).all()
    assert encode_words(["reach the zebra"]).shape == (1, MAX_WORDS) and encode_words(["reach the zebra"])[0, 2] == 1  # unknown


def test_chunk_pairs_are_the_next_waypoints():
    from labcli.sims.policy.data import ChunkData

    q = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    demos = {"q": q, "length": np.array([5, 3]), "goal": np.zeros((2, 3), np.float32), "obstacle": np.zeros((2, 7), np.float32),
             "instruction": np.array(["reach the red cube", "go behind the ball"]), "image": np.zeros((2, 4, 4, 3), np.uint8)}
    data = ChunkData(demos, horizon=3)
    assert len(data) == 8
    obs, offsets = data.batch(torch.tensor([0, 4]))  # demo 0 at step 0, and at its last step (the chunk repeats the end)
    assert torch.equal(obs["q"][0], torch.tensor(q[0, 0])) and torch.equal(offsets[0], torch.tensor(q[0, 1:4] - q[0, 0]))
    assert torch.equal(offsets[1], torch.zeros(3, 2))
    obs, offsets = data.sample(8, torch.Generator().manual_seed(0), per_demo=4)
    assert obs["image"].shape[0] == 2 and obs["image_index"].tolist() == [0] * 4 + [1] * 4 and offsets.shape == (8, 3, 2)


def test_hermite_reproduces_a_cubic_through_its_knots():
    """Cubic Hermite interpolation is exact for a cubic given its values and derivatives at the knots."""
    dt, knots_t = 0.2, np.arange(5) * 0.2
    p = lambda t: 1 + 2 * t - 3 * t**2 + 4 * t**3
    dp = lambda t: 2 - 6 * t + 12 * t**2
    times = np.linspace(0, 0.8, 33)
    pos, vel, acc = hermite(p(knots_t)[:, None], dp(knots_t)[:, None], dt, times)
    assert np.allclose(pos[:, 0], p(times)) and np.allclose(vel[:, 0], dp(times)) and np.allclose(acc[:, 0], -6 + 24 * times)
