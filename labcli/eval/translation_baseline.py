"""A word-by-word dictionary baseline: what a bilingual lexicon alone gives, for the scores table.

Each English word (longest phrase first, up to `max_phrase` words) is looked up in the lexicon; an
unknown word is transliterated into Devanagari by a small letter-rule table (or copied); sentence
punctuation is kept, with "." written as the danda "।". No reordering, no morphology: a floor
that a trained translator should clear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

WORD = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9']")
PUNCTUATION = {".": "।", "?": "?", "!": "!", ",": ",", ":": ":", ";": ";"}

# Latin letter groups -> (independent vowel, dependent vowel sign) or consonant; longest match first.
VOWELS = {"aa": ("आ", "ा"), "ee": ("ई", "ी"), "oo": ("ऊ", "ू"), "ai": ("ऐ", "ै"), "au": ("औ", "ौ"),
          "ou": ("औ", "ौ"), "a": ("अ", ""), "e": ("ए", "े"), "i": ("इ", "ि"), "o": ("ओ", "ो"), "u": ("उ", "ु"),
          "y": ("इ", "ि")}
CONSONANTS = {"chh": "छ", "ch": "च", "sh": "श", "th": "थ", "ph": "फ", "kh": "ख", "gh": "घ", "dh": "ध",
              "bh": "भ", "ck": "क", "b": "ब", "c": "क", "d": "ड", "f": "फ", "g": "ग", "h": "ह", "j": "ज",
              "k": "क", "l": "ल", "m": "म", "n": "न", "p": "प", "q": "क", "r": "र", "s": "स", "t": "ट",
              "v": "भ", "w": "व", "x": "क्स", "z": "ज"}
DIGITS = str.maketrans("0123456789", "०१२३४५६७८९")
VIRAMA = "्"


def transliterate(word: str) -> str:
    """Latin letters to Devanagari by rule (names, loanwords: "Alex" -> "अलेक्स"); digits to Devanagari digits."""
    w, out, i, after_consonant = word.lower().replace("'", ""), [], 0, False
    while i < len(w):
        size = next((n for n in (3, 2, 1) if w[i:i + n] in CONSONANTS or w[i:i + n] in VOWELS), 1)
        piece = w[i:i + size]
        if piece in CONSONANTS or (piece == "y" and not after_consonant):  # y starting a syllable is a consonant
            out.append((VIRAMA if after_consonant else "") + CONSONANTS.get(piece, "य"))
            after_consonant = True
        elif piece in VOWELS:
            out.append(VOWELS[piece][1] if after_consonant else VOWELS[piece][0])
            after_consonant = False
        else:
            out.append(piece.translate(DIGITS))
            after_consonant = False
        i += size
    return "".join(out)


def is_word(token: str) -> bool:
    return bool(re.match(r"[A-Za-z0-9]", token))


class WordByWord:
    """A lexicon lookup translator built from (English, Newari) entries; the first gloss of each wins."""

    def __init__(self, entries: Iterable[tuple[str, str]], fallback: Literal["transliterate", "copy"] = "transliterate",
                 max_phrase: int = 3):
        self.table: dict[tuple[str, ...], str] = {}
        for en, new in entries:
            key = tuple(t.lower() for t in WORD.findall(en) if is_word(t))
            if 0 < len(key) <= max_phrase:
                self.table.setdefault(key, new)
        self.fallback, self.max_phrase = fallback, max_phrase

    def match(self, tokens: list[str], i: int) -> tuple[int, str | None]:
        """The longest lexicon phrase starting at tokens[i]: (words used, Newari), or (1, None)."""
        words = []
        for t in tokens[i:i + self.max_phrase]:
            if not is_word(t):
                break
            words.append(t.lower())
        for size in range(len(words), 0, -1):
            if tuple(words[:size]) in self.table:
                return size, self.table[tuple(words[:size])]
        return 1, None

    def translate_one(self, sentence: str) -> str:
        tokens, out, i = WORD.findall(sentence), [], 0
        while i < len(tokens):
            if not is_word(tokens[i]):
                out.append(PUNCTUATION.get(tokens[i], tokens[i]))
                i += 1
                continue
            size, newari = self.match(tokens, i)
            if newari is None:
                newari = transliterate(tokens[i]) if self.fallback == "transliterate" else tokens[i]
            out.append(newari)
            i += size
        return " ".join(out)

    def translate(self, sentences: list[str]) -> list[str]:
        return [self.translate_one(s) for s in sentences]

    def coverage(self, sentences: list[str]) -> float:
        """Share of English words found in the lexicon (alone or in a phrase)."""
        found = total = 0
        for s in sentences:
            tokens = [t for t in WORD.findall(s) if is_word(t)]
            i = 0
            while i < len(tokens):
                size, newari = self.match(tokens, i)
                found += size if newari is not None else 0
                i += size
            total += len(tokens)
        return found / max(total, 1)
