"""labcli/detect/extraction.py: the served victim over real HTTP (outputs, budget per token, errors) and the queries."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
import torch

from labcli.detect import extraction as ex


@pytest.fixture(scope="module")
def victim():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_probabilities_are_the_models_softmax(victim):
    x = images(5).round(4)  # what travels
    with ex.VictimServer(victim) as server:
        attacker = ex.Attacker(server.port, "t", batch=2)
        X, labels, probs = attacker.query(x)
        attacker.close()
    expected = torch.softmax(victim(torch.from_numpy(x)), 1).detach().numpy()
    assert np.array_equal(X, x) and np.array_equal(labels, expected.argmax(1))
    assert np.allclose(probs, expected, atol=1e-6)


def test_top1_and_rounding_remove_information(victim):
    x = images(4)
    with ex.VictimServer(victim, output="top1") as server:
        _, labels, probs = ex.Attacker(server.port, "t").query(x)
    assert probs is None and len(labels) == 4
    with ex.VictimServer(victim, output="rounded", decimals=1) as server:
        _, _, probs = ex.Attacker(server.port, "t").query(x)
    assert np.allclose(probs * 10, np.round(probs * 10), atol=1e-5)


def test_budget_per_token_refuses_with_429_and_counts(victim):
    with ex.VictimServer(victim, budget_per_token=15) as server:
        X, labels, _ = ex.Attacker(server.port, "a", batch=10).query(images(30))
        assert len(X) == len(labels) == 10  # the second request (10 more) would pass 15: refused, attacker stops
        assert server.counts == {"a": 10} and server.refused == 10
        other = ex.Attacker(server.port, "b", batch=5)
        assert len(other.query(images(15))[0]) == 15  # the budget is per token
        status, body = other.post(images(1))
        assert status == 429 and "15 images per token" in body["error"]


def test_bad_requests_get_4xx(victim):
    with ex.VictimServer(victim) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/predict", body=json.dumps({"instances": [[0.0] * 10]}), headers={"Authorization": "Bearer t"})
        resp = conn.getresponse()
        assert resp.status == 400 and "784" in json.loads(resp.read())["error"]
        conn.request("POST", "/v1/predict", body=json.dumps({"instances": [[0.0] * 784]}))
        resp = conn.getresponse()
        assert resp.status == 401 and resp.read()
        conn.close()


def test_query_images_never_come_from_mnist_and_are_seeded():
    noise = ex.query_images("noise", 7, seed=1)
    assert noise.shape == (7, 1, 28, 28) and np.array_equal(noise, ex.query_images("noise", 7, seed=1))
    digits = ex.query_images("digits-8x8", 1800, seed=0)
    assert digits.shape == (1800, 1, 28, 28) and 0 <= digits.min() and digits.max() <= 1
    assert np.all(digits[:1797, :, :4] == 0) and np.all(digits[:1797, :, :, 24:] == 0)  # 20x20, centred in 28x28
    assert len({d.tobytes() for d in digits[:1797]}) > 1700  # each 8x8 digit once before any shifted copy
    with pytest.raises(ValueError):
        ex.query_images("mnist", 3, seed=0)


def test_clone_targets_are_the_answers():
    """Soft targets are the (renormalised) probabilities; without them, one-hot labels: a copy trained on a victim's
    answers for a separable toy problem reproduces its labels."""
    torch.manual_seed(0)
    X = torch.randn(200, 4).numpy()
    labels = (X[:, 0] > 0).astype(np.int64)
    clone = ex.train_clone(torch.nn.Linear(4, 10), X, labels, None, epochs=30, lr=0.05)
    assert (clone(torch.from_numpy(X)).argmax(1).numpy() == labels).mean() > 0.95
