"""English-Newari parallel data: shipped TSVs or a user's `en<TAB>new<TAB>domain` file.

Splits are deterministic: a hash of the lower-cased English side picks train/dev/test (80/10/10),
so one English string (and all its alternative translations) never crosses splits.

How the task uses them (`task_splits`): word lists (the lexicon) and resources (UI strings) are
training data; the test is the held-out SENTENCE pairs; held-out lexicon words are a separate
"unseen single words" diagnostic (a word never seen in training can only be guessed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from labcli.config import read_user_text
from labcli.errors import UserError

SHIPPED = ["loveucifer_translations.tsv", "gatitos_lexicon.tsv", "mediawiki_ui.tsv"]
COLUMNS = ("en", "new", "domain")


@dataclass(frozen=True)
class Pair:
    en: str
    new: str
    domain: str


def read_tsv(path: Path) -> list[Pair]:
    """Read one TSV with a header `en new domain`; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}", "pass --data FILE.tsv with columns en<TAB>new<TAB>domain")
    lines = read_user_text(path, "re-save the file as UTF-8").split("\n")
    if not lines:
        raise UserError(f"{path} is empty", "the first line must be the header en<TAB>new<TAB>domain")
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path}:1: missing column(s) {', '.join(missing)} (header is {header})",
                        "the header must be en<TAB>new<TAB>domain")
    idx = [header.index(c) for c in COLUMNS]
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(header):
            raise UserError(f"{path}:{n}: expected {len(header)} tab-separated fields, found {len(cells)}",
                            "each line needs en<TAB>new<TAB>domain")
        en, new, domain = (cells[i].strip() for i in idx)  # strip(): editors leave trailing spaces
        if not en or not new:
            raise UserError(f"{path}:{n}: empty {'en' if not en else 'new'} side", "fill or delete the line")
        rows.append(Pair(en, new, domain or "general"))
    return rows


def read_all() -> list[Pair]:
    """All shipped pairs."""
    return [p for name in SHIPPED for p in read_tsv(Path(__file__).parent / name)]


def split_of(en: str) -> str:
    bucket = int(hashlib.sha256(en.lower().strip().encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 80 else "dev" if bucket < 90 else "test"


def load_pairs(data: str | None) -> list[Pair]:
    """`None`: the shipped corpus; `hf:NAME`: a Hugging Face dataset (online); else a TSV path."""
    if not data:
        return read_all()
    if data.startswith("hf:"):
        return _from_hub(data[3:])
    return read_tsv(Path(data))


def _from_hub(name: str) -> list[Pair]:
    try:
        from datasets import load_dataset

        ds = load_dataset(name, split="train")
    except Exception as exc:
        raise UserError(f"could not load dataset '{name}' ({type(exc).__name__})",
                        "set LAB_ONLINE=1 and check the name, or pass --data FILE.tsv") from None
    missing = [c for c in ("en", "new") if c not in ds.column_names]
    if missing:
        raise UserError(f"dataset '{name}' lacks column(s) {', '.join(missing)}", "it needs en and new columns")
    return [Pair(r["en"], r["new"], r.get("domain") or "general") for r in ds if r["en"] and r["new"]]


def split(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out = {"train": [], "dev": [], "test": []}
    for p in pairs:
        out[split_of(p.en)].append(p)
    return out


LEXICON_DOMAINS = ("lexicon",)
RESOURCE_DOMAINS = ("software_ui",)


@dataclass
class TaskSplits:
    train: list[Pair]  # train split of everything, plus all of the resource domains
    dev: list[Pair]  # held-out sentence pairs for tuning and eval loss
    test: list[Pair]  # held-out sentence pairs: the headline test
    dev_words: list[Pair]  # held-out lexicon entries (dev), a diagnostic
    test_words: list[Pair]  # held-out lexicon entries (test): the "unseen single words" diagnostic


def task_splits(pairs: list[Pair], lexicon_domains=LEXICON_DOMAINS, resource_domains=RESOURCE_DOMAINS) -> TaskSplits:
    """Split by the English hash, then route: resources all to training, held-out lexicon words to
    their own diagnostic sets, held-out sentences to dev/test. Held out means unseen: a held-out
    pair whose English occurs in training (a UI string that is also a lexicon word) is dropped, and
    so is a held-out sentence whose Newari is a training target (one Newari sentence given for two
    English wordings). Word glosses may repeat (synonyms share them)."""
    parts = split(pairs)
    train = parts["train"] + [p for name in ("dev", "test") for p in parts[name] if p.domain in resource_domains]
    seen_en, seen_new = {p.en.lower().strip() for p in train}, {p.new for p in train}

    def held(name: str, words: bool) -> list[Pair]:
        return [p for p in parts[name] if p.domain not in resource_domains and (p.domain in lexicon_domains) == words
                and p.en.lower().strip() not in seen_en and (words or p.new not in seen_new)]

    return TaskSplits(train=train, dev=held("dev", False), test=held("test", False),
                      dev_words=held("dev", True), test_words=held("test", True))
