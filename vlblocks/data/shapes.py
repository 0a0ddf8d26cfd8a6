"""ShapesWorld: a seeded, offline synthetic dataset of coloured shapes with masks, captions and VQA questions.

In the spirit of the synthetic diagnostic worlds of Johnson et al., "CLEVR" (CVPR 2017) and Kuhnle & Copestake,
"ShapeWorld" (2017), sized so that every recipe of vlblocks trains in minutes on a CPU. Each scene is an RGB image
(plain gray background with slight seeded noise) holding 1-5 non-overlapping objects (circle / square /
triangle, six colours, two sizes), a per-pixel class mask (0 background, 1 + index in ``SHAPES``), five captions
and VQA v2-style questions with ten human-style answers (see ``vlblocks.data.shapes_questions`` for the
language). Scenes are rendered once at construction and kept as one uint8 tensor, so data loading costs nothing.
``export`` writes the official VQA v2 / COCO captions JSON files plus PNG images, so the same readers
(``VQAv2Dataset``, ``CocoCaptions``) load ShapesWorld and the real datasets.

Shape legend: N scenes, S image side, Q questions per scene; images are (N, 3, S, S) uint8 and masks (N, S, S) uint8.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlblocks.data.shapes_questions import (
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    ShapeObject,
    make_captions,
    make_questions,
)

__all__ = [
    "Scene",
    "ShapesCaptions",
    "ShapesExport",
    "ShapesSegmentation",
    "ShapesVQA",
    "ShapesWorld",
]

_DEFAULT_SCENES = {"train": 4000, "val": 500, "test": 500}
_BACKGROUND = 110  # gray level of the background
_NOISE = 6  # +- uniform pixel noise
_RADIUS = {"small": 0.09, "large": 0.15}  # radius as a fraction of the image side
_EXTENT = {
    "circle": 1.0,
    "square": 0.85 * 2**0.5,
    "triangle": (1.1**2 + 0.75**2) ** 0.5,
}  # bounding radius / r
_COLOR_NAMES = tuple(COLORS)
_MAX_TRIES = 100  # rejection-sampling tries per object; an object that does not fit is left out


@dataclass
class Scene:
    """One ShapesWorld scene: image (PIL RGB), mask (S, S) uint8 class ids, objects, captions, questions."""

    image_id: int
    image: Image.Image
    mask: np.ndarray
    objects: list[ShapeObject]
    captions: list[str]
    questions: list[dict]


@dataclass(frozen=True)
class ShapesExport:
    """Paths written by ``ShapesWorld.export``; ``image_name`` is the pattern to give ``VQAv2Dataset``."""

    root: Path
    image_dir: Path
    mask_dir: Path
    questions_json: Path
    annotations_json: Path
    captions_json: Path
    image_name: str


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of the pixels of a shape of radius ``r``; dx, dy are pixel-centre offsets from its centre.

    Areas are kept comparable (circle 3.1 r^2, square 2.9 r^2, triangle 2.0 r^2); every pixel lies within
    ``_EXTENT[shape] * r`` of the centre, which placement uses to keep objects apart.
    """
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    # triangle pointing up: apex at (0, -1.1 r), base from (-1.1 r, 0.75 r) to (1.1 r, 0.75 r)
    return (dy <= 0.75 * r) & (dy >= -1.1 * r) & (np.abs(dx) <= (dy + 1.1 * r) / 1.85 * 1.1)


def _sample_layout(
    rng: np.random.Generator, n: int, size: int
) -> list[tuple[str, str, str, float, float, float]]:
    """Up to ``n`` objects (shape, color, size, cx, cy, r) whose bounding circles keep a gap between them.

    Rejection sampling with ``_MAX_TRIES`` candidate centres per object; an object with no free spot is left out.
    """
    placed: list[tuple[str, str, str, float, float, float]] = []
    extents: list[tuple[float, float, float]] = []
    gap = 0.04 * size
    for _ in range(n):
        u = rng.random(3)
        shape, color = SHAPES[int(u[0] * len(SHAPES))], _COLOR_NAMES[int(u[1] * len(_COLOR_NAMES))]
        size_name = SIZES[int(u[2] * len(SIZES))]
        r = _RADIUS[size_name] * size
        extent = _EXTENT[shape] * r
        tries = rng.uniform(extent + 1, size - extent - 1, size=(_MAX_TRIES, 2))  # (T, 2) candidate centres
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


