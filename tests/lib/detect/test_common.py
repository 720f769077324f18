"""labcli/detect/common.py: the ROC metrics every detect table reports."""

from __future__ import annotations

import numpy as np

from labcli.detect import common


def test_roc_metrics_on_a_known_ranking():
    y = np.r_[np.ones(10), np.zeros(1000)]
    scores = np.r_[np.arange(10) + 1000.0, np.arange(1000.0)]  # every positive above every negative
    m = common.roc_metrics(y, scores)
    assert m["auc"] == 1.0 and m["tpr@0.1%fpr"] == 1.0 and m["eer"] == 0.0 and m["advantage"] == 1.0
    scores[:5] = -1  # half the positives now rank below every negative
    m = common.roc_metrics(y, scores)
    assert m["tpr@0.1%fpr"] == 0.5 and m["tpr@1%fpr"] == 0.5 and m["auc"] == 0.5
