"""INT8 on the CPU with torch.ao (x86/fbgemm kernels) and torchao.

* `dynamic_int8`: torch.ao `quantize_dynamic`: nn.Linear weights stored as int8, activations quantized per batch
  at run time. Convolutions stay fp32 (dynamic quantization has no conv kernels).
* `torchao_int8`: torchao `Int8DynamicActivationInt8WeightConfig` on nn.Linear (same scheme, torchao's tensor
  subclasses; convolutions stay fp32).
* `static_int8`: torch.ao FX graph mode: conv/bn/relu fused, observers calibrated on sample images, then int8
  weights and int8 activations end to end (x86 backend).
* `qat_int8`: the same graph with fake quantization during a short fine-tune (quantization-aware training), then
  converted like `static_int8`.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable

import torch
from torch import nn

BACKEND = "x86"


def dynamic_int8(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (torchao is its successor)
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def torchao_int8(model: nn.Module) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    out = copy.deepcopy(model).eval()
    quantize_(out, Int8DynamicActivationInt8WeightConfig())  # default filter: nn.Linear only
    return out


def _example(calibration: torch.Tensor) -> tuple[torch.Tensor]:
    return (calibration[:1],)


def static_int8(model: nn.Module, calibration: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Post-training static INT8: fuse, observe `calibration` images, convert."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = BACKEND
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(BACKEND), _example(calibration))
        with torch.no_grad():
            for i in range(0, len(calibration), batch_size):
                prepared(calibration[i:i + batch_size])
        return convert_fx(prepared)


def qat_int8(model: nn.Module, example: torch.Tensor, finetune: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Quantization-aware training: insert fake quantizers, `finetune(prepared)` (it trains in place and returns the
    model in eval mode), then convert to a real int8 model."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

    torch.backends.quantized.engine = BACKEND
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping(BACKEND), (example[:1],))
        prepared = finetune(prepared)
        return convert_fx(prepared.eval())


def int8_weights(model: nn.Module) -> tuple[int, int]:
    """(int8 weight tensors, float weight tensors) among the model's conv/linear weights, read from the modules
    themselves: packed torch.ao weights, torchao tensor subclasses or plain parameters."""
    int8 = floats = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if w is None or (isinstance(m, nn.Module) and not any(k in type(m).__name__ for k in ("Conv", "Linear"))):
            continue
        if inspect.ismethod(w):  # torch.ao's packed weights
            w = w()
        if not isinstance(w, torch.Tensor):
            continue
        if w.dtype in (torch.qint8, torch.int8) or _torchao_int8(w):
            int8 += 1
        elif w.is_floating_point():
            floats += 1
    return int8, floats


def _torchao_int8(w: torch.Tensor) -> bool:
    data = getattr(w, "qdata", None)
    if data is None:
        data = getattr(getattr(w, "original_weight_tensor", None), "qdata", None)
    if data is None:
        impl = getattr(getattr(w, "original_weight_tensor", w), "tensor_impl", None)
        data = getattr(impl, "int_data", None)
    return isinstance(data, torch.Tensor) and data.dtype == torch.int8
