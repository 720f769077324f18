"""Denoising diffusion for action chunks: cosine noise schedule, ε- or v-prediction with MSE, DDIM with CFG.

The schedules are diffusers' (`squaredcos_cap_v2`, Nichol & Dhariwal 2021): ᾱ(t) = f(t)/f(0),
f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008, each β capped at 0.999. Training draws t uniformly,
noises x0 into x_t = √ᾱ x0 + √(1-ᾱ) ε and regresses ε (or v = √ᾱ ε - √(1-ᾱ) x0) with MSE. Sampling
runs DDIM (η = 0) on a few of the T steps; classifier-free guidance mixes the conditional and the
unconditional prediction: out = out_u + w (out_c - out_u) (w = 0: unconditional, 1: conditional).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F

Prediction = Literal["epsilon", "v_prediction"]


def cosine_alpha_bar(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """The closed form ᾱ at continuous time t in [0, 1] (f(t)/f(0))."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def make_schedulers(train_steps: int, prediction: Prediction):
    """(DDPM scheduler for training noise, DDIM scheduler for sampling), same cosine schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=train_steps, beta_schedule="squaredcos_cap_v2", prediction_type=prediction,
                  clip_sample=True, clip_sample_range=1.0)
    return DDPMScheduler(**common), DDIMScheduler(**common, set_alpha_to_one=True, steps_offset=0)


def diffusion_loss(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, scheduler,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between denoise(x_t, t) and the target of the scheduler's prediction type."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    return F.mse_loss(denoise(x_t, t), target)


@torch.no_grad()
def sample(denoise: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor], shape: tuple, scheduler, steps: int,
           guidance: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """DDIM sampling in `steps` steps. denoise(x, t, conditional) predicts with or without the condition."""
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator, device=device)
    for t in scheduler.timesteps:
        tt = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        if guidance == 1.0:
            out = denoise(x, tt, True)
        elif guidance == 0.0:
            out = denoise(x, tt, False)
        else:
            cond, uncond = denoise(x, tt, True), denoise(x, tt, False)
            out = uncond + guidance * (cond - uncond)
        x = scheduler.step(out, t, x, eta=0.0).prev_sample
    return x
