"""`lab detect poison`: BadNets backdoor on MNIST-5k and its detection from the trained model's activations.

BadNets (Gu et al. 2017): a small white square in the corner is stamped on a share of the training images
(taken from non-target classes), which are relabelled to the target class. We report clean accuracy and attack
success (triggered non-target test images classified as the target) per poison rate, then look for the
poisoned training samples with activation clustering (Chen et al. 2018) and spectral signatures
(Tran et al. 2018) on the penultimate layer, reporting their precision and recall.

Activation clustering splits every class in two; which half (if any) is poison is decided by a relabel check
rather than by size: a poisoned image is a digit of another class with a small trigger and a changed label, so
its nearest training images (k-NN in pixel space, leave-one-out) mostly carry another label, while a clean
image's neighbours share its label. A cluster is flagged when most of its members are outvoted by their
neighbours. Unlike "the smaller cluster is poison" this holds when the poison is half of its class or more.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.detect import common
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything


class Detection(Section):
    ac_components: int = Field(10, description="Activation clustering: ICA components before 2-means (as in Chen et al.)")
    ac_neighbours: int = Field(10, description="Activation clustering: k of the k-NN relabel check (pixel space, leave-one-out)")
    ac_relabel_share: float = Field(0.5, description="Activation clustering: flag a cluster when more than this share of it is outvoted by neighbours of another label")
    ac_max_size: float = Field(0.35, description="Size rule (reported for comparison only): flag the smaller cluster when it holds less than this share of its class")
    spectral_eps: float = Field(0.1, description="Spectral signatures: assumed poisoned share per class (removes the top 1.5 x eps of every class)")


class Config(RecipeConfig):
    poison_rates: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1], description="Shares of the training set poisoned (0 = clean reference)")
    target: int = Field(0, description="Target class of the backdoor")
    trigger_size: int = Field(3, description="Side of the white square trigger (pixels, bottom-right corner)")
    train_size: int = Field(0, description="Training images (0 = all 4,000 not held out)")
    epochs: int = Field(3, description="Training epochs per model")
    lr: float = Field(1e-3, description="Adam learning rate")
    detection: Detection = Field(default_factory=Detection, description="Detector settings")


def stamp(X: np.ndarray, size: int) -> np.ndarray:
    """The BadNets trigger: a white size x size square, one pixel in from the bottom-right corner."""
    X = X.copy()
    X[:, :, -1 - size : -1, -1 - size : -1] = 1.0
    return X


def poison(X, y, rate: float, target: int, size: int, seed: int):
    """Stamp and relabel round(rate * N) non-target images; returns X, y, mask of poisoned rows."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(y != target)
    chosen = rng.choice(candidates, size=int(round(rate * len(y))), replace=False)
    X, y = X.copy(), y.copy()
    X[chosen] = stamp(X[chosen], size)
    y[chosen] = target
    mask = np.zeros(len(y), dtype=bool)
    mask[chosen] = True
    return X, y, mask


def relabel_votes(X, labels, k: int) -> np.ndarray:
    """Per sample: True when most of its k nearest other training images (pixels, L2) carry another label."""
    from sklearn.neighbors import NearestNeighbors

    flat = X.reshape(len(X), -1)
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(flat).kneighbors(flat, return_distance=False)[:, 1:]
    return (labels[neighbours] != labels[:, None]).mean(1) > 0.5


