"""`lab detect explain`: SHAP, LIME and integrated gradients on lab's detectors, with checks on the explanations.

Tasks: phishing (UCI Phishing Websites, random forest), intrusion (NSL-KDD, random forest on the 41 features with
the three categorical ones as ordinal codes), spam (SMS Spam Collection, bag-of-words naive Bayes, explained per
word) and digits (MNIST-5k CNN). For each: a global importance plot (mean
|SHAP|), per-example explanations in the report, SHAP's additivity (tree explainer: sum of values = prediction -
base value), a deletion curve per method against random features, and LIME's stability over seeds (tabular tasks).
Digits: captum's integrated gradients (completeness delta) and SHAP's GradientExplainer (expected gradients).
Exact check: on a small 8-feature phishing forest, Shapley values by enumerating all 256 coalitions against SHAP's
interventional TreeExplainer (exact) and KernelExplainer (sampled; Spearman rank correlation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.detect import common
from labcli.detect import explain as ex
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

Task = Literal["phishing", "intrusion", "spam", "digits"]


class Config(RecipeConfig):
    tasks: list[Task] = Field(default_factory=lambda: ["phishing", "intrusion", "spam", "digits"], min_length=1, description="Detectors to explain")
    explain_rows: int = Field(30, ge=2, description="Test rows (images) explained per task; every method explains the same rows")
    lime_samples: int = Field(1000, ge=100, description="LIME perturbation samples per explanation")
    lime_seeds: int = Field(3, ge=2, description="LIME seeds for the stability score")
    top_k: int = Field(5, ge=1, description="Top-k features for LIME's stability (Jaccard of top-k sets)")
    background: int = Field(50, ge=5, description="Background rows for the exact / interventional / kernel Shapley check")
    exact_rows: int = Field(10, ge=1, description="Rows on which exact Shapley values are compared with SHAP's")
    trees: int = Field(100, ge=1, description="Trees in the random forests")
    intrusion_rows: int = Field(10000, ge=500, description="NSL-KDD training rows used (of 25,192; the forest's fit time grows with it)")
    cnn_epochs: int = Field(3, ge=1, description="Epochs of the digits CNN")
    ig_steps: int = Field(50, ge=4, description="Integrated-gradients steps (Gauss-Legendre, captum's default method)")


def forest(cfg: Config, X, y):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=cfg.trees, n_jobs=1, random_state=cfg.seed).fit(X, y)


def tabular_data(task: str, cfg: Config):
    """(X_train, y_train, X_test, y_test, feature names, categorical feature indices, class names)."""
    from sklearn.model_selection import train_test_split

    if task == "phishing":
        from labcli.data import uci_phishing

        X, y, names = uci_phishing.read()
        _, keep = np.unique(np.c_[X, y], axis=0, return_index=True)  # as `lab detect phishing`: no duplicate across the split
        X, y = X[np.sort(keep)], y[np.sort(keep)]
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=cfg.seed)
        return X_tr, y_tr, X_te, y_te, list(names), list(range(len(names))), ["legitimate", "phishing"]
    from sklearn.preprocessing import OrdinalEncoder

    from labcli.data import nsl_kdd

    train, test = nsl_kdd.read("train"), nsl_kdd.read("test")
    train = train.sample(n=min(cfg.intrusion_rows, len(train)), random_state=cfg.seed)
    names = [c for c in nsl_kdd.COLUMNS if c not in ("label", "difficulty")]
    enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1).fit(train[nsl_kdd.CATEGORICAL])

    def encode(df):
        out = df[names].copy()
        out[nsl_kdd.CATEGORICAL] = enc.transform(df[nsl_kdd.CATEGORICAL])
        return out.to_numpy(dtype=float), (df["label"] != "normal").to_numpy().astype(int)

    (X_tr, y_tr), (X_te, y_te) = encode(train), encode(test)
    return X_tr, y_tr, X_te, y_te, names, [names.index(c) for c in nsl_kdd.CATEGORICAL], ["normal", "attack"]


def towards_predicted(values: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Binary classifier attributions for class 1 -> attributions towards each row's predicted class."""
    return np.where(pred[:, None] == 1, values, -values)


