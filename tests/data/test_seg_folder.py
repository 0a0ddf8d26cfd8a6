"""load_segmentation_folder: images/ + masks/ PNG class ids, every tenth file for validation, resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlblocks.data import load_segmentation_folder


def write_folder(root, n: int = 12) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(n):
        Image.fromarray(np.full((20, 30, 3), k, dtype=np.uint8)).save(
            root / "images" / f"{k:02d}.jpg", quality=100
        )
        mask = np.zeros((20, 30), dtype=np.uint8)
        mask[:, 15:] = k  # right half: class k
        mask[0, 0] = 255
        Image.fromarray(mask).save(root / "masks" / f"{k:02d}.png")


def test_splits_sizes_and_mask_values(tmp_path):
    write_folder(tmp_path)
    images, masks = load_segmentation_folder(tmp_path, image_size=16, val=False)
    val_images, val_masks = load_segmentation_folder(tmp_path, image_size=16, val=True)
    assert images.shape == (11, 3, 16, 16) and masks.shape == (11, 16, 16) and val_images.shape[0] == 1
    assert images.dtype.is_floating_point is False and masks.dtype.is_floating_point is False
    assert set(val_masks[0].unique().tolist()) == {0, 9, 255}  # the 10th file (09); nearest keeps class ids
    assert set(masks[3].unique().tolist()) == {0, 3, 255}


def test_missing_images_or_masks_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        load_segmentation_folder(tmp_path, image_size=16, val=False)
    write_folder(tmp_path, n=3)
    (tmp_path / "masks" / "01.png").unlink()
    with pytest.raises(FileNotFoundError, match="01.jpg has no mask"):
        load_segmentation_folder(tmp_path, image_size=16, val=False)
