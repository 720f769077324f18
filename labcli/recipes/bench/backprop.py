"""`lab bench backprop`: memory-efficient backprop on a Hugging Face GPT-2, side by side.

Per (sequence length, technique): one forward/backward under `SavedTensors` gives the exact
bytes saved for backward and the gradients (compared with the baseline's), then the engine's
`train()` runs the patched model for a few steps for peak memory and step time. Techniques live
in `backprop_techniques`; the table, JSON and PNGs are written to the run folder.
"""

from __future__ import annotations

import copy
import gc
import os

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run


class Config(RecipeConfig):
    model: str = Field("tiny-gpt2", description="A GPT-2 family model: tiny-gpt2, a local folder, or a cached hub id")
    layers: int = Field(4, ge=1, description="Transformer blocks of a tiny-* preset")
    seq_lens: str = Field("128,512", description="Comma-separated sequence lengths (savings show once activations dominate)")
    batch_size: int = Field(8, ge=1, description="Sequences per step")
    steps: int = Field(5, ge=2, description="Engine training steps per cell for peak memory and step time")
    techniques: str = Field("", description="Comma-separated subset of techniques (empty: all; baseline always runs)")
    every_k: int = Field(2, ge=2, description="ckpt-every-k checkpoints blocks 0, k, 2k, ...")
    lr: float = Field(1e-3, gt=0, description="Constant learning rate of the timing runs")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")


def parse(cfg: Config) -> tuple[list[int], list[str]]:
    from labcli.engine.backprop import TECHNIQUES

    try:
        seq_lens = [int(s) for s in str(cfg.seq_lens).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"seq_lens={cfg.seq_lens!r} is not a list of integers", "write e.g. --seq-lens 128,512") from None
    if not seq_lens or min(seq_lens) < 8:
        raise UserError(f"seq_lens={cfg.seq_lens!r} needs lengths of at least 8", "write e.g. --seq-lens 128,512")
    chosen = [t.strip() for t in str(cfg.techniques).split(",") if t.strip()] or list(TECHNIQUES)
    bad = [t for t in chosen if t not in TECHNIQUES]
    if bad:
        raise UserError(f"unknown technique '{bad[0]}'", f"techniques: {', '.join(TECHNIQUES)}")
    return seq_lens, ["baseline"] + [t for t in chosen if t != "baseline"]


