"""`lab detect side-channel`: what response times reveal about an early-exit network, and the constant-time fix.

The victim (labcli/detect/sidechannel.py) is an MLP with an exit after each of three blocks, trained on MNIST-5k pool
images with every exit's loss; at inference it stops at the first exit whose top probability reaches `threshold`.
Two copies run as separate processes: early exit (the edge deployment) and constant time (every block always runs,
same answers). The attacker sends the test images, each `repeats` times, to both, interleaved, and keeps only how long
each answer took. It profiles on a random half of the queries (where it knows the exit and the answer: its own
queries) and is scored on the other half, for two secrets: the exit taken and the predicted class. Chance = always
guessing the commonest value of the profiling half. Reported over `splits` random halvings (mean and std), with one
timing per query and with the minimum of the repeats.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.data import mnist5k
from labcli.detect import common
from labcli.detect import sidechannel as sc
from labcli.eval.measure import hardware_line
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything


class Config(RecipeConfig):
    train_size: int = Field(2000, ge=100, le=4000, description="Pool images the early-exit network trains on")
    epochs: int = Field(2, ge=1, description="Adam epochs (loss = sum over the exits)")
    width: int = Field(768, ge=16, description="Hidden width; with depth, sets what one block costs (the signal the timing carries)")
    depth: int = Field(3, ge=1, description="width x width layers in each block after the first")
    threshold: float = Field(0.9, gt=0, le=1, description="Exit at the first head whose top softmax probability reaches this (fixed in advance, not tuned)")
    queries: int = Field(1000, ge=20, le=1000, description="Test images the attacker sends (half profile the attack, half score it)")
    repeats: int = Field(5, ge=1, description="Times each image is sent to each server")
    splits: int = Field(10, ge=1, description="Random profiling / scoring halvings the attack accuracy is averaged over")


def latency_row(mode: str, times: np.ndarray) -> dict:
    """p50 / p95 over every timing, and the spread of the per-round median over the repeats."""
    per_round = np.median(times, 0) * 1e6
    return {"mode": mode, "p50 us": float(np.median(times) * 1e6), "p95 us": float(np.percentile(times, 95) * 1e6),
            "mean us": float(times.mean() * 1e6), "round median std us": float(per_round.std(ddof=1)) if len(per_round) > 1 else 0.0}


def run(cfg: Config, ctx) -> None:
    seed_everything(cfg.seed)
    (X_pool, y_pool), (X_te, y_te) = mnist5k.read(cfg.seed)
    with common.progress() as bar:
        task = bar.add_task("train the early-exit network", total=1)
        torch.manual_seed(cfg.seed)
        model = sc.train_early_exit(sc.EarlyExitMLP(cfg.width, cfg.depth), X_pool[: cfg.train_size], y_pool[: cfg.train_size],
                                    epochs=cfg.epochs, seed=cfg.seed)
        bar.advance(task)
        X, y = X_te[: cfg.queries].reshape(cfg.queries, -1), y_te[: cfg.queries]
        task = bar.add_task(f"time {cfg.queries} x {cfg.repeats} queries x 2 servers", total=1)
        with sc.TimedServer(model, cfg.threshold, False) as early, sc.TimedServer(model, cfg.threshold, True) as const:
            m = sc.measure({"early exit": early, "constant time": const}, X, cfg.repeats)
        bar.advance(task)
    ee, ct = m["early exit"], m["constant time"]
    if not (np.array_equal(ee["pred"], ct["pred"]) and np.array_equal(ee["exit"], ct["exit"])):
        raise RuntimeError("the constant-time server answered differently from the early-exit one (a bug in EarlyExitMLP.infer)")
    exit_, pred = ee["exit"], ee["pred"]
    exits = len(model.blocks)

    rows = []
    for mode, out in m.items():
        for timing, feature in (("1 timing per query", None), (f"min of {cfg.repeats} timings", out["times"].min(1))):
            for secret, hidden in (("exit taken", exit_), ("predicted class", pred)):
                acc, chance, bound = [], [], []
                for s in range(cfg.splits):
                    fit, score = sc.split(len(X), cfg.seed + s)
                    if feature is None:  # a different single timing for each split: the spread includes timing noise
                        f = out["times"][:, s % cfg.repeats]
                    else:
                        f = feature
                    a = sc.attack(f, hidden, fit, score, seed=cfg.seed)
                    acc.append(a["accuracy"])
                    chance.append(a["chance"])
                    bound.append(sc.bayes_bound(exit_, hidden, fit, score))
                rows.append({"server": mode, "attacker sees": timing, "secret": secret,
                             "attack accuracy": float(np.mean(acc)), "std over splits": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                             "chance": float(np.mean(chance)), "if the exit were known": float(np.mean(bound))})
    for r in rows:
        ctx.log(**{k: v for k, v in r.items() if not isinstance(v, str)}, server=r["server"], secret=r["secret"], timing=r["attacker sees"])
    latency = [latency_row(mode, out["times"]) for mode, out in m.items()]
    per_exit = [{"exit": e, "share of queries": float((exit_ == e).mean()),
                 "early exit p50 us": float(np.median(ee["times"][exit_ == e]) * 1e6) if (exit_ == e).any() else None,
                 "constant time p50 us": float(np.median(ct["times"][exit_ == e]) * 1e6) if (exit_ == e).any() else None}
                for e in range(exits)]
    cost = {"p50 ratio (constant / early)": latency[1]["p50 us"] / latency[0]["p50 us"],
            "mean ratio (constant / early)": latency[1]["mean us"] / latency[0]["mean us"]}
    structure = {"blocks run per query, early exit": np.bincount(ee["blocks"], minlength=exits + 1)[1:].tolist(),
                 "blocks run per query, constant time": np.bincount(ct["blocks"], minlength=exits + 1)[1:].tolist()}
    accuracy = float((pred == y).mean())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, (mode, out) in zip(axes, m.items()):
        t = out["times"].min(1) * 1e6
        bins = np.logspace(np.log10(t.min()), np.log10(np.percentile(t, 99.5)), 60)
        for e in range(exits):
            ax.hist(t[exit_ == e], bins=bins, alpha=0.6, label=f"exit {e}")
        ax.set_xscale("log")
        ax.set_title(mode, fontsize=9)
        ax.set_xlabel(f"response time, min of {cfg.repeats} (us)")
    axes[0].set_ylabel("queries")
    axes[0].legend(fontsize=8)
    plot = common.save_figure(fig, ctx.path("timings.png"))
    hardware = hardware_line("cpu")
    ctx.write_summary({"test accuracy": accuracy, "threshold": cfg.threshold, "queries": len(X), "repeats": cfg.repeats,
                       "attacks": rows, "latency": latency, "per_exit": per_exit, "cost": cost, "structure": structure,
                       "hardware": hardware})
    ctx.write_report(
        f"# Timing side channel on an early-exit network\n\nVictim: MLP 784-{cfg.width}, then two blocks of {cfg.depth} "
        f"{cfg.width}x{cfg.width} layers, an exit head after each block; trained {cfg.epochs} epochs on {cfg.train_size} "
        f"MNIST-5k pool images; exits at the first head with top probability >= {cfg.threshold:g}. Test accuracy "
        f"{accuracy:.3f} on the {len(X)} queries (identical answers in both modes). Each server is its own Python process "
        f"(one torch thread) answering over pipes; times are taken on the attacker's side, {cfg.repeats} per query, "
        f"interleaved between the two servers. Hardware: {hardware} (a shared machine: the spread below includes "
        f"other jobs).\n\n## Attack (decision tree on log time, fitted on one half, scored on the other; {cfg.splits} "
        f"halvings)\n\n{markdown_table(rows)}\n`if the exit were known`: accuracy of guessing the secret from the true "
        f"exit (the commonest value per exit in the profiling half), the most a timing attack can get when time reveals "
        f"the exit and nothing more.\n\n## Latency (the cost of constant time)\n\n{markdown_table(latency)}\n"
        f"Constant time / early exit: p50 x{cost['p50 ratio (constant / early)']:.2f}, mean "
        f"x{cost['mean ratio (constant / early)']:.2f}.\n\n{markdown_table(per_exit)}\n![timings]({plot})\n\n"
        f"Blocks run per query (1, 2, 3 blocks): early exit {structure['blocks run per query, early exit']}, constant time "
        f"{structure['blocks run per query, constant time']}.\n")
    print(markdown_table([{k: r[k] for k in ("server", "attacker sees", "secret", "attack accuracy", "chance")} for r in rows]))
    print(markdown_table(latency))
