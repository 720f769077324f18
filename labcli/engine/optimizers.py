"""Optimizers by name. One table, so recipes and `lab bench optimizer` agree on what a name means."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from labcli.errors import UserError

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], float, float], torch.optim.Optimizer]


def _torch_adamw(params, lr, wd):
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _bnb(name: str) -> OptimizerFactory:
    def make(params, lr, wd):
        import bitsandbytes as bnb

        return getattr(bnb.optim, name)(params, lr=lr, weight_decay=wd)

    return make


def _lab_paged_adamw(params, lr, wd):
    from labcli.optim import PagedAdamW

    return PagedAdamW(params, lr=lr, weight_decay=wd)


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adamw": _torch_adamw,
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9),
    "bnb-adamw8bit": _bnb("AdamW8bit"),
    "bnb-paged-adamw": _bnb("PagedAdamW"),
    "bnb-paged-adamw8bit": _bnb("PagedAdamW8bit"),
    "lab-paged-adamw": _lab_paged_adamw,  # labcli.optim: state in pages, at most a byte budget resident
}


def register(name: str, factory: OptimizerFactory) -> None:
    """Add an optimizer (e.g. lab's paged AdamW) under a name usable as train.optimizer."""
    OPTIMIZERS[name] = factory


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{name}'", f"train.optimizer is one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, weight_decay)
