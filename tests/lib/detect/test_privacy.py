"""labcli/detect/privacy.py: the attack features and offline LiRA's per-image calibration."""

from __future__ import annotations

import numpy as np
import torch

from labcli.detect import common, privacy


def test_attack_features_match_the_definitions():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    torch.manual_seed(0)
    X = torch.randn(6, 1, 2, 2).numpy()
    y = np.array([0, 1, 2, 0, 1, 2])
    f = privacy.attack_features(model, X, y)
    p = torch.softmax(model(torch.from_numpy(X)).double(), 1).detach().numpy()[np.arange(6), y]
    assert np.allclose(f[:, privacy.LOSS], -np.log(p)) and np.allclose(f[:, 1], p)
    assert np.allclose(f[:, privacy.CONFIDENCE], np.log(p / (1 - p)))


def test_lira_offline_calibrates_each_image_against_its_own_shadows():
    """Images differ in how confidently any model classifies them; members sit 1.5 shadow-std above their own mean.
    A global threshold barely sees that; the per-image Gaussian does."""
    rng = np.random.default_rng(0)
    n, shadows = 400, 16
    difficulty = rng.normal(0, 5, size=n)  # per-image typical confidence, wide spread
    spread = rng.uniform(0.5, 2.0, size=n)
    member = np.r_[np.ones(n // 2), np.zeros(n // 2)]
    target = difficulty + spread * (rng.normal(size=n) + 1.5 * member)
    out = difficulty + spread * rng.normal(size=(shadows, n))  # OUT shadows never saw the images
    lira = common.roc_metrics(member, privacy.lira_offline(target, out))
    plain = common.roc_metrics(member, target)
    assert lira["auc"] > 0.8 > plain["auc"] + 0.15
    assert lira["tpr@1%fpr"] > 0.1
    # no membership signal: LiRA stays at chance
    null = common.roc_metrics(member, privacy.lira_offline(difficulty + spread * rng.normal(size=n), out))
    assert abs(null["auc"] - 0.5) < 0.08
