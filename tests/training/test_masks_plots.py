"""Mask overlays and legends of the segmentation PNG, and plot_panels (with and without matplotlib)."""

from __future__ import annotations

import builtins

import pytest
import torch

from vlblocks import training as T


def test_palette_is_fixed_and_distinct():
    colours = T.class_palette(20)
    assert colours.shape == (20, 3) and colours.dtype == torch.uint8
    assert torch.equal(colours, T.class_palette(256)[:20])  # a class keeps its colour whatever n is
    assert len({tuple(c) for c in colours.tolist()}) == 20


def test_overlay_paints_classes_and_darkens_background_and_ignored():
    image = torch.full((3, 4, 4), 200, dtype=torch.uint8)
    mask = torch.tensor([[0, 1, 1, 255]] * 4)
    out = T.overlay_mask(mask, image)
    assert out.shape == (3, 4, 4) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0, 0], torch.full((3,), 70, dtype=torch.uint8))  # 0.35 * 200: background
    assert torch.equal(out[:, 0, 3], out[:, 0, 0])  # ignored pixels look like background
    expected = (0.3 * 200 + 0.7 * T.class_palette(2)[1].float()).to(torch.uint8)
    assert torch.equal(out[:, 0, 1], expected)
    mask[0, 1] = 2  # control: another class, another colour
    assert not torch.equal(T.overlay_mask(mask, image)[:, 0, 1], out[:, 0, 1])
    with pytest.raises(ValueError, match="mask"):
        T.overlay_mask(mask[:2], image)


def test_legend_names_classes_with_enough_pixels():
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:2, :4] = 3  # 8 pixels
    mask[7, :3] = 1  # 3 pixels: below min_pixels
    mask[6, :] = 255
    names = [f"c{k}" for k in range(5)]
    assert T.mask_legend(mask, names) == [("c3", tuple(T.class_palette()[3].tolist()))]
    assert [n for n, _ in T.mask_legend(mask, names, min_pixels=3)] == ["c1", "c3"]


def test_mask_grid_rows_of_image_truth_and_predictions():
    images = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    masks[:, :4] = 1
    masks[1, 7] = 255
    pred = torch.full((2, 8, 8), 2)
    grid = T.mask_grid(images, masks, {"a": pred, "b": masks}, ["bg", "one", "two"], cell=64, title="t")
    assert grid.width == 4 * 64 and grid.height > 2 * 64  # image, truth and two predictions per row
    px = grid.getpixel
    top = 14 + 8  # one title line
    assert px((64 + 20, top + 10)) == tuple(
        (0.3 * 200 + 0.7 * T.class_palette(2)[1].float()).to(torch.uint8).tolist()
    )
    assert px((2 * 64 + 20, top + 10)) != px(
        (64 + 20, top + 10)
    )  # prediction "a" (class 2) differs from the truth
    assert px((3 * 64 + 20, top + 10)) == px((64 + 20, top + 10))  # control: prediction "b" is the truth
    row2 = top + 64 + 2 * 14 + 6  # under each cell two text lines (name, one class)
    bottom = row2 + 4 + 7 * 7 + 3  # row 7 of image 1 (ignored in the truth), 7 px per mask pixel
    assert px((2 * 64 + 20, bottom)) == (70, 70, 70)  # ignored in the truth: darkened in the prediction too


def test_plot_panels_writes_a_png_or_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    panels = {"a": {"x": ([0, 1, 2], [0.1, None, 0.3])}, "b": {f"c{k}": ([0, 1], [k, k]) for k in range(12)}}
    assert T.plot_panels(tmp_path / "p.png", panels, xlabel="epoch", ylabel="IoU", ylim=(0, 1))
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="panels"):
        T.plot_panels(tmp_path / "q.png", {}, xlabel="x", ylabel="y")
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr("vlblocks.training.plots._warned", False)
    assert not T.plot_panels(tmp_path / "r.png", panels, xlabel="x", ylabel="y")
    assert not T.plot_panels(tmp_path / "r.png", panels, xlabel="x", ylabel="y")
    assert (
        capsys.readouterr().out.count("pip install vlblocks[viz]") == 1 and not (tmp_path / "r.png").exists()
    )