def explain_tabular(task: str, cfg: Config, ctx) -> dict:
    import shap
    from lime.lime_tabular import LimeTabularExplainer
    from scipy.stats import mode

    X_tr, y_tr, X_te, y_te, names, categorical, classes = tabular_data(task, cfg)
    model = forest(cfg, X_tr, y_tr)
    rng = np.random.default_rng(cfg.seed)
    rows = X_te[rng.choice(len(X_te), cfg.explain_rows, replace=False)]
    proba = model.predict_proba(rows)
    pred = proba.argmax(1)

    tree = shap.TreeExplainer(model)  # path-dependent: exact for the forest's own probability output
    sv = tree.shap_values(rows)[:, :, 1]  # [rows, features] for class 1
    base = float(np.atleast_1d(tree.expected_value)[1])
    additivity = float(np.abs(sv.sum(1) + base - proba[:, 1]).max())

    lime = LimeTabularExplainer(X_tr, feature_names=names, class_names=classes, categorical_features=categorical,
                                discretize_continuous=True, random_state=cfg.seed)

    def lime_explain(x, seed):
        lime.random_state = np.random.RandomState(seed)
        return lime.explain_instance(x, model.predict_proba, labels=(1,), num_features=len(names), num_samples=cfg.lime_samples)

    lime_w = np.stack([ex.lime_weights(lime_explain(x, cfg.seed), 1, len(names)) for x in rows])
    seeds = list(range(cfg.seed, cfg.seed + cfg.lime_seeds))
    stability = ex.lime_stability(lambda x, s: [i for i, _ in lime_explain(x, s).as_map()[1][: cfg.top_k]], rows, seeds)

    baseline = mode(X_tr, axis=0, keepdims=False).mode.astype(float)  # "feature removed" = its most common training value
    ks = [1, 3, 5, 10]
    curves = {m: ex.deletion_curve(model.predict_proba, rows, towards_predicted(a, pred), baseline, ks, seed=cfg.seed)
              for m, a in (("SHAP (tree)", sv), ("LIME", lime_w))}

    importance = np.abs(tree.shap_values(X_te[rng.choice(len(X_te), min(500, len(X_te)), replace=False)])[:, :, 1]).mean(0)
    order = np.argsort(importance)[::-1][:15]
    fig, ax = common.new_figure(6, 5)
    ax.barh([names[i] for i in order][::-1], importance[order][::-1])
    ax.set_xlabel(f"mean |SHAP value| for p({classes[1]}) over 500 test rows")
    plot = common.save_figure(fig, ctx.path(f"{task}_shap_importance.png"))

    examples = []
    for i in range(3):
        top = np.argsort(-np.abs(sv[i]))[:5]
        ltop = np.argsort(-np.abs(lime_w[i]))[:5]
        examples.append({"row": i, "p(" + classes[1] + ")": float(proba[i, 1]),
                         "SHAP top 5": ", ".join(f"{names[j]}={rows[i, j]:g} ({sv[i, j]:+.3f})" for j in top),
                         "LIME top 5": ", ".join(f"{names[j]} ({lime_w[i, j]:+.3f})" for j in ltop)})
    out = {"task": task, "model": f"random forest ({cfg.trees} trees)", "test accuracy": float(model.score(X_te, y_te)),
           "shap additivity max error": additivity, "lime stability": stability,
           "deletion": curves, "examples": examples, "plot": plot}
    if task == "phishing":
        out["exact"] = exact_check(cfg, X_tr, y_tr, X_te, model, names)
    return out


