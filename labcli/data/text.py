"""Causal-LM data: texts tokenized, joined with EOS, and cut into equal blocks (no padding)."""

from __future__ import annotations

import torch


def lm_blocks(texts: list[str], tokenizer, block_size: int) -> list[dict]:
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // block_size
    return [{"input_ids": torch.tensor(ids[i * block_size:(i + 1) * block_size])} for i in range(n)]


def collate_lm(examples: list[dict]) -> dict:
    ids = torch.stack([e["input_ids"] for e in examples])
    return {"input_ids": ids, "labels": ids.clone()}
