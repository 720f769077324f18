"""`lab distill grpo|dapo`: RL on verifiable rewards, one loop with DAPO's switches.

Per step: draw `train.batch_size` prompts, sample `group_size` completions each, score them (exact
answer + format), normalise rewards within each group (the advantage), and take a clipped-ratio
policy-gradient step with token-level loss normalisation (optionally a k3 KL to the start model).
DAPO adds clip-higher (clip_high > clip_low), dynamic sampling (drop groups whose completions are all
right or all wrong and draw more prompts until the batch is full) and overlong filtering/shaping.
The engine provides the optimizer, schedule, checkpoints (exact `--resume auto`) and logging.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.models.peft_prep import LoraSettings, Method
from labcli.reasoning.tasks import TASKS
from labcli.recipes.distill.cot import ArithSettings
from labcli.runs import Run

RESUMABLE = True  # --resume continues from the newest checkpoint


class Config(RecipeConfig):
    task: str = Field("arith", description=f"{', '.join(TASKS)}, or a .jsonl file of question/answer lines")
    init: str = Field("auto", description="Start model: auto (newest `lab distill cot` run's model), RUN/model, a folder or hub id")
    method: Method = Field("full", description="full, lora or qlora")
    lora: LoraSettings = LoraSettings()
    arith: ArithSettings = ArithSettings()
    group_size: int = Field(8, ge=2, description="G: completions sampled per prompt")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts")
    max_new_tokens: int = Field(48, ge=1, description="Longest completion (rollouts and evaluation)")
    format_weight: float = Field(0.1, ge=0, description="Weight of the format reward next to the 0/1 answer reward")
    clip_low: float = Field(0.2, gt=0, lt=1, description="epsilon_low: ratio clipped below at 1 - clip_low")
    clip_high: float = Field(0.2, gt=0, description="epsilon_high: ratio clipped above at 1 + clip_high (DAPO: 0.28)")
    beta: float = Field(0.0, ge=0, description="KL penalty to the start model (k3 estimator); 0 as in DAPO")
    track_kl: bool = Field(True, description="Log the KL to the start model even when beta is 0 (keeps a frozen copy)")
    scale_rewards: bool = Field(True, description="Divide advantages by the group's reward std (GRPO); false: Dr. GRPO")
    loss_norm: Literal["token", "sequence"] = Field("token", description="token: mean over all tokens (DAPO); sequence: per-sequence mean (original GRPO)")
    num_iterations: int = Field(1, ge=1, description="mu: passes over each sampled batch")
    mini_batches: int = Field(1, ge=1, description="Optimizer steps per pass, each on a slice of the groups (DAPO/PPO style)")
    dynamic_sampling: bool = Field(False, description="DAPO: drop all-right/all-wrong groups and refill the batch")
    max_sample_rounds: int = Field(4, ge=1, description="Most generation rounds per step when refilling")
    overlong_filter: bool = Field(False, description="DAPO: truncated completions do not enter the loss")
    overlong_cache: int = Field(0, ge=0, description="DAPO soft overlong punishment over the last N tokens (0: off)")
    test_size: int = Field(200, ge=1, description="Test problems for the greedy accuracy curve")
    eval_every: int = Field(10, ge=0, description="Evaluate test accuracy every N steps (0: start and end only)")
    eval_batch_size: int = Field(100, ge=1, description="Prompts per generation batch at evaluation")
    train: TrainConfig = TrainConfig(max_steps=40, batch_size=16, micro_batch_size=64, lr=1e-4, schedule="constant",
                                     save_every=20)


# ---------------------------------------------------------------- the algorithm, as pure functions


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps); consecutive `group_size` rows form a group."""
    r = rewards.view(-1, group_size)
    adv = r - r.mean(1, keepdim=True)
    if scale:
        adv = adv / (r.std(1, keepdim=True) + eps)
    return adv.view(-1)


def policy_loss(logp, old_logp, adv, mask, clip_low: float, clip_high: float, *, beta: float = 0.0,
                ref_logp=None, norm: str = "token", n_tokens: float | None = None, n_seqs: float | None = None):
    """Clipped-ratio policy-gradient loss; returns (loss, stats of its tokens).

    logp/old_logp/ref_logp/mask: [N, T]; adv: [N]. `n_tokens`/`n_seqs` are the totals of the whole
    batch when this is one micro-batch of it (so the micro-batch losses add up to the batch loss).
    """
    mask = mask.float()
    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(1)
    unclipped = ratio * a
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * a
    per_token = -torch.minimum(unclipped, clipped)
    kl = None
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        if beta:
            per_token = per_token + beta * kl
    if norm == "token":
        loss = (per_token * mask).sum() / (n_tokens if n_tokens is not None else mask.sum().clamp(min=1))
    else:
        per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
        loss = per_seq.sum() / (n_seqs if n_seqs is not None else len(per_seq))
    is_clipped = ((ratio < 1 - clip_low) & (a < 0)) | ((ratio > 1 + clip_high) & (a > 0))
    stats = {"clip_tokens": float((is_clipped.float() * mask).sum()), "tokens": float(mask.sum()),
             "kl_sum": float((kl.detach() * mask).sum()) if kl is not None else None}
    return loss, stats


