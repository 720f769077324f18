"""Predict a training run's peak memory per rank before renting the GPUs: `estimate(plan)`.

Per rank (bytes), with N = nodes x GPUs and each strategy's sharding of parameters / gradients /
optimizer state (single, ddp: 1/1/1; deepspeed-zero2: 1/N/N; fsdp, deepspeed-zero3: N/N/N):

- parameters: trainable ones in the weights' dtype (LoRA adapters in fp32, as PEFT keeps them),
  frozen ones in the weights' dtype, QLoRA's quantized block weights in NF4 with double quantization
  (0.516 bytes per parameter);
- gradients: one per trainable parameter, in its dtype;
- optimizer state: AdamW two moments in the parameters' dtype (DeepSpeed with bf16 keeps an fp32
  master copy and fp32 moments: 12 bytes), SGD one, 8-bit AdamW 2 bytes; lab's paged AdamW keeps at
  most its page budget on the device and the rest on the host. So full training in mixed precision
  costs 16 bytes per parameter before any activation (fp32 weights 4 + gradients 4 + moments 8, or
  bf16 weights 2 + gradients 2 + master 4 + moments 8), where accelerate's `estimate-memory` rule
  (4 x the model's size in its dtype) gives 8 for a bf16 model: its rule has no master copy and
  keeps the moments in bf16, and counts no activations, buffers or CUDA context;
- activations: what autograd saves in one forward pass, counted on the meta device for this
  architecture (labcli.models.memory.saved_activations), with the attention kernel (eager keeps the
  s x s matrices; flash keeps output and log-sum-exp) and checkpointing (full: block inputs plus one
  block recomputed; selective: attention recomputed). Korthikanti et al. (2022)'s s*b*h*(34 + 5*a*s/h)
  per layer (16-bit, GPT-3 blocks with dropout) is printed beside it for reference;
- temporary buffers: the fp32 log-softmax gradients of the loss (2 x s*b*vocab*4), DDP's gradient
  buckets, FSDP's all-gathered units (the root unit, the current and the prefetched block, one
  block's unsharded gradients), ZeRO-2's reduce buckets, the optimizer step's scratch (torch AdamW's
  foreach on CUDA: one state-sized tensor; the per-parameter loop on the CPU: the largest
  parameter), bf16 autocast copies of fp32 weights kept for backward, QLoRA's dequantized weight;
- the CUDA context (0.75 GiB: context, cuBLAS workspace, NCCL; 0 on the CPU).

The peak is parameters + optimizer state + persistent buffers + the largest of three moments:
the start of backward (activations + loss gradients + gathered units), the end of backward
(gradients + gathered units) and the optimizer step (gradients + step scratch); gradients from
earlier micro-batches are there at the first moment too when accumulating.

Host RAM per node: loading the weights once on rank 0 (then broadcast, or sharded by FSDP) versus
every rank loading its own copy, plus what is offloaded (parameters, gradients, optimizer state,
paged optimizer pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from labcli.config import Section
from labcli.errors import UserError

GiB = 2**30
Strategy = Literal["single", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
CUDA_CONTEXT = int(0.75 * GiB)
PAGE_BUDGET = 64 * 2**20  # lab's paged AdamW: state bytes resident at once (labcli.optim.PagedAdamW)
ZERO_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)


class Plan(Section):
    """A training plan: model, method, parallelism, sizes, memory techniques."""

    model: str = Field("llama2-7b", description="Shipped config (llama2-70b, llama2-7b, mistral-7b, llama-65b), "
                                                "tiny-* preset, local folder or cached hub id")
    method: Literal["full", "lora", "qlora"] = Field("full", description="full, lora or qlora")
    strategy: Strategy = Field("fsdp", description="single, ddp, fsdp, deepspeed-zero2 or deepspeed-zero3")
    nodes: int = Field(1, ge=1, description="Machines")
    gpus_per_node: int = Field(8, ge=1, description="Processes (GPUs) per machine")
    gpu_memory_gb: float = Field(80.0, gt=0, description="Memory of one GPU, GB (10^9 bytes)")
    host_memory_gb: float = Field(1000.0, gt=0, description="RAM of one node, GB (for loading and offloaded state)")
    accelerator: Literal["cuda", "cpu"] = Field("cuda", description="cuda, or cpu (no CUDA context; the CPU optimizer loop)")
    precision: Literal["fp32", "bf16"] = Field("bf16", description="Activations: fp32, or bf16 autocast")
    weights: Literal["fp32", "bf16"] = Field("fp32", description="Weights' storage dtype (lab loads fp32)")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_targets: str | list[str] = Field("all-linear", description="LoRA target modules (PEFT names)")
    lora_dropout: float = Field(0.05, ge=0, le=1, description="LoRA dropout (its masks are saved activations)")
    train_embeddings: bool = Field(False, description="LoRA/QLoRA also train the embeddings")
    seq_len: int = Field(2048, ge=1, description="Tokens per example")
    micro_batch: int = Field(1, ge=1, description="Examples per forward pass per rank")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step")
    activation_checkpointing: Literal["none", "full", "selective"] = Field("none", description="none, full or selective")
    attention: Literal["flash", "eager"] = Field("flash", description="flash (SDPA flash/efficient kernels) or eager")
    offload: Literal["none", "optimizer", "params"] = Field("none", description="CPU offload: optimizer state, or "
                                                            "parameters + gradients + optimizer (FSDP, ZeRO-3)")
    optimizer: Literal["adamw", "lab-paged-adamw", "adamw8bit", "sgd"] = Field("adamw", description="Optimizer")
    loading: Literal["rank0", "every-rank"] = Field("rank0", description="Who reads the weights from disk")
    dropout: float = Field(0.0, ge=0, le=1, description="Model dropout (saved masks)")
    vocab_size: int = Field(2000, ge=100, description="Vocabulary of tiny-* presets")

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass
class Estimate:
    plan: Plan
    rows: list[tuple[str, int, str]]  # (component, bytes per rank, how it is counted)
    peak: int  # bytes per rank at the peak (CUDA context included)
    peak_moment: str
    host_rows: list[tuple[str, int, str]]  # per node
    host_total: int
    shape: object
    reference: dict = field(default_factory=dict)  # Korthikanti's formula, accelerate's rule

    @property
    def fits_gpu(self) -> bool:
        return self.peak <= self.plan.gpu_memory_gb * 1e9

    @property
    def fits_host(self) -> bool:
        return self.host_total <= self.plan.host_memory_gb * 1e9

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host

    def value(self, name: str) -> int:
        return next(v for n, v, _ in self.rows if n == name)


def check_plan(plan: Plan) -> None:
    if plan.method == "qlora" and plan.strategy in ("fsdp", "deepspeed-zero3"):
        raise UserError(f"QLoRA with {plan.strategy}: lab's 4-bit weights are not shardable",
                        "use strategy=ddp or single (QLoRA's weights are small), or method=lora")
    if plan.offload == "params" and plan.strategy not in ("fsdp", "deepspeed-zero3"):
        raise UserError(f"offload=params needs sharded parameters (fsdp or deepspeed-zero3), not {plan.strategy}",
                        "use offload=optimizer, or strategy=fsdp")
    if plan.strategy == "single" and plan.world > 1:
        raise UserError(f"strategy=single with {plan.world} GPUs", "use ddp, fsdp or deepspeed-zero2/3, or 1 GPU")


def shards(plan: Plan) -> tuple[int, int, int]:
    """How many ways parameters, gradients and optimizer state are split."""
    n = plan.world
    return {"single": (1, 1, 1), "ddp": (1, 1, 1), "deepspeed-zero2": (1, n, n)}.get(plan.strategy, (n, n, n))


def estimate(plan: Plan) -> Estimate:
    from labcli.models.memory import NF4_BYTES, model_shape, saved_activations

    check_plan(plan)
    targets = tuple(plan.lora_targets) if isinstance(plan.lora_targets, list) else plan.lora_targets
    shape = model_shape(plan.model, plan.method, plan.lora_r, targets, plan.train_embeddings, plan.vocab_size)
    act_dtype = plan.precision if plan.weights == "fp32" else "bf16"
    saved = saved_activations(plan.model, plan.seq_len, plan.micro_batch, act_dtype, plan.method, plan.lora_r, targets,
                              plan.lora_dropout if plan.method != "full" else 0.0, plan.dropout, plan.vocab_size)
    s_p, s_g, s_o = shards(plan)
    cuda = plan.accelerator == "cuda"
    deepspeed_bf16 = plan.strategy.startswith("deepspeed") and plan.precision == "bf16"
    wbytes = 2 if plan.weights == "bf16" or deepspeed_bf16 else 4
    tbytes = wbytes if plan.method == "full" else 4  # PEFT keeps adapters in fp32
    n_train = shape.trainable
    total_params = shape.params + shape.lora_params
    if plan.method == "full":
        frozen = 0
    else:
        frozen_plain = shape.params - (shape.linear_params if plan.method == "qlora" else 0)
        if plan.train_embeddings:
            frozen_plain -= shape.embed_params + shape.head_params
        frozen = frozen_plain * wbytes + (shape.linear_params * NF4_BYTES if plan.method == "qlora" else 0)
    params_bytes = (n_train * tbytes + frozen) / s_p
    grads = n_train * tbytes / s_g
    moment = 4 if deepspeed_bf16 else tbytes
    optim_full = n_train * {"adamw": 2 * moment + (4 if deepspeed_bf16 else 0), "lab-paged-adamw": 8,
                            "adamw8bit": 2, "sgd": moment}[plan.optimizer] / s_o
    host_state = 0.0
    optim = optim_full
    if plan.optimizer == "lab-paged-adamw":
        optim = min(optim_full, PAGE_BUDGET) if cuda else optim_full  # on the CPU the pages are RAM too
        host_state += optim_full - optim if cuda else 0
    if plan.offload in ("optimizer", "params"):
        host_state += optim
        optim = 0
    if plan.offload == "params":
        host_state += params_bytes + grads
        params_bytes = grads = 0

    # Activations: autograd's saved tensors, then each attention kernel's and checkpointing's share.
    a_bytes = 2 if act_dtype == "bf16" else 4
    head_dim = shape.hidden // shape.heads
    sb = plan.seq_len * plan.micro_batch
    gqa = 2 * sb * (shape.hidden - shape.kv_heads * head_dim) * a_bytes if shape.kv_heads < shape.heads else 0
    flash_extra = plan.micro_batch * shape.heads * plan.seq_len * 4  # log-sum-exp; the output is o_proj's input either way
    mask = 1 if cuda else a_bytes  # CUDA's fused dropout keeps a bool mask, the CPU a float one
    activations = saved.total(shape.layers, plan.attention, plan.activation_checkpointing, gqa, flash_extra, mask)
    recompute = (saved.layer_bytes(plan.attention, gqa, flash_extra, mask) + saved.block_input
                 if plan.activation_checkpointing == "full" else 0)  # one block recomputed, and its input's gradient
    korthikanti = korthikanti_bytes(shape, plan)

    # Temporary buffers.
    temps: dict[str, float] = {"loss gradients (fp32 log-softmax)": 2 * saved.logits_fp32}
    persistent: dict[str, float] = {}
    unit_fwd = unit_end = 0.0
    layer_train = n_train / max(shape.layers, 1) if plan.method != "full" else shape.layer_params
    if plan.strategy == "ddp" and plan.world > 1:
        persistent["DDP gradient buckets"] = n_train * tbytes
    if plan.strategy in ("fsdp", "deepspeed-zero3") and plan.world > 1:
        layer_w = shape.layer_params * (wbytes if plan.method == "full" else wbytes) + shape.lora_layer_params * 4
        root = shape.root_params * wbytes
        unit_fwd = root + 2 * layer_w + 2 * layer_train * tbytes
        unit_end = root + layer_w + 2 * layer_train * tbytes
        temps["all-gathered units (root + 2 blocks + 1 block's grads)"] = unit_fwd
    if plan.strategy == "deepspeed-zero2" and plan.world > 1:
        temps["ZeRO-2 reduce buckets"] = 2 * min(ZERO_BUCKET, n_train) * tbytes
    if plan.precision == "bf16" and wbytes == 4 and plan.strategy not in ("deepspeed-zero2", "deepspeed-zero3"):
        cast = shape.linear_params + shape.head_params + (shape.embed_params if shape.tied else 0)
        if plan.activation_checkpointing == "full":
            cast = shape.linear_params / shape.layers + shape.head_params
        temps["bf16 autocast weight copies"] = 2 * cast
    if plan.method == "qlora":
        temps["dequantized 4-bit weight"] = shape.largest_linear * (4 if plan.precision == "fp32" else 2)
    if plan.offload == "params":
        step_scratch = 0.0
    elif cuda and plan.optimizer == "adamw":
        step_scratch = n_train * moment / s_o  # foreach: one state-sized temporary
    elif plan.optimizer == "adamw":
        step_scratch = largest_param(shape) * tbytes / s_o
    else:
        step_scratch = 0.0
    temps["optimizer step scratch"] = step_scratch

    fwd_temps = sum(v for k, v in temps.items() if k not in ("optimizer step scratch", "ZeRO-2 reduce buckets"))
    moments = {
        "start of backward": activations + fwd_temps + (grads if plan.grad_accum > 1 else 0),
        "recomputing a block": activations + recompute + unit_fwd + temps.get("bf16 autocast weight copies", 0)
                               + temps.get("dequantized 4-bit weight", 0) + (grads if plan.grad_accum > 1 else 0),
        "end of backward": grads + unit_end + temps.get("ZeRO-2 reduce buckets", 0),
        "optimizer step": grads + step_scratch,
    }
    moment_name = max(moments, key=moments.get)
    context = CUDA_CONTEXT if cuda else 0
    base = params_bytes + optim + sum(persistent.values())
    peak = base + moments[moment_name] + context
    rows = [
        ("parameters", params_bytes, f"{total_params:,} ({n_train:,} trainable), 1/{s_p} per rank"
                                     + (", offloaded" if plan.offload == "params" else "")),
        ("gradients", grads, f"{tbytes} B x trainable / {s_g}" + (", offloaded" if plan.offload == "params" else "")),
        ("optimizer state", optim, optimizer_note(plan, optim_full, s_o)),
        ("activations", activations, activation_note(plan, saved, shape)),
        *((name, value, "kept for the whole run") for name, value in persistent.items()),
        *((name, value, "transient") for name, value in temps.items() if value),
        ("CUDA context", context, "context, cuBLAS workspace, NCCL (assumed)" if cuda else "none on the CPU"),
    ]
    host_rows, host_total = host_memory(plan, shape, wbytes, host_state)
    reference = {"korthikanti_per_layer": korthikanti, "accelerate": accelerate_rule(shape, plan)}
    return Estimate(plan, [(n, int(v), note) for n, v, note in rows], int(peak), moment_name, host_rows, host_total,
                    shape, reference)


def largest_param(shape) -> int:
    """The largest single parameter: the embedding/head matrix or the largest block weight."""
    return max(shape.embed_params, shape.head_params, shape.largest_linear)


def optimizer_note(plan: Plan, full: float, s_o: int) -> str:
    if plan.offload in ("optimizer", "params"):
        return f"{fmt(full)} offloaded to host RAM"
    if plan.optimizer == "lab-paged-adamw" and plan.accelerator == "cuda":
        return f"page budget on the GPU; {fmt(full)} in host pages"
    return {"adamw": "AdamW: 2 moments", "adamw8bit": "8-bit AdamW: 2 B/param", "sgd": "SGD momentum",
            "lab-paged-adamw": "paged AdamW (pages in RAM on the CPU)"}[plan.optimizer] + f" / {s_o}"


def activation_note(plan: Plan, saved, shape) -> str:
    return f"{plan.attention} attention, checkpointing {plan.activation_checkpointing} (traced on the meta device)"


def korthikanti_bytes(shape, plan: Plan) -> dict:
    """Korthikanti et al. 2022, bytes per layer at 16-bit: s*b*h*(34 + 5*a*s/h); flash/selective: 34*s*b*h;
    full checkpointing: 2*s*b*h (the layer input) per layer."""
    s, b, h, a = plan.seq_len, plan.micro_batch, shape.hidden, shape.heads
    return {"none": s * b * h * (34 + 5 * a * s / h), "selective": 34 * s * b * h, "full": 2 * s * b * h}


def accelerate_rule(shape, plan: Plan) -> dict:
    """`accelerate estimate-memory`: the model's size in a dtype, and 4x that for training with Adam."""
    width = 2 if plan.weights == "bf16" or plan.precision == "bf16" else 4
    size = (shape.params + shape.lora_params) * width
    return {"dtype": "bf16" if width == 2 else "fp32", "model_size": size, "training_adam": 4 * size,
            "per_rank_if_sharded": 4 * size / plan.world}


