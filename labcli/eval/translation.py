"""Corpus translation metrics with sacrebleu: BLEU, chrF++ (word_order=2) and TER, with signatures."""

from __future__ import annotations

import re
from collections import defaultdict

ZERO_WIDTH = re.compile("[\u200c\u200d]")


def clean(text: str, strip_zero_width: bool = True) -> str:
    """ZWJ/ZWNJ change how conjuncts render, not what is said: optionally ignored by the metrics."""
    return ZERO_WIDTH.sub("", text) if strip_zero_width else text


def corpus_scores(hyps: list[str], refs: list[str], strip_zero_width: bool = True) -> dict:
    from sacrebleu.metrics import BLEU, CHRF, TER

    hyps = [clean(h, strip_zero_width) for h in hyps]
    refs = [clean(r, strip_zero_width) for r in refs]
    out = {"n": len(hyps)}
    for key, metric in (("bleu", BLEU()), ("chrf++", CHRF(word_order=2)), ("ter", TER())):
        score = metric.corpus_score(hyps, [refs])
        out[key] = round(score.score, 2)
        out[f"{key}_signature"] = str(metric.get_signature())
    return out


def sentence_chrf(hyp: str, ref: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2).sentence_score(clean(hyp), [clean(ref)]).score


def scores_by(groups: list[str], hyps: list[str], refs: list[str]) -> dict[str, dict]:
    """Corpus scores per group label (domain, length bucket), plus 'all'."""
    index = defaultdict(list)
    for i, g in enumerate(groups):
        index[g].append(i)
    out = {"all": corpus_scores(hyps, refs)}
    for g in sorted(index):
        out[g] = corpus_scores([hyps[i] for i in index[g]], [refs[i] for i in index[g]])
    return out
