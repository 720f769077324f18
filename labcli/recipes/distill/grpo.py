"""`lab distill grpo|dapo`: RL on verifiable rewards from a CoT-distilled student.

The algorithm and its step are `labcli.reasoning.grpo` (GRPO, and DAPO's switches: clip-higher,
dynamic sampling, overlong filtering and shaping); the engine's loop runs it. This recipe loads the
task and the start model, keeps a frozen copy of it for the KL, trains, saves `RUN/model` and
writes the accuracy curve and report.
"""

from __future__ import annotations

import torch
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.models.peft_prep import LoraSettings, Method
from labcli.reasoning.grpo import GRPOSettings, GRPOTrainConfig
from labcli.reasoning.tasks import TASKS, ArithSettings
from labcli.runs import Run

RESUMABLE = True  # --resume continues from the newest checkpoint


class Config(RecipeConfig, GRPOSettings):
    task: str = Field("arith", description=f"{', '.join(TASKS)}, or a .jsonl file of question/answer lines")
    init: str = Field("auto", description="Start model: RUN/model, a folder, a hub id, or auto (a partly distilled `lab distill cot` "
                      "student for this task and seed, built once and cached)")
    method: Method = Field("full", description="full, lora or qlora")
    lora: LoraSettings = LoraSettings()
    arith: ArithSettings = ArithSettings()
    test_size: int = Field(200, ge=1, description="Test problems for the greedy accuracy curve")
    train: GRPOTrainConfig = GRPOTrainConfig()


def plan(cfg: Config) -> str:
    """What the run will do (`lab check`)."""
    from labcli.reasoning.grpo import describe_start

    t = cfg.train
    return (f"{t.max_steps} steps of {t.batch_size} prompts x G={cfg.group_size} completions, "
            f"{cfg.num_iterations * cfg.mini_batches} optimizer update(s) each (micro-batches of {t.micro_batch_size}), "
            f"lr {t.lr:g}, {t.precision}; {describe_start(cfg.init, cfg.task, cfg.arith, cfg.seed)}")


def run(cfg: Config, ctx: Run) -> None:
    import copy

    from labcli.engine.distributed import pick_device
    from labcli.engine.export import save_final_model
    from labcli.models import load_model, prepare_for_method
    from labcli.reasoning import grpo
    from labcli.reasoning.tasks import load_task

    device = pick_device(cfg.device)
    train_set = load_task(cfg.task, "train", seed=cfg.seed, steps=cfg.arith.steps, digits=cfg.arith.digits)
    test_set = load_task(cfg.task, "test", seed=cfg.seed, n=cfg.test_size, steps=cfg.arith.steps, digits=cfg.arith.digits)[:cfg.test_size]
    init = grpo.resolve_init(cfg.init, cfg.task, cfg.arith, cfg.seed)
    if init.startswith("tiny-"):
        raise UserError(f"init={init} is an untrained preset: every reward would be 0", "start from a `lab distill cot` run")
    loaded = load_model(init, "causal-lm", quantize_4bit=cfg.method == "qlora")
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(cfg.seed)
    model, params = prepare_for_method(loaded.model, cfg.method, cfg.lora, "causal-lm", seed=cfg.seed)
    model.to(device)
    ref = None
    if cfg.beta > 0 or cfg.track_kl:
        # a frozen copy of the start policy (QLoRA: a plain reload, 4-bit weights do not deep-copy)
        ref = load_model(init, "causal-lm").model if cfg.method == "qlora" else copy.deepcopy(model)
        ref.to(device).eval().requires_grad_(False)
    grpo.train(model, tok, train_set, test_set, cfg, cfg.train, ctx, device=device, seed=cfg.seed, ref=ref)
    save_final_model(model, tok, cfg.method, ctx.path("model"), ctx.path("adapter"))
    report(cfg, ctx, init, params, len(test_set))


def _pm(p, se) -> str:
    return "n/a" if p is None else f"{p:.3f} ± {se:.3f}"


def report(cfg: Config, ctx: Run, init: str, params: dict, n_test: int) -> None:
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table

    rows = ctx.metrics()
    evals = [r for r in rows if "test_accuracy" in r]
    steps = [r for r in rows if "reward" in r]
    start, end = (evals[0], evals[-1]) if evals else ({}, {})
    name = ctx.recipe
    mean = lambda key: sum(r.get(key, 0.0) or 0.0 for r in steps) / max(len(steps), 1)  # noqa: E731
    se = lambda p: None if p is None else (p * (1 - p) / max(n_test, 1)) ** 0.5  # noqa: E731 - binomial standard error
    summary = {"algorithm": name, "task": cfg.task, "init": init, "method": cfg.method, "seed": cfg.seed, **params,
               "steps": steps[-1]["step"] if steps else 0, "group_size": cfg.group_size, "prompts_per_step": cfg.train.batch_size,
               "test_examples": n_test, "start_test_accuracy": start.get("test_accuracy"),
               "final_test_accuracy": end.get("test_accuracy"), "start_test_se": se(start.get("test_accuracy")),
               "final_test_se": se(end.get("test_accuracy")), "final_train_accuracy": steps[-1]["accuracy"] if steps else None,
               "mean_step_s": mean("step_s"), "mean_gen_s": mean("gen_s"), "mean_clip_frac": mean("clip_frac"),
               "mean_groups_drawn": mean("groups_drawn"),
               "curve": [{"step": r["step"], "test_accuracy": r["test_accuracy"], "test_format": r.get("test_format"),
                          "test_length": r.get("test_length")} for r in evals],
               "switches": {k: getattr(cfg, k) for k in ("temperature", "clip_low", "clip_high", "beta", "dynamic_sampling",
                                                         "overlong_filter", "overlong_cache", "loss_norm", "scale_rewards",
                                                         "num_iterations", "mini_batches")}}
    ctx.write_summary(summary)
    title = f"{name} on {cfg.task} (G={cfg.group_size})"
    plots.curves(rows, ["accuracy", "test_accuracy"], ctx.path("accuracy.png"), title)
    plots.curves(rows, ["reward"], ctx.path("reward.png"), title)
    plots.curves(rows, ["length"], ctx.path("length.png"), title)
    plots.curves(rows, ["entropy", "clip_frac", "kl"], ctx.path("policy.png"), title)
    columns = ["step", "test_accuracy", "test_format", "test_length"]
    switches = ", ".join(f"{k}={v}" for k, v in summary["switches"].items())
    ctx.write_report(
        f"# lab distill {name}: {cfg.task}\n\nStart `{init}`; {summary['steps']} steps of {cfg.train.batch_size} prompts x "
        f"G={cfg.group_size}; {switches}; seed {cfg.seed}. Greedy test accuracy on {n_test} problems: "
        f"{_pm(summary['start_test_accuracy'], summary['start_test_se'])} -> {_pm(summary['final_test_accuracy'], summary['final_test_se'])} "
        f"(± one standard error). Mean {summary['mean_step_s']:.2f} s/step "
        f"({summary['mean_gen_s']:.2f} s sampling).\n\n{markdown_table(summary['curve'], columns)}\n"
        f"![accuracy](accuracy.png)\n\n![reward](reward.png)\n\n![length](length.png)\n\n![policy](policy.png)\n")
    print_table(summary["curve"], columns, title=f"{name} on {cfg.task}: greedy test accuracy ({n_test} problems)")
    print(f"test accuracy {_pm(summary['start_test_accuracy'], summary['start_test_se'])} -> "
          f"{_pm(summary['final_test_accuracy'], summary['final_test_se'])}; {summary['mean_step_s']:.2f} s/step")
