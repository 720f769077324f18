"""Synthetic grounding scenes and the small grounding model."""

from __future__ import annotations

import random

import numpy as np
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
