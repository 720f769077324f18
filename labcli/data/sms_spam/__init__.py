"""The UCI SMS Spam Collection v.1 (Almeida et al. 2011): 5,574 SMS labelled ham/spam, shipped gzipped; see README.md.

    from labcli.data import sms_spam
    texts, labels = sms_spam.read()                        # 5,171 distinct texts, labels 1 = spam (numpy int array)
    texts, labels = sms_spam.read(dedupe=False)            # all 5,574 lines, in file order
    texts, labels = sms_spam.read("my_sms.tsv")            # a user file in the same `ham|spam<TAB>text` format

The one de-duplication rule (`dedupe`): a message is a duplicate when its text (everything after the first tab,
byte for byte, whitespace included) equals an earlier line's; the first occurrence and its label are kept, in file
order. The collection has 403 such lines and no text that occurs with both labels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from labcli.data.files import source
from labcli.errors import UserError

FILE = Path(__file__).parent / "SMSSpamCollection.gz"
LABELS = {"ham": 0, "spam": 1}


def read(data: str = "sms_spam", dedupe: bool = True) -> tuple[list[str], np.ndarray]:
    """(texts, labels with 1 = spam) from the shipped collection or a UTF-8 file of `ham|spam<TAB>text` lines."""
    path = source(data, "sms_spam", FILE)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}", "give a UTF-8 text file of `ham|spam<TAB>text` lines") from None
    texts, labels = [], []
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if not line:
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise UserError(f"{path}:{number} has no tab", "each line must be `ham|spam<TAB>text`")
        if label.strip().lower() not in LABELS:
            raise UserError(f"{path}:{number} has label '{label[:20]}'", "labels must be 'ham' or 'spam'")
        texts.append(text)
        labels.append(LABELS[label.strip().lower()])
    if not texts:
        raise UserError(f"{path} holds no messages", "each line must be `ham|spam<TAB>text`")
    return deduplicate(texts, np.array(labels)) if dedupe else (texts, np.array(labels))


def deduplicate(texts: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Drop every message whose text equals an earlier one's (first occurrence and its label kept, order kept)."""
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    keep = sorted(first.values())
    return [texts[i] for i in keep], np.asarray(labels)[keep]
