"""`lab bench backprop`: memory-efficient backprop on a Hugging Face GPT-2, side by side.

Per (sequence length, technique): the model is patched with `backprop.apply`, so every forward
uses the technique. One forward/backward under `SavedTensors` gives the exact bytes saved for
backward and the gradients (compared with the baseline's); then the engine's `train()` runs the
same patched model for a few steps for peak memory and step time, with each training forward
counted by `CountingLoss` (the timed run's own saved/offloaded bytes: proof that it ran the
technique). Techniques live in `labcli.engine.backprop`; table, JSON and PNGs in the run folder.
"""

from __future__ import annotations

import copy
import gc
import os
import shutil
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.runs import Run

RESUMABLE = True  # finished cells are kept (ctx.cell); --resume auto runs the rest

Technique = Literal["baseline", "hf-checkpointing", "ckpt-every-block", "ckpt-every-k", "ckpt-attention", "custom-mlp",
                    "offload-cpu"]


class Config(RecipeConfig):
    model: str = Field("tiny-gpt2", description="A GPT-2 family model: tiny-gpt2, a local folder, or a cached hub id")
    layers: int = Field(4, ge=1, description="Transformer blocks of a tiny-* preset")
    seq_lens: list[int] = Field([128, 512], min_length=1, description="Sequence lengths (savings show once activations dominate)")
    techniques: list[Technique] = Field([], description="Subset of techniques (empty: all; baseline always runs)")
    every_k: int = Field(2, ge=2, description="ckpt-every-k checkpoints blocks 0, k, 2k, ...")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")
    train: TrainConfig = Field(
        TrainConfig(max_steps=5, batch_size=8, micro_batch_size=8, lr=1e-3, schedule="constant", tensorboard=False,
                    strategy="single"),
        description="The timed training run of every cell (batch_size sequences per step)")


def parse(cfg: Config) -> tuple[list[int], list[str]]:
    from labcli.engine.backprop import TECHNIQUES

    seq_lens = list(dict.fromkeys(cfg.seq_lens))
    if min(seq_lens) < 8:
        raise UserError(f"seq_lens={cfg.seq_lens} needs lengths of at least 8", "write e.g. seq_lens=[128,512]")
    if cfg.train.max_steps < 2:
        raise UserError("train.max_steps must be at least 2", "the first step is not timed: use train.max_steps=5")
    chosen = list(dict.fromkeys(cfg.techniques)) or list(TECHNIQUES)
    return seq_lens, ["baseline"] + [t for t in chosen if t != "baseline"]


