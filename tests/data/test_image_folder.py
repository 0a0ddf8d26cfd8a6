"""load_image_folder: class sub-folders, train/ + val/ splits or a seeded per-class hold-out, non-images skipped."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlblocks.data.image_folder import load_image_folder


def write_class(folder: Path, n: int, value: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((10 + i, 12, 3), value, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "readme.txt").write_text("not an image")


def test_train_and_val_folders_are_the_splits(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        write_class(tmp_path / split / "zebra", n, 200)
        write_class(tmp_path / split / "ant", n, 50)
    train, val, classes = load_image_folder(tmp_path, 16)
    assert classes == ["ant", "zebra"]
    assert train["images"].shape == (6, 3, 16, 16) and train["images"].dtype == torch.uint8
    assert train["labels"].tolist() == [0, 0, 0, 1, 1, 1] and val["labels"].tolist() == [0, 0, 1, 1]
    assert (train["images"][:3] == 50).all() and (
        train["images"][3:] == 200
    ).all()  # label follows the folder


def test_a_seeded_fraction_of_each_class_is_held_out(tmp_path: Path) -> None:
    write_class(tmp_path / "a", 10, 10)
    write_class(tmp_path / "b", 5, 20)
    write_class(tmp_path / "c", 1, 30)  # a single image stays in train
    (tmp_path / "loose.png").write_bytes(b"")  # a file beside the class folders is no class
    train, val, classes = load_image_folder(tmp_path, 8, val_fraction=0.2, seed=1)
    assert classes == ["a", "b", "c"]
    assert val["labels"].tolist() == [0, 0, 1] and train["labels"].tolist() == [0] * 8 + [1] * 4 + [2]
    again = load_image_folder(tmp_path, 8, val_fraction=0.2, seed=1)[1]
    assert torch.equal(again["images"], val["images"])  # the same seed: the same split


def test_the_split_depends_on_the_seed(tmp_path: Path) -> None:
    write_class(tmp_path / "a", 12, 0)
    write_class(tmp_path / "b", 12, 255)
    for i in range(12):  # images told apart by a pixel value
        Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(tmp_path / "a" / f"{i:02d}.png")
    picks = {
        s: load_image_folder(tmp_path, 8, val_fraction=0.25, seed=s)[1]["images"][:3, 0, 0, 0]
        for s in range(4)
    }
    assert len({tuple(v.tolist()) for v in picks.values()}) > 1
    assert all(len(v) == 3 for v in picks.values())


def test_each_class_is_shuffled_by_its_own_seed(tmp_path: Path) -> None:
    """The documented rule (class c shuffled by ``random.Random(seed + c)``), which keeps earlier runs' splits."""
    for c, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for i in range(10):  # image i of class c: pixel value 100 c + 10 i
            Image.fromarray(np.full((8, 8, 3), 100 * c + 10 * i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    val = load_image_folder(tmp_path, 8, val_fraction=0.3, seed=5)[1]
    expected = []
    for c in range(2):
        order = list(range(10))
        random.Random(5 + c).shuffle(order)
        expected += [100 * c + 10 * i for i in order[:3]]
    assert val["images"][:, 0, 0, 0].tolist() == expected
    assert [v % 100 for v in expected[:3]] != [v % 100 for v in expected[3:]]  # control: the classes differ


@pytest.mark.parametrize("classes", [1, 0])
def test_fewer_than_two_classes_is_refused(tmp_path: Path, classes: int) -> None:
    for c in range(classes):
        write_class(tmp_path / f"c{c}", 3, 0)
    with pytest.raises(ValueError, match=f"{tmp_path}: need >= 2 class folders"):
        load_image_folder(tmp_path, 8)