def _render(layout: list, image: np.ndarray, mask: np.ndarray) -> list[ShapeObject]:
    """Paint a layout into image (S, S, 3) uint8 and mask (S, S) uint8 (zeros); return objects with pixel bboxes."""
    size = mask.shape[0]
    objects = []
    for shape, color, size_name, cx, cy, r in layout:
        e = _EXTENT[shape] * r
        x0, y0 = max(0, int(cx - e) - 1), max(0, int(cy - e) - 1)
        x1, y1 = min(size, int(cx + e) + 2), min(size, int(cy + e) + 2)
        dx = np.arange(x0, x1)[None, :] + 0.5 - cx  # (1, w) pixel-centre offsets of the window
        dy = np.arange(y0, y1)[:, None] + 0.5 - cy  # (h, 1)
        inside = _inside(shape, dx, dy, r)  # (h, w)
        image[y0:y1, x0:x1][inside] = COLORS[color]
        mask[y0:y1, x0:x1][inside] = SHAPES.index(shape) + 1
        cols, rows = np.flatnonzero(inside.any(0)), np.flatnonzero(inside.any(1))
        bbox = (
            x0 + int(cols[0]),
            y0 + int(rows[0]),
            int(cols[-1] - cols[0]) + 1,
            int(rows[-1] - rows[0]) + 1,
        )
        objects.append(ShapeObject(shape, color, size_name, (cx, cy), r, bbox))
    return objects


def _add_noise(rng: np.random.Generator, images: np.ndarray, chunk: int = 256) -> None:
    """Add seeded uniform noise in [-_NOISE, _NOISE] to (N, S, S, 3) uint8 images in place."""
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk]
        noise = rng.integers(-_NOISE, _NOISE + 1, size=block.shape, dtype=np.int16)
        block[...] = np.clip(block.astype(np.int16) + noise, 0, 255)


