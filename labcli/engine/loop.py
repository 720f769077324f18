"""The step loop under every gradient recipe: `fit(model, step, run, cfg)`.

The engine owns everything around a step: the optimizer and its LR schedule, gradient clipping,
resume (`--resume`: weights, optimizer, schedule, RNG and the recipe's counters come back, and
metrics.jsonl is cut to the checkpoint's step), checkpoints, metrics (metrics.jsonl, TensorBoard,
W&B), the progress bar, and the evaluation cadence with optional early stopping. A recipe supplies

    step(loop, i) -> dict        # step i (1-based): forward, backward, then loop.update(); returns metrics
    evaluate(loop, i) -> dict    # optional; an `eval_loss` key drives early stopping

`loop.update()` clips the gradient and takes one optimizer step; a step may call it once (SFT, KD)
or several times (GRPO/DAPO mini-batches). The LR schedule advances once per step, so
`max_steps`, `warmup_steps`, `eval_every` and `save_every` all count steps. A step's metrics are
logged every `log_every` steps with `lr` and `peak_mem_mb` added; evaluation metrics go in their own
record. `loop.state` is the recipe's own counters (e.g. tokens seen), saved in every checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch
from pydantic import Field

from labcli import runs
from labcli.config import Section, to_yaml
from labcli.engine import checkpoint, distributed, zero
from labcli.engine.metrics import LiveLog
from labcli.engine.optimizers import make_optimizer
from labcli.engine.schedule import make_scheduler
from labcli.eval.measure import peak_memory_mb, reset_peak_memory
from labcli.runs import Run


class LoopConfig(Section):
    """The keys `fit` honours; a recipe's train section extends it with what its step reads."""

    max_steps: int = Field(100, ge=1, description="Steps (one call of the recipe's step function each)")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    optimizer: str = Field("adamw", description="adamw, sgd, bnb-adamw8bit, bnb-paged-adamw, ...")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR decay after warm-up")
    warmup_steps: int = Field(0, ge=0, description="Linear LR warm-up, in steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a share of the peak")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the global grad norm (0: off)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast or plain fp32")
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0: only at the end)")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end)")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept")
    log_every: int = Field(1, ge=1, description="Log metrics every N steps")
    tensorboard: bool = Field(True, description="Also log to TensorBoard when it is installed")
    wandb: bool = Field(False, description="Also log to Weights & Biases (offline mode) when installed")


