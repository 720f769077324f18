"""`lab detect spam`: SMS spam filtering with Naive Bayes, a character n-gram SVM and a small transformer.

Exact duplicate messages are removed before the stratified train/test split (labcli.data.sms_spam's one
de-duplication rule), so no test text was seen in training (the raw collection has 403 duplicate lines, mostly
spam templates).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.data import sms_spam
from labcli.detect import common
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

Model = Literal["naive_bayes", "char_svm", "transformer"]


class Transformer(Section):
    layers: int = Field(2, description="Encoder layers of the small BERT built from a config")
    hidden: int = Field(64, description="Hidden size")
    heads: int = Field(2, description="Attention heads")
    max_len: int = Field(64, description="Tokens kept per message")
    vocab: int = Field(8000, description="Word-level vocabulary size (built from training texts)")
    epochs: int = Field(4, description="Training epochs")
    lr: float = Field(1e-3, description="AdamW learning rate")
    batch_size: int = Field(32, description="Batch size")


class Config(RecipeConfig):
    data: str = Field("sms_spam", description="sms_spam (UCI SMS Spam Collection) or a file of `ham|spam<TAB>text` lines")
    models: list[Model] = Field(default_factory=lambda: ["naive_bayes", "char_svm", "transformer"], min_length=1, description="Models to train")
    test_fraction: float = Field(0.2, description="Share of de-duplicated messages held out for testing")
    dedupe: bool = Field(True, description="Drop exact duplicate texts before splitting")
    transformer: Transformer = Field(default_factory=Transformer, description="The small transformer")


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9£$]+|[^\sa-z0-9]", text.lower())


def train_transformer(train_x, train_y, test_x, cfg: Config) -> np.ndarray:
    """A small BERT (transformers, built from a config, random init) trained here; returns P(spam) per test text."""
    from collections import Counter

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    t = cfg.transformer
    counts = Counter(tok for text in train_x for tok in tokenize(text))
    vocab = {tok: i + 3 for i, (tok, _) in enumerate(counts.most_common(t.vocab - 3))}  # 0 pad, 1 cls, 2 unk

    def encode(texts):
        ids = np.zeros((len(texts), t.max_len), dtype=np.int64)
        for row, text in enumerate(texts):
            toks = [1] + [vocab.get(tok, 2) for tok in tokenize(text)][: t.max_len - 1]
            ids[row, : len(toks)] = toks
        return torch.from_numpy(ids)

    torch.manual_seed(cfg.seed)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=t.vocab, hidden_size=t.hidden, num_hidden_layers=t.layers, num_attention_heads=t.heads,
        intermediate_size=4 * t.hidden, max_position_embeddings=t.max_len, num_labels=2, pad_token_id=0))
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr)
    x, y = encode(train_x), torch.as_tensor(train_y)
    steps = t.epochs * ((len(x) + t.batch_size - 1) // t.batch_size)
    with common.progress() as bar:
        task = bar.add_task("small transformer", total=steps)
        model.train()
        for _ in range(t.epochs):
            for idx in torch.randperm(len(x)).split(t.batch_size):
                out = model(input_ids=x[idx], attention_mask=(x[idx] > 0).long(), labels=y[idx])
                opt.zero_grad()
                out.loss.backward()
                opt.step()
                bar.advance(task)
    model.eval()
    xt = encode(test_x)
    with torch.no_grad():
        logits = torch.cat([model(input_ids=b, attention_mask=(b > 0).long()).logits for b in xt.split(256)])
    return logits.softmax(-1)[:, 1].numpy()


def run(cfg: Config, ctx) -> None:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    seed_everything(cfg.seed)
    texts, labels = sms_spam.read(cfg.data, dedupe=False)
    raw = len(texts)
    if cfg.dedupe:
        texts, labels = sms_spam.deduplicate(texts, labels)
    train_x, test_x, train_y, test_y = train_test_split(texts, labels, test_size=cfg.test_fraction,
                                                        stratify=labels, random_state=cfg.seed)
    rows = []
    for name in cfg.models:
        if name == "transformer":
            score = train_transformer(train_x, train_y, test_x, cfg)
            pred = (score >= 0.5).astype(int)
        else:
            model = (make_pipeline(CountVectorizer(), MultinomialNB()) if name == "naive_bayes" else
                     make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True), LinearSVC()))
            model.fit(train_x, train_y)
            pred = model.predict(test_x)
            score = model.predict_proba(test_x)[:, 1] if name == "naive_bayes" else model.decision_function(test_x)
        row = {"model": name, "accuracy": accuracy_score(test_y, pred), "precision": precision_score(test_y, pred),
               "recall": recall_score(test_y, pred), "f1 (spam)": f1_score(test_y, pred), "auroc": roc_auc_score(test_y, score)}
        rows.append(row)
        ctx.log(**row)

    fig, ax = common.new_figure()
    ax.bar([r["model"] for r in rows], [r["f1 (spam)"] for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 on spam (held-out)")
    plot = common.save_figure(fig, ctx.path("spam_f1.png"))
    summary = {"data": cfg.data, "raw_messages": raw, "after_dedupe": len(texts), "train": len(train_x),
               "test": len(test_x), "test_spam": int(test_y.sum()), "models": rows}
    ctx.write_summary(summary)
    ctx.write_report(
        f"# SMS spam detection\n\n{raw:,} messages, {len(texts):,} after removing exact duplicates"
        f"{'' if cfg.dedupe else ' (de-duplication OFF: test scores may be inflated)'}; stratified split "
        f"{len(train_x):,} train / {len(test_x):,} test ({int(test_y.sum())} spam).\n\n{markdown_table(rows)}\n"
        f"![F1]({plot})\n\n## What this data is and is not\n\nThe UCI SMS Spam Collection (2011-2012, mostly UK and "
        "Singapore English SMS) is real but small and dated: spam templates repeat, so near-duplicates remain after exact "
        "de-duplication. It says nothing about e-mail spam or today's adversarial spam.\n")
    print(markdown_table(rows))
