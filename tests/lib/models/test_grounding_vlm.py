"""Synthetic grounding scenes and the small grounding model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from labcli.models import grounding_vlm as g
from labcli.models.location_tokens import box_to_indices


def test_scenes_refer_to_a_unique_object_inside_its_box():
    rng = random.Random(0)
    for _ in range(50):
        s = g.make_scene(rng, 3, allowed=[("red", "circle")])
        assert s.expression.startswith("the ") and s.expression.endswith(" red circle") and s.combo == ("red", "circle")
        x1, y1, x2, y2 = (int(round(v * g.SIDE)) for v in s.box)
        inside = s.image[:, y1:y2, x1:x2]
        red = np.array(g.COLOURS["red"], np.float32)[:, None, None] / 255
        assert np.isclose(inside, red, atol=1e-6).all(0).any()  # the object is drawn in its box
        assert s.image.shape == (3, g.SIDE, g.SIDE)


def test_targets_are_the_location_cells_and_iou_is_exact():
    box = (0.5, 0.25, 0.75, 0.5)
    ul, lr = box_to_indices(box)
    assert g.targets([box]).tolist() == [[ul // 32, ul % 32, lr // 32, lr % 32]]
    assert g.iou(box, box) == 1.0 and g.iou(box, (0.0, 0.0, 0.1, 0.1)) == 0.0
    assert g.iou((0, 0, 0.5, 0.5), (0.25, 0, 0.75, 0.5)) == (0.125 / 0.375)


def test_model_gives_four_cell_distributions_with_and_without_the_image():
    scenes = [g.make_scene(random.Random(i)) for i in range(3)]
    images = torch.tensor(np.stack([s.image for s in scenes]))
    words = g.encode_text([s.expression for s in scenes])
    for use_image in (True, False):
        model = g.GroundingModel(width=16, layers=1, heads=2, use_image=use_image)
        assert model(images, words).shape == (3, 4, 32)
        boxes = g.predict_boxes(model, images, words)
        assert all(0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in boxes)


def test_relation_scenes_need_the_relation_to_find_the_object():
    rng = random.Random(1)
    anchors = [("green", "circle"), ("blue", "square")]
    for _ in range(100):
        s = g.make_scene(rng, 4, relation=True, anchors=anchors)
        words = s.expression.split()
        relation, anchor = " ".join(words[4:-3]), tuple(words[-2:])
        assert s.kind == "relation" and relation in g.RELATIONS and anchor in anchors
        named = [o for o in s.objects if o[:3] == tuple(words[1:4])]
        assert len(named) == 2  # attributes alone fit two objects
        (anchor_place,) = [o[3] for o in s.objects if o[1:3] == anchor]  # the anchor is unique by colour and shape
        fits = [o for o in named if g._holds(relation, o[3], anchor_place)]
        assert len(fits) == 1 and fits[0] == s.objects[0]  # the relation picks the referred object
        x, y, side = s.objects[0][3]
        assert s.box == (x / g.SIDE, y / g.SIDE, (x + side) / g.SIDE, (y + side) / g.SIDE)
    assert g._holds("left of", (0, 0, 4), (10, 0, 4)) and not g._holds("left of", (20, 0, 4), (10, 0, 4))
    assert g._holds("above", (0, 0, 4), (0, 10, 4)) and g._holds("below", (0, 20, 4), (0, 10, 4))
    with pytest.raises(ValueError):
        g.make_scene(rng, 2, relation=True)


def test_attribute_scenes_name_a_unique_object():
    rng = random.Random(2)
    for _ in range(50):
        s = g.make_scene(rng, 4)
        assert s.kind == "attributes" and [o[:3] for o in s.objects].count(tuple(s.expression.split()[1:])) == 1


def test_padding_changes_nothing():
    """Words are padded to MAX_WORDS and the padding is masked: the same logits as no padding."""
    scene = g.make_scene(random.Random(3))
    images = torch.tensor(scene.image[None])
    torch.manual_seed(0)
    model = g.GroundingModel(width=16, layers=1, heads=2).eval()
    padded = g.encode_text([scene.expression])
    assert padded.shape == (1, g.MAX_WORDS) and (padded[0, 4:] == 0).all()
    with torch.no_grad():
        assert torch.allclose(model(images, padded), model(images, padded[:, :4]), atol=1e-5)