@dataclass
class Loop:
    """What a step function works with."""

    model: torch.nn.Module  # as trained: wrapped in DDP or sharded by FSDP when asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: list[torch.nn.Parameter]
    cfg: LoopConfig
    device: torch.device
    state: dict = field(default_factory=dict)  # the recipe's counters, saved in checkpoints

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(); under DeepSpeed its engine's backward, then its step, which clips, updates and
        zeroes only after the last micro-batch of the gradient accumulation (the loss is already divided)."""
        if zero.is_engine(self.model):
            self.model.backward(loss, scale_wrt_gas=False)
            with phase("optimizer"):
                self.model.step()
        else:
            loss.backward()

    def update(self) -> float:
        """Clip the accumulated gradient, take one optimizer step, zero the gradient; the norm before clipping.

        Under DeepSpeed the update already happened in `backward` (at the accumulation boundary): only
        the norm DeepSpeed measured is returned."""
        if zero.is_engine(self.model):
            return float(self.model.get_global_grad_norm() or 0.0)
        with phase("optimizer"):
            norm = (torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm) if self.cfg.max_grad_norm > 0
                    else torch.tensor(0.0))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def autocast(self):
        """bf16 autocast when cfg.precision is bf16, else nothing."""
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class FitResult:
    model: torch.nn.Module  # unwrapped from DDP (still sharded under FSDP)
    steps: int  # the last step run (the checkpoint's step when there was nothing left to run)
    metrics: dict  # the last step's metrics
    eval: dict  # the last evaluation's metrics
    state: dict
    wall_s: float
    peak_memory_mb: float
    stopped_early: bool
    optimizer: torch.optim.Optimizer


def fit(
    model: torch.nn.Module,
    step: Callable[[Loop, int], dict],
    run: Run,
    cfg: LoopConfig,
    *,
    device: torch.device,
    seed: int | None = None,
    evaluate: Callable[[Loop, int], dict] | None = None,
    eval_at_start: bool = False,
    state: dict | None = None,
    strategy: str = "single",
    callbacks: Sequence = (),
    progress: bool = True,
) -> FitResult:
    """Run `step` for steps 1..cfg.max_steps (from the checkpoint's step on `--resume`).

    `seed`: reseed torch first (None: keep the caller's RNG stream). `eval_at_start`: evaluate
    before step 1 of a fresh run (logged as step 0). `strategy`: single, ddp or fsdp (auto: ddp
    under torchrun), or deepspeed (with a TrainConfig: it reads the batch split and ZeRO keys).
    `callbacks`: objects with optional `before_step(i)` / `after_step(i)`, i counting this
    process's steps from 1 (e.g. labcli.eval.profiler.StepProfiler)."""
    distributed.init(device)
    rank, _ = distributed.world()
    strategy = distributed.resolve_strategy(strategy)
    if seed is not None:
        torch.manual_seed(seed)
    reset_peak_memory(device)
    from_rank0 = distributed.any_rank(distributed.on_meta(model), device)  # FSDP's rank-0 loading
    if not from_rank0:  # else FSDP moves each rank's shards to the device
        model.to(device)
    wrapped = distributed.wrap(model, strategy, device, cpu_offload=getattr(cfg, "fsdp_cpu_offload", False),
                               from_rank0=from_rank0)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
    if strategy == "deepspeed":  # ZeRO wraps lab's optimizer; lab's schedule keeps setting its LR
        wrapped = zero.initialize(model, optimizer, cfg, device)
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    loop = Loop(wrapped, optimizer, scheduler, params, cfg, device, dict(state or {}))

    start, best, bad_evals = 0, float("inf"), 0
    if run.resume_from is not None:
        saved = checkpoint.load(run.resume_from, wrapped, optimizer, scheduler)
        start, best, bad_evals = saved.pop("step"), saved.pop("best", best), saved.pop("bad_evals", bad_evals)
        loop.state.update(saved)
        if rank == 0:
            runs.truncate_jsonl(run.metrics_path, start)
    patience = getattr(cfg, "early_stopping_patience", 0)  # only configs that offer it (SFT's TrainConfig)
    live = LiveLog(run, cfg, total=cfg.max_steps, start=start, enabled=rank == 0, progress=progress)
    config_yaml = to_yaml(run.cfg)
    before = [c.before_step for c in callbacks if hasattr(c, "before_step")]
    after = [c.after_step for c in callbacks if hasattr(c, "after_step")]

    def run_eval(i: int) -> dict:
        with phase("eval"):
            result = evaluate(loop, i) if evaluate else {}
        if any(v is not None for v in result.values()):
            live.log(step=i, **result)
        return result

    t0, metrics, last_eval, stopped, i = time.perf_counter(), {}, {}, False, start
    wrapped.train()
    try:
        if eval_at_start and start == 0 and evaluate:
            last_eval = run_eval(0)
        for i in range(start + 1, cfg.max_steps + 1):
            for hook in before:
                hook(i - start)
            metrics = step(loop, i)
            scheduler.step()
            if i % cfg.log_every == 0 or i == cfg.max_steps:
                live.log(step=i, **metrics, lr=scheduler.get_last_lr()[0], peak_mem_mb=peak_memory_mb(device))
            if (cfg.eval_every and i % cfg.eval_every == 0) or i == cfg.max_steps:
                last_eval = run_eval(i)
                loss = last_eval.get("eval_loss")
                if loss is not None and loss < best - 1e-6:
                    best, bad_evals = loss, 0
                elif loss is not None:
                    bad_evals += 1
                stopped = bool(patience and bad_evals >= patience)
            if (cfg.save_every and i % cfg.save_every == 0) or i == cfg.max_steps or stopped:
                with phase("checkpoint"):
                    checkpoint.save(run.dir / "checkpoints", i, wrapped, optimizer, scheduler,
                                    {"best": best, "bad_evals": bad_evals, **loop.state}, config_yaml, cfg.keep_last)
            for hook in after:
                hook(i - start)
            if stopped:
                live.note(f"early stopping at step {i}: no eval improvement in {bad_evals} evaluations")
                break
    finally:
        live.close()
    return FitResult(distributed.unwrap(wrapped), i, metrics, last_eval, loop.state, time.perf_counter() - t0,
                     peak_memory_mb(device), stopped, optimizer)


def phase(name: str):
    """A labelled span (`lab::NAME`) that torch.profiler traces show and `lab profile` sums per phase."""
    return torch.profiler.record_function(f"lab::{name}")
