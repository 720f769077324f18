"""One function prepares a model for `full`, `lora` or `qlora` and reports what that costs."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from labcli.config import Section

Method = Literal["full", "lora", "qlora"]


class LoraSettings(Section):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, le=1)
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt (PEFT names)")
    train_embeddings: bool = Field(False, description="Also train the (unquantized) token embeddings: "
                                   "needed when the tokenizer is new, as with tiny-* presets")


def prepare_for_method(model, method: Method, lora: LoraSettings, task: str, seed: int = 0):
    """Return (model ready to train, report). QLoRA expects a model loaded with load_model(quantize_4bit=True)."""
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_modules,
                            task_type="SEQ_2_SEQ_LM" if task == "seq2seq" else "CAUSAL_LM")
        # Seed the adapters' initial A matrices here: the RNG state left by loading a model from a
        # folder differs from process to process, so without this one seed gave other adapters per run.
        torch.manual_seed(seed)
        model = get_peft_model(model, config)
        if lora.train_embeddings:  # embeddings are never 4-bit; tied input/output share one matrix
            for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
                if emb is not None:
                    emb.weight.requires_grad_(True)
    return model, parameter_report(model)


def parameter_report(model) -> dict:
    """Trainable and total parameters (4-bit weights counted as their logical size) and weight bytes."""
    trainable = total = weight_bytes = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit":  # packed two 4-bit values per byte
            n *= 2
        total += n
        trainable += n if p.requires_grad else 0
        weight_bytes += p.numel() * p.element_size()
    for b in model.buffers():
        weight_bytes += b.numel() * b.element_size()
    return {"trainable_params": trainable, "total_params": total, "weight_bytes": weight_bytes,
            "trainable_pct": round(100 * trainable / max(total, 1), 3)}


def merged_for_export(model, method: Method):
    """A plain full-precision model: LoRA merged; for QLoRA into the dequantized NF4 base.

    QLoRA trained its adapters against the NF4 base, so the served model is W_nf4->fp32 + B·A·scale,
    not the original fp32 weights (that would silently change what was trained).
    """
    if method == "lora":
        return model.merge_and_unload()
    if method == "full":
        return model
    import bitsandbytes as bnb
    import torch

    def dense(layer, extra=None):
        # W as the 4-bit forward really computes it: layer(I) - b = W^T. This holds whatever packing
        # the backend uses (bitsandbytes repacks NF4 weights for its CPU kernels).
        with torch.no_grad():
            eye = torch.eye(layer.in_features, device=layer.weight.device)
            w = (layer(eye).float() - (layer.bias.float() if layer.bias is not None else 0)).t().contiguous()
        out = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        out.weight = torch.nn.Parameter(w + (extra if extra is not None else 0), requires_grad=False)
        if layer.bias is not None:
            out.bias = torch.nn.Parameter(layer.bias.data.float().clone(), requires_grad=False)
        return out

    base = model.get_base_model()
    for parent in list(base.modules()):
        for name, child in list(parent.named_children()):
            if hasattr(child, "lora_A") and isinstance(getattr(child, "base_layer", None), bnb.nn.Linear4bit):
                delta = sum(child.get_delta_weight(a).float() for a in child.active_adapters)
                setattr(parent, name, dense(child.base_layer, delta))
            elif isinstance(child, bnb.nn.Linear4bit):
                setattr(parent, name, dense(child))
    for attr in ("quantization_config",):
        if hasattr(base.config, attr):
            delattr(base.config, attr)
    base.is_quantized = False
    base.hf_quantizer = None
    base.is_loaded_in_4bit = False
    return base.float()