def host_memory(plan: Plan, shape, wbytes: int, host_state_per_rank: float) -> tuple[list, int]:
    per_copy = shape.params * wbytes
    rank0 = per_copy
    every = plan.gpus_per_node * per_copy
    offloaded = plan.gpus_per_node * host_state_per_rank
    rows = [("loading: rank 0 only", rank0, "one copy on node 0, broadcast or sharded"),
            ("loading: every rank", every, f"{plan.gpus_per_node} copies per node"),
            ("offloaded state", offloaded, f"{plan.gpus_per_node} ranks x {fmt(host_state_per_rank)}")]
    loading = rank0 if plan.loading == "rank0" else every
    return [(n, int(v), note) for n, v, note in rows], int(loading + offloaded)


def fmt(n: float) -> str:
    """Bytes as GB (10^9) with 3 significant figures; MB below 1 GB."""
    if abs(n) >= 1e12:
        return f"{n / 1e12:.3g} TB"
    if abs(n) >= 1e9:
        return f"{n / 1e9:.3g} GB"
    return f"{n / 1e6:.3g} MB"


COST = {"strategy": {"single": 0, "ddp": 0, "deepspeed-zero2": 1, "fsdp": 2, "deepspeed-zero3": 2},
        "checkpointing": {"none": 0, "selective": 1, "full": 2}, "offload": {"none": 0, "optimizer": 1, "params": 2}}


