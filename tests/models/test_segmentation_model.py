"""SegmentationModel: prefix tokens removed, grid inferred, frozen backbone in eval mode, multi-layer features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlblocks.encoders import ImageEncoder
from vlblocks.heads import ConvSegHead, LinearSegHead, MaskTransformerSegHead
from vlblocks.models import PatchFeatures, SegmentationModel, last_layer_tokens, patch_grid

C = 3


def _pixels(h: int = 32, w: int = 32, b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, h, w)


@pytest.mark.parametrize(
    ("kind", "size", "grid"),
    [
        ("cnn", (32, 32), (4, 4)),
        ("cnn", (32, 48), (4, 6)),
        ("vit", (32, 32), (4, 4)),
        ("dinov2", (24, 40), (3, 5)),
    ],
)
def test_logits_at_image_size_with_only_head_gradients(kind: str, size: tuple, grid: tuple) -> None:
    encoder = ImageEncoder.tiny(kind, image_size=32, dim=16, depth=1, heads=2, patch_size=8)
    model = SegmentationModel(encoder, MaskTransformerSegHead(16, C, depth=1, heads=2))
    model.train()
    pixels = _pixels(*size)
    feats = model.features(pixels)
    assert isinstance(feats, PatchFeatures) and feats.grid == grid
    assert feats.tokens.shape == (2, grid[0] * grid[1], 16) and not feats.tokens.requires_grad
    logits = model(pixels)
    assert logits.shape == (2, C, *size) and torch.isfinite(logits).all()
    (logits * torch.randn_like(logits)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert not encoder.model.training and model.head.training  # frozen backbone stays in eval mode


def test_prefix_tokens_are_removed_and_the_grid_is_row_major() -> None:
    encoder = ImageEncoder.tiny("vit", image_size=32, dim=16, depth=1, heads=2, patch_size=8)
    assert encoder.num_prefix_tokens == 1
    head = LinearSegHead(16, C)
    model = SegmentationModel(encoder, head).eval()
    pixels = _pixels()
    tokens = encoder(pixels).tokens  # (B, 1 + 16, D)
    expected = head(tokens[:, 1:], grid=(4, 4), size=(32, 32))
    torch.testing.assert_close(model(pixels), expected)
    with pytest.raises(ValueError, match="tokens must hold h \\* w = 16 patch tokens"):
        head(tokens, grid=(4, 4))  # control: the [CLS] token left in is refused


def test_unfrozen_backbone_trains() -> None:
    encoder = ImageEncoder.tiny("cnn", image_size=32, dim=16, patch_size=8)
    model = SegmentationModel(encoder, ConvSegHead(16, C), freeze_backbone=False).train()
    assert encoder.model.training
    model(_pixels()).square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_predict_gives_labels_and_restores_the_mode() -> None:
    encoder = ImageEncoder.tiny("cnn", image_size=32, dim=16, patch_size=8)
    model = SegmentationModel(encoder, LinearSegHead(16, C)).train()
    pixels = _pixels()
    labels = model.predict(pixels)
    assert labels.shape == (2, 32, 32) and labels.dtype == torch.long and model.training
    model.eval()
    assert torch.equal(labels, model(pixels).argmax(dim=1))


@pytest.mark.parametrize("kind", ["vit", "dinov2", "hf-vit", "clip"])
def test_last_layers_end_with_the_encoder_tokens(kind: str) -> None:
    encoder = ImageEncoder.tiny(kind, image_size=32, dim=16, depth=3, heads=2, patch_size=8).eval()
    pixels = _pixels()
    layers = last_layer_tokens(encoder, pixels, 3)
    assert len(layers) == 3 and all(t.shape == (2, 16, 16) for t in layers)
    final = encoder(pixels).tokens[:, encoder.num_prefix_tokens :]
    torch.testing.assert_close(layers[-1], final, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(layers[0], final, atol=1e-3)  # control: an earlier layer differs
    model = SegmentationModel(encoder, LinearSegHead(2 * 16, C), num_layers=2).eval()
    feats = model.features(pixels)
    torch.testing.assert_close(feats.tokens, torch.cat(layers[1:], dim=-1), atol=1e-5, rtol=1e-5)
    assert model(pixels).shape == (2, C, 32, 32)


def test_patch_grid() -> None:
    assert patch_grid(256, (224, 224)) == (16, 16)
    assert patch_grid(512, (224, 448)) == (16, 32)
    assert patch_grid(8 * 13, (60, 100)) == (8, 13)  # strided convs round up: 60 -> 8, 100 -> 13
    assert patch_grid(7, (10, 70)) == (1, 7)
    with pytest.raises(ValueError, match=r"num_tokens must factor into a patch grid .* got 17 tokens"):
        patch_grid(17, (32, 32))
    with pytest.raises(ValueError, match=r"size must be a pair of positive ints \(height, width\), got 32"):
        patch_grid(16, 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"size\[1\] must be a positive int, got 0"):
        patch_grid(16, (32, 0))


def test_errors() -> None:
    encoder = ImageEncoder.tiny("cnn", image_size=32, dim=16, patch_size=8)
    with pytest.raises(ValueError, match=r"head.dim must equal num_layers \* backbone.dim = 1 \* 16, got 8"):
        SegmentationModel(encoder, LinearSegHead(8, C))
    with pytest.raises(TypeError, match="head must be an nn.Module"):
        SegmentationModel(encoder, "linear")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backbone must have an int num_prefix_tokens"):
        SegmentationModel(nn.Linear(3, 3), LinearSegHead(16, C))
    with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
        SegmentationModel(encoder, LinearSegHead(16, C), num_layers=0)
    with pytest.raises(ValueError, match="num_layers > 1 needs a timm ViT"):
        SegmentationModel(encoder, LinearSegHead(32, C), num_layers=2)
    with pytest.raises(TypeError, match="freeze_backbone must be a bool"):
        SegmentationModel(encoder, LinearSegHead(16, C), freeze_backbone=None)  # type: ignore[arg-type]
    vit = ImageEncoder.tiny("vit", image_size=32, dim=16, depth=2, heads=2, patch_size=8)
    with pytest.raises(ValueError, match="num_layers must be at most the encoder's 2 layers, got 3"):
        last_layer_tokens(vit, _pixels(), 3)
    model = SegmentationModel(encoder, LinearSegHead(16, C))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, 3, H, W\)"):
        model(torch.randn(3, 32, 32))
