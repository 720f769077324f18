"""GRPO (Shao et al. 2024) and DAPO (Yu et al. 2025) on verifiable rewards, as a step on the engine's loop.

One step: draw `train.batch_size` prompts, sample `group_size` completions each at temperature T,
score them (exact answer + format, optionally DAPO's soft overlong punishment), normalise the
rewards within each group (the advantage), and take clipped-ratio policy-gradient updates with
token-level loss normalisation (optionally a k3 KL to the start model). DAPO adds clip-higher
(clip_high > clip_low), dynamic sampling (drop groups whose completions are all right or all wrong
and draw more prompts until the batch is full) and overlong filtering.

Two details of the update: the log-probabilities are those of the distribution the tokens were
drawn from (logits / T), and the policy runs with dropout off (eval mode) in the update as in
sampling, so the ratio compares the sampling policy with the updated one and nothing else (with
dropout on, a fresh mask would move it, and the old/new log-probs would be of different networks).

`train(...)` runs the step on `labcli.engine.loop.fit`, which owns the optimizer, the schedule (one
LR per step, whatever the number of updates in it), clipping, checkpoints and exact resume, metrics,
progress and the test-accuracy cadence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from pydantic import Field

from labcli.config import Section
from labcli.engine.loop import FitResult, Loop, LoopConfig, fit
from labcli.engine.trainer import batch_indices
from labcli.errors import UserError
from labcli.runs import Run


class GRPOSettings(Section):
    """The algorithm's switches (GRPO defaults; DAPO turns on clip-higher, dynamic sampling, overlong handling)."""

    group_size: int = Field(8, ge=2, description="G: completions sampled per prompt")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts (the loss's log-probs use it too)")
    max_new_tokens: int = Field(48, ge=1, description="Longest completion (rollouts and evaluation)")
    format_weight: float = Field(0.1, ge=0, description="Weight of the format reward next to the 0/1 answer reward")
    clip_low: float = Field(0.2, gt=0, lt=1, description="epsilon_low: ratio clipped below at 1 - clip_low")
    clip_high: float = Field(0.2, gt=0, description="epsilon_high: ratio clipped above at 1 + clip_high (DAPO: 0.28)")
    beta: float = Field(0.0, ge=0, description="KL penalty to the start model (k3 estimator); 0 as in DAPO")
    track_kl: bool = Field(True, description="Log the KL to the start model even when beta is 0 (keeps a frozen copy)")
    scale_rewards: bool = Field(True, description="Divide advantages by the group's reward std (GRPO); false: Dr. GRPO")
    loss_norm: Literal["token", "sequence"] = Field("token", description="token: mean over all tokens (DAPO); sequence: per-sequence mean (original GRPO)")
    num_iterations: int = Field(1, ge=1, description="mu: passes over each sampled batch")
    mini_batches: int = Field(1, ge=1, description="Optimizer updates per pass, each on a slice of the groups (DAPO/PPO style)")
    dynamic_sampling: bool = Field(False, description="DAPO: drop all-right/all-wrong groups and refill the batch")
    max_sample_rounds: int = Field(4, ge=1, description="Most generation rounds per step when refilling")
    overlong_filter: bool = Field(False, description="DAPO: truncated completions do not enter the loss")
    overlong_cache: int = Field(0, ge=0, description="DAPO soft overlong punishment over the last N tokens (0: off)")
    eval_batch_size: int = Field(100, ge=1, description="Prompts per generation batch at evaluation")


class GRPOTrainConfig(LoopConfig):
    """The engine's keys as GRPO/DAPO use them: a step is one rollout batch and its updates."""

    max_steps: int = Field(40, ge=1, description="Steps: each samples one rollout batch, then takes num_iterations x mini_batches optimizer updates")
    batch_size: int = Field(16, ge=1, description="Prompts per step (each sampled group_size times)")
    micro_batch_size: int = Field(64, ge=1, description="Completions per forward/backward in the update (sorted by length, padding trimmed)")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate")
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="LR decay after warm-up, per step")
    warmup_steps: int = Field(0, ge=0, description="Linear LR warm-up in steps (rollout batches, as max_steps); one LR for all updates of a step")
    eval_every: int = Field(10, ge=0, description="Greedy test accuracy every N steps (also at step 0 and the last step; 0: only those)")
    save_every: int = Field(20, ge=0, description="Checkpoint every N steps (0: only at the end)")


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


