"""`lab bench engine`: lab's training loop vs a plain Hugging Face `Trainer`, same model, data, batch.

Each side runs in its own process, so peak RSS is its own; both use the same thread count and no
evaluation, logging sinks or intermediate checkpoints. Throughput is timed the same way on both
sides: from the end of step 1 to the end of the last step (start-up and the final save excluded).
"Loss" is the mean training loss over all steps (what Trainer reports).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run


class Config(RecipeConfig):
    model: str = Field("tiny-gpt2", description="Causal-LM preset or id (both sides load it the same way)")
    steps: int = Field(60, ge=5, description="Optimizer steps per side")
    batch_size: int = Field(16, ge=1, description="Examples per step (one process)")
    block_size: int = Field(64, ge=8, description="Tokens per example")
    lr: float = Field(3e-3, gt=0)
    repeats: int = Field(1, ge=1, description="Runs per side; the best throughput is kept")


def run(cfg: Config, ctx: Run) -> None:
    from labcli.eval import plots

    results = {"lab engine": [], "HF Trainer": []}
    for r in range(cfg.repeats):
        results["lab engine"].append(_run_engine(cfg, ctx, r))
        results["HF Trainer"].append(_run_worker(cfg, ctx))
    best = {k: max(v, key=lambda x: x["steps_per_s"]) for k, v in results.items()}
    base = best["HF Trainer"]
    rows = []
    for name, m in best.items():
        rows.append({"technique": name, "steps_per_s": round(m["steps_per_s"], 3), "tokens_per_s": round(m["tokens_per_s"], 1),
                     "peak_rss_mb": round(m["peak_rss_mb"], 1), "mean_loss": round(m["mean_loss"], 4),
                     "throughput_ratio": round(m["steps_per_s"] / base["steps_per_s"], 3),
                     "rss_ratio": round(m["peak_rss_mb"] / base["peak_rss_mb"], 3)})
    hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {os.environ.get('LAB_THREADS', '1')}"
    table = render_table(rows, cfg, hardware)
    ctx.write_summary({"rows": rows, "runs": results, "hardware": hardware, "config": cfg.model_dump()})
    plots.bars({r["technique"]: {"steps/s": r["steps_per_s"], "peak RSS (GB)": r["peak_rss_mb"] / 1024} for r in rows},
               ctx.path("engine_vs_trainer.png"), "lab engine vs HF Trainer")
    ctx.write_report(f"# lab bench engine\n\n{table}\n\n![engine vs trainer](engine_vs_trainer.png)\n")
    print(table)


def render_table(rows: list[dict], cfg: Config, hardware: str) -> str:
    head = ("| technique | peak RSS MB | Δ% | steps/s | tokens/s | Δ% | mean train loss |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['technique']} | {r['peak_rss_mb']} | {100 * (r['rss_ratio'] - 1):+.1f} | {r['steps_per_s']} | "
                   f"{r['tokens_per_s']} | {100 * (r['throughput_ratio'] - 1):+.1f} | {r['mean_loss']} |\n" for r in rows)
    return (f"{cfg.model}, batch {cfg.batch_size} x {cfg.block_size} tokens, {cfg.steps} steps, fp32, one process; "
            f"{hardware}. Δ% against HF Trainer.\n\n" + head + body)


def _run_engine(cfg: Config, ctx: Run, r: int) -> dict:
    out = ctx.dir / f"engine-{r}"
    cmd = [sys.executable, "-m", "labcli", "finetune", "tiny-lm", f"model={cfg.model}", f"block_size={cfg.block_size}",
           f"train.max_steps={cfg.steps}", f"train.batch_size={cfg.batch_size}", f"train.micro_batch_size={cfg.batch_size}",
           f"train.lr={cfg.lr}", "train.warmup_steps=5", "train.eval_every=0", "train.save_every=0",
           "train.tensorboard=false", "eval_fraction=0.05", f"--seed={cfg.seed}", "--output", str(out)]
    _call(cmd, "lab engine")
    s = json.loads((out / "summary.json").read_text())
    steps = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    span = steps[-1]["time"] - steps[0]["time"]
    return {"steps_per_s": (len(steps) - 1) / span, "tokens_per_s": (len(steps) - 1) * cfg.batch_size * cfg.block_size / span,
            "peak_rss_mb": s["peak_memory_mb"], "mean_loss": sum(m["loss"] for m in steps) / len(steps)}


def _run_worker(cfg: Config, ctx: Run) -> dict:
    out = ctx.dir / "hf-trainer.json"
    _call([sys.executable, "-m", "labcli.recipes.bench.engine", cfg.model_dump_json(), str(out)], "HF Trainer")
    return json.loads(out.read_text())


def _call(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LAB_NO_PROGRESS": "1"})
    if proc.returncode != 0:
        raise UserError(f"the {what} side failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}",
                        "run it alone with --debug to see why")


def hf_trainer_side(cfg: Config, out_path: str) -> None:
    """The same run as `lab finetune tiny-lm` above, written the way a Trainer user would."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from labcli import runs
    from labcli.data.text import collate_lm, lm_blocks
    from labcli.models import load_model
    from labcli.models.causal_lm import read_texts

    torch.set_num_threads(int(os.environ.get("LAB_THREADS", "1")))
    texts = read_texts(None)
    loaded = load_model(cfg.model, "causal-lm", tokenizer_texts=lambda: texts, vocab_size=2000, seed=cfg.seed)
    blocks = lm_blocks(texts, loaded.tokenizer, cfg.block_size)
    train_set = blocks[max(1, int(len(blocks) * 0.05)):]
    args = TrainingArguments(output_dir=str(os.path.dirname(out_path) + "/hf-trainer"), max_steps=cfg.steps,
                             per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, warmup_steps=5,
                             lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0, logging_steps=10**9,
                             save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True, seed=cfg.seed,
                             dataloader_num_workers=0, disable_tqdm=True)
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.time())

    trainer = Trainer(model=loaded.model, args=args, train_dataset=train_set, data_collator=collate_lm,
                      callbacks=[StepClock()])
    result = trainer.train()
    span = ends[-1] - ends[0]
    runs.write_json(out_path, {"steps_per_s": (len(ends) - 1) / span,
                                 "tokens_per_s": (len(ends) - 1) * cfg.batch_size * cfg.block_size / span,
                                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                 "mean_loss": float(result.training_loss)})


if __name__ == "__main__":
    from labcli.paths import setup_cache_env

    setup_cache_env()
    hf_trainer_side(Config.model_validate_json(sys.argv[1]), sys.argv[2])
