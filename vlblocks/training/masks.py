"""Segmentation masks drawn over their images for the prediction PNG: a fixed colour per class, the classes a mask
shows named in those colours (for ``image_grid``'s text lines), and the whole picture of images with their true and
predicted masks (``mask_grid``). Pure torch; PIL draws the grid.

Shapes: N images, S x S image, C classes.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping

import torch
from PIL import Image

from vlblocks.training.grid import image_grid

__all__ = ["class_palette", "mask_grid", "mask_legend", "overlay_mask"]


def class_palette(n: int = 256) -> torch.Tensor:
    """(n, 3) uint8: a fixed, well spread colour per class id (hue steps of the golden ratio, alternating
    brightness)."""
    rgb = [colorsys.hsv_to_rgb((c * 0.618) % 1, 0.9, 0.95 - 0.25 * (c % 2)) for c in range(n)]
    return (torch.tensor(rgb) * 255).to(torch.uint8)


def overlay_mask(
    mask: torch.Tensor, image: torch.Tensor, *, background: int = 0, ignore_index: int = 255
) -> torch.Tensor:
    """uint8 (3, S, S): each class of `mask` (S, S) painted in its palette colour over the uint8 `image`
    (3, S, S) at 70%; background and ignored pixels show the image darkened, so an object predicted as background
    stands out dark."""
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"mask must be (S, S) like the image {tuple(image.shape)}, got {tuple(mask.shape)}")
    painted = class_palette()[mask.long().clamp(0, 255)].permute(2, 0, 1).float()  # (S, S, 3) -> (3, S, S)
    keep = ((mask == background) | (mask == ignore_index)).unsqueeze(0)
    return torch.where(keep, 0.35 * image.float(), 0.3 * image.float() + 0.7 * painted).to(torch.uint8)


def mask_legend(
    mask: torch.Tensor,
    class_names: list[str],
    *,
    min_pixels: int = 8,
    background: int = 0,
    ignore_index: int = 255,
) -> list[tuple[str, tuple[int, int, int]]]:
    """``(name, colour)`` of each class (background and ignored pixels excluded) covering at least `min_pixels`
    pixels of `mask`, in class order: text lines for ``image_grid``."""
    ids, counts = mask[mask != ignore_index].unique(return_counts=True)
    colours = class_palette()
    return [
        (class_names[c], tuple(colours[c].tolist()))
        for c, k in zip(ids.tolist(), counts.tolist())
        if c != background and k >= min_pixels
    ]


def mask_grid(
    images: torch.Tensor,
    masks: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    class_names: list[str],
    *,
    ignore_index: int = 255,
    cell: int = 128,
    title: str | None = None,
) -> Image.Image:
    """One row per image: the image, its true mask and each named prediction, overlaid (``overlay_mask``), each
    with the names of the classes it shows under it. Pixels ignored in the true mask are shown ignored in every
    prediction too.

    Args:
        images: uint8 (N, 3, S, S).
        masks: (N, S, S) true class ids.
        predictions: name -> (N, S, S) predicted class ids, one column each.
        class_names: C names (index 0 the background).
    """
    cells, texts = [], []
    for i in range(len(images)):
        cells += [images[i], overlay_mask(masks[i], images[i], ignore_index=ignore_index)]
        texts += [[f"image {i}"], ["true", *mask_legend(masks[i], class_names, ignore_index=ignore_index)]]
        for name, pred in predictions.items():
            shown = torch.where(masks[i] == ignore_index, masks[i], pred[i])
            cells.append(overlay_mask(shown, images[i], ignore_index=ignore_index))
            texts.append([name, *mask_legend(shown, class_names, ignore_index=ignore_index)])
    return image_grid(cells, texts, cols=2 + len(predictions), cell=cell, title=title)
