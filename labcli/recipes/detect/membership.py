"""`lab detect membership`: membership inference against MNIST-5k CNNs, and DP-SGD (Opacus) as the defence.

Targets, each trained on the same members: an overfit CNN (Adam, many epochs, no regularisation), a regularised one
(AdamW weight decay picked on validation images) and, with `--defend dp`, DP-SGD networks at each target epsilon plus the same DP
recipe without noise (the control). For every target the attacker trains `shadows` shadow models with the target's
own recipe on other images (the population data: disjoint from members and non-members) and runs three attacks
(labcli/detect/privacy.py): the loss threshold (Yeom et al.), the shadow-model classifier (Shokri et al.) and offline
LiRA with a Gaussian per image (Carlini et al. 2022). Reported: AUC, membership advantage, TPR at 0.1 % and 1 % FPR.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.data import mnist5k
from labcli.detect import common, privacy
from labcli.detect.vision import SmallCNN, accuracy, train_model
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything


class Regularised(Section):
    epochs: int = Field(50, ge=1, description="Epochs of the regularised target")
    weight_decay: float = Field(3.0, ge=0, description="AdamW decoupled weight decay (3.0 had the best accuracy on 1,000 pool images that are neither members, non-members nor test images, among 0-10 and 15-50 epochs)")


class DP(Section):
    epsilons: list[float] = Field(default_factory=lambda: [1.0, 4.0, 8.0], description="Target epsilons for DP-SGD")
    delta: float = Field(1e-5, description="Target delta (must be < 1/N, N = target training size)")
    max_grad_norm: float = Field(1.0, description="Per-sample gradient clipping norm")
    epochs: int = Field(30, description="DP-SGD epochs")
    lr: float = Field(2.0, description="SGD learning rate (no momentum; plain DP-SGD)")
    batch_size: int = Field(256, description="Expected batch size (Poisson sampling rate = batch_size / N)")
    accountant: Literal["rdp", "prv", "gdp"] = Field("rdp", description="Opacus privacy accountant")


class Config(RecipeConfig):
    target_size: int = Field(500, description="Members: images every target trains on (as many non-members are held back); small = more leakage, larger = better DP utility")
    shadows: int = Field(16, ge=2, description="Shadow models per target recipe (offline LiRA fits a Gaussian per image over them)")
    epochs: int = Field(50, ge=1, description="Epochs of the overfit target (long on purpose: overfitting is what leaks)")
    lr: float = Field(1e-3, description="Adam learning rate (non-private models)")
    regularised: Regularised = Field(default_factory=Regularised, description="The regularised target")
    defend: Literal["none", "dp"] = Field("none", description="dp: also train DP-SGD targets (Opacus) and attack them")
    dp: DP = Field(default_factory=DP, description="DP-SGD settings")


def recipes(cfg: Config) -> dict:
    """Target name -> train(X, y, seed) -> (model, DP record or None). Shadows use their target's recipe."""
    def adam(epochs, weight_decay=0.0):
        def train(X, y, seed):
            torch.manual_seed(seed)
            return train_model(SmallCNN(), X, y, epochs=epochs, lr=cfg.lr, seed=seed, weight_decay=weight_decay), None
        return train

    def dp(epsilon):
        d = cfg.dp
        return lambda X, y, seed: privacy.train_dp(X, y, epsilon=epsilon, delta=d.delta, max_grad_norm=d.max_grad_norm,
                                                  epochs=d.epochs, lr=d.lr, batch_size=d.batch_size, accountant=d.accountant,
                                                  seed=seed)

    out = {"overfit": adam(cfg.epochs), "regularised": adam(cfg.regularised.epochs, cfg.regularised.weight_decay)}
    if cfg.defend == "dp":
        out["DP recipe, no noise"] = dp(None)
        out.update({f"DP eps={e:g}": dp(e) for e in cfg.dp.epsilons})
    return out


