"""ShapesWorld: a seeded, offline synthetic world of coloured shapes that serves every task of vlblocks.

In the spirit of the synthetic diagnostic worlds of Johnson et al., "CLEVR" (CVPR 2017) and Kuhnle & Copestake,
"ShapeWorld" (2017), sized so that every recipe trains in minutes on a CPU. Each scene holds 1-5 non-overlapping
objects (circle / square / triangle, six colours, two sizes) on a gray background. Every concern of a scene draws
from its own random stream ``numpy.random.default_rng([seed, crc32(split), scene, concern])`` (layout, pixel
noise, captions, questions), so scene i is the same whatever ``num_scenes`` is, and a new caption template or
question type changes no image and no other scene. Generation is lazy: the layouts (objects and their pixels)
are placed at construction; images and masks are rendered on first use of ``images`` / ``masks``, captions and
questions are written on first use, so a task builds only what it reads. Tasks read the world through the views
of ``vlblocks.data.shapes.tasks`` and ``export`` writes the real datasets' formats.

Shape legend: N scenes, S image side; images are (N, 3, S, S) uint8 and masks (N, S, S) uint8.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vlblocks._checks import check_choice, check_int
from vlblocks.data.shapes.captions import full_caption, make_captions
from vlblocks.data.shapes.objects import COLORS, RADIUS, SHAPES, ShapeObject
from vlblocks.data.shapes.questions import QUESTION_TYPES, make_questions
from vlblocks.data.shapes.render import BACKGROUND, Layout, add_noise, make_layout, paint

if TYPE_CHECKING:
    from vlblocks.data.shapes.export import ShapesExport
    from vlblocks.data.shapes.tasks import (
        ShapesCaptions,
        ShapesClassification,
        ShapesRetrieval,
        ShapesSegmentation,
        ShapesVQA,
    )

__all__ = ["MASK_CLASSES", "SPLITS", "Scene", "ShapesWorld"]

SPLITS = {"train": 4000, "val": 500, "test": 500}  # split -> default number of scenes
MASK_CLASSES = ("shape", "color_shape", "instance")
_LAYOUT, _PIXELS, _CAPTIONS, _QUESTIONS = 0, 1, 2, 3  # concern ids of the per-scene random streams


@dataclass
class Scene:
    """One ShapesWorld scene: image (PIL RGB), mask (S, S) uint8 shape classes, objects, captions, questions."""

    image_id: int
    image: Image.Image
    mask: np.ndarray
    objects: list[ShapeObject]
    captions: list[str]
    questions: list[dict]


class ShapesWorld:
    """A deterministic world of ``num_scenes`` scenes for one split.

    Args:
        split: "train", "val" or "test"; each split has its own streams, derived from ``(seed, split)``.
        num_scenes: number of scenes (default: train 4000, val 500, test 500).
        image_size: image side S in pixels, 32..224.
        seed: base seed (an int >= 0).
        min_objects, max_objects: objects per scene are drawn uniformly in this range (1 <= min <= max <= 8);
            an object with no free spot is left out, so a crowded small image can hold fewer.
        questions_per_scene: Q questions per scene (types balanced within each scene).

    Attributes:
        images: (N, 3, S, S) uint8 tensor, rendered on first use. masks: (N, S, S) uint8 shape classes
        (0 background, 1 + index in ``SHAPES``), rendered on first use. classes: mask class names.
        built: the concerns generated so far (``"layout"``, ``"images"``, ``"captions"``, ``"questions"``).
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
        check_choice("split", split, tuple(SPLITS))
        self.split = split
        self.num_scenes = check_int("num_scenes", SPLITS[split] if num_scenes is None else num_scenes, low=1)
        self.image_size = check_int("image_size", image_size, low=32, high=224)
        self.seed = check_int("seed", seed, low=0)
        self.min_objects = check_int("min_objects", min_objects, low=1, high=8)
        self.max_objects = check_int("max_objects", max_objects, low=self.min_objects, high=8)
        self.questions_per_scene = check_int("questions_per_scene", questions_per_scene, low=1, high=100)
        self.margin = RADIUS["small"] * image_size  # relation threshold, see objects.relation_target
        self._split_code = zlib.crc32(split.encode())  # stable across processes, unlike hash()
        self._layouts: list[Layout] = [self._make_layout(i) for i in range(self.num_scenes)]
        self._images: torch.Tensor | None = None
        self._instances: np.ndarray | None = None
        self._masks: torch.Tensor | None = None
        self._captions: list[list[str]] | None = None
        self._questions: list[list[dict]] | None = None

    # ------------------------------------------------------------------------------------------ generation
    def _rng(self, index: int, concern: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._split_code, index, concern])

    def _make_layout(self, index: int) -> Layout:
        rng = self._rng(index, _LAYOUT)
        return make_layout(rng, int(rng.integers(self.min_objects, self.max_objects + 1)), self.image_size)

    def _render(self) -> None:
        n, s = self.num_scenes, self.image_size
        images = np.full((n, s, s, 3), BACKGROUND, dtype=np.uint8)
        self._instances = np.zeros((n, s, s), dtype=np.uint8)
        for i, layout in enumerate(self._layouts):
            paint(layout, images[i], self._instances[i])
        for start in range(0, n, 256):  # noise in chunks: image i from its own pixel stream
            stop = min(n, start + 256)
            add_noise(images[start:stop], [self._rng(i, _PIXELS) for i in range(start, stop)])
        self._images = (
            torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        )  # (N, S, S, 3) -> (N, 3, S, S)

    def _caption_table(self) -> list[list[str]]:
        if self._captions is None:
            self._captions = [
                make_captions(self._rng(i, _CAPTIONS), list(layout.objects), image_size=self.image_size,
                              margin=self.margin)
                for i, layout in enumerate(self._layouts)
            ]  # fmt: skip
        return self._captions

    def _question_table(self) -> list[list[dict]]:
        if self._questions is None:
            self._questions = [
                make_questions(
                    self._rng(i, _QUESTIONS),
                    list(layout.objects),
                    image_id=self.image_id(i),
                    count=self.questions_per_scene,
                    margin=self.margin,
                )
                for i, layout in enumerate(self._layouts)
            ]
        return self._questions

    @property
    def built(self) -> frozenset[str]:
        """The concerns generated so far: "layout" always, then "images", "captions", "questions" on first use."""
        done = {"layout"}
        done |= {"images"} if self._images is not None else set()
        done |= {"captions"} if self._captions is not None else set()
        return frozenset(done | ({"questions"} if self._questions is not None else set()))

    @property
    def images(self) -> torch.Tensor:
        """(N, 3, S, S) uint8, rendered on first use."""
        if self._images is None:
            self._render()
        return self._images  # type: ignore[return-value]

    @property
    def masks(self) -> torch.Tensor:
        """(N, S, S) uint8 shape classes: 0 background, 1 + ``SHAPES.index(shape)``; rendered on first use."""
        if self._masks is None:
            self._masks = torch.from_numpy(np.stack([self.mask(i) for i in range(self.num_scenes)]))
        return self._masks

    # ----------------------------------------------------------------------------------------- scene access
    def __len__(self) -> int:
        return self.num_scenes

    def __repr__(self) -> str:
        return (
            f"ShapesWorld(split={self.split!r}, num_scenes={self.num_scenes}, image_size={self.image_size}, "
            f"seed={self.seed}, objects={self.min_objects}..{self.max_objects}, "
            f"questions_per_scene={self.questions_per_scene})"
        )

    def _check_index(self, index: object) -> int:
        index = check_int("index", index)
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"index must be in [0, {self.num_scenes}), got {index}")
        return index

    def image_id(self, index: int) -> int:
        """COCO-style image id of scene ``index`` (1-based)."""
        return index + 1

    def file_name(self, index: int) -> str:
        """COCO-style file name of scene ``index`` in an export, e.g. ``COCO_train2014_000000000001.png``."""
        from vlblocks.data.shapes.export import export_split

        return f"COCO_{export_split(self.split)}_{self.image_id(index):012d}.png"

    def objects(self, index: int) -> list[ShapeObject]:
        """The objects of scene ``index``, in drawing order (instance k + 1 of the instance mask is object k)."""
        return list(self._layouts[self._check_index(index)].objects)

    def scene_captions(self, index: int) -> list[str]:
        """The captions of scene ``index``; the first is the full caption."""
        return list(self._caption_table()[self._check_index(index)])

    def full_caption(self, index: int) -> str:
        """The caption naming every object of scene ``index`` with size, colour, shape and grid position."""
        return full_caption(list(self._layouts[self._check_index(index)].objects), self.image_size)

    def scene_questions(self, index: int) -> list[dict]:
        """Copies of the question items (without image) of scene ``index``."""
        return [dict(q, answers=list(q["answers"])) for q in self._question_table()[self._check_index(index)]]

    def mask(self, index: int, classes: str = "shape") -> np.ndarray:
        """(S, S) uint8 mask of scene ``index`` with ``classes`` "shape", "color_shape" or "instance".

        "shape": 0 background, 1 + shape index; "color_shape": 0 background, 1 + color index * 3 + shape index;
        "instance": 0 background, k + 1 for the k-th object of ``objects(index)``.
        """
        index = self._check_index(index)
        check_choice("classes", classes, MASK_CLASSES)
        if self._instances is None:
            self._render()
        instances = self._instances[index]  # type: ignore[index]
        if classes == "instance":
            return instances.copy()
        lut = np.zeros(len(self._layouts[index].objects) + 1, dtype=np.uint8)  # instance id -> class id
        for k, o in enumerate(self._layouts[index].objects):
            shape = SHAPES.index(o.shape)
            lut[k + 1] = 1 + (
                shape if classes == "shape" else self.colors.index(o.color) * len(SHAPES) + shape
            )
        return lut[instances]

    def central_object(self, index: int) -> ShapeObject:
        """The object whose centre is nearest the image centre (ties, of measure zero, go to the first drawn).

        Defines the classification label (its shape): shapes are drawn independently of positions, so the three
        classes are about equally frequent.
        """
        objects = self._layouts[self._check_index(index)].objects
        mid = self.image_size / 2
        return min(objects, key=lambda o: (o.center[0] - mid) ** 2 + (o.center[1] - mid) ** 2)

    def scene(self, index: int) -> Scene:
        """Scene ``index`` (0 <= index < len) with a PIL image and copies of its annotations."""
        index = self._check_index(index)
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())  # (3, S, S) -> (S, S, 3)
        return Scene(
            image_id=self.image_id(index),
            image=image,
            mask=self.mask(index),
            objects=self.objects(index),
            captions=self.scene_captions(index),
            questions=self.scene_questions(index),
        )

    # ------------------------------------------------------------------------------------------ task views
    def vqa(self) -> ShapesVQA:
        """Question items ({"image": uint8 (3, S, S), "question", "answers" (10), "answer", ...}), about N * Q."""
        from vlblocks.data.shapes.tasks import ShapesVQA

        return ShapesVQA(self)

    def captions(self, *, per_image: bool = False) -> ShapesCaptions:
        """(image, caption) items, N * 5 long; ``per_image=True``: one item per image (for evaluation)."""
        from vlblocks.data.shapes.tasks import ShapesCaptions

        return ShapesCaptions(self, per_image=per_image)

    def segmentation(self, classes: str = "shape") -> ShapesSegmentation:
        """{"image": uint8 (3, S, S), "mask": long (S, S), "image_id"} items; ``classes`` as in ``mask``."""
        from vlblocks.data.shapes.tasks import ShapesSegmentation

        return ShapesSegmentation(self, classes=classes)

    def classification(self) -> ShapesClassification:
        """{"image", "label": int, "image_id"} items; label = shape of the object nearest the centre."""
        from vlblocks.data.shapes.tasks import ShapesClassification

        return ShapesClassification(self)

    def retrieval(self) -> ShapesRetrieval:
        """Image-text pairs {"image", "image_id", "caption" (the full caption), "captions" (all)}, one per image."""
        from vlblocks.data.shapes.tasks import ShapesRetrieval

        return ShapesRetrieval(self)

    def export(self, folder: str | Path, *, mask_classes: str = "shape") -> ShapesExport:
        """Write the VQA v2 / COCO captions layout (JSON + PNG images and ``mask_classes`` masks) under ``folder``.

        See ``vlblocks.data.shapes.export``; ``VQAv2Dataset.from_root(folder, split)`` and ``CocoCaptions`` read it.
        """
        from vlblocks.data.shapes.export import export_world

        return export_world(self, folder, mask_classes=mask_classes)
