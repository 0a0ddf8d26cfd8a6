"""An image classification folder: one sub-folder per class (``root/<class name>/*.png``), read into uint8 tensors.

When ``root/train/`` and ``root/val/`` both exist they are the splits (the classes: the sub-folders of ``train/``);
otherwise a seeded `val_fraction` of each class is held out. Files other than images (by extension) and loose files
beside the class folders are skipped.

Shapes: N images, S x S pixels.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from vlblocks.data.collate import stack_images
from vlblocks.data.image_io import load_image

__all__ = ["IMAGE_EXTS", "folder_items", "load_image_folder"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def folder_items(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image file, class index) of every image in ``folder/<class name>/``, class by class, files sorted."""
    files = [(sorted((folder / name).iterdir()), c) for c, name in enumerate(classes)]
    return [(f, c) for names, c in files for f in names if f.suffix.lower() in IMAGE_EXTS]


def _split(root: Path, val_fraction: float, seed: int) -> tuple[list[str], list, list]:
    """(classes, train items, val items) of a folder without train/ and val/: per class c, the items shuffled by
    ``random.Random(seed + c)``, the first ``round(n * val_fraction)`` (at least 1; none of a single image) held out."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    every = folder_items(root, classes)  # read once, class by class
    train_items, val_items = [], []
    for c in range(len(classes)):
        items = [it for it in every if it[1] == c]
        random.Random(seed + c).shuffle(items)
        k = max(1, round(len(items) * val_fraction)) if len(items) > 1 else 0
        val_items, train_items = val_items + items[:k], train_items + items[k:]
    return classes, train_items, val_items


def load_image_folder(
    root: str | Path, size: int, *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """({"images": uint8 (N, 3, S, S), "labels": int64 (N,)} of the train and the val split, the class names
    (sorted folder names; a label indexes them)). Images are resized to `size` by `stack_images`.

    Raises:
        ValueError: fewer than 2 class folders, or a split without images (the message starts with `root`).
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        train_items, val_items = folder_items(root / "train", classes), folder_items(root / "val", classes)
    else:
        classes, train_items, val_items = _split(root, val_fraction, seed)
    if len(classes) < 2 or not train_items or not val_items:
        raise ValueError(f"{root}: need >= 2 class folders with images in train and val")
    images = [stack_images([load_image(f) for f, _ in it], size) for it in (train_items, val_items)]
    labels = [torch.tensor([c for _, c in it]) for it in (train_items, val_items)]
    train, val = ({"images": x, "labels": y} for x, y in zip(images, labels))  # (N, 3, S, S) uint8, (N,)
    return train, val, classes
