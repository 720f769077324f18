"""Monolingual text for denoising pretraining, per language, from what the package ships.

Newari: the Newari side of the training pairs (sentences, lexicon entries, UI strings).
English: the English side of the same pairs, plus English text shipped for other recipes, TRAIN
splits only (a test question never becomes training text, even for another task):

| source | what | licence |
| --- | --- | --- |
| `gsm8k` | GSM8K train questions (labcli/data/gsm8k) | MIT |
| `strategyqa` | StrategyQA train questions (labcli/data/strategyqa) | MIT |
| `sms` | SMS Spam Collection, the non-spam ("ham") messages (labcli/data/sms_spam) | CC BY 4.0 |

ARC (CC BY-SA 4.0, share-alike) is left out. Held-out (dev/test) pairs are never included: the
test sentences' English and Newari sides stay unseen until they are scored.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from typing import Literal

from labcli.data.newari import Pair

ExtraEnglish = Literal["gsm8k", "strategyqa", "sms"]
EXTRA_ENGLISH: tuple[str, ...] = ("gsm8k", "strategyqa", "sms")


@functools.cache
def _extra_english(name: str) -> tuple[str, ...]:
    return tuple(extra_english_uncached(name))


def extra_english(name: str) -> list[str]:
    """English texts of one shipped source (train split only); read once per process."""
    return list(_extra_english(name))


def extra_english_uncached(name: str) -> list[str]:
    from labcli.data import sms_spam
    from labcli.reasoning.tasks import load_task

    if name in ("gsm8k", "strategyqa"):
        return [ex.question for ex in load_task(name, "train")]
    if name == "sms":
        texts, labels = sms_spam.read()  # distinct texts, file order
        return [text for text, label in zip(texts, labels) if label == 0]
    raise ValueError(f"unknown English source {name}")


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def corpus(train_pairs: list[Pair], extra: Iterable[str] = EXTRA_ENGLISH) -> dict[str, list[str]]:
    """{"en": [...], "new": [...]}: unique texts, in file order (so packing keeps neighbours together)."""
    en = _unique([p.en for p in train_pairs])
    new = _unique([p.new for p in train_pairs])
    seen = set(en)
    for name in extra:
        added = [t for t in _unique(extra_english(name)) if t not in seen]
        seen.update(added)
        en += added
    return {"en": en, "new": new}


def inputs_digest(pairs: list[Pair]) -> str:
    """A short hash of everything the corpus can be built from (all pairs, every English source),
    whatever the options pick: part of the pretrained base's cache key (the options are in its config)."""
    payload = [[p.en, p.new, p.domain] for p in pairs] + [extra_english(name) for name in EXTRA_ENGLISH]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
