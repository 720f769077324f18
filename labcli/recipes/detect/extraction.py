"""`lab detect extraction`: model stealing against a served MNIST-5k CNN (labcli/detect/extraction.py).

The victim (SmallCNN, Adam on the 4,000 pool images) is served over HTTP on 127.0.0.1 at a port the OS picks, by the
standard library's ThreadingHTTPServer (what lab's HTTP front runs on; TorchServe's JVM start alone would cost more
than the whole tiny test run). The attacker has no MNIST image: it queries with scikit-learn's 8x8 digits (another
data set, upsampled and centred like MNIST) or uniform noise, up to each budget, and trains a SmallCNN on the answers
(soft labels when the server sends probabilities). Defences, one server each: `top1` (labels only), `rounded`
(probabilities to `decimals` places) and a per-token budget: the server refuses with 429 once a token has had
`token_budget` images answered. Scored on the 1,000 MNIST test images: agreement with the victim and accuracy.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.data import mnist5k
from labcli.detect import common
from labcli.detect import extraction as ex
from labcli.detect.vision import SmallCNN, accuracy, predict, train_model
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything


class Config(RecipeConfig):
    victim_epochs: int = Field(5, ge=1, description="Adam epochs of the victim on the 4,000 pool images")
    budgets: list[int] = Field(default_factory=lambda: [100, 300, 1000, 3000], min_length=1, description="Attacker query budgets (images)")
    sources: list[Literal["digits-8x8", "noise"]] = Field(default_factory=lambda: ["digits-8x8", "noise"], min_length=1, description="Where the attacker's queries come from (never MNIST)")
    outputs: list[Literal["probabilities", "top1", "rounded"]] = Field(default_factory=lambda: ["probabilities", "top1", "rounded"], min_length=1, description="What the server answers (top1 and rounded are the defences)")
    decimals: int = Field(1, ge=0, le=6, description="Decimal places of the rounded probabilities")
    clone_epochs: int = Field(10, ge=1, description="Adam epochs of each stolen copy")
    token_budget: int = Field(1000, ge=1, description="The rate-limit defence: images answered per token before the server refuses (429); 0 rows run when no budget exceeds it")
    batch: int = Field(100, ge=1, le=1000, description="Images per HTTP request")


def check(cfg: Config) -> list[str]:
    problems = []
    if any(b < 10 for b in cfg.budgets):
        problems.append(f"budgets {cfg.budgets} must all be >= 10 (hint: a copy needs some answers to learn from)")
    return problems


def steal(port: int, token: str, source: str, budget: int, cfg: Config) -> tuple[torch.nn.Module, int]:
    """Query up to `budget` images from `source`, train a copy; returns (copy, images answered)."""
    attacker = ex.Attacker(port, token, batch=cfg.batch)
    try:
        X, labels, probs = attacker.query(ex.query_images(source, budget, cfg.seed))
    finally:
        attacker.close()
    torch.manual_seed(cfg.seed + 7)
    clone = SmallCNN()
    if len(X):
        ex.train_clone(clone, X, labels, probs, epochs=cfg.clone_epochs, seed=cfg.seed)
    return clone.eval(), len(X)


def run(cfg: Config, ctx) -> None:
    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    seed_everything(cfg.seed)
    (X_pool, y_pool), (X_te, y_te) = mnist5k.read(cfg.seed)
    budgets = sorted(set(cfg.budgets))
    rows = []
    with common.progress() as bar:
        task = bar.add_task("victim", total=1)
        torch.manual_seed(cfg.seed)
        victim = train_model(SmallCNN(), X_pool, y_pool, epochs=cfg.victim_epochs, seed=cfg.seed)
        bar.advance(task)
        victim_pred = predict(victim, X_te)

        def score(clone):
            return float((predict(clone, X_te) == victim_pred).mean()), accuracy(clone, X_te, y_te)

        limited = [b for b in budgets if b > cfg.token_budget]
        task = bar.add_task("steal", total=len(cfg.sources) * (len(cfg.outputs) * len(budgets) + len(limited)))
        for output in cfg.outputs:
            with ex.VictimServer(victim, output=output, decimals=cfg.decimals) as server:
                for source in cfg.sources:
                    for budget in budgets:
                        clone, answered = steal(server.port, f"{source}-{budget}", source, budget, cfg)
                        agree, acc = score(clone)
                        rows.append({"server answers": output if output != "rounded" else f"rounded to {cfg.decimals} dp",
                                     "rate limit": "none", "queries": source, "budget": budget, "answered": answered,
                                     "agreement": agree, "accuracy": acc})
                        ctx.log(**{k: v for k, v in rows[-1].items() if not isinstance(v, str)}, output=output, source=source)
                        bar.advance(task)
        # the rate-limit defence, on the most informative answers (probabilities)
        with ex.VictimServer(victim, output="probabilities", budget_per_token=cfg.token_budget) as server:
            for source in cfg.sources:
                for budget in limited:
                    clone, answered = steal(server.port, f"limited-{source}-{budget}", source, budget, cfg)
                    agree, acc = score(clone)
                    rows.append({"server answers": "probabilities", "rate limit": f"{cfg.token_budget} per token",
                                 "queries": source, "budget": budget, "answered": answered, "agreement": agree, "accuracy": acc})
                    bar.advance(task)
            refused = server.refused
    victim_acc = accuracy(victim, X_te, y_te)

    fig, ax = common.new_figure(7, 4.5)
    for (output, source) in dict.fromkeys((r["server answers"], r["queries"]) for r in rows if r["rate limit"] == "none"):
        mine = [r for r in rows if r["server answers"] == output and r["queries"] == source and r["rate limit"] == "none"]
        ax.plot([r["budget"] for r in mine], [r["agreement"] for r in mine], "o-" if source == "digits-8x8" else "s--",
                label=f"{output}, {source}")
    ax.axhline(0.1, ls=":", c="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("query budget (images)")
    ax.set_ylabel("agreement with the victim (MNIST test)")
    ax.legend(fontsize=7)
    plot = common.save_figure(fig, ctx.path("agreement_vs_budget.png"))
    ctx.write_summary({"victim test accuracy": victim_acc, "rows": rows, "token budget": cfg.token_budget,
                       "images refused by the rate limit": refused})
    ctx.write_report(
        f"# Model extraction over HTTP\n\nVictim: SmallCNN trained {cfg.victim_epochs} epochs on the 4,000 MNIST-5k pool "
        f"images (test accuracy {victim_acc:.3f}), served over HTTP on 127.0.0.1 by lab's standard-library server "
        f"(POST /v1/predict, bearer token, {cfg.batch} images per request). The attacker never sees an MNIST image: "
        f"`digits-8x8` = scikit-learn's 1,797 8x8 digits (UCI; another data set) upsampled to 20x20 and centred in 28x28, "
        f"with shifted copies beyond 1,797; `noise` = uniform pixels. Each copy is a fresh SmallCNN trained "
        f"{cfg.clone_epochs} epochs on the answers (soft labels when there are probabilities). Agreement = share of the "
        f"{len(y_te)} MNIST test images where copy and victim predict the same class; accuracy = copy vs true labels. "
        f"The rate-limit rows use a server that answers {cfg.token_budget} images per token, then 429.\n\n"
        f"{markdown_table(rows)}\n![agreement]({plot})\n\n"
        "## What this does and does not show\n\nOne token per attacker: a rate limit per token is only as strong as the "
        "cost of getting more tokens (Sybil accounts defeat it). Rounding and top-1 remove information per query; "
        "they do not stop an attacker who can buy more queries. No query synthesis (Jacobian augmentation, active "
        "learning): the queries are fixed in advance.\n")
    print(markdown_table([{k: r[k] for k in ("server answers", "rate limit", "queries", "budget", "answered", "agreement")} for r in rows]))