def exact_check(cfg: Config, X_tr, y_tr, X_te, big_model, names) -> dict:
    """Exact Shapley values (all 2^8 coalitions) of a small forest on the 8 most important phishing features (by the
    big forest's impurity importance on training data) vs SHAP's interventional TreeExplainer and KernelExplainer."""
    import shap
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestClassifier

    keep = np.argsort(big_model.feature_importances_)[::-1][:8]
    small = RandomForestClassifier(n_estimators=20, max_depth=4, n_jobs=1, random_state=cfg.seed).fit(X_tr[:, keep], y_tr)
    rng = np.random.default_rng(cfg.seed + 1)
    background = X_tr[rng.choice(len(X_tr), cfg.background, replace=False)][:, keep]
    rows = X_te[rng.choice(len(X_te), cfg.exact_rows, replace=False)][:, keep]
    f = lambda Z: small.predict_proba(Z)[:, 1]  # noqa: E731
    exact = np.stack([ex.exact_shapley(f, x, background) for x in rows])
    inter = shap.TreeExplainer(small, data=background, feature_perturbation="interventional").shap_values(rows)[:, :, 1]
    kernel = shap.KernelExplainer(f, background, seed=cfg.seed).shap_values(rows, nsamples=200, silent=True)
    rho = [spearmanr(e, k).statistic for e, k in zip(exact, kernel)]
    return {"features": [names[i] for i in keep], "background rows": cfg.background, "rows": cfg.exact_rows,
            "tree (interventional) max abs diff vs exact": float(np.abs(inter - exact).max()),
            "kernel max abs diff vs exact": float(np.abs(kernel - exact).max()),
            "kernel spearman vs exact (mean)": float(np.mean(rho)), "kernel spearman vs exact (min)": float(np.min(rho))}


def explain_spam(cfg: Config, ctx) -> dict:
    """The spam detector's bag-of-words naive Bayes (as `lab detect spam`), explained word by word: SHAP's partition
    explainer with a text masker and LIME's text explainer, both over the message's own words."""
    import shap
    from lime.lime_text import LimeTextExplainer
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    from labcli.data import sms_spam

    texts, labels = sms_spam.read()
    train_x, test_x, train_y, test_y = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=cfg.seed)
    model = make_pipeline(CountVectorizer(), MultinomialNB()).fit(train_x, train_y)
    rng = np.random.default_rng(cfg.seed)
    # half spam, half ham (a random draw would be ~87 % ham), messages of 3+ words (SHAP's text clustering needs 2+)
    long = np.array([len(ex.words(t)) >= 3 for t in test_x])
    pick = np.r_[rng.choice(np.flatnonzero((test_y == 1) & long), cfg.explain_rows // 2, replace=False),
                 rng.choice(np.flatnonzero((test_y == 0) & long), cfg.explain_rows - cfg.explain_rows // 2, replace=False)]
    rows = [test_x[i] for i in pick]
    proba = lambda t: model.predict_proba(list(t))  # noqa: E731
    p = proba(rows)
    pred = p.argmax(1)

    masker = shap.maskers.Text(r"\W+")
    explainer = shap.Explainer(lambda t: proba(t)[:, 1], masker, seed=cfg.seed)
    sv = explainer(rows, silent=True)
    additivity = float(max(abs(v.values.sum() + v.base_values - p[i, 1]) for i, v in enumerate(sv)))

    def shap_words(i):  # word -> summed SHAP value of its tokens (towards the predicted class)
        out: dict[str, float] = {}
        for tok, val in zip(sv[i].data, sv[i].values):
            w = tok.strip()
            w = "".join(ch for ch in w if ch.isalnum() or ch == "_")
            if w:
                out[w] = out.get(w, 0.0) + float(val if pred[i] == 1 else -val)
        return out

    lime = LimeTextExplainer(class_names=["ham", "spam"], random_state=cfg.seed)

    def lime_explain(text, seed):
        lime.random_state = np.random.RandomState(seed)
        return lime.explain_instance(text, model.predict_proba, labels=(1,), num_features=50, num_samples=cfg.lime_samples)

    lime_words = []
    for i, text in enumerate(rows):
        weights = dict(lime_explain(text, cfg.seed).as_list(label=1))
        lime_words.append({w: (v if pred[i] == 1 else -v) for w, v in weights.items()})
    seeds = list(range(cfg.seed, cfg.seed + cfg.lime_seeds))
    stability = ex.lime_stability(lambda x, s: [w for w, _ in lime_explain(str(x), s).as_list(label=1)[: cfg.top_k]],
                                  np.array(rows, dtype=object), seeds)
    ks = [1, 2, 3, 5]
    curves = {m: ex.text_deletion_curve(proba, rows, a, ks, seed=cfg.seed)
              for m, a in (("SHAP (partition, text masker)", [shap_words(i) for i in range(len(rows))]), ("LIME", lime_words))}

    totals: dict[str, float] = {}
    for i in range(len(rows)):
        for w, v in shap_words(i).items():
            totals[w.lower()] = totals.get(w.lower(), 0.0) + abs(v) / len(rows)
    top = sorted(totals, key=totals.get, reverse=True)[:15]
    fig, ax = common.new_figure(6, 5)
    ax.barh(top[::-1], [totals[w] for w in top][::-1])
    ax.set_xlabel(f"mean |SHAP value| per message, {len(rows)} messages")
    plot = common.save_figure(fig, ctx.path("spam_shap_importance.png"))
    examples = []
    for i in range(min(3, len(rows))):
        s_top = sorted(shap_words(i).items(), key=lambda kv: -abs(kv[1]))[:5]
        l_top = sorted(lime_words[i].items(), key=lambda kv: -abs(kv[1]))[:5]
        examples.append({"message": rows[i][:60], "p(spam)": float(p[i, 1]),
                         "SHAP top 5 (towards prediction)": ", ".join(f"{w} ({v:+.3f})" for w, v in s_top),
                         "LIME top 5 (towards prediction)": ", ".join(f"{w} ({v:+.3f})" for w, v in l_top)})
    return {"task": "spam", "model": "bag-of-words naive Bayes", "test accuracy": float(model.score(test_x, test_y)),
            "shap additivity max error": additivity, "lime stability": stability, "deletion": curves,
            "examples": examples, "plot": plot}


def explain_digits(cfg: Config, ctx) -> dict:
    import shap
    import torch
    from captum.attr import IntegratedGradients

    from labcli.data import mnist5k
    from labcli.detect.vision import SmallCNN, accuracy, train_model

    (X_tr, y_tr), (X_te, y_te) = mnist5k.read(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = train_model(SmallCNN(), X_tr, y_tr, epochs=cfg.cnn_epochs, seed=cfg.seed).eval()
    rng = np.random.default_rng(cfg.seed)
    idx = rng.choice(len(X_te), cfg.explain_rows, replace=False)
    x = torch.from_numpy(X_te[idx])
    with torch.no_grad():
        pred = model(x).argmax(1)
    ig = IntegratedGradients(model)
    attr_ig, delta = ig.attribute(x, baselines=torch.zeros_like(x), target=pred, n_steps=cfg.ig_steps,
                                  return_convergence_delta=True)
    background = torch.from_numpy(X_tr[rng.choice(len(X_tr), 100, replace=False)])
    grad = shap.GradientExplainer(model, background)
    sv = grad.shap_values(x, nsamples=200, rseed=cfg.seed)  # [n, 1, 28, 28, classes]
    sv = np.asarray(sv)[np.arange(len(x)), ..., pred.numpy()]  # attributions for each image's predicted class

    def proba(flat):
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(flat.reshape(-1, 1, 28, 28).astype(np.float32))), 1).numpy()

    flat = x.numpy().reshape(len(x), -1)
    ks = [10, 25, 50, 100, 200]
    baseline = np.zeros(flat.shape[1])  # "pixel removed" = black, IG's baseline
    curves = {m: ex.deletion_curve(proba, flat, a.reshape(len(x), -1), baseline, ks, seed=cfg.seed)
              for m, a in (("integrated gradients", attr_ig.detach().numpy()), ("SHAP (expected gradients)", sv))}

    fig, axes = common.new_figure(7, 7)
    fig.clf()
    for r in range(3):
        for c, (img, title) in enumerate([(flat[r], f"pred {int(pred[r])}"), (attr_ig[r].detach().numpy(), "IG"), (sv[r], "SHAP")]):
            ax = fig.add_subplot(3, 3, 3 * r + c + 1)
            img = np.asarray(img).reshape(28, 28)
            lim = np.abs(img).max() or 1.0
            ax.imshow(img, cmap="gray" if c == 0 else "bwr", vmin=None if c == 0 else -lim, vmax=None if c == 0 else lim)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    plot = common.save_figure(fig, ctx.path("digits_attributions.png"))
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x)))[torch.arange(len(x)), pred]  # f(x) - f(baseline), predicted class
    return {"task": "digits", "model": f"SmallCNN, {cfg.cnn_epochs} epochs", "test accuracy": accuracy(model, X_te, y_te),
            "ig completeness max |delta|": float(delta.abs().max()),
            "ig completeness max |delta| / |f(x) - f(0)|": float((delta.abs() / gap.abs()).max()),
            "deletion": curves, "plot": plot}


