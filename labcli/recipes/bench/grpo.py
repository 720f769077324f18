"""`lab bench grpo`: lab's GRPO step (`labcli.reasoning.grpo` on the engine) against TRL's
`GRPOTrainer`, from the same start model, on the same data, reward, group size, batch, micro-batch,
learning rate and number of steps.

Both sides: token-level loss (TRL `loss_type="dapo"`), group-std reward scaling, epsilon 0.2, beta
0, one optimizer step per generation batch, computed in micro-batches of `train.micro_batch_size`
completions whose gradients add up (TRL: `per_device_train_batch_size` x
`gradient_accumulation_steps`), sampling at T=1 with log-probs at the same T, dropout off, AdamW at
a constant LR, grad-norm clip 1.0, and the same greedy test-accuracy evaluation (not timed).
What differs is each side's own technique: lab samples with a KV-cached loop that encodes each
prompt once, and cuts its micro-batches from completions sorted by length, trimmed to the longest
(TRL pads every micro-batch to the batch's longest completion).

Each side runs in its own fresh process. Memory is what the training holds: on CUDA the allocator's
peak tensor bytes; on the CPU the peak resident set during training minus the resident set right
after that side's imports (torch, transformers, TRL and its dependencies, or lab's modules), so the
libraries' import footprint is not counted. Both peaks are read at the end of each step, so the last
evaluation is outside them and earlier ones are inside on both sides.
"""

from __future__ import annotations

import statistics
import time

from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig, Section
from labcli.errors import UserError
from labcli.reasoning.tasks import TASKS, ArithSettings
from labcli.runs import Run

RESUMABLE = True  # a finished side is kept (ctx.cell); --resume auto runs the other


class BenchTrain(Section):
    """The training keys both sides honour."""

    max_steps: int = Field(20, ge=1, description="Optimizer steps, one generation batch each, for both")
    batch_size: int = Field(16, ge=1, description="Prompts per step")
    micro_batch_size: int = Field(32, ge=1, description="Completions per forward/backward on both sides (divides batch_size x group_size)")
    lr: float = Field(1e-4, gt=0, description="Learning rate (AdamW, constant, no warm-up, no weight decay)")
    eval_every: int = Field(5, ge=1, description="Greedy test accuracy every N steps (and at step 0)")


class Config(RecipeConfig):
    task: str = Field("arith", description=f"{', '.join(TASKS)}")
    init: str = Field("auto", description="Start model for both: RUN/model, a folder, or auto (the `lab distill grpo` default start)")
    arith: ArithSettings = ArithSettings()
    group_size: int = Field(8, ge=2, description="G: completions per prompt")
    max_new_tokens: int = Field(48, ge=1, description="Longest completion")
    format_weight: float = Field(0.1, ge=0, description="Format reward weight")
    test_size: int = Field(200, ge=1, description="Test problems for the accuracy curve")
    train: BenchTrain = BenchTrain()
    run_trl: bool = Field(True, description="Run TRL's GRPOTrainer (false: only lab, e.g. without trl installed)")
    parallel: bool = Field(False, description="Run both sides at the same time (a fair share of a busy shared CPU); false: one after the other")


def load_tasks(cfg: Config):
    from labcli.reasoning.tasks import load_task

    steps, digits = cfg.arith.steps, cfg.arith.digits
    train_set = load_task(cfg.task, "train", seed=cfg.seed, steps=steps, digits=digits)
    test_set = load_task(cfg.task, "test", seed=cfg.seed, n=cfg.test_size, steps=steps, digits=digits)[:cfg.test_size]
    return train_set, test_set


def lab_side(cfg: Config, ctx: Run, baseline_mb: float) -> dict:
    import shutil

    import torch

    from labcli.engine.distributed import pick_device
    from labcli.models import load_model
    from labcli.reasoning import grpo

    train_set, test_set = load_tasks(cfg)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.init, "causal-lm")
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(cfg.seed)
    s = grpo.GRPOSettings(group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens, format_weight=cfg.format_weight,
                          track_kl=False)
    t = cfg.train
    tc = grpo.GRPOTrainConfig(max_steps=t.max_steps, batch_size=t.batch_size, micro_batch_size=t.micro_batch_size, lr=t.lr,
                              schedule="constant", eval_every=t.eval_every, save_every=0, tensorboard=False)
    sub = ctx.sub("lab")
    shutil.rmtree(sub.root, ignore_errors=True)  # a rerun into the same --output starts this cell afresh
    grpo.train(loaded.model, tok, train_set, test_set, s, tc, sub, device=device, seed=cfg.seed, progress=False)
    rows = sub.metrics()
    steps = [r for r in rows if "step_s" in r]
    return {"curve": [(r["step"], r["test_accuracy"]) for r in rows if "test_accuracy" in r],
            "reward": [(r["step"], r["reward"]) for r in steps], "step_s": [r["step_s"] for r in steps],
            "peak_mb": max(r["peak_mem_mb"] for r in steps), "baseline_mb": baseline_mb}


