"""Error analysis of English->Newari output: what went wrong, how often, and the worst cases.

Counters are per hypothesis (a rate is count / sentences). Script tests use Unicode ranges:
Devanagari is U+0900-U+097F (+ U+A8E0-U+A8FF extended); Latin letters mean copied or untranslated
source; any other letter means script mixing.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from labcli.eval.translation import sentence_chrf

LATIN = re.compile(r"[A-Za-z]")
DEVANAGARI = re.compile("[\u0900-\u097f\ua8e0-\ua8ff]")
LENGTH_BUCKETS = [(1, "1 word"), (3, "2-3 words"), (7, "4-7 words"), (15, "8-15 words"), (10**9, "16+ words")]


def length_bucket(source: str) -> str:
    n = len(source.split())
    return next(label for limit, label in LENGTH_BUCKETS if n <= limit)


def other_script(text: str) -> bool:
    """A letter that is neither Devanagari nor Latin (e.g. Bengali, Cyrillic)."""
    return any(ch.isalpha() and not DEVANAGARI.match(ch) and not LATIN.match(ch) for ch in text)


def repetition_loop(text: str, min_repeats: int = 3) -> bool:
    """An n-gram (n = 1..3 words) repeated back to back at least `min_repeats` times."""
    words = text.split()
    for n in (1, 2, 3):
        for i in range(len(words) - n * min_repeats + 1):
            gram = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == gram for k in range(min_repeats)):
                return True
    return False


def analyse_one(src: str, hyp: str, ref: str, unk_count: int = 0) -> dict:
    stripped = hyp.strip()
    return {
        "empty": not stripped,
        "copied_source": bool(stripped) and stripped.lower() == src.strip().lower(),
        "latin_script": bool(LATIN.search(hyp)),
        "script_mixing": other_script(hyp),
        "repetition_loop": repetition_loop(hyp),
        "unknown_tokens": unk_count > 0,
        "length_ratio": round(len(stripped) / max(len(ref.strip()), 1), 3),
    }


FLAGS = ["empty", "copied_source", "latin_script", "script_mixing", "repetition_loop", "unknown_tokens"]


def analyse(rows: list[dict], worst_n: int = 5) -> dict:
    """rows: {src, ref, hyp, domain, unk} -> rates, length stats, and the worst sentences per domain."""
    records = []
    for r in rows:
        a = analyse_one(r["src"], r["hyp"], r["ref"], r.get("unk", 0))
        records.append({**r, **a, "chrf++": round(sentence_chrf(r["hyp"], r["ref"]), 2),
                        "length_bucket": length_bucket(r["src"])})
    n = max(len(records), 1)
    counts = Counter(flag for rec in records for flag in FLAGS if rec[flag])
    rates = {flag: round(counts[flag] / n, 4) for flag in FLAGS}
    ratios = sorted(rec["length_ratio"] for rec in records) or [0.0]
    by_domain = defaultdict(list)
    for rec in records:
        by_domain[rec["domain"]].append(rec)
    worst = {d: sorted(recs, key=lambda x: x["chrf++"])[:worst_n] for d, recs in sorted(by_domain.items())}
    return {"counts": dict(counts), "rates": rates, "n": len(records),
            "length_ratio_mean": round(sum(ratios) / len(ratios), 3), "length_ratio_median": ratios[len(ratios) // 2],
            "worst": worst, "records": records}
