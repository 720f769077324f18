"""Fréchet distance between two sets of feature vectors (FID's formula, in any feature space).

    FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

FID uses Inception-v3 pool features of 50,000 images; a small image recipe uses a classifier's
penultimate features instead, so its numbers are comparable only with each other (same feature
extractor, same reference set, same sample count: the estimate is biased upward for few samples).
"""

from __future__ import annotations

import numpy as np


def stats(features) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def distance(mu_a, cov_a, mu_b, cov_b) -> float:
    from scipy import linalg

    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: offset both (as pytorch-fid does)
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def frechet_distance(features_a, features_b) -> float:
    return distance(*stats(features_a), *stats(features_b))


def bootstrap(features, reference: tuple[np.ndarray, np.ndarray], resamples: int = 20, seed: int = 0) -> tuple[float, float]:
    """(FD of `features` to the reference statistics, standard deviation over resamples of `features`)."""
    f = np.asarray(features, dtype=np.float64)
    value = distance(*stats(f), *reference)
    rng = np.random.default_rng(seed)
    draws = [distance(*stats(f[rng.integers(0, len(f), len(f))]), *reference) for _ in range(resamples)]
    return value, float(np.std(draws, ddof=1)) if resamples > 1 else float("nan")
