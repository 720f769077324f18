"""labcli/detect/sidechannel.py: early exit vs constant time, and the attack's split and scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labcli.detect import sidechannel as sc


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return sc.EarlyExitMLP(width=16, depth=1, blocks=3, inputs=8).eval()


def test_early_exit_stops_at_the_first_confident_head(model):
    x = torch.randn(1, 8)
    assert model.infer(x, threshold=1e-6) == (model.forward(x)[0].argmax().item(), 0) and model.blocks_run == 1
    # an untrained 10-way head is never 99.9 % sure: every block runs, the last exit answers
    assert model.infer(x, threshold=0.999)[1] == 2 and model.blocks_run == 3


def test_constant_time_runs_every_block_and_answers_the_same(model):
    torch.manual_seed(1)
    for _ in range(20):
        x = torch.randn(1, 8) * 3
        probs = [logits.softmax(1).max().item() for logits in model.forward(x)]
        threshold = float(np.median(probs))  # some inputs exit early, some late
        early = model.infer(x, threshold)
        early_blocks = model.blocks_run
        assert early_blocks == early[1] + 1
        assert model.infer(x, threshold, constant_time=True) == early and model.blocks_run == 3


def test_split_halves_are_disjoint_and_cover_everything():
    fit, score = sc.split(101, seed=3)
    assert np.intersect1d(fit, score).size == 0 and sorted([*fit, *score]) == list(range(101))
    assert len(fit) == 50


def test_attack_refuses_overlap_and_scores_exactly():
    hidden = np.repeat([0, 1, 2], 40)
    fit, score = sc.split(len(hidden), seed=0)
    with pytest.raises(ValueError, match="overlapping"):
        sc.attack(np.ones(len(hidden)), hidden, fit, fit)
    separable = 1e-4 * (1 + hidden)  # every exit costs another 100 us, no noise
    assert sc.attack(separable, hidden, fit, score)["accuracy"] == 1.0
    flat = sc.attack(np.full(len(hidden), 1e-3), hidden, fit, score)  # constant time: nothing to learn
    values, counts = np.unique(hidden[fit], return_counts=True)
    assert flat["accuracy"] == flat["chance"] == float((hidden[score] == values[counts.argmax()]).mean())


def test_bayes_bound_guesses_the_commonest_class_per_exit():
    exit_ = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    hidden = np.array([7, 7, 3, 1, 1, 2, 7, 2])
    fit, score = np.arange(6), np.array([6, 7])
    assert sc.bayes_bound(exit_, hidden, fit, score) == 0.5  # exit 0 -> 7 (right), exit 1 -> 1 (wrong: 2)
