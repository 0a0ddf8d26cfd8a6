"""ConvStem in a timm ViT: the token grid of the patch size, gradients reach the convolutions, bad patch sizes."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vlblocks.encoders import ImageEncoder
from vlblocks.encoders.conv_stem import ConvStem, conv_stem_vit


@pytest.mark.parametrize("patch", [4, 8])
def test_tokens_on_the_patch_grid_and_gradients(patch):
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=patch, embed_dim=32, depth=1, num_heads=2, num_classes=0, embed_layer=ConvStem
    )
    convs = [m for m in vit.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == patch.bit_length()  # log2(p) stride-2 convolutions and the 1x1 projection
    out = ImageEncoder(vit)(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, 1 + (32 // patch) ** 2, 32)
    out.tokens.sum().backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)


def test_a_patch_size_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ValueError, match="patch_size"):
        VisionTransformer(img_size=36, patch_size=6, embed_dim=32, depth=1, num_heads=2, embed_layer=ConvStem)


def test_conv_stem_vit_is_the_timm_vit_with_the_stem() -> None:
    torch.manual_seed(0)
    by_hand = VisionTransformer(
        img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=0, embed_layer=ConvStem
    )
    torch.manual_seed(0)
    encoder = conv_stem_vit(image_size=32, patch_size=4, dim=32, depth=1, heads=2)
    assert isinstance(encoder.model.patch_embed, ConvStem) and encoder.model.patch_embed.grid_size == (8, 8)
    got, expected = encoder.model.state_dict(), by_hand.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
