"""`lab bench engine`: lab's training loop vs a plain Hugging Face `Trainer` doing the same computation.

Both sides build the same model (same preset and seed, no dropout), take the same batches in the
same order (the engine's sampler; the Trainer reads them sequentially), use the same optimizer
and LR schedule objects (lab's factories, handed to the Trainer through `optimizers=`), clip the
same way and log the loss every step. So their losses must agree: the bench fails (exit 1) if the
two sides' mean losses differ by more than 1e-4. (That check found that transformers 5.24's Trainer
scales a GPT-2's loss by (T-1)/T, see `hf_side`.) Each run is its own process (peak memory is its
own, through `labcli.eval.measure`, reset when training starts) with the same thread count, and
the sides alternate (lab, HF, HF, lab, ...) for `repeats` runs each; the table shows the median
and the min-max spread. Throughput is timed the same way on both sides: from the log of step 1
to the log of the last step (start-up and the engine's final checkpoint excluded).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import CheckFailed, UserError
from labcli.runs import Run, set_threads

RESUMABLE = True  # finished repeats are kept (ctx.cell); --resume auto runs the rest
SIDES = ("lab engine", "HF Trainer")
LOSS_TOLERANCE = 1e-4


class Config(RecipeConfig):
    model: str = Field("tiny-gpt2", description="Causal-LM preset or id (both sides load it the same way)")
    block_size: int = Field(64, ge=8, description="Tokens per example")
    repeats: int = Field(5, ge=5, description="Runs per side, interleaved (median and min-max reported)")
    train: TrainConfig = Field(
        TrainConfig(max_steps=40, batch_size=16, micro_batch_size=16, lr=3e-3, schedule="cosine", warmup_steps=5,
                    tensorboard=False, strategy="single"),
        description="The training both sides run (fp32, one process)")


def validate(cfg: Config) -> None:
    if cfg.train.precision != "fp32" or cfg.train.strategy not in ("single", "auto") or cfg.train.compile:
        raise UserError("bench engine compares fp32 single-process runs",
                        "set train.precision=fp32 train.strategy=single train.compile=false")
    if cfg.train.eval_every or cfg.train.activation_checkpointing or cfg.train.max_steps < 5:
        raise UserError("bench engine times plain training steps (no evaluation or checkpointing, 5+ steps)",
                        "set train.eval_every=0 train.activation_checkpointing=false train.max_steps>=5")


def check(cfg: Config) -> None:
    """What `run` would refuse (`lab check` reports the UserError raised)."""
    validate(cfg)


def run(cfg: Config, ctx: Run) -> None:
    from labcli.eval import plots
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import print_table

    validate(cfg)
    runs = {side: [] for side in SIDES}
    load = [os.getloadavg()[0]]
    for r in range(cfg.repeats):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):  # alternate who goes first
            runs[side].append(ctx.cell(f"{side.replace(' ', '-')}-{r}", lambda: call_side(cfg, ctx, side, r)))
    load.append(os.getloadavg()[0])
    rows = summarize(runs, cfg)
    hardware = hardware_line()
    loss_gap = mean_loss_gap(runs)
    ctx.write_summary({"rows": rows, "table": display(rows), "runs": runs, "hardware": hardware, "load_avg_1min": load,
                       "max_mean_loss_gap": loss_gap, "loss_tolerance": LOSS_TOLERANCE})
    plots.bars({r["side"]: {"steps/s": r["steps_per_s"], "growth in training (100 MB)": r["peak_growth_mb"] / 100}
                for r in rows}, ctx.path("engine_vs_trainer.png"), "lab engine vs HF Trainer (medians)")
    ctx.write_report(f"# lab bench engine\n\n{describe(cfg, hardware, load)}\n\n{table(rows)}\n"
                     f"Largest gap between the two sides' mean losses over the repeats: {loss_gap:.2e} "
                     f"(must be <= {LOSS_TOLERANCE:g}).\n\n![engine vs trainer](engine_vs_trainer.png)\n")
    print_table(display(rows), title="bench engine")
    check_losses(loss_gap, ctx.path("report.md"))


def mean_loss_gap(runs: dict[str, list[dict]]) -> float:
    """The largest difference between the two sides' mean losses, run by run."""
    return max(abs(a["mean_loss"] - b["mean_loss"]) for a, b in zip(runs["lab engine"], runs["HF Trainer"]))


