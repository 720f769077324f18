"""Supervised training (SFT, classification, KD) on the engine's step loop: `train(model, data, collate, cfg, run)`.

The step: one global batch of `batch_size` examples, drawn by a pure function of (seed, step) so the
data position is the step and `--resume auto` is exact, split into micro-batches across processes
(DDP or FSDP2) and gradient-accumulation passes, then one optimizer update. Evaluation: the mean
loss over up to `eval_batches` batches of the eval set, plus whatever `on_eval` returns.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from pydantic import Field, model_validator

from labcli.engine import distributed, zero
from labcli.engine.loop import Loop, LoopConfig, fit, phase
from labcli.errors import UserError
from labcli.runs import Run


class TrainConfig(LoopConfig):
    """How to train; the same keys for every recipe that trains on examples."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps")
    batch_size: int = Field(8, ge=1, description="Global batch (examples per optimizer step, all processes)")
    micro_batch_size: int = Field(8, ge=1, description="Examples per forward pass per process")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward")
    compile: bool = Field(False, description="torch.compile the model")
    strategy: Literal["auto", "single", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="auto: ddp under torchrun; deepspeed: DeepSpeed ZeRO (train.zero_stage)")
    fsdp_cpu_offload: bool = Field(False, description="FSDP2: keep sharded parameters, gradients and the optimizer "
                                                      "step in CPU RAM (CPUOffloadPolicy); the GPU holds gathered blocks")
    fsdp_load_on_rank0: bool = Field(False, description="FSDP: only rank 0 reads the weights; the other ranks build the "
                                                        "model on the meta device and receive their shards from rank 0")
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed: 2 shards gradients and optimizer state, 3 also the "
                                                     "parameters")
    deepspeed_offload: bool = Field(False, description="DeepSpeed: optimizer state (ZeRO-3: also parameters) in CPU "
                                                       "RAM, the optimizer step on the CPU (ZeRO-Offload)")
    eval_batches: int = Field(20, ge=1, description="Batches per evaluation")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after N evals without improvement (0: off)")

    @model_validator(mode="after")
    def _deepspeed_combinations(self) -> TrainConfig:
        if self.strategy != "deepspeed":
            if self.deepspeed_offload:
                raise UserError(f"train.deepspeed_offload=true with train.strategy={self.strategy}",
                                "set train.strategy=deepspeed, or use train.fsdp_cpu_offload=true with fsdp")
            return self
        if self.fsdp_cpu_offload or self.fsdp_load_on_rank0:
            raise UserError("train.fsdp_cpu_offload / fsdp_load_on_rank0 are FSDP keys, not DeepSpeed's",
                            "use train.deepspeed_offload=true with train.strategy=deepspeed")
        if self.compile:
            raise UserError("train.compile=true with train.strategy=deepspeed is not supported",
                            "set train.compile=false")
        if self.optimizer.startswith("bnb-") or self.optimizer == "lab-paged-adamw":
            raise UserError(f"train.optimizer={self.optimizer} with train.strategy=deepspeed: ZeRO replaces the "
                            "parameters with flat fp32 partitions, which paged/8-bit optimizers do not support",
                            "use train.optimizer=adamw or sgd (ZeRO shards their state)")
        zero.check_installed()  # here, so `lab check` and the launcher say it before any process starts
        return self


def builds_on_meta(cfg: TrainConfig) -> bool:
    """Whether this process should build its model without weights (FSDP's rank-0 loading, rank > 0)."""
    rank, size = distributed.world()
    return cfg.fsdp_load_on_rank0 and cfg.strategy == "fsdp" and size > 1 and rank > 0


@dataclass
class TrainResult:
    model: torch.nn.Module  # the trained model, unwrapped from DDP (still sharded under FSDP)
    steps: int
    final_loss: float
    eval_loss: float | None
    tokens: int
    wall_s: float
    peak_memory_mb: float
    stopped_early: bool
    optimizer: torch.optim.Optimizer | None = None


