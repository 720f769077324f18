"""Activation patching between a clean and a corrupted run (TransformerLens' `patching` module).

The metric is the logit difference at a query position between the clean answer and the
corrupted one, normalised so that 0 is the corrupted run and 1 the clean run: a patch that scores
0.8 restores 80 % of the clean behaviour.
"""

from __future__ import annotations

from typing import Callable

import torch

from labcli.interp.heads import logits_of


def logit_diff(query: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """logits -> mean over the batch of logit[answer] - logit[wrong] at each sequence's `query` position."""

    def metric(logits) -> torch.Tensor:
        rows = torch.arange(answer.shape[0])
        at = logits_of(logits)[rows, query]
        return (at[rows, answer] - at[rows, wrong]).mean()

    return metric


@torch.no_grad()
def patch(model, clean: torch.Tensor, corrupted: torch.Tensor, metric: Callable) -> dict:
    """Clean and corrupted metric, and the normalised restoration from patching each head's output
    (all positions; [layer, head]) and the residual stream before each block ([layer, pos])."""
    from transformer_lens import patching

    logits, cache = model.run_with_cache(clean)
    clean_value = metric(logits).item()
    corrupt_value = metric(model(corrupted)).item()
    span = clean_value - corrupt_value

    def normalised(value: torch.Tensor) -> torch.Tensor:
        return (value - corrupt_value) / span

    heads = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric)
    resid = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    return {"clean": clean_value, "corrupted": corrupt_value,
            "heads": normalised(heads), "resid_pre": normalised(resid)}


@torch.no_grad()
def patch_heads_together(model, clean: torch.Tensor, corrupted: torch.Tensor, heads: list[tuple[int, int]],
                         metric: Callable) -> float:
    """Normalised restoration from patching all the listed heads' outputs (their z, all positions) from
    the clean run into the corrupted run at once: a joint patch, not the sum of one-head patches."""
    from labcli.interp.heads import z_name

    names = {z_name(layer) for layer, _ in heads}
    logits, cache = model.run_with_cache(clean, names_filter=lambda name: name in names)
    clean_value, corrupt_value = metric(logits).item(), metric(model(corrupted)).item()

    def make(layer: int, head: int):
        def hook(z, hook):
            z[:, :, head] = cache[z_name(layer)][:, :, head]
            return z

        return hook

    patched = metric(model.run_with_hooks(corrupted, fwd_hooks=[(z_name(layer), make(layer, head))
                                                                 for layer, head in heads])).item()
    return (patched - corrupt_value) / (clean_value - corrupt_value)
