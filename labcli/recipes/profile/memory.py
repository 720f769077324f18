"""`lab profile memory`: what a training plan needs per rank, predicted without weights.

The estimate is `labcli.engine.memory_plan.estimate` (see its docstring for every term); the model
is built on the meta device (`labcli.models.memory`). `--fit` searches GPU counts, strategies,
checkpointing and offload for the cheapest plan that fits (and the cheapest without offload).
`--validate` runs a fixed set of tiny plans through the engine on this CPU (1 process, and 2 under
torchrun for DDP/FSDP2) and prints predicted vs measured peak (tracked allocator bytes during a
steady-state step, `labcli.engine.memory_measure`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.memory_plan import Plan
from labcli.errors import UserError
from labcli.runs import Run


class Config(RecipeConfig, Plan):
    fit: bool = Field(False, description="Also find the cheapest plan that fits the GPU (and host) memory")
    validate_cpu: bool = Field(False, description="Measure tiny plans through the engine on this CPU vs the estimate")
    tolerance: float = Field(0.15, gt=0, description="--validate-cpu: the accepted |predicted/measured - 1|")


# The tiny plans --validate-cpu measures: every strategy, checkpointing, LoRA and QLoRA.
VALIDATION = [
    dict(model="tiny-llama", method="full", strategy="single"),
    dict(model="tiny-llama", method="full", strategy="single", activation_checkpointing="full"),
    dict(model="tiny-llama", method="full", strategy="ddp"),
    dict(model="tiny-llama", method="full", strategy="fsdp"),
    dict(model="tiny-llama", method="full", strategy="fsdp", activation_checkpointing="full"),
    dict(model="tiny-llama", method="lora", strategy="single"),
    dict(model="tiny-llama", method="lora", strategy="ddp", activation_checkpointing="full"),
    dict(model="tiny-llama", method="qlora", strategy="single"),
    dict(model="tiny-llama", method="qlora", strategy="single", activation_checkpointing="full"),
    dict(model="tiny-gpt2", method="full", strategy="single"),
    dict(model="tiny-gpt2", method="lora", strategy="fsdp"),
]
VALIDATION_SIZES = dict(seq_len=256, micro_batch=4, precision="fp32", accelerator="cpu", attention="flash", nodes=1)


def plan_of(cfg: Config) -> Plan:
    return Plan(**{k: getattr(cfg, k) for k in Plan.model_fields})


def run(cfg: Config, ctx: Run) -> None:
    if cfg.validate_cpu:
        return validate(cfg, ctx)
    from labcli.engine.memory_plan import cheapest_fit, estimate

    plan = plan_of(cfg)
    result = estimate(plan)
    fit = cheapest_fit(plan) if cfg.fit else None
    fit_no_offload = cheapest_fit(plan, allow_offload=False) if cfg.fit else None
    print(render(result, fit, fit_no_offload))
    summary = {"plan": plan.model_dump(), **summarize(result)}
    if cfg.fit:
        summary["fit"] = summarize(fit) | {"plan": fit.plan.model_dump()} if fit else None
        summary["fit_without_offload"] = (summarize(fit_no_offload) | {"plan": fit_no_offload.plan.model_dump()}
                                          if fit_no_offload else None)
    ctx.write_summary(summary)
    ctx.write_report(render(result, fit, fit_no_offload, markdown=True))


def summarize(e) -> dict:
    return {"peak_gb": round(e.peak / 1e9, 3), "fits": e.fits, "fits_gpu": e.fits_gpu, "fits_host": e.fits_host,
            "peak_moment": e.peak_moment, "parameters": e.shape.params + e.shape.lora_params,
            "trainable": e.shape.trainable, "rows_gb": {n: round(v / 1e9, 3) for n, v, _ in e.rows},
            "host_gb": {n: round(v / 1e9, 3) for n, v, _ in e.host_rows}, "host_total_gb": round(e.host_total / 1e9, 3),
            "korthikanti_per_layer_gb": {k: round(v / 1e9, 3) for k, v in e.reference["korthikanti_per_layer"].items()},
            "accelerate_training_adam_gb": round(e.reference["accelerate"]["training_adam"] / 1e9, 3)}


def command_of(plan: Plan) -> str:
    """The `lab profile memory` flags that give this plan."""
    keys = ["model", "method", "strategy", "nodes", "gpus_per_node", "gpu_memory_gb", "activation_checkpointing",
            "offload", "optimizer", "seq_len", "micro_batch", "precision"]
    return "lab profile memory " + " ".join(f"--{k.replace('_', '-')} {getattr(plan, k)}" for k in keys)


def render(e, fit=None, fit_no_offload=None, markdown: bool = False) -> str:
    from labcli.engine.memory_plan import describe, fmt
    from labcli.eval.tables import markdown_table

    p = e.plan
    rows = [[n, fmt(v), note] for n, v, note in e.rows]
    verdict = "fits" if e.fits_gpu else "does NOT fit"
    rows.append([f"peak per rank ({e.peak_moment})", fmt(e.peak), f"{verdict} in {p.gpu_memory_gb:g} GB"])
    host = [[n, fmt(v), note] for n, v, note in e.host_rows]
    host.append([f"host RAM per node ({p.loading} loading)", fmt(e.host_total),
                 ("fits" if e.fits_host else "does NOT fit") + f" in {p.host_memory_gb:g} GB"])
    k = e.reference["korthikanti_per_layer"]
    acc = e.reference["accelerate"]
    lines = [f"plan: {describe(p)}",
             f"parameters: {e.shape.params + e.shape.lora_params:,} ({e.shape.trainable:,} trainable), "
             f"{e.shape.layers} layers, hidden {e.shape.hidden}, {e.shape.heads} heads ({e.shape.kv_heads} KV)",
             "", markdown_table(rows, ["per rank", "bytes", "how"]), "", markdown_table(host, ["host", "bytes", "how"]), "",
             f"Korthikanti et al. per layer (16-bit, GPT-3 block): no recompute {fmt(k['none'])}, "
             f"flash/selective {fmt(k['selective'])}, full checkpointing {fmt(k['full'])}; "
             f"traced here: the activations row.",
             f"accelerate estimate-memory ({acc['dtype']}): model {fmt(acc['model_size'])}, training with Adam "
             f"4x = {fmt(acc['training_adam'])} in all ({fmt(acc['per_rank_if_sharded'])} per rank if sharded {p.world} "
             f"ways). It keeps weights, gradients and both Adam moments in {acc['dtype']} and counts no activations; "
             f"mixed-precision Adam is 16 bytes per parameter (fp32 master weights 4 + gradients 4 + moments 8)."]
    if fit is not None or fit_no_offload is not None:
        lines.append("")
        for label, f in (("cheapest plan that fits", fit), ("cheapest without CPU offload", fit_no_offload)):
            lines.append(f"{label}: " + (f"{describe(f.plan)}: peak {fmt(f.peak)} per rank, host {fmt(f.host_total)}"
                                         f"\n  {command_of(f.plan)}" if f else f"none up to {p.nodes}x{p.gpus_per_node} GPUs"))
    return "\n".join(lines) + "\n"


def validate(cfg: Config, ctx: Run) -> None:
    """Each tiny plan in a fresh process (2 ranks under torchrun for ddp/fsdp): predicted vs measured."""
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import markdown_table, print_table

    rows = []
    for cell in VALIDATION:
        plan = {**VALIDATION_SIZES, **cell, "gpus_per_node": 1 if cell["strategy"] == "single" else 2,
                "lora_r": cfg.lora_r, "lora_dropout": cfg.lora_dropout}
        result = measure_cell(plan)
        error = result["predicted_mb"] / result["measured_mb"] - 1
        rows.append({"model": cell["model"], "method": cell["method"], "strategy": cell["strategy"],
                     "processes": plan["gpus_per_node"], "checkpointing": cell.get("activation_checkpointing", "none"),
                     "predicted_mb": result["predicted_mb"], "measured_mb": result["measured_mb"],
                     "error_pct": round(100 * error, 1), "within": abs(error) <= cfg.tolerance,
                     "peak_moment": result["peak_moment"]})
    columns = ["model", "method", "strategy", "processes", "checkpointing", "predicted_mb", "measured_mb", "error_pct", "within"]
    print_table(rows, columns, title="predicted vs measured peak per rank (CPU, tracked allocator bytes, step 2)")
    worst = max(abs(r["error_pct"]) for r in rows)
    summary = {"hardware": hardware_line(), "sizes": VALIDATION_SIZES, "tolerance_pct": 100 * cfg.tolerance,
               "worst_error_pct": worst, "all_within": all(r["within"] for r in rows), "rows": rows}
    ctx.write_summary(summary)
    ctx.write_report("# lab profile memory --validate-cpu\n\n" + markdown_table(rows, columns) + "\n")
    print(f"{sum(r['within'] for r in rows)}/{len(rows)} plans within ±{100 * cfg.tolerance:g} %; worst {worst} %")


def measure_cell(plan: dict) -> dict:
    """Run labcli.engine.memory_measure for one plan; the largest rank's result."""
    world = plan["gpus_per_node"]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "cell")
        module = ["-m", "labcli.engine.memory_measure", json.dumps(plan), out]
        cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
                                 if world > 1 else []), *module]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LAB_THREADS": "1"})
        if proc.returncode != 0:
            raise UserError(f"measuring {plan['model']} {plan['method']} {plan['strategy']} failed: "
                            f"{proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else proc.returncode}",
                            "rerun with --debug")
        results = [json.loads(p.read_text()) for p in Path(tmp).glob("cell.rank*.json")]
    return max(results, key=lambda r: r["measured_mb"])
