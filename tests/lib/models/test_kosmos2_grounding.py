"""A Kosmos-2 checkpoint as a grounder: a tiny random Kosmos-2 with a real processor, saved and loaded
the way a downloaded one is, answers through the whole path offline."""

from __future__ import annotations

import random

import numpy as np
import pytest

from labcli.errors import UserError
from labcli.models import grounding_vlm as g
from labcli.models import kosmos2_grounding as k
from labcli.models import location_tokens as lt


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = k.save_tiny(tmp_path_factory.mktemp("kosmos2") / "tiny")
    return folder, *k.load(str(folder))


@pytest.mark.slow
def test_batched_generation_equals_one_by_one(tiny):
    _, model, processor = tiny
    assert type(processor).__name__ == "Kosmos2Processor" and model.config.model_type == "kosmos-2"
    rng = random.Random(0)
    scenes = [g.make_scene(rng, 3, relation=i % 2 == 0) for i in range(8)]
    images, expressions = np.stack([s.image for s in scenes]), [s.expression for s in scenes]
    batched = k.generate(model, processor, images, expressions, batch_size=8)
    assert batched == k.generate(model, processor, images, expressions, batch_size=1)
    assert all(f"<grounding><phrase> {e}</phrase>" in t for e, t in zip(expressions, batched))
    boxes = k.ground(model, processor, images, expressions)
    assert len(boxes) == 8 and all(b is None or 0 <= b[0] < b[2] <= 1 for b in boxes)


@pytest.mark.slow
def test_first_box_is_the_processors_parse_of_the_location_tokens(tiny):
    _, _, processor = tiny
    box = (0.25, 0.5, 0.625, 0.875)
    text = f"<image> x</image><grounding><phrase> the small red circle</phrase><object>{lt.box_to_tokens(box)}</object>"
    assert k.first_box(processor, text) == lt.indices_to_box(*lt.box_to_indices(box))
    assert k.first_box(processor, "<image> x</image><grounding><phrase> the small red circle</phrase> no box") is None


def test_a_folder_that_is_not_kosmos2_is_one_line(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    assert "'bert' model, not Kosmos-2" in k.check_model(str(tmp_path / "bert"))[0]
    assert "no config.json" in k.check_model(str(tmp_path / "empty"))[0]
    assert "no such folder" in k.check_model(str(tmp_path / "missing"))[0]
    with pytest.raises(UserError) as err:
        k.load(str(tmp_path / "bert"))
    assert "\n" not in str(err.value) and "hint" in str(err.value)
