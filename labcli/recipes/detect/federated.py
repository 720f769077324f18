"""`lab detect federated`: federated learning on MNIST-5k with Flower (10 simulated clients, Ray backend).

Three parts, all in one Flower simulation (labcli/detect/federated.py):
- convergence: FedSGD vs FedAvg vs FedProx on an IID split and a Dirichlet(alpha) label-skewed split; rounds until
  the global model comes within 1 point of the same CNN trained centrally (McMahan et al. 2017: FedAvg needs far
  fewer rounds than FedSGD, and more under non-IID data).
- dp: client-level DP-FedAvg (Flower's server-side fixed clipping + Gaussian noise, epsilon from Flower's RDP
  accountant) at several noise multipliers.
- attacks: starting from the trained IID FedAvg model, `malicious` clients send a boosted label-flip update
  (7 -> 1, targeted) or a scaled sign-flipped update (untargeted), against FedAvg and Flower's robust rules (Krum,
  trimmed mean, coordinate-wise median), each also run clean for the comparison.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.data import mnist5k
from labcli.detect import common
from labcli.detect import federated as fl
from labcli.detect.vision import SmallCNN, accuracy
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

Part = Literal["convergence", "dp", "attacks"]
Rule = Literal["fedavg", "krum", "trimmed-mean", "median"]


class Local(Section):
    epochs: int = Field(1, ge=1, description="Local epochs per round (FedAvg's E)")
    lr: float = Field(0.1, gt=0, description="Client SGD learning rate (plain SGD, no momentum)")
    batch_size: int = Field(32, ge=1, description="Client minibatch size (FedAvg's B)")


class DP(Section):
    noise: list[float] = Field(default_factory=lambda: [0.1, 1.0], description="Noise multipliers z (noise std = z x clip / clients on the average)")
    clip: float = Field(2.0, gt=0, description="L2 clipping norm of each client's update")
    delta: float = Field(1e-3, gt=0, lt=1, description="delta for the reported epsilon (must be < 1/clients)")


class Attacks(Section):
    rounds: int = Field(3, ge=1, description="Rounds of each attack run, starting from the trained IID FedAvg model")
    malicious: int = Field(1, ge=1, description="Malicious clients (ids 0..malicious-1); Krum is told this number")
    boost: float = Field(10.0, gt=0, description="Malicious update scale (10 = number of clients: model replacement)")
    kinds: list[Literal["label-flip", "sign-flip"]] = Field(default_factory=lambda: ["label-flip", "sign-flip"], description="label-flip: 7s relabelled 1, boosted update; sign-flip: minus boost x the honest update")
    rules: list[Rule] = Field(default_factory=lambda: ["fedavg", "krum", "trimmed-mean", "median"], description="Aggregation rules (Flower strategies)")
    trim_beta: float = Field(0.2, gt=0, lt=0.5, description="FedTrimmedAvg: fraction cut at each end per coordinate")


class Config(RecipeConfig):
    clients: int = Field(10, ge=2, le=50, description="Simulated clients (Flower SuperNodes); all take part every round")
    alpha: float = Field(0.3, gt=0, description="Dirichlet concentration of the non-IID split (smaller = more label skew)")
    rounds: int = Field(10, ge=1, description="Rounds of the convergence and DP runs")
    local: Local = Field(default_factory=Local, description="Client training")
    fedsgd_lr: float = Field(0.5, gt=0, description="FedSGD: one full-batch gradient step per client per round with this learning rate")
    proximal_mu: float = Field(0.01, ge=0, description="FedProx proximal term mu")
    central_epochs: int = Field(10, ge=1, description="Epochs of the centralised reference (same CNN, SGD, lr, batch size)")
    parts: list[Part] = Field(default_factory=lambda: ["convergence", "dp", "attacks"], description="Which parts to run")
    dp: DP = Field(default_factory=DP, description="Client-level DP-FedAvg")
    attacks: Attacks = Field(default_factory=Attacks, description="Poisoned / scaled updates against robust aggregation")
    cpus: int = Field(2, ge=1, description="CPUs the Ray backend may use (one client per CPU at a time)")


def check(cfg: Config) -> list[str]:
    import importlib.util

    problems = []
    if "dp" in cfg.parts and not cfg.dp.delta < 1 / cfg.clients:
        problems.append(f"dp.delta {cfg.dp.delta:g} is not below 1/clients = {1 / cfg.clients:.2g} (hint: pass e.g. dp.delta=1e-3)")
    if "attacks" in cfg.parts and not cfg.attacks.malicious < cfg.clients / 2:
        problems.append(f"attacks.malicious {cfg.attacks.malicious} is not below half of {cfg.clients} clients "
                        "(hint: robust rules assume an honest majority; pass fewer malicious clients)")
    if "attacks" in cfg.parts and "krum" in cfg.attacks.rules and cfg.clients - cfg.attacks.malicious - 2 < 1:
        problems.append("Krum needs clients - malicious - 2 >= 1 (hint: more clients or fewer malicious)")
    if importlib.util.find_spec("flwr") is None:
        problems.append("Flower is not installed (hint: pip install 'labcli[federated]' in its own environment: "
                        "Flower pins typer<0.21, rich<15 and ray==2.55.1, so it is not part of [all])")
    return problems


def experiments(cfg: Config) -> list[fl.Experiment]:
    local = fl.LocalConfig(cfg.local.epochs, cfg.local.lr, cfg.local.batch_size)
    out: list[fl.Experiment] = []
    if "convergence" in cfg.parts or "attacks" in cfg.parts:  # the attacks start from the IID FedAvg model
        out.append(fl.Experiment("FedAvg", "iid", "fedavg", cfg.rounds, local, seed=cfg.seed))
    if "convergence" in cfg.parts:
        out += [fl.Experiment("FedSGD", "iid", "fedavg", cfg.rounds, fl.LocalConfig(lr=cfg.fedsgd_lr, fedsgd=True), seed=cfg.seed),
                fl.Experiment("FedProx", "iid", "fedprox", cfg.rounds, local, cfg.proximal_mu, seed=cfg.seed),
                fl.Experiment("FedSGD", "non-iid", "fedavg", cfg.rounds, fl.LocalConfig(lr=cfg.fedsgd_lr, fedsgd=True), seed=cfg.seed),
                fl.Experiment("FedAvg", "non-iid", "fedavg", cfg.rounds, local, seed=cfg.seed),
                fl.Experiment("FedProx", "non-iid", "fedprox", cfg.rounds, local, cfg.proximal_mu, seed=cfg.seed)]
    if "dp" in cfg.parts:
        out += [fl.Experiment(f"DP-FedAvg z={z:g}", "iid", "dp-fedavg", cfg.rounds, local, dp_noise=z, dp_clip=cfg.dp.clip,
                              dp_delta=cfg.dp.delta, seed=cfg.seed) for z in cfg.dp.noise]
    if "attacks" in cfg.parts:
        a = cfg.attacks
        bad = list(range(a.malicious))
        for rule in a.rules:
            for kind in ["none", *a.kinds]:
                out.append(fl.Experiment(f"{rule} / {kind}", "iid", rule, a.rounds, local, attack=fl.Attack(kind, bad if kind != "none" else [], a.boost),
                                         trim_beta=a.trim_beta, krum_malicious=a.malicious, init_from=0, seed=cfg.seed))
    return out


def run(cfg: Config, ctx) -> None:
    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    seed_everything(cfg.seed)
    (X, y), (X_te, y_te) = mnist5k.read(cfg.seed)
    splits = {"iid": fl.partition(y, cfg.clients, None, cfg.seed), "non-iid": fl.partition(y, cfg.clients, cfg.alpha, cfg.seed)}
    data = fl.Data(X, y, X_te, y_te, splits)
    plan = experiments(cfg)

    with common.progress() as bar:
        task = bar.add_task("centralised reference", total=1)
        central = SmallCNN(width=fl.WIDTH)
        central.load_state_dict(fl.local_update(fl.new_model(cfg.seed).state_dict(), X, y,
                                                fl.LocalConfig(cfg.central_epochs, cfg.local.lr, cfg.local.batch_size), 0.0, cfg.seed))
        central_acc = accuracy(central.eval(), X_te, y_te)
        bar.advance(task)
        total = sum(e.rounds + 1 for e in plan)
        task = bar.add_task(f"Flower: {len(plan)} runs x {cfg.clients} clients (Ray starts first)", total=total)
        results = fl.simulate(data, plan, cpus=cfg.cpus, on_round=lambda i, r: bar.advance(task))

    level = central_acc - 0.01
    runs = []
    for e, r in zip(plan, results):
        row = {"run": e.name, "split": e.split, "rounds": e.rounds, "final accuracy": r["accuracy"][-1],
               "rounds to central-1pt": fl.rounds_to_reach(r["accuracy"], level) if e.init_from is None else None,
               "epsilon": r.get("epsilon"), "7->1 rate": r["attack_success"][-1], "curve": r["accuracy"]}
        runs.append(row)
        ctx.log(**{k: v for k, v in row.items() if k != "curve"})

    conv = [{k: r[k] for k in ("run", "split", "final accuracy", "rounds to central-1pt")} for r, e in zip(runs, plan)
            if e.strategy in ("fedavg", "fedprox") and e.init_from is None and "convergence" in cfg.parts]
    for c in conv:
        c["rounds to central-1pt"] = c["rounds to central-1pt"] or f"not in {cfg.rounds}"
    dp_rows = [{"run": r["run"], "noise multiplier": e.dp_noise, "clip": e.dp_clip, "epsilon": r["epsilon"], "delta": e.dp_delta,
                "final accuracy": r["final accuracy"]} for r, e in zip(runs, plan) if e.strategy == "dp-fedavg"]
    attack_rows = []
    if "attacks" in cfg.parts:
        clean = {e.strategy: r for r, e in zip(runs, plan) if e.init_from is not None and e.attack.kind == "none"}
        for r, e in zip(runs, plan):
            if e.init_from is None:
                continue
            base = clean[e.strategy]
            attack_rows.append({"rule": e.strategy, "attack": e.attack.kind, "final accuracy": r["final accuracy"],
                                "accuracy drop vs clean (points)": 100 * (base["final accuracy"] - r["final accuracy"]),
                                "7->1 rate": r["7->1 rate"]})

    fig, ax = common.new_figure(7, 4.5)
    for r, e in zip(runs, plan):
        if e.init_from is None:
            ax.plot(range(len(r["curve"])), r["curve"], label=f"{r['run']} ({r['split']})", ls="--" if e.split == "non-iid" else "-")
    ax.axhline(level, c="k", lw=0.8, ls=":", label="centralised - 1 point")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (global model)")
    ax.legend(fontsize=7)
    plot = common.save_figure(fig, ctx.path("accuracy_per_round.png"))

    sizes = [len(s) for s in splits["non-iid"]]
    ctx.write_summary({"clients": cfg.clients, "alpha": cfg.alpha, "central accuracy": central_acc, "target accuracy": level,
                       "convergence": conv, "dp": dp_rows, "attacks": attack_rows,
                       "runs": [{k: v for k, v in r.items() if k != "curve"} | {"curve": r["curve"]} for r in runs]})
    a = cfg.attacks
    ctx.write_report(
        f"# Federated learning on MNIST-5k (Flower, {cfg.clients} clients)\n\n"
        f"{len(X)} training images split over {cfg.clients} simulated clients (Flower's `run_simulation`, Ray backend); "
        f"the global model is evaluated centrally on the {len(X_te)} test images after every round. Model: the "
        f"conv{fl.WIDTH}-conv{2 * fl.WIDTH}-fc128 CNN ({sum(p.numel() for p in central.parameters()):,} parameters). "
        f"IID = a random equal split; non-IID = Dirichlet(alpha={cfg.alpha:g}) per class (client sizes {min(sizes)}-{max(sizes)}). "
        f"Clients: plain SGD lr {cfg.local.lr:g}, batch {cfg.local.batch_size}, {cfg.local.epochs} local epochs (FedAvg/FedProx, "
        f"mu={cfg.proximal_mu:g}); FedSGD = one full-batch gradient step per client per round (lr {cfg.fedsgd_lr:g}). "
        f"Centralised reference: the same CNN, SGD, lr and batch on all {len(X)} images for {cfg.central_epochs} epochs: "
        f"**{central_acc:.3f}**; target = {level:.3f}.\n\n"
        + (f"## Convergence\n\n{markdown_table(conv)}\n![curves]({plot})\n\n" if conv else f"![curves]({plot})\n\n")
        + (f"## Client-level DP-FedAvg\n\nFlower's `DifferentialPrivacyServerSideFixedClipping` around uniform-weight FedAvg: "
           f"each client's update clipped to L2 norm {cfg.dp.clip:g}, Gaussian noise of std z x clip / {cfg.clients} added to "
           f"the average; epsilon from Flower's RDP accountant (dp-accounting), no sampling amplification (every client, "
           f"every round), add/remove-one-client neighbours.\n\n{markdown_table(dp_rows)}\n"
           f"With {cfg.clients} clients the noise on the average is 1/{cfg.clients} of z x clip per coordinate on "
           f"~10^5 coordinates, while the signal is at most clip: a useful epsilon is out of reach. McMahan et al. 2018 "
           f"(DP-FedAvg) report single-digit epsilon with ~10^5-10^6 clients per population.\n\n" if dp_rows else "")
        + (f"## Attacks vs robust aggregation\n\nEach run starts from the IID FedAvg model above and runs {a.rounds} more "
           f"rounds; clients 0..{a.malicious - 1} are malicious. label-flip: they relabel their 7s as 1 and scale their update "
           f"by {a.boost:g} (model replacement); `7->1 rate` = share of test 7s the global model calls 1. sign-flip: they send "
           f"-{a.boost:g} x their honest update; success = accuracy drop vs the same rule without attackers. Krum is told "
           f"{a.malicious} malicious; trimmed mean cuts {a.trim_beta:g} at each end.\n\n{markdown_table(attack_rows)}\n" if attack_rows else "")
        + "## What this is and is not\n\nReal MNIST digits and Flower's own strategies; clients are simulated in one "
        "machine's Ray actors, so there is no network, no dropout and no client sampling. One seed.\n")
    print(f"centralised accuracy {central_acc:.3f} (target {level:.3f})")
    for rows in (conv, dp_rows, attack_rows):
        if rows:
            print(markdown_table(rows))
