"""`lab detect phishing`: tree models on the 30 hand-engineered UCI Phishing Websites features.

The file has 11,055 rows but only 5,849 distinct (features, label) rows; duplicates are dropped before the
stratified split by default so identical rows cannot sit on both sides.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.data import uci_phishing
from labcli.detect import common
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

Model = Literal["tree", "forest", "boosting", "logistic"]


class Config(RecipeConfig):
    data: str = Field("uci_phishing", description="uci_phishing or a CSV with the same 30 feature columns + Result (-1 = phishing)")
    models: list[Model] = Field(default_factory=lambda: ["tree", "forest", "boosting", "logistic"], min_length=1, description="Models (logistic is the linear baseline)")
    test_fraction: float = Field(0.3, description="Share held out for testing")
    dedupe: bool = Field(True, description="Drop duplicate rows before splitting")
    cv_folds: int = Field(5, description="Stratified folds for the cross-validated accuracy on the training part (0 = skip)")


def make_model(name: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    return {"tree": lambda: DecisionTreeClassifier(random_state=seed),
            "forest": lambda: RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed),
            "boosting": lambda: HistGradientBoostingClassifier(random_state=seed),
            "logistic": lambda: LogisticRegression(max_iter=2000)}[name]()


def run(cfg: Config, ctx) -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import cross_val_score, train_test_split

    seed_everything(cfg.seed)
    X, y, names = uci_phishing.read(cfg.data)
    raw = len(y)
    if cfg.dedupe:
        _, keep = np.unique(np.c_[X, y], axis=0, return_index=True)
        keep.sort()
        X, y = X[keep], y[keep]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=cfg.test_fraction, stratify=y, random_state=cfg.seed)
    rows, importances = [], None
    for name in cfg.models:
        model = make_model(name, cfg.seed).fit(X_tr, y_tr)
        pred, score = model.predict(X_te), model.predict_proba(X_te)[:, 1]
        row = {"model": name, "accuracy": accuracy_score(y_te, pred), "f1 (phishing)": f1_score(y_te, pred),
               "auroc": roc_auc_score(y_te, score)}
        if cfg.cv_folds:
            cv = cross_val_score(make_model(name, cfg.seed), X_tr, y_tr, cv=cfg.cv_folds)
            row[f"cv{cfg.cv_folds} accuracy"] = f"{cv.mean():.4f} ± {cv.std():.4f}"
        rows.append(row)
        ctx.log(**{k: v for k, v in row.items()})
        if name == "forest":
            importances = model.feature_importances_

    plots = []
    if importances is not None:
        order = np.argsort(importances)[::-1][:15]
        fig, ax = common.new_figure(6, 5)
        ax.barh([names[i] for i in order][::-1], importances[order][::-1])
        ax.set_xlabel("random-forest impurity importance")
        plots.append(common.save_figure(fig, ctx.path("feature_importance.png")))
    ctx.write_summary({"data": cfg.data, "raw_rows": raw, "rows_used": len(y), "train": len(y_tr), "test": len(y_te),
                       "models": rows})
    ctx.write_report(
        f"# Phishing website detection (UCI Phishing Websites)\n\n{raw:,} rows, {len(y):,} used"
        f"{' after dropping duplicates' if cfg.dedupe else ' (duplicates kept: test scores are inflated)'}; "
        f"stratified split {len(y_tr):,} train / {len(y_te):,} test; phishing = positive.\n\n{markdown_table(rows)}\n"
        + "".join(f"![{p}]({p})\n\n" for p in plots)
        + "## What this data is and is not\n\nReal sites (2012, PhishTank/MillerSmiles vs. Yahoo/starting points), but only "
        "30 ternary features someone already engineered from URL, HTML and WHOIS/traffic lookups; no raw URLs. A model "
        "here cannot be run on a live URL without rebuilding those lookups, and phishing kits have changed since.\n")
    print(markdown_table(rows))
