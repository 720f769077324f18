"""`lab profile train`: where a training step and a decoding step spend their time (torch.profiler).

The engine trains the `lab finetune tiny-lm` setup (same model, method and data keys) and profiles
its first `steps` steps; then greedy `generate` of `generate_tokens` tokens is profiled. Writes
profile/trace.json and profile/generate_trace.json (open in ui.perfetto.dev or chrome://tracing),
time per phase of a step (the engine's lab::forward/backward/optimizer spans), the top ops of both,
decode ms per token, and a PNG. Times are CPU wall time inside each span; on CUDA, kernels run
asynchronously, so read the trace's GPU rows (self_device_ms) rather than the phase split.
"""

from __future__ import annotations

import json

from pydantic import Field

from labcli import runs
from labcli.errors import UserError
from labcli.models.causal_lm import CausalLMConfig, prepare
from labcli.runs import Run

PHASES = ("forward", "backward", "optimizer", "eval", "checkpoint")


MULTI_PROCESS = True  # --nproc N runs it under torch.distributed.run


class Config(CausalLMConfig):
    steps: int = Field(5, ge=1, le=200, description="Training steps to profile (from the first; train.max_steps must be larger)")
    generate_tokens: int = Field(32, ge=0, le=2048, description="Greedy tokens to profile after training (0 skips it)")
    prompt_tokens: int = Field(16, ge=1, le=2048, description="Prompt length for the decoding profile")
    top: int = Field(12, ge=1, le=100, description="Rows in each top-ops table")


def run(cfg: Config, ctx: Run) -> None:
    from labcli.data.text import collate_lm
    from labcli.engine.distributed import pick_device
    from labcli.engine.trainer import train
    from labcli.eval import plots
    from labcli.eval.profiler import StepProfiler

    if cfg.train.max_steps <= cfg.steps:
        raise UserError(f"train.max_steps={cfg.train.max_steps} must be larger than steps={cfg.steps}",
                        f"pass train.max_steps={cfg.steps + 3} (the last step evaluates and saves, outside the profile)")
    loaded, model, params, train_set, eval_set = prepare(cfg)
    profiler = StepProfiler(ctx.path("profile"), pick_device(cfg.device), cfg.steps if ctx.is_main else 0)
    result = train(model, train_set, collate_lm, cfg.train, ctx, seed=cfg.seed, eval_set=eval_set, callbacks=[profiler])
    if not ctx.is_main:
        return
    trained = json.loads((ctx.path("profile") / "ops.json").read_text(encoding="utf-8"))
    phases = {p: op_ms(trained["ops"], f"lab::{p}", "cpu_total_ms") / cfg.steps for p in PHASES}
    step_ms = sum(phases[p] for p in ("forward", "backward", "optimizer"))
    decode = profile_generate(result.model, eval_set[0]["input_ids"][:cfg.prompt_tokens], cfg, ctx) if cfg.generate_tokens else None
    from labcli.eval.measure import hardware_line

    summary = {"model": cfg.model, "method": cfg.method, "hardware": hardware_line(pick_device(cfg.device)),
               **params, "profiled_steps": cfg.steps,
               "micro_batch_size": cfg.train.micro_batch_size, "block_size": cfg.block_size, "device": trained["device"],
               "phase_ms_per_step": {p: round(v, 3) for p, v in phases.items() if v}, "train_step_ms": round(step_ms, 3),
               "train_ops_ms": round(ops_ms(trained["ops"], cfg.steps), 3), "top_train_ops": top_ops(trained["ops"], cfg.top, cfg.steps), "peak_memory_mb": round(result.peak_memory_mb, 1)}
    if decode:
        summary.update(decode)
    ctx.write_summary(summary)
    panels = {f"train: self ms per step ({cfg.method})": {o["name"]: o["ms"] for o in summary["top_train_ops"]}}
    if decode:
        panels["decode: self ms per token"] = {o["name"]: o["ms"] for o in decode["top_decode_ops"]}
    plots.hbars(panels, ctx.path("profile.png"), f"lab profile train: {cfg.model}, {trained['device']}", "ms")
    ctx.write_report(report(summary))
    print(f"train step {step_ms:.1f} ms (" + ", ".join(f"{p} {v:.1f}" for p, v in phases.items() if v) + ")"
          + (f"; decode {decode['decode_ms_per_token']:.2f} ms/token" if decode else "") + f"; report: {ctx.path('report.md')}")


