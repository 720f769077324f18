"""The one padded collate: causal-LM SFT examples, seq2seq labels, class labels with extra tensors."""

from __future__ import annotations

import torch

from labcli.data.text import collate_lm, padded_collate


def test_causal_examples_pad_inputs_and_labels_to_one_width():
    batch = padded_collate(pad_id=0)([{"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7])},
                                      {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert all(v.dtype == torch.long for v in batch.values())


def test_seq2seq_labels_keep_their_own_width():
    batch = padded_collate(pad_id=1)([{"input_ids": [4, 5, 6, 7], "labels": [9]}, {"input_ids": [4], "labels": [9, 9]}])
    assert batch["input_ids"].shape == (2, 4) and batch["labels"].tolist() == [[9, -100], [9, 9]]


def test_class_labels_and_other_tensors_are_stacked():
    examples = [{"input_ids": torch.tensor([3, 4]), "labels": torch.tensor(1), "teacher_logits": torch.tensor([0.5, 1.5])},
                {"input_ids": torch.tensor([3]), "labels": torch.tensor(0), "teacher_logits": torch.tensor([2.0, 0.0])}]
    batch = padded_collate(pad_id=0)(examples)
    assert batch["labels"].tolist() == [1, 0]
    assert batch["teacher_logits"].tolist() == [[0.5, 1.5], [2.0, 0.0]]
    assert set(batch) == {"input_ids", "attention_mask", "labels", "teacher_logits"}


def test_equal_blocks_need_no_padding():
    batch = collate_lm([{"input_ids": torch.tensor([1, 2])}, {"input_ids": torch.tensor([3, 4])}])
    assert batch["labels"].tolist() == batch["input_ids"].tolist() == [[1, 2], [3, 4]]