@dataclass
class Group:
    """One prompt's G completions as drawn: the round's Completions rows [lo, lo + G)."""

    prompt_index: int
    rewards: torch.Tensor  # [G] total reward (answer + format + overlong shaping)
    correct: torch.Tensor  # [G] 0/1
    chunk: int  # which generation round
    lo: int


def informative(group: Group) -> bool:
    """DAPO keeps a group only when some but not all completions are right."""
    return 0 < float(group.correct.sum()) < len(group.correct)


def fill_batch(draw: Callable[[int], list[Group]], n_groups: int, dynamic: bool, max_rounds: int):
    """Draw rounds of groups; with `dynamic`, drop all-same groups and keep drawing until `n_groups`.

    Returns (kept groups, every drawn group, rounds used). Without `dynamic` one round is used as is.
    """
    kept, drawn, rounds = [], [], 0
    while rounds < (max_rounds if dynamic else 1):
        new = draw(rounds)
        rounds += 1
        drawn += new
        kept += [g for g in new if informative(g)] if dynamic else new
        if len(kept) >= n_groups:
            break
    return kept[:n_groups], drawn, rounds


# ---------------------------------------------------------------- the recipe


def resolve_init(init: str) -> str:
    if init != "auto":
        return init
    from labcli.paths import runs_root

    runs = sorted((p for p in runs_root().glob("distill-cot-*") if (p / "model" / "config.json").exists()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError("no `lab distill cot` run with a model to start from",
                        "run `lab distill cot` first, or pass init=RUN/model (or a model folder or id)")
    return str(runs[-1] / "model")


def run(cfg: Config, ctx: Run) -> None:
    from labcli.engine import checkpoint
    from labcli.engine.distributed import pick_device, world
    from labcli.engine.export import save_final_model
    from labcli.engine.metrics import LiveLog
    from labcli.engine.optimizers import make_optimizer
    from labcli.engine.schedule import make_scheduler
    from labcli.engine.trainer import batch_indices
    from labcli.eval import plots
    from labcli.eval.measure import peak_memory_mb
    from labcli.models import load_model, prepare_for_method
    from labcli.reasoning import lm, rewards
    from labcli.reasoning.tasks import load_task

    if world()[1] > 1:
        raise UserError("lab distill grpo/dapo runs in one process", "drop --nproc")
    unsupported = {k: v for k, v in (("strategy", cfg.train.strategy in ("ddp", "fsdp")), ("compile", cfg.train.compile),
                                     ("activation_checkpointing", cfg.train.activation_checkpointing)) if v}
    if unsupported:
        raise UserError(f"train.{next(iter(unsupported))} is not supported by the GRPO loop", "leave it at its default")
    device = pick_device(cfg.device)
    steps = (cfg.arith.min_steps, max(cfg.arith.min_steps, cfg.arith.max_steps))
    train_set = load_task(cfg.task, "train", seed=cfg.seed, steps=steps, digits=cfg.arith.digits)
    test_set = load_task(cfg.task, "test", seed=cfg.seed, n=cfg.test_size, steps=steps, digits=cfg.arith.digits)[:cfg.test_size]
    init = resolve_init(cfg.init)
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
    tc = cfg.train
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(tc.optimizer, trainable, tc.lr, tc.weight_decay)
    scheduler = make_scheduler(optimizer, tc.schedule, tc.warmup_steps, tc.max_steps * cfg.num_iterations * cfg.mini_batches, tc.min_lr_ratio)
    start = 0
    if ctx.resume_from is not None:
        start = checkpoint.load(ctx.resume_from, model, optimizer, scheduler)["step"]
        runs.truncate_jsonl(ctx.metrics_path, start)
    live = LiveLog(ctx, tc, total=tc.max_steps, start=start, enabled=True)
    test_prompts = [rewards.prompt(ex) for ex in test_set]

    def test_accuracy() -> dict:
        r = lm.accuracy(model, tok, test_set, test_prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size)
        return {"test_accuracy": r["accuracy"], "test_format": r["format_rate"], "test_length": r["mean_length"]}

    if start == 0:
        live.log(step=0, **test_accuracy())

    G = cfg.group_size
    for step in range(start + 1, tc.max_steps + 1):
        t0 = time.perf_counter()
        chunks: list[lm.Completions] = []

        def draw(round_: int) -> list[Group]:
            ids = batch_indices((step - 1) * cfg.max_sample_rounds + round_, len(train_set), tc.batch_size, cfg.seed)
            out = lm.generate(model, tok, [rewards.prompt(train_set[i]) for i in ids], max_new_tokens=cfg.max_new_tokens,
                              num_return=G, sample=True, temperature=cfg.temperature, device=device)
            chunks.append(out)
            groups = []
            for k, i in enumerate(ids):
                rs, cs = [], []
                for j in range(k * G, (k + 1) * G):
                    total, correct = rewards.reward(out.texts[j], train_set[i], out.truncated[j], cfg.format_weight)
                    total += rewards.overlong_penalty(int(out.lengths[j]), cfg.max_new_tokens, cfg.overlong_cache)
                    rs.append(total)
                    cs.append(correct)
                groups.append(Group(i, torch.tensor(rs), torch.tensor(cs), len(chunks) - 1, k * G))
            return groups

        kept, drawn, rounds = fill_batch(draw, tc.batch_size, cfg.dynamic_sampling, cfg.max_sample_rounds)
        gen_s = time.perf_counter() - t0
        all_correct = torch.cat([g.correct for g in drawn])
        all_rewards = torch.cat([g.rewards for g in drawn])
        all_lengths = torch.cat([c.lengths.float() for c in chunks])
        all_trunc = sum((c.truncated for c in chunks), [])
        record = {"reward": float(all_rewards.mean()), "accuracy": float(all_correct.mean()),
                  "length": float(all_lengths.mean()), "truncated": sum(all_trunc) / len(all_trunc),
                  "groups_kept": len(kept), "groups_drawn": len(drawn), "rounds": rounds}
        stats = update(cfg, model, ref, optimizer, scheduler, trainable, chunks, kept) if kept else {}
        dt = time.perf_counter() - t0
        record.update(stats, gen_s=gen_s, step_s=dt, lr=scheduler.get_last_lr()[0], peak_mem_mb=peak_memory_mb(device))
        record["tokens_per_s"] = float(all_lengths.sum()) / dt
        record.setdefault("loss", float("nan"))
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == tc.max_steps:
            record.update(test_accuracy())
        live.log(step=step, **record)
        if (tc.save_every and step % tc.save_every == 0) or step == tc.max_steps:
            checkpoint.save(ctx.dir / "checkpoints", step, model, optimizer, scheduler, {}, _config_yaml(ctx), tc.keep_last)
    live.close()
    save_final_model(model, tok, cfg.method, ctx.path("model"), ctx.path("adapter"))
    report(cfg, ctx, init, params, plots, len(test_set))


def update(cfg: Config, model, ref, optimizer, scheduler, trainable, chunks, kept: list[Group]) -> dict:
    """Optimizer steps on the kept groups: `num_iterations` passes, each split into `mini_batches`
    steps (the ratio leaves 1 from the second step on, so clipping acts). Returns loss, entropy,
    clip fraction and KL to the start model."""
    from labcli.reasoning import lm

    G, mb = cfg.group_size, cfg.train.micro_batch_size
    device_type = next(model.parameters()).device.type
    autocast = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if cfg.train.precision == "bf16" else contextlib.nullcontext
    # per group: its generation round, rows, advantages (group-normalised) and loss mask
    items = []
    for g in kept:
        chunk = chunks[g.chunk]
        rows = torch.arange(g.lo, g.lo + G)
        mask = chunk.completion_mask[rows].clone()
        if cfg.overlong_filter:
            mask[torch.tensor([chunk.truncated[g.lo + j] for j in range(G)])] = 0
        items.append((g.chunk, rows, group_advantages(g.rewards, G, cfg.scale_rewards), mask))
    n_mini = min(cfg.mini_batches, len(items))
    minis = [items[i::n_mini] for i in range(n_mini)]

    def micro_batches(mini):
        """Rows of one mini-batch, grouped by generation round (same prompt length), sorted by
        completion length and cut into micro-batches, each trimmed to its longest completion (the
        padding it drops is masked out of the loss anyway, so the sum of the losses is unchanged)."""
        for c in sorted({it[0] for it in mini}):
            chunk = chunks[c]
            rows = torch.cat([it[1] for it in mini if it[0] == c])
            adv = torch.cat([it[2] for it in mini if it[0] == c])
            mask = torch.cat([it[3] for it in mini if it[0] == c])
            order = chunk.completion_mask[rows].sum(1).argsort(stable=True)
            rows, adv, mask = rows[order], adv[order], mask[order]
            for lo in range(0, len(rows), mb):
                r = rows[lo:lo + mb]
                n = chunk.prompt_len + int(chunk.completion_mask[r].sum(1).max())
                seq, att = chunk.sequences[r, :n], chunk.attention_mask[r, :n]
                yield (c, lo), chunk.prompt_len, seq, att, adv[lo:lo + mb], mask[lo:lo + mb, :n - chunk.prompt_len]

    old, refs = {}, {}
    with torch.no_grad():  # the sampling policy's log-probs (needed once the policy has moved) and the reference's
        for m, mini in enumerate(minis):
            for key, plen, seq, att, _, _ in micro_batches(mini):
                with autocast():
                    if cfg.num_iterations > 1 or n_mini > 1:
                        old[m, key] = lm.token_logprobs(model, seq, att, plen)[0]
                    if ref is not None:
                        refs[m, key] = lm.token_logprobs(ref, seq, att, plen)[0]
    totals = {"loss": 0.0, "clip_tokens": 0.0, "tokens": 0.0, "kl_sum": 0.0, "entropy_sum": 0.0, "updates": 0}
    grad_norm = torch.tensor(0.0)
    model.train()
    for _ in range(cfg.num_iterations):
        for m, mini in enumerate(minis):
            n_tokens = float(sum(float(it[3].sum()) for it in mini))
            n_seqs = float(sum(int((it[3].sum(1) > 0).sum()) for it in mini))
            if n_tokens == 0:
                continue
            for key, plen, seq, att, adv, mask in micro_batches(mini):
                with autocast():
                    logp, entropy = lm.token_logprobs(model, seq, att, plen, with_entropy=True)
                loss, st = policy_loss(logp, old.get((m, key), logp.detach()), adv, mask, cfg.clip_low, cfg.clip_high,
                                       beta=cfg.beta, ref_logp=refs.get((m, key)), norm=cfg.loss_norm,
                                       n_tokens=n_tokens, n_seqs=n_seqs)
                loss.backward()
                totals["loss"] += loss.item()
                totals["clip_tokens"] += st["clip_tokens"]
                totals["tokens"] += st["tokens"]
                totals["kl_sum"] += st["kl_sum"] or 0.0
                totals["entropy_sum"] += float((entropy.detach() * mask).sum())
            if cfg.train.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            totals["updates"] += 1
    if not totals["updates"]:
        return {"loss": 0.0}
    n = max(totals["tokens"], 1.0)
    out = {"loss": totals["loss"] / totals["updates"], "entropy": totals["entropy_sum"] / n,
           "clip_frac": totals["clip_tokens"] / n, "grad_norm": float(grad_norm), "updates": totals["updates"]}
    if ref is not None:
        out["kl"] = totals["kl_sum"] / n
    return out


def _pm(p, se) -> str:
    return "n/a" if p is None else f"{p:.3f} ± {se:.3f}"


def _config_yaml(ctx: Run) -> str:
    from labcli.config import to_yaml

    return to_yaml(ctx.cfg)


def report(cfg: Config, ctx: Run, init: str, params: dict, plots, n_test: int) -> None:
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
               "switches": {k: getattr(cfg, k) for k in ("clip_low", "clip_high", "beta", "dynamic_sampling", "overlong_filter",
                                                         "overlong_cache", "loss_norm", "scale_rewards", "num_iterations", "mini_batches")}}
    ctx.write_summary(summary)
    title = f"{name} on {cfg.task} (G={cfg.group_size})"
    plots.curves(rows, ["accuracy", "test_accuracy"], ctx.path("accuracy.png"), title)
    plots.curves(rows, ["reward"], ctx.path("reward.png"), title)
    plots.curves(rows, ["length"], ctx.path("length.png"), title)
    plots.curves(rows, ["entropy", "clip_frac", "kl"], ctx.path("policy.png"), title)
    table = "\n".join(f"| {r['step']} | {r.get('test_accuracy', float('nan')):.3f} | {r.get('test_format', float('nan')):.3f} | "
                      f"{r.get('test_length', float('nan')):.1f} |" for r in evals)
    switches = ", ".join(f"{k}={v}" for k, v in summary["switches"].items())
    ctx.write_report(
        f"# lab distill {name}: {cfg.task}\n\nStart `{init}`; {summary['steps']} steps of {cfg.train.batch_size} prompts x "
        f"G={cfg.group_size}; {switches}; seed {cfg.seed}. Greedy test accuracy on {n_test} problems: "
        f"{_pm(summary['start_test_accuracy'], summary['start_test_se'])} -> {_pm(summary['final_test_accuracy'], summary['final_test_se'])} "
        f"(± one standard error). Mean {summary['mean_step_s']:.2f} s/step "
        f"({summary['mean_gen_s']:.2f} s sampling).\n\n| step | test accuracy (greedy) | format ok | mean tokens |\n"
        f"|---|---|---|---|\n{table}\n\n![accuracy](accuracy.png)\n\n![reward](reward.png)\n\n![length](length.png)\n\n"
        f"![policy](policy.png)\n")
