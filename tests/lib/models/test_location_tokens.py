"""Kosmos-2 location tokens: the round trip, and agreement with transformers' own Kosmos-2 functions."""

from __future__ import annotations

import random

import pytest

from labcli.models import location_tokens as lt
from labcli.recipes.reproduce.kosmos2 import (
    CRAFTED,  # the strings the recipe's claims table counts
)


def random_box(rng: random.Random) -> lt.Box:
    x1, x2 = sorted(rng.uniform(0, 1) for _ in range(2))
    y1, y2 = sorted(rng.uniform(0, 1) for _ in range(2))
    return x1, y1, x2 + 1e-6, y2 + 1e-6


def test_box_to_tokens_to_box_moves_each_coordinate_by_less_than_one_cell():
    rng = random.Random(0)
    worst = 0.0
    for _ in range(5000):
        box = random_box(rng)
        if box[2] > 1 or box[3] > 1:
            continue
        back = lt.indices_to_box(*lt.box_to_indices(box))
        worst = max(worst, *(abs(a - b) for a, b in zip(box, back)))
    assert worst < 1 / 32


def test_tokens_are_zero_padded_corner_cells():
    assert lt.box_to_tokens((0.0, 0.0, 1.0, 1.0)) == "<patch_index_0000><patch_index_1023>"
    assert lt.box_to_indices((0.5, 0.25, 0.75, 0.5)) == (8 * 32 + 16, 15 * 32 + 23)
    with pytest.raises(ValueError):
        lt.box_to_indices((0.5, 0.5, 0.4, 0.6))


@pytest.mark.slow  # imports transformers: seconds
@pytest.mark.parametrize("text", CRAFTED)
def test_entities_agree_with_transformers_kosmos2_postprocessing(text):
    from transformers.models.kosmos2.processing_kosmos2 import (
        clean_text_and_extract_entities_with_bboxes,
        coordinate_to_patch_index,
    )

    assert lt.entities(text) == clean_text_and_extract_entities_with_bboxes(text)
    for _, _, boxes in lt.entities(text)[1]:
        for box in boxes:
            assert lt.box_to_indices(box) == coordinate_to_patch_index(box, 32)
