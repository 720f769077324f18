"""Helpers the `lab detect` recipes share: plots, ROC metrics (TPR at low FPR, EER), a progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_figure(fig, path: Path) -> str:
    """Save through labcli.eval.plots.save; returns the file name for report links."""
    from labcli.eval.plots import save

    return save(fig, path).name


def new_figure(width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def tpr_at_fpr(y_true, scores, fpr_target: float) -> float:
    """Highest TPR reachable with FPR <= fpr_target (scores: higher = more 'positive')."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    ok = fpr <= fpr_target
    return float(tpr[ok].max()) if ok.any() else 0.0


def equal_error_rate(y_true, scores) -> float:
    """EER: the point where false-accept and false-reject rates meet."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def roc_metrics(y_true, scores) -> dict:
    """AUROC, membership advantage (max TPR-FPR), TPR at 0.1 % and 1 % FPR, EER."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    return {
        "auc": float(roc_auc_score(y_true, scores)),
        "advantage": float(np.max(tpr - fpr)),
        "tpr@0.1%fpr": tpr_at_fpr(y_true, scores, 0.001),
        "tpr@1%fpr": tpr_at_fpr(y_true, scores, 0.01),
        "eer": equal_error_rate(y_true, scores),
    }


def progress():
    """A rich progress bar (transient, on stderr) for anything that takes more than a few seconds."""
    from labcli.eval.tables import progress_bar

    return progress_bar(transient=True, stderr=True)