def deletion_rows(result: dict) -> list[dict]:
    rows = []
    for method, c in result["deletion"].items():
        for k, drop, rand in zip(c["k"], c["explanation"], c["random"]):
            rows.append({"task": result["task"], "method": method, "k removed": k, "p drop (method)": drop, "p drop (random)": rand})
    return rows


def run(cfg: Config, ctx) -> None:
    seed_everything(cfg.seed)
    results = []
    with common.progress() as bar:
        task = bar.add_task("explaining", total=len(cfg.tasks))
        for name in cfg.tasks:
            make = {"digits": explain_digits, "spam": explain_spam}.get(name)
            results.append(make(cfg, ctx) if make else explain_tabular(name, cfg, ctx))
            bar.advance(task)

    checks = []
    for r in results:
        checks.append({"task": r["task"], "model": r["model"], "test accuracy": r["test accuracy"],
                       "SHAP additivity max error": r.get("shap additivity max error"),
                       "IG completeness max relative error": r.get("ig completeness max |delta| / |f(x) - f(0)|"),
                       f"LIME top-{cfg.top_k} Jaccard over {cfg.lime_seeds} seeds": r.get("lime stability"),
                       "deletion drop > random": "; ".join(f"{m} at {sum(a > b for a, b in zip(c['explanation'], c['random']))}/{len(c['k'])} k"
                                                          for m, c in r["deletion"].items())})
    deletion = [row for r in results for row in deletion_rows(r)]
    exact = next((r["exact"] for r in results if "exact" in r), None)
    ctx.write_summary({"checks": checks, "deletion": deletion, "exact": [exact] if exact else [],
                       "examples": {r["task"]: r.get("examples", []) for r in results}})
    report = ["# Explanations of lab's detectors (SHAP, LIME, integrated gradients)\n",
              f"Each task explains the same {cfg.explain_rows} random test rows with every method. Deletion: the k features "
              "(pixels) an explanation ranks highest towards the predicted class are set to a baseline (tabular: the most "
              "common training value; digits: black) and the drop in the predicted class's probability is compared with "
              "removing k random features (mean of 5 draws).\n",
              f"## Checks\n\n{markdown_table(checks)}\n", f"## Deletion curves\n\n{markdown_table(deletion)}\n"]
    if exact:
        report.append(f"## Exact Shapley values\n\nA 20-tree depth-4 forest on the 8 phishing features {', '.join(exact['features'])}; "
                      f"{exact['background rows']} training rows as background; {exact['rows']} test rows. Exact = all 256 "
                      f"coalitions enumerated. KernelExplainer with 200 samples per row.\n\n"
                      f"{markdown_table([{k: v for k, v in exact.items() if k != 'features'}])}\n")
    for r in results:
        report.append(f"## {r['task']}\n\n![{r['task']}]({r['plot']})\n")
        if r.get("examples"):
            report.append(markdown_table(r["examples"]) + "\n")
    report.append("## What this is and is not\n\nExplanations of these models on these data sets, not of the phenomena: a "
                  "feature the forest leans on can be a proxy. SHAP's tree explainer here is path-dependent (the forest's "
                  "own conditional expectations); the exact check uses the interventional definition with a background. "
                  "LIME is not run on the digits (it needs superpixel segmentation; IG and SHAP gradients cover the CNN).\n")
    ctx.write_report("\n".join(report))
    print(markdown_table(checks))
    if exact:
        print(markdown_table([{k: v for k, v in exact.items() if k != "features"}]))
