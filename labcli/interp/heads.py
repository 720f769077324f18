"""Per-head attention scores and head ablation, through TransformerLens hooks.

Scores work on any token sequences (induction targets come from the tokens themselves); the
half losses take masks such as `labcli.data.repeated_tokens.copy_masks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logits_of(output) -> torch.Tensor:
    """Logits from a hooked model's output (a tensor, or a Hugging Face output with .logits)."""
    return output if torch.is_tensor(output) else output.logits


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


@torch.no_grad()
def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """[layer, batch, head, query, key] attention patterns, from one run_with_cache."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    return torch.stack([cache[pattern_name(layer)] for layer in range(model.cfg.n_layers)])


def previous_token_scores(patterns: torch.Tensor) -> torch.Tensor:
    """[layer, head]: mean attention from each position (after BOS) to the one before it."""
    return patterns.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, -1))


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos]: for each position whose token occurred before, the position right after that
    token's latest earlier occurrence (where an induction head looks); -1 elsewhere."""
    b, t = tokens.shape
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)  # [batch, query, key]
    earlier = same & torch.ones(t, t, dtype=torch.bool).tril(-1)
    last = torch.where(earlier, torch.arange(t), torch.full((t,), -1)).amax(-1)
    return torch.where(last >= 0, last + 1, last)


def induction_scores(patterns: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[layer, head]: mean attention from each position whose token occurred before to the token
    that followed its latest earlier occurrence (Olsson et al.'s prefix-matching score)."""
    target = induction_targets(tokens)
    valid = target >= 0
    picked = patterns.gather(-1, target.clamp(min=0)[None, :, None, :, None].expand(*patterns.shape[:-1], 1)).squeeze(-1)
    return (picked * valid[None, :, None, :]).sum(dim=(1, -1)) / valid.sum()


def top_heads(scores: torch.Tensor, k: int = 1) -> list[tuple[int, int]]:
    """The k (layer, head) pairs with the highest scores."""
    flat = scores.flatten().topk(k).indices.tolist()
    return [divmod(i, scores.shape[1]) for i in flat]


def zero_heads_hooks(heads: list[tuple[int, int]]) -> list[tuple[str, object]]:
    """Forward hooks that zero the listed heads' outputs (their z, before the output projection)."""

    def make(head: int):
        def hook(z, hook):
            z[:, :, head] = 0.0
            return z

        return hook

    return [(z_name(layer), make(head)) for layer, head in heads]


def per_position_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos-1] next-token cross-entropy (entry q: predicting token q+1 from position q)."""
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    return loss.view(tokens.shape[0], -1)


def half_losses(per_position: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> dict:
    """Mean loss on the first copy's predictions (unpredictable), on the repeat's (predictable by
    copying; masks from labcli.data.repeated_tokens.copy_masks), and the in-context gain between."""
    first_loss, second_loss = per_position[first].mean().item(), per_position[second].mean().item()
    return {"first_half_loss": first_loss, "second_half_loss": second_loss, "in_context_gain": first_loss - second_loss}


@torch.no_grad()
def ablation(model, tokens: torch.Tensor, heads: list[tuple[int, int]], first: torch.Tensor, second: torch.Tensor) -> dict:
    """Half losses with the given heads zero-ablated, and the share of the in-context gain it removes."""
    clean = half_losses(per_position_loss(logits_of(model(tokens)), tokens), first, second)
    logits = logits_of(model.run_with_hooks(tokens, fwd_hooks=zero_heads_hooks(heads)))
    ablated = half_losses(per_position_loss(logits, tokens), first, second)
    removed = 1 - ablated["in_context_gain"] / clean["in_context_gain"] if clean["in_context_gain"] else float("nan")
    return {"clean": clean, "ablated": ablated, "gain_removed": removed}
