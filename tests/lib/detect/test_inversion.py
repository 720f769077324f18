"""labcli/detect/inversion.py: the priors, the gradient ascent and the class-mean scoring."""

from __future__ import annotations

import numpy as np
import torch

from labcli.detect import inversion as inv


def test_total_variation_is_the_mean_neighbour_difference():
    flat = torch.full((1, 1, 4, 4), 0.7)
    assert inv.total_variation(flat).item() == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., :, 1::2] = 1.0  # vertical stripes: every horizontal neighbour pair differs by 1, no vertical one
    assert inv.total_variation(stripes).item() == 1.0


def test_blur_keeps_shape_constants_and_mass():
    x = torch.zeros(2, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    b = inv.gaussian_blur(x, 0.8)
    assert b.shape == x.shape and abs(b.sum().item() - 2.0) < 1e-5 and b[0, 0, 4, 4] < 1.0
    assert torch.allclose(inv.gaussian_blur(torch.full((1, 1, 5, 5), 0.3), 1.0), torch.full((1, 1, 5, 5), 0.3))


def test_nearest_mean_hits_count_exactly():
    rng = np.random.default_rng(0)
    X = rng.random((60, 1, 4, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    X[y == 1] += 2.0
    X[y == 2] -= 2.0
    means = inv.class_means(X, y, classes=3)
    assert np.allclose(means[1], X[y == 1].mean(0))
    assert inv.nearest_mean_hits(means, np.arange(3), means) == 3
    assert inv.nearest_mean_hits(means, np.array([1, 2, 0]), means) == 0


def test_inversion_raises_the_class_probability_and_stays_in_the_box():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    start = lambda: torch.Generator().manual_seed(1)
    before = inv.invert(model, [0, 1, 2], prior=inv.Prior(), steps=0, lr=0.1, shape=(1, 4, 4), generator=start())
    after = inv.invert(model, [0, 1, 2], prior=inv.Prior(tv=0.1, l2=0.01, blur_every=2), steps=30, lr=0.1, shape=(1, 4, 4), generator=start())
    p = lambda x: model(x).softmax(1)[torch.arange(3), torch.arange(3)]
    assert (p(after) > p(before)).all()
    assert after.min() >= 0 and after.max() <= 1
    # the weights are left as they were: trainable, unchanged
    assert all(q.requires_grad for q in model.parameters())
    again = inv.invert(model, [0, 1, 2], prior=inv.Prior(tv=0.1, l2=0.01, blur_every=2), steps=30, lr=0.1, shape=(1, 4, 4), generator=start())
    assert torch.equal(after, again)
