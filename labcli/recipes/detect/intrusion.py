"""`lab detect intrusion`: NSL-KDD network intrusion detection, supervised and anomaly-based.

Supervised models learn normal-vs-attack from the 20 % training file and are scored on KDDTest+ and on its
hard subset KDDTest-21 (rows that not all 21 reference classifiers got right), reported apart.
Anomaly detectors see only normal training traffic and score every test row (AUROC, attack = positive).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.data import nsl_kdd
from labcli.detect import common
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

Supervised = Literal["tree", "forest", "logistic"]
Anomaly = Literal["iforest", "ocsvm", "pca", "autoencoder"]


class Config(RecipeConfig):
    data: str = Field("nsl_kdd", description="Test records: nsl_kdd (KDDTest+) or a CSV in NSL-KDD format (43 columns)")
    supervised: list[Supervised] = Field(default_factory=lambda: ["tree", "forest", "logistic"], description="Supervised models")
    unsupervised: list[Anomaly] = Field(default_factory=lambda: ["iforest", "ocsvm", "pca", "autoencoder"], description="Anomaly detectors (fit on normal traffic only)")
    max_train_rows: int = Field(0, description="Use at most this many training rows (0 = all 25,192)")
    ocsvm_rows: int = Field(4000, description="Normal rows the one-class SVM fits on (its cost grows ~n^2)")
    ae_epochs: int = Field(20, description="Autoencoder training epochs")
    pca_variance: float = Field(0.95, description="Variance the PCA detector keeps")


def features(train, test):
    """log1p numeric columns + one-hot categoricals, standardised on the training rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric = [c for c in train.columns if c not in nsl_kdd.CATEGORICAL + ["label", "difficulty"]]
    prep = ColumnTransformer([
        ("num", make_pipeline(FunctionTransformer(lambda x: np.log1p(np.clip(x, 0, None))), StandardScaler()), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), nsl_kdd.CATEGORICAL),
    ])
    return prep.fit_transform(train).astype(np.float32), prep.transform(test).astype(np.float32)


def supervised_model(name: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    return {"tree": lambda: DecisionTreeClassifier(random_state=seed),
            "forest": lambda: RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed),
            "logistic": lambda: LogisticRegression(max_iter=2000)}[name]()


def anomaly_scores(name: str, normal: np.ndarray, test: np.ndarray, cfg: Config) -> np.ndarray:
    """Fit on normal rows only; return a score per test row, higher = more anomalous."""
    rng = np.random.default_rng(cfg.seed)
    if name == "iforest":
        from sklearn.ensemble import IsolationForest

        return -IsolationForest(n_estimators=200, random_state=cfg.seed).fit(normal).score_samples(test)
    if name == "ocsvm":
        from sklearn.svm import OneClassSVM

        rows = normal[rng.permutation(len(normal))[: cfg.ocsvm_rows]]
        return -OneClassSVM(kernel="rbf", gamma="scale", nu=0.05).fit(rows).score_samples(test)
    if name == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=cfg.pca_variance, random_state=cfg.seed).fit(normal)
        recon = pca.inverse_transform(pca.transform(test))
        return ((test - recon) ** 2).sum(1)
    return autoencoder_scores(normal, test, cfg)


