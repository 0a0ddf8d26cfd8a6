"""The prediction picture every recipe writes: a grid of images, each with a few lines of text under it.

Pure PIL (no matplotlib). Each cell holds the image scaled to ``cell`` pixels (nearest-neighbour for small images
so ShapesWorld's pixels stay sharp) and its lines of text wrapped to the cell's width, each line in its own colour
(e.g. green for a correct prediction, red for a wrong one). ``caption_grid`` is the captioning recipes' picture:
each image with its generated caption and a reference.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["caption_grid", "image_grid", "to_pil"]

Color = str | tuple[int, int, int]
LINE_HEIGHT = 14
CAPTION_BLUE = (0, 0, 160)  # the generated caption in a caption grid


def to_pil(image: Image.Image | torch.Tensor | np.ndarray) -> Image.Image:
    """A PIL RGB image from a PIL image, a uint8 tensor (3, H, W) or a uint8 array (H, W, 3) / (H, W)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must have shape (3, H, W) or (1, H, W), got {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            raise TypeError(f"image tensor must be uint8, got dtype {image.dtype}")
        image = image.permute(1, 2, 0).cpu().numpy()  # (3, H, W) -> (H, W, 3)
        image = image[..., 0] if image.shape[-1] == 1 else image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image array must be uint8, got dtype {image.dtype}")
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"image must be a PIL image, a tensor or an array, got {type(image).__name__}")


def image_grid(
    images: Sequence[Image.Image | torch.Tensor | np.ndarray],
    texts: Sequence[Sequence[str | tuple[str, Color]] | str],
    *,
    cols: int = 4,
    cell: int = 192,
    lines: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """A white grid of ``len(images)`` cells, ``cols`` a row; under image i its text lines.

    Args:
        images: PIL images, uint8 tensors (3, H, W) or arrays (H, W, 3).
        texts: per image, a string or a list of lines; a line is a string (black) or ``(text, colour)``.
        cols: cells per row.
        cell: cell width in pixels (images are scaled to fit it).
        lines: text lines reserved under every image (default: the most any image needs after wrapping).
        title: an optional title above the grid, wrapped to the grid's width.

    Returns:
        The grid as a PIL RGB image.
    """
    if len(images) != len(texts):
        raise ValueError(f"texts must have one entry per image ({len(images)}), got {len(texts)}")
    if not images:
        raise ValueError("images must hold at least one image, got none")
    if cols < 1 or cell < 32:
        raise ValueError(f"cols must be >= 1 and cell >= 32, got cols={cols}, cell={cell}")
    font = ImageFont.load_default()
    width_chars = max(8, (cell - 8) // 6)
    wrapped = [_wrap(t, width_chars) for t in texts]
    n_lines = lines if lines is not None else max(len(w) for w in wrapped)
    text_h = LINE_HEIGHT * n_lines + 6
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    title_lines = _wrap_to_pixels(title, font, cols * cell - 8) if title else []
    top = LINE_HEIGHT * len(title_lines) + 8 if title_lines else 0
    grid = Image.new("RGB", (cols * cell, top + rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for k, line in enumerate(title_lines):
        draw.text((4, 4 + LINE_HEIGHT * k), line, fill="black", font=font)
    for i, (image, text) in enumerate(zip(images, wrapped)):
        pil = to_pil(image)
        x, y = (i % cols) * cell, top + (i // cols) * (cell + text_h)
        scale = (cell - 8) / max(pil.size)
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        resample = Image.NEAREST if max(pil.size) < cell else Image.BILINEAR
        grid.paste(pil.resize(size, resample), (x + 4, y + 4))
        for k, (line, colour) in enumerate(text[:n_lines]):
            draw.text((x + 4, y + cell + 2 + LINE_HEIGHT * k), line, fill=colour, font=font)
    return grid


def caption_grid(
    images: Sequence[Image.Image | torch.Tensor | np.ndarray],
    captions: Sequence[str],
    references: Sequence[str],
    *,
    cols: int = 4,
    cell: int = 256,
) -> Image.Image:
    """`image_grid` of captioned images: under image i ``pred: captions[i]`` (blue) and ``ref: references[i]``.

    Args:
        images: PIL images, uint8 tensors (3, H, W) or arrays (H, W, 3).
        captions: one generated caption per image.
        references: one reference caption per image (e.g. its first).
        cols, cell: as `image_grid`.
    """
    if not len(images) == len(captions) == len(references):
        raise ValueError(
            f"captions and references must have one entry per image ({len(images)}), "
            f"got {len(captions)} and {len(references)}"
        )
    lines = [[("pred: " + c, CAPTION_BLUE), "ref: " + r] for c, r in zip(captions, references)]
    return image_grid(images, lines, cols=cols, cell=cell)


def _wrap(text: Sequence[str | tuple[str, Color]] | str, width: int) -> list[tuple[str, Color]]:
    """Lines as (text, colour), each wrapped to `width` characters."""
    items = [text] if isinstance(text, str) else list(text)
    out: list[tuple[str, Color]] = []
    for item in items:
        line, colour = (item, "black") if isinstance(item, str) else item
        out += [(part, colour) for part in (textwrap.wrap(line, width) or [""])]
    return out


def _wrap_to_pixels(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` broken at spaces into lines at most `width` pixels wide in `font` (a longer word keeps its line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines
