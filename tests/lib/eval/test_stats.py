"""Intervals: Wilson at the edges, the paired bootstrap's sign."""

import numpy as np

from labcli.eval import stats


def test_wilson_known_values_and_edges():
    low, high = stats.wilson(50, 100)
    assert abs(low - 0.4038) < 1e-3 and abs(high - 0.5962) < 1e-3
    low, high = stats.wilson(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17  # 0/20 is not "exactly 0 %"
    assert stats.wilson(0, 0) == (0.0, 1.0)


def test_paired_difference():
    a = np.array([1] * 60 + [0] * 40)
    b = np.array([1] * 40 + [0] * 60)
    d = stats.paired_difference(a, b, seed=0)
    assert abs(d["diff"] - 0.2) < 1e-12 and 0 < d["low"] < 0.2 < d["high"] and d["p_not_above"] < 0.01
    same = stats.paired_difference(a, a)
    assert same["diff"] == same["low"] == same["high"] == 0.0


def test_mean_ci():
    mean, low, high = stats.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and low < 2.5 < high
