"""A small grounding model on synthetic scenes: Kosmos-2's output (a box as two location cells on a
32 x 32 grid) from an image and a referring expression, at a size that trains on a CPU in minutes.

Scenes are 32 x 32 RGB canvases (one pixel per grid cell) with a few shapes (circle, square,
triangle) in four colours and two sizes. An expression names one object in one of two kinds.
`attributes`: by size, colour and shape ("the small red circle"), unique in its scene. `relation`: the
scene holds two objects with the same size, colour and shape, on opposite sides of a third (the
anchor, unique by colour and shape), and only the relation tells them apart ("the small red circle
left of the blue square").

The model: a CNN over the image and two coordinate channels (CoordConv) makes 8 x 8 feature tokens,
the expression's words are embedded (padding masked out), a transformer encoder reads both, and four
heads read the first text token to predict the row and column of the upper-left and lower-right cells
(32 classes each: the two location tokens, factorised). With `use_image=False` the image tokens are
left out: the language-only baseline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
SIZES = {"small": (5, 7), "large": (10, 13)}
RELATIONS = ["left of", "right of", "above", "below"]
KINDS = ["attributes", "relation"]
SIDE, GRID = 32, 32
VOCAB = ["<pad>", "the"] + list(SIZES) + list(COLOURS) + SHAPES + ["left", "right", "of", "above", "below"]
MAX_WORDS = 12  # the longest expression has 9 words


@dataclass
class Scene:
    image: np.ndarray  # [3, SIDE, SIDE] float32 in [0, 1]
    expression: str
    box: tuple[float, float, float, float]  # the referred object's box, normalised (x1, y1, x2, y2)
    combo: tuple[str, str]  # (colour, shape) of the referred object
    kind: str = "attributes"  # or "relation": the expression needs where the object is relative to another
    objects: list = field(default_factory=list)  # every object's (size, colour, shape, (x, y, side) in pixels)


def _draw(canvas: np.ndarray, shape: str, colour: tuple, x: int, y: int, s: int) -> None:
    yy, xx = np.mgrid[0:s, 0:s]
    if shape == "circle":
        mask = (xx - (s - 1) / 2) ** 2 + (yy - (s - 1) / 2) ** 2 <= (s / 2) ** 2
    elif shape == "square":
        mask = np.ones((s, s), bool)
    else:  # triangle pointing up
        mask = np.abs(xx - (s - 1) / 2) <= yy / 2 + 0.5
    canvas[:, y:y + s, x:x + s][:, mask] = np.array(colour, np.float32)[:, None] / 255


def _holds(relation: str, a: tuple, b: tuple) -> bool:
    """Whether object a (x, y, side) is `relation` object b, by their centres."""
    (ax, ay, a_s), (bx, by, b_s) = a, b
    acx, acy, bcx, bcy = ax + a_s / 2, ay + a_s / 2, bx + b_s / 2, by + b_s / 2
    return {"left of": acx < bcx, "right of": acx > bcx, "above": acy < bcy, "below": acy > bcy}[relation]


def make_scene(rng: random.Random, objects: int = 3, allowed=None, relation: bool = False, anchors=None) -> Scene:
    """One scene; the referred object's (colour, shape) is drawn from `allowed` when given. With
    `relation`, object 1 is the referred object's twin and object 2 the anchor, whose (colour, shape)
    is drawn from `anchors` when given (so held-out combinations are never named as anchors either)."""
    if relation and objects < 3:
        raise ValueError(f"a relation scene needs 3 objects (target, twin, anchor), got {objects}")
    while True:
        canvas = np.full((3, SIDE, SIDE), 0.95, np.float32)
        placed, attrs = [], []
        for i in range(objects):
            if i == 0 and allowed is not None:
                colour, shape = rng.choice(allowed)
            elif i == 2 and relation and anchors is not None:
                colour, shape = rng.choice(anchors)
            else:
                colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            size = attrs[0][0] if relation and i == 1 else rng.choice(list(SIZES))
            if relation and i == 1:
                colour, shape = attrs[0][1:]
            s = rng.randint(*SIZES[size])
            for _ in range(50):
                x, y = rng.randint(0, SIDE - s), rng.randint(0, SIDE - s)
                if all(x + s <= px or px + ps <= x or y + s <= py or py + ps <= y for px, py, ps in placed):
                    break
            else:
                break
            placed.append((x, y, s))
            attrs.append((size, colour, shape))
        if len(placed) < objects or attrs.count(attrs[0]) != (2 if relation else 1):
            continue  # overlapping, or the referred object is not unique by its attributes (or not twinned)
        size, colour, shape = attrs[0]
        expression = f"the {size} {colour} {shape}"
        if relation:
            anchor = attrs[2][1:]
            if [a[1:] for a in attrs].count(anchor) != 1:
                continue  # the anchor is not unique by colour and shape
            told_apart = [r for r in RELATIONS if _holds(r, placed[0], placed[2]) and not _holds(r, placed[1], placed[2])]
            if not told_apart:
                continue
            expression += f" {rng.choice(told_apart)} the {anchor[0]} {anchor[1]}"
        for (x, y, s), (_, c, sh) in zip(placed, attrs):
            _draw(canvas, sh, COLOURS[c], x, y, s)
        x, y, s = placed[0]
        return Scene(canvas, expression, (x / SIDE, y / SIDE, (x + s) / SIDE, (y + s) / SIDE), (colour, shape),
                     "relation" if relation else "attributes", [(*a, p) for a, p in zip(attrs, placed)])


def encode_text(expressions: list[str], length: int = MAX_WORDS) -> torch.Tensor:
    """[N, length] word ids, padded with <pad> (id 0)."""
    index = {w: i for i, w in enumerate(VOCAB)}
    ids = [[index[w] for w in e.split()] for e in expressions]
    if any(len(i) > length for i in ids):
        raise ValueError(f"an expression is longer than {length} words")
    return torch.tensor([i + [0] * (length - len(i)) for i in ids])


def targets(boxes: list[tuple], grid: int = GRID) -> torch.Tensor:
    """[N, 4]: row and column of the upper-left cell, row and column of the lower-right cell."""
    from labcli.models.location_tokens import box_to_indices

    out = []
    for box in boxes:
        ul, lr = box_to_indices(box, grid)
        out.append([ul // grid, ul % grid, lr // grid, lr % grid])
    return torch.tensor(out)


class GroundingModel(nn.Module):
    def __init__(self, width: int = 64, layers: int = 2, heads: int = 4, use_image: bool = True, grid: int = GRID):
        super().__init__()
        self.use_image, self.grid = use_image, grid
        # two extra input channels hold each pixel's x and y (CoordConv): the features know where they are
        self.cnn = nn.Sequential(nn.Conv2d(5, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(32, width, 3, padding=1), nn.ReLU())  # 32 x 32 -> 8 x 8 tokens
        self.image_pos = nn.Parameter(torch.zeros(64, width))
        self.words = nn.Embedding(len(VOCAB), width)
        self.text_pos = nn.Parameter(torch.zeros(MAX_WORDS, width))
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.heads = nn.Linear(width, 4 * grid)
        nn.init.normal_(self.image_pos, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)

    def forward(self, images: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Logits [N, 4, grid]: row/column of the upper-left cell, row/column of the lower-right cell."""
        tokens = self.words(words) + self.text_pos[:words.shape[1]]
        padding = words == 0
        if self.use_image:
            n, _, h, w = images.shape
            ys, xs = torch.meshgrid(torch.linspace(0, 1, h, device=images.device), torch.linspace(0, 1, w, device=images.device),
                                    indexing="ij")
            coords = torch.stack([xs, ys])[None].expand(n, 2, h, w)
            image = self.cnn(torch.cat([images, coords], 1)).flatten(2).transpose(1, 2) + self.image_pos
            tokens = torch.cat([tokens, image], 1)
            padding = torch.cat([padding, padding.new_zeros(n, image.shape[1])], 1)
        return self.heads(self.encoder(tokens, src_key_padding_mask=padding)[:, 0]).view(-1, 4, self.grid)


def predict_boxes(model: GroundingModel, images: torch.Tensor, words: torch.Tensor) -> list[tuple]:
    from labcli.models.location_tokens import indices_to_box

    with torch.no_grad():
        cells = model(images, words).argmax(-1).tolist()
    boxes = []
    for r1, c1, r2, c2 in cells:
        r2, c2 = max(r1, r2), max(c1, c2)  # a lower-right cell above or left of the upper-left one: one cell
        boxes.append(indices_to_box(r1 * model.grid + c1, r2 * model.grid + c2, model.grid))
    return boxes


def iou(a: tuple, b: tuple) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
