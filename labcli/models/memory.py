"""A model's size and training activations without its weights: built on PyTorch's meta device.

`model_shape(name)` reads a config (a shipped one such as `llama2-70b`, a `tiny-*` preset, a local
folder or a cached hub id), builds the model with 1 and 2 layers on the meta device (no memory,
no weights) and extrapolates to the real depth: exact for the uniform stacks of decoder LMs, and
fast (a 70B model is never built whole). With a method, LoRA adapters are added by PEFT on the
meta model too, so trainable and quantized parameter counts are PEFT's own.

`saved_activations(shape, ...)` runs one forward pass with labels on the meta device under
`torch.autograd.graph.saved_tensors_hooks` and sums the unique storages autograd keeps for the
backward pass (parameters excluded): per layer and for the rest (embeddings, head, loss). This is
the implementation's own count (Korthikanti et al.'s hand count, done by the autograd graph). The
meta device runs eager attention, so the (s x s) attention matrices it saves are found by shape;
a fused kernel (flash / memory-efficient SDPA) keeps its output and the log-sum-exp instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from labcli.errors import UserError

CONFIGS = Path(__file__).parent / "configs"
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights, 8-bit absmax per 64, fp32 absmax per 256 blocks (double quant)


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.json"))


@dataclass(frozen=True)
class ModelShape:
    """What memory planning needs to know about a decoder LM (counts for the full depth)."""

    name: str
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    params: int  # all parameters
    embed_params: int  # input embeddings (+ learned positions)
    head_params: int  # output layer (0 when tied to the input embeddings)
    layer_params: int  # one transformer block
    linear_params: int  # weights of the blocks' Linear/Conv1D layers (what QLoRA quantizes)
    largest_linear: int  # elements of the largest such weight (QLoRA dequantizes one at a time)
    lora_params: int = 0  # adapters, for a LoRA/QLoRA shape
    lora_layer_params: int = 0
    trainable: int = 0  # what the optimizer updates
    method: str = "full"
    config: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def root_params(self) -> int:
        """Parameters outside the blocks: embeddings, final norm, head (FSDP's root unit)."""
        return self.params - self.layers * self.layer_params


def read_config(name: str, vocab_size: int = 2000):
    """A transformers config for a shipped name, a tiny-* preset, a local folder or a cached hub id."""
    import transformers

    if (CONFIGS / f"{name}.json").exists():
        data = json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))
        return transformers.AutoConfig.for_model(**data)
    if name.startswith("tiny-"):
        from labcli.models.presets import PRESETS

        if name not in PRESETS:
            raise UserError(f"unknown preset '{name}'", f"presets: {', '.join(PRESETS)}")
        task, cls_name, kwargs = PRESETS[name]
        if task != "causal-lm":
            raise UserError(f"'{name}' is a {task} model; memory plans cover decoder LMs", "use tiny-gpt2 or tiny-llama")
        return getattr(transformers, cls_name)(**kwargs, vocab_size=vocab_size)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path} has no config.json", "pass a model folder or a shipped name: " + ", ".join(shipped_configs()))
        return transformers.AutoConfig.from_pretrained(str(path))
    try:
        return transformers.AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        raise UserError(f"model '{name}' is not a shipped config, a preset, a folder or a cached hub id",
                        f"shipped: {', '.join(shipped_configs())}; or LAB_ONLINE=1 to fetch its config.json") from None


def _meta_model(config, layers: int, method: str, lora_r: int, lora_targets, lora_dropout: float = 0.0):
    import copy

    import torch
    import transformers

    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = layers
    cfg._attn_implementation = "eager"  # the meta device has no fused attention kernel
    for key in ("dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
        if hasattr(cfg, key):
            setattr(cfg, key, 0.0)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=lora_dropout,
                                                 target_modules=lora_targets, task_type="CAUSAL_LM"))
    return model


