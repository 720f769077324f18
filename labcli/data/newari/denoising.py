"""mBART-style denoising: sentence permutation + text infilling (Liu et al. 2020, arXiv:2001.08210).

An instance is a few consecutive sentences of one language. The noise, as in mBART: permute the
order of its sentences, then mask 35 % of its words in spans whose lengths are drawn from
Poisson(3.5), each span replaced by ONE mask token (so the model must also infer how many words
are missing). The model reconstructs the original text after a language-id token:

    encoder:  noised words </s>
    decoder:  <lang> original words </s>        (generation forces <lang> as the first token)

The language token sits on the decoder side only, as mBART-50 does for the target: the two
languages here use different scripts, so the encoder needs no tag, and a saved model then
translates with a plain `tokenizer(text)` + `generate()` (what the serving code does).

Noise is drawn per (seed, draw index), so a run is deterministic and `--resume` repeats it exactly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

MASK = "<mask>"
LANG_TOKENS = {"en": "<en>", "new": "<new>"}
SPECIAL_TOKENS = (MASK, *LANG_TOKENS.values())  # added to lab's tiny tokenizers
SENTENCE_END = re.compile(r"(?<=[.?!।॥])\s+")


@dataclass(frozen=True)
class NoiseSettings:
    mask_ratio: float = 0.35  # share of words masked (mBART: 35 %)
    poisson_lambda: float = 3.5  # span lengths ~ Poisson(3.5)
    permute_sentences: bool = True


def sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation (Latin . ? ! and Devanagari danda ।, double danda ॥)."""
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def poisson(rng: random.Random, lam: float) -> int:
    """Knuth's sampler: fine for small lambda, and uses only `rng` (deterministic, no numpy)."""
    limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def span_lengths(rng: random.Random, n_mask: int, lam: float) -> list[int]:
    """Poisson(lam) lengths summing to n_mask (the last one cut to fit).

    Zero-length spans are kept: as in BART's text infilling they insert a mask where nothing is
    missing, so the model cannot assume every mask hides a word."""
    out, total = [], 0
    while total < n_mask:
        length = min(poisson(rng, lam), n_mask - total)
        out.append(length)
        total += length
    return out


def mask_spans(words: list[str], rng: random.Random, ratio: float = 0.35, lam: float = 3.5,
               mask: str = MASK) -> tuple[list[str], list[tuple[int, int]]]:
    """Text infilling: (noised words, spans as (start, length) in the original word positions).

    round(ratio * n) words are masked, stochastically rounded so the expected share is exactly
    `ratio`. Spans go into distinct gaps between unmasked words (so two spans never merge into
    one mask), each becomes one `mask` token."""
    n = len(words)
    n_mask = int(ratio * n + rng.random())
    lengths = span_lengths(rng, n_mask, lam) if n_mask else []
    kept = n - n_mask
    gaps = kept + 1  # before the first kept word, between each pair, after the last
    if len(lengths) > gaps:  # more spans than gaps (tiny inputs): merge the surplus into the last span
        lengths = lengths[:gaps - 1] + [sum(lengths[gaps - 1:])]
    slot = dict(zip(rng.sample(range(gaps), len(lengths)), lengths))
    out, spans, pos = [], [], 0
    for gap in range(gaps):
        if gap in slot:
            spans.append((pos, slot[gap]))
            out.append(mask)
            pos += slot[gap]
        if gap < kept:
            out.append(words[pos])
            pos += 1
    return out, spans


def noise(text: str, rng: random.Random, settings: NoiseSettings = NoiseSettings()) -> str:
    """Permute the sentences of `text`, then mask spans of its words: the encoder's input."""
    parts = sentences(text)
    if settings.permute_sentences and len(parts) > 1:
        rng.shuffle(parts)
    words = " ".join(parts).split()
    noised, _ = mask_spans(words, rng, settings.mask_ratio, settings.poisson_lambda)
    return " ".join(noised)


def instances(texts: Sequence[str], max_words: int) -> list[str]:
    """Pack consecutive texts (sentences, lexicon entries) into instances of at most `max_words`
    words, like mBART's multi-sentence documents; a longer text is cut at max_words."""
    out, current, size = [], [], 0
    for text in texts:
        words = text.split()[:max_words]
        if not words:
            continue
        if current and size + len(words) > max_words:
            out.append(" ".join(current))
            current, size = [], 0
        current += words
        size += len(words)
    if current:
        out.append(" ".join(current))
    return out


def example(tokenizer, noised: str, original: str, lang_id: int, max_len: int) -> dict:
    """One training example: encoder `noised </s>`, labels `<lang> original </s>` (both cut to max_len)."""
    target = tokenizer(original, add_special_tokens=False)["input_ids"][: max_len - 2]
    return {"input_ids": tokenizer(noised, truncation=True, max_length=max_len)["input_ids"],
            "labels": [lang_id] + target + [tokenizer.eos_token_id]}


class DenoisingSet:
    """`length` draws over per-language instances, mixing languages with `shares` (sum 1).

    Item k is (language, instance) with fresh noise seeded by (seed, k): each draw of the same
    instance is masked differently (fairseq's dynamic noising), and the set is a pure function of
    the seed, so the trainer's seeded sampler and --resume see the same data."""

    def __init__(self, by_language: dict[str, list[str]], shares: dict[str, float], length: int, seed: int,
                 encode, settings: NoiseSettings = NoiseSettings()):
        self.by_language, self.encode, self.settings, self.seed = by_language, encode, settings, seed
        langs = [lang for lang in shares if shares[lang] > 0 and by_language.get(lang)]
        rng = random.Random(seed)
        order = {lang: [] for lang in langs}
        self.items: list[tuple[str, int]] = []
        for _ in range(length):
            lang = rng.choices(langs, weights=[shares[lang] for lang in langs])[0]
            if not order[lang]:  # cycle through a fresh permutation of this language's instances
                order[lang] = rng.sample(range(len(by_language[lang])), len(by_language[lang]))
            self.items.append((lang, order[lang].pop()))

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, k: int) -> tuple[str, str, str]:
        """(language, original text, noised text) of draw k."""
        lang, i = self.items[k]
        text = self.by_language[lang][i]
        return lang, text, noise(text, random.Random(self.seed * 1_000_003 + k), self.settings)

    def __getitem__(self, k: int) -> dict:
        lang, text, noised = self.draw(k)
        return self.encode(noised, text, lang)