def check_losses(gap: float, report) -> None:
    if not gap <= LOSS_TOLERANCE:  # NaN fails too
        raise CheckFailed(f"the two sides' mean losses differ by {gap:.2e} > {LOSS_TOLERANCE:g}: they did not "
                          f"compute the same training", f"see {report}")


def summarize(runs: dict[str, list[dict]], cfg: Config) -> list[dict]:
    """Median, min and max of every measure per side; Δ of the medians against HF Trainer."""
    rows = []
    for side, results in runs.items():
        row = {"side": side, "repeats": len(results)}
        for key in ("steps_per_s", "tokens_per_s", "peak_memory_mb", "peak_growth_mb", "mean_loss"):
            values = [m[key] for m in results]
            row.update({key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)})
        rows.append(row)
    base = rows[-1]
    for row in rows:
        row["throughput_vs_hf"] = row["steps_per_s"] / base["steps_per_s"] - 1
        row["memory_vs_hf"] = row["peak_memory_mb"] / base["peak_memory_mb"] - 1
        row["growth_vs_hf"] = row["peak_growth_mb"] / base["peak_growth_mb"] - 1
    return rows


def display(rows: list[dict]) -> list[dict]:
    """The table: medians with [min-max] spreads, as text."""
    return [{"side": r["side"], "runs": r["repeats"],
             "steps/s": f"{r['steps_per_s']:.2f} [{r['steps_per_s_min']:.2f}-{r['steps_per_s_max']:.2f}]",
             "tokens/s": f"{r['tokens_per_s']:.0f} [{r['tokens_per_s_min']:.0f}-{r['tokens_per_s_max']:.0f}]",
             "Δ steps/s": f"{100 * r['throughput_vs_hf']:+.1f}%",
             "peak memory MB": f"{r['peak_memory_mb']:.0f} [{r['peak_memory_mb_min']:.0f}-{r['peak_memory_mb_max']:.0f}]",
             "Δ memory": f"{100 * r['memory_vs_hf']:+.1f}%",
             "growth in training MB": f"{r['peak_growth_mb']:.0f} [{r['peak_growth_mb_min']:.0f}-{r['peak_growth_mb_max']:.0f}]",
             "Δ growth": f"{100 * r['growth_vs_hf']:+.1f}%", "mean train loss": f"{r['mean_loss']:.6f}"} for r in rows]


def table(rows: list[dict]) -> str:
    from labcli.eval.tables import markdown_table

    return markdown_table(display(rows))


def describe(cfg: Config, hardware: str, load: list[float]) -> str:
    t = cfg.train
    return (f"{cfg.model}, batch {t.batch_size} x {cfg.block_size} tokens, {t.max_steps} steps, {t.optimizer} lr {t.lr} "
            f"({t.schedule}, {t.warmup_steps} warm-up steps), fp32, one process per run; {hardware}; load average "
            f"{load[0]:.1f} at the start, {load[1]:.1f} at the end. {cfg.repeats} runs per side, interleaved: median "
            f"[min-max]; Δ compares the medians with HF Trainer's. Peak memory: {peak_kind()}; it includes what each "
            f"process had resident before training (interpreter, imports: the Trainer side imports more), so growth in "
            f"training (peak minus the RSS when training started) is the part the loop itself adds.")


def peak_kind() -> str:
    import torch

    from labcli.eval.measure import peak_memory_kind

    return peak_memory_kind(torch.device("cpu")) + ", reset when training starts"


