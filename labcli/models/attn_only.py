"""An attention-only transformer with TransformerLens hook points (Olsson et al. 2022's toy models).

Built on TransformerLens' `HookedRootModule`/`HookPoint` (the supported way to hook a model of
one's own since TransformerLens 4), with the hook names TransformerLens models and its
`TransformerBridge` use: `hook_embed`, `hook_pos_embed`, `blocks.{l}.hook_resid_pre`,
`blocks.{l}.attn.hook_{q,k,v,attn_scores,pattern,z}`, `blocks.{l}.hook_attn_out`,
`blocks.{l}.hook_resid_post`, and callable `ln_final` and `unembed` modules, so `labcli.interp`
and `transformer_lens.patching` work on it and on a bridged Hugging Face model alike.
A plain PyTorch model otherwise (trains on the engine at full speed: hook points are identities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule


@dataclass
class AttnOnlyConfig:
    d_vocab: int = 64
    n_ctx: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_head: int = 16
    d_model: int = 64
    n_key_value_heads: int | None = None  # read by transformer_lens.patching; None: as many as n_heads
    device: str = "cpu"  # read by transformer_lens.patching (where it puts its result)


class Attention(nn.Module):
    def __init__(self, cfg: AttnOnlyConfig):
        super().__init__()
        self.cfg = cfg
        inner = cfg.n_heads * cfg.d_head
        self.W_Q, self.W_K, self.W_V = (nn.Linear(cfg.d_model, inner) for _ in range(3))
        self.W_O = nn.Linear(inner, cfg.d_model)
        for name in ("q", "k", "v", "attn_scores", "pattern", "z"):
            setattr(self, f"hook_{name}", HookPoint())
        self.register_buffer("causal", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, d = self.cfg.n_heads, self.cfg.d_head
        q = self.hook_q(self.W_Q(x).view(b, t, h, d))  # [batch, pos, head, d_head], as TransformerLens
        k = self.hook_k(self.W_K(x).view(b, t, h, d))
        v = self.hook_v(self.W_V(x).view(b, t, h, d))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        scores = self.hook_attn_scores(scores.masked_fill(~self.causal[:t, :t], float("-inf")))
        pattern = self.hook_pattern(scores.softmax(-1))  # [batch, head, query, key]
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return self.W_O(z.reshape(b, t, h * d))


class Block(nn.Module):
    def __init__(self, cfg: AttnOnlyConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        return self.hook_resid_post(resid + self.hook_attn_out(self.attn(self.ln1(resid))))


class AttnOnlyTransformer(HookedRootModule):
    """Token + learned position embeddings, n attention-only pre-LN blocks, final LN, unembedding."""

    def __init__(self, cfg: AttnOnlyConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)
        self.setup()  # names every HookPoint for run_with_cache / run_with_hooks

    def forward(self, tokens: torch.Tensor, return_type: str | None = "logits"):
        """`return_type`: "logits", "loss" (mean next-token cross-entropy) or "both"."""
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(pos))
        for block in self.blocks:
            resid = block(resid)
        logits = self.unembed(self.ln_final(resid))
        if return_type == "logits":
            return logits
        loss = next_token_loss(logits, tokens)
        return loss if return_type == "loss" else (logits, loss)


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, per_position: bool = False) -> torch.Tensor:
    """Cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]; [batch, pos-1] when per_position."""
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    loss = loss.view(tokens.shape[0], -1)
    return loss if per_position else loss.mean()