def activation_clustering(acts, X, labels, truth, cfg: Detection, seed: int):
    """Chen et al.: per class, reduce activations with ICA and split them with 2-means. A cluster is flagged when more
    than ac_relabel_share of its members are outvoted by their k-NN's labels (see the module docstring); the old
    size rule (smaller cluster below ac_max_size of its class) is returned too, for comparison.
    Returns (flagged, size_flagged, per-class stats of the poisoned classes)."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.decomposition import FastICA
    from sklearn.metrics import silhouette_score

    outvoted = relabel_votes(X, labels, cfg.ac_neighbours)
    flagged, size_flagged, stats = np.zeros(len(labels), bool), np.zeros(len(labels), bool), {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 4:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA convergence notes on dead ReLU units
            reduced = FastICA(n_components=min(cfg.ac_components, len(idx)), random_state=seed, max_iter=1000).fit_transform(acts[idx])
        clusters = KMeans(2, n_init=10, random_state=seed).fit(reduced).labels_
        sizes = np.bincount(clusters, minlength=2)
        small = int(np.argmin(sizes))
        if sizes[small] / len(idx) < cfg.ac_max_size:
            size_flagged[idx[clusters == small]] = True
        share_outvoted = [float(outvoted[idx[clusters == j]].mean()) if sizes[j] else 0.0 for j in range(2)]
        for j in range(2):
            if share_outvoted[j] > cfg.ac_relabel_share:
                flagged[idx[clusters == j]] = True
        if truth[idx].any():
            poisoned_cluster = int(np.argmax([truth[idx[clusters == j]].mean() if sizes[j] else 0 for j in range(2)]))
            stats[int(c)] = {
                "2-means purity": float(max((clusters == truth[idx]).mean(), (clusters != truth[idx]).mean())),
                "silhouette": float(silhouette_score(reduced, clusters)) if min(sizes) > 0 else float("nan"),
                "outvoted (poison cluster)": share_outvoted[poisoned_cluster],
                "outvoted (other cluster)": share_outvoted[1 - poisoned_cluster],
            }
    return flagged, size_flagged, stats


def spectral_signatures(acts, labels, cfg: Detection):
    """Tran et al.: per class, squared projection of centred activations on their top singular vector;
    remove the ceil(1.5 x eps x n) highest scores of every class."""
    flagged, scores = np.zeros(len(labels), dtype=bool), np.zeros(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        centred = acts[idx] - acts[idx].mean(0)
        top = np.linalg.svd(centred, full_matrices=False)[2][0]
        score = (centred @ top) ** 2
        scores[idx] = score
        k = min(len(idx), math.ceil(1.5 * cfg.spectral_eps * len(idx)))
        flagged[idx[np.argsort(score)[::-1][:k]]] = True
    return flagged, scores


def activations(model, X):
    import torch

    with torch.no_grad():
        return torch.cat([model.features(torch.from_numpy(X[i : i + 500])) for i in range(0, len(X), 500)]).numpy()


def detect(model, Xp, yp, mask, rate: float, cfg) -> list[dict]:
    """Both detectors on one poisoned training set; one row each."""
    from sklearn.metrics import roc_auc_score

    acts = activations(model, Xp)
    in_target = yp == cfg.target
    ac_flag, size_flag, stats = activation_clustering(acts, Xp, yp, mask, cfg.detection, cfg.seed)
    ss_flag, ss_score = spectral_signatures(acts, yp, cfg.detection)
    share = float(mask[in_target].mean())
    target = stats.get(cfg.target, {})
    return [
        {"poison rate": rate, "share of target class": share, "detector": "activation clustering",
         **precision_recall(ac_flag, mask), **target},
        {"poison rate": rate, "share of target class": share, "detector": "activation clustering (size rule)",
         **precision_recall(size_flag, mask)},
        {"poison rate": rate, "share of target class": share, "detector": "spectral signatures",
         **precision_recall(ss_flag, mask), "spectral auroc": float(roc_auc_score(mask[in_target], ss_score[in_target]))},
    ]


def precision_recall(flagged, truth) -> dict:
    tp = int((flagged & truth).sum())
    return {"flagged": int(flagged.sum()), "poisoned": int(truth.sum()), "precision": tp / max(int(flagged.sum()), 1),
            "recall": tp / max(int(truth.sum()), 1)}


def run(cfg: Config, ctx) -> None:
    import torch

    from labcli.detect.datasets import load_mnist5k
    from labcli.detect.vision import SmallCNN, accuracy, predict, train_model
    from labcli.recipes.detect.evasion import save_model

    rates = sorted(set(cfg.poison_rates))
    if not 0 <= cfg.target <= 9:
        raise UserError(f"target class {cfg.target} is not a digit", "pass target=0..9")
    if any(not 0 <= r < 0.9 for r in rates):
        raise UserError(f"poison rates {rates} must lie in [0, 0.9)", "pass e.g. poison_rates=[0,0.05,0.1]")
    if cfg.detection.ac_neighbours < 1 or not 0 <= cfg.detection.ac_relabel_share < 1:
        raise UserError(f"detection.ac_neighbours={cfg.detection.ac_neighbours}, detection.ac_relabel_share="
                        f"{cfg.detection.ac_relabel_share} are out of range", "pass ac_neighbours >= 1 and 0 <= ac_relabel_share < 1")
    seed_everything(cfg.seed)
    (X_tr, y_tr), (X_te, y_te) = load_mnist5k(cfg.seed)
    if cfg.train_size:
        X_tr, y_tr = X_tr[: cfg.train_size], y_tr[: cfg.train_size]
    victims = y_te != cfg.target
    X_trig = stamp(X_te[victims], cfg.trigger_size)

    rows, detection, last = [], [], None
    with common.progress() as bar:
        for rate in rates:
            Xp, yp, mask = poison(X_tr, y_tr, rate, cfg.target, cfg.trigger_size, cfg.seed)
            torch.manual_seed(cfg.seed)
            model = train_model(SmallCNN(), Xp, yp, epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, bar=bar,
                                label=f"train at poison rate {rate:g}")
            row = {"poison rate": rate, "poisoned images": int(mask.sum()), "clean accuracy": accuracy(model, X_te, y_te),
                   "attack success": float((predict(model, X_trig) == cfg.target).mean())}
            rows.append(row)
            ctx.log(**row)
            if mask.any():
                detection += detect(model, Xp, yp, mask, rate, cfg)
                last = (model, yp, mask, rate)
    base = rows[0]["clean accuracy"] if rates[0] == 0 else None
    for row in rows:
        row["clean drop (points)"] = 100 * (base - row["clean accuracy"]) if base is not None else float("nan")
    for row in detection:
        ctx.log(**row)
    model, yp, mask, last_rate = last if last else (model, yp, mask, rate)
    save_model(model, ctx.path("model.pt"))
    in_target = yp == cfg.target
    ss_score = spectral_signatures(activations(model, Xp), yp, cfg.detection)[1] if last else np.zeros(len(yp))

    fig, ax = common.new_figure()
    ax.plot([r["poison rate"] for r in rows], [r["attack success"] for r in rows], "o-", label="attack success")
    ax.plot([r["poison rate"] for r in rows], [r["clean accuracy"] for r in rows], "s-", label="clean accuracy")
    ax.set_xlabel("share of training set poisoned")
    ax.set_ylim(0, 1.02)
    ax.legend()
    plot1 = common.save_figure(fig, ctx.path("badnets.png"))
    fig, ax = common.new_figure()
    ax.hist([ss_score[in_target & ~mask], ss_score[in_target & mask]], bins=40, label=["clean", "poisoned"], stacked=True)
    ax.set_xlabel(f"spectral score in target class {cfg.target} (poison rate {last_rate:g})")
    ax.legend()
    plot2 = common.save_figure(fig, ctx.path("spectral_scores.png"))
    examples = np.concatenate([X_te[victims][:6], X_trig[:6]])[:, 0]
    fig, axes = common.new_figure(6, 2)
    axes.axis("off")
    axes.imshow(np.concatenate([np.concatenate(list(examples[:6]), 1), np.concatenate(list(examples[6:]), 1)], 0), cmap="gray")
    plot3 = common.save_figure(fig, ctx.path("trigger_examples.png"))

    ctx.write_summary({"target": cfg.target, "trigger_size": cfg.trigger_size, "train_images": len(X_tr),
                       "attack": rows, "detection": detection})
    ctx.write_report(
        f"# BadNets poisoning on MNIST-5k and its detection\n\nTrigger: {cfg.trigger_size}x{cfg.trigger_size} white square, "
        f"bottom-right; target class {cfg.target}; poisoned images are taken from other classes and relabelled. "
        f"{len(X_tr):,} training images, {cfg.epochs} epochs per model; attack success on {int(victims.sum())} triggered "
        f"non-target test images.\n\n![badnets]({plot1})\n\n{markdown_table(rows)}\n![examples]({plot3})\n\n"
        f"## Finding the poisoned training samples (penultimate activations of each poisoned model)\n\n"
        f"{markdown_table(detection)}\n`share of target class` = poisoned / all samples labelled {cfg.target}. "
        f"`2-means purity` = agreement of the unsupervised 2-way split of the target class with the truth (1.0 = "
        f"perfectly separated); `silhouette` = how well that split fits. `outvoted` = share of a cluster's members whose "
        f"{cfg.detection.ac_neighbours} nearest training images (pixels) mostly carry another label: activation clustering "
        f"flags a cluster above {cfg.detection.ac_relabel_share:g}, whatever its size. The size rule (flag the smaller "
        f"cluster when under {cfg.detection.ac_max_size:g} of its class, shown for comparison) and spectral signatures "
        f"both assume the poison is a minority of its class, so they lose it as it approaches half; the size rule also "
        f"flags the smaller half of clean classes. `spectral auroc` ranks the target class's samples by the spectral score.\n\n"
        f"![spectral]({plot2})\n\n## What this data is and is not\n\nReal MNIST digits with a synthetic, "
        "visible trigger made here; a tiny CNN. Clean-label and invisible triggers, and adaptive attackers who "
        "suppress activation separation, are not covered. The relabel check needs the poison to look like its source "
        "class in pixel space and to be outnumbered by it: once the poison is the majority of the target class "
        "(15 % poisoning and more here) the triggered images become each other's nearest neighbours and it misses "
        "them; on natural images, pixel distances would need replacing by features of a model trained elsewhere.\n")
    print(markdown_table(rows))
    print(markdown_table(detection))
