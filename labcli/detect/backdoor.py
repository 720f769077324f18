"""BadNets data poisoning and four ways to find the poisoned training samples.

Poisoning (Gu et al. 2017): a white square is stamped on a share of the training images, taken from the non-target
classes, and they are relabelled to the target class.

Detectors, each a mask of flagged training samples:
- `activation_clustering` (Chen et al. 2018): per class, ICA of the penultimate activations, then 2-means; Chen et al.'s
  relative-size rule flags the smaller cluster when it holds at most `max_share` (0.35, ART's default) of its class.
- `spectral_signatures` (Tran et al. 2018): per class, the squared projection of the centred activations on their top
  singular vector; the 1.5 x eps x n highest scores of every class are flagged.
- `knn_relabel` (a label-noise check, no model involved): a sample is flagged when most of its k nearest other
  training images (pixels, L2) carry another label. A poisoned image is a digit of another class with a changed label.
- `clusters_outvoted` (the combination): activation clustering's 2-means clusters, but a cluster is flagged when more
  than `share` of its members are flagged by the k-NN relabel check, whatever the cluster's size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


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


def activations(model, X, batch: int = 500) -> np.ndarray:
    """The model's penultimate activations (model.features) for every image."""
    import torch

    with torch.no_grad():
        return torch.cat([model.features(torch.from_numpy(X[i : i + batch])) for i in range(0, len(X), batch)]).numpy()


def two_means(acts, labels, components: int, seed: int) -> np.ndarray:
    """Chen et al.'s split: per class, ICA to `components` dimensions, then 2-means. Returns a 0/1 cluster per sample
    (-1 for classes too small to split)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import FastICA

    clusters = np.full(len(labels), -1)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 4:
            continue
        live = acts[idx][:, acts[idx].std(0) > 1e-6]  # dead ReLU units make the whitening singular
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA convergence notes
            try:
                reduced = FastICA(n_components=min(components, live.shape[1], len(idx) - 1), random_state=seed,
                                  max_iter=1000).fit_transform(live)
            except ValueError:  # a rank-deficient class (tiny runs): cluster the live activations themselves
                reduced = live
        if not np.isfinite(reduced).all():
            reduced = live
        clusters[idx] = KMeans(2, n_init=10, random_state=seed).fit(reduced).labels_
    return clusters


def activation_clustering(clusters, labels, max_share: float = 0.35) -> np.ndarray:
    """Chen et al.'s relative-size rule: in every class, flag the smaller 2-means cluster if it holds at most
    max_share of the class."""
    flagged = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & (clusters >= 0))
        if not len(idx):
            continue
        sizes = np.bincount(clusters[idx], minlength=2)
        small = int(np.argmin(sizes))
        if sizes[small] / len(idx) <= max_share:
            flagged[idx[clusters[idx] == small]] = True
    return flagged


def knn_relabel(X, labels, k: int) -> np.ndarray:
    """Per sample: True when more than half of its k nearest other training images (pixels, L2) carry another label."""
    from sklearn.neighbors import NearestNeighbors

    flat = X.reshape(len(X), -1)
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(flat).kneighbors(flat, return_distance=False)[:, 1:]
    return (labels[neighbours] != labels[:, None]).mean(1) > 0.5


def clusters_outvoted(clusters, labels, outvoted, share: float = 0.5) -> np.ndarray:
    """Flag every 2-means cluster in which more than `share` of the members are outvoted by their neighbours."""
    flagged = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        for j in (0, 1):
            members = (labels == c) & (clusters == j)
            if members.any() and outvoted[members].mean() > share:
                flagged[members] = True
    return flagged


def spectral_signatures(acts, labels, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Tran et al.: (flagged, score) with the ceil(1.5 x eps x n) highest outlier scores of every class flagged."""
    flagged, scores = np.zeros(len(labels), dtype=bool), np.zeros(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        centred = acts[idx] - acts[idx].mean(0)
        top = np.linalg.svd(centred, full_matrices=False)[2][0]
        score = (centred @ top) ** 2
        scores[idx] = score
        k = min(len(idx), math.ceil(round(1.5 * eps * len(idx), 6)))  # round: 1.5 x 0.1 x 100 is 15.000000000000002
        flagged[idx[np.argsort(score)[::-1][:k]]] = True
    return flagged, scores


def precision_recall(flagged, truth) -> dict:
    """flagged / true positives as counts, precision and recall (None where undefined: nothing flagged / no poison)."""
    tp, n_flag, n_true = int((flagged & truth).sum()), int(flagged.sum()), int(truth.sum())
    return {"flagged": n_flag, "poisoned": n_true, "precision": tp / n_flag if n_flag else None,
            "recall": tp / n_true if n_true else None}
