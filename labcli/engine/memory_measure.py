"""Measure a plan's peak on this CPU through the engine, to check `memory_plan.estimate` against it.

What is measured: the peak of live tensor bytes of this process's CPU allocator during training
step 2 (steady state: optimizer state exists, nothing is being created for the first time).
How: torch.profiler with `profile_memory=True` records every allocation and free of the CPU
allocator (tensor storages, kernels' scratch included) made after it starts; the profiler starts
just before `engine.trainer.train`, when the model is already built. What was alive then (the
parameters, buffers and QLoRA's quantization constants) is the baseline, counted from the
storages themselves (each once); whatever of it is freed before step 2 (FSDP2 replaces full
parameters by shards) is dropped from it. Peak = live baseline + the highest running sum of
tracked allocations inside step 2 (between the engine's before_step(2) and after_step(2)).

    python -m labcli.engine.memory_measure PLAN_JSON OUT_JSON   # one cell, under torchrun for 2 ranks
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from labcli.eval.profiler import quiet_kineto

WINDOW = "lab::measured-step"


class StepWindow:
    """Engine callback: a profiler span around step `step` (before_step .. after_step)."""

    def __init__(self, step: int = 2):
        self.step, self.span = step, None

    def before_step(self, i: int) -> None:
        if i == self.step:
            self.span = torch.autograd.profiler.record_function(WINDOW)
            self.span.__enter__()

    def after_step(self, i: int) -> None:
        if i == self.step and self.span is not None:
            self.span.__exit__(None, None, None)


def storages(model: torch.nn.Module) -> dict:
    """{storage key: (weak ref, bytes)} for parameters, buffers and 4-bit quantization state."""
    from torch.multiprocessing.reductions import StorageWeakRef

    tensors = list(model.parameters()) + list(model.buffers())
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        while state is not None:
            tensors += [t for t in (getattr(state, "absmax", None), getattr(state, "code", None)) if torch.is_tensor(t)]
            state = getattr(state, "state2", None)
    out = {}
    for t in tensors:
        if hasattr(t, "to_local"):
            t = t.to_local()
        if t.device.type != "cpu" or t.untyped_storage().nbytes() == 0:
            continue
        ref = StorageWeakRef(t.untyped_storage())
        out.setdefault(ref.cdata, (ref, t.untyped_storage().nbytes()))
    return out


def peak_in_window(events, baseline: dict) -> tuple[int, int]:
    """(peak bytes, live bytes at the window's start) from kineto events."""
    spans = [e for e in events if e.name() == WINDOW]
    if not spans:
        raise RuntimeError("the measured step never ran (max_steps too small?)")
    lo, hi = spans[0].start_ns(), spans[0].start_ns() + spans[0].duration_ns()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    alive_base = sum(n for ref, n in baseline.values() if not ref.expired())
    running, start, peak = 0, None, None
    for t, n in memory:
        if t >= lo and start is None:
            start = peak = running
        running += n
        if lo <= t <= hi:
            peak = max(peak, running)
        if t > hi:
            break
    start = running if start is None else start
    return alive_base + (peak if peak is not None else start), alive_base + start


def measure(plan_data: dict, run_dir, steps: int = 3) -> dict:
    """Run `plan` (a tiny model on the CPU) through the engine in `run_dir` (shared by the ranks);
    predicted and measured peaks."""
    from labcli.config import RecipeConfig
    from labcli.data.text import collate_lm
    from labcli.engine import distributed
    from labcli.engine.memory_plan import Plan, estimate
    from labcli.engine.trainer import TrainConfig, train
    from labcli.models.causal_lm import CausalLMConfig, prepare
    from labcli.models.peft_prep import LoraSettings
    from labcli.runs import Run

    plan = Plan(**plan_data)
    rank, world = distributed.world()
    strategy = {"single": "single", "ddp": "ddp", "fsdp": "fsdp"}.get(plan.strategy, plan.strategy)
    cfg = CausalLMConfig(
        model=plan.model, method=plan.method, block_size=plan.seq_len, vocab_size=plan.vocab_size, dropout=plan.dropout,
        device="cpu", lora=LoraSettings(r=plan.lora_r, dropout=plan.lora_dropout, target_modules=plan.lora_targets,
                                        train_embeddings=plan.train_embeddings),
        train=TrainConfig(max_steps=steps, batch_size=plan.micro_batch * world * plan.grad_accum,
                          micro_batch_size=plan.micro_batch, strategy=strategy, optimizer=plan.optimizer,
                          activation_checkpointing=plan.activation_checkpointing == "full", eval_every=0,
                          save_every=0, tensorboard=False, lr=1e-3, precision=plan.precision))
    loaded, model, params, train_set, _ = prepare(cfg)
    vocab = loaded.model.config.vocab_size
    baseline = storages(model)
    window = StepWindow(2)
    run = Run(Path(run_dir), "profile", "memory-measure", RecipeConfig())
    with quiet_kineto(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        train(model, train_set, collate_lm, cfg.train, run, seed=0, device=torch.device("cpu"), callbacks=[window],
              progress=False)
    peak, start = peak_in_window(prof.profiler.kineto_results.events(), baseline)
    predicted = estimate(plan.model_copy(update={"vocab_size": vocab, "accelerator": "cpu", "gpus_per_node": world,
                                                 "nodes": 1}))
    return {"rank": rank, "measured_mb": round(peak / 1e6, 2), "live_at_step_start_mb": round(start / 1e6, 2),
            "predicted_mb": round(predicted.peak / 1e6, 2), "peak_moment": predicted.peak_moment,
            "components_mb": {n: round(v / 1e6, 2) for n, v, _ in predicted.rows if v},
            "trainable_params": params["trainable_params"], "predicted_trainable": predicted.shape.trainable}


def main(argv: list[str]) -> None:
    from labcli.runs import set_threads, write_json

    set_threads()
    plan, out = json.loads(argv[0]), argv[1]
    result = measure(plan, f"{out}-run")
    write_json(Path(f"{out}.rank{result['rank']}.json"), result)
    from labcli.engine.distributed import shutdown

    shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
