"""`lab bench optimizer`: torch AdamW vs 8-bit and paged optimizers, one engine run per cell, each in its own process.

A cell is (optimizer, strategy). Every cell is a fresh process (`lab bench optimizer --config
cell.yaml`, under `--nproc N` for ddp/fsdp: torch.distributed.run, gloo on the CPU, NCCL on CUDA)
that builds the same model from the same seed and trains it with the engine's `train()`, so no
cell inherits another's allocations. Peak memory is `labcli.eval.measure`'s (reset when training
starts); tokens/s is the fastest step after the first; "state in RAM" is measured with mincore
over the optimizer state's pages. Cells that cannot mean what their name says are labelled: bnb's
paged optimizers fall back to plain ones on the CPU, and bnb cannot step FSDP2's DTensors. A cell
of lab's own optimizer that fails, or whose losses leave AdamW's, fails the run (exit 1).

Memory cap (CPU): a wider model is trained by AdamW without a cap, then by AdamW and lab's paged
AdamW with the process's private memory capped (RLIMIT_DATA, see `labcli.optim.memory`) at what
the uncapped AdamW run needed minus half of its optimizer state.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.trainer import TrainConfig
from labcli.errors import CheckFailed, UserError
from labcli.runs import Run

RESUMABLE = True  # finished cells are kept (ctx.cell); --resume auto runs the rest
MULTI_PROCESS = True  # a ddp/fsdp cell is this recipe under --nproc N (the bench launches them itself)

OptimizerName = Literal["adamw", "sgd", "bnb-adamw8bit", "bnb-paged-adamw", "bnb-paged-adamw8bit", "lab-paged-adamw"]
Strategy = Literal["single", "ddp", "fsdp"]
ALL = ["adamw", "bnb-adamw8bit", "bnb-paged-adamw", "bnb-paged-adamw8bit", "lab-paged-adamw"]
PAGED = {"bnb-paged-adamw", "bnb-paged-adamw8bit", "lab-paged-adamw"}
LABS_OWN = {"lab-paged-adamw"}  # a failure of these is a failure of the run
LOSS_TOLERANCE = 1e-5  # lab-paged-adamw computes torch AdamW's update: its losses must follow AdamW's


class CapConfig(Section):
    enabled: bool = Field(True, description="Run the memory-cap cells (CPU, one process)")
    width: int = Field(512, ge=16, description="Hidden size of the tiny-* preset in the cap cells (state must dominate)")
    layers: int = Field(4, ge=1, description="Blocks of the tiny-* preset in the cap cells")
    max_steps: int = Field(5, ge=1, description="Training steps of each cap cell")
    allowance_mb: float | None = Field(
        None, gt=0, description="MB of private memory allowed above the loaded model (None: the uncapped AdamW "
                                "cell's growth minus half of its optimizer state)")


class Config(RecipeConfig):
    paged: bool = Field(False, description="Only the paged optimizers (bnb PagedAdamW, PagedAdamW8bit, "
                                           "lab-paged-adamw) plus the AdamW baseline")
    optimizers: list[OptimizerName] = Field(ALL, min_length=1, description="train.optimizer names to compare")
    strategies: list[Strategy] = Field(["single", "ddp", "fsdp"], min_length=1,
                                       description="single, ddp, fsdp (ddp and fsdp use `procs` processes)")
    model: str = Field("tiny-gpt2", description="tiny-gpt2, tiny-llama, a local model folder, or a cached hub id")
    width: int | None = Field(None, ge=16, description="Hidden size of a tiny-* preset (None: the preset's 128)")
    layers: int | None = Field(None, ge=1, description="Blocks of a tiny-* preset (None: the preset's 2)")
    block_size: int = Field(128, ge=8, description="Tokens per sequence")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")
    train: TrainConfig = Field(
        TrainConfig(max_steps=30, batch_size=8, micro_batch_size=8, lr=3e-3, schedule="constant", tensorboard=False),
        description="Training of every cell (optimizer, strategy and micro_batch_size are set per cell; "
                    "batch_size is the global batch)")
    page_budget: float = Field(1.0, gt=0, description="MB of lab-paged-adamw state allowed in RAM per process")
    page_kb: int = Field(64, ge=8, description="lab-paged-adamw page size in KB (both moments of page_kb/8 K values)")
    page_dir: str | None = Field(None, description="Folder of lab-paged-adamw's page file (None: LAB_HOME/paged-optimizer)")
    allow_tmpfs: bool = Field(False, description="Accept a page_dir on tmpfs/ramfs (the pages then stay in RAM)")
    memory_cap: CapConfig = Field(CapConfig(), description="Torch AdamW vs lab's paged AdamW under a memory cap")
    procs: int = Field(2, ge=2, description="Processes for the ddp and fsdp cells")
    worker: bool = Field(False, description="Internal: this process runs one cell (optimizers[0] x strategies[0])")
    worker_cap_mb: float | None = Field(None, description="Internal: the cap (MB above the loaded model) of this cell")


def chosen(cfg: Config) -> tuple[list[str], list[str]]:
    opts = list(dict.fromkeys(cfg.optimizers))
    if cfg.paged:
        opts = [o for o in opts if o == "adamw" or o in PAGED]
    strategies = list(dict.fromkeys(cfg.strategies))
    if cfg.page_kb % 8:
        raise UserError(f"page_kb={cfg.page_kb} is not a multiple of 8", "use e.g. page_kb=64")
    if "lab-paged-adamw" in opts and cfg.page_budget * 2**20 < 2 * cfg.page_kb * 2**10:
        raise UserError(f"page_budget={cfg.page_budget} MB holds fewer than 2 pages of {cfg.page_kb} KB",
                        f"use page_budget={2 * cfg.page_kb / 1024:g} or more, or a smaller page_kb")
    if any(s != "single" for s in strategies) and cfg.train.batch_size % cfg.procs:
        raise UserError(f"train.batch_size={cfg.train.batch_size} does not split over procs={cfg.procs}",
                        "pick a multiple of procs")
    return opts, strategies


def check_page_dir(cfg: Config) -> None:
    """Refuse a page file in RAM before any cell starts (the cells would each fail on it)."""
    from labcli.optim.paged_store import default_page_dir, filesystem_type

    folder = Path(cfg.page_dir) if cfg.page_dir else default_page_dir()
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    kind = filesystem_type(probe)
    if kind and not cfg.allow_tmpfs:
        raise UserError(f"page_dir {folder} is on {kind}, which is RAM: lab-paged-adamw's pages would never leave memory",
                        "set page_dir to a folder on a disk, or allow_tmpfs=true to accept that")


# -- one cell, in its own process -------------------------------------------------------------------
class DataSampler:
    """Samples the process's private memory (VmData) where training holds the most: after each
    forward (activations alive), after each optimizer step (gradients and state alive)."""

    def __init__(self):
        from labcli.eval.measure import data_mb

        self.read = data_mb
        self.start = self.peak = data_mb() or 0.0

    def sample(self, *_args) -> None:
        self.peak = max(self.peak, self.read() or 0.0)

    def loss(self, model, batch):
        loss = model(**batch).loss
        self.sample()
        return loss


def load(cfg: Config):
    """The model (same seed in every cell) and the training blocks."""
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
    if len(blocks) < cfg.train.batch_size:
        raise UserError(f"only {len(blocks)} blocks of {cfg.block_size} tokens", "lower train.batch_size or block_size")
    return loaded.model, blocks


def register_paged(cfg: Config) -> None:
    """Make `lab-paged-adamw` use this bench's page size, budget and page folder."""
    from labcli.engine.optimizers import register
    from labcli.optim import PagedAdamW

    budget, page = int(cfg.page_budget * 2**20), cfg.page_kb * 2**10
    register("lab-paged-adamw", lambda params, lr, wd: PagedAdamW(
        params, lr=lr, weight_decay=wd, page_budget=budget, page_bytes=page, page_dir=cfg.page_dir,
        allow_tmpfs=cfg.allow_tmpfs))