def batch_indices(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """Example indices of one optimizer step: consecutive slices of per-epoch seeded permutations."""
    start = step * global_batch
    out, perm_epoch, perm = [], -1, None
    for k in range(start, start + global_batch):
        epoch = k // n
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
            perm_epoch = epoch
        out.append(perm[k % n])
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _count_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


def default_loss(model, batch) -> torch.Tensor:
    return model(**batch).loss


def train(
    model: torch.nn.Module,
    train_set: Sequence,
    collate: Callable[[list], dict],
    cfg: TrainConfig,
    run: Run,
    *,
    seed: int = 0,
    device: torch.device | None = None,
    eval_set: Sequence | None = None,
    loss_fn: Callable = default_loss,
    on_eval: Callable[[torch.nn.Module, int], dict] | None = None,
    callbacks: Sequence = (),
    progress: bool = True,
) -> TrainResult:
    """Train `model` on `train_set` for cfg.max_steps steps, resuming from run.resume_from.

    `callbacks`: objects with optional `before_step(i)` / `after_step(i)` (i counts this process's
    steps from 1; e.g. labcli.eval.profiler.StepProfiler). `progress`: show the progress bar."""
    device = device or distributed.pick_device(run.cfg.device)
    rank, size = distributed.world()
    per_step = cfg.micro_batch_size * size
    if cfg.batch_size % per_step:
        raise UserError(f"train.batch_size={cfg.batch_size} is not a multiple of micro_batch_size x processes = {per_step}",
                        "change train.batch_size or train.micro_batch_size")
    accum = cfg.batch_size // per_step
    if len(train_set) == 0:
        raise UserError("the training set is empty", "check the data file and its filters")
    if cfg.activation_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise UserError("activation_checkpointing needs a Hugging Face model", "set train.activation_checkpointing=false")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ddp = distributed.resolve_strategy(cfg.strategy) == "ddp"
    compiled = {}

    def step(loop: Loop, i: int) -> dict:
        t0 = time.perf_counter()
        if "forward" not in compiled:
            compiled["forward"] = torch.compile(loop.model) if cfg.compile else loop.model
        forward = compiled["forward"]
        ids = batch_indices(i - 1, len(train_set), cfg.batch_size, seed)
        loss_sum, n_tok = 0.0, 0
        for a in range(accum):
            lo = (a * size + rank) * cfg.micro_batch_size
            batch = _to(collate([train_set[k] for k in ids[lo:lo + cfg.micro_batch_size]]), device)
            sync = a == accum - 1 or not ddp
            with (contextlib.nullcontext() if sync else loop.model.no_sync()), loop.autocast(), phase("forward"):
                loss = loss_fn(forward, batch) / accum
            with phase("backward"):
                loop.backward(loss)
            loss_sum += loss.item()
            n_tok += _count_tokens(batch)
        grad_norm = loop.update()
        loss_total, tok_total = distributed.all_reduce_sum([loss_sum, float(n_tok)], device)
        loop.state["tokens"] += int(tok_total)
        return {"loss": loss_total / size, "grad_norm": grad_norm, "tokens_per_s": tok_total / (time.perf_counter() - t0),
                "tokens": loop.state["tokens"]}

    def evaluation(loop: Loop, i: int) -> dict:
        eval_loss = evaluate(loop.model, eval_set, collate, cfg, device, loss_fn) if eval_set else None
        return {"eval_loss": eval_loss, **(on_eval(distributed.unwrap(loop.model), i) if on_eval else {})}

    result = fit(model, step, run, cfg, device=device, seed=seed, evaluate=evaluation, state={"tokens": 0},
                 strategy=cfg.strategy, callbacks=callbacks, progress=progress)
    return TrainResult(result.model, result.steps, result.metrics.get("loss", float("nan")), result.eval.get("eval_loss"),
                       result.state["tokens"], result.wall_s, result.peak_memory_mb, result.stopped_early, result.optimizer)


@torch.no_grad()
def evaluate(model, eval_set: Sequence, collate, cfg: TrainConfig, device, loss_fn=default_loss) -> float:
    """Mean loss over up to eval_batches batches, split across processes."""
    rank, size = distributed.world()
    model.eval()
    total, count = 0.0, 0.0
    n = min(len(eval_set), cfg.eval_batches * cfg.micro_batch_size * size)
    stride = cfg.micro_batch_size * size
    for lo in range(rank * cfg.micro_batch_size, -(-n // stride) * stride, stride):
        # Every rank runs the same number of forwards (FSDP needs it); an empty slice weighs 0.
        idx = list(range(lo, min(lo + cfg.micro_batch_size, n))) or [0]
        weight = float(lo < n) * len(idx)
        total += loss_fn(model, _to(collate([eval_set[i] for i in idx]), device)).item() * weight
        count += weight
    model.train()
    total, count = distributed.all_reduce_sum([total, count], device)
    return total / max(count, 1.0)
