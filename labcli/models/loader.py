"""Load a model by `tiny-*` preset, local path or hub id, optionally in 4-bit NF4 (QLoRA)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from labcli.errors import UserError

Task = Literal["causal-lm", "seq2seq"]


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    source: str  # the folder the weights came from (a preset cache, a path, or the hub cache)
    task: Task
    info: dict = field(default_factory=dict)


def auto_class(task: Task):
    """The transformers Auto class for a task: the one place lab decides seq2seq vs causal."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if task == "seq2seq" else AutoModelForCausalLM


def nf4_config(compute_dtype=None):
    """bitsandbytes NF4 with double quantization, the QLoRA recipe."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.float32)


def load_model(
    name: str,
    task: Task,
    *,
    quantize_4bit: bool = False,
    tokenizer_texts: Callable[[], list[str]] | None = None,
    vocab_size: int = 2000,
    extra_specials: tuple[str, ...] = (),
    preset_overrides: dict | None = None,
    dropout: float = 0.0,
    seed: int = 0,
    attention: str | None = None,
    kernels: str = "none",
    meta: bool = False,
) -> LoadedModel:
    """The one way lab loads models. `tiny-*` presets train their tokenizer on `tokenizer_texts()`.

    `attention`: None (transformers' choice), "sdpa", "eager", or "lab-flash" (lab's Triton
    FlashAttention-2, labcli.kernels.flash_attention). `kernels`: "none", or "lab-nf4" to run a
    4-bit model's Linear4bit layers through lab's Triton NF4 kernels (labcli.kernels.nf4). `meta`:
    build the architecture on the meta device without reading weights (FSDP's rank-0 loading: the
    weights arrive from rank 0 when the model is sharded, labcli.engine.distributed.wrap)."""
    from transformers import AutoTokenizer

    from labcli.models import presets
    from labcli.models import tokenizer as tok

    check_kernels(kernels, quantize_4bit)
    implementation = attention_implementation(attention, task) if attention is not None else None
    auto = auto_class(task)
    if name.startswith("tiny-"):
        if name not in presets.PRESETS:
            raise UserError(f"unknown preset '{name}'", f"presets: {', '.join(presets.PRESETS)}")
        preset_task = presets.PRESETS[name][0]
        if preset_task != task:
            raise UserError(f"preset '{name}' is a {preset_task} model but this recipe needs {task}",
                            f"pick one of: {', '.join(k for k, v in presets.PRESETS.items() if v[0] == task)}")
        texts = tokenizer_texts() if tokenizer_texts else tok.default_corpus()
        tokenizer = tok.train_tokenizer(texts, vocab_size, extra_specials)
        source = str(presets.materialize(name, tokenizer, preset_overrides or {}, dropout, seed))
    elif Path(name).expanduser().exists():
        source = str(Path(name).expanduser())
        if not (Path(source) / "config.json").exists():
            raise UserError(f"{source} is not a model folder (no config.json)", "pass a save_pretrained folder or RUN/model")
    else:
        source = name
    kwargs = {"quantization_config": nf4_config()} if quantize_4bit else {}
    if attention is not None:
        kwargs["attn_implementation"] = implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = _on_meta(auto, source, quantize_4bit, kwargs) if meta else auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not Path(source).exists():
            raise UserError(f"model '{name}' is not in the local cache and lab is offline",
                            "pass a local path or a tiny-* preset, or set LAB_ONLINE=1 to download") from None
        raise UserError(f"could not load model '{name}': {str(exc).splitlines()[0][:160]}",
                        "check the name or path") from None
    if quantize_4bit:
        keep_trainable_4bit_layout(model)
    info = {"name": name, "quantized": "nf4" if quantize_4bit else None,
            "attention": model.config._attn_implementation, "kernels": kernels}
    if attention == "lab-flash":
        refuse_attention_dropout(model.config)
    if kernels == "lab-nf4":
        from labcli.kernels.nf4.linear4bit import use_lab_nf4

        info["kernels"] = f"lab-nf4 ({use_lab_nf4(model)} Linear4bit layers)"
    return LoadedModel(model, tokenizer, source, task, info)


def _on_meta(auto, source: str, quantize_4bit: bool, kwargs: dict):
    """The architecture without weights, in the dtype from_pretrained would give (the config's)."""
    import torch
    from transformers import AutoConfig

    if quantize_4bit:
        raise UserError("loading on rank 0 cannot build a 4-bit (QLoRA) model without weights",
                        "set train.fsdp_load_on_rank0=false, or use method=full or lora")
    with torch.device("meta"):
        return auto.from_config(AutoConfig.from_pretrained(source), **kwargs)


ATTENTION = ("sdpa", "eager", "lab-flash")
KERNELS = ("none", "lab-nf4")


def _require_triton(what: str) -> None:
    try:
        import triton  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs Triton", "pip install 'labcli[kernels]' (Linux)") from None


def check_kernels(kernels: str, quantize_4bit: bool) -> None:
    if kernels not in KERNELS:
        raise UserError(f"unknown kernels '{kernels}'", f"one of: {', '.join(KERNELS)}")
    if kernels == "lab-nf4":
        if not quantize_4bit:
            raise UserError("kernels=lab-nf4 runs 4-bit NF4 layers, and this model is not quantized",
                            "use it with --method qlora, or drop kernels=lab-nf4")
        _require_triton("kernels=lab-nf4")


def attention_implementation(attention: str, task: Task) -> str:
    """transformers' attn_implementation for lab's `attention` choice."""
    if attention not in ATTENTION:
        raise UserError(f"unknown attention '{attention}'", f"one of: {', '.join(ATTENTION)}")
    if attention != "lab-flash":
        return attention
    if task != "causal-lm":
        raise UserError("attention=lab-flash is for decoder-only (causal-lm) models", "use attention=sdpa here")
    _require_triton("attention=lab-flash")
    from labcli.kernels.flash_attention import hf

    return hf.register()


def refuse_attention_dropout(config) -> None:
    """lab-flash has no attention dropout: say so at load time rather than at the first training step."""
    for key in ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob"):
        if float(getattr(config, key, 0.0) or 0.0) > 0:
            raise UserError(f"attention=lab-flash has no attention dropout, and this model has {key}="
                            f"{getattr(config, key)}", "set dropout=0 (tiny-* presets), or use attention=sdpa")


def keep_trainable_4bit_layout(model) -> None:
    """Stop bitsandbytes (>= 0.48) from repacking NF4 weights into its CPU inference layout.

    On CPUs with AVX512-BF16 an eval-mode forward converts the weight in place, one way; the next
    training step then runs the inference kernel and fails (or would compute in bf16). QLoRA
    alternates train and eval, so the layout must stay the trainable one.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