def state_in_ram(optimizer) -> dict:
    """Optimizer state bytes, and how much of it is in RAM (measured) at the end of training."""
    from labcli.optim import PagedAdamW
    from labcli.optim.memory import resident_bytes, state_tensors

    if isinstance(optimizer, PagedAdamW):
        rep = optimizer.memory_report()
        # during the steps at most max_resident_bytes were in RAM; the rest was on disk only (the final
        # checkpoint then reads every page through the page cache: clean pages the kernel may drop)
        return {"state_bytes": rep["state_bytes"], "state_in_ram_bytes": rep["max_resident_bytes"] if rep["measured"] else None,
                "state_on_disk_bytes": rep["state_bytes"] - rep["max_resident_bytes"] if rep["measured"] else 0,
                "state_where": rep["backing"],
                "paging": {k: rep[k] for k in ("budget_bytes", "page_bytes", "pages", "page_ins", "page_outs", "hits")}}
    tensors = state_tensors(optimizer)
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    return {"state_bytes": sum(t.nbytes for t in tensors), "state_in_ram_bytes": resident_bytes(tensors) if on_cpu else None,
            "state_on_disk_bytes": 0, "state_where": "RAM" if on_cpu else "device"}


def run_cell(cfg: Config, ctx: Run) -> dict:
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from labcli.data.text import collate_lm
    from labcli.engine import distributed
    from labcli.engine.trainer import train
    from labcli.optim.memory import data_cap

    name, strategy = cfg.optimizers[0], cfg.strategies[0]
    device = distributed.pick_device(cfg.device)
    distributed.init(device)
    _, world = distributed.world()
    register_paged(cfg)
    model, blocks = load(cfg)
    tc = cfg.train.model_copy(update={"optimizer": name, "strategy": strategy,
                                      "micro_batch_size": cfg.train.batch_size // world})
    cell = {"optimizer": name, "strategy": strategy, "processes": world, "status": "ok", "note": "",
            "parameters": sum(p.numel() for p in model.parameters())}
    sampler = DataSampler()
    hook = register_optimizer_step_post_hook(sampler.sample)
    capped = cfg.worker_cap_mb is not None
    cap = data_cap(int(cfg.worker_cap_mb * 2**20)) if capped else contextlib.nullcontext()
    result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with cap as limit:
                if capped:
                    cell["cap_mb"] = limit / 2**20
                result = train(model, blocks, collate_lm, tc, ctx, seed=cfg.seed, device=device,
                               loss_fn=sampler.loss, progress=False)
        except Exception as exc:  # noqa: BLE001 (a real failure of this optimizer here is the result)
            first = (str(exc).strip().splitlines() or [""])[0]
            first = first[first.find("DefaultCPUAllocator"):] if "DefaultCPUAllocator" in first else first
            done = sum(1 for r in ctx.metrics() if "loss" in r)
            cell.update(status="stopped" if capped else "cannot run", note=f"{type(exc).__name__}: {first[:160]}",
                        steps_done=done)
    hook.remove()
    cell.update(data_at_start_mb=sampler.start, data_peak_mb=sampler.peak)
    if any("Falling back to non-paged" in str(w.message) for w in caught):
        said = "bnb falls back to its non-paged optimizer on the CPU: state not paged"
        cell["note"] = f"{cell['note']}; {said}" if cell["note"] else said
    if result is None:
        return cell
    records = [r for r in ctx.metrics() if "loss" in r and "step" in r]
    speeds = sorted(r["tokens_per_s"] for r in records if r["step"] > 1) or [r["tokens_per_s"] for r in records]
    peak = torch.tensor([max(r["peak_mem_mb"] for r in records)], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    cell.update(peak_memory_mb=float(peak.item()), tokens_per_s=speeds[-1], tokens_per_s_median=speeds[len(speeds) // 2],
                final_loss=result.final_loss, losses=[r["loss"] for r in records], **state_in_ram(result.optimizer))
    if name == "lab-paged-adamw":
        p = cell["paging"]
        cell["note"] = (f"{p['pages']} pages of {p['page_bytes'] // 1024} KB in a {cell['state_where']}, "
                        f"{p['page_outs']} written out; at most {cell['state_in_ram_bytes'] / 2**20:.2f} of "
                        f"{p['budget_bytes'] / 2**20:.2f} MB in RAM (measured)")
    return cell


def run_worker(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.engine import distributed

    cell = run_cell(cfg, ctx)
    if distributed.world()[0] == 0:
        runs.write_json(ctx.path("cell.json"), cell)
    distributed.shutdown()


# -- the bench: cells in fresh processes, then the tables -------------------------------------------
def launch(cfg: Config, ctx: Run, name: str, strategy: str, folder: str, **changes) -> dict:
    """One cell through the real CLI in a fresh process (under torch.distributed.run for ddp/fsdp)."""
    import yaml

    from labcli import runs

    out, spec, log = ctx.dir / "cells" / folder, ctx.dir / "cells" / f"{folder}.yaml", ctx.dir / "cells" / f"{folder}.log"
    data = {**cfg.model_dump(mode="json"), "optimizers": [name], "strategies": [strategy], "paged": False,
            "worker": True, **changes}
    runs.write_text(spec, yaml.safe_dump(data, sort_keys=False))
    cmd = [sys.executable, "-m", "labcli", "bench", "optimizer", "--config", str(spec), "--output", str(out)]
    if strategy != "single":
        cmd += ["--nproc", str(cfg.procs)]
    with open(log, "w", encoding="utf-8") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if (out / "cell.json").exists():
        return json.loads((out / "cell.json").read_text(encoding="utf-8"))
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return {"optimizer": name, "strategy": strategy, "status": "failed",
            "note": f"process exited {code}: {lines[-1][:160] if lines else 'no output'} (see cells/{log.name})"}


def cap_cells(cfg: Config, ctx: Run, advance) -> tuple[list[dict], float]:
    """AdamW without a cap, then AdamW and lab-paged-adamw under it; returns (cells, allowance MB)."""
    wide = {"width": cfg.memory_cap.width, "layers": cfg.memory_cap.layers,
            "train": {**cfg.train.model_dump(mode="json"), "max_steps": cfg.memory_cap.max_steps}}
    reference = ctx.cell("cap-adamw-uncapped", lambda: launch(cfg, ctx, "adamw", "single", "cap-adamw-uncapped", **wide))
    advance("cap: adamw, no cap")
    if reference["status"] != "ok":
        return [reference], float("nan")
    allowance = cfg.memory_cap.allowance_mb or (
        reference["data_peak_mb"] - reference["data_at_start_mb"] - reference["state_bytes"] / 2 / 2**20)
    cells = [{**reference, "capped": False}]
    for name in ("adamw", "lab-paged-adamw"):
        cell = ctx.cell(f"cap-{name}", lambda: launch(cfg, ctx, name, "single", f"cap-{name}", worker_cap_mb=allowance, **wide))
        cells.append({**cell, "capped": True})
        advance(f"cap: {name} under the cap")
    for cell in cells:
        if cell.get("losses"):
            n = min(len(cell["losses"]), len(reference["losses"]))
            cell["max_loss_dev_vs_adamw"] = max(abs(a - b) for a, b in zip(cell["losses"][:n], reference["losses"][:n]))
    return cells, allowance


def compare(cells: list[dict]) -> None:
    """Add each cell's largest loss-curve deviation from AdamW's in the same strategy."""
    for cell in cells:
        base = next((c for c in cells if c["strategy"] == cell["strategy"] and c["optimizer"] == "adamw"
                     and c.get("losses")), None)
        if base and cell.get("losses"):
            cell["max_loss_dev_vs_adamw"] = max(abs(a - b) for a, b in zip(cell["losses"], base["losses"]))


def failures(cells: list[dict], capped: list[dict]) -> list[str]:
    """Why lab's own optimizer failed, if it did: it did not finish, or its losses left AdamW's."""
    out = []
    for c in [*cells, *[c for c in capped if c.get("capped")]]:
        if c["optimizer"] not in LABS_OWN:
            continue
        where = f"{c['optimizer']} ({c['strategy']}{', capped' if c.get('capped') else ''})"
        if c["status"] != "ok":
            out.append(f"{where} {c['status']}: {c['note']}")
        elif c.get("max_loss_dev_vs_adamw") is not None and c["max_loss_dev_vs_adamw"] > LOSS_TOLERANCE:
            out.append(f"{where} losses differ from AdamW's by {c['max_loss_dev_vs_adamw']:.2e} > {LOSS_TOLERANCE:g}")
    return out


def mb(value) -> float | None:
    return None if value is None else value / 2**20


def table_rows(cells: list[dict]) -> list[dict]:
    """Display rows (text, rounded); the raw numbers stay in the cells."""
    from labcli.eval.tables import delta, fmt

    rows = []
    for c in cells:
        base = next((b for b in cells if b["strategy"] == c["strategy"] and b["optimizer"] == "adamw"), {})
        if c["status"] != "ok":
            rows.append({"strategy": c["strategy"], "optimizer": c["optimizer"], "note": f"**{c['status']}**: {c['note']}"})
            continue
        rows.append({"strategy": c["strategy"], "optimizer": c["optimizer"], "peak memory (MB)": fmt(c["peak_memory_mb"], 1),
                     "Δ peak": delta(c["peak_memory_mb"], base.get("peak_memory_mb")),
                     "tokens/s": fmt(c["tokens_per_s"], 0), "Δ tokens/s": delta(c["tokens_per_s"], base.get("tokens_per_s")),
                     "state (MB)": fmt(mb(c["state_bytes"]), 2), "state in RAM (MB)": fmt(mb(c["state_in_ram_bytes"]), 2),
                     "final loss": fmt(c["final_loss"], 4), "max \\|Δloss\\| vs AdamW": fmt(c.get("max_loss_dev_vs_adamw")),
                     "note": c["note"]})
    return rows


def cap_rows(cells: list[dict]) -> list[dict]:
    from labcli.eval.tables import fmt

    rows = []
    for c in cells:
        if c["status"] == "ok":
            result = "finished"
        elif c["status"] == "stopped":
            n = c.get("steps_done", 0)
            result = f"stopped after {n} step{'s' * (n != 1)}: {c['note']}"
        else:
            result = f"{c['status']}: {c['note']}"
        cap = c["cap_mb"] - c["data_at_start_mb"] if c.get("cap_mb") else None
        rows.append({"optimizer": c["optimizer"], "cap (MB above the loaded model)": fmt(cap, 0),
                     "private memory peak (MB above the loaded model)": fmt(c["data_peak_mb"] - c["data_at_start_mb"], 0),
                     "result": result, "final loss": fmt(c.get("final_loss"), 4),
                     "max \\|Δloss\\| vs uncapped AdamW": fmt(c.get("max_loss_dev_vs_adamw")),
                     "state in RAM (MB)": fmt(mb(c.get("state_in_ram_bytes")), 2)})
    return rows


def report(cfg: Config, ctx: Run, cells: list[dict], capped: list[dict], info: dict) -> None:
    from labcli.eval.tables import markdown_table

    compare(cells)
    rows, crows = table_rows(cells), cap_rows(capped)
    ctx.write_summary({**info, "cells": cells, "rows": rows, "cap": {"cells": capped, "rows": crows}})
    images = "\n".join(f"![{p.stem}]({p.name})" for p in plot(cells, ctx))
    cap_text = ""
    if capped:
        cap_text = (
            f"\n\n## Under a memory cap\n\nThe model widened to {cfg.memory_cap.width} x {cfg.memory_cap.layers} blocks "
            f"({info['cap_parameters'] / 1e6:.1f} M parameters), {cfg.memory_cap.max_steps} steps, one process. The cap "
            f"is RLIMIT_DATA: private memory (heap, anonymous maps; VmData) may grow by {info['cap_allowance_mb']:.0f} MB "
            f"after the model and data are loaded: {info['cap_rule']}. lab-paged-adamw's page file is a shared file "
            f"mapping, which RLIMIT_DATA does not count (the kernel can write it out and reclaim it, as a cgroup "
            f"would); its pages in RAM are measured above.\n\n{markdown_table(crows)}")
    ctx.write_report(
        f"# {ctx.verb} {ctx.recipe}\n\n"
        f"Hardware: {info['hardware']}. Model: {info['model']} ({info['parameters'] / 1e6:.2f} M parameters). "
        f"Batch: {info['batch']}. {cfg.train.max_steps} steps, {cfg.train.schedule} lr {cfg.train.lr}. Every cell is a "
        f"fresh process. Peak memory: {info['peak_memory']} over the training steps (the final checkpoint excluded), of the "
        f"largest rank; tokens/s: the fastest step after the first (the median is in the JSON). Optimizer state is per "
        f"process (a shard under fsdp); in RAM: measured with mincore over the state's pages, at the end of training "
        f"(lab-paged-adamw: the most at once, sampled right before each write-out). lab-paged-adamw: {cfg.page_kb} KB "
        f"pages, {cfg.page_budget} MB budget, page file on {info['page_dir']}. Δ is against adamw in the same strategy."
        f"\n\n{markdown_table(rows)}\n\n{images}{cap_text}\n")


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

    ok = [c for c in cells if c["status"] == "ok" and c["state_in_ram_bytes"] is not None]
    if ok:
        labels = [f"{c['strategy']}\n{c['optimizer']}" for c in ok]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(ok)) * 1.6, 4))
        a1.bar(range(len(ok)), [c["peak_memory_mb"] for c in ok], color="tab:blue")
        a1.set_title("peak memory per process (MB)")
        ram = [c["state_in_ram_bytes"] / 2**20 for c in ok]
        a2.bar(range(len(ok)), ram, label="in RAM (measured)", color="tab:green")
        a2.bar(range(len(ok)), [c["state_on_disk_bytes"] / 2**20 for c in ok], bottom=ram, label="on disk only",
               color="tab:gray")
        a2.set_title("optimizer state per process (MB)")
        a2.legend(fontsize=7)
        for ax in (a1, a2):
            ax.set_xticks(range(len(ok)), labels, rotation=60, fontsize=7)
            ax.grid(alpha=0.3, axis="y")
        out.append(save(fig, ctx.path("memory.png")))
    return out


def check(cfg: Config) -> None:
    """What `run` would refuse before starting a cell (`lab check` reports the UserError raised)."""
    opts, _ = chosen(cfg)
    if "lab-paged-adamw" in opts:
        check_page_dir(cfg)


def run(cfg: Config, ctx: Run) -> None:
    from labcli.engine import distributed
    from labcli.eval.measure import hardware_line, peak_memory_kind
    from labcli.eval.tables import print_table, progress_bar
    from labcli.optim.paged_store import default_page_dir

    opts, strategies = chosen(cfg)
    if cfg.worker:
        if len(opts) != 1 or len(strategies) != 1:
            raise UserError("a worker runs exactly one cell", "let `lab bench optimizer` start its workers")
        run_worker(cfg, ctx)
        return
    if distributed.world()[1] > 1:
        raise UserError("lab bench optimizer launches its own ddp/fsdp processes", "drop --nproc; set procs=N instead")
    if "lab-paged-adamw" in opts:
        check_page_dir(cfg)
    device = distributed.pick_device(cfg.device)
    model, _ = load(cfg)  # bad model names and sizes fail here, before any cell
    info = {"hardware": hardware_line(device), "model": cfg.model, "parameters": sum(p.numel() for p in model.parameters()),
            "batch": f"{cfg.train.batch_size} x {cfg.block_size} tokens per step (global)",
            "peak_memory": peak_memory_kind(device), "steps": cfg.train.max_steps, "page_budget_mb": cfg.page_budget,
            "page_kb": cfg.page_kb, "page_dir": str(Path(cfg.page_dir) if cfg.page_dir else default_page_dir()),
            "load": os.getloadavg()[0]}
    del model
    with_cap = cfg.memory_cap.enabled and device.type == "cpu"
    cells, capped = [], []
    with progress_bar("bench optimizer") as bar:
        task = bar.add_task("", total=len(opts) * len(strategies) + 3 * with_cap)
        for strategy in strategies:
            for name in opts:
                bar.update(task, description=f"{strategy} / {name}")
                cells.append(ctx.cell(f"{strategy}-{name}", lambda: launch(cfg, ctx, name, strategy, f"{strategy}-{name}")))
                bar.update(task, advance=1)
        if with_cap:
            capped, allowance = cap_cells(cfg, ctx, lambda d: bar.update(task, description=d, advance=1))
            rule = (f"set by allowance_mb={cfg.memory_cap.allowance_mb}" if cfg.memory_cap.allowance_mb else
                    "the uncapped AdamW run's peak growth minus half of its optimizer state")
            info.update(cap_allowance_mb=allowance, cap_rule=rule, cap_parameters=capped[0].get("parameters", 0))
    info["load_after"] = os.getloadavg()[0]
    report(cfg, ctx, cells, capped, info)
    print_table(table_rows(cells), ["strategy", "optimizer", "peak memory (MB)", "tokens/s", "state in RAM (MB)",
                                    "final loss", "max \\|Δloss\\| vs AdamW", "note"], title="bench optimizer")
    if capped:
        print_table(cap_rows(capped), title="under a memory cap")
    bad = failures(cells, capped)
    if bad:
        raise CheckFailed(f"lab's own optimizer failed: {bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""),
                          f"see {ctx.path('report.md')}")
