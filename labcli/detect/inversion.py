"""Model inversion (Fredrikson et al. 2015) for `lab detect inversion`: gradient ascent on the input, one image per class.

The attacker has white-box gradients of the classifier and nothing else. For class c it maximises
    log p(c | x) - tv * TV(x) - l2 * ||x||^2            (x in [0, 1], Adam on x, Gaussian blur every `blur_every` steps)
from a flat grey start plus a little seeded noise. The priors are what make the result look like a digit rather than
an adversarial pattern: total variation (piecewise-smooth strokes), an L2 penalty (dark background) and periodic blur
(Yosinski et al. 2015's regulariser). Scoring never uses the attacked model: `nearest_mean_hits` compares each
reconstruction with the class means of held-out images, an independently trained evaluator classifies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Prior:
    """Regularisers of the inversion objective (all zero = plain gradient ascent, Fredrikson's MI-FACE without priors)."""

    tv: float = 0.0
    l2: float = 0.0
    blur_every: int = 0  # 0: never
    blur_sigma: float = 0.5


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV per image: mean absolute difference of vertical and horizontal neighbours. x: [N, C, H, W] -> [N]."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (kernel radius 2 sigma, at least 1), reflect padding; keeps the shape."""
    radius = max(1, round(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def invert(model, classes, *, prior: Prior, steps: int, lr: float, shape=(1, 28, 28), init: float = 0.1,
           noise: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reconstruction per entry of `classes` (all optimised together); returns [len(classes), *shape] in [0, 1]."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.as_tensor(classes)
    x = (init + noise * torch.randn((len(y), *shape), generator=generator)).clamp(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        logp = model(x).log_softmax(1)[torch.arange(len(y)), y]
        loss = -logp + prior.tv * total_variation(x) + prior.l2 * x.pow(2).flatten(1).sum(1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            if prior.blur_every and (step + 1) % prior.blur_every == 0 and step + 1 < steps:
                x.copy_(gaussian_blur(x, prior.blur_sigma))
            x.clamp_(0, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    return x.detach()


def class_means(X: np.ndarray, y: np.ndarray, classes: int = 10) -> np.ndarray:
    """Mean image of each class: [classes, *image shape]."""
    return np.stack([X[y == c].mean(0) for c in range(classes)])


def nearest_mean(images: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Index of the class mean closest (Euclidean, pixel space) to each image."""
    d = ((images.reshape(len(images), 1, -1) - means.reshape(1, len(means), -1)) ** 2).sum(-1)
    return d.argmin(1)


def nearest_mean_hits(images: np.ndarray, classes: np.ndarray, means: np.ndarray) -> int:
    """How many reconstructions are closer to their own class's mean than to any other class's mean."""
    return int((nearest_mean(images, means) == np.asarray(classes)).sum())
