"""A Diffusion Transformer (Peebles & Xie 2023) over a 1-D sequence, conditioned by adaLN-Zero.

The tokens are a sequence's steps (for a policy: the future joint positions of an action chunk),
embedded by a linear layer plus fixed sinusoidal positions. The conditioning vector c is the sum of
the diffusion timestep's embedding (sinusoidal, then an MLP) and whatever the caller embeds (an
observation). Every block layer-normalises its input without affine parameters, then shifts and
scales it and gates its residual branch with values regressed from c by a linear layer that
starts at zero ("adaLN-Zero"): at initialisation each block is the identity and the final layer
(also zero-initialised) outputs exactly zero, so training starts from the model 'predict 0'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t w_0) .. cos(t w_{h-1}), sin(t w_0) .. sin(t w_{h-1})] with w_i = max_period^(-i/h), h = dim/2."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    def __init__(self, d: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """Self-attention and an MLP, each behind adaLN (shift, scale) and a zero-initialised gate."""

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1[:, None, :] * self.attention(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None, :] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, d: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.linear = nn.Linear(d, out_dim)
        for layer in (self.ada[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT1D(nn.Module):
    """x (B, length, in_dim), t (B,), cond (B, d) -> (B, length, in_dim): noise / velocity prediction."""

    def __init__(self, in_dim: int, length: int, d: int = 128, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not a multiple of {heads} heads")
        self.inp = nn.Linear(in_dim, d)
        self.register_buffer("pos", timestep_embedding(torch.arange(length), d)[None], persistent=False)
        self.t_embed = TimestepEmbedder(d)
        self.blocks = nn.ModuleList(DiTBlock(d, heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(d, in_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.t_embed(t) + cond
        h = self.inp(x) + self.pos
        for block in self.blocks:
            h = block(h, c)
        return self.final(h, c)
