"""labcli/detect/explain.py: exact Shapley values, deletion curves, LIME helpers."""

from __future__ import annotations

import numpy as np

from labcli.detect import explain as ex


def test_exact_shapley_of_a_linear_model_is_weight_times_distance_to_the_background_mean():
    rng = np.random.default_rng(0)
    w, background, x = rng.normal(size=5), rng.normal(size=(7, 5)), rng.normal(size=5)
    phi = ex.exact_shapley(lambda Z: Z @ w, x, background)
    assert np.allclose(phi, w * (x - background.mean(0)))


def test_exact_shapley_splits_an_interaction_evenly_and_sums_to_the_prediction_gap():
    f = lambda Z: Z[:, 0] * Z[:, 1] + 2 * Z[:, 2]  # noqa: E731
    background = np.zeros((1, 4))
    x = np.array([2.0, 3.0, 1.0, 5.0])
    phi = ex.exact_shapley(f, x, background)
    assert np.allclose(phi, [3.0, 3.0, 2.0, 0.0])  # x0*x1 = 6 shared equally; the unused feature gets nothing
    assert np.isclose(phi.sum(), f(x[None])[0] - f(background)[0])


def test_deletion_curve_ranks_the_feature_the_model_uses_above_random_ones():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))

    def proba(Z):  # depends on feature 0 only
        p = 1 / (1 + np.exp(-3 * Z[:, 0]))
        return np.stack([1 - p, p], 1)

    pred = proba(X).argmax(1)
    attributions = np.zeros_like(X)
    attributions[:, 0] = 1.0  # the right explanation: feature 0, towards the predicted class
    c = ex.deletion_curve(proba, X, attributions, np.zeros(6), [1, 2], seed=0)
    assert c["k"] == [1, 2] and all(e > r > 0 for e, r in zip(c["explanation"], c["random"]))
    assert np.isclose(c["explanation"][0], (proba(X)[np.arange(50), pred] - 0.5).mean())


def test_jaccard_and_lime_stability():
    assert ex.jaccard([1, 2, 3], [2, 3, 4]) == 0.5 and ex.jaccard([], []) == 0.0
    same = ex.lime_stability(lambda x, s: [0, 1], np.zeros((3, 2)), [0, 1, 2])
    drift = ex.lime_stability(lambda x, s: [s], np.zeros((3, 2)), [0, 1, 2])
    assert same == 1.0 and drift == 0.0


def test_lime_weights_reads_a_real_lime_explanation():
    from lime.lime_tabular import LimeTabularExplainer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))

    def proba(Z):
        p = 1 / (1 + np.exp(-4 * Z[:, 1]))
        return np.stack([1 - p, p], 1)

    lime = LimeTabularExplainer(X, discretize_continuous=False, random_state=0)
    w = ex.lime_weights(lime.explain_instance(X[0], proba, labels=(1,), num_features=3, num_samples=300), 1, 3)
    assert w.shape == (3,) and np.argmax(np.abs(w)) == 1 and w[1] > 0


def test_text_deletion_removes_every_occurrence_of_the_top_words():
    assert ex.words("Free entry!! free, WIN now") == ["Free", "entry", "free", "WIN", "now"]
    assert ex.without("free entry, free win", {"free"}) == " entry,  win"

    def proba(texts):  # p(spam) rises with the count of "free"
        p = np.array([min(0.9, 0.2 + 0.35 * t.split().count("free")) for t in texts])
        return np.stack([1 - p, p], 1)

    texts = ["free free call me now", "free prize for you today"]
    right = [{"free": 1.0, "call": 0.1, "me": 0.0, "now": 0.0}, {"free": 1.0, "prize": 0.2, "for": 0.0, "you": 0.0, "today": 0.0}]
    c = ex.text_deletion_curve(proba, texts, right, [1], seed=0, random_draws=20)
    assert np.isclose(c["explanation"][0], np.mean([0.9 - 0.2, 0.55 - 0.2])) and c["explanation"][0] > c["random"][0]
