"""DiT: adaLN-Zero's output at initialisation is exactly 0 (diffusers' DiTTransformer2DModel's is
not), every conditioning scheme uses t and the class, patch size sets the token count and Gflops,
and guidance 1 is the conditional model alone."""

import pytest
import torch

from labcli.models.dit import CONDITIONINGS, DiT, DiTConfig, diffusers_dit, forward_gflops, sample, schedulers


def inputs(n: int = 6, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, 1, size, size), generator=g), torch.randint(0, 1000, (n,), generator=g),
            torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("patch", [2, 4])
def test_adaln_zero_output_is_exactly_zero_at_init(patch):
    torch.manual_seed(0)
    model = DiT(DiTConfig(patch=patch, d_model=32, depth=2, conditioning="adaln-zero"))
    x, t, y = inputs()
    assert torch.count_nonzero(model(x, t, y)) == 0
    # ... and each block is the identity on its input
    h = torch.randn(6, 16, 32)
    c = torch.randn(6, 32)
    assert torch.equal(model.blocks[0](h, c, None), h)


@pytest.mark.slow  # importing diffusers' models takes 10-30 s on the shared 2-core machine
def test_diffusers_dit_is_not_zero_initialised():
    """The contrast the paper's claim rests on: diffusers' DiT at the same shape starts far from 0."""
    cfg = DiTConfig(patch=4, d_model=32, depth=2, conditioning="adaln-zero")
    x, t, y = inputs()
    with torch.no_grad():
        out = diffusers_dit(cfg, seed=0)(x, timestep=t, class_labels=y).sample
    assert out.shape == x.shape and out.abs().max() > 0.5


@pytest.mark.parametrize("kind", CONDITIONINGS)
def test_every_scheme_sees_time_and_class(kind):
    torch.manual_seed(0)
    model = DiT(DiTConfig(patch=4, d_model=32, depth=2, conditioning=kind))
    if kind == "adaln-zero":  # leave the zero start so the conditioning path is visible
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.05)
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, (t + 500) % 1000, y))
    assert not torch.allclose(out, model(x, t, (y + 1) % 10))
    assert not torch.allclose(out, model(x, t, torch.full_like(y, 10)))  # the null class (CFG) is its own row


def test_patch_size_sets_tokens_and_gflops():
    small, big = (DiT(DiTConfig(patch=p, d_model=32, depth=2)) for p in (4, 2))
    assert small.pos.shape[1] == 16 and big.pos.shape[1] == 64
    ratio = forward_gflops(big) / forward_gflops(small)
    assert 3.0 < ratio < 5.0  # 4x the tokens: ~4x the linear layers, more attention
    with pytest.raises(ValueError):
        DiT(DiTConfig(patch=3))


@pytest.mark.slow  # imports diffusers (its schedulers)
def test_guidance_one_is_the_conditional_model_and_guidance_changes_samples():
    torch.manual_seed(0)
    model = DiT(DiTConfig(patch=4, d_model=32, depth=2, conditioning="adaln")).eval()
    _, ddim = schedulers()
    labels = torch.arange(4)
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    a = sample(model, ddim, labels, 1.0, 3, noise)
    ddim.set_timesteps(3)
    x = noise
    with torch.no_grad():
        for t in ddim.timesteps:
            x = ddim.step(model(x, torch.full((4,), int(t)), labels), t, x).prev_sample
    assert torch.allclose(a, x, atol=1e-6)
    assert not torch.allclose(a, sample(model, ddim, labels, 4.0, 3, noise), atol=1e-3)
