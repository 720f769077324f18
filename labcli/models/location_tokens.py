"""Kosmos-2's location tokens (Peng et al. 2023): a box as two `<patch_index_XXXX>` tokens on a grid.

The image is cut into `grid` x `grid` cells (32 x 32 in the paper, 1024 tokens); a box (x1, y1, x2,
y2) in [0, 1] becomes the cell of its upper-left corner and the cell of its lower-right corner,
index = row * grid + column. Decoding takes the cell centres (or the cell edges when both corners
share a row or column, as the official decoder does), so a coordinate moves by less than 1/grid.
A grounded phrase is written `<phrase> text</phrase><object><patch_index_a><patch_index_b></object>`,
several boxes joined by `</delimiter_of_multi_objects/>`.
"""

from __future__ import annotations

import math
import re

Box = tuple[float, float, float, float]
TAGGED = re.compile(r"(?:(<phrase>([^<]+)</phrase>))?<object>((?:<patch_index_\d+><patch_index_\d+>"
                    r"</delimiter_of_multi_objects/>)*<patch_index_\d+><patch_index_\d+>)</object>")
PAIR = re.compile(r"<patch_index_(\d+)><patch_index_(\d+)>")


def box_to_indices(box: Box, grid: int = 32) -> tuple[int, int]:
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"a box is (x1, y1, x2, y2) in [0, 1] with x1 < x2 and y1 < y2, got {box}")
    left, top = math.floor(x1 * grid), math.floor(y1 * grid)
    right, bottom = math.ceil(x2 * grid - 1), math.ceil(y2 * grid - 1)
    return top * grid + left, bottom * grid + right


def indices_to_box(upper_left: int, lower_right: int, grid: int = 32) -> Box:
    cell = 1.0 / grid
    (ul_y, ul_x), (lr_y, lr_x) = divmod(upper_left, grid), divmod(lower_right, grid)
    if ul_x == lr_x or ul_y == lr_y:  # one row or column (or one cell): the cells' outer edges
        return ul_x * cell, ul_y * cell, (lr_x + 1) * cell, (lr_y + 1) * cell
    return (ul_x + 0.5) * cell, (ul_y + 0.5) * cell, (lr_x + 0.5) * cell, (lr_y + 0.5) * cell


def index_token(index: int) -> str:
    return f"<patch_index_{index:04d}>"


def box_to_tokens(box: Box, grid: int = 32) -> str:
    return "".join(index_token(i) for i in box_to_indices(box, grid))


def ground(phrase: str, boxes: list[Box], grid: int = 32) -> str:
    """`<phrase> phrase</phrase><object>...</object>` for one or more boxes."""
    pairs = "</delimiter_of_multi_objects/>".join(box_to_tokens(b, grid) for b in boxes)
    return f"<phrase>{phrase}</phrase><object>{pairs}</object>"


def entities(text: str, grid: int = 32) -> tuple[str, list[tuple[str, tuple[int, int], list[Box]]]]:
    """(the text without tags, [(phrase, (start, end) in that text, boxes)]): what Kosmos-2's decoder
    returns. An `<object>` without a phrase is named by its tokens and spans nothing. Leading and
    trailing spaces of the text and of each phrase are dropped from the spans."""
    clean = re.sub("<.*?>", "", text)
    lead = len(clean) - len(clean.lstrip())
    out = []
    for m in TAGGED.finditer(text):
        pairs = [(int(a), int(b)) for a, b in PAIR.findall(m.group(3))]
        boxes = [indices_to_box(a, b, grid) for a, b in pairs]
        if m.group(2) is None:
            at = len(re.sub("<.*?>", "", text[:m.start()])) - lead
            out += [(f"<patch_index_{a}><patch_index_{b}>", (at, at), [box]) for (a, b), box in zip(pairs, boxes)]
            continue
        phrase = m.group(2)
        start = len(re.sub("<.*?>", "", text[:m.start(2)])) - lead + (len(phrase) - len(phrase.lstrip()))
        end = len(re.sub("<.*?>", "", text[:m.end(2)])) - lead - (len(phrase) - len(phrase.rstrip()))
        out.append((phrase.strip(), (start, end), boxes))
    return clean.strip(), out
