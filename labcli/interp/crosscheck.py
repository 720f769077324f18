"""The same interventions through nnsight, to check that two ways of hooking agree with TransformerLens'."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from labcli.interp.heads import attention_patterns, logits_of, zero_heads_hooks


def nnsight():
    """nnsight without its import-time side effect: by default it mounts `.save` on every Python
    object, which broke jericho (TextWorld) later in the same process. lab's config (nnsight.yaml)
    turns that off; values are saved with nnsight.save(value)."""
    os.environ.setdefault("NNSIGHT_CONFIG", str(Path(__file__).with_name("nnsight.yaml")))
    import nnsight as module

    return module


@torch.no_grad()
def nnsight_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """[layer, batch, head, query, key], read through nnsight from the same hook-point modules."""
    nn = nnsight()
    wrapped = nn.NNsight(model)
    saved = []
    with wrapped.trace(tokens):  # nnsight runs this block's code itself: a plain loop, no comprehension
        for layer in range(model.cfg.n_layers):
            saved.append(nn.save(wrapped.blocks[layer].attn.hook_pattern.output))
    return torch.stack([torch.as_tensor(s) for s in saved])


@torch.no_grad()
def nnsight_ablated_logits(model, tokens: torch.Tensor, heads: list[tuple[int, int]]) -> torch.Tensor:
    """Logits with the heads' outputs set to zero by an nnsight intervention."""
    nn = nnsight()
    wrapped = nn.NNsight(model)
    with wrapped.trace(tokens):
        for layer, head in heads:
            wrapped.blocks[layer].attn.hook_z.output[:, :, head] = 0.0
        out = nn.save(wrapped.output)
    return logits_of(out)


@torch.no_grad()
def agreement(model, tokens: torch.Tensor, heads: list[tuple[int, int]]) -> dict:
    """Max absolute differences between TransformerLens hooks and nnsight: patterns, ablated logits."""
    tl_patterns = attention_patterns(model, tokens)
    tl_ablated = logits_of(model.run_with_hooks(tokens, fwd_hooks=zero_heads_hooks(heads)))
    return {"patterns_max_abs_diff": (tl_patterns - nnsight_patterns(model, tokens)).abs().max().item(),
            "ablated_logits_max_abs_diff": (tl_ablated - nnsight_ablated_logits(model, tokens, heads)).abs().max().item(),
            "ablation_changes_logits": (tl_ablated - logits_of(model(tokens))).abs().max().item()}
