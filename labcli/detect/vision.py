"""The small MNIST CNN, its training loop (optionally PGD-adversarial), and white-box evasion attacks.

Attacks work on images in [0, 1]: FGSM (Goodfellow et al.), PGD with random start in L-inf and L2
(Madry et al.), optionally with restarts, and Carlini-Wagner L2 (tanh box, Adam, binary search over c).
All are batched and deterministic under a seed. save_model/load_model: the .pt file `lab detect` runs share.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """conv16-conv32-fc128-fc10 (width=16) (no batch norm, so Opacus can train it too)."""

    def __init__(self, channels: int = 1, classes: int = 10, width: int = 16, side: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (side // 4) ** 2, 128)
        self.fc2 = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (what activation clustering and spectral signatures look at)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def batches(n: int, size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(size)


def train_model(model, X, y, *, epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                weight_decay: float = 0.0, adversary=None, bar=None, label: str = "train"):
    """Adam training (AdamW when weight_decay > 0); with `adversary(model, x, y) -> x_adv` each batch is replaced by
    its attacked copy."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    opt = (torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay) if weight_decay
           else torch.optim.Adam(model.parameters(), lr=lr))
    steps = epochs * ((len(X) + batch_size - 1) // batch_size)
    task = bar.add_task(label, total=steps) if bar is not None else None
    for _ in range(epochs):
        for idx in batches(len(X), batch_size, gen):
            xb, yb = X[idx], y[idx]
            if adversary is not None:
                model.eval()
                xb = adversary(model, xb, yb)
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if bar is not None:
                bar.advance(task)
    model.eval()
    return model


@torch.no_grad()
def predict(model, X, batch_size: int = 500) -> np.ndarray:
    X = torch.as_tensor(X)
    return torch.cat([model(X[i : i + batch_size]).argmax(1) for i in range(0, len(X), batch_size)]).numpy()


def accuracy(model, X, y) -> float:
    return float((predict(model, X) == np.asarray(y)).mean())


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, x)[0]


def fgsm(model, x, y, eps: float):
    if eps == 0:
        return x
    return (x + eps * _grad(model, x, y).sign()).clamp(0, 1).detach()


def _l2_normalise(v):
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1))


def _l2_project(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.dim() - 1))
    return delta * torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)


def pgd(model, x, y, eps: float, steps: int = 40, step_size: float | None = None, norm: str = "linf",
        random_start: bool = True, generator: torch.Generator | None = None):
    """Projected gradient descent on the cross-entropy (untargeted), random start inside the ball."""
    if eps == 0:
        return x
    step_size = step_size or 2.5 * eps / steps
    if random_start and norm == "linf":
        delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    elif random_start:
        direction = _l2_normalise(torch.randn(x.shape, generator=generator))
        radius = torch.rand(len(x), generator=generator).view(-1, *[1] * (x.dim() - 1)) * eps
        delta = direction * radius
    else:
        delta = torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        g = _grad(model, x_adv, y)
        if norm == "linf":
            x_adv = x_adv + step_size * g.sign()
            x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
        else:
            x_adv = x_adv + step_size * _l2_normalise(g)
            x_adv = (x + _l2_project(x_adv - x, eps)).clamp(0, 1)
    return x_adv.detach()


def _cw_descend(model, x, y, c: torch.Tensor, kappa: float, steps: int, lr: float):
    """One CW-L2 optimisation at fixed per-image c (tanh box, Adam, starting at the image); returns, per image, the
    smallest successful L2 seen and that adversarial image (inf and the image itself where none succeeded)."""
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"))
    onehot = F.one_hot(y, model(x[:1]).shape[1]).bool()
    for _ in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        logits = model(x_adv)
        real = logits[onehot]
        other = logits.masked_fill(onehot, -1e9).max(1).values
        margin = torch.clamp(real - other, min=-kappa)
        l2 = (x_adv - x).flatten(1).pow(2).sum(1)
        loss = (l2 + c * margin).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            better = (logits.argmax(1) != y) & (l2.sqrt() < best_l2)
            best_l2 = torch.where(better, l2.sqrt(), best_l2)
            best[better] = x_adv[better].detach()
    return best.detach(), best_l2


def carlini_wagner_l2(model, x, y, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01,
                      binary_steps: int = 1):
    """CW-L2 (untargeted, Carlini & Wagner 2017) with their binary search over the trade-off constant c, per image:
    start at c; after each optimisation, halve the interval towards smaller c where the attack succeeded, towards
    larger c where it failed (x10 while no success bounds it). binary_steps=1 is a single fixed-c run.
    Returns (the smallest successful perturbation found per image, its L2 norm; inf where none was found)."""
    const = torch.full((len(x),), float(c))
    lower, upper = torch.zeros(len(x)), torch.full((len(x),), float("inf"))
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"))
    for _ in range(binary_steps):
        x_adv, l2 = _cw_descend(model, x, y, const, kappa, steps, lr)
        found = torch.isfinite(l2)
        better = l2 < best_l2
        best[better] = x_adv[better]
        best_l2 = torch.minimum(l2, best_l2)
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    return best, best_l2


def pgd_restarts(model, x, y, eps: float, steps: int, restarts: int, norm: str = "linf",
                 generator: torch.Generator | None = None):
    """PGD from `restarts` random starts; per image, the first restart that fools the model wins (else the last)."""
    x_adv = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        left = ~fooled
        if not left.any():
            break
        attempt = pgd(model, x[left], y[left], eps, steps=steps, norm=norm, generator=generator)
        x_adv[left] = attempt
        with torch.no_grad():
            fooled[left] = model(attempt).argmax(1) != y[left]
    return x_adv


def save_model(model: SmallCNN, path) -> None:
    """state_dict + width as one .pt file, written atomically (what `model=RUN` loads back)."""
    from labcli import runs

    state = {"state_dict": model.state_dict(), "width": model.conv1.out_channels}
    runs.write_with(path, lambda tmp: torch.save(state, tmp))


def load_model(path) -> SmallCNN:
    """A SmallCNN saved by save_model (weights only; raises whatever torch raises on a bad file)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = SmallCNN(width=int(blob["width"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def attack_correct(model, X, y, attack, batch_size: int = 250, bar=None, task=None) -> np.ndarray:
    """Per image: is `model` still right on attack(model, x, y)? In batches; advances `bar` once per batch."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    correct = []
    for i in range(0, len(X), batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb)
        with torch.no_grad():
            correct.append((model(x_adv).argmax(1) == yb).numpy())
        if bar is not None:
            bar.advance(task)
    return np.concatenate(correct)


def attack_accuracy(model, X, y, attack, batch_size: int = 250, bar=None, task=None) -> float:
    """Accuracy of `model` on attack(model, x, y) over the whole set."""
    return float(attack_correct(model, X, y, attack, batch_size, bar, task).mean())