def trl_side(cfg: Config, ctx: Run, baseline_mb: float) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from labcli.engine.distributed import pick_device
    from labcli.eval.measure import peak_memory_mb, reset_peak_memory
    from labcli.reasoning import lm, rewards
    from labcli.reasoning.tasks import Example

    train_set, test_set = load_tasks(cfg)
    tok = prompt_tokenizer(AutoTokenizer.from_pretrained(cfg.init), rewards.prompt(train_set[0]))
    model = AutoModelForCausalLM.from_pretrained(cfg.init)
    device = pick_device(cfg.device)
    data = Dataset.from_list([{"prompt": rewards.prompt(e), "answer": e.answer, "kind": e.kind} for e in train_set])

    def reward_fn(completions, completion_ids, answer, kind, **_):
        out = []
        for text, ids, a, k in zip(completions, completion_ids, answer, kind):
            truncated = not ids or ids[-1] != tok.eos_token_id
            out.append(rewards.reward(text, Example("", a, k), truncated, cfg.format_weight)[0])
        return out

    curve, reward_curve, step_s, peaks, t = [], [], [], [], {}
    test_prompts = [rewards.prompt(e) for e in test_set]

    def accuracy(m) -> float:
        return lm.accuracy(m, tok, test_set, test_prompts, max_new_tokens=cfg.max_new_tokens, batch_size=100,
                           progress=False)["accuracy"]

    class Track(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            t["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kw):
            step_s.append(time.perf_counter() - t["start"])
            peaks.append(peak_memory_mb(device))
            if state.global_step % cfg.train.eval_every == 0 or state.global_step == cfg.train.max_steps:
                curve.append((state.global_step, accuracy(model)))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                reward_curve.append((state.global_step, logs["reward"]))

    completions = cfg.train.batch_size * cfg.group_size
    args = GRPOConfig(
        output_dir=str(ctx.dir / "trl"), max_steps=cfg.train.max_steps, per_device_train_batch_size=cfg.train.micro_batch_size,
        gradient_accumulation_steps=completions // cfg.train.micro_batch_size, num_generations=cfg.group_size,
        max_completion_length=cfg.max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, learning_rate=cfg.train.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0, epsilon=0.2,
        loss_type="dapo", scale_rewards="group", num_iterations=1, disable_dropout=True, logging_steps=1,
        save_strategy="no", report_to="none", seed=cfg.seed, bf16=False, use_cpu=device.type == "cpu", disable_tqdm=True,
        dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[Track()])
    torch.manual_seed(cfg.seed)
    reset_peak_memory(device)  # as lab's engine does at the start of its loop, before its step-0 evaluation
    curve.append((0, accuracy(trainer.model)))
    trainer.train()
    return {"curve": curve, "reward": reward_curve, "step_s": step_s, "peak_mb": max(peaks), "baseline_mb": baseline_mb}


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
    """One side in a fresh process: its imports, the resident set they leave, then its training."""
    import torch

    torch.set_num_threads(threads)
    import_side(name, cfg.init)
    from labcli.engine.distributed import pick_device
    from labcli.eval.measure import memory_mb

    baseline = memory_mb(pick_device(cfg.device))
    return lab_side(cfg, ctx, baseline) if name == "lab" else trl_side(cfg, ctx, baseline)


def import_side(name: str, init: str) -> None:
    """Everything a side imports, lazily loaded modules included, so that its baseline holds them: the
    start model's modeling and tokenizer code (both sides), then lab's modules or TRL's."""
    from transformers import AutoConfig, AutoTokenizer  # noqa: F401
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(init))]  # imports the model class's module
    import transformers.modeling_utils  # noqa: F401
    import transformers.models.auto.tokenization_auto  # noqa: F401

    import labcli.reasoning.lm  # noqa: F401 - the shared evaluation and reward
    if name == "lab":
        import labcli.engine.loop  # noqa: F401
        import labcli.models  # noqa: F401
        import labcli.models.tokenizer  # noqa: F401
        import labcli.reasoning.grpo  # noqa: F401
    else:
        import datasets  # noqa: F401
        from trl import GRPOConfig, GRPOTrainer  # noqa: F401


