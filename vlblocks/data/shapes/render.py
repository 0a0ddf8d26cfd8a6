"""ShapesWorld layout and rendering: placing non-overlapping objects and painting them with seeded pixel noise.

A layout draws the number of objects, then each object's shape, colour and size, and places it by rejection
sampling (``MAX_TRIES`` candidate centres) so that the bounding circles keep a gap of 0.04 S; an object with no
free spot is left out, so objects never touch. The pixels of an object (pixel centres inside the shape) are
computed once with the layout, which also gives the exact COCO bbox, so captions and questions never need the
image. Painting writes the objects' colours over a gray background (level 110) and an instance mask (0
background, k + 1 for the k-th object), then adds uniform noise in [-6, 6] from the scene's own pixel stream.

Shape legend: S image side; an image is (S, S, 3) uint8 and an instance mask (S, S) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlblocks.data.shapes.objects import COLORS, EXTENT, RADIUS, SHAPES, SIZES, ShapeObject

__all__ = ["BACKGROUND", "MAX_TRIES", "NOISE", "Layout", "add_noise", "make_layout", "paint"]

BACKGROUND = 110  # gray level of the background
NOISE = 6  # +- uniform pixel noise
MAX_TRIES = 100  # rejection-sampling tries per object; an object that does not fit is left out
_COLOR_NAMES = tuple(COLORS)
_COLOR_VALUES = np.array([COLORS[c] for c in _COLOR_NAMES], dtype=np.uint8)  # (6, 3)


@dataclass(frozen=True)
class Layout:
    """The objects of a scene and their pixels: ``windows[k] = (x0, y0, inside (h, w) bool)`` for object k."""

    objects: tuple[ShapeObject, ...]
    windows: tuple[tuple[int, int, np.ndarray], ...]


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of the pixels of a shape of radius ``r``; dx, dy are pixel-centre offsets from its centre.

    Areas are comparable (circle 3.1 r^2, square 2.9 r^2, triangle 2.0 r^2, see ``AREA``); every pixel lies
    within ``EXTENT[shape] * r`` of the centre.
    """
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    # triangle pointing up: apex at (0, -1.1 r), base from (-1.1 r, 0.75 r) to (1.1 r, 0.75 r)
    return (dy <= 0.75 * r) & (dy >= -1.1 * r) & (np.abs(dx) <= (dy + 1.1 * r) / 1.85 * 1.1)


def _place(
    rng: np.random.Generator, count: int, size: int
) -> list[tuple[str, str, str, float, float, float]]:
    """Up to ``count`` objects (shape, color, size, cx, cy, r) whose bounding circles keep a gap between them."""
    placed: list[tuple[str, str, str, float, float, float]] = []
    extents: list[tuple[float, float, float]] = []
    gap = 0.04 * size
    for _ in range(count):
        u = rng.random(3)
        shape, color = SHAPES[int(u[0] * len(SHAPES))], _COLOR_NAMES[int(u[1] * len(_COLOR_NAMES))]
        size_name = SIZES[int(u[2] * len(SIZES))]
        r = RADIUS[size_name] * size
        extent = EXTENT[shape] * r
        tries = rng.uniform(extent + 1, size - extent - 1, size=(MAX_TRIES, 2))  # (T, 2) candidate centres
        if extents:
            others = np.array(extents)  # (P, 3) centre x, y and extent of the placed objects
            dist2 = ((tries[:, None, :] - others[None, :, :2]) ** 2).sum(-1)  # (T, P)
            ok = (dist2 >= (extent + others[None, :, 2] + gap) ** 2).all(1)  # (T,)
            if not ok.any():
                continue  # no room left: leave this object out
            tries = tries[ok]
        cx, cy = float(tries[0, 0]), float(tries[0, 1])
        placed.append((shape, color, size_name, cx, cy, float(r)))
        extents.append((cx, cy, extent))
    return placed


def make_layout(rng: np.random.Generator, count: int, image_size: int) -> Layout:
    """Place up to ``count`` objects in an S x S image and compute their pixels and tight bboxes."""
    objects, windows = [], []
    for shape, color, size_name, cx, cy, r in _place(rng, count, image_size):
        e = EXTENT[shape] * r
        x0, y0 = max(0, int(cx - e) - 1), max(0, int(cy - e) - 1)
        x1, y1 = min(image_size, int(cx + e) + 2), min(image_size, int(cy + e) + 2)
        dx = np.arange(x0, x1)[None, :] + 0.5 - cx  # (1, w) pixel-centre offsets of the window
        dy = np.arange(y0, y1)[:, None] + 0.5 - cy  # (h, 1)
        inside = _inside(shape, dx, dy, r)  # (h, w)
        cols, rows = np.flatnonzero(inside.any(0)), np.flatnonzero(inside.any(1))
        bbox = (
            x0 + int(cols[0]),
            y0 + int(rows[0]),
            int(cols[-1] - cols[0]) + 1,
            int(rows[-1] - rows[0]) + 1,
        )
        objects.append(ShapeObject(shape, color, size_name, (cx, cy), r, bbox))
        windows.append((x0, y0, inside))
    return Layout(tuple(objects), tuple(windows))


def paint(layout: Layout, image: np.ndarray, instances: np.ndarray) -> None:
    """Paint ``layout`` into ``image`` (S, S, 3) uint8, already filled with the background, and ``instances``
    (S, S) uint8 zeros, which gets k + 1 on the pixels of object k."""
    for k, (obj, (x0, y0, inside)) in enumerate(zip(layout.objects, layout.windows)):
        h, w = inside.shape
        image[y0 : y0 + h, x0 : x0 + w][inside] = _COLOR_VALUES[_COLOR_NAMES.index(obj.color)]
        instances[y0 : y0 + h, x0 : x0 + w][inside] = k + 1


def add_noise(images: np.ndarray, rngs: list[np.random.Generator]) -> None:
    """Add uniform noise in [-NOISE, NOISE] to images (n, S, S, 3) uint8 in place, image j from ``rngs[j]``."""
    noise = np.stack([rng.integers(-NOISE, NOISE + 1, size=images.shape[1:], dtype=np.int16) for rng in rngs])
    np.clip(images.astype(np.int16) + noise, 0, 255, out=noise)  # (n, S, S, 3)
    images[...] = noise
