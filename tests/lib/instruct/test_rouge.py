"""The fast ROUGE-L index gives exactly rouge-score's maximum, with few exact LCS computations."""

from __future__ import annotations

import pytest

from labcli.data import self_instruct
from labcli.instruct.rouge import RougeIndex, reference_scores

# importing rouge-score imports all of nltk (and scipy.stats): seconds, so these are in the slow tier
pytestmark = pytest.mark.slow


def test_best_equals_rouge_score_maximum_over_the_pool():
    pool = [t["instruction"] for t in self_instruct.seed_tasks()][:60]  # rouge-score is slow: keep it small
    index = RougeIndex(pool)
    queries = [t["instruction"] for t in self_instruct.user_oriented()[:4]] + [pool[3], pool[3] + " Be brief.", ""]
    for q in queries:
        best, arg, _ = index.best(q)
        scores = reference_scores(q, pool)
        assert best == max(scores)
        if best > 0:
            assert scores[arg] == best
    assert index.best(pool[3])[0] == 1.0
    # the bound prunes: far fewer exact LCS computations than query x pool pairs
    assert index.exact_calls < len(queries) * len(pool) / 5


def test_repeated_tokens_count_once_per_occurrence():
    index = RougeIndex(["the the the cat"])
    assert index.best("the cat")[0] == reference_scores("the cat", ["the the the cat"])[0]
