"""`lab bench grpo`: lab's GRPO loop against TRL's `GRPOTrainer` on the same start model, data,
reward, group size, batch, learning rate and number of steps.

Both use token-level loss normalisation (TRL `loss_type="dapo"`), group-std reward scaling,
epsilon 0.2, beta 0, one optimizer step per generation batch, HF `generate` sampling at T=1, and
the same greedy test-accuracy evaluation every `eval_every` steps (its time is not counted).
"""

from __future__ import annotations

import time

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.reasoning.tasks import TASKS
from labcli.recipes.distill.cot import ArithSettings
from labcli.runs import Run


class Config(RecipeConfig):
    task: str = Field("arith", description=f"{', '.join(TASKS)}")
    init: str = Field("auto", description="Start model for both: auto (newest `lab distill cot` run), RUN/model or a folder")
    arith: ArithSettings = ArithSettings()
    steps: int = Field(20, ge=1, description="Optimizer steps (one generation batch each) for both")
    prompts_per_step: int = Field(16, ge=1, description="Prompts per step")
    group_size: int = Field(8, ge=2, description="G: completions per prompt")
    max_new_tokens: int = Field(48, ge=1, description="Longest completion")
    lr: float = Field(1e-4, gt=0, description="Learning rate (constant, AdamW)")
    format_weight: float = Field(0.1, ge=0, description="Format reward weight")
    test_size: int = Field(200, ge=1, description="Test problems for the accuracy curve")
    eval_every: int = Field(5, ge=1, description="Greedy test accuracy every N steps")
    micro_batch_size: int = Field(32, ge=1, description="Completions per forward/backward (lab, sorted by length and trimmed); TRL takes the whole batch at once")
    run_trl: bool = Field(True, description="Run TRL's GRPOTrainer (false: only lab, e.g. without trl installed)")
    parallel: bool = Field(False, description="Run both sides at the same time (a fair share of a busy shared CPU); false: one after the other")


def lab_side(cfg: Config, ctx: Run) -> dict:
    from labcli.recipes.distill import grpo

    gcfg = grpo.Config(seed=cfg.seed, device=cfg.device, task=cfg.task, init=cfg.init,
                       arith=cfg.arith, group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                       format_weight=cfg.format_weight, track_kl=False, test_size=cfg.test_size, eval_every=cfg.eval_every,
                       train={"max_steps": cfg.steps, "batch_size": cfg.prompts_per_step, "micro_batch_size": cfg.micro_batch_size,
                              "lr": cfg.lr, "schedule": "constant", "save_every": 0, "tensorboard": False})
    sub = Run(dir=ctx.dir / "lab", verb="distill", recipe="grpo", cfg=gcfg)
    grpo.run(gcfg, sub)
    rows = sub.metrics()
    steps = [r for r in rows if "step_s" in r]
    return {"curve": [(r["step"], r["test_accuracy"]) for r in rows if "test_accuracy" in r],
            "reward": [(r["step"], r["reward"]) for r in steps],
            "step_s": [r["step_s"] for r in steps], "peak_mem_mb": max(r["peak_mem_mb"] for r in steps)}


