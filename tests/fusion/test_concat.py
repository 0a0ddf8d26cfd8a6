"""Tests of ConcatFusion: shapes, pass-through tokens, golden MLP, gradients, dropout, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlblocks.fusion import ConcatFusion, FusionOutput


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    text_mask = torch.ones(3, 6, dtype=torch.bool)
    text_mask[0, 2:] = False
    return torch.randn(3, 5, 48), torch.randn(3, 6, 32), text_mask


def test_shapes_and_tokens_pass_through() -> None:
    fusion = ConcatFusion(48, 32, dim=24)
    image, text, text_mask = _inputs()
    out = fusion(image, text, text_mask=text_mask)
    assert isinstance(out, FusionOutput)
    assert fusion.out_dim == 24 and out.pooled.shape == (3, 24)
    assert out.image_tokens is image and out.text_tokens is text
    assert torch.isfinite(out.pooled).all()


def test_matches_mlp_of_concatenated_cls() -> None:
    fusion = ConcatFusion(48, 32, dim=24, dropout=0.5).eval()
    image, text, _ = _inputs()
    joint = torch.cat([image[:, 0], text[:, 0]], dim=-1)
    want = F.linear(
        F.leaky_relu(F.linear(joint, fusion.fc1.weight, fusion.fc1.bias), 0.01), fusion.fc2.weight
    )
    torch.testing.assert_close(fusion(image, text).pooled, want + fusion.fc2.bias)
    # only the [CLS] tokens are read
    image[:, 1:] = 7.0
    torch.testing.assert_close(fusion(image, text).pooled, want + fusion.fc2.bias)


def test_dropout_is_active_in_training() -> None:
    fusion = ConcatFusion(48, 32, dim=64, dropout=0.5).train()
    image, text, _ = _inputs()
    assert not torch.allclose(fusion(image, text).pooled, fusion(image, text).pooled)


def test_gradients_reach_every_parameter_and_only_the_cls_inputs() -> None:
    fusion = ConcatFusion(48, 32, dim=24)
    image, text, _ = _inputs()
    image.requires_grad_(True)
    text.requires_grad_(True)
    fusion(image, text).pooled.square().sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert image.grad[:, 0].abs().sum() > 0 and text.grad[:, 0].abs().sum() > 0
    assert image.grad[:, 1:].abs().max() == 0 and text.grad[:, 1:].abs().max() == 0


def test_errors() -> None:
    with pytest.raises(ValueError, match="dim_image must be a positive int, got 0"):
        ConcatFusion(0, 32)
    with pytest.raises(ValueError, match="dim_text must be a positive int, got None"):
        ConcatFusion(48, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim must be a positive int, got -3"):
        ConcatFusion(48, 32, dim=-3)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1.5"):
        ConcatFusion(48, 32, dropout=1.5)
    fusion = ConcatFusion(48, 32, dim=24)
    image, text, text_mask = _inputs()
    with pytest.raises(ValueError, match=r"image_tokens must have shape \(B, Ni, 48\)"):
        fusion(text, text)
    with pytest.raises(ValueError, match=r"text_tokens must have shape \(B, Nt, 32\)"):
        fusion(image, image)
    with pytest.raises(ValueError, match=r"text_mask must have shape \(3, 6\)"):
        fusion(image, text, text_mask=text_mask[:2])