def cell(cfg: Config, ctx: Run, base, blocks, seq: int, technique: str, ref: dict | None, device) -> tuple[dict, dict]:
    from labcli.data.text import collate_lm
    from labcli.engine import backprop as bt
    from labcli.engine.trainer import TrainConfig, train
    from labcli.eval.measure import memory_mb, peak_memory_mb, reset_peak_memory

    model = copy.deepcopy(base).to(device)
    bt.apply(model, technique, cfg.every_k)
    batch = {k: v.to(device) for k, v in collate_lm(blocks[:cfg.batch_size]).items()}
    grads, saved, loss = bt.measure_grads(model, batch, technique)
    ref = ref or grads
    run = Run(dir=ctx.dir / "cells" / f"seq{seq}-{technique}", verb=ctx.verb, recipe=f"{ctx.recipe}:seq{seq}-{technique}",
              cfg=ctx.cfg)
    tc = TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, micro_batch_size=cfg.batch_size, lr=cfg.lr,
                     schedule="constant", tensorboard=False, strategy="single")
    gc.collect()
    reset_peak_memory(device)
    start = memory_mb(device)
    train(model, blocks, collate_lm, tc, run, seed=cfg.seed, device=device, loss_fn=bt.loss_of)
    peak = max((r["peak_mem_mb"] for r in run.metrics() if "peak_mem_mb" in r), default=peak_memory_mb(device))
    speeds = sorted(r["tokens_per_s"] for r in run.metrics() if r.get("step", 0) > 1 and "tokens_per_s" in r)
    tokens = cfg.batch_size * seq
    result = {"seq_len": seq, "technique": technique, "what": bt.TECHNIQUES[technique],
              "saved_bytes": saved.bytes, "offloaded_bytes": saved.offloaded_bytes, "peak_memory_mb": peak,
              "peak_growth_mb": peak - start,
              "step_ms": 1000 * tokens / speeds[-1] if speeds else None,  # the fastest step: least disturbed
              "step_ms_median": 1000 * tokens / speeds[len(speeds) // 2] if speeds else None,
              "max_grad_diff": bt.max_grad_diff(grads, ref), "loss": loss}
    del model
    gc.collect()
    return result, ref


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


def report(cfg: Config, ctx: Run, rows: list[dict], info: dict) -> None:
    from labcli.eval import plots
    from labcli.eval.tables import delta, fmt, markdown_table

    header = ["seq", "technique", "saved for backward (MB)", "Δ saved", "offloaded to host (MB)", "peak memory (MB)",
              "growth in cell (MB)", "Δ growth", "step time (ms)", "Δ time", "max \\|grad − baseline\\|"]
    table = []
    for r in rows:
        base = next(b for b in rows if b["seq_len"] == r["seq_len"] and b["technique"] == "baseline")
        table.append([r["seq_len"], r["technique"], fmt(r["saved_bytes"] / 2**20, 2),
                      delta(r["saved_bytes"], base["saved_bytes"]), fmt(r["offloaded_bytes"] / 2**20, 2),
                      fmt(r["peak_memory_mb"]), fmt(r["peak_growth_mb"]),
                      delta(r["peak_growth_mb"], base["peak_growth_mb"]), fmt(r["step_ms"], 1),
                      delta(r["step_ms"], base["step_ms"]), f"{r['max_grad_diff']:.2e}"])
    goal_lines = goals(rows)
    ctx.write_summary({**info, "goals": goal_lines, "cells": rows})
    techniques = list(dict.fromkeys(r["technique"] for r in rows))
    series = lambda key, scale=1.0: {t: {f"seq {r['seq_len']}": (r[key] or 0) * scale  # noqa: E731
                                         for r in rows if r["technique"] == t} for t in techniques}
    plots.bars(series("saved_bytes", 2**-20), ctx.path("activation_bytes.png"), "kept on the device for backward", "MB")
    plots.bars(series("peak_growth_mb"), ctx.path("peak_memory.png"), f"peak memory growth ({info['peak_memory']})", "MB")
    plots.bars(series("step_ms"), ctx.path("step_time.png"), "step time (fastest step)", "ms")
    if info["peak_memory"] != "CUDA max allocated" and "offload-cpu" in techniques:
        goal_lines.append("- offload-cpu on the CPU: the host is the device, so the offloaded copies stay in the same "
                          "memory (its peak memory shows it); the saving is real only for CUDA tensors")
    described = "\n".join(f"- **{t}**: {next(r['what'] for r in rows if r['technique'] == t)}" for t in techniques)
    ctx.write_report(
        f"# {ctx.verb} {ctx.recipe}\n\nHardware: {info['hardware']}. Model: {info['model']} "
        f"({info['parameters'] / 1e6:.2f} M parameters, {info['layers']} blocks), fp32. Batch: {cfg.batch_size} sequences. "
        f"Saved for backward: unique non-parameter storages that autograd (or a checkpoint) keeps, counted in "
        f"saved_tensors_hooks. Peak memory: {info['peak_memory']}, reset per cell, over {cfg.steps} engine steps "
        f"(AdamW included, the final checkpoint not); growth in cell: that peak minus the memory in use at the cell's "
        f"start; step time: the fastest step after the first (the least disturbed by other processes; the median is "
        f"in the JSON). Δ against the baseline at the same length.\n\n"
        f"{markdown_table(table, header)}\n\n{chr(10).join(goal_lines)}\n\n{described}\n\n"
        f"![activation bytes](activation_bytes.png)\n![peak memory](peak_memory.png)\n![step time](step_time.png)\n")


def run(cfg: Config, ctx: Run) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from labcli.data.text import lm_blocks
    from labcli.engine import distributed
    from labcli.engine.backprop import blocks_of
    from labcli.eval.measure import hardware_line, peak_memory_kind
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
            "layers": len(blocks_of(model)), "batch_size": cfg.batch_size, "seq_lens": seq_lens,
            "peak_memory": peak_memory_kind(device), "steps": cfg.steps}
    data = {}
    for seq in seq_lens:
        data[seq] = lm_blocks(texts, loaded.tokenizer, seq)
        if len(data[seq]) < cfg.batch_size:
            raise UserError(f"only {len(data[seq])} blocks of {seq} tokens", "lower batch_size or seq_lens")

    rows = []
    previous = os.environ.get("LAB_NO_PROGRESS")
    os.environ["LAB_NO_PROGRESS"] = "1"  # one bar over cells instead of one per training run
    try:
        with Progress(TextColumn("[bold]bench backprop"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), TimeElapsedColumn(), disable=previous == "1") as bar:
            task = bar.add_task("", total=len(seq_lens) * len(techniques))
            for seq in seq_lens:
                ref = None
                for technique in techniques:
                    bar.update(task, description=f"seq {seq}: {technique}")
                    row, ref = cell(cfg, ctx, model, data[seq], seq, technique, ref, device)
                    rows.append(row)
                    bar.update(task, advance=1)
    finally:
        if previous is None:
            os.environ.pop("LAB_NO_PROGRESS", None)
        else:
            os.environ["LAB_NO_PROGRESS"] = previous
    report(cfg, ctx, rows, info)
    print(f"bench backprop: {len(rows)} cells -> {ctx.path('report.md')}")