def trl_side(cfg: Config, ctx: Run, init: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from labcli.engine.distributed import pick_device
    from labcli.eval.measure import peak_memory_mb
    from labcli.reasoning import lm, rewards
    from labcli.reasoning.tasks import Example, load_task

    steps_range = (cfg.arith.min_steps, max(cfg.arith.min_steps, cfg.arith.max_steps))
    train_set = load_task(cfg.task, "train", seed=cfg.seed, steps=steps_range, digits=cfg.arith.digits)
    test_set = load_task(cfg.task, "test", seed=cfg.seed, n=cfg.test_size, steps=steps_range, digits=cfg.arith.digits)[:cfg.test_size]
    tok = prompt_tokenizer(AutoTokenizer.from_pretrained(init), rewards.prompt(train_set[0]))
    model = AutoModelForCausalLM.from_pretrained(init)
    device = pick_device(cfg.device)
    data = Dataset.from_list([{"prompt": rewards.prompt(e), "answer": e.answer, "kind": e.kind} for e in train_set])

    def reward_fn(completions, completion_ids, answer, kind, **_):
        out = []
        for text, ids, a, k in zip(completions, completion_ids, answer, kind):
            truncated = not ids or ids[-1] != tok.eos_token_id
            out.append(rewards.reward(text, Example("", a, k), truncated, cfg.format_weight)[0])
        return out

    curve, reward_curve, step_s, t = [], [], [], {}
    test_prompts = [rewards.prompt(e) for e in test_set]

    def accuracy(m) -> float:
        return lm.accuracy(m, tok, test_set, test_prompts, max_new_tokens=cfg.max_new_tokens, batch_size=100)["accuracy"]

    class Track(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            t["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kw):
            step_s.append(time.perf_counter() - t["start"])
            if state.global_step % cfg.eval_every == 0 or state.global_step == cfg.steps:
                curve.append((state.global_step, accuracy(model)))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                reward_curve.append((state.global_step, logs["reward"]))

    args = GRPOConfig(
        output_dir=str(ctx.dir / "trl"), max_steps=cfg.steps, per_device_train_batch_size=cfg.prompts_per_step * cfg.group_size,
        gradient_accumulation_steps=1, num_generations=cfg.group_size, max_completion_length=cfg.max_new_tokens,
        temperature=1.0, top_k=0, top_p=1.0, learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group",
        num_iterations=1, logging_steps=1, save_strategy="no", report_to="none", seed=cfg.seed, bf16=False,
        use_cpu=device.type == "cpu", disable_tqdm=True, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[Track()])
    torch.manual_seed(cfg.seed)
    curve.append((0, accuracy(trainer.model)))
    trainer.train()
    return {"curve": curve, "reward": reward_curve, "step_s": step_s, "peak_mem_mb": peak_memory_mb(device)}


def prompt_tokenizer(tok, probe: str):
    """TRL tokenizes prompts with the tokenizer's default special tokens (lab's tiny tokenizer appends
    EOS, a Llama one prepends BOS); lab's prompts, in SFT and in RL, have none. Drop them so that both
    sides condition on the same prompt ids."""
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    if tok(probe)["input_ids"] != tok(probe, add_special_tokens=False)["input_ids"]:
        raise UserError("cannot make TRL's prompt tokens equal to lab's for this tokenizer", "use a fast tokenizer")
    return tok


def _side(name: str, cfg: Config, ctx: Run, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return lab_side(cfg, ctx) if name == "lab" else trl_side(cfg, ctx, cfg.init)


def in_own_processes(sides: list[str], cfg: Config, ctx: Run) -> dict:
    """Each side runs in a fresh process, so peak memory (RSS on the CPU) is its own; with
    `parallel` both run at once and see the same machine load."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    spawn = multiprocessing.get_context("spawn")
    if cfg.parallel:
        with ProcessPoolExecutor(max_workers=len(sides), mp_context=spawn) as pool:
            futures = {s: pool.submit(_side, s, cfg, ctx, torch.get_num_threads()) for s in sides}
            return {s: f.result() for s, f in futures.items()}
    results = {}
    for s in sides:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            results[s] = pool.submit(_side, s, cfg, ctx, torch.get_num_threads()).result()
    return results


def run(cfg: Config, ctx: Run) -> None:
    import platform

    import torch

    from labcli import runs
    from labcli.eval import plots
    from labcli.recipes.distill.grpo import resolve_init

    init = resolve_init(cfg.init)
    if cfg.run_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            raise UserError("TRL is not installed", "pip install 'trl>=1.0', or pass run_trl=false") from None
    cfg = cfg.model_copy(update={"init": init})
    sides = ["lab", "trl"] if cfg.run_trl else ["lab"]
    results = in_own_processes(sides, cfg, ctx)

    hardware = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    table = {}
    for name, r in results.items():
        # the first step pays one-off warm-up costs: steps/s is over the rest when there are any
        timed = r["step_s"][1:] or r["step_s"]
        table[name] = {"final_test_accuracy": r["curve"][-1][1], "start_test_accuracy": r["curve"][0][1],
                       "steps_per_s": len(timed) / sum(timed), "s_per_step": sum(timed) / len(timed),
                       "peak_mem_mb": r["peak_mem_mb"]}
    base = table.get("trl", table["lab"])
    for row in table.values():
        row["throughput_delta_pct"] = 100 * (row["steps_per_s"] / base["steps_per_s"] - 1)
        row["memory_delta_pct"] = 100 * (row["peak_mem_mb"] / base["peak_mem_mb"] - 1)
    summary = {"hardware": hardware, "init": init, "task": cfg.task, "steps": cfg.steps, "prompts_per_step": cfg.prompts_per_step,
               "group_size": cfg.group_size, "max_new_tokens": cfg.max_new_tokens, "lr": cfg.lr, "seed": cfg.seed,
               "results": table, "curves": {k: v["curve"] for k, v in results.items()}}
    ctx.write_summary(summary)
    runs.write_json(ctx.path("bench.json"), summary)
    plt = plots._pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, r in results.items():
        ax1.plot(*zip(*r["curve"]), marker="o", label=name)
        ax2.plot(range(1, len(r["step_s"]) + 1), r["step_s"], label=name)
    ax1.set(xlabel="step", ylabel="test accuracy (greedy)", title=f"{cfg.task}: accuracy")
    ax2.set(xlabel="step", ylabel="seconds", title="seconds per step")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    plots.save(fig, ctx.path("bench.png"))
    rows = "\n".join(f"| {k} | {v['peak_mem_mb']:.0f} | {v['memory_delta_pct']:+.1f} | {v['steps_per_s']:.3f} | "
                     f"{v['throughput_delta_pct']:+.1f} | {v['start_test_accuracy']:.3f} | {v['final_test_accuracy']:.3f} |"
                     for k, v in table.items())
    curves = "\n".join(f"- {k}: " + ", ".join(f"{s}: {a:.3f}" for s, a in v["curve"]) for k, v in results.items())
    ctx.write_report(
        f"# lab bench grpo\n\nHardware: {hardware}. Start `{init}`, task {cfg.task}, {cfg.steps} steps x "
        f"{cfg.prompts_per_step} prompts x G={cfg.group_size}, lr {cfg.lr:g}, seed {cfg.seed}. Deltas against TRL.\n\n"
        f"| technique | peak memory MB | delta % | steps/s | delta % | start accuracy | final accuracy |\n"
        f"|---|---|---|---|---|---|---|\n{rows}\n\nAccuracy curves (step: greedy test accuracy):\n\n{curves}\n\n![bench](bench.png)\n")
