"""Fréchet distance against its closed form for Gaussians."""

import numpy as np

from labcli.eval import frechet


def test_distance_closed_forms():
    mu, cov = np.zeros(3), np.diag([1.0, 2.0, 3.0])
    assert abs(frechet.distance(mu, cov, mu, cov)) < 1e-9
    assert abs(frechet.distance(mu, cov, mu + 2.0, cov) - 12.0) < 1e-9  # |mu shift|^2 = 3 * 4
    # same mean, covariances s^2 I vs I in d dims: d (s - 1)^2
    assert abs(frechet.distance(mu, np.eye(3), mu, 4 * np.eye(3)) - 3.0) < 1e-9


def test_samples_and_bootstrap():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4)) + 1.0
    assert abs(frechet.frechet_distance(a, b) - 4.0) < 0.3
    value, sd = frechet.bootstrap(b, frechet.stats(a), resamples=10)
    assert abs(value - 4.0) < 0.3 and 0 < sd < 0.5
