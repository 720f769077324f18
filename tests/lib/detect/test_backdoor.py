"""labcli/detect/backdoor.py on small synthetic data: each detector flags what its rule says, and nothing else."""

from __future__ import annotations

import numpy as np

from labcli.detect import backdoor


def blobs(sizes, dim=20, seed=0, spread=5.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * spread
    return np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)]).astype(np.float32)


def test_poison_relabels_the_requested_share_of_non_target_images():
    X = np.zeros((200, 1, 28, 28), dtype=np.float32)
    y = np.repeat(np.arange(10), 20)
    Xp, yp, mask = backdoor.poison(X, y, 0.1, target=3, size=3, seed=0)
    assert mask.sum() == 20 and (y[mask] != 3).all() and (yp[mask] == 3).all()
    assert (Xp[mask][:, 0, -4:-1, -4:-1] == 1).all() and (Xp[~mask] == 0).all()


def test_knn_relabel_flags_relabelled_lookalikes_only():
    X = blobs([40, 40, 40])
    labels = np.repeat([0, 1, 2], 40)
    labels[40:44] = 0  # four members of class 1 relabelled to 0 (dirty-label poison)
    outvoted = backdoor.knn_relabel(X, labels, k=10)
    assert outvoted[40:44].all() and not outvoted[:40].any() and not outvoted[44:].any()


def test_activation_clustering_uses_chen_et_al_size_rule():
    """The smaller 2-means cluster is flagged when it holds at most max_share of its class, never otherwise."""
    labels = np.zeros(100, dtype=int)
    clusters = np.r_[np.zeros(70, int), np.ones(30, int)]
    assert backdoor.activation_clustering(clusters, labels, 0.35)[70:].all()
    assert not backdoor.activation_clustering(clusters, labels, 0.35)[:70].any()
    assert not backdoor.activation_clustering(clusters, labels, 0.25).any()  # 30 % > 25 %: not poison by the rule


def test_two_means_separates_a_distinct_subgroup():
    acts = np.abs(blobs([80, 20], dim=16, seed=1))  # ReLU-like activations, two groups in one class
    clusters = backdoor.two_means(acts, np.zeros(100, int), components=5, seed=0)
    assert len(set(clusters[:80])) == 1 and len(set(clusters[80:])) == 1 and clusters[0] != clusters[99]


def test_clusters_outvoted_flags_a_majority_cluster_whatever_its_size():
    labels = np.zeros(100, dtype=int)
    clusters = np.r_[np.zeros(40, int), np.ones(60, int)]
    outvoted = np.r_[np.zeros(40, bool), np.ones(45, bool), np.zeros(15, bool)]  # 75 % of the larger cluster
    flagged = backdoor.clusters_outvoted(clusters, labels, outvoted, share=0.5)
    assert flagged[40:].all() and not flagged[:40].any()
    assert not backdoor.clusters_outvoted(clusters, labels, outvoted, share=0.8).any()


def test_spectral_signatures_flag_the_outliers_along_the_top_direction():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(100, 8))
    acts[:10, 0] += 12.0  # ten poisoned samples shifted along one axis
    flagged, scores = backdoor.spectral_signatures(acts, np.zeros(100, int), eps=0.1)
    assert flagged.sum() == 15 and flagged[:10].all()  # ceil(1.5 x 0.1 x 100) removed, the ten among them
    assert scores[:10].min() > np.median(scores[10:])


def test_precision_recall_is_undefined_where_it_should_be():
    truth = np.r_[np.ones(4, bool), np.zeros(6, bool)]
    assert backdoor.precision_recall(np.r_[np.ones(2, bool), np.zeros(8, bool)], truth) == \
        {"flagged": 2, "poisoned": 4, "precision": 1.0, "recall": 0.5}
    assert backdoor.precision_recall(np.zeros(10, bool), truth)["precision"] is None
    assert backdoor.precision_recall(np.ones(10, bool), np.zeros(10, bool))["recall"] is None