class ShapesWorld:
    """A deterministic world of ``num_scenes`` scenes for one split.

    Args:
        split: "train", "val" or "test"; splits use disjoint seeds derived from ``(seed, split)``.
        num_scenes: number of scenes (default: train 4000, val 500, test 500).
        image_size: image side S in pixels, 32..224.
        seed: base seed (a non-negative int).
        min_objects, max_objects: objects per scene are drawn uniformly in this range (1 <= min <= max <= 8);
            the default 1..5 averages about 3 objects per scene.
        questions_per_scene: Q questions per scene (types rotated so each type gets about Q / 5 of them).

    Attributes:
        images: (N, 3, S, S) uint8 tensor. masks: (N, S, S) uint8 tensor. classes: mask class names.
    """

    classes = ("background", *SHAPES)
    colors = tuple(COLORS)
    question_types = QUESTION_TYPES

    def __init__(
        self,
        split: str = "train",
        *,
        num_scenes: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 5,
        questions_per_scene: int = 5,
    ) -> None:
        if split not in _DEFAULT_SCENES:
            raise ValueError(f"split must be one of {tuple(_DEFAULT_SCENES)}, got {split!r}")
        num_scenes = _DEFAULT_SCENES[split] if num_scenes is None else num_scenes
        _check_int("num_scenes", num_scenes, 1, None)
        _check_int("image_size", image_size, 32, 224)
        _check_int("seed", seed, 0, None)
        _check_int("min_objects", min_objects, 1, 8)
        _check_int("max_objects", max_objects, min_objects, 8)
        _check_int("questions_per_scene", questions_per_scene, 1, 100)
        self.split, self.num_scenes, self.image_size, self.seed = split, num_scenes, image_size, seed
        self.min_objects, self.max_objects, self.questions_per_scene = (
            min_objects,
            max_objects,
            questions_per_scene,
        )
        self.margin = _RADIUS["small"] * image_size  # relation threshold, see shapes_questions
        self._generate()

    def _generate(self) -> None:
        n, s = self.num_scenes, self.image_size
        images = np.full((n, s, s, 3), _BACKGROUND, dtype=np.uint8)
        self._masks = np.zeros((n, s, s), dtype=np.uint8)
        self._objects: list[list[ShapeObject]] = []
        self._captions: list[list[str]] = []
        self._questions: list[list[dict]] = []
        type_counts: Counter = Counter()  # running question-type counts that balance the types over the split
        # one stream per (seed, split) for the scenes and one for the pixel noise; crc32 is stable across
        # processes, unlike hash()
        split_code = zlib.crc32(self.split.encode())
        rng = np.random.default_rng([self.seed, split_code, 0])
        for i in range(n):
            count = int(rng.integers(self.min_objects, self.max_objects + 1))
            layout = _sample_layout(rng, count, s)
            objects = _render(layout, images[i], self._masks[i])
            self._objects.append(objects)
            self._captions.append(make_captions(rng, objects, image_size=s, margin=self.margin))
            self._questions.append(
                make_questions(
                    rng,
                    objects,
                    image_id=i + 1,
                    count=self.questions_per_scene,
                    margin=self.margin,
                    type_counts=type_counts,
                )
            )
        _add_noise(np.random.default_rng([self.seed, split_code, 1]), images)
        self.images = (
            torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        )  # (N, S, S, 3) -> (N, 3, S, S)
        self.masks = torch.from_numpy(self._masks)

    def __len__(self) -> int:
        return self.num_scenes

    def __repr__(self) -> str:
        return (
            f"ShapesWorld(split={self.split!r}, num_scenes={self.num_scenes}, image_size={self.image_size}, "
            f"seed={self.seed}, objects={self.min_objects}..{self.max_objects}, "
            f"questions_per_scene={self.questions_per_scene})"
        )

    def image_id(self, index: int) -> int:
        """COCO-style image id of scene ``index`` (1-based)."""
        return index + 1

    def file_name(self, index: int) -> str:
        """COCO-style file name of scene ``index``, e.g. ``COCO_shapes-train_000000000001.png``."""
        return f"COCO_shapes-{self.split}_{self.image_id(index):012d}.png"

    def scene(self, index: int) -> Scene:
        """Scene ``index`` (0 <= index < len) with a PIL image and copies of its annotations."""
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"index must be in [0, {self.num_scenes}), got {index}")
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())  # (3, S, S) -> (S, S, 3)
        return Scene(
            image_id=self.image_id(index),
            image=image,
            mask=self._masks[index].copy(),
            objects=list(self._objects[index]),
            captions=list(self._captions[index]),
            questions=[dict(q, answers=list(q["answers"])) for q in self._questions[index]],
        )

    def objects(self, index: int) -> list[ShapeObject]:
        """The objects of scene ``index``."""
        return list(self._objects[index])

    def vqa(self) -> ShapesVQA:
        """Dataset of question items ({"image": uint8 (3, S, S), "question", "answers", ...}), N * Q long."""
        return ShapesVQA(self)

    def captions(self, *, per_image: bool = False) -> ShapesCaptions:
        """Dataset of (image, caption) items, N * 5 long; ``per_image=True``: one item per image (for evaluation)."""
        return ShapesCaptions(self, per_image=per_image)

    def segmentation(self) -> ShapesSegmentation:
        """Dataset of {"image": uint8 (3, S, S), "mask": long (S, S), "image_id"} items."""
        return ShapesSegmentation(self)

    def export(self, folder: str | Path) -> ShapesExport:
        """Write images/ and masks/ PNGs plus VQA v2 questions / annotations and COCO captions JSON to ``folder``."""
        root = Path(folder)
        image_dir, mask_dir = root / "images", root / "masks"
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.num_scenes):
            Image.fromarray(self.images[i].permute(1, 2, 0).numpy()).save(image_dir / self.file_name(i))
            Image.fromarray(self._masks[i], mode="L").save(mask_dir / self.file_name(i))
        subtype = f"shapes-{self.split}"
        header = {
            "info": {"description": "ShapesWorld (vlblocks)", "seed": self.seed},
            "data_subtype": subtype,
        }
        questions, annotations = [], []
        for qs in self._questions:
            for q in qs:
                questions.append({k: q[k] for k in ("image_id", "question", "question_id")})
                answers = [
                    {
                        "answer": a,
                        "answer_confidence": "yes" if a == q["answer"] else "maybe",
                        "answer_id": k + 1,
                    }
                    for k, a in enumerate(q["answers"])
                ]
                ann = {k: q[k] for k in ("question_id", "image_id", "question_type", "answer_type")}
                annotations.append({**ann, "multiple_choice_answer": q["answer"], "answers": answers})
        images = [
            {
                "id": self.image_id(i),
                "file_name": self.file_name(i),
                "height": self.image_size,
                "width": self.image_size,
            }
            for i in range(self.num_scenes)
        ]
        captions = [
            {"id": i * 10 + k, "image_id": self.image_id(i), "caption": c}
            for i, caps in enumerate(self._captions)
            for k, c in enumerate(caps)
        ]
        out = ShapesExport(
            root=root,
            image_dir=image_dir,
            mask_dir=mask_dir,
            questions_json=root / f"shapes_{self.split}_questions.json",
            annotations_json=root / f"shapes_{self.split}_annotations.json",
            captions_json=root / f"captions_shapes-{self.split}.json",
            image_name="COCO_{split}_{image_id:012d}.png",
        )
        out.questions_json.write_text(json.dumps({**header, "questions": questions}))
        out.annotations_json.write_text(json.dumps({**header, "annotations": annotations}))
        out.captions_json.write_text(
            json.dumps({"info": header["info"], "images": images, "annotations": captions})
        )
        return out


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