def cheapest_fit(plan: Plan, allow_offload: bool = True) -> Estimate | None:
    """The plan with the fewest GPUs that fits (then: no offload, least recomputation, simplest sharding).

    Searched: up to plan.nodes nodes of plan.gpus_per_node GPUs (or 1, 2, 4, ... GPUs on one node),
    each strategy the method allows, checkpointing none/selective/full, offload none/optimizer/params.
    Model, method, sizes, precision and optimizer stay as given."""
    gpu_counts = sorted({(1, g) for g in (1, 2, 4, 8) if g <= plan.gpus_per_node} | {(1, plan.gpus_per_node)}
                        | {(n, plan.gpus_per_node) for n in range(2, plan.nodes + 1)}, key=lambda x: x[0] * x[1])
    candidates = []
    for nodes, gpus in gpu_counts:
        for strategy in COST["strategy"]:
            for ckpt in COST["checkpointing"]:
                for offload in (COST["offload"] if allow_offload else ["none"]):
                    p = plan.model_copy(update=dict(nodes=nodes, gpus_per_node=gpus, strategy=strategy,
                                                    activation_checkpointing=ckpt, offload=offload))
                    if (strategy == "single") != (nodes * gpus == 1):
                        continue
                    try:
                        check_plan(p)
                    except UserError:
                        continue
                    cost = (nodes * gpus, COST["offload"][offload], COST["checkpointing"][ckpt], COST["strategy"][strategy])
                    candidates.append((cost, p))
        fitting = [(c, p) for c, p in candidates if estimate(p).fits]
        if fitting:
            return estimate(min(fitting, key=lambda cp: cp[0])[1])
    return None


def describe(plan: Plan) -> str:
    """One line: what the plan runs."""
    return (f"{plan.model} {plan.method}, {plan.strategy} on {plan.nodes}x{plan.gpus_per_node} "
            f"{'GPUs' if plan.accelerator == 'cuda' else 'CPU processes'} of {plan.gpu_memory_gb:g} GB, "
            f"seq {plan.seq_len} x micro-batch {plan.micro_batch}, {plan.precision}, checkpointing "
            f"{plan.activation_checkpointing}, offload {plan.offload}, {plan.optimizer}")

