"""Membership inference attacks and DP-SGD training (Opacus) for `lab detect membership`.

Attacks score each candidate image; higher = more likely a member of the target's training set:
- `loss_threshold` (Yeom et al. 2018): minus the target's loss on the image.
- shadow-model attack (Shokri et al. 2017): a classifier trained on shadow models' outputs for their own members
  and non-members (`attack_features` gives what it sees).
- `lira_offline` (Carlini et al. 2022, offline variant): per image, a Gaussian fitted to the logit-scaled confidence
  of shadow models that never trained on it; the score is how far above that Gaussian the target's confidence lies.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DPNet(nn.Module):
    """A DP-friendly MNIST CNN (26k parameters): the Opacus example's conv8x8/conv4x4/fc32 with tanh (tempered
    sigmoid, Papernot et al. 2020) and GroupNorm, which per-sample clipping handles, unlike batch norm."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.GroupNorm(4, 16), nn.Tanh(), nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2), nn.GroupNorm(4, 32), nn.Tanh(), nn.MaxPool2d(2, 1), nn.Flatten(),
            nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net((x - 0.1307) / 0.3081)


def attack_features(model, X, y) -> np.ndarray:
    """Per image: [loss, p(true label), max p, entropy, logit-scaled confidence log(p / (1 - p))] of the model's output."""
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(X[i : i + 500])) for i in range(0, len(X), 500)]).double()
    logp = logits.log_softmax(1).numpy()  # float64: tiny member losses must not round to 0
    p = np.exp(logp)
    rows = np.arange(len(y))
    loss = -logp[rows, y]
    entropy = -(p * logp).sum(1)
    others = logits.clone()
    others[rows, torch.as_tensor(y)] = -float("inf")
    scaled = logits[rows, torch.as_tensor(y)].numpy() - others.logsumexp(1).numpy()  # log(p / (1 - p)), stable
    return np.stack([loss, np.exp(-loss), p.max(1), entropy, scaled], 1)


LOSS, CONFIDENCE = 0, 4  # columns of attack_features
SHADOW_FEATURES = slice(0, 4)  # what the shadow-model classifier sees


def loss_threshold(features: np.ndarray) -> np.ndarray:
    return -features[:, LOSS]


def lira_offline(target_conf: np.ndarray, shadow_conf: np.ndarray) -> np.ndarray:
    """Offline LiRA score per image: (target confidence - mean of the OUT shadows) / their std, both per image.
    target_conf: [n]; shadow_conf: [shadows, n], logit-scaled confidences of models that did not train on the images.
    A monotone transform of Carlini et al.'s one-sided Gaussian likelihood test, so the ROC is the same."""
    mu, sigma = shadow_conf.mean(0), shadow_conf.std(0, ddof=1)
    return (target_conf - mu) / np.maximum(sigma, 1e-6)


def train_dp(X, y, *, epsilon: float | None, delta: float, max_grad_norm: float, epochs: int, lr: float,
             batch_size: int, accountant: str, seed: int, net=DPNet):
    """DP-SGD with Opacus at a target epsilon; returns (model, privacy record). epsilon=None: the same recipe (Poisson
    sampling, per-sample clipping) with no noise, the control that shows what the noise itself buys. `net` builds the
    network (DPNet by default; any module without batch norm)."""
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    args = dict(module=model, optimizer=opt, data_loader=loader, max_grad_norm=max_grad_norm,
                noise_generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure RNG and full backward hooks
        engine = PrivacyEngine(accountant=accountant)
        if epsilon is None:
            model, opt, loader = engine.make_private(noise_multiplier=0.0, **args)
        else:
            model, opt, loader = engine.make_private_with_epsilon(target_epsilon=epsilon, target_delta=delta, epochs=epochs, **args)
        for _ in range(epochs):
            model.train()
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    if epsilon is None:
        return model._module, None
    record = {"target epsilon": epsilon, "epsilon spent": float(engine.get_epsilon(delta)), "delta": delta,
              "noise multiplier": float(opt.noise_multiplier), "clip norm": max_grad_norm,
              "sampling rate": batch_size / len(X), "epochs": epochs, "accountant": accountant}
    return model._module, record