def op_ms(ops: list[dict], name: str, field: str) -> float:
    return sum(o[field] for o in ops if o["name"] == name)


def ops_ms(ops: list[dict], per: int) -> float:
    """Self time of all real ops (the lab:: spans left out), per step or per token."""
    return sum(o["self_device_ms"] or o["self_cpu_ms"] for o in ops if not o["name"].startswith("lab::")) / per


def top_ops(ops: list[dict], k: int, per: int) -> list[dict]:
    """The k slowest ops by self time (the engine's lab:: spans left out), per step or per token."""
    real = [o for o in ops if not o["name"].startswith("lab::")]
    total = sum(o["self_device_ms"] or o["self_cpu_ms"] for o in real) or 1.0
    return [{"name": o["name"], "calls": round(o["calls"] / per, 2), "ms": round((o["self_device_ms"] or o["self_cpu_ms"]) / per, 4),
             "share_pct": round(100 * (o["self_device_ms"] or o["self_cpu_ms"]) / total, 1)} for o in real[:k]]


def profile_generate(model, prompt, cfg: Config, ctx: Run) -> dict:
    """Greedy decoding of exactly generate_tokens tokens under torch.profiler."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from labcli.eval.profiler import op_rows, quiet_kineto

    device = next(model.parameters()).device
    ids = prompt.unsqueeze(0).to(device)
    model.eval()
    kwargs = dict(max_new_tokens=cfg.generate_tokens, min_new_tokens=cfg.generate_tokens, do_sample=False,
                  attention_mask=torch.ones_like(ids), pad_token_id=model.config.eos_token_id)
    with torch.no_grad():
        model.generate(ids, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with quiet_kineto(), profile(activities=acts) as prof, record_function("lab::generate"):
            out = model.generate(ids, **kwargs)
    new = out.shape[1] - ids.shape[1]
    runs.write_with(ctx.path("profile") / "generate_trace.json", prof.export_chrome_trace)
    ops = op_rows(prof.key_averages())
    ms = op_ms(ops, "lab::generate", "cpu_total_ms")
    return {"decode_tokens": new, "prompt_tokens": ids.shape[1], "decode_ms_per_token": round(ms / new, 3),
            "decode_tokens_per_s": round(1000 * new / ms, 1), "decode_ops_ms": round(ops_ms(ops, new), 3), "top_decode_ops": top_ops(ops, cfg.top, new)}


def report(s: dict) -> str:
    lines = [f"# lab profile train: {s['model']} ({s['method']}) on {s['device']}", "", f"Hardware: {s['hardware']}.", "",
             f"{s['profiled_steps']} profiled training steps of {s['micro_batch_size']} x {s['block_size']} tokens; "
             f"trainable {s.get('trainable_params', '?')} of {s.get('total_params', '?')} parameters; peak memory "
             f"{s['peak_memory_mb']} MB. Traces: `profile/trace.json`, `profile/generate_trace.json` (ui.perfetto.dev).", "",
             "| phase | ms per step | share of step |", "|---|---:|---:|"]
    for p, v in s["phase_ms_per_step"].items():
        share = f"{100 * v / s['train_step_ms']:.1f} %" if p in ("forward", "backward", "optimizer") else "(outside the step)"
        lines.append(f"| {p} | {v} | {share} |")
    lines += [f"| **step** | **{s['train_step_ms']}** | 100 % |", "", "## Top ops of a training step (self time)", "",
              f"All ops together: {s['train_ops_ms']} ms of self time per step; the rest of the step is Python and dispatch.", "",
              "| op | calls/step | ms/step | share |", "|---|---:|---:|---:|"]
    lines += [f"| `{o['name']}` | {o['calls']} | {o['ms']} | {o['share_pct']} % |" for o in s["top_train_ops"]]
    if "decode_ms_per_token" in s:
        lines += ["", f"## Greedy decoding: {s['decode_tokens']} tokens after a {s['prompt_tokens']}-token prompt", "",
                  f"{s['decode_ms_per_token']} ms per token ({s['decode_tokens_per_s']} tokens/s), KV cache on; ops' self "
                  f"time {s['decode_ops_ms']} ms per token, the rest is `generate`'s Python loop and dispatch.", "",
                  "| op | calls/token | ms/token | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['name']}` | {o['calls']} | {o['ms']} | {o['share_pct']} % |" for o in s["top_decode_ops"]]
    return "\n".join(lines + ["", "![profile](profile.png)"]) + "\n"
