"""Text batches: equal-length LM blocks (no padding), and the one padded collate for everything else."""

from __future__ import annotations

from typing import Callable

import torch

IGNORE = -100  # label of a position that is not scored (padding, a masked-out prompt)


def lm_blocks(texts: list[str], tokenizer, block_size: int) -> list[dict]:
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // block_size
    return [{"input_ids": torch.tensor(ids[i * block_size:(i + 1) * block_size])} for i in range(n)]


def collate_lm(examples: list[dict]) -> dict:
    """Equal-length blocks from `lm_blocks`: stacked, labels = inputs (the model shifts them)."""
    ids = torch.stack([e["input_ids"] for e in examples])
    return {"input_ids": ids, "labels": ids.clone()}


def padded_collate(pad_id: int) -> Callable[[list[dict]], dict]:
    """A collate for examples of different lengths, right-padded:

    - `input_ids` (a list or 1-D tensor of token ids): padded with `pad_id` to the longest; an
      `attention_mask` marks the real tokens.
    - `labels`: token labels (1-D) are padded with -100 to the longest labels (as long as the inputs
      for a causal LM, their own length for seq2seq); a class label (0-D) is stacked.
    - any other key (e.g. `teacher_logits`): tensors of one shape, stacked.
    """

    def collate(examples: list[dict]) -> dict:
        batch = {"input_ids": _pad([e["input_ids"] for e in examples], pad_id)}
        batch["attention_mask"] = _pad([[1] * len(e["input_ids"]) for e in examples], 0)
        for key in examples[0]:
            if key == "input_ids":
                continue
            values = [torch.as_tensor(e[key]) for e in examples]
            batch[key] = _pad(values, IGNORE) if key == "labels" and values[0].dim() == 1 else torch.stack(values)
        return batch

    return collate


def _pad(rows: list, value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out
