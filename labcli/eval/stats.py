"""Intervals for the numbers a claims table compares: a proportion (Wilson), a mean (normal), and a
difference of two accuracies measured on the same items (paired bootstrap)."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(values, z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the normal 95 % interval of a mean from its standard error."""
    a = np.asarray(values, dtype=np.float64)
    mean = float(a.mean())
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return mean, mean - z * se, mean + z * se


def paired_difference(a, b, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over the same items (0/1 or real scores), with a 95 % percentile bootstrap
    interval over items and the share of resamples where the difference is <= 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": float(diff.mean()), "low": float(low), "high": float(high), "p_not_above": float((means <= 0).mean())}


def fmt_interval(value: float, low: float, high: float, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """'45.8 % [42.1, 49.6]' style text."""
    return f"{value * scale:.{digits}f}{unit} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
