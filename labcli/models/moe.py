"""Mixture-of-experts layers and Multi-head Latent Attention, as in DeepSeekMoE and DeepSeek-V2/V3.

- `MoEFFN`: routed experts (top-k of N by softmax affinity) plus optional always-on shared experts.
  GShard-style top-2 is `MoEFFN(n_experts=8, top_k=2)`; DeepSeekMoE's fine-grained segmentation with
  shared-expert isolation is m x more experts of 1/m the width, top-(mK - K_s) routed plus K_s shared.
  Balancing: `aux` (the expert-level balance loss alpha * sum_i f_i P_i, DeepSeekMoE eq. 12-14);
  `aux_free` (DeepSeek-V3 / Wang et al. 2024: a per-expert bias added to the affinities only to pick
  the top-k, updated outside the gradient by b_i += gamma * sign(mean load - load_i), plus V3's
  sequence-wise balance loss with a tiny alpha); `none`.
- `MLA`: low-rank joint KV compression with decoupled RoPE. The cache per token per layer is the
  latent c_KV (d_c values) plus one shared RoPE key (d_R values), instead of 2 * heads * d_head.
  `forward` is the naive form (up-project keys and values); `decode` is the weight-absorbed form
  that attends in the latent space (W_UK folded into the query, W_UV applied after attention).
- `TinyLM`: a small pre-norm decoder whose attention (MHA or MLA) and FFN (dense or MoE) are chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Balance = Literal["none", "aux", "aux_free"]


# ----------------------------------------------------------------------------- feed-forward layers


class DenseFFN(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.up, self.down = nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


@dataclass
class MoESettings:
    n_experts: int = 8  # routed experts
    top_k: int = 2  # routed experts per token
    expert_hidden: int = 256  # width of one expert
    n_shared: int = 0  # always-on shared experts (each expert_hidden wide)
    balance: Balance = "aux"
    aux_alpha: float = 0.01  # expert-level balance loss weight (balance=aux)
    bias_gamma: float = 0.001  # bias update speed (balance=aux_free)
    seq_alpha: float = 1e-4  # V3's sequence-wise balance loss weight (balance=aux_free)


class MoEFFN(nn.Module):
    """Routed experts as batched weights [E, d, h] and [E, h, d]; tokens are grouped by expert."""

    def __init__(self, d_model: int, s: MoESettings):
        super().__init__()
        self.s = s
        self.gate = nn.Linear(d_model, s.n_experts, bias=False)
        scale = 1 / math.sqrt(d_model)
        self.w_up = nn.Parameter(torch.randn(s.n_experts, d_model, s.expert_hidden) * scale)
        self.w_down = nn.Parameter(torch.randn(s.n_experts, s.expert_hidden, d_model) / math.sqrt(s.expert_hidden))
        self.shared = DenseFFN(d_model, s.n_shared * s.expert_hidden) if s.n_shared else None
        self.register_buffer("bias", torch.zeros(s.n_experts))  # aux_free: selection only, never in the gradient
        self.register_buffer("load", torch.zeros(s.n_experts))  # tokens routed to each expert, since reset_load()
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        flat = x.reshape(-1, d)
        scores = self.gate(flat).softmax(-1)  # [tokens, E] affinities
        choose = scores + self.bias if self.s.balance == "aux_free" else scores
        idx = choose.topk(self.s.top_k, dim=-1).indices  # [tokens, k]
        weights = scores.gather(-1, idx)  # gate values come from the unbiased affinities
        counts = torch.bincount(idx.flatten(), minlength=self.s.n_experts).float()
        if self.training:
            self.load += counts.detach()
        self.aux_loss = self.balance_loss(scores, idx, counts, b, t)
        out = torch.zeros_like(flat)
        order = idx.flatten().argsort()  # (token, slot) pairs grouped by expert
        for e, chunk in enumerate(order.split(counts.long().tolist())):
            if len(chunk) == 0:
                continue
            rows = chunk // self.s.top_k
            h = F.gelu(flat[rows] @ self.w_up[e]) @ self.w_down[e]
            out.index_add_(0, rows, h * weights.flatten()[chunk].unsqueeze(1))
        out = out.view(b, t, d)
        return out + self.shared(x) if self.shared is not None else out

    def balance_loss(self, scores, idx, counts, b: int, t: int) -> torch.Tensor:
        s = self.s
        if s.balance == "none" or not self.training:
            return torch.zeros((), device=scores.device)
        n, e = scores.shape[0], s.n_experts
        if s.balance == "aux":  # f_i = E/(K T) * tokens to i, P_i = mean affinity (DeepSeekMoE eq. 12-14)
            f = counts * e / (s.top_k * n)
            return s.aux_alpha * (f * scores.mean(0)).sum()
        # aux_free: V3's sequence-wise loss, the same form within each sequence, averaged
        one_hot = torch.zeros(b, t, e, device=scores.device).scatter_(-1, idx.view(b, t, -1), 1.0)
        f = one_hot.sum(1) * e / (s.top_k * t)  # [b, E]
        p = (scores / scores.sum(-1, keepdim=True)).view(b, t, e).mean(1)
        return s.seq_alpha * (f * p).sum(-1).mean()

    @torch.no_grad()
    def update_bias(self) -> None:
        """Aux-loss-free balancing, after each optimizer step: raise the bias of under-loaded experts."""
        if self.s.balance == "aux_free" and self.load.sum() > 0:
            self.bias += self.s.bias_gamma * torch.sign(self.load.mean() - self.load)

    def reset_load(self) -> None:
        self.load.zero_()


def max_violation(load: torch.Tensor) -> float:
    """MaxVio = max load / mean load - 1 (0: perfectly balanced)."""
    return (load.max() / load.mean() - 1).item() if load.sum() > 0 else float("nan")


# ----------------------------------------------------------------------------- attention


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary embedding on the last dim of x [..., t, d] (d even), rotate-half convention."""
    d = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device).float() / d)
    angles = positions.float().unsqueeze(-1) * freqs  # [t, d/2]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    half1, half2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-half2, half1], -1) * sin


