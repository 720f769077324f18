"""The one training loop: single process, DDP or FSDP2, with resume, metrics and checkpoints.

Recipes build a model and a list of examples and call `train(...)`. The sampler is a pure
function of (seed, step), so the data position is the step and `--resume auto` is exact.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from pydantic import Field

from labcli import runs
from labcli.config import Section, to_yaml
from labcli.engine import checkpoint, distributed
from labcli.engine.metrics import LiveLog
from labcli.engine.optimizers import make_optimizer
from labcli.engine.schedule import make_scheduler
from labcli.errors import UserError
from labcli.eval.measure import peak_memory_mb, reset_peak_memory
from labcli.runs import Run


class TrainConfig(Section):
    """How to train; the same keys for every recipe that trains."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps")
    batch_size: int = Field(8, ge=1, description="Global batch (examples per optimizer step, all processes)")
    micro_batch_size: int = Field(8, ge=1, description="Examples per forward pass per process")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    optimizer: str = Field("adamw", description="adamw, sgd, bnb-adamw8bit, bnb-paged-adamw, ...")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR decay after warm-up")
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a share of the peak")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the global grad norm (0: off)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast or plain fp32")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward")
    compile: bool = Field(False, description="torch.compile the model")
    strategy: Literal["auto", "single", "ddp", "fsdp"] = Field("auto", description="auto: ddp under torchrun")
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0: only at the end)")
    eval_batches: int = Field(20, ge=1, description="Batches per evaluation")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after N evals without improvement (0: off)")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end)")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept")
    log_every: int = Field(1, ge=1, description="Log metrics every N steps")
    tensorboard: bool = Field(True, description="Also log to TensorBoard when it is installed")
    wandb: bool = Field(False, description="Also log to Weights & Biases (offline mode) when installed")


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
    distributed.init(device)
    rank, size = distributed.world()
    strategy = distributed.resolve_strategy(cfg.strategy)
    per_step = cfg.micro_batch_size * size
    if cfg.batch_size % per_step:
        raise UserError(f"train.batch_size={cfg.batch_size} is not a multiple of micro_batch_size x processes = {per_step}",
                        "change train.batch_size or train.micro_batch_size")
    accum = cfg.batch_size // per_step
    if len(train_set) == 0:
        raise UserError("the training set is empty", "check the data file and its filters")

    torch.manual_seed(seed)
    reset_peak_memory(device)
    model.to(device)
    if cfg.activation_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise UserError("activation_checkpointing needs a Hugging Face model", "set train.activation_checkpointing=false")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapped = distributed.wrap(model, strategy, device)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    forward = torch.compile(wrapped) if cfg.compile else wrapped

    start, best, bad_evals, tokens_seen = 0, float("inf"), 0, 0
    if run.resume_from is not None:
        state = checkpoint.load(run.resume_from, wrapped, optimizer, scheduler)
        start, best, bad_evals, tokens_seen = state["step"], state["best"], state["bad_evals"], state["tokens"]
        if rank == 0:
            runs.truncate_jsonl(run.metrics_path, start)

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())
    ckpt_dir = run.dir / "checkpoints"
    config_yaml = to_yaml(run.cfg)
    live = LiveLog(run, cfg, total=cfg.max_steps, start=start, enabled=rank == 0, progress=progress)

    def save(step: int) -> None:
        extra = {"best": best, "bad_evals": bad_evals, "tokens": tokens_seen}
        checkpoint.save(ckpt_dir, step, wrapped, optimizer, scheduler, extra, config_yaml, cfg.keep_last)

    t0, loss_value, eval_loss, stopped = time.perf_counter(), float("nan"), None, False
    step = start
    before = [c.before_step for c in callbacks if hasattr(c, "before_step")]
    after = [c.after_step for c in callbacks if hasattr(c, "after_step")]
    wrapped.train()
    try:
        for step in range(start + 1, cfg.max_steps + 1):
            for hook in before:
                hook(step - start)
            step_t0 = time.perf_counter()
            ids = batch_indices(step - 1, len(train_set), cfg.batch_size, seed)
            loss_sum, n_tok = 0.0, 0
            for a in range(accum):
                lo = (a * size + rank) * cfg.micro_batch_size
                batch = _to(collate([train_set[i] for i in ids[lo:lo + cfg.micro_batch_size]]), device)
                sync = a == accum - 1 or strategy != "ddp"
                with (contextlib.nullcontext() if sync else wrapped.no_sync()), autocast, phase("forward"):
                    loss = loss_fn(forward, batch) / accum
                with phase("backward"):
                    loss.backward()
                loss_sum += loss.item()
                n_tok += _count_tokens(batch)
            with phase("optimizer"):
                grad_norm = (torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0
                             else torch.tensor(0.0))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_total, tok_total = distributed.all_reduce_sum([loss_sum, float(n_tok)], device)
            loss_value, tokens_seen = loss_total / size, tokens_seen + int(tok_total)
            dt = time.perf_counter() - step_t0
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                live.log(step=step, loss=loss_value, lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                         tokens_per_s=tok_total / dt, tokens=tokens_seen, peak_mem_mb=peak_memory_mb(device))
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps:
                with phase("eval"):
                    eval_loss = evaluate(wrapped, eval_set, collate, cfg, device, loss_fn) if eval_set else None
                    extra = on_eval(distributed.unwrap(wrapped), step) if on_eval else {}
                if eval_loss is not None or extra:
                    live.log(step=step, eval_loss=eval_loss, **extra)
                if eval_loss is not None and eval_loss < best - 1e-6:
                    best, bad_evals = eval_loss, 0
                elif eval_loss is not None:
                    bad_evals += 1
                stopped = bool(cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience)
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps or stopped:
                with phase("checkpoint"):
                    save(step)
            for hook in after:
                hook(step - start)
            if stopped:
                live.note(f"early stopping at step {step}: no eval improvement in {bad_evals} evaluations")
                break
    finally:
        live.close()
    return TrainResult(distributed.unwrap(wrapped), step, loss_value, eval_loss, tokens_seen,
                       time.perf_counter() - t0, peak_memory_mb(device), stopped, optimizer)


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


def phase(name: str):
    """A labelled span (`lab::NAME`) that torch.profiler traces show and `lab profile` sums per phase."""
    return torch.profiler.record_function(f"lab::{name}")
