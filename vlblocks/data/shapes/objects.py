"""ShapesWorld vocabulary and geometry: shapes, colours, sizes, the object record and the spatial relations.

The vocabulary follows the synthetic worlds of Johnson et al., "CLEVR" (CVPR 2017) and Kuhnle & Copestake,
"ShapeWorld" (2017), kept small: three shapes, six well separated colours, two sizes. An object is *left of* an
anchor when its centre lies more than ``margin`` pixels left of the anchor's centre (likewise right / above /
below); ``relation_target`` returns the one object on a side only when no other object lies within ``margin`` of
the anchor along that axis, so no answer hinges on a threshold. ``grid_cell`` places a centre in a 3 x 3 grid of
the image (the wording of positions in captions).

Shape legend: S image side in pixels; coordinates are pixels, x to the right and y downwards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "AREA",
    "COLORS",
    "DIRECTIONS",
    "EXTENT",
    "NUMBER_WORDS",
    "RADIUS",
    "SHAPES",
    "SIZES",
    "ShapeObject",
    "grid_cell",
    "noun_phrase",
    "pick",
    "plural_phrase",
    "position_phrase",
    "relation_target",
    "side_offset",
    "with_article",
]

SHAPES = ("circle", "square", "triangle")
# Well separated RGB colours (every pair differs by >= 60 in some channel; none is close to the gray background).
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 50),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
}
SIZES = ("small", "large")
DIRECTIONS = ("left", "right", "above", "below")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

RADIUS = {"small": 0.09, "large": 0.15}  # radius r as a fraction of the image side
# bounding radius / r: every pixel of a shape lies within EXTENT * r of its centre (placement keeps these apart)
EXTENT = {"circle": 1.0, "square": 0.85 * 2**0.5, "triangle": (1.1**2 + 0.75**2) ** 0.5}
# area / r^2 (circle pi, square 1.7^2, triangle 2.2 * 1.85 / 2): the six (shape, size) areas are all distinct
AREA = {"circle": math.pi, "square": 1.7**2, "triangle": 2.2 * 1.85 / 2}

_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: attributes, centre ``(x, y)``, radius, and COCO bbox ``(x, y, w, h)`` of its pixels."""

    shape: str
    color: str
    size: str
    center: tuple[float, float]
    radius: float
    bbox: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def side_offset(obj: ShapeObject, anchor: ShapeObject, direction: str) -> float:
    """Signed distance in pixels of ``obj``'s centre from ``anchor``'s centre towards ``direction``."""
    dx, dy = obj.center[0] - anchor.center[0], obj.center[1] - anchor.center[1]
    return {"left": -dx, "right": dx, "above": -dy, "below": dy}[direction]


def relation_target(objects: list[ShapeObject], anchor: int, direction: str, margin: float) -> int | None:
    """Index of the one object on ``direction`` side of ``objects[anchor]``, or None when that is not well defined."""
    others = [j for j in range(len(objects)) if j != anchor]
    offsets = {j: side_offset(objects[j], objects[anchor], direction) for j in others}
    side = [j for j in others if offsets[j] > margin]
    band = [j for j in others if abs(offsets[j]) <= margin]
    return side[0] if len(side) == 1 and not band else None


def grid_cell(obj: ShapeObject, image_size: int) -> tuple[int, int]:
    """(row, column) in 0..2 of the object's centre in a 3 x 3 grid of the image."""
    x, y = obj.center
    return min(2, int(3 * y / image_size)), min(2, int(3 * x / image_size))


def position_phrase(obj: ShapeObject, image_size: int) -> str:
    """The 3 x 3 grid position in words: "at the top left", "at the top", "on the left", "in the center", ..."""
    row, col = grid_cell(obj, image_size)
    if row == 1:
        return "in the center" if col == 1 else f"on the {_COLS[col]}"
    return f"at the {_ROWS[row]}" if col == 1 else f"at the {_ROWS[row]} {_COLS[col]}"


# ------------------------------------------------------------------------ words shared by captions and questions
def noun_phrase(attrs: dict[str, str], noun: str = "shape") -> str:
    """Noun phrase such as "small red circle" from any subset of size / color / shape (``noun``: no shape)."""
    words = [attrs[f] for f in ("size", "color") if f in attrs]
    return " ".join([*words, attrs.get("shape", noun)])


def plural_phrase(attrs: dict[str, str], noun: str = "shapes") -> str:
    """Plural phrase such as "small red circles" from any subset of size / color / shape."""
    words = [attrs[f] for f in ("size", "color") if f in attrs]
    return " ".join([*words, attrs["shape"] + "s" if "shape" in attrs else noun])


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article: "a red circle", "an orange square"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def pick(rng: np.random.Generator, seq: list | tuple):
    """One element of ``seq``, uniformly (one draw from ``rng``)."""
    return seq[int(rng.random() * len(seq))]
