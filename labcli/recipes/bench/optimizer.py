"""`lab bench optimizer`: torch AdamW vs 8-bit and paged optimizers, one engine run per cell.

A cell is (optimizer, strategy). Every cell trains the same model on the same data with the
engine's `train()`; `single` cells run in this process, `ddp` and `fsdp` cells in a worker
launched as `lab bench optimizer --config worker-STRATEGY.yaml --nproc N` (torch.distributed.run, gloo on
the CPU, NCCL on CUDA). Peak memory is reset before every cell (CUDA max allocated, or the RSS
high-water mark on the CPU); tokens/s is the fastest step after the first. Cells that cannot mean
what their name says are labelled instead: bnb's paged optimizers fall back to plain ones on the
CPU, and bnb cannot step FSDP2's DTensors.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run

ALL = ["adamw", "bnb-adamw8bit", "bnb-paged-adamw", "bnb-paged-adamw8bit", "lab-paged-adamw"]
PAGED = {"bnb-paged-adamw", "bnb-paged-adamw8bit", "lab-paged-adamw"}
STRATEGIES = ("single", "ddp", "fsdp")


MULTI_PROCESS = True  # --nproc N runs it under torch.distributed.run


class Config(RecipeConfig):
    paged: bool = Field(False, description="Only the paged optimizers (bnb PagedAdamW, PagedAdamW8bit, "
                                           "lab-paged-adamw) plus the AdamW baseline")
    optimizers: str = Field(",".join(ALL), description="Comma-separated train.optimizer names to compare")
    strategy: str = Field("single,ddp,fsdp",
                          description="Comma-separated: single, ddp, fsdp (ddp/fsdp use `procs` processes)")
    model: str = Field("tiny-gpt2", description="tiny-gpt2, tiny-llama, a local model folder, or a cached hub id")
    width: int | None = Field(None, ge=16, description="Hidden size of a tiny-* preset (None: the preset's 128)")
    layers: int | None = Field(None, ge=1, description="Blocks of a tiny-* preset (None: the preset's 2)")
    steps: int = Field(30, ge=2, description="Optimizer steps per cell")
    batch_size: int = Field(8, ge=1, description="Global batch: sequences per optimizer step over all processes")
    block_size: int = Field(128, ge=8, description="Tokens per sequence")
    lr: float = Field(3e-3, gt=0, description="Constant learning rate")
    page_budget: float = Field(1.0, gt=0, description="MB of lab-paged-adamw state allowed resident per process")
    page_kb: int = Field(64, ge=8, description="lab-paged-adamw page size in KB (both moments of page_kb/8 K values)")
    procs: int = Field(2, ge=2, description="Processes for the ddp and fsdp cells")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")
    worker: bool = Field(False, description="Internal: run one strategy's cells in this torchrun process group")


def names(text: str | list, allowed, what: str) -> list[str]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if str(s).strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise UserError(f"unknown {what} '{(bad or [''])[0]}'", f"{what} is a comma-separated list of: {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def chosen(cfg: Config) -> tuple[list[str], list[str]]:
    from labcli.engine.optimizers import OPTIMIZERS

    opts = names(cfg.optimizers, list(OPTIMIZERS), "optimizers")
    if cfg.paged:
        opts = [o for o in opts if o == "adamw" or o in PAGED]
    strategies = names(cfg.strategy, STRATEGIES, "strategy")
    if cfg.page_kb % 8:
        raise UserError(f"page_kb={cfg.page_kb} is not a multiple of 8", "use e.g. --page-kb 64")
    if "lab-paged-adamw" in opts and cfg.page_budget * 2**20 < 2 * cfg.page_kb * 2**10:
        raise UserError(f"--page-budget {cfg.page_budget} MB holds fewer than 2 pages of {cfg.page_kb} KB",
                        f"use --page-budget {2 * cfg.page_kb / 1024:g} or more, or a smaller --page-kb")
    if any(s != "single" for s in strategies) and cfg.batch_size % cfg.procs:
        raise UserError(f"batch_size={cfg.batch_size} does not split over procs={cfg.procs}", "pick a multiple of procs")
    return opts, strategies


def register_paged(cfg: Config) -> None:
    """Make `lab-paged-adamw` use this bench's page size and budget (in every process)."""
    from labcli.engine.optimizers import register
    from labcli.optim import PagedAdamW

    budget, page = int(cfg.page_budget * 2**20), cfg.page_kb * 2**10
    register("lab-paged-adamw", lambda params, lr, wd: PagedAdamW(params, lr=lr, weight_decay=wd,
                                                                  page_budget=budget, page_bytes=page))


