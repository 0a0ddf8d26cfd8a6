"""Read-only task views of a ShapesWorld: VQA, captions, segmentation, classification and image-text retrieval.

Each view is a ``torch.utils.data.Dataset`` over one world; items are dicts that carry the image as a uint8 tensor
(3, S, S) sliced from the world's cache (so loading costs nothing) and ``image_id`` (1-based, COCO style). A view
reads only the concerns it needs (a segmentation view writes no question, a caption view's ``references`` renders
no image). The item forms follow the real readers: question items like ``VQAv2Dataset``, per-image caption items
like ``CocoCaptions``.

Shape legend: S image side; K answer classes.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from vlblocks._checks import check_choice
from vlblocks.data.shapes.objects import COLORS, SHAPES
from vlblocks.data.shapes.world import MASK_CLASSES, ShapesWorld

__all__ = [
    "ShapesCaptions",
    "ShapesClassification",
    "ShapesRetrieval",
    "ShapesSegmentation",
    "ShapesVQA",
    "mask_class_names",
]


def _check_world(world: object) -> ShapesWorld:
    if not isinstance(world, ShapesWorld):
        raise TypeError(f"world must be a ShapesWorld, got {type(world).__name__}")
    return world


def _scene_index(view: Dataset, index: object) -> int:
    """An item index in [-len, len) as a non-negative int (IndexError otherwise)."""
    from vlblocks._checks import check_int

    index = check_int("index", index)
    n = len(view)  # type: ignore[arg-type]
    if not -n <= index < n:
        raise IndexError(f"index must be in [-{n}, {n}), got {index}")
    return index % n


def mask_class_names(classes: str) -> tuple[str, ...]:
    """Class names of the masks with ``classes`` "shape", "color_shape" or "instance" (index 0: background)."""
    check_choice("classes", classes, MASK_CLASSES)
    if classes == "shape":
        return ("background", *SHAPES)
    if classes == "color_shape":
        return ("background", *(f"{c} {s}" for c in COLORS for s in SHAPES))
    return ("background", *(f"object {k}" for k in range(1, 9)))


class ShapesVQA(Dataset):
    """Question items ``{"image": uint8 (3, S, S), "image_id", "question_id", "question", "answers" (10 str),
    "answer" (the multiple-choice answer), "question_type", "answer_type"}``, scene by scene."""

    def __init__(self, world: ShapesWorld) -> None:
        self.world = _check_world(world)
        table = world._question_table()
        self._items = [q for questions in table for q in questions]
        self._scene = [i for i, questions in enumerate(table) for _ in questions]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, k: int) -> dict:
        k = _scene_index(self, k)
        q = self._items[k]
        return {"image": self.world.images[self._scene[k]], **q, "answers": list(q["answers"])}

    def answers(self) -> list[str]:
        """The multiple-choice answer of every question (for ``AnswerVocab.build``), without rendering images."""
        return [q["answer"] for q in self._items]

    def records(self) -> list[dict]:
        """Every question item without its image (copies), in dataset order."""
        return [dict(q, answers=list(q["answers"])) for q in self._items]


class ShapesCaptions(Dataset):
    """(image, caption) items ``{"image": uint8 (3, S, S), "image_id", "caption", "captions" (all 5)}``; with
    ``per_image=True`` one item per image ``{"image", "image_id", "captions"}`` like ``CocoCaptions``. The first
    caption of every scene is its full caption (``full_caption``)."""

    def __init__(self, world: ShapesWorld, *, per_image: bool = False) -> None:
        self.world, self.per_image = _check_world(world), bool(per_image)
        self._captions = world._caption_table()
        self._index = (
            [(i, -1) for i in range(len(world))]
            if self.per_image
            else [(i, k) for i, caps in enumerate(self._captions) for k in range(len(caps))]
        )

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> dict:
        i, c = self._index[_scene_index(self, k)]
        item = {
            "image": self.world.images[i],
            "image_id": self.world.image_id(i),
            "captions": list(self._captions[i]),
        }
        if c >= 0:
            item["caption"] = self._captions[i][c]
        return item

    def full_caption(self, scene: int) -> str:
        """The full caption of scene ``scene`` (0-based; image_id - 1): every object with size, colour, shape and
        3 x 3 grid position."""
        return self.world.full_caption(scene)

    def references(self) -> dict[int, list[str]]:
        """image_id -> its captions (the reference format of caption evaluation), without rendering images."""
        return {self.world.image_id(i): list(c) for i, c in enumerate(self._captions)}


class ShapesSegmentation(Dataset):
    """Segmentation items ``{"image": uint8 (3, S, S), "mask": long (S, S) class ids, "image_id"}``.

    ``classes``: "shape" (background + 3 shapes), "color_shape" (background + 18 colour-shape pairs) or
    "instance" (background + object k at k, k = 1..8 in the order of ``world.objects(i)``); ``class_names``
    names them (index 0 is "background").
    """

    def __init__(self, world: ShapesWorld, *, classes: str = "shape") -> None:
        self.world = _check_world(world)
        self.classes = check_choice("classes", classes, MASK_CLASSES)
        self.class_names = mask_class_names(classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> dict:
        i = _scene_index(self, i)
        if self.classes == "shape":
            mask = self.world.masks[i].long()
        else:
            import torch

            mask = torch.from_numpy(self.world.mask(i, self.classes)).long()
        return {"image": self.world.images[i], "mask": mask, "image_id": self.world.image_id(i)}


class ShapesClassification(Dataset):
    """Classification items ``{"image": uint8 (3, S, S), "label": int, "image_id"}``.

    The label is the index in ``class_names = SHAPES`` of the shape of the object whose centre is nearest the
    image centre (``ShapesWorld.central_object``; an exact tie, of measure zero, goes to the first object drawn).
    Shapes are drawn independently of positions, so the classes are about equally frequent.
    """

    class_names = SHAPES

    def __init__(self, world: ShapesWorld) -> None:
        self.world = _check_world(world)
        self._labels = [SHAPES.index(world.central_object(i).shape) for i in range(len(world))]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> dict:
        i = _scene_index(self, i)
        return {"image": self.world.images[i], "label": self._labels[i], "image_id": self.world.image_id(i)}

    def labels(self) -> list[int]:
        """The label of every scene, without rendering images."""
        return list(self._labels)


class ShapesRetrieval(Dataset):
    """Image-text pairs, one per image: ``{"image": uint8 (3, S, S), "image_id", "caption" (the full caption),
    "captions" (all 5, the full caption first)}``. Item i pairs image i with text i."""

    def __init__(self, world: ShapesWorld) -> None:
        self.world = _check_world(world)
        self._captions = world._caption_table()

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> dict:
        i = _scene_index(self, i)
        captions = self._captions[i]
        return {
            "image": self.world.images[i],
            "image_id": self.world.image_id(i),
            "caption": captions[0],
            "captions": list(captions),
        }

    def texts(self) -> list[str]:
        """The full caption of every scene, in item order, without rendering images."""
        return [c[0] for c in self._captions]