def autoencoder_scores(normal: np.ndarray, test: np.ndarray, cfg: Config) -> np.ndarray:
    import torch
    from torch import nn

    torch.manual_seed(cfg.seed)
    d = normal.shape[1]
    model = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, d))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(normal)
    with common.progress() as bar:
        task = bar.add_task("autoencoder (normal traffic only)", total=cfg.ae_epochs)
        for _ in range(cfg.ae_epochs):
            for idx in torch.randperm(len(x)).split(256):
                loss = ((model(x[idx]) - x[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            bar.advance(task)
    with torch.no_grad():
        t = torch.from_numpy(test)
        return ((model(t) - t) ** 2).sum(1).numpy()


def run(cfg: Config, ctx) -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

    if not cfg.supervised and not cfg.unsupervised:
        raise UserError("no models given", "pass supervised=[tree] and/or unsupervised=[iforest]")
    seed_everything(cfg.seed)
    test, train = nsl_kdd.read("test", cfg.data), nsl_kdd.read("train")  # the user's file first: fail fast
    if cfg.max_train_rows:
        train = train.sample(n=min(cfg.max_train_rows, len(train)), random_state=cfg.seed)
    X_train, X_test = features(train, test)
    y_train = (train["label"] != "normal").to_numpy().astype(int)
    y_test = (test["label"] != "normal").to_numpy().astype(int)
    hard = (test["difficulty"] < 21).to_numpy()
    subsets = {"KDDTest+": np.ones_like(hard), "KDDTest-21": hard}

    sup_rows, unsup_rows, rocs = [], [], {}
    for name in cfg.supervised:
        pred = supervised_model(name, cfg.seed).fit(X_train, y_train).predict(X_test)
        for subset, mask in subsets.items():
            row = {"model": name, "test set": subset, "rows": int(mask.sum()),
                   "accuracy": accuracy_score(y_test[mask], pred[mask]), "f1 (attack)": f1_score(y_test[mask], pred[mask])}
            sup_rows.append(row)
            ctx.log(kind="supervised", **row)
    normal = X_train[y_train == 0]
    for name in cfg.unsupervised:
        scores = anomaly_scores(name, normal, X_test, cfg)
        rocs[name] = roc_curve(y_test, scores)[:2]
        for subset, mask in subsets.items():
            row = {"detector": name, "test set": subset, "rows": int(mask.sum()), "auroc": roc_auc_score(y_test[mask], scores[mask])}
            unsup_rows.append(row)
            ctx.log(kind="anomaly", **row)

    plots = []
    if sup_rows:
        fig, ax = common.new_figure()
        for i, subset in enumerate(subsets):
            vals = [r["accuracy"] for r in sup_rows if r["test set"] == subset]
            ax.bar(np.arange(len(vals)) + 0.4 * i, vals, width=0.4, label=subset)
        ax.set_xticks(np.arange(len(cfg.supervised)) + 0.2, cfg.supervised)
        ax.axhline(0.8105, ls="--", c="k", lw=0.8, label="J48, Tavallaee et al. (KDDTest+)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
        plots.append(common.save_figure(fig, ctx.path("supervised_accuracy.png")))
    if rocs:
        fig, ax = common.new_figure(5, 5)
        for name, (fpr, tpr) in rocs.items():
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("anomaly detectors on KDDTest+ (trained on normal only)")
        ax.legend()
        plots.append(common.save_figure(fig, ctx.path("anomaly_roc.png")))

    summary = {"data": cfg.data, "train_rows": len(train), "test_rows": len(test), "kddtest21_rows": int(hard.sum()),
               "supervised": sup_rows, "anomaly": unsup_rows}
    ctx.write_summary(summary)
    ctx.write_report(
        f"# Intrusion detection on NSL-KDD\n\n"
        f"Training: `KDDTrain+_20Percent` ({len(train):,} rows, normal vs attack). Test: "
        f"{'KDDTest+' if cfg.data == 'nsl_kdd' else cfg.data} ({len(test):,} rows); KDDTest-21 = rows with difficulty < 21 "
        f"({int(hard.sum()):,}). Features: log1p + standardised numeric columns, one-hot protocol/service/flag.\n\n"
        f"## Supervised (binary normal/attack)\n\n{markdown_table(sup_rows)}\n"
        f"Reference: J48 on KDDTest+ 81.05 % (Tavallaee et al. 2009, trained on the full KDDTrain+; here the 20 % file).\n\n"
        f"## Anomaly detection (fit on normal training traffic only)\n\n{markdown_table(unsup_rows)}\n"
        + "".join(f"![{p}]({p})\n\n" for p in plots)
        + "## What this data is and is not\n\nNSL-KDD is the de-duplicated 1998 DARPA/KDD'99 simulated traffic: real "
        "benchmark records, but old and synthetic-lab traffic. It is not evidence of performance on today's networks; "
        "18 attack types in KDDTest+ never appear in the 20 % training file, which is why the test split is hard.\n")
    print(markdown_table(sup_rows) + "\n" + markdown_table(unsup_rows))