def call_side(cfg: Config, ctx: Run, side: str, repeat: int) -> dict:
    """One run of one side in a fresh process; its measures."""
    out = ctx.dir / f"{'lab' if side == 'lab engine' else 'hf'}-{repeat}"
    proc = subprocess.run([sys.executable, "-m", "labcli.recipes.bench.engine", side, cfg.model_dump_json(), str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"the {side} side failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}",
                        f"run `python -m labcli.recipes.bench.engine '{side}' CONFIG_JSON OUT` alone to see why")
    return json.loads((out / "measures.json").read_text())


def build(cfg: Config):
    """What both sides start from: the model and the training blocks (identical in every process)."""
    from labcli.data.text import lm_blocks
    from labcli.models import load_model
    from labcli.models.causal_lm import read_texts

    texts = read_texts(None)
    loaded = load_model(cfg.model, "causal-lm", tokenizer_texts=lambda: texts, vocab_size=2000, seed=cfg.seed)
    return loaded.model, lm_blocks(texts, loaded.tokenizer, cfg.block_size)


def measures(times: list[float], losses: list[float], peak_mb: float, start_mb: float, cfg: Config) -> dict:
    span = times[-1] - times[0]
    steps = len(times) - 1
    return {"steps_per_s": steps / span, "tokens_per_s": steps * cfg.train.batch_size * cfg.block_size / span,
            "peak_memory_mb": peak_mb, "memory_at_start_mb": start_mb, "peak_growth_mb": peak_mb - start_mb,
            "mean_loss": sum(losses) / len(losses), "losses": losses}


def lab_side(cfg: Config, out) -> dict:
    import torch

    from labcli.data.text import collate_lm
    from labcli.engine.trainer import train
    from labcli.eval.measure import memory_mb, reset_peak_memory

    model, blocks = build(cfg)
    run = Run(out, "bench", "engine:lab", cfg)
    reset_peak_memory(torch.device("cpu"))  # as on the HF side (train() resets again: the same point)
    start = memory_mb(torch.device("cpu"))
    train(model, blocks, collate_lm, cfg.train, run, seed=cfg.seed, device=torch.device("cpu"), progress=False)
    steps = [m for m in run.metrics() if "loss" in m]
    peak = max(m["peak_mem_mb"] for m in steps)
    return measures([m["time"] for m in steps], [m["loss"] for m in steps], peak, start, cfg)


def hf_side(cfg: Config, out) -> dict:
    """The same training written the way a Trainer user would, handed lab's optimizer and schedule."""
    import time

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from labcli.data.text import collate_lm
    from labcli.engine.optimizers import make_optimizer
    from labcli.engine.schedule import make_scheduler
    from labcli.engine.trainer import batch_indices
    from labcli.eval.measure import memory_mb, peak_memory_mb, reset_peak_memory

    t = cfg.train
    model, blocks = build(cfg)
    # transformers 5.24 derives loss_type from the class name; GPT2LMHeadModel gets None, and then the
    # Trainer divides the summed loss by B x T tokens instead of the B x (T - 1) it predicts, scaling
    # loss and gradients by (T - 1) / T. Naming the loss the model computes anyway fixes the count.
    if getattr(model, "loss_type", None) is None and type(model).__name__.endswith("LMHeadModel"):
        model.loss_type = "ForCausalLM"
    ordered = [blocks[i] for step in range(t.max_steps) for i in batch_indices(step, len(blocks), t.batch_size, cfg.seed)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(t.optimizer, params, t.lr, t.weight_decay)
    scheduler = make_scheduler(optimizer, t.schedule, t.warmup_steps, t.max_steps, t.min_lr_ratio)
    args = TrainingArguments(output_dir=str(out / "trainer"), max_steps=t.max_steps, per_device_train_batch_size=t.micro_batch_size,
                             gradient_accumulation_steps=t.batch_size // t.micro_batch_size, train_sampling_strategy="sequential",
                             max_grad_norm=t.max_grad_norm, logging_steps=1, save_strategy="no", eval_strategy="no",
                             report_to=[], use_cpu=True, seed=cfg.seed, dataloader_num_workers=0, disable_tqdm=True)
    times, losses = [], []

    class StepLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                times.append(time.time())
                losses.append(float(logs["loss"]))

    trainer = Trainer(model=model, args=args, train_dataset=ordered, data_collator=collate_lm,
                      optimizers=(optimizer, scheduler), callbacks=[StepLog()])
    reset_peak_memory(torch.device("cpu"))
    start = memory_mb(torch.device("cpu"))
    trainer.train()
    return measures(times, losses, peak_memory_mb(torch.device("cpu")), start, cfg)


if __name__ == "__main__":
    from pathlib import Path

    from labcli import runs
    from labcli.paths import setup_cache_env

    setup_cache_env()
    set_threads()  # the launcher's rule, as `lab` runs
    side, config, folder = sys.argv[1], Config.model_validate_json(sys.argv[2]), Path(sys.argv[3])
    result = (lab_side if side == "lab engine" else hf_side)(config, folder)
    runs.write_json(folder / "measures.json", result)