def in_own_processes(sides: list[str], cfg: Config, ctx: Run) -> dict:
    """Each side runs in a fresh process, so its memory is its own; with `parallel` both run at once
    and see the same machine load."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    spawn = multiprocessing.get_context("spawn")
    if cfg.parallel:
        def both() -> dict:
            with ProcessPoolExecutor(max_workers=len(sides), mp_context=spawn, initializer=runs.quiet_libraries) as pool:
                futures = {s: pool.submit(_side, s, cfg, ctx, torch.get_num_threads()) for s in sides}
                return {s: f.result() for s, f in futures.items()}
        return ctx.cell("-".join(sides), both)

    def one(s: str) -> dict:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn, initializer=runs.quiet_libraries) as pool:
            return pool.submit(_side, s, cfg, ctx, torch.get_num_threads()).result()
    return {s: ctx.cell(s, lambda: one(s)) for s in sides}  # a finished side is kept for --resume auto


def plan(cfg: Config) -> str:
    """What the run will do (`lab check`)."""
    from labcli.reasoning.grpo import describe_start

    t = cfg.train
    sides = "lab and TRL" if cfg.run_trl else "lab"
    return (f"{sides}: {t.max_steps} steps of {t.batch_size} prompts x G={cfg.group_size}, micro-batches of "
            f"{t.micro_batch_size} completions, lr {t.lr:g}; {describe_start(cfg.init, cfg.task, cfg.arith, cfg.seed)}")


def micro_batch_error(cfg: Config) -> UserError | None:
    completions = cfg.train.batch_size * cfg.group_size
    if completions % cfg.train.micro_batch_size:
        return UserError(f"train.micro_batch_size={cfg.train.micro_batch_size} does not divide the {completions} completions "
                         f"of a step (train.batch_size x group_size)", "pick a divisor, e.g. train.micro_batch_size=32")
    return None


def check(cfg: Config) -> list[str]:
    """Problems `lab check` reports before the run."""
    error = micro_batch_error(cfg)
    return [str(error)] if error else []


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.engine.distributed import pick_device
    from labcli.eval import plots
    from labcli.eval.measure import hardware_line, peak_memory_kind
    from labcli.eval.tables import delta, markdown_table, print_table
    from labcli.reasoning.grpo import resolve_init

    if error := micro_batch_error(cfg):
        raise error
    init = resolve_init(cfg.init, cfg.task, cfg.arith, cfg.seed)
    if cfg.run_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            raise UserError("TRL is not installed", "pip install 'trl>=1.0', or pass run_trl=false") from None
    cfg = cfg.model_copy(update={"init": init})
    sides = ["lab", "trl"] if cfg.run_trl else ["lab"]
    results = in_own_processes(sides, cfg, ctx)

    device = pick_device(cfg.device)
    cpu = device.type == "cpu"
    memory_label = ("peak RSS during training minus RSS after imports" if cpu
                    else f"{peak_memory_kind(device)} during training")
    table = []
    for name, r in results.items():
        timed = r["step_s"][1:] or r["step_s"]  # the first step pays one-off warm-up costs
        table.append({"side": name, "train_memory_mb": r["peak_mb"] - (r["baseline_mb"] if cpu else 0.0),
                      "peak_mb": r["peak_mb"], "imports_mb": r["baseline_mb"] if cpu else None,
                      "s_per_step": statistics.median(timed), "s_per_step_min": min(timed), "s_per_step_max": max(timed),
                      "steps_per_s": len(timed) / sum(timed),
                      "start_test_accuracy": r["curve"][0][1], "final_test_accuracy": r["curve"][-1][1]})
    base = table[-1]  # TRL when it ran
    for row in table:
        row["memory_vs_trl"] = delta(row["train_memory_mb"], base["train_memory_mb"])
        row["speed_vs_trl"] = delta(row["steps_per_s"], base["steps_per_s"])
    summary = {"hardware": hardware_line(device), "memory": memory_label, "init": init, "task": cfg.task,
               "steps": cfg.train.max_steps, "prompts_per_step": cfg.train.batch_size, "group_size": cfg.group_size,
               "micro_batch_size": cfg.train.micro_batch_size, "max_new_tokens": cfg.max_new_tokens, "lr": cfg.train.lr,
               "seed": cfg.seed, "parallel": cfg.parallel, "rows": table,
               "curves": {k: v["curve"] for k, v in results.items()},
               "step_s": {k: [round(x, 4) for x in v["step_s"]] for k, v in results.items()}}
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
    columns = ["side", "train_memory_mb", "memory_vs_trl", "s_per_step", "s_per_step_min", "s_per_step_max",
               "speed_vs_trl", "start_test_accuracy", "final_test_accuracy"]
    curves = "\n".join(f"- {k}: " + ", ".join(f"{s}: {a:.3f}" for s, a in v["curve"]) for k, v in results.items())
    ctx.write_report(
        f"# lab bench grpo\n\nHardware: {summary['hardware']}. Start `{init}`, task {cfg.task}, {cfg.train.max_steps} steps x "
        f"{cfg.train.batch_size} prompts x G={cfg.group_size}, micro-batches of {cfg.train.micro_batch_size} completions on "
        f"both sides, lr {cfg.train.lr:g}, seed {cfg.seed}. Memory: {memory_label}. Seconds per step: median and range over "
        f"steps 2-{cfg.train.max_steps} (evaluations not timed); speed is steps/s against TRL.\n\n"
        f"{markdown_table(table, columns)}\nAccuracy curves (step: greedy test accuracy):\n\n{curves}\n\n![bench](bench.png)\n")
    print_table(table, columns, title=f"lab bench grpo ({summary['hardware']}; memory: {memory_label})")