def _counts(model) -> dict:
    """Parameters by role; the blocks are the children of the model's largest ModuleList."""
    import torch
    from transformers.pytorch_utils import Conv1D

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = max((m for m in base.modules() if isinstance(m, torch.nn.ModuleList)), key=len)
    in_blocks = {id(m) for m in blocks.modules()}
    head = base.get_output_embeddings()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    embed_ids = {id(p) for m in base.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    out = {"params": 0, "linear": 0, "largest": 0, "lora": 0, "embed": 0, "head": 0}
    for name, p in model.named_parameters():
        out["params"] += p.numel()
        if "lora_" in name:
            out["lora"] += p.numel()
        elif id(p) in embed_ids:
            out["embed"] += p.numel()
        elif id(p) in head_ids:
            out["head"] += p.numel()
    for name, m in base.named_modules():
        if isinstance(m, (torch.nn.Linear, Conv1D)) and id(m) in in_blocks and "lora_" not in name:
            out["linear"] += m.weight.numel()
            out["largest"] = max(out["largest"], m.weight.numel())
    return out


@lru_cache(maxsize=32)
def model_shape(name: str, method: str = "full", lora_r: int = 16, lora_targets: str | tuple = "all-linear",
                train_embeddings: bool = False, vocab_size: int = 2000) -> ModelShape:
    """Parameter counts of `name` prepared for `method`, from 1- and 2-layer meta builds."""
    config = read_config(name, vocab_size)
    targets = list(lora_targets) if isinstance(lora_targets, tuple) else lora_targets
    one, two = (_counts(_meta_model(config, n, method, lora_r, targets)) for n in (1, 2))
    layers = config.num_hidden_layers
    grow = lambda key: one[key] + (layers - 1) * (two[key] - one[key])  # noqa: E731
    params, lora = grow("params"), grow("lora")
    embed, head = one["embed"], one["head"]
    trainable = params if method == "full" else lora + (embed + head if train_embeddings else 0)
    return ModelShape(
        name=name, model_type=config.model_type, layers=layers, hidden=config.hidden_size,
        heads=config.num_attention_heads, kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size, vocab=config.vocab_size,
        tied=bool(getattr(config, "tie_word_embeddings", False)), params=params - lora, embed_params=embed,
        head_params=head, layer_params=(two["params"] - two["lora"]) - (one["params"] - one["lora"]),
        linear_params=grow("linear"), largest_linear=one["largest"], lora_params=lora,
        lora_layer_params=two["lora"] - one["lora"], trainable=trainable, method=method, config=config.to_dict())


@dataclass(frozen=True)
class SavedActivations:
    """Bytes autograd keeps for backward in one forward pass with labels (parameters excluded)."""

    per_layer: int  # one transformer block
    per_layer_scores: int  # of which the (s x s) attention matrices (eager attention only)
    per_layer_noise: int  # of which dropout's masks, kept as float tensors as the CPU does (CUDA: 1 byte each)
    rest: int  # embeddings, final norm, head and loss
    rest_noise: int
    block_input: int  # what activation checkpointing keeps per block: its input hidden states
    logits_fp32: int  # one fp32 (seq x batch x vocab) tensor: the loss's log-softmax and its gradients
    width: int = 4  # bytes per activation element

    def total(self, layers: int, attention: str, checkpointing: str, gqa_saving: int = 0, flash_extra: int = 0,
              mask_bytes: float = 0) -> int:
        """All saved bytes for `layers` blocks under an attention kernel and a checkpointing mode.

        flash: the (s x s) matrices are replaced by the kernel's output and log-sum-exp (flash_extra),
        and K/V are kept per KV head instead of repeated per query head (gqa_saving).
        selective: Korthikanti et al.'s selective recomputation: the attention core is recomputed,
        which keeps what flash keeps. full: each block keeps only its input, and backward
        recomputes one block at a time (its saved tensors live while it is differentiated; not counted
        here: see `layer_bytes`). mask_bytes: bytes per dropout-mask element (the trace's are floats)."""
        rest = self.rest - self.rest_noise * (1 - mask_bytes / self.width)
        if checkpointing == "full":
            return int(rest + layers * self.block_input)
        layer = self.layer_bytes(attention if checkpointing != "selective" else "flash", gqa_saving, flash_extra, mask_bytes)
        return int(rest + layers * layer)

    def layer_bytes(self, attention: str, gqa_saving: int = 0, flash_extra: int = 0, mask_bytes: float | None = None) -> int:
        noise = self.per_layer_noise * (1 - (self.width if mask_bytes is None else mask_bytes) / self.width)
        if attention == "flash":
            return int(self.per_layer - self.per_layer_scores - gqa_saving + flash_extra - noise)
        return int(self.per_layer - noise)


@lru_cache(maxsize=64)
def saved_activations(name: str, seq: int, batch: int, dtype: str = "fp32", method: str = "full", lora_r: int = 16,
                      lora_targets: str | tuple = "all-linear", lora_dropout: float = 0.0, dropout: float = 0.0,
                      vocab_size: int = 2000) -> SavedActivations:
    """Count saved tensors of a 1- and a 2-layer meta model (eager attention) for one forward pass."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef

    config = read_config(name, vocab_size)
    if seq > getattr(config, "max_position_embeddings", getattr(config, "n_positions", seq)):
        raise UserError(f"seq_len={seq} is longer than the model's {config.max_position_embeddings} positions",
                        "pass a shorter --seq-len")
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    targets = list(lora_targets) if isinstance(lora_targets, tuple) else lora_targets
    results = []
    for layers in (1, 2):
        model = _meta_model(config, layers, method, lora_r, targets, lora_dropout).to(torch_dtype)
        noise = [0]

        def count_noise(module, args):  # dropout keeps a mask the size of its input
            if module.training and module.p > 0:
                noise[0] += args[0].numel() * args[0].element_size()

        for module_name, m in model.named_modules():  # the run's dropout: its masks and outputs are saved too
            if isinstance(m, torch.nn.Dropout):
                m.p = lora_dropout if "lora_dropout" in module_name else dropout
                m.register_forward_pre_hook(count_noise)
        for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
            if hasattr(model.config, key):
                setattr(model.config, key, dropout)
        model.train()
        params = {StorageWeakRef(p.untyped_storage()).cdata for p in model.parameters()}
        seen: dict[int, tuple[int, bool]] = {}

        def pack(t):
            storage = t.untyped_storage()
            key = StorageWeakRef(storage).cdata
            if key not in params and key not in seen:
                scores = t.dim() == 4 and t.shape[-1] == seq and t.shape[-2] == seq  # (batch, heads, s, s)
                seen[key] = (storage.nbytes(), scores)
            return t

        ids = torch.zeros(batch, seq, dtype=torch.long, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        results.append((sum(n for n, _ in seen.values()), sum(n for n, s in seen.values() if s), noise[0]))
    (one, one_scores, one_noise), (two, two_scores, two_noise) = results
    per_layer, scores, layer_noise = two - one, two_scores - one_scores, two_noise - one_noise
    width = torch.finfo(torch_dtype).bits // 8
    return SavedActivations(per_layer=per_layer, per_layer_scores=scores, per_layer_noise=layer_noise,
                            rest=one - per_layer, rest_noise=one_noise - layer_noise,
                            block_input=seq * batch * config.hidden_size * width,
                            logits_fp32=seq * batch * config.vocab_size * 4, width=width)
