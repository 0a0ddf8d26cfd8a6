"""Pictures of attention: a heatmap laid over an image, and a grid of such panels with titles.

`overlay_heatmap` min-max normalises a (h, w) map, resizes it bilinearly to the image and blends it through a small
built-in colormap (no matplotlib needed). `attention_grid` draws the image and then one titled overlay per map: one per
layer, per token, or per generated word (the caption figure of Xu et al. 2015, "Show, Attend and Tell").

Caption attention: `vlblocks.hooks.caption_attention_maps` turns `GPT2Decoder.generate(...,
return_cross_attentions=layers).cross_attentions` into per-word maps (B, T, h, w); `attention_grid(image, maps[b],
titles=words)` draws the figure, one panel per word.

Shapes: h, w heatmap grid; H, W image height and width; K panels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vlblocks._checks import check_choice, check_positive_int, check_probability

__all__ = ["COLORMAPS", "apply_colormap", "attention_grid", "overlay_heatmap"]

# colour stops (position in [0, 1] -> RGB), interpolated linearly; close to matplotlib's maps of the same names
COLORMAPS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    "jet": (
        (0.0, (0, 0, 128)),
        (0.125, (0, 0, 255)),
        (0.375, (0, 255, 255)),
        (0.625, (255, 255, 0)),
        (0.875, (255, 0, 0)),
        (1.0, (128, 0, 0)),
    ),
    "viridis": (
        (0.0, (68, 1, 84)),
        (0.25, (59, 82, 139)),
        (0.5, (33, 145, 140)),
        (0.75, (94, 201, 98)),
        (1.0, (253, 231, 37)),
    ),
    "inferno": (
        (0.0, (0, 0, 4)),
        (0.25, (87, 16, 110)),
        (0.5, (188, 55, 84)),
        (0.75, (249, 142, 9)),
        (1.0, (252, 255, 164)),
    ),
    "gray": ((0.0, (0, 0, 0)), (1.0, (255, 255, 255))),
}


def apply_colormap(values: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Values in [0, 1] of any shape (...,) -> uint8 RGB (..., 3) through a built-in colormap."""
    check_choice("colormap", colormap, list(COLORMAPS))
    stops = COLORMAPS[colormap]
    xs = np.array([s[0] for s in stops])
    rgb = np.array([s[1] for s in stops], dtype=np.float64)  # (S, 3)
    v = np.clip(values, 0.0, 1.0)
    channels = [np.interp(v, xs, rgb[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)  # (..., 3)


def _to_pil(image: Image.Image | torch.Tensor | np.ndarray) -> Image.Image:
    """PIL image, (3, H, W) / (H, W, 3) float in [0, 1] or uint8 tensor or array, or (H, W) gray -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)  # (H, W, C)
        image = image.numpy()
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise TypeError(
            f"image must be a PIL image or a (3, H, W) / (H, W, 3) tensor or array, got {type(image)}"
        )
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return Image.fromarray(image).convert("RGB")


def _normalised(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """(h, w) map -> float32 array in [0, 1] (a constant map becomes all zeros)."""
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().float().cpu().numpy()
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"heatmap must have shape (h, w), got {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap must hold finite values, got NaN or inf")
    low, high = float(heatmap.min()), float(heatmap.max())
    return (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)


def overlay_heatmap(
    image: Image.Image | torch.Tensor | np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> Image.Image:
    """Blend a heatmap over an image.

    Args:
        image: PIL image, or (3, H, W) / (H, W, 3) tensor or array (floats in [0, 1] or uint8).
        heatmap: (h, w) map of any range; min-max normalised, then resized bilinearly to (H, W).
        alpha: weight of the heatmap in the blend, in [0, 1].
        colormap: one of `COLORMAPS` ("jet", "viridis", "inferno", "gray").

    Returns:
        an RGB PIL image of the image's size (W, H).
    """
    check_probability("alpha", alpha)
    check_choice("colormap", colormap, list(COLORMAPS))
    base = _to_pil(image)
    values = Image.fromarray(_normalised(heatmap), mode="F").resize(base.size, Image.Resampling.BILINEAR)
    colours = Image.fromarray(apply_colormap(np.asarray(values), colormap))  # (H, W, 3)
    return Image.blend(base, colours, alpha)


def attention_grid(
    image: Image.Image | torch.Tensor | np.ndarray,
    maps: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    panel_size: int = 160,
    alpha: float = 0.5,
    colormap: str = "jet",
    image_title: str = "image",
) -> Image.Image:
    """One picture: the image, then one titled overlay per map (per layer, per token, per generated word).

    Args:
        image: as in `overlay_heatmap`.
        maps: K maps (h, w), or a (K, h, w) tensor.
        titles: K panel titles (e.g. the generated words); default "0", "1", ...
        columns: panels per row; default all K + 1 panels in one row, up to 6.
        panel_size: the longer side of each panel, in pixels.
        alpha, colormap: as in `overlay_heatmap`.
        image_title: title of the first panel.

    Returns:
        an RGB PIL image.
    """
    maps = list(maps)
    if not maps:
        raise ValueError("maps must hold at least one (h, w) map, got none")
    titles = [str(i) for i in range(len(maps))] if titles is None else [str(t) for t in titles]
    if len(titles) != len(maps):
        raise ValueError(f"titles must have one entry per map ({len(maps)}), got {len(titles)}")
    check_positive_int("panel_size", panel_size)
    columns = min(len(maps) + 1, 6) if columns is None else check_positive_int("columns", columns)
    base = _to_pil(image)
    scale = panel_size / max(base.size)
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    panels = [(image_title, base.resize(size, Image.Resampling.BILINEAR))]
    for title, heatmap in zip(titles, maps):
        panels.append((title, overlay_heatmap(base, heatmap, alpha=alpha, colormap=colormap).resize(size)))
    font = ImageFont.load_default()
    title_h, pad = 14, 4
    rows = -(-len(panels) // columns)
    cell_w, cell_h = size[0] + pad, size[1] + title_h + pad
    canvas = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, panel) in enumerate(panels):
        x, y = pad + (i % columns) * cell_w, pad + (i // columns) * cell_h
        draw.text((x, y), title, fill="black", font=font)
        canvas.paste(panel, (x, y + title_h))
    return canvas
