"""labcli/detect/federated.py: client splits, one client's round (FedSGD, FedProx, attacks), Flower strategy choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labcli.detect import federated as fl


def _labels(n=1000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def test_iid_split_is_a_partition_of_equal_shards():
    y = _labels()
    parts = fl.partition(y, 10, None, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    assert {len(p) for p in parts} == {100}


def test_dirichlet_split_is_a_partition_with_label_skew():
    y = _labels()
    iid, skew = fl.partition(y, 10, None, 0), fl.partition(y, 10, 0.1, 0)
    assert sorted(np.concatenate(skew).tolist()) == list(range(len(y)))
    assert min(len(p) for p in skew) >= 10

    def top_class_share(parts):  # mean share of each client's most common label
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])

    assert top_class_share(skew) > 0.4 > 0.2 > top_class_share(iid)


def test_impossible_dirichlet_split_says_so():
    with pytest.raises(ValueError, match="no Dirichlet"):
        fl.partition(_labels(20), 10, 0.01, 0, min_size=5, attempts=20)


def _tiny_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g).numpy(), torch.randint(0, 10, (n,), generator=g).numpy()


def test_sign_flip_client_sends_minus_boost_times_its_honest_update():
    X, y = _tiny_data()
    start = fl.new_model(0).state_dict()
    local = fl.LocalConfig(epochs=1, lr=0.1, batch_size=16)
    honest = fl.local_update(start, X, y, local, 0.0, seed=3)
    evil = fl.local_update(start, X, y, local, 0.0, seed=3, attack=fl.Attack("sign-flip", [0], boost=4.0))
    for k in start:
        assert torch.allclose(evil[k] - start[k], -4.0 * (honest[k] - start[k]), atol=1e-6)


def test_label_flip_client_trains_on_relabelled_images():
    X, y = _tiny_data()
    y[:32] = 7
    start = fl.new_model(0).state_dict()
    local = fl.LocalConfig(epochs=1, lr=0.1, batch_size=16)
    flipped = y.copy()
    flipped[flipped == 7] = 1
    on_flipped = fl.local_update(start, X, flipped, local, 0.0, seed=3)
    evil = fl.local_update(start, X, y, local, 0.0, seed=3, attack=fl.Attack("label-flip", [0], boost=1.0, source=7, target=1))
    assert all(torch.allclose(evil[k], on_flipped[k]) for k in start)


def test_fedsgd_is_one_full_batch_gradient_step_and_fedprox_stays_closer():
    X, y = _tiny_data()
    model = fl.new_model(0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(X)), torch.as_tensor(y))
    grads = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))
    new = fl.local_update(start, X, y, fl.LocalConfig(lr=0.5, fedsgd=True), 0.0, seed=0)
    for k in grads:
        assert torch.allclose(new[k], start[k] - 0.5 * grads[k], atol=1e-6)

    local = fl.LocalConfig(epochs=2, lr=0.1, batch_size=16)
    def moved(mu):
        new = fl.local_update(start, X, y, local, mu, seed=1)
        return sum((new[k] - start[k]).pow(2).sum() for k in start).sqrt()
    assert moved(10.0) < 0.9 * moved(0.0)


def test_each_rule_is_flowers_strategy():
    pytest.importorskip("flwr", reason="Flower is the optional [federated] extra (its pins conflict with [all])")
    from flwr.serverapp import strategy as fs

    kinds = {"fedavg": fs.FedAvg, "fedprox": fs.FedProx, "krum": fs.Krum, "trimmed-mean": fs.FedTrimmedAvg,
             "median": fs.FedMedian, "dp-fedavg": fs.DifferentialPrivacyServerSideFixedClipping}
    for name, cls in kinds.items():
        strategy, accountant = fl.make_strategy(fl.Experiment("x", strategy=name, dp_noise=1.0), n=10)
        assert isinstance(strategy, cls) and (accountant is not None) == (name == "dp-fedavg")


def test_flowers_accountant_matches_the_gaussian_mechanism_bound():
    pytest.importorskip("flwr", reason="Flower is the optional [federated] extra (its pins conflict with [all])")
    """T full-participation rounds of the Gaussian mechanism with noise multiplier z compose, in RDP, to
    eps(alpha) = T alpha / (2 z^2); converting at the best alpha gives at most min over alpha of
    T alpha / (2 z^2) + log(1/delta) / (alpha - 1) (the classic conversion; dp-accounting's is tighter)."""
    from flwr.serverapp import GaussianPrivacyEvent

    z, rounds, delta = 1.0, 12, 1e-3
    _, accountant = fl.make_strategy(fl.Experiment("x", strategy="dp-fedavg", dp_noise=z, dp_delta=delta), n=10)
    accountant.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=10, population_size=10), count=rounds)
    eps = accountant.get_epsilon(delta)
    alphas = np.linspace(1.01, 200, 20000)
    classic = np.min(rounds * alphas / (2 * z**2) + np.log(1 / delta) / (alphas - 1))
    assert 0.7 * classic < eps <= classic + 1e-9


def test_rounds_to_reach_skips_the_initial_model():
    assert fl.rounds_to_reach([0.99, 0.5, 0.91, 0.95], 0.9) == 2
    assert fl.rounds_to_reach([0.1, 0.5], 0.9) is None