class MHA(nn.Module):
    """Plain multi-head causal self-attention; its cache would hold keys and values: 2 * heads * d_head per token."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d))

    def cache_values_per_token(self) -> int:
        return 2 * self.n_heads * self.d_head


@dataclass
class MLASettings:
    n_heads: int = 4
    d_head: int = 32  # d_h: per-head width of the compressed (non-RoPE) part
    d_latent: int = 64  # d_c: the cached KV latent
    d_q_latent: int = 96  # d_c': the query latent (training-time memory only)
    d_rope: int = 16  # d_R: decoupled RoPE key/query width (one key shared by all heads)


class MLA(nn.Module):
    """Multi-head Latent Attention (DeepSeek-V2 section 2.1)."""

    def __init__(self, d_model: int, s: MLASettings):
        super().__init__()
        self.s = s
        h, dh, dr = s.n_heads, s.d_head, s.d_rope
        self.w_dq, self.q_norm = nn.Linear(d_model, s.d_q_latent, bias=False), nn.RMSNorm(s.d_q_latent)
        self.w_uq = nn.Linear(s.d_q_latent, h * dh, bias=False)
        self.w_qr = nn.Linear(s.d_q_latent, h * dr, bias=False)
        self.w_dkv, self.kv_norm = nn.Linear(d_model, s.d_latent, bias=False), nn.RMSNorm(s.d_latent)
        self.w_uk = nn.Linear(s.d_latent, h * dh, bias=False)
        self.w_uv = nn.Linear(s.d_latent, h * dh, bias=False)
        self.w_kr = nn.Linear(d_model, dr, bias=False)
        self.w_o = nn.Linear(h * dh, d_model, bias=False)
        self.scale = 1 / math.sqrt(dh + dr)

    def queries(self, x, positions):
        b, t, _ = x.shape
        c_q = self.q_norm(self.w_dq(x))
        q_c = self.w_uq(c_q).view(b, t, self.s.n_heads, self.s.d_head).transpose(1, 2)  # [b, h, t, dh]
        q_r = rope(self.w_qr(c_q).view(b, t, self.s.n_heads, self.s.d_rope).transpose(1, 2), positions)
        return q_c, q_r

    def latents(self, x, positions):
        """What the cache holds per token: c_KV [b, t, d_c] and the shared RoPE key [b, t, d_R]."""
        return self.kv_norm(self.w_dkv(x)), rope(self.w_kr(x), positions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Naive form: up-project every key and value from the latent, then ordinary attention."""
        b, t, _ = x.shape
        h, dh = self.s.n_heads, self.s.d_head
        pos = torch.arange(t, device=x.device)
        q_c, q_r = self.queries(x, pos)
        c_kv, k_r = self.latents(x, pos)
        k_c = self.w_uk(c_kv).view(b, t, h, dh).transpose(1, 2)
        v = self.w_uv(c_kv).view(b, t, h, dh).transpose(1, 2)
        q = torch.cat([q_c, q_r], -1)
        k = torch.cat([k_c, k_r.unsqueeze(1).expand(b, h, t, self.s.d_rope)], -1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.w_o(o.transpose(1, 2).reshape(b, t, h * dh))

    def decode(self, x: torch.Tensor, cache: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """Weight-absorbed form for generation: x holds the new tokens; the cache is (c_KV, k_R).
        Scores are (W_UK^T q_C) . c_KV + q_R . k_R, and W_UV is applied after attending in the latent space."""
        b, t, _ = x.shape
        h, dh, dc = self.s.n_heads, self.s.d_head, self.s.d_latent
        past = 0 if cache is None else cache[0].shape[1]
        pos = torch.arange(past, past + t, device=x.device)
        q_c, q_r = self.queries(x, pos)
        c_new, kr_new = self.latents(x, pos)
        c_kv = c_new if cache is None else torch.cat([cache[0], c_new], 1)
        k_r = kr_new if cache is None else torch.cat([cache[1], kr_new], 1)
        w_uk = self.w_uk.weight.view(h, dh, dc)
        w_uv = self.w_uv.weight.view(h, dh, dc)
        q_latent = torch.einsum("bhtd,hdc->bhtc", q_c, w_uk)  # W_UK absorbed into the query
        scores = (torch.einsum("bhtc,bsc->bhts", q_latent, c_kv) + torch.einsum("bhtr,bsr->bhts", q_r, k_r)) * self.scale
        total = c_kv.shape[1]
        mask = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(past)
        attn = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        o_latent = torch.einsum("bhts,bsc->bhtc", attn, c_kv)
        o = torch.einsum("bhtc,hdc->bhtd", o_latent, w_uv)  # W_UV applied after attention
        return self.w_o(o.transpose(1, 2).reshape(b, t, h * dh)), (c_kv, k_r)

    def cache_values_per_token(self) -> int:
        return self.s.d_latent + self.s.d_rope


def kv_cache_values(n_heads: int, d_head: int, d_latent: int, d_rope: int) -> dict:
    """Cached values per token per layer: MLA (d_c + d_R) vs MHA with the same heads (2 * n_h * d_h)."""
    return {"mla": d_latent + d_rope, "mha": 2 * n_heads * d_head}


DEEPSEEK_V2 = MLASettings(n_heads=128, d_head=128, d_latent=512, d_q_latent=1536, d_rope=64)  # d_model 5120, 60 layers


# ----------------------------------------------------------------------------- the model


@dataclass
class TinyLMConfig:
    vocab_size: int = 2000
    d_model: int = 128
    n_layers: int = 2
    n_ctx: int = 128
    attention: Literal["mha", "mla"] = "mla"
    n_heads: int = 4
    mla: MLASettings | None = None
    ffn: Literal["dense", "moe"] = "dense"
    dense_hidden: int = 512
    moe: MoESettings | None = None


class Block(nn.Module):
    def __init__(self, c: TinyLMConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.RMSNorm(c.d_model), nn.RMSNorm(c.d_model)
        self.attn = MLA(c.d_model, c.mla or MLASettings(n_heads=c.n_heads)) if c.attention == "mla" else MHA(c.d_model, c.n_heads)
        self.ffn = MoEFFN(c.d_model, c.moe or MoESettings()) if c.ffn == "moe" else DenseFFN(c.d_model, c.dense_hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, c: TinyLMConfig):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.n_ctx, c.d_model) if c.attention == "mha" else None  # MLA carries RoPE
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=0.02)  # tied: logits start near zero

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        x = self.embed(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        if labels is None:
            return logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())

    def moe_layers(self) -> list[MoEFFN]:
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoEFFN)]

    def aux_loss(self) -> torch.Tensor:
        return sum((m.aux_loss for m in self.moe_layers()), torch.zeros(()))

    def active_ffn_params(self) -> int:
        """FFN parameters a token passes through (per layer, summed): the compute-matching quantity."""
        total = 0
        for b in self.blocks:
            if isinstance(b.ffn, MoEFFN):
                s = b.ffn.s
                total += 2 * self.c.d_model * s.expert_hidden * (s.top_k + s.n_shared)
            else:
                total += 2 * self.c.d_model * self.c.dense_hidden
        return total