# ---------------------------------------------------------------- the step on the engine


def start_overrides(task: str, arith, seed: int) -> list[str]:
    """The `lab distill cot` run that `init=auto` starts from: a partly distilled student (the CoT
    trace on a seeded half of its examples, the bare answer on the rest), so it reasons on some
    answers and guesses on others and RL has room to improve it; same task, difficulty and seed."""
    out = ["--task", task, "--seed", str(seed), "cot_fraction=0.5", "train.max_steps=800", "direct_baseline=false"]
    if task == "arith":
        out += [f"arith.min_steps={arith.min_steps}", f"arith.max_steps={arith.max_steps}", f"arith.digits={arith.digits}"]
    return out


def describe_start(init: str, task: str, arith, seed: int) -> str:
    """Where a run starts, in words (for `lab check`)."""
    if init != "auto":
        return f"start {init}"
    return f"start: the cached `lab distill cot {' '.join(start_overrides(task, arith, seed))}` (built first if missing)"


def resolve_init(init: str, task: str, arith, seed: int) -> str:
    """`auto`: the model of the start run of `start_overrides`, built once and cached under LAB_HOME
    (`runs.prerequisite`); anything else (RUN/model, a folder, a hub id) as given."""
    if init != "auto":
        return init
    from labcli import runs

    folder = runs.prerequisite("distill", "cot", start_overrides(task, arith, seed), "init=auto: the partly distilled CoT start")
    return str(folder / "model")


def train(model, tokenizer, train_set: list, test_set: list, s: GRPOSettings, tc: GRPOTrainConfig, run: Run, *,
          device: torch.device, seed: int, ref=None, progress: bool = True) -> FitResult:
    """GRPO/DAPO on `train_set` for tc.max_steps steps; greedy test accuracy at step 0, every
    tc.eval_every steps and at the end. `ref`: a frozen start model, needed when s.beta > 0 (and
    used to log the KL when given). Resumes from run.resume_from."""
    from labcli.reasoning import lm, rewards

    if s.beta > 0 and ref is None:
        raise ValueError("beta > 0 needs the reference model (ref=)")
    G = s.group_size
    test_prompts = [rewards.prompt(ex) for ex in test_set]

    def evaluate(loop: Loop, i: int) -> dict:
        r = lm.accuracy(loop.model, tokenizer, test_set, test_prompts, max_new_tokens=s.max_new_tokens,
                        batch_size=s.eval_batch_size, progress=progress)
        return {"test_accuracy": r["accuracy"], "test_format": r["format_rate"], "test_length": r["mean_length"]}

    def step(loop: Loop, i: int) -> dict:
        t0 = time.perf_counter()
        chunks: list[lm.Completions] = []

        def draw(round_: int) -> list[Group]:
            ids = batch_indices((i - 1) * s.max_sample_rounds + round_, len(train_set), tc.batch_size, seed)
            out = lm.generate(loop.model, tokenizer, [rewards.prompt(train_set[k]) for k in ids], max_new_tokens=s.max_new_tokens,
                              num_return=G, sample=True, temperature=s.temperature, device=device)
            chunks.append(out)
            groups = []
            for k, idx in enumerate(ids):
                rs, cs = [], []
                for j in range(k * G, (k + 1) * G):
                    total, correct = rewards.reward(out.texts[j], train_set[idx], out.truncated[j], s.format_weight)
                    total += rewards.overlong_penalty(int(out.lengths[j]), s.max_new_tokens, s.overlong_cache)
                    rs.append(total)
                    cs.append(correct)
                groups.append(Group(idx, torch.tensor(rs), torch.tensor(cs), len(chunks) - 1, k * G))
            return groups

        kept, drawn, rounds = fill_batch(draw, tc.batch_size, s.dynamic_sampling, s.max_sample_rounds)
        gen_s = time.perf_counter() - t0
        lengths = torch.cat([c.lengths.float() for c in chunks])
        truncated = sum((c.truncated for c in chunks), [])
        record = {"reward": float(torch.cat([g.rewards for g in drawn]).mean()),
                  "accuracy": float(torch.cat([g.correct for g in drawn]).mean()),
                  "length": float(lengths.mean()), "truncated": sum(truncated) / len(truncated),
                  "groups_kept": len(kept), "groups_drawn": len(drawn), "rounds": rounds}
        record.update(update(s, tc, loop, ref, chunks, kept) if kept else {})
        dt = time.perf_counter() - t0
        record.update(gen_s=gen_s, step_s=dt, tokens_per_s=float(lengths.sum()) / dt)
        record.setdefault("loss", float("nan"))
        return record

    return fit(model, step, run, tc, device=device, evaluate=evaluate, eval_at_start=True, progress=progress)


