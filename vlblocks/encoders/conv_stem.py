"""A convolutional stem for timm ViTs: stride-2 3x3 convolutions instead of the patchify layer (Xiao et al. 2021,
"Early convolutions help transformers see better"). With it a from-scratch tiny ViT learns ShapesWorld in minutes.

Use as timm's ``embed_layer``: ``VisionTransformer(..., patch_size=4, embed_layer=ConvStem)``, then wrap the model
in ``ImageEncoder``; ``conv_stem_vit`` does both for the tiny ViTs the recipes train from scratch. Kept out of
``vlblocks.encoders``' namespace so importing vlblocks does not import timm.

Shapes: B batch, S x S image, p patch size (a power of 2), D width.
"""

from __future__ import annotations

from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vlblocks.encoders.image import ImageEncoder

__all__ = ["ConvStem", "conv_stem_vit"]


class ConvStem(PatchEmbed):
    """timm ``PatchEmbed`` whose projection is log2(p) stride-2 3x3 conv -> BatchNorm -> ReLU stages and a 1x1
    convolution to the width: (B, 3, S, S) -> (B, D, S/p, S/p), then flattened to tokens as ``PatchEmbed`` does."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        dim, c, layers = kwargs["embed_dim"], kwargs.get("in_chans", 3), []
        stages = self.patch_size[0].bit_length() - 1
        if self.patch_size[0] != 2**stages or self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"patch_size must be a square power of 2 for ConvStem, got {self.patch_size}")
        for i in range(stages):
            out = max(16, dim // 2 ** (stages - i))
            layers += [nn.Conv2d(c, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.proj = nn.Sequential(*layers, nn.Conv2d(c, dim, 1))  # (B, D, S/p, S/p)


def conv_stem_vit(*, image_size: int, patch_size: int, dim: int, depth: int, heads: int) -> ImageEncoder:
    """A randomly initialised timm ViT with a `ConvStem` and no classifier, in an `ImageEncoder`: (S / p)^2 patch
    tokens of width `dim` after a [CLS] token."""
    vit = VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=0,
        embed_layer=ConvStem,
    )
    return ImageEncoder(vit)
