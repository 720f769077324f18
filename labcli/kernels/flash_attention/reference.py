"""Attention in plain PyTorch: the naive math, and the tiled online-softmax algorithm of FlashAttention-2.

Shapes: q (B, H, Nq, D), k and v (B, H, Nk, D). `causal` aligns the diagonal bottom-right (query i
sees keys j <= i + Nk - Nq), as FlashAttention >= 2.1 and a KV cache do; for Nq == Nk it is the
usual lower triangle (and the same as SDPA's is_causal).

`attention_math` materialises the (Nq, Nk) score matrix: memory grows with N^2.
`attention_tiled` never holds more than one (block_m, block_n) tile of scores: per query block it
walks the key blocks and keeps a running max `m`, a running sum `l` and an unnormalised output
`acc`, rescaling both by exp(m_old - m_new) whenever the max grows (Dao 2023, Algorithm 1). It
returns the log-sum-exp per row too, which is all the backward pass needs to rebuild the
probabilities tile by tile. The Triton kernel is this loop, with the key loop inside one program.
"""

from __future__ import annotations

import math

import torch


def causal_keep(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """(Nq, Nk) bool: True where query i may see key j (bottom-right aligned diagonal)."""
    rows = torch.arange(n_q, device=device)[:, None] + (n_k - n_q)
    return torch.arange(n_k, device=device)[None, :] <= rows


def attention_math(q, k, v, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale [+ causal mask]) v, computed in float32, returned in q's dtype."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    if causal:
        scores = scores.masked_fill(~causal_keep(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row that sees no key gives 0, as the kernel does
    return torch.matmul(probs, v.float()).to(q.dtype)


def attention_tiled(q, k, v, causal: bool = False, scale: float | None = None, block_m: int = 128,
                    block_n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention-2's forward as a PyTorch loop. Returns (output in q's dtype, lse (B, H, Nq) float32)."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    n_q, n_k = q.shape[-2], k.shape[-2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    for m0 in range(0, n_q, block_m):
        qb = q[..., m0:m0 + block_m, :].float()
        rows = qb.shape[-2]
        m = torch.full(qb.shape[:-1], float("-inf"), device=q.device)  # running row max
        l = torch.zeros(qb.shape[:-1], device=q.device)  # running sum of exp(s - m)
        acc = torch.zeros(qb.shape, device=q.device)  # running sum of exp(s - m) v
        # causal: keys beyond the last row's diagonal are never seen by this block
        stop = min(n_k, m0 + rows + n_k - n_q) if causal else n_k
        for n0 in range(0, max(stop, 0), block_n):
            s = torch.matmul(qb, k[..., n0:n0 + block_n, :].float().transpose(-2, -1)) * scale
            if causal:
                keep = causal_keep(n_q, n_k, q.device)[m0:m0 + rows, n0:n0 + block_n]
                s = s.masked_fill(~keep, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with no key yet
            p = torch.exp(s - m_safe[..., None])
            alpha = torch.exp(m - m_safe)  # rescales what was summed under the old max
            l = l * alpha + p.sum(-1)
            acc = acc * alpha[..., None] + torch.matmul(p, v[..., n0:n0 + block_n, :].float())
            m = m_new
        empty = l == 0
        out[..., m0:m0 + rows, :] = (acc / torch.where(empty, 1.0, l)[..., None]).to(q.dtype)
        lse[..., m0:m0 + rows] = torch.where(empty, float("inf"), m + torch.log(torch.where(empty, 1.0, l)))
    return out, lse