class ShapesVQA(Dataset):
    """Question items of a ShapesWorld: {"image": uint8 (3, S, S), "image_id", "question_id", "question",
    "answers" (10 str), "answer", "question_type", "answer_type"}."""

    def __init__(self, world: ShapesWorld) -> None:
        self.world = world
        self._index = [(i, j) for i, qs in enumerate(world._questions) for j in range(len(qs))]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> dict:
        i, j = self._index[k]
        q = self.world._questions[i][j]
        return {"image": self.world.images[i], **q, "answers": list(q["answers"])}

    def answers(self) -> list[str]:
        """The most common raw answer of every question (for ``AnswerVocab.build``), without touching images."""
        return [self.world._questions[i][j]["answer"] for i, j in self._index]

    def records(self) -> list[dict]:
        """Every question item without its image (copies), in dataset order."""
        return [
            dict(q, answers=list(q["answers"])) for q in (self.world._questions[i][j] for i, j in self._index)
        ]


class ShapesCaptions(Dataset):
    """(image, caption) items {"image": uint8 (3, S, S), "image_id", "caption", "captions" (all 5)}; with
    ``per_image=True`` one item per image {"image", "image_id", "captions"} like ``CocoCaptions``."""

    def __init__(self, world: ShapesWorld, *, per_image: bool = False) -> None:
        self.world, self.per_image = world, per_image
        self._index = (
            [(i, -1) for i in range(len(world))]
            if per_image
            else [(i, k) for i, caps in enumerate(world._captions) for k in range(len(caps))]
        )

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> dict:
        i, c = self._index[k]
        item = {"image": self.world.images[i], "image_id": self.world.image_id(i)}
        item["captions"] = list(self.world._captions[i])
        if c >= 0:
            item["caption"] = self.world._captions[i][c]
        return item

    def references(self) -> dict[int, list[str]]:
        """image_id -> its captions (for caption metrics)."""
        return {self.world.image_id(i): list(c) for i, c in enumerate(self.world._captions)}


class ShapesSegmentation(Dataset):
    """Segmentation items {"image": uint8 (3, S, S), "mask": long (S, S) class ids, "image_id"}."""

    def __init__(self, world: ShapesWorld) -> None:
        self.world = world

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.world.images[i],
            "mask": self.world.masks[i].long(),
            "image_id": self.world.image_id(i),
        }
