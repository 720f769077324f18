"""Diffusion Transformers (Peebles & Xie 2023) with the paper's four ways of conditioning on (t, class).

    model = DiT(DiTConfig(image_size=16, patch=4, conditioning="adaln-zero"))
    eps = model(x_t, t, y)          # x_t [B, C, H, W], t [B] ints in [0, 1000), y [B] in [0, classes] (classes = null)

The image is cut into patch x patch squares, each linearly embedded, plus fixed 2-D sin-cos
positions; a stack of transformer blocks; a linear decoder back to patches. The timestep gets a
sinusoidal embedding and an MLP, the class a table with one extra row, the null class that
classifier-free guidance uses. How the blocks see c = (t, y) is the paper's ablation (section 3.2):

* `in-context`: t and y are two extra tokens in the sequence (dropped before the decoder);
  standard pre-LN ViT blocks.
* `cross-attention`: after self-attention, each block cross-attends to the two tokens [t; y].
* `adaln`: LayerNorm without affine; its scale and shift are regressed from t + y, per block.
* `adaln-zero`: also a per-channel gate alpha on each residual branch, and the regressing MLP is
  initialised to zero, so every block starts as the identity. With the decoder also zero-initialised
  (as in the paper's code), the model's output at initialisation is exactly 0.

The in-context and cross-attention variants use a plain LayerNorm + linear decoder; the adaLN ones
modulate the decoder's LayerNorm as the paper does. The model predicts the noise only (the paper
also learns the variance; here sampling uses DDIM, which does not need it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Conditioning = Literal["in-context", "cross-attention", "adaln", "adaln-zero"]
CONDITIONINGS: tuple[str, ...] = ("in-context", "cross-attention", "adaln", "adaln-zero")


@dataclass
class DiTConfig:
    image_size: int = 16
    channels: int = 1
    patch: int = 4
    d_model: int = 64
    depth: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    classes: int = 10
    conditioning: Conditioning = "adaln-zero"


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in DiT/ADM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(d: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions [grid*grid, d] (half the channels for rows, half for columns)."""
    def one_d(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
        out = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([one_d(d // 2, rows), one_d(d // 2, cols)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, S, D = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(B, S, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d, kind = cfg.d_model, cfg.conditioning
        self.kind = kind
        adaptive = kind.startswith("adaln")
        self.norm1 = nn.LayerNorm(d, elementwise_affine=not adaptive, eps=1e-6)
        self.attn = Attention(d, cfg.n_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=not adaptive, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        if kind == "cross-attention":
            self.norm_x = nn.LayerNorm(d, eps=1e-6)
            self.cross = Attention(d, cfg.n_heads)
        if adaptive:
            # shift, scale (and gate, for adaLN-Zero) for the attention and the MLP branches
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, (6 if kind == "adaln-zero" else 4) * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "adaln-zero":
            sa, ca, ga, sm, cm, gm = self.modulation(c).chunk(6, dim=1)
            x = x + ga[:, None] * self.attn(modulate(self.norm1(x), sa, ca))
            return x + gm[:, None] * self.mlp(modulate(self.norm2(x), sm, cm))
        if self.kind == "adaln":
            sa, ca, sm, cm = self.modulation(c).chunk(4, dim=1)
            x = x + self.attn(modulate(self.norm1(x), sa, ca))
            return x + self.mlp(modulate(self.norm2(x), sm, cm))
        x = x + self.attn(self.norm1(x))
        if self.kind == "cross-attention":
            x = x + self.cross(self.norm_x(x), tokens)
        return x + self.mlp(self.norm2(x))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        if cfg.image_size % cfg.patch:
            raise ValueError(f"patch {cfg.patch} does not divide image size {cfg.image_size}")
        if cfg.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}")
        self.cfg = cfg
        d, p = cfg.d_model, cfg.patch
        self.grid = cfg.image_size // p
        self.patchify = nn.Conv2d(cfg.channels, d, kernel_size=p, stride=p)
        self.register_buffer("pos", sincos_2d(d, self.grid)[None], persistent=False)
        self.t_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_table = nn.Embedding(cfg.classes + 1, d)  # the last row is the null class (CFG)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        adaptive = cfg.conditioning.startswith("adaln")
        self.final_norm = nn.LayerNorm(d, elementwise_affine=not adaptive, eps=1e-6)
        if adaptive:
            self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.decoder = nn.Linear(d, p * p * cfg.channels)
        self.init_weights()

    def init_weights(self) -> None:
        """The paper's initialisation: Xavier-uniform linears, normal(0.02) tables; adaLN-Zero zeroes
        every modulation regressor and the decoder."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patchify.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patchify.bias)
        nn.init.normal_(self.y_table.weight, std=0.02)
        for layer in (self.t_mlp[0], self.t_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.cfg.conditioning == "adaln-zero":
            for block in self.blocks:
                nn.init.zeros_(block.modulation[-1].weight)
                nn.init.zeros_(block.modulation[-1].bias)
            nn.init.zeros_(self.final_modulation[-1].weight)
            nn.init.zeros_(self.final_modulation[-1].bias)
            nn.init.zeros_(self.decoder.weight)
            nn.init.zeros_(self.decoder.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos  # [B, tokens, d]
        t_emb = self.t_mlp(timestep_embedding(t, 256))
        y_emb = self.y_table(y)
        kind, tokens = self.cfg.conditioning, None
        c = t_emb + y_emb
        if kind == "in-context":
            h = torch.cat([t_emb[:, None], y_emb[:, None], h], dim=1)
        elif kind == "cross-attention":
            tokens = torch.stack([t_emb, y_emb], dim=1)
        for block in self.blocks:
            h = block(h, c, tokens)
        if kind == "in-context":
            h = h[:, 2:]
        h = self.final_norm(h)
        if kind.startswith("adaln"):
            shift, scale = self.final_modulation(c).chunk(2, dim=1)
            h = modulate(h, shift, scale)
        return self.unpatchify(self.decoder(h), B)

    def unpatchify(self, h: torch.Tensor, B: int) -> torch.Tensor:
        p, g, C = self.cfg.patch, self.grid, self.cfg.channels
        h = h.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(B, C, g * p, g * p)


def forward_gflops(model: DiT) -> float:
    """Gflops of one forward pass for one image (torch's FLOP counter; the paper's Gflops count the same way)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    device = next(model.parameters()).device
    x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device))
    return counter.get_total_flops() / 1e9 / 2  # the counter counts a multiply-add as 2; the paper as 1


def diffusers_dit(cfg: DiTConfig, seed: int = 0):
    """diffusers' DiTTransformer2DModel at the same shape (adaLN-Zero blocks, its own initialisation),
    for the zero-initialisation contrast. Its output has `channels` noise channels (learned sigma off)."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    head = cfg.d_model // cfg.n_heads
    return DiTTransformer2DModel(num_attention_heads=cfg.n_heads, attention_head_dim=head, in_channels=cfg.channels,
                                 out_channels=cfg.channels, num_layers=cfg.depth, sample_size=cfg.image_size,
                                 patch_size=cfg.patch, num_embeds_ada_norm=cfg.classes, norm_num_groups=1)


def schedulers(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """diffusers' DDPM scheduler (training: `add_noise`) and DDIM scheduler (sampling, eta = 0) on the
    paper's linear beta schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=timesteps, beta_schedule="linear", beta_start=beta_start, beta_end=beta_end,
              prediction_type="epsilon")
    return DDPMScheduler(**kw, clip_sample=False), DDIMScheduler(**kw, clip_sample=True, set_alpha_to_one=False)


@torch.no_grad()
def sample(model: DiT, scheduler, labels: torch.Tensor, guidance: float, steps: int, noise: torch.Tensor) -> torch.Tensor:
    """DDIM samples for `labels` from the starting `noise`, with classifier-free guidance
    eps = eps(x, null) + guidance * (eps(x, y) - eps(x, null)) (guidance 1: the conditional model alone)."""
    null = torch.full_like(labels, model.cfg.classes)
    scheduler.set_timesteps(steps)
    x = noise
    for t in scheduler.timesteps:
        tt = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
        if guidance == 1.0:
            eps = model(x, tt, labels)
        else:
            cond, uncond = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])).chunk(2)
            eps = uncond + guidance * (cond - uncond)
        x = scheduler.step(eps, t, x).prev_sample
    return x
