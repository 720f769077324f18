"""Tokenizers trained locally with `tokenizers` (BPE over NFC text, Metaspace), cached by content."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from labcli.paths import lab_home

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, extra_specials: Iterable[str] = ()):
    """A PreTrainedTokenizerFast trained on `texts`; the same texts and size load from the cache."""
    from filelock import FileLock
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    extra = list(extra_specials)
    digest = hashlib.sha256("\n".join(texts + [str(vocab_size)] + extra).encode("utf-8")).hexdigest()[:16]
    folder = lab_home() / "tokenizers" / digest
    file = folder / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # several ranks may start with an empty cache
        if not file.exists():
            _train(texts, vocab_size, extra, file)
    return PreTrainedTokenizerFast(tokenizer_file=str(file), pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=extra or None)


def _train(texts: list[str], vocab_size: int, extra: list[str], file: Path) -> None:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + extra,
                                  min_frequency=1, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # Encoded text ends with </s> (as mBART/T5 tokenizers do); lm_blocks opts out of it.
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tmp = file.with_name(".tokenizer.json.tmp")
    tok.save(str(tmp))
    tmp.replace(file)


def default_corpus() -> list[str]:
    """Shipped text for generic `tiny-*` presets: both sides of the Newari corpus."""
    from labcli.data.newari import read_all

    rows = read_all()
    return [r.en for r in rows] + [r.new for r in rows]


def char_tokenizer(texts: Iterable[str]):
    """A character-level PreTrainedTokenizerFast over the characters of `texts` (plus the four
    specials): every character is one token, so digits are never merged (arithmetic stays learnable
    and the same number is the same tokens wherever it appears). Unseen characters map to <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted({c for text in texts for c in text})
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def word_tokenizer(texts: Iterable[str]):
    """A word-level PreTrainedTokenizerFast over the words and punctuation marks of `texts` (split by
    `\\w+|[^\\w\\s]`), decoded with single spaces: for generated corpora with a closed vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = {token: i for i, token in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