def cell(cfg: Config, ctx: Run, base, blocks, seq: int, technique: str, refs: dict, device) -> dict:
    """One technique at one length: saved bytes, then the timed training run with the technique on.
    refs[seq] holds the baseline's gradients, which every technique's are compared with."""
    from labcli.data.text import collate_lm
    from labcli.engine import backprop as bt
    from labcli.engine.trainer import train
    from labcli.eval.measure import memory_mb, peak_memory_mb, reset_peak_memory

    model = copy.deepcopy(base).to(device)
    bt.apply(model, technique, cfg.every_k)
    batch = {k: v.to(device) for k, v in collate_lm(blocks[:cfg.train.batch_size]).items()}
    grads, saved, loss = bt.measure_grads(model, batch)
    if seq not in refs:  # the baseline ran in an earlier process (a resumed bench): measure its gradients again
        plain = copy.deepcopy(base).to(device)
        bt.apply(plain, "baseline", cfg.every_k)
        refs[seq] = grads if technique == "baseline" else bt.measure_grads(plain, batch)[0]
    shutil.rmtree(ctx.root / "cells" / f"seq{seq}-{technique}", ignore_errors=True)  # a killed attempt starts over
    run = ctx.sub(f"cells/seq{seq}-{technique}")
    counted = bt.CountingLoss(model)
    gc.collect()
    reset_peak_memory(device)
    start = memory_mb(device)
    train(model, blocks, collate_lm, cfg.train, run, seed=cfg.seed, device=device, loss_fn=counted, progress=False)
    records = run.metrics()
    peak = max((r["peak_mem_mb"] for r in records if "peak_mem_mb" in r), default=peak_memory_mb(device))
    speeds = sorted(r["tokens_per_s"] for r in records if r.get("step", 0) > 1 and "tokens_per_s" in r)
    tokens = cfg.train.batch_size * seq
    result = {"seq_len": seq, "technique": technique, "what": bt.TECHNIQUES[technique],
              "saved_bytes": saved.bytes, "offloaded_bytes": saved.offloaded_bytes,
              # what each forward of the timed training run kept / offloaded (one entry per forward)
              "timed_saved_bytes": [c[0] for c in counted.counts], "timed_offloaded_bytes": [c[1] for c in counted.counts],
              "peak_memory_mb": peak, "peak_growth_mb": peak - start,
              "step_ms": 1000 * tokens / speeds[-1] if speeds else None,  # the fastest step: least disturbed
              "step_ms_median": 1000 * tokens / speeds[len(speeds) // 2] if speeds else None,
              "max_grad_diff": bt.max_grad_diff(grads, refs[seq]), "loss": loss}
    del model
    gc.collect()
    return result


def goals(rows: list[dict]) -> list[str]:
    """The issue's goal: full checkpointing saves >= 60 % of activation bytes at <= 35 % step-time cost."""
    longest = max(r["seq_len"] for r in rows)
    base = next(r for r in rows if r["seq_len"] == longest and r["technique"] == "baseline")
    lines = []
    for r in rows:
        if r["seq_len"] == longest and r["technique"] in ("hf-checkpointing", "ckpt-every-block"):
            saving = 1 - r["saved_bytes"] / base["saved_bytes"]
            cost = (r["step_ms"] / base["step_ms"] - 1) if r["step_ms"] and base["step_ms"] else float("nan")
            met = saving >= 0.60 and cost <= 0.35
            lines.append(f"- {r['technique']} at seq {longest}: saves {100 * saving:.1f} % of activation bytes at "
                         f"{100 * cost:+.1f} % step time: goal (>= 60 %, <= +35 %) {'met' if met else 'missed'}")
            r["goal_met"] = met
    return lines


def table_rows(rows: list[dict]) -> list[dict]:
    """Display rows (text, rounded) with Δ against the baseline at the same length."""
    from labcli.eval.tables import delta, fmt

    out = []
    for r in rows:
        base = next(b for b in rows if b["seq_len"] == r["seq_len"] and b["technique"] == "baseline")
        out.append({"seq": r["seq_len"], "technique": r["technique"],
                    "saved for backward (MB)": fmt(r["saved_bytes"] / 2**20, 2), "Δ saved": delta(r["saved_bytes"], base["saved_bytes"]),
                    "offloaded to host (MB)": fmt(r["offloaded_bytes"] / 2**20, 2),
                    "timed run: saved / offloaded per forward (MB)": f"{max(r['timed_saved_bytes']) / 2**20:.2f} / "
                                                                     f"{max(r['timed_offloaded_bytes']) / 2**20:.2f}",
                    "peak memory (MB)": fmt(r["peak_memory_mb"], 1), "growth in cell (MB)": fmt(r["peak_growth_mb"], 1),
                    "Δ growth": delta(r["peak_growth_mb"], base["peak_growth_mb"]), "step time (ms)": fmt(r["step_ms"], 1),
                    "Δ time": delta(r["step_ms"], base["step_ms"]), "max \\|grad − baseline\\|": f"{r['max_grad_diff']:.2e}"})
    return out


def report(cfg: Config, ctx: Run, rows: list[dict], info: dict) -> list[dict]:
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table

    table = table_rows(rows)
    goal_lines = goals(rows)
    techniques = list(dict.fromkeys(r["technique"] for r in rows))
    if info["peak_memory"] != "CUDA max allocated" and "offload-cpu" in techniques:
        goal_lines.append("- offload-cpu on the CPU: the host is the device, so the offloaded copies stay in the same "
                          "memory (its peak memory shows it); the saving is real only for CUDA tensors")
    ctx.write_summary({**info, "goals": goal_lines, "cells": rows, "rows": table})
    series = lambda key, scale=1.0: {t: {f"seq {r['seq_len']}": (r[key] or 0) * scale
                                         for r in rows if r["technique"] == t} for t in techniques}
    plots.bars(series("saved_bytes", 2**-20), ctx.path("activation_bytes.png"), "kept on the device for backward", "MB")
    plots.bars(series("peak_growth_mb"), ctx.path("peak_memory.png"), f"peak memory growth ({info['peak_memory']})", "MB")
    plots.bars(series("step_ms"), ctx.path("step_time.png"), "step time (fastest step)", "ms")
    described = "\n".join(f"- **{t}**: {next(r['what'] for r in rows if r['technique'] == t)}" for t in techniques)
    ctx.write_report(
        f"# {ctx.verb} {ctx.recipe}\n\nHardware: {info['hardware']}. Model: {info['model']} "
        f"({info['parameters'] / 1e6:.2f} M parameters, {info['layers']} blocks), fp32. Batch: {cfg.train.batch_size} "
        f"sequences. Saved for backward: unique non-parameter storages that autograd (or a checkpoint) keeps, counted in "
        f"saved_tensors_hooks on one forward/backward; the timed run counts every training forward the same way (the "
        f"largest is shown: it is the technique the timed run ran). Peak memory: {info['peak_memory']}, reset per cell, "
        f"over {cfg.train.max_steps} engine steps (AdamW included, the final checkpoint not); growth in cell: that peak "
        f"minus the memory in use at the cell's start; step time: the fastest step after the first (the least disturbed "
        f"by other processes; the median is in the JSON). Δ against the baseline at the same length.\n\n"
        f"{markdown_table(table)}\n\n{chr(10).join(goal_lines)}\n\n{described}\n\n"
        f"![activation bytes](activation_bytes.png)\n![peak memory](peak_memory.png)\n![step time](step_time.png)\n")
    return table


def check(cfg: Config) -> None:
    """What `run` would refuse before loading anything (`lab check` reports the UserError raised)."""
    parse(cfg)


def run(cfg: Config, ctx: Run) -> None:
    from labcli.data.text import lm_blocks
    from labcli.engine import distributed
    from labcli.engine.backprop import blocks_of
    from labcli.eval.measure import hardware_line, peak_memory_kind
    from labcli.eval.tables import print_table, progress_bar
    from labcli.models import load_model
    from labcli.models.causal_lm import read_texts

    seq_lens, techniques = parse(cfg)
    if distributed.world()[1] > 1:
        raise UserError("lab bench backprop runs in one process", "drop --nproc")
    texts = read_texts(None)
    overrides = {"n_layer": cfg.layers} if cfg.model.startswith("tiny-") else {}
    loaded = load_model(cfg.model, "causal-lm", tokenizer_texts=lambda: texts, vocab_size=cfg.vocab_size,
                        preset_overrides=overrides, seed=cfg.seed)
    model = loaded.model
    if type(model).__name__ != "GPT2LMHeadModel":
        raise UserError(f"{cfg.model} is a {type(model).__name__}",
                        "bench backprop patches GPT-2 blocks: use tiny-gpt2 or a GPT-2 folder")
    limit = model.config.n_positions
    if max(seq_lens) > limit:
        raise UserError(f"seq_lens {max(seq_lens)} exceeds the model's {limit} positions", f"use lengths up to {limit}")
    device = distributed.pick_device(cfg.device)
    info = {"hardware": hardware_line(device), "model": cfg.model, "parameters": sum(p.numel() for p in model.parameters()),
            "layers": len(blocks_of(model)), "batch_size": cfg.train.batch_size, "seq_lens": seq_lens,
            "peak_memory": peak_memory_kind(device), "steps": cfg.train.max_steps, "load": os.getloadavg()[0]}
    data = {}
    for seq in seq_lens:
        data[seq] = lm_blocks(texts, loaded.tokenizer, seq)
        if len(data[seq]) < cfg.train.batch_size:
            raise UserError(f"only {len(data[seq])} blocks of {seq} tokens", "lower train.batch_size or seq_lens")

    rows = []
    with progress_bar("bench backprop") as bar:
        task = bar.add_task("", total=len(seq_lens) * len(techniques))
        refs: dict[int, dict] = {}
        for seq in seq_lens:
            for technique in techniques:
                bar.update(task, description=f"seq {seq}: {technique}")
                rows.append(ctx.cell(f"seq{seq}-{technique}", lambda: cell(cfg, ctx, model, data[seq], seq, technique, refs, device)))
                bar.update(task, advance=1)
    info["load_after"] = os.getloadavg()[0]
    table = report(cfg, ctx, rows, info)
    print_table(table, ["seq", "technique", "saved for backward (MB)", "Δ saved",
                        "timed run: saved / offloaded per forward (MB)", "growth in cell (MB)", "Δ growth",
                        "step time (ms)", "Δ time"], title="bench backprop")
