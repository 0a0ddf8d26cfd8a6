"""Tests of overlay_heatmap, apply_colormap and attention_grid: sizes, blend ends, hot spots, titles, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlblocks.hooks import COLORMAPS, apply_colormap, attention_grid, overlay_heatmap


def _image(w: int = 50, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _hot_corner(row: int, col: int) -> torch.Tensor:
    heat = torch.zeros(3, 5)
    heat[row, col] = 1.0
    return heat


def test_overlay_has_the_image_size_for_every_input_kind(tmp_path) -> None:
    image = _image()
    as_tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]
    for source in (image, as_tensor, np.asarray(image)):
        out = overlay_heatmap(source, torch.rand(3, 5), alpha=0.4)
        assert isinstance(out, Image.Image) and out.size == (50, 30) and out.mode == "RGB"
    out.save(tmp_path / "overlay.png")
    assert Image.open(tmp_path / "overlay.png").size == (50, 30)


def test_blend_ends_and_hot_spot() -> None:
    image = _image()
    heat = _hot_corner(0, 4)  # top right
    assert np.array_equal(np.asarray(overlay_heatmap(image, heat, alpha=0.0)), np.asarray(image))
    pure = np.asarray(overlay_heatmap(image, heat, alpha=1.0, colormap="jet"))
    assert tuple(pure[0, 49]) == (128, 0, 0)  # the hottest pixel gets jet's top colour
    assert tuple(pure[29, 0]) == (0, 0, 128)  # the coldest its bottom colour
    moved = np.asarray(overlay_heatmap(image, _hot_corner(2, 0), alpha=1.0))
    assert tuple(moved[0, 49]) == (0, 0, 128) and tuple(moved[29, 0]) == (
        128,
        0,
        0,
    )  # control: the spot moves


def test_colormap_ends_and_constant_map() -> None:
    for name, stops in COLORMAPS.items():
        ends = apply_colormap(np.array([0.0, 1.0]), name)
        assert tuple(ends[0]) == stops[0][1] and tuple(ends[1]) == stops[-1][1]
    flat = np.asarray(overlay_heatmap(_image(), torch.ones(3, 5), alpha=1.0, colormap="gray"))
    assert flat.max() == 0  # a constant map carries no information: all at the bottom colour


def test_attention_grid_layout_and_titles(tmp_path) -> None:
    image = _image(64, 32)
    words = ["a", "red", "circle"]
    grid = attention_grid(image, torch.rand(3, 4, 8), titles=words, panel_size=64)
    pad, title_h = 4, 14
    assert grid.size == (4 * (64 + pad) + pad, 32 + title_h + 2 * pad)  # image + 3 panels in one row
    wrapped = attention_grid(image, [torch.rand(4, 8)] * 3, columns=2, panel_size=64)
    assert wrapped.size == (2 * (64 + pad) + pad, 2 * (32 + title_h + pad) + pad)
    grid.save(tmp_path / "grid.png")
    # the first panel is the image itself, resized
    first = np.asarray(grid)[pad + title_h : pad + title_h + 32, pad : pad + 64]
    assert np.abs(first.astype(int) - np.asarray(image.resize((64, 32))).astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: overlay_heatmap(_image(), torch.rand(3, 5), alpha=1.5),
            ValueError,
            r"alpha must be a number in \[0, 1\]",
        ),
        (
            lambda: overlay_heatmap(_image(), torch.rand(3, 5), colormap="hot"),
            ValueError,
            "colormap must be one of",
        ),
        (
            lambda: overlay_heatmap(_image(), torch.rand(2, 3, 5)),
            ValueError,
            r"heatmap must have shape \(h, w\)",
        ),
        (lambda: overlay_heatmap(_image(), torch.full((3, 5), float("nan"))), ValueError, "finite"),
        (lambda: overlay_heatmap("img.png", torch.rand(3, 5)), TypeError, "image must be a PIL image"),
        (lambda: attention_grid(_image(), []), ValueError, "at least one"),
        (
            lambda: attention_grid(_image(), [torch.rand(3, 5)], titles=["a", "b"]),
            ValueError,
            "one entry per map",
        ),
    ],
)
def test_errors(call, error, message: str) -> None:
    with pytest.raises(error, match=message):
        call()
