"""The logit lens: read each layer's residual stream out through the final LayerNorm and unembedding."""

from __future__ import annotations

import torch

from labcli.interp.heads import per_position_loss


def resid_names(n_layers: int) -> list[str]:
    """The residual stream before each block and after the last one (n_layers + 1 points)."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


@torch.no_grad()
def logit_lens(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Logits [batch, pos, vocab] at each residual point (embeddings, after block 0, ..., final)."""
    names = resid_names(model.cfg.n_layers)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return [model.unembed(model.ln_final(cache[name])) for name in names]


@torch.no_grad()
def lens_table(model, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> list[dict]:
    """Per residual point: next-token loss and top-1 accuracy over the positions in `mask`
    ([batch, pos-1] booleans over predictions; default all)."""
    rows = []
    names = ["embeddings"] + [f"after block {layer}" for layer in range(model.cfg.n_layers)]
    for name, logits in zip(names, logit_lens(model, tokens)):
        loss = per_position_loss(logits, tokens)
        correct = (logits[:, :-1].argmax(-1) == tokens[:, 1:]).float()
        keep = mask if mask is not None else torch.ones_like(loss, dtype=torch.bool)
        rows.append({"layer": name, "loss": loss[keep].mean().item(), "top1": correct[keep].mean().item()})
    return rows
