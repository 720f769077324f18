"""labcli/detect/vision.py: CW's binary search over c, PGD restarts and the shared model file, on tiny models."""

from __future__ import annotations

import torch

from labcli.detect import vision


def linear_two_class(k: float = 1.0) -> torch.nn.Module:
    """logit0 - logit1 = 2k (sum of the 4 pixels - 2): an image of 0.9s is class 0 and needs L2 >= 0.8 to flip."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[k] * 4, [-k] * 4]))
        model[1].bias.copy_(torch.tensor([-2 * k, 2 * k]))
    return model


def test_cw_binary_search_finds_what_a_too_small_fixed_c_misses():
    model, x, y = linear_two_class(), torch.full((3, 1, 2, 2), 0.9), torch.zeros(3, dtype=torch.long)
    _, fixed = vision.carlini_wagner_l2(model, x, y, c=1e-3, steps=100, lr=0.05, binary_steps=1)
    assert torch.isinf(fixed).all()  # c = 1e-3 weighs the margin too little: no adversarial example
    x_adv, searched = vision.carlini_wagner_l2(model, x, y, c=1e-3, steps=100, lr=0.05, binary_steps=7)
    assert torch.isfinite(searched).all() and (model(x_adv).argmax(1) == 1).all()
    assert (searched >= 0.8 - 1e-4).all() and (searched < 1.0).all()  # close to the true minimum 0.8
    assert torch.allclose(searched, (x_adv - x).flatten(1).norm(dim=1))


def test_pgd_restarts_stay_in_the_ball_and_keep_every_success():
    model, x, y = linear_two_class(), torch.full((4, 1, 2, 2), 0.9), torch.zeros(4, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    small = vision.pgd_restarts(model, x, y, eps=0.3, steps=20, restarts=3, generator=gen)  # flipping needs 0.4 per pixel
    assert (model(small).argmax(1) == 0).all() and (small - x).abs().max() <= 0.3 + 1e-6
    large = vision.pgd_restarts(model, x, y, eps=0.45, steps=20, restarts=3, generator=gen)
    assert (model(large).argmax(1) == 1).all() and (large - x).abs().max() <= 0.45 + 1e-6


def test_save_and_load_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = vision.SmallCNN(width=8).eval()
    vision.save_model(model, tmp_path / "model.pt")
    again = vision.load_model(tmp_path / "model.pt")
    x = torch.rand(2, 1, 28, 28)
    assert again.conv1.out_channels == 8 and torch.equal(model(x), again(x))
