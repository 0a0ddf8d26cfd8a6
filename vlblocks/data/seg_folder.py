"""An image + mask folder for semantic segmentation: ``images/`` and ``masks/``, a mask being a PNG of class indices
named like its image (``x.jpg`` -> ``masks/x.png``), 255 ignored; the format ``ShapesWorld.export`` writes.

Shapes: N images, S x S pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vlblocks.data.image_io import load_image

__all__ = ["load_segmentation_folder"]


def load_segmentation_folder(
    root: str | Path, *, image_size: int, val: bool, val_every: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) uint8 and masks (N, S, S) int64 of every `val_every`-th file of ``root/images``
    (sorted by name; ``val=True``) or of the other files. Images are resized bilinearly, masks by nearest neighbour.

    Raises:
        FileNotFoundError: when ``root/images`` holds no file or an image has no mask.
    """
    from PIL import Image

    root = Path(root)
    files = sorted(f for f in (root / "images").glob("*.*") if f.is_file())
    if not files:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    images, masks = [], []
    for k, f in enumerate(files):
        if (k % val_every == val_every - 1) != val:
            continue
        if not (root / "masks" / f"{f.stem}.png").is_file():
            raise FileNotFoundError(f"image {f.name} has no mask {root / 'masks' / (f.stem + '.png')}")
        image = load_image(f).resize((image_size, image_size), Image.BILINEAR)
        mask = Image.open(root / "masks" / f"{f.stem}.png").resize((image_size, image_size), Image.NEAREST)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))  # (S, S, 3) -> (3, S, S)
        masks.append(torch.from_numpy(np.array(mask).astype(np.int64)))  # (S, S) class ids
    return torch.stack(images), torch.stack(masks)