def attack(train, members, nonmembers, population, cfg: Config, label: str, bar) -> tuple[list[dict], torch.nn.Module, dict | None]:
    """Train the target and its shadows with `train`; returns the three attacks' rows, the target, its DP record."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    n = len(members[0])
    target, record = train(*members, cfg.seed)
    candidates = (np.concatenate([members[0], nonmembers[0]]), np.concatenate([members[1], nonmembers[1]]))
    truth = np.r_[np.ones(n), np.zeros(n)]
    feats = privacy.attack_features(target, *candidates)
    rng = np.random.default_rng(cfg.seed)  # the same shadow data for every target recipe
    shadow_feats, shadow_in, shadow_conf = [], [], []
    task = bar.add_task(f"{label}: target + {cfg.shadows} shadows", total=cfg.shadows)
    for k in range(cfg.shadows):
        order = rng.permutation(len(population[1]))
        s_in, s_out = order[:n], order[n : 2 * n]
        shadow, _ = train(population[0][s_in], population[1][s_in], cfg.seed + 1 + k)
        shadow_feats += [privacy.attack_features(shadow, population[0][s], population[1][s]) for s in (s_in, s_out)]
        shadow_in += [np.ones(n), np.zeros(n)]
        shadow_conf.append(privacy.attack_features(shadow, *candidates)[:, privacy.CONFIDENCE])  # never trained on these
        bar.advance(task)
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=cfg.seed).fit(
        np.concatenate(shadow_feats)[:, privacy.SHADOW_FEATURES], np.concatenate(shadow_in))
    scores = {"loss threshold (Yeom)": privacy.loss_threshold(feats),
              "shadow-model classifier (Shokri)": clf.predict_proba(feats[:, privacy.SHADOW_FEATURES])[:, 1],
              f"offline LiRA, {cfg.shadows} shadows, per-image Gaussian": privacy.lira_offline(feats[:, privacy.CONFIDENCE], np.stack(shadow_conf))}
    rows = [{"target": label, "attack": name, **common.roc_metrics(truth, s)} for name, s in scores.items()]
    return rows, target, record


def run(cfg: Config, ctx) -> None:
    (X_pool, y_pool), (X_te, y_te) = mnist5k.read(cfg.seed)
    n = cfg.target_size
    if n < 50 or 2 * n > len(X_pool) - 200:
        raise UserError(f"target_size {n} must be between 50 and {(len(X_pool) - 200) // 2}",
                        "MNIST-5k has 4,000 pool images: members + non-members + at least 200 left for the shadows")
    if cfg.defend == "dp" and not cfg.dp.delta < 1 / n:
        raise UserError(f"dp.delta {cfg.dp.delta} is not below 1/N = {1 / n:.2g}", "pick e.g. dp.delta=1e-5")
    seed_everything(cfg.seed)
    members, nonmembers = (X_pool[:n], y_pool[:n]), (X_pool[n : 2 * n], y_pool[n : 2 * n])
    # the attacker's population data: the rest of the pool and the test images (disjoint from members and non-members)
    population = (np.concatenate([X_pool[2 * n :], X_te]), np.concatenate([y_pool[2 * n :], y_te]))
    if len(population[1]) < 2 * n:
        raise UserError(f"target_size {n} leaves {len(population[1])} population images, fewer than 2 x {n} per shadow",
                        f"pass target_size <= {(len(X_pool) + len(X_te)) // 4}")

    rows, utility, privacy_records = [], [], []
    with common.progress() as bar:
        for label, train in recipes(cfg).items():
            attacks, target, record = attack(train, members, nonmembers, population, cfg, label, bar)
            rows += attacks
            utility.append({"target": label, "train accuracy": accuracy(target, *members), "test accuracy": accuracy(target, X_te, y_te)})
            if record:
                privacy_records.append({"target": label, **record})
            for row in attacks + utility[-1:]:
                ctx.log(**row)

    lira = next(r["attack"] for r in rows if r["attack"].startswith("offline LiRA"))
    table = []
    for u in utility:
        mine = {r["attack"]: r for r in rows if r["target"] == u["target"]}
        eps = next((p["epsilon spent"] for p in privacy_records if p["target"] == u["target"]), None)
        table.append({"target": u["target"], "epsilon spent": eps, "train accuracy": u["train accuracy"],
                      "test accuracy": u["test accuracy"], "LiRA auc": mine[lira]["auc"],
                      "LiRA tpr@0.1%fpr": mine[lira]["tpr@0.1%fpr"], "LiRA tpr@1%fpr": mine[lira]["tpr@1%fpr"],
                      "best attack auc": max(r["auc"] for r in mine.values())})
    fig, ax = common.new_figure()
    ax.plot([t["test accuracy"] for t in table], [t["LiRA tpr@1%fpr"] for t in table], "o")
    for t in table:
        ax.annotate(t["target"], (t["test accuracy"], t["LiRA tpr@1%fpr"]))
    ax.axhline(0.01, ls=":", c="k", lw=0.8)
    ax.set_xlabel("test accuracy (utility)")
    ax.set_ylabel("offline LiRA TPR at 1 % FPR (leakage)")
    plot = common.save_figure(fig, ctx.path("privacy_utility.png"))
    ctx.write_summary({"members": n, "nonmembers": n, "shadow_models": cfg.shadows, "attacks": rows, "utility": utility,
                       "privacy": privacy_records, "privacy_utility": table})
    r = cfg.regularised
    ctx.write_report(
        f"# Membership inference on MNIST-5k CNNs\n\n{n} members (every target's training images) and {n} non-members "
        f"(other pool images); positive class = member. Targets: `overfit` = the conv16-conv32-fc128 CNN, Adam, "
        f"{cfg.epochs} epochs, no regularisation (the usual setting for membership inference); `regularised` = the same "
        f"CNN trained {r.epochs} epochs with AdamW weight decay {r.weight_decay:g} (the decay with the best accuracy on pool images outside members, non-members and test set)"
        + ("; `DP eps=...` = DP-SGD (Opacus) at each target epsilon, and `DP recipe, no noise` = the same network, "
           "sampling and clipping without noise (the control)" if cfg.defend == "dp" else "")
        + f". For every target, {cfg.shadows} shadow models are trained with that target's recipe, each on {n} of the "
        f"{len(population[1])} population images (the rest of the pool and the test set, never a member or non-member). "
        f"Offline LiRA fits, per candidate image, a Gaussian to the {cfg.shadows} shadows' logit-scaled confidence "
        f"log(p/(1-p)) on its true label and scores the target's confidence against it. With {n} non-members, "
        f"`tpr@0.1%fpr` is the TPR at zero false positives. Test accuracy is on the {len(X_te)} test images.\n\n"
        f"## Attacks\n\n{markdown_table(rows)}\n## Privacy / utility\n\n{markdown_table(table)}\n![privacy-utility]({plot})\n\n"
        + (f"## DP-SGD accounting (Opacus)\n\n{markdown_table(privacy_records)}\n"
           f"DP targets: {sum(p.numel() for p in privacy.DPNet().parameters()):,}-parameter tanh/GroupNorm CNN, Poisson "
           f"sampling, plain SGD. Reference: Abadi et al. 2016 reach 90 / 95 / 97 % on full MNIST at eps = 0.5 / 2 / 8 with "
           f"60k images and a PCA front end; with {n} images the noise per step is far larger relative to the signal (the "
           f"sampling rate is {cfg.dp.batch_size / n:.2g} instead of ~0.01), so utility is lower here.\n\n" if privacy_records else "")
        + "## What this data is and is not\n\nReal MNIST digits; small CNNs, one deliberately overfit so leakage is visible. "
        "Epsilon is the accountant's upper bound for the training run, not a measured leak. No query augmentation "
        "(Carlini et al. also query flipped/shifted copies), so LiRA here is the plain offline variant.\n")
    print(markdown_table(table))
