"""`lab finetune instruct`: instruction SFT through the engine with full / lora / lora8 / qlora.

One method per process; `--method all` runs the four as sub-runs (each its own peak memory) and
writes one table: trainable parameters, weight bytes, peak memory, training tokens/s, held-out loss
on the responses. Loss on the response tokens only (labcli.instruct.sft).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.eval.harness import HarnessSettings
from labcli.models.peft_prep import LoraSettings
from labcli.runs import Run

METHODS = ("full", "lora", "lora8", "qlora")


class Config(RecipeConfig):
    model: str = Field("tiny-gpt2", description="tiny-gpt2, tiny-mistral, tiny-t5 (built here), a folder, or a hub id")
    task: Literal["causal-lm", "seq2seq"] = Field("causal-lm", description="For folders and hub ids: seq2seq for T5-like models")
    method: Literal["full", "lora", "lora8", "qlora", "all"] = Field("lora", description="lora8: LoRA on an int8 base; all: the four")
    lora: LoraSettings = LoraSettings(train_embeddings=True)
    data: str | None = Field(None, description="Alpaca-format .json/.jsonl (instruction, input, output); default: the seed tasks")
    eval_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of records held out for the response loss")
    max_len: int = Field(256, ge=16, description="Tokens per example (prompt + response)")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")
    train: TrainConfig = TrainConfig(max_steps=100, batch_size=16, micro_batch_size=16, lr=3e-3, warmup_steps=10)
    harness: HarnessSettings = HarnessSettings()


def records(cfg: Config) -> list[dict]:
    from labcli.data import self_instruct
    from labcli.instruct.sft import read_alpaca

    if cfg.data:
        return read_alpaca(cfg.data)
    return [{"instruction": t["instruction"], "input": i["input"], "output": i["output"]}
            for t in self_instruct.seed_tasks() for i in t["instances"]]


def task_of(cfg: Config) -> str:
    from labcli.models import presets

    return presets.PRESETS[cfg.model][0] if cfg.model in presets.PRESETS else cfg.task


def run(cfg: Config, ctx: Run) -> None:
    if cfg.method == "all":
        return run_all(cfg, ctx)
    return train_one(cfg, ctx)


def train_one(cfg: Config, ctx: Run) -> None:
    import random

    from labcli.data.text import padded_collate
    from labcli.engine.trainer import train
    from labcli.instruct import sft
    from labcli.models import load_model, prepare_for_method

    rows = records(cfg)
    random.Random(cfg.seed).shuffle(rows)
    n_eval = max(1, int(len(rows) * cfg.eval_fraction))
    task = task_of(cfg)
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in rows] + [sft.ALPACA_INPUT, sft.ALPACA_NO_INPUT]
    loaded = load_model(cfg.model, task, quantize_4bit=cfg.method == "qlora", quantize_8bit=cfg.method == "lora8",
                        tokenizer_texts=lambda: texts, vocab_size=cfg.vocab_size, seed=cfg.seed)
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # lora8 trains like qlora: adapters on a frozen quantized base
    model, params = prepare_for_method(loaded.model, "qlora" if cfg.method == "lora8" else cfg.method, cfg.lora, task,
                                       seed=cfg.seed)
    make = sft.seq2seq_example if task == "seq2seq" else sft.causal_example
    data = [make(tok, r, cfg.max_len) for r in rows]
    result = train(model, data[n_eval:], padded_collate(tok.pad_token_id), cfg.train, ctx, seed=cfg.seed,
                   eval_set=data[:n_eval])
    save(result.model, tok, cfg.method, ctx)
    scores = score(result.model, tok, task, cfg, ctx)
    summary = {"model": cfg.model, "task": task, "method": cfg.method, **params, "records": len(rows),
               "eval_records": n_eval, "steps": result.steps, "final_loss": round(result.final_loss, 4),
               "eval_loss": None if result.eval_loss is None else round(result.eval_loss, 4),
               "tokens_per_s": round(result.tokens / max(result.wall_s, 1e-9), 1),
               "peak_memory_mb": round(result.peak_memory_mb, 1), **scores}
    ctx.write_summary(summary)
    ctx.write_report(f"# lab finetune instruct: {cfg.model} ({cfg.method})\n\n"
                     + "\n".join(f"- {k}: {v}" for k, v in summary.items() if k != "harness") + "\n")
    print(f"{cfg.model} ({cfg.method}): {params['trainable_params']:,} trainable of {params['total_params']:,}, "
          f"{result.steps} steps, final loss {summary['final_loss']}, held-out response loss {summary['eval_loss']}"
          + "".join(f", {k} {v}" for k, v in scores.items() if k.startswith("harness_")))


def score(model, tok, task: str, cfg: Config, ctx: Run) -> dict:
    """lm-evaluation-harness on lab's local tasks (labcli.eval.harness), the trained model as it is in
    memory (adapters unmerged, a quantized base still quantized): {"harness_TASK": score, "harness": details}."""
    from labcli.eval import harness

    if not cfg.harness.tasks:
        return {}
    result = harness.evaluate(model, tok, task, cfg.harness.tasks, ctx.path("harness_tasks"), limit=cfg.harness.limit,
                              batch_size=cfg.harness.batch_size, max_gen_toks=cfg.harness.max_gen_toks, seed=cfg.seed)
    return {**harness.columns(result), "harness": result}


def save(model, tok, method: str, ctx: Run) -> None:
    """full/lora/qlora: a plain model (adapters merged) + the adapter; lora8: the adapter only (merging
    into an int8 base would change what was trained)."""
    from labcli import runs
    from labcli.engine.export import save_final_model

    if method == "lora8":
        runs.replace_dir(ctx.path("adapter"), lambda tmp: model.save_pretrained(str(tmp)))
        return
    save_final_model(model, tok, method, ctx.path("model"), ctx.path("adapter"))


COLUMNS = ["method", "trainable_params", "weight_bytes", "peak_memory_mb", "tokens_per_s", "final_loss", "eval_loss"]


def run_all(cfg: Config, ctx: Run) -> None:
    from labcli.eval.tables import markdown_table, print_table

    rows = []
    for method in METHODS:
        sub = ctx.dir / method
        if not (sub / "summary.json").exists():
            cmd = [sys.executable, "-m", "labcli", "finetune", "instruct", "--config", str(ctx.path("config.yaml")),
                   f"method={method}", "--output", str(sub)]
            if subprocess.call(cmd) != 0:
                raise UserError(f"the {method} sub-run failed (see above)", f"fix it, then rerun with --output {ctx.dir}")
        rows.append(json.loads((sub / "summary.json").read_text()))
    columns = COLUMNS + [f"harness_{t}" for t in cfg.harness.tasks]
    ctx.write_summary({"model": cfg.model, "method": "all", "harness_limit": cfg.harness.limit,
                       "rows": [{c: r.get(c) for c in ["model", *columns]} for r in rows]})
    ctx.write_report(f"# lab finetune instruct --method all: {cfg.model}\n\n{markdown_table(rows, columns)}\n\n"
                     f"harness_*: lm-evaluation-harness scores on lab's local tasks, the first {cfg.harness.limit} test "
                     f"documents each, generation capped at {cfg.harness.max_gen_toks} tokens (GSM8K/SVAMP: exact match "
                     "of the last number; ARC/StrategyQA: accuracy by log-likelihood).\n")
    print_table(rows, columns, title=f"lab finetune instruct: {cfg.model}, {len(METHODS)} methods")
