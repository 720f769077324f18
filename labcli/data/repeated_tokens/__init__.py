"""Repeated random tokens (Olsson et al. 2022's induction task), generated here, never stored.

A sequence is `[BOS, f.., a_1..a_L, a_1..a_L, f..]`: a random segment of random length L (between
`min_len` and `max_len`) and its repeat, at a random place among random filler, 1 + 2 * max_len tokens.
Tokens are uniform over 1..V-1 (0 is BOS). The first copy cannot be predicted (loss ln(V-1) at
best); its repeat can, by looking back at what followed the previous occurrence of the current
token, which is what an induction head does. L and the segment's start vary per sequence so that
no positional rule finds the earlier copy. Sequence i is a pure function of (seed, i).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BOS = 0


class RepeatedTokens(Sequence):
    """`n` sequences over a vocabulary of `vocab` ids, as engine examples:
    {"input_ids": [1 + 2 * max_len], "start": position of a_1, "length": L}."""

    def __init__(self, n: int, min_len: int, max_len: int, vocab: int, seed: int):
        self.n, self.min_len, self.max_len, self.vocab, self.seed = n, min_len, max_len, vocab, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        length = int(torch.randint(self.min_len, self.max_len + 1, (), generator=gen))
        half = torch.randint(1, self.vocab, (length,), generator=gen)
        filler = torch.randint(1, self.vocab, (2 * (self.max_len - length),), generator=gen)
        before = int(torch.randint(0, len(filler) + 1, (), generator=gen))
        ids = torch.cat([torch.tensor([BOS]), filler[:before], half, half, filler[before:]])
        return {"input_ids": ids, "start": 1 + before, "length": length}

    def batch(self, start: int = 0, size: int | None = None) -> dict:
        """Sequences start..start+size as one batch (collated)."""
        size = self.n - start if size is None else size
        return collate([self[i] for i in range(start, start + size)])


def collate(examples: list[dict]) -> dict:
    return {"input_ids": torch.stack([e["input_ids"] for e in examples]),
            "start": torch.tensor([e["start"] for e in examples]), "length": torch.tensor([e["length"] for e in examples])}


def copy_masks(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch, pos - 1] masks over next-token predictions (entry q predicts token q+1): the first
    copy's a_2..a_L (unpredictable) and the repeat's a_2..a_L (predictable by copying)."""
    target = torch.arange(1, batch["input_ids"].shape[1]).unsqueeze(0)
    start, length = batch["start"].unsqueeze(1), batch["length"].unsqueeze(1)
    first = (target >= start + 1) & (target < start + length)
    second = (target >= start + length + 1) & (target < start + 2 * length)
    return first, second


def corrupt(batch: dict, vocab: int, seed: int, position: int | None = None) -> dict:
    """A corrupted copy of the batch for activation patching: in each sequence token j of the first
    copy (`position`, or a random 2 <= j <= L) is replaced by another token. At the query position (token j-1 of
    the repeat) the clean run should predict the clean token and the corrupted run the replacement:
    returns {"input_ids", "query", "answer", "wrong"}."""
    gen = torch.Generator().manual_seed(seed)
    tokens, start, length = batch["input_ids"], batch["start"], batch["length"]
    rows = torch.arange(tokens.shape[0])
    j = 2 + (torch.rand(tokens.shape[0], generator=gen) * (length - 1)).long()  # 2..L
    if position is not None:
        if not 2 <= position <= int(length.min()):
            raise ValueError(f"position {position} is not within 2..{int(length.min())}")
        j = torch.full_like(j, position)
    j = start + j - 1  # the token's position in the sequence
    clean = tokens[rows, j]
    shift = torch.randint(1, vocab - 1, clean.shape, generator=gen)  # never 0 (BOS), never the clean id
    wrong = (clean - 1 + shift) % (vocab - 1) + 1
    out = tokens.clone()
    out[rows, j] = wrong
    return {"input_ids": out, "query": j + length - 1, "answer": clean, "wrong": wrong}