def update(s: GRPOSettings, tc: GRPOTrainConfig, loop: Loop, ref, chunks, kept: list[Group]) -> dict:
    """Optimizer updates on the kept groups: `num_iterations` passes, each split into `mini_batches`
    updates (the ratio leaves 1 from the second update on, so clipping acts). Returns loss, entropy,
    clip fraction and KL to the start model."""
    from labcli.reasoning import lm

    G, mb, model = s.group_size, tc.micro_batch_size, loop.model
    model.eval()  # dropout off, as when sampling (see the module docstring); gradients flow all the same
    # per group: its generation round, rows, advantages (group-normalised) and loss mask
    items = []
    for g in kept:
        chunk = chunks[g.chunk]
        rows = torch.arange(g.lo, g.lo + G)
        mask = chunk.completion_mask[rows].clone()
        if s.overlong_filter:
            mask[torch.tensor([chunk.truncated[g.lo + j] for j in range(G)])] = 0
        items.append((g.chunk, rows, group_advantages(g.rewards, G, s.scale_rewards), mask))
    n_mini = min(s.mini_batches, len(items))
    minis = [items[k::n_mini] for k in range(n_mini)]

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

    def logprobs(m, seq, att, plen, with_entropy=False):
        with loop.autocast():
            return lm.token_logprobs(m, seq, att, plen, with_entropy=with_entropy, temperature=s.temperature)

    old, refs = {}, {}
    with torch.no_grad():  # the sampling policy's log-probs (needed once the policy has moved) and the reference's
        for m, mini in enumerate(minis):
            for key, plen, seq, att, _, _ in micro_batches(mini):
                if s.num_iterations > 1 or n_mini > 1:
                    old[m, key] = logprobs(model, seq, att, plen)[0]
                if ref is not None:
                    refs[m, key] = logprobs(ref, seq, att, plen)[0]
    totals = {"loss": 0.0, "clip_tokens": 0.0, "tokens": 0.0, "kl_sum": 0.0, "entropy_sum": 0.0, "updates": 0}
    grad_norm = 0.0
    for _ in range(s.num_iterations):
        for m, mini in enumerate(minis):
            n_tokens = float(sum(float(it[3].sum()) for it in mini))
            n_seqs = float(sum(int((it[3].sum(1) > 0).sum()) for it in mini))
            if n_tokens == 0:
                continue
            for key, plen, seq, att, adv, mask in micro_batches(mini):
                logp, entropy = logprobs(model, seq, att, plen, with_entropy=True)
                loss, st = policy_loss(logp, old.get((m, key), logp.detach()), adv, mask, s.clip_low, s.clip_high,
                                       beta=s.beta, ref_logp=refs.get((m, key)), norm=s.loss_norm,
                                       n_tokens=n_tokens, n_seqs=n_seqs)
                loss.backward()
                totals["loss"] += loss.item()
                totals["clip_tokens"] += st["clip_tokens"]
                totals["tokens"] += st["tokens"]
                totals["kl_sum"] += st["kl_sum"] or 0.0
                totals["entropy_sum"] += float((entropy.detach() * mask).sum())
            grad_norm = loop.update()
            totals["updates"] += 1
    if not totals["updates"]:
        return {"loss": 0.0}
    n = max(totals["tokens"], 1.0)
    out = {"loss": totals["loss"] / totals["updates"], "entropy": totals["entropy_sum"] / n,
           "clip_frac": totals["clip_tokens"] / n, "grad_norm": grad_norm, "updates": totals["updates"]}
    if ref is not None:
        out["kl"] = totals["kl_sum"] / n
    return out
