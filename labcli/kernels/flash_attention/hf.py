"""lab's FlashAttention-2 as a transformers attention implementation.

`register()` adds it to transformers' AttentionInterface (and its mask interface) under HF_NAME;
then `model.set_attn_implementation(HF_NAME)` (what lab's `attention=lab-flash` does) routes every
attention layer of a Llama/GPT-2-style model through `attention_forward`.

Why the key is "lab-fa2" and not "lab-flash": transformers 5 treats any implementation name that
contains "flash" as a flash-attn kernel to fetch from the Hub (`is_flash_attention_requested`),
and refuses to set it. lab's own option stays `lab-flash`; this is only the name inside transformers.

Padding never reaches the kernel: the mask interface hands over the 2D padding mask (or None when
there is no padding, as for flash-attn), and a padded batch is packed into one varlen batch of
only the real tokens (cu_seqlens), then scattered back. Packed sequences (position_ids that restart,
or `cu_seq_lens_q/k` from DataCollatorWithFlattening) take the same varlen path.
"""

from __future__ import annotations

import torch

from labcli.errors import UserError
from labcli.kernels.flash_attention.triton import (
    flash_attention,
    flash_attention_varlen,
)

HF_NAME = "lab-fa2"


def register() -> str:
    """Make HF_NAME a valid `attn_implementation` in this process; returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(HF_NAME, attention_forward)
    AttentionMaskInterface.register(HF_NAME, flash_attention_mask)
    return HF_NAME


def _cu_seqlens(lengths: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))


def _packed_starts(position_ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """cu_seqlens of sequences packed in one row, told by position_ids that restart; None if not packed."""
    if position_ids is None or batch != 1 or position_ids.shape[-1] < 2:
        return None
    pos = position_ids.reshape(-1)
    if bool((pos[1:] >= pos[:-1]).all()):
        return None
    starts = (pos == pos.min()).nonzero().view(-1).to(torch.int32)
    return torch.cat([starts, torch.tensor([pos.numel()], dtype=torch.int32, device=pos.device)])


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, is_causal=None,
                      position_ids=None, cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None,
                      max_length_k=None, sliding_window=None, softcap=None, s_aux=None, **kwargs):
    """transformers' attention signature: q (B, H, Nq, D), k/v (B, Hkv, Nk, D) -> ((B, Nq, H, D), None)."""
    if dropout:
        raise UserError(f"lab-flash has no attention dropout ({type(module).__name__} asks for {dropout})",
                        "set the model's attention dropout to 0 (presets: dropout=0), or use attention=sdpa")
    if sliding_window or softcap or s_aux is not None or kwargs.get("position_bias") is not None:
        raise UserError("lab-flash supports neither sliding windows, soft-capping, attention sinks nor "
                        "position biases", "use attention=sdpa for this model")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    batch, heads, n_q, dim = query.shape
    kv_heads, n_k = key.shape[1], key.shape[2]

    if attention_mask is not None:
        if attention_mask.dim() != 2:
            raise UserError(f"lab-flash got a {attention_mask.dim()}-D attention mask; it takes a 2-D padding mask",
                            "load the model through lab (it registers lab-flash's mask function)")
        keys_kept = attention_mask[:, -n_k:].bool()
        queries_kept = keys_kept[:, -n_q:]
        q_idx = queries_kept.reshape(-1).nonzero().view(-1)
        k_idx = keys_kept.reshape(-1).nonzero().view(-1)
        q = query.transpose(1, 2).reshape(batch * n_q, heads, dim).index_select(0, q_idx)
        k = key.transpose(1, 2).reshape(batch * n_k, kv_heads, dim).index_select(0, k_idx)
        v = value.transpose(1, 2).reshape(batch * n_k, kv_heads, dim).index_select(0, k_idx)
        q_lens, k_lens = queries_kept.sum(1), keys_kept.sum(1)
        out = flash_attention_varlen(q, k, v, _cu_seqlens(q_lens), _cu_seqlens(k_lens), int(q_lens.max()),
                                     int(k_lens.max()), causal=causal, scale=scaling)
        full = out.new_zeros(batch * n_q, heads, dim).index_copy(0, q_idx, out)
        return full.view(batch, n_q, heads, dim), None

    if cu_seq_lens_q is None:
        cu_seq_lens_q = _packed_starts(position_ids, batch)
        cu_seq_lens_k = cu_seq_lens_q if n_q == n_k else None
    if cu_seq_lens_q is not None and cu_seq_lens_k is not None and batch == 1:
        cu_q, cu_k = cu_seq_lens_q.to(torch.int32), cu_seq_lens_k.to(torch.int32)
        max_q = int(max_length_q or (cu_q[1:] - cu_q[:-1]).max())
        max_k = int(max_length_k or (cu_k[1:] - cu_k[:-1]).max())
        out = flash_attention_varlen(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1),
                                     cu_q, cu_k, max_q, max_k, causal=causal, scale=scaling)
        return out.unsqueeze(0), None

    out = flash_attention(query, key, value, causal=causal, scale=scaling)
    return out.transpose(1, 2), None  # the kernel wrote (B, Nq, H, D) memory: this is contiguous
