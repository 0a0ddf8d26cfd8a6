"""ShapesWorld captions: one "full" caption that names every object, plus four from varied template families.

The first caption of every scene is the *full caption*: the number of objects, then every object with its size,
colour, shape and position in a 3 x 3 grid of the image, in reading order (by grid row, then column, then x, y):
"three shapes: a large red circle at the top left, a small blue square in the center and a small green triangle
at the bottom right". It uses no randomness, so it depends only on the layout; it is what image-text retrieval
pairs use. The other captions come from the template families of ``CAPTION_TEMPLATES`` (inventory, relation,
location, grouping, generic), in the spirit of the COCO captions of Chen et al. (2015): several phrasings of one
scene, some partial. They draw from the scene's own caption stream, so a new template changes no image, no
question and no other scene. Captions only mention colours and shapes present in the scene.

Shape legend: S image side in pixels.
"""

from __future__ import annotations

from collections import Counter
from itertools import product

import numpy as np

from vlblocks.data.shapes.objects import (
    DIRECTIONS,
    NUMBER_WORDS,
    ShapeObject,
    grid_cell,
    noun_phrase,
    pick,
    position_phrase,
    side_offset,
    with_article,
)

__all__ = ["CAPTION_TEMPLATES", "CAPTIONS_PER_SCENE", "full_caption", "make_captions"]

CAPTIONS_PER_SCENE = 5


def full_caption(objects: list[ShapeObject], image_size: int) -> str:
    """Every object with size, colour, shape and 3 x 3 grid position, in reading order (no randomness)."""
    ordered = sorted(objects, key=lambda o: (*grid_cell(o, image_size), o.center[0], o.center[1]))
    items = [
        f"{with_article(f'{o.size} {o.color} {o.shape}')} {position_phrase(o, image_size)}" for o in ordered
    ]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    n = len(items)
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} shape{'s' if n > 1 else ''}: {listed}"


def _describe(rng, obj: ShapeObject) -> str:
    fields = ("size", "color", "shape") if rng.random() < 0.5 else ("color", "shape")
    return with_article(noun_phrase({f: getattr(obj, f) for f in fields}))


def _location(obj: ShapeObject, image_size: int) -> str:
    x, y = obj.center
    col = "left" if x < image_size / 3 else "right" if x > 2 * image_size / 3 else "center"
    row = "top" if y < image_size / 3 else "bottom" if y > 2 * image_size / 3 else "middle"
    if row == "middle":
        return "in the center of the image" if col == "center" else f"on the {col}"
    return f"at the {row}" if col == "center" else f"in the {row} {col} corner"


def _cap_inventory(rng, objects, image_size, margin):
    items = [_describe(rng, o) for o in objects]
    if len(items) == 1:
        return f"there is only one shape: {items[0]}"
    listed = ", ".join(items[:-1]) + " and " + items[-1]
    return f"there are {NUMBER_WORDS[len(items)]} shapes: {listed}"


def _cap_relation(rng, objects, image_size, margin):
    pairs = [
        (a, b, d)
        for a, b in product(objects, objects)
        for d in DIRECTIONS
        if a is not b and side_offset(a, b, d) > 2 * margin
    ]
    if not pairs:
        return None
    a, b, d = pick(rng, pairs)
    rel = pick(rng, ("to the left of", "left of")) if d == "left" else d
    rel = pick(rng, ("to the right of", "right of")) if d == "right" else rel
    prefix = pick(rng, ("", "there is ", "a picture of "))
    return f"{prefix}{_describe(rng, a)} {rel} {_describe(rng, b)}"


def _cap_location(rng, objects, image_size, margin):
    obj = pick(rng, objects)
    return f"{_describe(rng, obj)} {_location(obj, image_size)}"


def _cap_groups(rng, objects, image_size, margin):
    key = pick(rng, ("shape", "color"))
    counts = Counter(getattr(o, key) for o in objects)
    parts = []
    for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        noun = (value + ("s" if n > 1 else "")) if key == "shape" else f"{value} shape{'s' if n > 1 else ''}"
        parts.append(f"{pick(rng, ('a', 'one')) if n == 1 else NUMBER_WORDS[n]} {noun}")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return listed + pick(rng, ("", " on a gray background", " on a plain background"))


def _cap_generic(rng, objects, image_size, margin):
    n = len(objects)
    if n == 1:
        obj = objects[0]
        return f"a single {noun_phrase({'size': obj.size, 'color': obj.color, 'shape': obj.shape})} on a gray background"
    colors = len({o.color for o in objects})
    adjective = "colorful" if colors > 1 else objects[0].color
    return pick(
        rng,
        (
            f"{NUMBER_WORDS[n]} {adjective} shapes on a gray background",
            f"a simple picture of {NUMBER_WORDS[n]} geometric shapes",
            f"an image with {NUMBER_WORDS[n]} {adjective} shapes",
        ),
    )


CAPTION_TEMPLATES = (_cap_inventory, _cap_relation, _cap_location, _cap_groups, _cap_generic)


def make_captions(
    rng: np.random.Generator,
    objects: list[ShapeObject],
    *,
    image_size: int,
    margin: float,
    count: int = CAPTIONS_PER_SCENE,
) -> list[str]:
    """``count`` distinct captions of a scene: the full caption first, then captions from ``CAPTION_TEMPLATES``.

    ``rng`` is the scene's own caption stream.
    """
    captions = [full_caption(objects, image_size)]
    for _ in range(8):
        if len(captions) >= count:
            break
        for k in rng.permutation(len(CAPTION_TEMPLATES)):
            text = CAPTION_TEMPLATES[int(k)](rng, objects, image_size, margin)
            if text is not None and text not in captions:
                captions.append(text)
            if len(captions) == count:
                break
    while len(captions) < count:  # tiny scenes can run out of distinct templates
        obj = pick(rng, objects)
        captions.append(f"a gray image with {_describe(rng, obj)} {_location(obj, image_size)}")
    return captions[:count]
