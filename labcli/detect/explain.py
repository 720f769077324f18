"""Explanations and the checks that say whether to believe them, for `lab detect explain`.

- `exact_shapley`: interventional Shapley values by enumerating every coalition (2^d model calls per background row):
  v(S) = mean over background rows b of f(x_S, b_rest). The ground truth SHAP's explainers approximate (TreeExplainer
  with feature_perturbation="interventional" computes exactly this, KernelExplainer samples it).
- `deletion_curve`: replace the k features an explanation ranks highest (towards the predicted class) by a baseline
  and record how far the predicted class's probability falls, against k random features (Samek et al. 2017 /
  RISE-style deletion).
- `lime_stability`: how much LIME's top-k feature set changes with its sampling seed (mean pairwise Jaccard).
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np


def exact_shapley(f, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Shapley values of f (rows -> scores [n]) at x ([d]) with the interventional value function over `background`
    ([m, d]). Cost: 2^d x m evaluations of f, in one batch per coalition size."""
    d = len(x)
    value: dict[tuple, float] = {}
    for size in range(d + 1):
        coalitions = list(combinations(range(d), size))
        rows = np.repeat(background[None], len(coalitions), 0).copy()  # [coalitions, m, d]
        for c, S in enumerate(coalitions):
            rows[c][:, list(S)] = x[list(S)]
        scores = np.asarray(f(rows.reshape(-1, d))).reshape(len(coalitions), len(background)).mean(1)
        value.update(zip(coalitions, scores))
    phi = np.zeros(d)
    for S, v in value.items():
        weight_in = factorial(len(S) - 1) * factorial(d - len(S)) / factorial(d) if S else 0.0
        for i in range(d):
            if i in S:  # phi_i += w(|S|-1) [v(S) - v(S minus i)]
                phi[i] += weight_in * (v - value[tuple(j for j in S if j != i)])
    return phi


def deletion_curve(predict_proba, X: np.ndarray, attributions: np.ndarray, baseline: np.ndarray, ks: list[int],
                   seed: int = 0, random_draws: int = 5) -> dict:
    """Mean drop of p(predicted class) when the top-k features by attribution (towards the predicted class) are set to
    `baseline`, and when k random features are, for each k. X, attributions: [n, d] (attributions already signed
    towards each row's predicted class); baseline: [d]."""
    rng = np.random.default_rng(seed)
    p0 = predict_proba(X)
    cls = p0.argmax(1)
    rows = np.arange(len(X))
    order = np.argsort(-attributions, axis=1)
    ranked, random = [], []
    for k in ks:
        Xk = X.copy()
        top = order[:, :k]
        Xk[rows[:, None], top] = baseline[top]
        ranked.append(float((p0[rows, cls] - predict_proba(Xk)[rows, cls]).mean()))
        drops = []
        for _ in range(random_draws):
            pick = np.argsort(rng.random(X.shape), axis=1)[:, :k]
            Xr = X.copy()
            Xr[rows[:, None], pick] = baseline[pick]
            drops.append((p0[rows, cls] - predict_proba(Xr)[rows, cls]).mean())
        random.append(float(np.mean(drops)))
    return {"k": list(ks), "explanation": ranked, "random": random}


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(len(a | b), 1)


def lime_stability(explain_topk, rows: np.ndarray, seeds: list[int]) -> float:
    """Mean over rows of the mean pairwise Jaccard of LIME's top-k features across seeds.
    explain_topk(row, seed) -> the k feature indices LIME ranks highest."""
    scores = []
    for x in rows:
        sets = [explain_topk(x, s) for s in seeds]
        scores.append(np.mean([jaccard(a, b) for a, b in combinations(sets, 2)]))
    return float(np.mean(scores))


def lime_weights(explanation, label: int, d: int) -> np.ndarray:
    """A LIME Explanation's local linear weights for `label` as a dense [d] vector (features it did not pick = 0)."""
    w = np.zeros(d)
    for i, v in explanation.as_map()[label]:
        w[i] = v
    return w


def words(text: str) -> list[str]:
    """The word tokens LIME's text explainer splits on (its default split_expression, r'\\W+')."""
    import re

    return [w for w in re.split(r"\W+", text) if w]


def without(text: str, drop: set[str]) -> str:
    """The text with every occurrence of the words in `drop` removed (what 'deleting a word' means for a bag-of-words
    model; the same as LIME's text perturbation)."""
    import re

    return "".join(t for t in re.split(r"(\W+)", text) if t not in drop)


def text_deletion_curve(predict_proba, texts: list[str], attributions: list[dict], ks: list[int], seed: int = 0,
                        random_draws: int = 5) -> dict:
    """deletion_curve for texts: attributions[i] maps each word of texts[i] to its weight towards the predicted class;
    remove the top-k words (all occurrences) vs k random words of the same text."""
    rng = np.random.default_rng(seed)
    p0 = predict_proba(texts)
    cls = p0.argmax(1)
    rows = np.arange(len(texts))
    ranked, random = [], []
    for k in ks:
        top = [without(t, set(sorted(a, key=a.get, reverse=True)[:k])) for t, a in zip(texts, attributions)]
        ranked.append(float((p0[rows, cls] - predict_proba(top)[rows, cls]).mean()))
        drops = []
        for _ in range(random_draws):
            pick = [without(t, set(rng.permutation(sorted(set(words(t))))[:k].tolist())) for t in texts]
            drops.append((p0[rows, cls] - predict_proba(pick)[rows, cls]).mean())
        random.append(float(np.mean(drops)))
    return {"k": list(ks), "explanation": ranked, "random": random}
