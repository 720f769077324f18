"""ROUGE-L novelty check of Self-Instruct, exact and fast enough for 10k instructions.

The reference scores each candidate against every kept instruction with `rouge_score` (an O(m·n)
LCS per pair, in a process pool). Here each instruction is tokenized once with rouge-score's own
tokenizer, and an inverted index over (token, k-th occurrence) features gives, for every kept
instruction at once, the multiset overlap, an upper bound on the LCS: F <= 2·overlap / (m + n).
The exact LCS (rouge-score's `_score_lcs`) is computed only where that bound can still beat the
best score found so far, in order of the bound; the maximum is therefore exact.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _features(tokens: list[str]) -> list[tuple[str, int]]:
    seen: Counter = Counter()
    out = []
    for t in tokens:
        out.append((t, seen[t]))
        seen[t] += 1
    return out


class RougeIndex:
    """Instructions kept so far; `best(text)` = (max ROUGE-L F1 against them, index of that one)."""

    def __init__(self, texts: list[str] = ()):
        from rouge_score import rouge_scorer

        self._lcs = rouge_scorer._score_lcs
        self._tokenize = _scorer()._tokenizer.tokenize
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        self.lengths: list[int] = []
        self.postings: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.exact_calls = 0
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, tokens: list[str] | None = None) -> None:
        tokens = self._tokenize(text) if tokens is None else tokens
        i = len(self.texts)
        self.texts.append(text)
        self.tokens.append(tokens)
        self.lengths.append(len(tokens))
        for f in _features(tokens):
            self.postings[f].append(i)

    def best(self, text: str) -> tuple[float, int, list[str]]:
        """(max F1, argmax index or -1, the text's tokens). Ties keep the lowest index."""
        tokens = self._tokenize(text)
        n = len(self.texts)
        if n == 0 or not tokens:
            return 0.0, -1, tokens
        overlap = np.zeros(n, dtype=np.int64)
        for f in _features(tokens):
            rows = self.postings.get(f)
            if rows:
                overlap[rows] += 1
        bound = 2.0 * overlap / (np.asarray(self.lengths) + len(tokens))
        best, arg = 0.0, -1
        for i in np.argsort(-bound, kind="stable"):
            if bound[i] <= best or bound[i] == 0:
                break
            self.exact_calls += 1
            f = self._lcs(tokens, self.tokens[i]).fmeasure
            if f > best or (f == best and arg >= 0 and i < arg):
                best, arg = f, int(i)
        return best, arg, tokens


def reference_scores(text: str, pool: list[str]) -> list[float]:
    """What the reference computes: rouge-score's F1 of `text` against every pool entry (for tests)."""
    scorer = _scorer()
    return [scorer.score(text, p)["rougeL"].fmeasure for p in pool]
