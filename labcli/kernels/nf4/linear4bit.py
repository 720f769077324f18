"""Route bitsandbytes `Linear4bit` forwards through lab's NF4 kernels (`model.kernels=lab-nf4`).

`use_lab_nf4(model)` swaps the class of every NF4 `bnb.nn.Linear4bit` in place for a subclass whose
forward calls `nf4_linear`: the weights, quant_state and PEFT's LoRA wrappers stay exactly as they
are (peft still sees a Linear4bit), so a QLoRA model trains its adapters and generates through the
Triton kernels. `use_bnb(model)` swaps them back.
"""

from __future__ import annotations

import bitsandbytes as bnb
import torch

from labcli.kernels.nf4.triton import nf4_linear


class LabNF4Linear4bit(bnb.nn.Linear4bit):
    """A Linear4bit whose forward runs lab's Triton NF4 kernels instead of bitsandbytes' ops."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bnb.nn.modules.fix_4bit_weight_quant_state_from_module(self)
        if not self.compute_type_is_set:
            self.set_compute_type(x)
            self.compute_type_is_set = True
        inp_dtype = x.dtype
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nf4_linear(x, self.weight, self.weight.quant_state, bias).to(inp_dtype)


def _nf4_layers(model):
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module.weight, "quant_state", None) is not None \
                and module.weight.quant_state.quant_type == "nf4":
            yield module


def use_lab_nf4(model) -> int:
    """Send every NF4 Linear4bit of `model` through lab's kernels; returns how many layers."""
    count = 0
    for module in _nf4_layers(model):
        module.__class__ = LabNF4Linear4bit
        count += 1
    return count


def use_bnb(model) -> int:
    """Undo use_lab_nf4."""
    count = 0
    for module in model.modules():
        if type(module) is LabNF4Linear4bit:
            module.__class__ = bnb.nn.Linear4bit
            count += 1
    return count
