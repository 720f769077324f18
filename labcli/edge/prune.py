"""Pruning: global L1 magnitude pruning (weights set to zero, shapes unchanged) and structured channel pruning
(whole output channels removed by torch-pruning, with every layer that depends on them resized)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from labcli.edge.nets import head

PRUNABLE = (nn.Conv2d, nn.Linear)


def magnitude(model: nn.Module, amount: float) -> nn.Module:
    """A copy whose conv/linear weights are globally L1-pruned by `amount` (a fraction). The masks stay attached
    (fine-tuning keeps pruned weights at zero); call `make_permanent` before saving."""
    out = copy.deepcopy(model)
    params = [(m, "weight") for m in out.modules() if isinstance(m, PRUNABLE)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return out


def make_permanent(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, PRUNABLE) and prune.is_pruned(m):
            prune.remove(m, "weight")
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over the conv/linear layers."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, PRUNABLE)]
    return float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))


def channels(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    """A copy with `ratio` of the output channels of every conv/linear layer removed (smallest L1 norm groups
    first, torch-pruning's dependency graph keeps concatenations, residual adds and depthwise convs
    consistent); the classifier's outputs are kept."""
    import torch_pruning as tp

    out = copy.deepcopy(model).eval()
    pruner = tp.pruner.MagnitudePruner(out, example[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[head(out)], global_pruning=False)
    pruner.step()
    return out


def channel_counts(model: nn.Module) -> list[int]:
    """Output channels/features of every conv/linear layer, in module order."""
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in model.modules()
            if isinstance(m, PRUNABLE)]