def prepare(cfg: Config):
    """The model (built once, copied per cell) and the training blocks."""
    from labcli.data.text import lm_blocks
    from labcli.models import load_model
    from labcli.models.causal_lm import read_texts

    texts = read_texts(None)
    overrides = {}
    if cfg.model.startswith("tiny-") and cfg.width:
        overrides.update(n_embd=cfg.width, hidden_size=cfg.width, intermediate_size=cfg.width * 11 // 4)
    if cfg.model.startswith("tiny-") and cfg.layers:
        overrides.update(n_layer=cfg.layers, num_hidden_layers=cfg.layers)
    loaded = load_model(cfg.model, "causal-lm", tokenizer_texts=lambda: texts, vocab_size=cfg.vocab_size,
                        preset_overrides=overrides, seed=cfg.seed)
    blocks = lm_blocks(texts, loaded.tokenizer, cfg.block_size)
    warm_up(loaded.model, blocks, cfg)
    return loaded.model, blocks


def warm_up(model, blocks, cfg: Config) -> None:
    """A few untimed passes on a copy, so the first cell does not pay for thread pools and allocators."""
    from labcli.data.text import collate_lm
    from labcli.engine import distributed

    device = distributed.pick_device(cfg.device)
    scratch = copy.deepcopy(model).to(device)
    batch = {k: v.to(device) for k, v in collate_lm(blocks[:max(1, cfg.batch_size // cfg.procs)]).items()}
    for _ in range(3):
        scratch(**batch).loss.backward()
    del scratch


def state_bytes(optimizer) -> tuple[float, float, str]:
    """(resident MB, paged-out MB, how) of an optimizer's state in this process."""
    from labcli.optim import PagedAdamW

    if isinstance(optimizer, PagedAdamW):
        rep = optimizer.memory_report()
        out = rep["backing_bytes"] - rep["resident_bytes"]  # resident pages are the live copies of theirs
        return rep["max_resident_bytes"] / 2**20, out / 2**20, rep["backing"]
    resident = paged = 0
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "to_local"):
                value = value.to_local()
            if hasattr(value, "nbytes") and hasattr(value, "is_cuda"):
                if getattr(value, "is_paged", False):
                    paged += value.nbytes
                else:
                    resident += value.nbytes
    return resident / 2**20, paged / 2**20, "cuda-unified-memory" if paged else "device"


def run_cell(cfg: Config, ctx: Run, name: str, strategy: str, base_model, blocks, device) -> dict:
    import torch

    from labcli.data.text import collate_lm
    from labcli.engine import distributed
    from labcli.engine.trainer import TrainConfig, train
    from labcli.eval.measure import memory_mb, peak_memory_mb, reset_peak_memory

    _, world = distributed.world()
    cell = {"optimizer": name, "strategy": strategy, "processes": world, "status": "ok", "note": ""}
    run = Run(dir=ctx.dir / "cells" / f"{strategy}-{name}", verb=ctx.verb, recipe=f"{ctx.recipe}:{strategy}-{name}",
              cfg=ctx.cfg)
    tc = TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, micro_batch_size=cfg.batch_size // world,
                     lr=cfg.lr, optimizer=name, strategy=strategy, schedule="constant", tensorboard=False)
    model = copy.deepcopy(base_model)
    gc.collect()
    reset_peak_memory(device)
    cell["memory_at_start_mb"] = memory_mb(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = train(model, blocks, collate_lm, tc, run, seed=cfg.seed, device=device)
        except Exception as exc:  # a real failure of this optimizer under this strategy is the result
            result = None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            cell.update(status="cannot run", note=f"{type(exc).__name__}: {first[:160]}")
    peak = torch.tensor([peak_memory_mb(device)], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    fallback = any("Falling back to non-paged" in str(w.message) for w in caught)
    if fallback:
        said = "bnb falls back to its non-paged optimizer on the CPU: state not paged"
        cell["note"] = f"{cell['note']}; {said}" if cell["note"] else said
    if result is not None:
        records = [r for r in run.metrics() if "loss" in r and "step" in r]
        speeds = sorted(r["tokens_per_s"] for r in records if r["step"] > 1) or [r["tokens_per_s"] for r in records]
        resident, paged_out, where = state_bytes(result.optimizer)
        train_peak = max((r["peak_mem_mb"] for r in records if "peak_mem_mb" in r), default=None)
        cell.update(peak_memory_mb=train_peak, peak_growth_mb=train_peak - cell["memory_at_start_mb"],
                    peak_with_checkpoint_mb=float(peak.item()), tokens_per_s=speeds[-1],
                    tokens_per_s_median=speeds[len(speeds) // 2],
                    final_loss=result.final_loss, losses=[r["loss"] for r in records],
                    state_resident_mb=resident, state_paged_out_mb=paged_out, state_where=where)
        if name == "lab-paged-adamw":
            rep = result.optimizer.memory_report()
            cell["paging"] = {k: rep[k] for k in ("state_bytes", "budget_bytes", "page_bytes", "pages",
                                                  "max_resident_bytes", "page_ins", "page_outs", "hits")}
            cell["note"] = (f"{rep['pages']} pages of {rep['page_bytes'] // 1024} KB in a {rep['backing']}; "
                            f"max {rep['max_resident_bytes'] / 2**20:.2f} of {rep['budget_bytes'] / 2**20:.2f} MB resident")
    del model, result
    gc.collect()
    return cell


def run_cells(cfg: Config, ctx: Run, opts: list[str], strategy: str, model, blocks, on_cell=None) -> list[dict]:
    from labcli.engine import distributed

    device = distributed.pick_device(cfg.device)
    distributed.init(device)
    register_paged(cfg)
    cells = []
    for name in opts:
        if on_cell:
            on_cell(f"{strategy} / {name}", advance=0)
        cells.append(run_cell(cfg, ctx, name, strategy, model, blocks, device))
        if on_cell:
            on_cell(f"{strategy} / {name}", advance=1)
    return cells


def launch_worker(cfg: Config, ctx: Run, opts: list[str], strategy: str) -> list[dict]:
    """Run one distributed strategy's cells through the real CLI under torch.distributed.run."""
    import yaml

    from labcli import runs

    folder, spec, log = ctx.dir / strategy, ctx.dir / f"worker-{strategy}.yaml", ctx.dir / f"worker-{strategy}.log"
    data = {**cfg.model_dump(mode="json"), "strategy": strategy, "optimizers": ",".join(opts), "paged": False,
            "worker": True}
    runs.write_text(spec, yaml.safe_dump(data, sort_keys=False))
    cmd = [sys.executable, "-m", "labcli", "bench", "optimizer", "--config", str(spec), "--output", str(folder),
           "--nproc", str(cfg.procs)]
    with open(log, "w", encoding="utf-8") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "LAB_NO_PROGRESS": "1"})
    result = folder / "cells.json"
    if code == 0 and result.exists():
        return json.loads(result.read_text(encoding="utf-8"))
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    why = f"worker exited {code}: {lines[-1][:140] if lines else 'no output'} (see {log.name})"
    return [{"optimizer": o, "strategy": strategy, "processes": cfg.procs, "status": "failed", "note": why} for o in opts]


def compare(cells: list[dict]) -> None:
    """Add each cell's largest loss-curve deviation from AdamW's in the same strategy."""
    for cell in cells:
        base = next((c for c in cells if c["strategy"] == cell["strategy"] and c["optimizer"] == "adamw"
                     and c.get("losses")), None)
        if base and cell.get("losses"):
            cell["max_loss_dev_vs_adamw"] = max(abs(a - b) for a, b in zip(cell["losses"], base["losses"]))


def report(cfg: Config, ctx: Run, cells: list[dict], info: dict) -> None:
    from labcli.eval.tables import delta, fmt, markdown_table

    compare(cells)
    header = ["strategy", "optimizer", "peak memory (MB)", "growth in cell (MB)", "Δ growth", "tokens/s", "Δ tokens/s",
              "state resident (MB)", "state paged out (MB)", "final loss", "max \\|Δloss\\| vs AdamW", "note"]
    rows = []
    for cell in cells:
        base = next((c for c in cells if c["strategy"] == cell["strategy"] and c["optimizer"] == "adamw"), {})
        if cell["status"] != "ok":
            rows.append([cell["strategy"], cell["optimizer"], *["-"] * 9, f"**{cell['status']}**: {cell['note']}"])
            continue
        rows.append([cell["strategy"], cell["optimizer"], fmt(cell["peak_memory_mb"]), fmt(cell["peak_growth_mb"]),
                     delta(cell["peak_growth_mb"], base.get("peak_growth_mb")), fmt(cell["tokens_per_s"], 0),
                     delta(cell["tokens_per_s"], base.get("tokens_per_s")), fmt(cell["state_resident_mb"], 2),
                     fmt(cell["state_paged_out_mb"], 2), fmt(cell["final_loss"], 4),
                     fmt(cell.get("max_loss_dev_vs_adamw"), 4), cell["note"]])
    table = markdown_table(rows, header)
    summary = {**info, "cells": cells}
    ctx.write_summary(summary)
    plots = plot(cells, ctx) if not cfg.worker else []
    images = "\n".join(f"![{p.stem}]({p.name})" for p in plots)
    ctx.write_report(
        f"# {ctx.verb} {ctx.recipe}\n\n"
        f"Hardware: {info['hardware']}. Model: {info['model']} ({info['parameters'] / 1e6:.2f} M parameters). "
        f"Batch: {info['batch']}. {cfg.steps} steps, constant lr {cfg.lr}. Peak memory: {info['peak_memory']} of rank 0, "
        f"reset before each cell, over the training steps (the engine's final checkpoint, which materialises every "
        f"optimizer's full state, is in the JSON as peak_with_checkpoint_mb); growth in cell: that peak minus the "
        f"memory in use when the cell started (earlier cells leave some behind), and its Δ; tokens/s: the fastest step after the first "
        f"(the least disturbed by other processes; the median is in the JSON). Optimizer state is per process (a shard "
        f"under fsdp): resident = in device memory (lab-paged-adamw: the most pages resident at once), paged out = in the "
        f"backing store only. "
        f"lab-paged-adamw: {cfg.page_kb} KB pages, {cfg.page_budget} MB budget. Δ is against adamw in the same strategy.\n\n"
        f"{table}\n\n{images}\n")


def plot(cells: list[dict], ctx: Run) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    strategies = list(dict.fromkeys(c["strategy"] for c in cells))
    fig, axes = plt.subplots(1, len(strategies), figsize=(5 * len(strategies), 3.6), squeeze=False)
    for ax, strategy in zip(axes[0], strategies):
        for i, c in enumerate(c for c in cells if c["strategy"] == strategy and c.get("losses")):
            style = ("-", "--", ":", "-.")[i % 4]  # equal curves stay visible on top of each other
            ax.plot(range(1, len(c["losses"]) + 1), c["losses"], label=c["optimizer"], linestyle=style)
        ax.set_title(strategy)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train loss")
    out = [save(fig, ctx.path("loss_curves.png"))]

    ok = [c for c in cells if c["status"] == "ok"]
    if ok:
        labels = [f"{c['strategy']}\n{c['optimizer']}" for c in ok]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(ok)) * 1.6, 4))
        a1.bar(range(len(ok)), [c["peak_memory_mb"] for c in ok], color="tab:blue")
        a1.set_title("peak memory per process (MB)")
        res = [c["state_resident_mb"] for c in ok]
        a2.bar(range(len(ok)), res, label="resident", color="tab:green")
        a2.bar(range(len(ok)), [c["state_paged_out_mb"] for c in ok], bottom=res, label="paged out", color="tab:gray")
        a2.set_title("optimizer state per process (MB)")
        a2.legend(fontsize=7)
        for ax in (a1, a2):
            ax.set_xticks(range(len(ok)), labels, rotation=60, fontsize=7)
            ax.grid(alpha=0.3, axis="y")
        out.append(save(fig, ctx.path("memory.png")))
    return out


def run(cfg: Config, ctx: Run) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from labcli.engine import distributed
    from labcli.eval.measure import hardware_line, peak_memory_kind

    opts, strategies = chosen(cfg)
    _, world = distributed.world()
    if world > 1 and not cfg.worker:
        raise UserError("lab bench optimizer launches its own ddp/fsdp processes", "drop --nproc; set procs=N instead")
    if cfg.worker and len(strategies) != 1:
        raise UserError("a worker runs exactly one strategy", "let `lab bench optimizer` start its workers")
    if any(o.startswith("bnb-") for o in opts):
        import bitsandbytes  # noqa: F401  (imported before the first cell, so no cell's RSS pays for it)
    model, blocks = prepare(cfg)
    device = distributed.pick_device(cfg.device)
    info = {"hardware": hardware_line(device), "model": cfg.model, "parameters": sum(p.numel() for p in model.parameters()),
            "batch": f"{cfg.batch_size} x {cfg.block_size} tokens per step (global)", "peak_memory": peak_memory_kind(device),
            "steps": cfg.steps, "page_budget_mb": cfg.page_budget, "page_kb": cfg.page_kb}

    previous = os.environ.get("LAB_NO_PROGRESS")
    os.environ["LAB_NO_PROGRESS"] = "1"  # one bar over cells instead of one per training run
    try:
        if cfg.worker:
            cells = run_cells(cfg, ctx, opts, strategies[0], model, blocks)
            if distributed.world()[0] == 0:
                from labcli import runs

                runs.write_json(ctx.path("cells.json"), cells)
            report(cfg, ctx, cells, info)
            distributed.shutdown()
            return
        cells = []
        hidden = previous == "1"
        with Progress(TextColumn("[bold]bench optimizer"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), TimeElapsedColumn(), disable=hidden) as bar:
            task = bar.add_task("", total=len(opts) * len(strategies))
            for strategy in strategies:
                if strategy == "single":
                    cells += run_cells(cfg, ctx, opts, strategy, model, blocks,
                                       on_cell=lambda d, advance: bar.update(task, description=d, advance=advance))
                else:
                    bar.update(task, description=f"{strategy}: {cfg.procs} processes, {len(opts)} cells")
                    cells += launch_worker(cfg, ctx, opts, strategy)
                    bar.update(task, advance=len(opts))
    finally:
        if previous is None:
            os.environ.pop("LAB_NO_PROGRESS", None)
        else:
            os.environ["LAB_NO_PROGRESS"] = previous
    report(cfg, ctx, cells, info)
    print(f"bench optimizer: {len(cells)} cells -> {ctx.path('report.md')}")
